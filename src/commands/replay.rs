//! `replay`: decode recorded binlog files and print committed row changes (or, with rules,
//! the cache operations) as JSON lines. Never touches Redis.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::checkpoint::Position;
use crate::chunk::{Chunk, RowRef, Values};
use crate::error::Error;
use crate::mapper::rules::RuleSet;
use crate::mapper::{encode, Mapper};
use crate::source::catalog::Catalog;
use crate::source::file::BinlogFileReader;
use crate::source::{Assembler, Commit, GtidTracker, SourceError, SourceItem};
use crate::value::Emptied;
use crate::xa::Xid;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub transactions: usize,
    pub row_changes: usize,
    pub operations: usize,
}

/// Replays `files` in order, writing one JSON line per committed row change (no rules) or
/// per cache operation (with rules).
pub async fn replay(
    files: &[PathBuf],
    rules: Option<RuleSet>,
    out: &mut impl Write,
) -> Result<ReplayStats, Error> {
    let rules = rules.map(Arc::new);
    let mapper = rules.as_ref().map(|r| Mapper::new((**r).clone()));
    let mut stats = ReplayStats::default();
    for path in files {
        let mut reader = BinlogFileReader::open(path)?;
        let start = Position::new(reader.name(), 4);
        let mut assembler = Assembler::new(&start, 4096, rules.clone(), Catalog::offline());
        // Rows are printed chunk by chunk: wide rows end a chunk early, as in the daemon.
        assembler.set_chunk_bytes(1 << 20);
        // The file's start event (PREVIOUS_GTIDS, GTID_LIST) gives the GTIDs before it.
        assembler.track_gtids(GtidTracker::enabled(None));
        let mut items = Vec::new();
        let mut open = Open::default();
        while let Some(event) = reader.next_event()? {
            assembler.handle(&event, &mut items).await?;
            for item in items.drain(..) {
                // A commit, and the XA phase it ends, if any.
                let (commit, xa) = match item {
                    SourceItem::Changes(chunk) => {
                        open.chunks.push(chunk);
                        continue;
                    }
                    SourceItem::Cleared {
                        emptied, statement, ..
                    } => {
                        open.cleared.push((emptied, statement));
                        continue;
                    }
                    SourceItem::XaStart(xid) => {
                        open.xa = Some(xid);
                        continue;
                    }
                    SourceItem::Commit(commit) => {
                        let prepared = open.xa.take().map(|xid| ("prepare", xid));
                        (commit, prepared)
                    }
                    // MySQL's one-phase commit ends the group holding its rows.
                    SourceItem::XaEnd {
                        xid,
                        committed,
                        commit,
                    } => {
                        open.xa = None;
                        let phase = if committed { "commit" } else { "rollback" };
                        (commit, Some((phase, xid)))
                    }
                };
                print_commit(
                    &mut open,
                    &commit,
                    &mut stats,
                    mapper.as_ref(),
                    rules.as_deref(),
                    out,
                )?;
                if let Some((phase, xid)) = xa {
                    print_xa(phase, &xid, &commit, out)?;
                }
            }
        }
        assembler.finish()?;
    }
    Ok(stats)
}

/// What the transaction being read has handed out so far.
#[derive(Default)]
struct Open {
    chunks: Vec<Chunk>,
    cleared: Vec<(Emptied, String)>,
    /// The XA transaction whose PREPARE group this is.
    xa: Option<Xid>,
}

/// The lines of a transaction, at its commit.
fn print_commit(
    open: &mut Open,
    commit: &Commit,
    stats: &mut ReplayStats,
    mapper: Option<&Mapper>,
    rules: Option<&RuleSet>,
    out: &mut impl Write,
) -> Result<(), Error> {
    stats.transactions += 1;
    for (emptied, statement) in open.cleared.drain(..) {
        let clear = Cleared {
            emptied: &emptied,
            statement: &statement,
            commit,
        };
        stats.operations += print_clear(&clear, rules, out)?;
    }
    for change in open.chunks.iter().flat_map(Chunk::iter) {
        stats.row_changes += 1;
        stats.operations += print(change, commit, mapper, out)?;
    }
    open.chunks.clear();
    Ok(())
}

