//! The mapper: pure and synchronous. Turns each committed row change ([`RowRef`]) into the cache
//! operations the rules ask for. No I/O happens here, which is what makes it easy to test.
//! Two things only change its speed, never what it returns: the per-table plans it keeps
//! (`plan`), and the spare strings it writes keys and values into (`crate::spare`).
//!
//! Rule semantics (DESIGN.md): INSERT writes (upsert) or deletes (delete) the after image's
//! key. UPDATE computes the key of both images; a key only the before image produces is
//! deleted (the key column changed), and the after image's key is written or deleted.
//! DELETE deletes the before image's key. A template column that is NULL gives no key: such
//! a row has no entry under that rule.

mod clear;
pub mod encode;
mod history;
mod plan;
pub mod rules;
pub mod shapes;
pub mod template;

use std::cell::RefCell;

use crate::checkpoint::Position;
use crate::chunk::{RowRef, Values};
use crate::spare;
use crate::value::{ChangeKind, SqlValue};
pub use clear::Clear;
use plan::{Plans, RulePlan, Slot};
use rules::{Action, Format, Rule, RuleSet};
pub use shapes::KeyShapes;

/// One Redis operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum CacheOp {
    /// SET key value (PX ttl when ttl_ms > 0).
    Set {
        key: String,
        value: String,
        ttl_ms: u64,
    },
    /// Replace the hash at key with these fields (PEXPIRE when ttl_ms > 0).
    Hash {
        key: String,
        fields: Vec<(String, String)>,
        ttl_ms: u64,
    },
    /// DEL key.
    Del { key: String },
    /// RPUSH key entries: appends to a prepared XA transaction's stash (`crate::xa`).
    /// Never made by the mapper: the applier turns a prepared transaction's operations
    /// into these.
    Stash { key: String, entries: Vec<String> },
    /// DEL key of a stash, once its transaction is committed or rolled back (or before
    /// it is filled again).
    Unstash { key: String },
    /// PEXPIRE key ttl_ms: `load` marks the keys it is about to rewrite, so that those it
    /// did not rewrite can be told apart afterwards. Never made by the mapper.
    Expire { key: String, ttl_ms: u64 },
}

impl CacheOp {
    pub fn key(&self) -> &str {
        match self {
            CacheOp::Set { key, .. }
            | CacheOp::Hash { key, .. }
            | CacheOp::Del { key }
            | CacheOp::Stash { key, .. }
            | CacheOp::Unstash { key }
            | CacheOp::Expire { key, .. } => key,
        }
    }

    /// The bytes it takes once Redis has queued its commands in a `MULTI` (at most): keys,
    /// fields and values, command names, TTLs, and a pointer's worth per argument. What
    /// bounds a step's memory (`sink.max_bytes_per_step`), here and in Redis, which may
    /// count a client's queued commands against its `client-query-buffer-limit`.
    pub fn bytes(&self) -> usize {
        // A command's name, and a TTL's `PX` and digits, are at most this long.
        const WORD: usize = 20;
        // Redis keeps a pointer per queued argument; 16 leaves room for its accounting.
        const PER_ARG: usize = 16;
        let arg = |len: usize| len + PER_ARG;
        let ttl = |ms: u64| if ms > 0 { 2 * arg(WORD) } else { 0 };
        match self {
            CacheOp::Set { key, value, ttl_ms } => {
                arg(WORD) + arg(key.len()) + arg(value.len()) + ttl(*ttl_ms)
            }
            // DEL, HSET and PEXPIRE (with a TTL) each name the key.
            CacheOp::Hash {
                key,
                fields,
                ttl_ms,
            } => {
                let fields: usize = fields
                    .iter()
                    .map(|(f, v)| arg(f.len()) + arg(v.len()))
                    .sum();
                let commands = if *ttl_ms > 0 { 3 } else { 2 };
                commands * (arg(WORD) + arg(key.len())) + fields + ttl(*ttl_ms) / 2
            }
            CacheOp::Stash { key, entries } => {
                let entries: usize = entries.iter().map(|e| arg(e.len())).sum();
                arg(WORD) + arg(key.len()) + entries
            }
            CacheOp::Expire { key, .. } => 2 * arg(WORD) + arg(key.len()),
            CacheOp::Del { key } | CacheOp::Unstash { key } => arg(WORD) + arg(key.len()),
        }
    }

