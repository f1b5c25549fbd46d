//! What a statement that emptied tables without logging their rows (`TRUNCATE`, `DROP
//! TABLE`, …; see `source::ddl`) means for the cache: every key the rules of those
//! tables could have made must go. The keys are found by SCAN over the templates'
//! patterns, since the rows they came from are gone; a key that a more specific rule of
//! another table owns (`user:{id}:profile` next to `user:{id}`) stays.

use super::rules::RuleSet;
use super::shapes::KeyShapes;
use crate::value::Emptied;

/// The keys to delete for one emptied table (or database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clear {
    /// The rules whose table was emptied, by index.
    pub rules: Vec<usize>,
    /// SCAN patterns of their key templates, without repeats.
    pub patterns: Vec<String>,
}

impl RuleSet {
    /// `None` when no rule covers what was emptied.
    pub fn clear(&self, emptied: &Emptied) -> Option<Clear> {
        let rules: Vec<usize> = self
            .rules
            .iter()
            .filter(|r| r.affected_by(emptied))
            .map(|r| r.index)
            .collect();
        if rules.is_empty() {
            return None;
        }
        let mut patterns: Vec<String> = rules
            .iter()
            .map(|&i| self.rules[i].key.scan_pattern())
            .collect();
        patterns.sort();
        patterns.dedup();
        Some(Clear { rules, patterns })
    }
}

impl Clear {
    /// Whether a key one of the patterns matched is deleted: unless a rule that was not
    /// emptied owns it, or the column types in `shapes` say no rule can have made it
    /// (another application's `user:42:friends` under `user:{id}` with an integer `id`).
    /// A key no template splits into column values (one of adjacent placeholders, which
    /// no split can tell apart) is deleted: a stale entry is worse than a miss.
    pub fn deletes(&self, rules: &RuleSet, shapes: &KeyShapes, key: &str) -> bool {
        match rules.owner_with(key, shapes) {
            Some(owner) => self.rules.contains(&owner),
            None => !rules.parses(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::rules::delete_rules as rules;

    fn table(database: &str, table: &str) -> Emptied {
        Emptied::Table {
            database: database.into(),
            table: table.into(),
        }
    }

    #[test]
    fn an_emptied_table_clears_the_patterns_of_its_rules_only() {
        let set = rules(&[
            ("shop.users", "user:{id}"),
            ("shop.users", "user:by-email:{email}"),
            ("shop.profiles", "user:{id}:profile"),
            ("shop.prod_*", "p[{sku}]*"),
            ("shop.users", "user:{id}"),
        ]);
        let clear = set.clear(&table("shop", "users")).expect("covered");
        assert_eq!(clear.rules, [0, 1, 4]);
        assert_eq!(clear.patterns, ["user:*", "user:by-email:*"]);
        assert!(clear.deletes(&set, &KeyShapes::default(), "user:7"));
        assert!(clear.deletes(&set, &KeyShapes::default(), "user:by-email:a@b"));
        assert!(
            !clear.deletes(&set, &KeyShapes::default(), "user:7:profile"),
            "another table's more specific rule owns it"
        );

        let clear = set.clear(&table("shop", "prod_2024")).expect("glob");
        assert_eq!(clear.patterns, ["p\\[*\\]\\*"]);
        assert_eq!(set.clear(&table("shop", "audit")), None);
        assert_eq!(set.clear(&table("other", "users")), None);
        assert!(set.clear(&table("SHOP", "Users")).is_some(), "case-folded");
    }

    #[test]
    fn with_column_types_another_applications_keys_stay() {
        let set = rules(&[("shop.users", "user:{id}"), ("shop.tags", "tag:{name}")]);
        let int_id: &[(&str, &str)] = &[("id", "int(10) unsigned")];
        let text: &[(&str, &str)] = &[("name", "varchar(9)")];
        let shapes = KeyShapes::from_tables(
            &set,
            [("shop.users", int_id), ("shop.tags", text)]
                .into_iter()
                .map(|(t, c)| (t, c.iter().copied())),
        );
        let clear = set.clear(&table("shop", "users")).expect("covered");
        assert!(clear.deletes(&set, &shapes, "user:7"));
        for foreign in ["user:7:friends", "user:session:abc", "user:"] {
            assert!(!clear.deletes(&set, &shapes, foreign), "{foreign}");
            assert!(
                clear.deletes(&set, &KeyShapes::default(), foreign),
                "{foreign}: without types the pattern is the namespace"
            );
        }
        let clear = set.clear(&table("shop", "tags")).expect("covered");
        assert!(
            clear.deletes(&set, &shapes, "tag:a:b"),
            "a text column holds anything"
        );
    }

    #[test]
    fn changed_columns_clear_the_rules_that_store_them() {
        use crate::config::RuleConfig;
        let rule = |key: &str, action: &str, columns: Option<&[&str]>| RuleConfig {
            table: "shop.users".into(),
            action: action.into(),
            key: key.into(),
            format: None,
            columns: columns.map(|c| c.iter().map(|n| n.to_string()).collect()),
            ttl_secs: None,
            accept_unlogged_cascades: false,
        };
        let set = RuleSet::compile(&[
            rule("all:{id}", "upsert", None),
            rule("some:{id}", "upsert", Some(&["name", "Email"])),
            rule("gone:{id}", "delete", None),
        ])
        .expect("valid rules");
        let changed = |names: &[&str]| Emptied::Columns {
            database: "shop".into(),
            table: "users".into(),
            columns: names.iter().map(|n| n.to_string()).collect(),
        };
        let cleared = |names: &[&str]| set.clear(&changed(names)).map(|c| c.rules);
        assert_eq!(
            cleared(&["added"]),
            Some(vec![0]),
            "only the rule storing all"
        );
        assert_eq!(cleared(&["email"]), Some(vec![0, 1]), "case-insensitive");
        assert_eq!(cleared(&["ID"]), Some(vec![0, 1]), "a key column");
        assert_eq!(
            cleared(&[crate::value::EVERY_COLUMN]),
            Some(vec![0, 1]),
            "every column: every rule storing any"
        );
        let other = Emptied::Columns {
            database: "shop".into(),
            table: "orders".into(),
            columns: vec!["id".into()],
        };
        assert_eq!(set.clear(&other), None);
        let only_deletes = rules(&[("shop.users", "user:{id}")]);
        assert_eq!(
            only_deletes.clear(&changed(&["id"])),
            None,
            "stores nothing"
        );
    }

    #[test]
    fn a_dropped_database_clears_every_rule_whose_tables_it_held() {
        let set = rules(&[
            ("shop.users", "u:{id}"),
            ("sh*.orders", "o:{id}"),
            ("crm.a", "a:{id}"),
        ]);
        let clear = set
            .clear(&Emptied::Database("shop".into()))
            .expect("covered");
        assert_eq!(clear.rules, [0, 1]);
        assert_eq!(clear.patterns, ["o:*", "u:*"]);
        assert_eq!(set.clear(&Emptied::Database("other".into())), None);
    }
}
