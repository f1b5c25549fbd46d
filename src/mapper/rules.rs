//! Compiled `[[rules]]`: which tables map to which keys, and how.

use globset::{GlobBuilder, GlobMatcher};

use crate::config::{ConfigError, RuleConfig};
use crate::mapper::shapes::KeyShapes;
use crate::mapper::template::KeyTemplate;
use crate::value::{Emptied, EVERY_COLUMN};

/// What a rule does with the row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the row (after image) under the key.
    Upsert(Format),
    /// Delete (invalidate) the key.
    Delete,
}

/// How an upserted row is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A string holding a JSON object.
    Json,
    /// A hash, one field per non-NULL column.
    Hash,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the config, for messages (`rules[3]`).
    pub index: usize,
    pub table_pattern: String,
    matcher: GlobMatcher,
    /// The pattern's database part alone, for `DROP DATABASE`.
    database: GlobMatcher,
    pub action: Action,
    pub key: KeyTemplate,
    /// Only these columns are written (upsert); `None` = all.
    pub columns: Option<Vec<String>>,
    /// Expiry in milliseconds; 0 = none.
    pub ttl_ms: u64,
    /// The operator accepts stale keys from unlogged foreign key cascades.
    pub accept_unlogged_cascades: bool,
}

impl Rule {
    pub fn matches(&self, qualified_table: &str) -> bool {
        self.matcher.is_match(qualified_table)
    }

    /// Whether the emptied table (or database) held rows this rule made keys of, or
    /// whether the changed columns are in the values it stored. Names are also tried in
    /// lower case: with `lower_case_table_names` a statement may spell a table otherwise
    /// than the binlog's row events do.
    pub fn affected_by(&self, emptied: &Emptied) -> bool {
        match emptied {
            Emptied::Table { database, table } => self.covers(database, table),
            Emptied::Database(db) => {
                self.database.is_match(db) || self.database.is_match(db.to_lowercase())
            }
            Emptied::Columns {
                database,
                table,
                columns,
            } => self.covers(database, table) && self.stores_any(Some(columns)),
            Emptied::CopySwappedIn { database, table } => {
                self.covers(database, table) && self.stores_any(None)
            }
        }
    }

    fn covers(&self, database: &str, table: &str) -> bool {
        let qualified = format!("{database}.{table}");
        self.matches(&qualified) || self.matches(&qualified.to_lowercase())
    }

    /// Whether the values this rule writes hold any of `columns` (`None`: columns not
    /// known), or are keyed by one: a `delete` rule stores nothing; an `upsert` without a
    /// column list stores every column, added ones included. Column names are
    /// case-insensitive.
    fn stores_any(&self, columns: Option<&[String]>) -> bool {
        match (self.action, &self.columns, columns) {
            (Action::Delete, _, _) => false,
            (Action::Upsert(_), None, _) | (Action::Upsert(_), _, None) => true,
            (Action::Upsert(_), Some(_), Some(columns)) => {
                columns.iter().any(|c| c == EVERY_COLUMN)
                    || self
                        .required_columns()
                        .any(|used| columns.iter().any(|c| c.eq_ignore_ascii_case(used)))
            }
        }
    }

    /// Every column the rule needs from a table: template columns plus the include list.
    pub fn required_columns(&self) -> impl Iterator<Item = &str> {
        self.key
            .columns()
            .chain(self.columns.iter().flatten().map(String::as_str))
    }
}