    /// True for the operations rules make (a cache key written or deleted), false for
    /// the XA stash's.
    pub fn is_cache_write(&self) -> bool {
        matches!(
            self,
            CacheOp::Set { .. } | CacheOp::Hash { .. } | CacheOp::Del { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CacheOp::Set { .. } => "set",
            CacheOp::Hash { .. } => "hash",
            CacheOp::Del { .. } => "del",
            CacheOp::Stash { .. } => "stash",
            CacheOp::Unstash { .. } => "unstash",
            CacheOp::Expire { .. } => "expire",
        }
    }
}

/// Why a change could not be mapped. All of these are definite: the daemon stops.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error(
        "table {table} has no column `{column}` used by rules[{rule}] (key `{template}`) at \
         binlog position {position}; the schema changed under the rule: fix the rule, then \
         restart"
    )]
    MissingColumn {
        table: String,
        column: String,
        rule: usize,
        template: String,
        position: Position,
    },
    #[error(
        "row image of {table} at binlog position {position} lacks column `{column}` needed \
         by rules[{rule}]; set binlog_row_image=FULL on the server"
    )]
    ColumnNotInImage {
        table: String,
        column: String,
        rule: usize,
        position: Position,
    },
    #[error(
        "column `{column}` of {table} at binlog position {position} holds a partial JSON \
         update without its before document, and rules[{rule}] needs the full value; set \
         binlog_row_value_options='' (or binlog_row_image=FULL) on the server"
    )]
    PartialJson {
        table: String,
        column: String,
        rule: usize,
        position: Position,
    },
    #[error("{kind} row change on {table} at binlog position {position} has no {image} image")]
    MissingImage {
        kind: &'static str,
        image: &'static str,
        table: String,
        position: Position,
    },
}

/// Maps row changes with a fixed rule set.
#[derive(Debug)]
pub struct Mapper {
    rules: RuleSet,
    /// The rules matching recent tables, with their columns' positions (`plan`): a cache
    /// of pure functions, so it does not change what `map` returns.
    plans: RefCell<Plans>,
}

impl Clone for Mapper {
    fn clone(&self) -> Self {
        Mapper::new(self.rules.clone())
    }
}

impl Mapper {
    pub fn new(rules: RuleSet) -> Self {
        Mapper {
            rules,
            plans: RefCell::new(Plans::default()),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Appends the operations for one change to `out`.
    pub fn map(&self, change: RowRef<'_>, out: &mut Vec<CacheOp>) -> Result<(), MapError> {
        let Some(change) = history::current_change(change) else {
            return Ok(());
        };
        let mut plans = self.plans.borrow_mut();
        let plan = plans.get(&self.rules, change.table);
        for rule_plan in &plan.rules {
            let ctx = RowCtx {
                rule: &self.rules.rules[rule_plan.rule],
                plan: rule_plan,
                table: change.table.qualified(),
                position: change.event_position,
            };
            ctx.map(change, out)?;
        }
        Ok(())
    }
}

/// What one rule needs to map one row.
struct RowCtx<'a> {
    rule: &'a Rule,
    plan: &'a RulePlan,
    table: &'a str,
    position: &'a Position,
}

impl RowCtx<'_> {
    fn map(&self, change: RowRef<'_>, out: &mut Vec<CacheOp>) -> Result<(), MapError> {
        match change.kind {
            ChangeKind::Insert => {
                let after = self.image(change.after, "after", change)?;
                self.write_or_delete(self.key(after)?, after, out)
            }
            ChangeKind::Delete => {
                if let Some(key) = self.key(self.image(change.before, "before", change)?)? {
                    out.push(CacheOp::Del { key });
                }
                Ok(())
            }
            ChangeKind::Update => {
                let before = self.image(change.before, "before", change)?;
                let after = self.image(change.after, "after", change)?;
                // Most updates leave the key columns alone: then the before image's key
                // is the after image's, and rendering it only to compare is wasted work.
                let old_key = match self.same_key_values(before, after)? {
                    true => None,
                    false => self.key(before)?,
                };
                let new_key = self.key(after)?;
                match old_key {
                    Some(old) if Some(&old) != new_key.as_ref() => {
                        out.push(CacheOp::Del { key: old });
                    }
                    Some(same) => spare::recycle_key(same),
                    None => {}
                }
                self.write_or_delete(new_key, after, out)
            }
        }
    }