/// An XA transaction's PREPARE (its changes, printed before, wait for its commit), its
/// COMMIT or its ROLLBACK.
fn print_xa(phase: &str, xid: &Xid, commit: &Commit, out: &mut impl Write) -> Result<(), Error> {
    let mut line = json!({
        "position": commit.position.to_string(),
        "xa": phase,
        "xid": xid.to_string(),
    });
    add_gtid(&mut line, commit);
    writeln!(out, "{line}").map_err(stdout_error)
}

/// One line per change (or per operation), with the checkpoint its transaction's commit
/// would write: the position after it and, when the file has GTIDs, the GTIDs.
fn print(
    change: RowRef<'_>,
    commit: &Commit,
    mapper: Option<&Mapper>,
    out: &mut impl Write,
) -> Result<usize, Error> {
    let Some(mapper) = mapper else {
        let mut line = json!({
            "position": commit.position.to_string(),
            "database": change.table.database,
            "table": change.table.table,
            "kind": change.kind,
            "before": change.before.map(|r| image_json(&change.table.columns, r)),
            "after": change.after.map(|r| image_json(&change.table.columns, r)),
        });
        add_gtid(&mut line, commit);
        writeln!(out, "{line}").map_err(stdout_error)?;
        return Ok(0);
    };
    let mut ops = Vec::new();
    mapper.map(change, &mut ops)?;
    for op in &ops {
        let mut line = serde_json::to_value(op).unwrap_or_default();
        line["position"] = Value::String(commit.position.to_string());
        add_gtid(&mut line, commit);
        writeln!(out, "{line}").map_err(stdout_error)?;
    }
    Ok(ops.len())
}

/// A statement that emptied a table without logging its rows: one line naming it (no
/// rules), or one per key pattern whose matching keys the daemon deletes (with rules).
/// A statement that emptied a table, and the commit that follows it.
struct Cleared<'a> {
    emptied: &'a Emptied,
    statement: &'a str,
    commit: &'a Commit,
}

fn print_clear(
    cleared: &Cleared<'_>,
    rules: Option<&RuleSet>,
    out: &mut impl Write,
) -> Result<usize, Error> {
    let Cleared {
        emptied,
        statement,
        commit,
    } = cleared;
    let (database, table, columns) = match emptied {
        Emptied::Table { database, table } => (database, Some(table), None),
        Emptied::Database(database) => (database, None, None),
        Emptied::Columns {
            database,
            table,
            columns,
        } => (database, Some(table), Some(columns)),
        Emptied::CopySwappedIn { database, table } => (database, Some(table), None),
    };
    let lines = match rules.map(|r| r.clear(emptied)) {
        None if columns.is_some() => vec![json!({
            "database": database, "table": table, "kind": "columns changed", "columns": columns
        })],
        None if matches!(emptied, Emptied::CopySwappedIn { .. }) => vec![json!({
            "database": database, "table": table, "kind": "copy swapped in"
        })],
        None => vec![json!({"database": database, "table": table, "kind": "emptied"})],
        Some(None) => Vec::new(),
        Some(Some(clear)) => clear
            .patterns
            .iter()
            .map(|p| json!({"op": "clear", "pattern": p, "rules": clear.rules}))
            .collect(),
    };
    let operations = if rules.is_some() { lines.len() } else { 0 };
    for mut line in lines {
        line["position"] = Value::String(commit.position.to_string());
        line["statement"] = Value::String(statement.to_string());
        add_gtid(&mut line, commit);
        writeln!(out, "{line}").map_err(stdout_error)?;
    }
    Ok(operations)
}

fn stdout_error(e: std::io::Error) -> Error {
    Error::Source(SourceError::File {
        file: "<stdout>".into(),
        message: e.to_string(),
    })
}

/// The GTIDs after the commit, when the file has any (an empty set says nothing).
fn add_gtid(line: &mut Value, commit: &Commit) {
    if let Some(gtid) = commit.gtid.as_ref().filter(|g| !g.is_empty()) {
        line["gtid"] = Value::String(gtid.clone());
    }
}

fn image_json(columns: &[String], row: &Values) -> Value {
    let mut map = Map::new();
    for (name, value) in columns.iter().zip(row) {
        if let Some(v) = value {
            map.insert(name.clone(), encode::json(v));
        }
    }
    Value::Object(map)
}
