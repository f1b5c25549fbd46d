//! What a statement that emptied tables without logging their rows (`TRUNCATE`, `DROP
//! TABLE`, …; see `source::ddl`) means for the cache: every key the rules of those
//! tables could have made must go. The keys are found by SCAN over the templates'
//! patterns, since the rows they came from are gone; a key that a more specific rule of
//! another table owns (`user:{id}:profile` next to `user:{id}`) stays.

use super::rules::RuleSet;
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
    /// emptied owns it. A key no template parses back (a pattern can match more than
    /// the template's shortest-match parse accepts) is deleted: a stale entry is worse
    /// than a miss.
    pub fn deletes(&self, rules: &RuleSet, key: &str) -> bool {
        rules.owner(key).is_none_or(|o| self.rules.contains(&o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn rules(list: &[(&str, &str)]) -> RuleSet {
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
        assert!(clear.deletes(&set, "user:7"));
        assert!(clear.deletes(&set, "user:by-email:a@b"));
        assert!(
            !clear.deletes(&set, "user:7:profile"),
            "another table's more specific rule owns it"
        );

        let clear = set.clear(&table("shop", "prod_2024")).expect("glob");
        assert_eq!(clear.patterns, ["p\\[*\\]\\*"]);
        assert_eq!(set.clear(&table("shop", "audit")), None);
        assert_eq!(set.clear(&table("other", "users")), None);
        assert!(set.clear(&table("SHOP", "Users")).is_some(), "case-folded");
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