/// All rules, in config order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Which of a table's columns the matching rules read, or `None` when some rule reads
    /// every column (an upsert without an include list). Lets the decoder skip the rest.
    pub fn needed_columns(&self, qualified_table: &str, columns: &[String]) -> Option<Vec<bool>> {
        let mut rules = self.matching(qualified_table);
        if rules.any(|r| matches!(r.action, Action::Upsert(_)) && r.columns.is_none()) {
            return None;
        }
        Some(self.mark(qualified_table, columns, Rule::required_columns))
    }

    /// Which of a table's columns the matching rules read from a before image: only their
    /// key columns (an update's old key, a delete's key). The rest of a before image is
    /// never read, so the decoder skips it.
    pub fn key_columns(&self, qualified_table: &str, columns: &[String]) -> Vec<bool> {
        self.mark(qualified_table, columns, |rule| rule.key.columns())
    }

    /// Flags, over `columns`, the names `names_of` gives for each rule matching the table.
    fn mark<'r, I: Iterator<Item = &'r str>>(
        &'r self,
        qualified_table: &'r str,
        columns: &[String],
        names_of: impl Fn(&'r Rule) -> I,
    ) -> Vec<bool> {
        let mut flags = vec![false; columns.len()];
        for name in self.matching(qualified_table).flat_map(names_of) {
            if let Some(i) = columns.iter().position(|c| c == name) {
                flags[i] = true;
            }
        }
        flags
    }

    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, ConfigError> {
        if configs.is_empty() {
            return Err(ConfigError::invalid(
                "rules",
                "no [[rules]] entries; add at least one (table, action, key)",
            ));
        }
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, c)| compile_rule(i, c))
            .collect::<Result<_, _>>()?;
        Ok(RuleSet { rules })
    }

    /// Does any rule cover this `database.table`? The source skips decoding the rest.
    pub fn covers(&self, qualified_table: &str) -> bool {
        self.rules.iter().any(|r| r.matches(qualified_table))
    }

    pub fn matching<'a>(&'a self, qualified_table: &'a str) -> impl Iterator<Item = &'a Rule> {
        self.rules
            .iter()
            .filter(move |r| r.matches(qualified_table))
    }

    /// The rule a key belongs to: of the rules whose template fits it, the most specific
    /// (most fixed text), the first on a tie.
    pub fn owner(&self, key: &str) -> Option<usize> {
        self.owner_with(key, &KeyShapes::default())
    }

    /// [`Self::owner`] among the rules that, with the column types in `shapes`, can have
    /// made the key: `user:42:friends` has no owner when `user:{id}`'s `id` is an integer.
    pub fn owner_with(&self, key: &str, shapes: &KeyShapes) -> Option<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(i, r)| r.key.splits_key(key) && shapes.fits(self, *i, key))
            .min_by_key(|(i, r)| (std::cmp::Reverse(r.key.literal_len()), *i))
            .map(|(i, _)| i)
    }

    /// Whether some template fits the key by its text alone, whatever the types.
    pub fn parses(&self, key: &str) -> bool {
        self.rules.iter().any(|r| r.key.splits_key(key))
    }
}

/// The longest `ttl_secs` a rule may set: ten years (`load` marks keys with longer ones).
pub const MAX_TTL_SECS: i64 = 10 * 365 * 24 * 3600;

fn compile_rule(index: usize, c: &RuleConfig) -> Result<Rule, ConfigError> {
    let key = |field: &str| format!("rules[{index}].{field}");
    let (matcher, database) = compile_table_glob(&c.table, &key("table"))?;
    let action = match (c.action.as_str(), c.format.as_deref()) {
        ("upsert", None | Some("json")) => Action::Upsert(Format::Json),
        ("upsert", Some("hash")) => Action::Upsert(Format::Hash),
        ("upsert", Some(other)) => {
            return Err(ConfigError::invalid(
                key("format"),
                format!("`{other}` is not `json` or `hash`"),
            ))
        }
        ("delete", None) => Action::Delete,
        ("delete", Some(_)) => {
            return Err(ConfigError::invalid(
                key("format"),
                "only `upsert` rules write values; remove `format` from this delete rule",
            ))
        }
        (other, _) => {
            return Err(ConfigError::invalid(
                key("action"),
                format!("`{other}` is not `upsert` or `delete`"),
            ))
        }
    };
    let template = KeyTemplate::parse(&c.key, &key("key"))?;
    let columns = match (&c.columns, action) {
        (Some(_), Action::Delete) => {
            return Err(ConfigError::invalid(
                key("columns"),
                "only `upsert` rules write columns; remove `columns` from this delete rule",
            ))
        }
        (Some(cols), _) if cols.is_empty() || cols.iter().any(|c| c.is_empty()) => {
            return Err(ConfigError::invalid(
                key("columns"),
                "must list at least one column name, none empty",
            ))
        }
        (cols, _) => cols.clone(),
    };
    let ttl_ms = match (c.ttl_secs, action) {
        (None, _) => 0,
        (Some(_), Action::Delete) => {
            return Err(ConfigError::invalid(
                key("ttl_secs"),
                "a delete rule writes nothing that could expire; remove `ttl_secs`",
            ))
        }
        (Some(t), _) if t <= 0 || t > MAX_TTL_SECS => {
            return Err(ConfigError::invalid(
                key("ttl_secs"),
                format!("{t} is not between 1 and {MAX_TTL_SECS} seconds"),
            ))
        }
        (Some(t), _) => t as u64 * 1000,
    };
    Ok(Rule {
        index,
        table_pattern: c.table.clone(),
        matcher,
        database,
        action,
        key: template,
        columns,
        ttl_ms,
        accept_unlogged_cascades: c.accept_unlogged_cascades,
    })
}

