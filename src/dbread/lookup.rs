//! Which of many keys the current rows still produce, with one query per table and batch
//! of keys instead of one per key (`render_key`): `verify` judges a whole cache with it.
//!
//! Each key is split into its template's column values (every split, as `render_key`
//! does); the splits become one `WHERE (a = ? AND b = ?) OR …` per table, and the rows
//! found are rendered by the rule's own mapper. A key is produced when a rendered key
//! equals it. Memory is bounded by the batch: the set holds the keys of the rows found,
//! and a query asks for fewer splits when the rows it returns are wide (`PageSize`).

use std::collections::{BTreeMap, HashSet};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::{quote, render_key, row_change, table_name, Table, MAX_SPLITS};
use crate::error::Error;
use crate::mapper::rules::{Rule, RuleSet};
use crate::mapper::Mapper;
use crate::page_size::PageSize;
use crate::source::SourceError;

/// Splits per query at most: bounds the statement's size and the range optimizer's work.
const PER_QUERY: usize = 500;

/// Rows one split may match (a key on non-unique columns): as `render_key` reads.
const ROWS_PER_SPLIT: usize = 16;

/// Keys that rows of `tables` render under `rule`: every key of `keys` a row still
/// produces is among them (with, maybe, other keys of the same rows). A query's rows
/// take about `max_bytes` at most, as far as the rows before tell.
pub async fn produced_keys(
    sql: &mut Conn,
    rule: &Rule,
    tables: &[&Table],
    keys: &[&str],
    max_bytes: usize,
) -> Result<HashSet<String>, Error> {
    let mut produced = HashSet::new();
    for (columns, splits) in by_columns(rule, keys) {
        for table in tables {
            let mut page = PageSize::new(PER_QUERY, max_bytes);
            let mut rest = &splits[..];
            while !rest.is_empty() {
                let (chunk, after) = rest.split_at(page.rows().min(rest.len()));
                rest = after;
                let Some(rows) = select(sql, table, &columns, chunk).await? else {
                    // Cut short or refused: ask key by key, as `verify` does.
                    one_by_one(sql, rule, table, chunk, &mut produced).await?;
                    continue;
                };
                // Per split asked, as `PageSize` counts rows.
                let bytes: usize = rows.iter().map(row_bytes).sum();
                page.read(bytes * page.rows() / chunk.len());
                render(rule, table, rows, &mut produced)?;
            }
        }
    }
    Ok(produced)
}

/// Bytes a row's values hold: text and blobs by length, anything else as eight.
fn row_bytes(row: &Row) -> usize {
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            Some(Value::Bytes(b)) => b.len(),
            _ => 8,
        })
        .sum()
}

/// One split: the key it came from, and the column values in template order.
type Split<'k> = (&'k str, Vec<&'k str>);

/// Every split of every key, grouped by the columns they name (a template naming a
/// column twice names it twice here too).
fn by_columns<'k>(rule: &'k Rule, keys: &[&'k str]) -> BTreeMap<Vec<&'k str>, Vec<Split<'k>>> {
    let mut groups: BTreeMap<Vec<&str>, Vec<Split<'k>>> = BTreeMap::new();
    for key in keys {
        for split in rule.key.parse_keys(key, MAX_SPLITS) {
            let (columns, values): (Vec<&str>, Vec<&str>) = split.into_iter().unzip();
            groups.entry(columns).or_default().push((key, values));
        }
    }
    groups
}

/// The rows matching any split, or `None` when the server refused the query (a value
/// that does not fit a column's type) or the rows hit the limit (some may be missing).
async fn select(
    sql: &mut Conn,
    table: &Table,
    columns: &[&str],
    splits: &[Split<'_>],
) -> Result<Option<Vec<Row>>, Error> {
    let one: Vec<String> = columns
        .iter()
        .map(|c| format!("{} = ?", quote(c)))
        .collect();
    let one = format!("({})", one.join(" AND "));
    let limit = splits.len() * ROWS_PER_SPLIT;
    let query = format!(
        "SELECT {} FROM {} WHERE {} LIMIT {limit}",
        table.select,
        table_name(table),
        vec![one.as_str(); splits.len()].join(" OR ")
    );
    let params: Vec<Value> = splits
        .iter()
        .flat_map(|(_, values)| values.iter().map(|v| Value::from(*v)))
        .collect();
    match sql.exec::<Row, _, _>(query, params).await {
        Ok(rows) if rows.len() < limit => Ok(Some(rows)),
        Ok(_) | Err(mysql_async::Error::Server(_)) => Ok(None),
        Err(e) => Err(SourceError::from(e).into()),
    }
}

async fn one_by_one(
    sql: &mut Conn,
    rule: &Rule,
    table: &Table,
    splits: &[Split<'_>],
    produced: &mut HashSet<String>,
) -> Result<(), Error> {
    for (key, _) in splits {
        if render_key(sql, rule, &[table], key).await?.is_some() {
            produced.insert(key.to_string());
        }
    }
    Ok(())
}

/// Adds the keys the rows render under `rule` to `produced`. The mapper is made here,
/// between awaits: it is not `Sync`.
fn render(
    rule: &Rule,
    table: &Table,
    rows: Vec<Row>,
    produced: &mut HashSet<String>,
) -> Result<(), Error> {
    let mapper = Mapper::new(RuleSet {
        rules: vec![rule.clone()],
    });
    let mut ops = Vec::new();
    for row in rows {
        ops.clear();
        mapper.map(row_change(table, row).as_row(), &mut ops)?;
        produced.extend(ops.iter().map(|op| op.key().to_string()));
    }
    Ok(())
}
