//! Reading rows back over SQL and rendering them exactly as the daemon would, for the
//! checks that compare Redis with the database (`verify`, consistency sampling).
//!
//! Rows come over the binary protocol in a UTC session and are converted to the
//! decoder's [`SqlValue`](crate::value::SqlValue)s by declared column type (`row`), so
//! the daemon's own mapper renders the expected keys and values.

pub mod lookup;
mod row;
pub mod snapshot;

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};

use crate::checkpoint::Position;
use crate::error::Error;
use crate::mapper::rules::{Rule, RuleSet};
use crate::mapper::{CacheOp, KeyShapes, Mapper};
use crate::source::catalog::describe;
use crate::source::schema::{self, DbTable};
use crate::source::SourceError;
use crate::value::{ChangeKind, RowChange, TableInfo};

/// A table some rule covers, described once.
pub struct Table {
    pub info: Arc<TableInfo>,
    pub db: DbTable,
    pub primary_key: Vec<String>,
    /// What to `SELECT`: `*`, then any INVISIBLE column by name (in `info`'s order).
    pub select: String,
    /// The `db.columns` each selected value belongs to, in `select`'s order.
    selected: Vec<usize>,
    /// The server's estimate of its row count (`information_schema.TABLES.TABLE_ROWS`,
    /// exact for MyISAM, within tens of percent for InnoDB), for progress reports.
    pub estimated_rows: u64,
}

/// Every base table some rule covers, with its columns and primary key.
pub async fn tables(sql: &mut Conn, rules: &RuleSet, mariadb: bool) -> Result<Vec<Table>, Error> {
    let mut tables = Vec::new();
    for (database, table, db, estimated_rows) in described(sql, rules, mariadb).await? {
        let mut primary_key: Vec<String> = sql
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (&database, &table),
            )
            .await
            .map_err(SourceError::from)?;
        // A system-versioned table's primary key ends with its row end, the same for
        // every current row (the only rows `SELECT` shows): the rest pages them.
        primary_key.retain(|k| !is_row_end(&db, k));
        if primary_key.is_empty() {
            return Err(Error::Usage(format!(
                "table {database}.{table} has no primary key: rows are read back by primary \
                 key; add one, or narrow the rule's `table` pattern"
            )));
        }
        // The columns `SELECT *` returns, in its order, then the INVISIBLE ones by name: the
        // binlog has those too, so a key or primary key may use them; values made without
        // a `columns` list leave them out, as the daemon's do.
        let (visible, invisible): (Vec<usize>, Vec<usize>) =
            (0..db.columns.len()).partition(|&i| !db.columns[i].hidden);
        let selected: Vec<usize> = visible.into_iter().chain(invisible.clone()).collect();
        let select = std::iter::once("*".to_string())
            .chain(invisible.iter().map(|&i| quote(&db.columns[i].name)))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = selected
            .iter()
            .map(|&i| db.columns[i].name.clone())
            .collect();
        let hidden = selected.iter().map(|&i| db.columns[i].hidden).collect();
        let info = TableInfo::new(database, table, columns).with_versioning(hidden, None);
        tables.push(Table {
            info: Arc::new(info),
            db,
            primary_key,
            select,
            selected,
            estimated_rows,
        });
    }
    Ok(tables)
}

/// A row end column of a system-versioned table: described as one, or (an implicit
/// period) not described at all.
fn is_row_end(db: &DbTable, column: &str) -> bool {
    match db.columns.iter().find(|c| c.name == column) {
        Some(c) => c.row_end,
        None => db.versioned,
    }
}

/// Every base table some rule covers, as (database, table, description, estimated rows).
async fn described(
    sql: &mut Conn,
    rules: &RuleSet,
    mariadb: bool,
) -> Result<Vec<(String, String, DbTable, u64)>, Error> {
    let names: Vec<(String, String, Option<u64>)> = sql
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1, 2",
        )
        .await
        .map_err(SourceError::from)?;
    let mut found = Vec::new();
    for (database, table, rows) in names {
        if !rules.covers(&format!("{database}.{table}")) {
            continue;
        }
        if let Some(db) = describe(sql, &database, &table, mariadb).await? {
            found.push((database, table, db, rows.unwrap_or(0)));
        }
    }
    Ok(found)
}

/// What the tables' column types say the rules' keys look like (`KeyShapes`).
pub fn key_shapes(rules: &RuleSet, tables: &[Table]) -> KeyShapes {
    schema::key_shapes(rules, tables.iter().map(|t| (t.info.qualified(), &t.db)))
}

