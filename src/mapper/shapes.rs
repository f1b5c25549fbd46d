//! What a rule's keys can look like, from the column types of the tables it covers. A
//! placeholder on a column that is an integer in every covered table renders digits only:
//! `user:{id}` makes `user:42`, never `user:42:friends` or `user:index`. Such keys match
//! the rule's SCAN pattern (`user:*`) but belong to someone else (often the application's
//! own `user:{id}:friends` next to ours), so clears and `verify` leave them alone
//! (`reset`, the way to start over, does not ask). Without types (offline, a table not
//! described, or a clear in a catch-up, `Catalog::shapes_at`) every key the pattern
//! matches may be the rule's.

use super::rules::RuleSet;

/// Per rule (by index), per template placeholder (by ordinal): is it an integer?
/// The default knows no types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyShapes {
    integers: Vec<Vec<bool>>,
}

impl KeyShapes {
    /// From the columns (name, `COLUMN_TYPE`) of every table some rule covers, by
    /// qualified name. A placeholder is an integer when its column is one in every covered
    /// table given; a rule none of whose tables is given is left unknown.
    pub fn from_tables<'a, C>(
        rules: &RuleSet,
        tables: impl IntoIterator<Item = (&'a str, C)>,
    ) -> Self
    where
        C: IntoIterator<Item = (&'a str, &'a str)> + Clone,
    {
        let mut seen: Vec<Option<Vec<bool>>> = vec![None; rules.rules.len()];
        for (qualified, columns) in tables {
            for rule in rules.matching(qualified) {
                let types: Vec<bool> = rule
                    .key
                    .columns()
                    .map(|name| {
                        columns
                            .clone()
                            .into_iter()
                            .any(|(c, ty)| c.eq_ignore_ascii_case(name) && is_integer_type(ty))
                    })
                    .collect();
                let slot = &mut seen[rule.index];
                *slot = Some(match slot.take() {
                    None => types,
                    Some(before) => before.iter().zip(&types).map(|(a, b)| *a && *b).collect(),
                });
            }
        }
        KeyShapes {
            integers: seen.into_iter().map(Option::unwrap_or_default).collect(),
        }
    }

    /// Whether rule `rule`'s template can have rendered `key` with these types.
    pub fn fits(&self, rules: &RuleSet, rule: usize, key: &str) -> bool {
        let integers = self.integers.get(rule).map(Vec::as_slice).unwrap_or(&[]);
        rules.rules[rule]
            .key
            .could_render(key, |i| integers.get(i).copied().unwrap_or(false))
    }

    /// The template columns of rule `rule` known to be integers, in template order: what
    /// `check` tells the operator about the rule's namespace.
    pub fn integer_columns<'r>(&self, rules: &'r RuleSet, rule: usize) -> Vec<&'r str> {
        let integers = self.integers.get(rule).map(Vec::as_slice).unwrap_or(&[]);
        rules.rules[rule]
            .key
            .columns()
            .zip(integers)
            .filter(|(_, integer)| **integer)
            .map(|(name, _)| name)
            .collect()
    }
}

/// `int(11)`, `bigint(20) unsigned`, `tinyint(1)`: `COLUMN_TYPE` of an integer column.
fn is_integer_type(column_type: &str) -> bool {
    let word: String = column_type
        .trim_start()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        word.as_str(),
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::rules::delete_rules as rules;

    fn shapes(rules: &RuleSet, tables: &[(&str, &[(&str, &str)])]) -> KeyShapes {
        KeyShapes::from_tables(rules, tables.iter().map(|(t, c)| (*t, c.iter().copied())))
    }

    #[test]
    fn an_integer_placeholder_fits_digits_only() {
        let set = rules(&[("app.users", "user:{id}")]);
        let s = shapes(
            &set,
            &[("app.users", &[("id", "int(11)"), ("name", "varchar(20)")])],
        );
        for key in ["user:42", "user:-7", "user:0"] {
            assert!(s.fits(&set, 0, key), "{key}");
        }
        for key in [
            "user:42:friends",
            "user:index",
            "user:",
            "user:-",
            "user:4x",
        ] {
            assert!(!s.fits(&set, 0, key), "{key}");
        }
    }

    #[test]
    fn without_types_or_with_a_text_column_anything_fits() {
        let set = rules(&[("app.users", "user:{id}"), ("app.tags", "tag:{name}")]);
        let unknown = KeyShapes::default();
        assert!(unknown.fits(&set, 0, "user:42:friends"));
        let s = shapes(&set, &[("app.tags", &[("name", "varchar(20)")])]);
        assert!(s.fits(&set, 1, "tag:a:b"));
        // app.users was not described: its rule knows nothing.
        assert!(s.fits(&set, 0, "user:index"));
    }

    #[test]
    fn a_glob_is_an_integer_only_where_every_table_has_one() {
        let set = rules(&[("app.t*", "t:{id}")]);
        let ints = shapes(
            &set,
            &[
                ("app.t1", &[("id", "bigint(20) unsigned")]),
                ("app.t2", &[("ID", "INT")]),
            ],
        );
        assert!(!ints.fits(&set, 0, "t:x"));
        assert_eq!(ints.integer_columns(&set, 0), ["id"]);
        let mixed = shapes(
            &set,
            &[
                ("app.t1", &[("id", "int(11)")]),
                ("app.t2", &[("id", "char(8)")]),
            ],
        );
        assert!(mixed.fits(&set, 0, "t:x"));
        assert!(mixed.integer_columns(&set, 0).is_empty());
    }

    #[test]
    fn a_text_column_holding_the_separator_still_fits() {
        // The shortest-match parse would read name = "a", id = "b:5" and reject it; the
        // rule made this key from name = "a:b", id = 5.
        let set = rules(&[("app.t", "{name}:{id}")]);
        let s = shapes(&set, &[("app.t", &[("name", "varchar(9)"), ("id", "int")])]);
        assert!(s.fits(&set, 0, "a:b:5"));
        assert!(!s.fits(&set, 0, "a:b:c"));
    }

    #[test]
    fn integer_types_are_recognised_by_their_name() {
        for ty in [
            "int(11)",
            "tinyint(1)",
            "bigint(20) unsigned zerofill",
            "SMALLINT",
            "mediumint(8)",
        ] {
            assert!(is_integer_type(ty), "{ty}");
        }
        for ty in [
            "decimal(10,2)",
            "varchar(10)",
            "interval",
            "point",
            "bit(8)",
            "year",
            "float",
        ] {
            assert!(!is_integer_type(ty), "{ty}");
        }
    }
}
