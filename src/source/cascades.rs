//! Foreign keys whose cascading actions change rows of a covered table. MariaDB, and MySQL
//! unless foreign keys are handled by the SQL layer (`innodb_native_foreign_keys=OFF`,
//! MySQL 9), do not log the child rows an `ON DELETE CASCADE`, `SET NULL` or `SET DEFAULT`
//! (or the same `ON UPDATE`) changes: only the parent's row is in the binlog. The keys of
//! those child rows would silently go stale, so a rule on such a child table is refused
//! (at start-up and after each DDL) unless the rule says the operator accepts it.

use std::collections::BTreeSet;

use mysql_async::prelude::Queryable;
use tracing::warn;

use crate::checkpoint::Position;
use crate::mapper::rules::RuleSet;
use crate::source::SourceError;

/// A foreign key with at least one cascading action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// `database.table` of the child (the table holding the key).
    pub child: String,
    pub name: String,
    /// `database.table` it references.
    pub parent: String,
    pub on_delete: String,
    pub on_update: String,
}

impl ForeignKey {
    /// `ON DELETE CASCADE, ON UPDATE SET NULL`: only the actions that change child rows.
    fn actions(&self) -> String {
        [("DELETE", &self.on_delete), ("UPDATE", &self.on_update)]
            .iter()
            .filter(|(_, action)| changes_rows(action))
            .map(|(on, action)| format!("ON {on} {action}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn changes_rows(action: &str) -> bool {
    !matches!(action, "RESTRICT" | "NO ACTION")
}

/// Refuses a rule on the child table of an unlogged cascade; logs the ones its rule
/// accepts. Nothing to check when the server logs cascaded rows.
/// `databases` are those holding covered tables: naming them keeps the server from opening
/// every table of every database to answer (14.5 ms against 0.3 ms on an almost empty
/// MariaDB), at each start and after each DDL.
pub async fn check(
    conn: &mut mysql_async::Conn,
    rules: &RuleSet,
    databases: &BTreeSet<String>,
    position: &Position,
) -> Result<(), SourceError> {
    if databases.is_empty() || cascades_are_logged(conn).await {
        return Ok(());
    }
    let marks = vec!["?"; databases.len()].join(", ");
    let rows: Vec<(String, String, String, String, String, String, String)> = conn
        .exec(
            format!(
                "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, \
                 UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME, DELETE_RULE, UPDATE_RULE \
                 FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA IN ({marks})"
            ),
            databases.iter().collect::<Vec<_>>(),
        )
        .await?;
    let keys: Vec<ForeignKey> = rows
        .into_iter()
        .map(
            |(db, table, name, pdb, ptable, on_delete, on_update)| ForeignKey {
                child: format!("{db}.{table}"),
                name,
                parent: format!("{pdb}.{ptable}"),
                on_delete,
                on_update,
            },
        )
        .collect();
    for accepted in verdict(&keys, rules, position)? {
        warn!("{accepted}");
    }
    Ok(())
}

/// `innodb_native_foreign_keys` exists only where the SQL layer can handle foreign keys
/// (MySQL 9); OFF means it does, and logs the cascaded rows as row events.
async fn cascades_are_logged(conn: &mut mysql_async::Conn) -> bool {
    let native: Result<Option<i64>, _> = conn
        .query_first("SELECT @@GLOBAL.innodb_native_foreign_keys")
        .await;
    matches!(native, Ok(Some(0)))
}

/// The first rule on the child of a cascading foreign key that does not accept it, as an
/// error; otherwise one line per accepted pair, for the log.
pub fn verdict(
    keys: &[ForeignKey],
    rules: &RuleSet,
    position: &Position,
) -> Result<Vec<String>, SourceError> {
    let mut accepted = Vec::new();
    let cascading = keys
        .iter()
        .filter(|k| changes_rows(&k.on_delete) || changes_rows(&k.on_update));
    for key in cascading {
        for rule in rules.matching(&key.child) {
            let what = format!(
                "foreign key `{}` ({}) on {} changes rows of {} without logging them",
                key.name,
                key.actions(),
                key.parent,
                key.child
            );
            if rule.accept_unlogged_cascades {
                accepted.push(format!(
                    "{what}; rules[{}] accepts that its keys (`{}`) may go stale \
                     (accept_unlogged_cascades)",
                    rule.index,
                    rule.key.as_str()
                ));
                continue;
            }
            return Err(SourceError::Schema {
                table: key.child.clone(),
                position: position.clone(),
                message: format!(
                    "its {what}: the keys of rules[{i}] (`{}`) would go stale when a {} row \
                     is deleted or re-keyed. Let the application change the child rows \
                     itself (ON DELETE / ON UPDATE RESTRICT), or, if that never happens, set \
                     `accept_unlogged_cascades = true` in rules[{i}]",
                    rule.key.as_str(),
                    key.parent,
                    i = rule.index,
                ),
            });
        }
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn rules(accept: bool) -> RuleSet {
        let rule = |table: &str, key: &str| RuleConfig {
            table: table.into(),
            action: "delete".into(),
            key: key.into(),
            format: None,
            columns: None,
            ttl_secs: None,
            accept_unlogged_cascades: accept,
        };
        RuleSet::compile(&[rule("shop.orders", "o:{id}"), rule("shop.items", "i:{id}")])
            .expect("rules")
    }

    fn key(child: &str, on_delete: &str, on_update: &str) -> ForeignKey {
        ForeignKey {
            child: child.into(),
            name: "fk_1".into(),
            parent: "shop.orders".into(),
            on_delete: on_delete.into(),
            on_update: on_update.into(),
        }
    }

    #[test]
    fn a_rule_on_the_child_of_a_cascade_is_refused_unless_it_accepts_it() {
        let at = Position::new("binlog.000001", 4);
        let keys = [key("shop.items", "CASCADE", "RESTRICT")];
        let e = verdict(&keys, &rules(false), &at).expect_err("refused");
        let text = e.to_string();
        for part in [
            "shop.items",
            "`fk_1` (ON DELETE CASCADE)",
            "rules[1] (`i:{id}`)",
            "accept_unlogged_cascades = true",
            "binlog.000001:4",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let accepted = verdict(&keys, &rules(true), &at).expect("accepted");
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        assert!(accepted[0].contains("rules[1]"), "{accepted:?}");

        let update = [key("shop.items", "NO ACTION", "SET NULL")];
        let e = verdict(&update, &rules(false), &at).expect_err("ON UPDATE too");
        assert!(e.to_string().contains("(ON UPDATE SET NULL)"), "{e}");
    }

    #[test]
    fn restricting_keys_and_tables_without_rules_pass() {
        let at = Position::new("binlog.000001", 4);
        let keys = [
            key("shop.items", "RESTRICT", "NO ACTION"),
            key("shop.audit", "CASCADE", "CASCADE"),
        ];
        assert_eq!(
            verdict(&keys, &rules(false), &at).expect("fine"),
            Vec::<String>::new()
        );
    }
}
