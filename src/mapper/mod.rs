//! The mapper: pure and synchronous. Turns each committed [`RowChange`] into the cache
//! operations the rules ask for. No I/O happens here, which is what makes it easy to test.
//!
//! Rule semantics (DESIGN.md): INSERT writes (upsert) or deletes (delete) the after image's
//! key. UPDATE computes the key of both images; a key only the before image produces is
//! deleted (the key column changed), and the after image's key is written or deleted.
//! DELETE deletes the before image's key. A template column that is NULL gives no key: such
//! a row has no entry under that rule.

pub mod encode;
pub mod rules;
pub mod template;

use std::sync::Arc;

use crate::checkpoint::Position;
use crate::spare;
use crate::value::{ChangeKind, RowChange, RowImage, SqlValue, TableInfo};
use rules::{Action, Format, Rule, RuleSet};

/// One Redis operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
}

impl CacheOp {
    pub fn key(&self) -> &str {
        match self {
            CacheOp::Set { key, .. } | CacheOp::Hash { key, .. } | CacheOp::Del { key } => key,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CacheOp::Set { .. } => "set",
            CacheOp::Hash { .. } => "hash",
            CacheOp::Del { .. } => "del",
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
#[derive(Debug, Clone)]
pub struct Mapper {
    rules: RuleSet,
    /// The rules matching the table of the last change: consecutive changes mostly share
    /// a table (one `TableInfo` per table map), and glob matching per row showed in
    /// profiles. A cache of a pure function: it does not change what `map` returns.
    last: std::cell::RefCell<Option<(Arc<TableInfo>, Vec<usize>)>>,
}

impl Mapper {
    pub fn new(rules: RuleSet) -> Self {
        Mapper {
            rules,
            last: std::cell::RefCell::new(None),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Appends the operations for one change to `out`.
    pub fn map(&self, change: &RowChange, out: &mut Vec<CacheOp>) -> Result<(), MapError> {
        let qualified = change.table.qualified();
        let mut last = self.last.borrow_mut();
        let same = matches!(&*last, Some((t, _)) if Arc::ptr_eq(t, &change.table));
        if !same {
            let indices = (self.rules.rules.iter().enumerate())
                .filter(|(_, r)| r.matches(qualified))
                .map(|(i, _)| i)
                .collect();
            *last = Some((change.table.clone(), indices));
        }
        let indices = last.as_ref().map(|(_, i)| i.as_slice()).unwrap_or(&[]);
        for &i in indices {
            self.map_rule(&self.rules.rules[i], change, qualified, out)?;
        }
        Ok(())
    }

    fn map_rule(
        &self,
        rule: &Rule,
        change: &RowChange,
        table: &str,
        out: &mut Vec<CacheOp>,
    ) -> Result<(), MapError> {
        let ctx = RowCtx {
            rule,
            info: &change.table,
            table,
            position: &change.event_position,
        };
        fn image<'c>(
            img: &'c Option<RowImage>,
            name: &'static str,
            change: &RowChange,
            table: &str,
        ) -> Result<&'c RowImage, MapError> {
            img.as_ref().ok_or_else(|| MapError::MissingImage {
                kind: change.kind.as_str(),
                image: name,
                table: table.to_string(),
                position: (*change.event_position).clone(),
            })
        }
        match change.kind {
            ChangeKind::Insert => {
                let after = image(&change.after, "after", change, table)?;
                ctx.write_or_delete(ctx.key(after)?, after, out)
            }
            ChangeKind::Delete => {
                if let Some(key) = ctx.key(image(&change.before, "before", change, table)?)? {
                    out.push(CacheOp::Del { key });
                }
                Ok(())
            }
            ChangeKind::Update => {
                let before = image(&change.before, "before", change, table)?;
                let after = image(&change.after, "after", change, table)?;
                let old_key = ctx.key(before)?;
                let new_key = ctx.key(after)?;
                match old_key {
                    Some(old) if Some(&old) != new_key.as_ref() => {
                        out.push(CacheOp::Del { key: old });
                    }
                    Some(same) => spare::recycle_key(same),
                    None => {}
                }
                ctx.write_or_delete(new_key, after, out)
            }
        }
    }
}

/// What one rule needs to map one row.
struct RowCtx<'a> {
    rule: &'a Rule,
    info: &'a TableInfo,
    table: &'a str,
    position: &'a Position,
}

impl RowCtx<'_> {
    fn value<'r>(&self, row: &'r RowImage, column: &str) -> Result<&'r SqlValue, MapError> {
        let idx = self
            .info
            .column_index(column)
            .ok_or_else(|| MapError::MissingColumn {
                table: self.table.to_string(),
                column: column.to_string(),
                rule: self.rule.index,
                template: self.rule.key.as_str().to_string(),
                position: self.position.clone(),
            })?;
        let value =
            row.get(idx)
                .and_then(Option::as_ref)
                .ok_or_else(|| MapError::ColumnNotInImage {
                    table: self.table.to_string(),
                    column: column.to_string(),
                    rule: self.rule.index,
                    position: self.position.clone(),
                })?;
        self.complete(column, value)
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

    fn key(&self, row: &RowImage) -> Result<Option<String>, MapError> {
        self.rule.key.render(spare::key(), |column, out| {
            Ok(encode::write_text(self.value(row, column)?, out))
        })
    }

    /// The operation for a row that now exists, under its `key` (already rendered).
    fn write_or_delete(
        &self,
        key: Option<String>,
        row: &RowImage,
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
                encode::write_json_object(self.columns(row)?.into_iter(), &mut value);
                CacheOp::Set { key, value, ttl_ms }
            }
            Action::Upsert(Format::Hash) => {
                let fields: Vec<(String, String)> = self
                    .columns(row)?
                    .into_iter()
                    .filter_map(|(name, v)| encode::text(v).map(|t| (name.to_string(), t)))
                    .collect();
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

    /// The (name, value) pairs an upsert writes: the include list, or every column.
    fn columns<'r>(&'r self, row: &'r RowImage) -> Result<Vec<(&'r str, &'r SqlValue)>, MapError> {
        match &self.rule.columns {
            Some(list) => list
                .iter()
                .map(|c| self.value(row, c).map(|v| (c.as_str(), v)))
                .collect(),
            None => self
                .info
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = row.get(i).and_then(Option::as_ref).ok_or_else(|| {
                        MapError::ColumnNotInImage {
                            table: self.table.to_string(),
                            column: c.clone(),
                            rule: self.rule.index,
                            position: self.position.clone(),
                        }
                    })?;
                    Ok((c.as_str(), self.complete(c, v)?))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