/// The matcher of `database.table` and the one of its database part.
fn compile_table_glob(pattern: &str, key: &str) -> Result<(GlobMatcher, GlobMatcher), ConfigError> {
    let parts: Vec<&str> = pattern.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::invalid(
            key,
            format!("`{pattern}` is not `database.table` (globs like `shop.user_*` allowed)"),
        ));
    }
    let glob = |text: &str| {
        GlobBuilder::new(text)
            .literal_separator(false)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| ConfigError::invalid(key, format!("`{pattern}` is not a valid glob: {e}")))
    };
    Ok((glob(pattern)?, glob(parts[0])?))
}

/// Test rules: one `delete` rule per (table pattern, key template), in order.
#[cfg(test)]
pub(crate) fn delete_rules(list: &[(&str, &str)]) -> RuleSet {
    let configs: Vec<RuleConfig> = list
        .iter()
        .map(|(table, key)| RuleConfig {
            table: table.to_string(),
            action: "delete".into(),
            key: key.to_string(),
            format: None,
            columns: None,
            ttl_secs: None,
            accept_unlogged_cascades: false,
        })
        .collect();
    RuleSet::compile(&configs).expect("valid rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: &str, action: &str, key: &str) -> RuleConfig {
        RuleConfig {
            table: table.into(),
            action: action.into(),
            key: key.into(),
            format: None,
            columns: None,
            ttl_secs: None,
            accept_unlogged_cascades: false,
        }
    }

    #[test]
    fn globs_match_tables() {
        let set = RuleSet::compile(&[rule("shop.user_*", "delete", "u:{id}")]).unwrap();
        assert!(set.covers("shop.user_2024"));
        assert!(!set.covers("shop.users"));
        assert!(!set.covers("other.user_1"));
    }

    #[test]
    fn rejects_bad_rules_naming_the_key() {
        let cases = [
            (rule("shop", "delete", "u:{id}"), "rules[0].table"),
            (rule("shop.[x", "delete", "u:{id}"), "rules[0].table"),
            (rule("shop.u", "evict", "u:{id}"), "rules[0].action"),
            (rule("shop.u", "delete", "u"), "rules[0].key"),
            (
                RuleConfig {
                    ttl_secs: Some(0),
                    accept_unlogged_cascades: false,
                    ..rule("shop.u", "upsert", "u:{id}")
                },
                "rules[0].ttl_secs",
            ),
            (
                RuleConfig {
                    format: Some("xml".into()),
                    ..rule("shop.u", "upsert", "u:{id}")
                },
                "rules[0].format",
            ),
            (
                RuleConfig {
                    columns: Some(vec![]),
                    ..rule("shop.u", "upsert", "u:{id}")
                },
                "rules[0].columns",
            ),
        ];
        for (cfg, key) in cases {
            let err = RuleSet::compile(&[cfg]).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
        assert!(RuleSet::compile(&[])
            .unwrap_err()
            .to_string()
            .contains("rules"));
    }

    #[test]
    fn ttl_is_converted_to_milliseconds() {
        let set = RuleSet::compile(&[RuleConfig {
            ttl_secs: Some(60),
            accept_unlogged_cascades: false,
            format: Some("hash".into()),
            ..rule("a.b", "upsert", "k:{id}")
        }])
        .unwrap();
        assert_eq!(set.rules[0].ttl_ms, 60_000);
        assert_eq!(set.rules[0].action, Action::Upsert(Format::Hash));
    }
}
