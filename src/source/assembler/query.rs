//! Statement events (QUERY): transaction boundaries, DDL, and the statements that empty
//! tables without logging their rows (`ddl`). Other row changes logged as statements are
//! refused: they cannot be applied key by key.

use std::sync::Arc;

use mysql_common::binlog::consts::StatusVarKey;
use mysql_common::binlog::events::{Event, QueryEvent, StatusVarVal};

use super::{Assembler, SourceItem};
use crate::mapper::KeyShapes;
use crate::source::ddl;
use crate::source::SourceError;

impl Assembler {
    pub(super) async fn on_query(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        let query: QueryEvent<'_> = event
            .read_event()
            .map_err(|e| self.unsupported(&format!("bad QUERY event: {e}")))?;
        let text = query.query();
        let strict = strict_session(&query);
        let head: String = text
            .trim_start()
            .chars()
            .take(16)
            .collect::<String>()
            .to_ascii_uppercase();
        if head.starts_with("BEGIN") {
            self.in_tx = true;
        } else if head.starts_with("COMMIT") {
            self.commit(event, out);
        } else if head.starts_with("ROLLBACK") && !head.starts_with("ROLLBACK TO") {
            // Only non-transactional tables leave rows in a group that ends in ROLLBACK, and
            // their changes did happen: apply them like a commit.
            self.commit(event, out);
        } else if head.starts_with("SAVEPOINT") || head.starts_with("ROLLBACK TO") {
        } else if head.starts_with("XA ") {
            let statement = text.trim_start()[3..].to_string();
            return self.on_xa_statement(&statement, event, out);
        } else if head.starts_with("DELETE")
            && !self.had_rows
            && self.emptied(
                text.as_ref(),
                (&query.schema(), strict),
                &self.catalog.shapes_at(event.header().timestamp()),
                out,
            )
        {
            // A whole-table DELETE logged as a statement (MySQL 5.7 emptying a MEMORY
            // table after a restart): a clear, as TRUNCATE. Its COMMIT follows. Only
            // first in its transaction: rows before it would be applied after the clear.
        } else if is_dml(&head) {
            return Err(self.unsupported(&format!(
                "statement-based change `{}` cannot be applied; set binlog_format=ROW",
                text.chars().take(80).collect::<String>()
            )));
        } else {
            self.on_ddl(text.as_ref(), (&query.schema(), strict), event, out)
                .await?;
        }
        Ok(())
    }

    /// Any other statement: DDL. Schemas may have changed under us, and some DDL empties
    /// tables without logging their rows. It is its own transaction, except `CREATE [OR
    /// REPLACE] TABLE … SELECT`, logged with the rows it copies: its clear comes before
    /// them and its commit after them.
    async fn on_ddl(
        &mut self,
        statement: &str,
        session: (&str, bool),
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        // The keys a clear deletes were made with the types from before the statement.
        let shapes = self.catalog.shapes_at(event.header().timestamp());
        self.catalog.invalidate();
        self.tables.clear();
        if let Some(rules) = self.rules.clone() {
            self.catalog.check_rules(&rules, &self.position()).await?;
        }
        self.emptied(statement, session, &shapes, out);
        if !self.in_tx {
            self.commit(event, out);
        }
        Ok(())
    }

    /// Emits a clear for each covered table `statement` empties or whose columns it
    /// changes (`ddl`), run in `session` (its database, and whether its `sql_mode` was
    /// strict); false when it does neither.
    fn emptied(
        &mut self,
        statement: &str,
        (schema, strict): (&str, bool),
        shapes: &Arc<KeyShapes>,
        out: &mut Vec<SourceItem>,
    ) -> bool {
        let same_keys = |a: &ddl::Emptied, b: &ddl::Emptied| {
            self.rules
                .as_ref()
                .is_some_and(|r| r.clear(a) == r.clear(b))
        };
        let effects = ddl::effects_under(statement, schema, strict, &same_keys);
        let any = !effects.emptied.is_empty();
        for table in self.copies.follow(effects) {
            if self
                .rules
                .as_ref()
                .is_none_or(|r| r.clear(&table).is_some())
            {
                out.push(SourceItem::Cleared {
                    emptied: table,
                    position: self.position(),
                    statement: statement.chars().take(STATEMENT_CHARS).collect(),
                    shapes: shapes.clone(),
                });
            }
        }
        any
    }
}

/// Whether the statement's session had a strict `sql_mode` (`STRICT_TRANS_TABLES` or
/// `STRICT_ALL_TABLES`), in which the server refuses a lossy conversion instead of storing
/// `?` for what the new character set lacks. An event that does not say counts as not
/// strict: a clear too many costs cache misses, one too few leaves wrong values.
fn strict_session(query: &QueryEvent<'_>) -> bool {
    const STRICT: u64 = 0x0020_0000 | 0x0040_0000;
    let Some(var) = query.status_vars().get_status_var(StatusVarKey::SqlMode) else {
        return false;
    };
    matches!(var.get_value(), Ok(StatusVarVal::SqlMode(mode)) if mode.0 & STRICT != 0)
}

/// How much of a statement that cleared keys the log shows.
const STATEMENT_CHARS: usize = 200;

fn is_dml(head: &str) -> bool {
    ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD DATA"]
        .iter()
        .any(|k| head.starts_with(k))
}