/// The cache operation the current row behind `key` produces under `rule` (found through
/// the key template's columns), or `None` when no row produces this key.
pub async fn render_key(
    sql: &mut Conn,
    rule: &Rule,
    tables: &[&Table],
    key: &str,
) -> Result<Option<CacheOp>, Error> {
    for values in rule.key.parse_keys(key, MAX_SPLITS) {
        if let Some(op) = render_split(sql, rule, tables, key, &values).await? {
            return Ok(Some(op));
        }
    }
    Ok(None)
}

/// How many ways of splitting a key into column values are looked up: a key whose text
/// columns hold the template's separators many times over is judged on the first ones.
pub(super) const MAX_SPLITS: usize = 16;

/// The operation of the row whose columns hold `values`, if it renders `key`.
async fn render_split(
    sql: &mut Conn,
    rule: &Rule,
    tables: &[&Table],
    key: &str,
    values: &[(&str, &str)],
) -> Result<Option<CacheOp>, Error> {
    for table in tables {
        let condition: Vec<String> = values
            .iter()
            .map(|(c, _)| format!("{} = ?", quote(c)))
            .collect();
        let query = format!(
            "SELECT {} FROM {} WHERE {} LIMIT 16",
            table.select,
            table_name(table),
            condition.join(" AND ")
        );
        let params: Vec<Value> = values.iter().map(|(_, v)| Value::from(*v)).collect();
        let rows: Vec<Row> = match sql.exec(query, params).await {
            Ok(rows) => rows,
            // A value that does not fit the column's type cannot come from this table.
            Err(mysql_async::Error::Server(_)) => continue,
            Err(e) => return Err(SourceError::from(e).into()),
        };
        // Made here, after the query: a mapper is not `Sync`, so it must not live across
        // an await of this `Send` future.
        let mapper = Mapper::new(RuleSet {
            rules: vec![rule.clone()],
        });
        for r in rows {
            let mut ops = Vec::new();
            mapper.map(row_change(table, r).as_row(), &mut ops)?;
            if let Some(op) = ops.into_iter().find(|op| op.key() == key) {
                return Ok(Some(op));
            }
        }
    }
    Ok(None)
}

/// A row read over SQL as the insert of that row.
pub fn row_change(table: &Table, row: Row) -> RowChange {
    let image = row
        .unwrap_raw()
        .into_iter()
        .zip(table.selected.iter().map(|&i| &table.db.columns[i]))
        .map(|(v, c)| Some(row::convert(v.unwrap_or(Value::NULL), c)))
        .collect();
    RowChange {
        table: table.info.clone(),
        kind: ChangeKind::Insert,
        before: None,
        after: Some(image),
        event_position: Arc::new(Position::new("sql", 0)),
    }
}

/// What an upsert operation stores, as comparable text (hash fields sorted); `None` for
/// a delete.
pub fn op_text(op: &CacheOp) -> Option<String> {
    match op {
        CacheOp::Set { value, .. } => Some(value.clone()),
        CacheOp::Hash { fields, .. } => Some(hash_text(fields.clone())),
        CacheOp::Del { .. }
        | CacheOp::Stash { .. }
        | CacheOp::Unstash { .. }
        | CacheOp::Expire { .. } => None,
    }
}

/// A hash as comparable text: fields sorted.
pub fn hash_text(mut fields: Vec<(String, String)>) -> String {
    fields.sort();
    serde_json::to_string(&fields).unwrap_or_default()
}

/// `SELECT` of up to `limit` rows of `table` following `after` (the primary key of the
/// last row read), in primary-key order: keyset pagination, so a table is read in pages
/// of bounded size and each page is one indexed range scan.
pub fn page_query(table: &Table, after: Option<&[Value]>, limit: usize) -> (String, Params) {
    let pk: Vec<String> = table.primary_key.iter().map(|c| quote(c)).collect();
    let pk = pk.join(", ");
    let (select, name) = (&table.select, table_name(table));
    match after {
        None => (
            format!("SELECT {select} FROM {name} ORDER BY {pk} LIMIT {limit}"),
            Params::Empty,
        ),
        Some(values) => {
            let marks = vec!["?"; values.len()].join(", ");
            (
                format!(
                    "SELECT {select} FROM {name} WHERE ({pk}) > ({marks}) ORDER BY {pk} \
                     LIMIT {limit}"
                ),
                Params::Positional(values.to_vec()),
            )
        }
    }
}

/// The primary key of `row`, read by `page_query`: where the next page starts.
pub fn primary_key_values(table: &Table, row: &Row) -> Vec<Value> {
    table
        .primary_key
        .iter()
        .map(|c| {
            let i = table
                .info
                .column_index(c)
                .expect("primary key column exists");
            row.as_ref(i).cloned().unwrap_or(Value::NULL)
        })
        .collect()
}

/// `` `db`.`table` ``
pub fn table_name(table: &Table) -> String {
    format!(
        "{}.{}",
        quote(&table.info.database),
        quote(&table.info.table)
    )
}

pub fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}