    fn image<'c>(
        &self,
        img: Option<&'c Values>,
        name: &'static str,
        change: RowRef<'_>,
    ) -> Result<&'c Values, MapError> {
        img.ok_or_else(|| MapError::MissingImage {
            kind: change.kind.as_str(),
            image: name,
            table: self.table.to_string(),
            position: change.event_position.clone(),
        })
    }

    /// The value of one column the rule reads.
    fn value<'r>(&self, row: &'r Values, slot: &Slot) -> Result<&'r SqlValue, MapError> {
        let idx = slot.index.ok_or_else(|| MapError::MissingColumn {
            table: self.table.to_string(),
            column: slot.name.clone(),
            rule: self.rule.index,
            template: self.rule.key.as_str().to_string(),
            position: self.position.clone(),
        })?;
        let value =
            row.get(idx)
                .and_then(Option::as_ref)
                .ok_or_else(|| MapError::ColumnNotInImage {
                    table: self.table.to_string(),
                    column: slot.name.clone(),
                    rule: self.rule.index,
                    position: self.position.clone(),
                })?;
        self.complete(&slot.name, value)
    }

    /// Refuses values that are only a description of a change, never the value itself.
    fn complete<'r>(&self, column: &str, value: &'r SqlValue) -> Result<&'r SqlValue, MapError> {
        match value {
            SqlValue::PartialJson(_) => Err(MapError::PartialJson {
                table: self.table.to_string(),
                column: column.to_string(),
                rule: self.rule.index,
                position: self.position.clone(),
            }),
            v => Ok(v),
        }
    }

    /// True when both images hold the same values in every column of the key, so that
    /// they render the same key.
    fn same_key_values(&self, before: &Values, after: &Values) -> Result<bool, MapError> {
        for slot in &self.plan.key {
            if self.value(before, slot)? != self.value(after, slot)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn key(&self, row: &Values) -> Result<Option<String>, MapError> {
        self.rule.key.render(spare::key(), |k, out| {
            Ok(encode::write_text(self.value(row, &self.plan.key[k])?, out))
        })
    }

    /// The operation for a row that now exists, under its `key` (already rendered).
    fn write_or_delete(
        &self,
        key: Option<String>,
        row: &Values,
        out: &mut Vec<CacheOp>,
    ) -> Result<(), MapError> {
        let Some(key) = key else {
            return Ok(());
        };
        let ttl_ms = self.rule.ttl_ms;
        let op = match self.rule.action {
            Action::Delete => CacheOp::Del { key },
            Action::Upsert(Format::Json) => {
                let mut value = spare::value();
                value.reserve(128);
                value.push('{');
                for (i, slot) in self.plan.values.iter().enumerate() {
                    let v = self.value(row, slot)?;
                    if i > 0 {
                        value.push(',');
                    }
                    value.push_str(&slot.json_name);
                    encode::write_json_value(v, &mut value);
                }
                value.push('}');
                CacheOp::Set { key, value, ttl_ms }
            }
            Action::Upsert(Format::Hash) => {
                let mut fields = Vec::with_capacity(self.plan.values.len());
                for slot in &self.plan.values {
                    if let Some(text) = encode::text(self.value(row, slot)?) {
                        fields.push((slot.name.clone(), text));
                    }
                }
                if fields.is_empty() {
                    // A hash cannot be empty: an all-NULL row is stored as no key at all.
                    CacheOp::Del { key }
                } else {
                    CacheOp::Hash {
                        key,
                        fields,
                        ttl_ms,
                    }
                }
            }
        };
        out.push(op);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
