//! `information_schema` lookups: column names when the binlog carries none, MariaDB JSON
//! columns, and the startup / post-DDL check that every template column exists and that
//! no covered table is changed by an unlogged foreign key cascade (`cascades`).
//!
//! Results are cached per table and dropped on every DDL event, so a changed table is
//! looked up again before its next row is decoded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mysql_async::prelude::Queryable;

use crate::checkpoint::Position;
use crate::mapper::rules::RuleSet;
use crate::mapper::KeyShapes;
use crate::source::schema::{key_shapes, Charsets, DbColumn, DbTable};
use crate::source::SourceError;

/// Where table descriptions come from.
pub struct Catalog {
    /// `None` when decoding offline (replay): only the binlog's own metadata is used.
    pool: Option<mysql_async::Pool>,
    mariadb: bool,
    cache: HashMap<(String, String), Option<Arc<DbTable>>>,
    /// The key shapes the covered tables' column types gave at the last rule check, and
    /// the server's clock (unix seconds) once they had been read.
    shapes: Arc<KeyShapes>,
    shapes_read_at: Option<i64>,
    /// The server's collations, read once when first needed.
    charsets: Option<Arc<Charsets>>,
    /// The rules (`Rule::index`) no table matched at the last rule check.
    unmatched: Vec<usize>,
}

impl Catalog {
    pub fn offline() -> Self {
        Catalog {
            pool: None,
            mariadb: false,
            cache: HashMap::new(),
            shapes: Arc::default(),
            shapes_read_at: None,
            charsets: None,
            unmatched: Vec::new(),
        }
    }

    pub fn online(pool: mysql_async::Pool, mariadb: bool) -> Self {
        Catalog {
            pool: Some(pool),
            mariadb,
            cache: HashMap::new(),
            shapes: Arc::default(),
            shapes_read_at: None,
            charsets: None,
            unmatched: Vec::new(),
        }
    }

    /// The rules no table matched at the last [`Self::check_rules`]: nothing is applied
    /// for them until such a table is created, which a misspelt name never is.
    pub fn unmatched_rules(&self) -> &[usize] {
        &self.unmatched
    }

    /// The key shapes of the last [`Self::check_rules`], whenever it ran (for `check`).
    pub fn shapes(&self) -> Arc<KeyShapes> {
        self.shapes.clone()
    }

    /// What the covered tables' column types said the rules' keys look like at a
    /// statement logged at `timestamp`: the last [`Self::check_rules`]'s, if it read them
    /// in an earlier second. Otherwise unknown: a check made later (a catch-up replaying
    /// older statements) may have seen a table altered or dropped since, and no check
    /// (offline) knows nothing.
    ///
    /// Why an earlier check is right: every DDL between it and the statement comes
    /// before the statement in the binlog, and each one is followed by a new check.
    pub fn shapes_at(&self, timestamp: u32) -> Arc<KeyShapes> {
        match self.shapes_read_at {
            Some(read) if read < i64::from(timestamp) => self.shapes.clone(),
            _ => Arc::default(),
        }
    }

    /// The server's collation ids by character set; empty offline.
    pub async fn charsets(&mut self) -> Result<Arc<Charsets>, SourceError> {
        if let Some(known) = &self.charsets {
            return Ok(known.clone());
        }
        let found = match &self.pool {
            Some(pool) => {
                Charsets::new(collations(&mut pool.get_conn().await?, self.mariadb).await?)
            }
            None => Charsets::default(),
        };
        Ok(self.charsets.insert(Arc::new(found)).clone())
    }

    /// Forgets every cached table (after DDL).
    pub fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// The table as the database describes it now; `None` offline or if it no longer exists.
    pub async fn table(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<Arc<DbTable>>, SourceError> {
        let Some(pool) = &self.pool else {
            return Ok(None);
        };
        let key = (db.to_string(), table.to_string());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        let mut conn = pool.get_conn().await?;
        let found = describe(&mut conn, db, table, self.mariadb)
            .await?
            .map(Arc::new);
        self.cache.insert(key, found.clone());
        Ok(found)
    }

    /// Checks that every column a rule needs exists in every table the rule matches.
    /// `position` is where the check happens (startup position or the DDL's), for messages.
    pub async fn check_rules(
        &mut self,
        rules: &RuleSet,
        position: &Position,
    ) -> Result<usize, SourceError> {
        let Some(pool) = &self.pool else {
            return Ok(0);
        };
        let mut conn = pool.get_conn().await?;
        let tables: Vec<(String, String, Option<i64>, bool)> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME, CAST(UNIX_TIMESTAMP(CREATE_TIME) AS SIGNED), \
                 TABLE_TYPE = 'SYSTEM VERSIONED' \
                 FROM information_schema.TABLES \
                 WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA NOT IN \
                 ('mysql','information_schema','performance_schema','sys')",
            )
            .await?;
        let covered: Vec<_> = tables
            .into_iter()
            .filter(|(db, table, _, _)| rules.covers(&format!("{db}.{table}")))
            .collect();
        self.unmatched = rules
            .rules
            .iter()
            .filter(|r| {
                !covered
                    .iter()
                    .any(|(db, t, ..)| r.matches(&format!("{db}.{t}")))
            })
            .map(|r| r.index)
            .collect();
        let (logged, ignored) = super::server::binlog_filters(&mut conn, self.mariadb).await?;
        for (db, table, _, _) in &covered {
            if ignored.contains(db) || !(logged.is_empty() || logged.contains(db)) {
                let qualified = format!("{db}.{table}");
                return Err(unlogged_database(
                    &qualified, db, &logged, &ignored, position,
                ));
            }
        }
        // One query for all covered tables, not three per table: this runs at start and
        // after every DDL, and a rule set may cover hundreds of tables.
        let described = describe_many(&mut conn, &covered, self.mariadb).await?;
        let databases: BTreeSet<String> = covered.iter().map(|(db, ..)| db.clone()).collect();
        let mut checked = Vec::new();
        for (key, desc) in described {
            let qualified = format!("{}.{}", key.0, key.1);
            check_columns(rules, &qualified, &desc, position)?;
            let desc = Arc::new(desc);
            self.cache.insert(key, Some(desc.clone()));
            checked.push((qualified, desc));
        }
        self.shapes = Arc::new(key_shapes(
            rules,
            checked.iter().map(|(q, desc)| (q.as_str(), &**desc)),
        ));
        // Taken after the descriptions were read: they hold no DDL logged after it.
        self.shapes_read_at = conn
            .query_first("SELECT CAST(UNIX_TIMESTAMP() AS SIGNED)")
            .await?;
        let checked = checked.len();
        super::cascades::check(&mut conn, rules, &databases, position).await?;
        Ok(checked)
    }
}

/// A covered table whose database the server's binlog filters leave out: its changes
/// never reach the binlog, so its keys would silently go stale.
fn unlogged_database(
    table: &str,
    db: &str,
    logged: &[String],
    ignored: &[String],
    position: &Position,
) -> SourceError {
    let filter = if ignored.iter().any(|d| d == db) {
        format!("binlog_ignore_db={}", ignored.join(","))
    } else {
        format!("binlog_do_db={}", logged.join(","))
    };
    SourceError::Schema {
        table: table.to_string(),
        position: position.clone(),
        message: format!(
            "the server does not log changes of database `{db}` ({filter}), so the keys of \
             this table's rules would go stale; remove the filter from the server's options \
             or the rule"
        ),
    }
}

/// Fails when a rule matching `qualified` needs a column the table lacks.
fn check_columns(
    rules: &RuleSet,
    qualified: &str,
    desc: &DbTable,
    position: &Position,
) -> Result<(), SourceError> {
    for rule in rules.matching(qualified) {
        for column in rule.required_columns() {
            if !desc.columns.iter().any(|c| c.name == column) {
                return Err(SourceError::Schema {
                    table: qualified.to_string(),
                    position: position.clone(),
                    message: format!(
                        "has no column `{column}`, which rules[{}] (key `{}`) needs",
                        rule.index,
                        rule.key.as_str()
                    ),
                });
            }
        }
    }
    Ok(())
}

type TableKey = (String, String);

/// database, table, name, COLUMN_TYPE, CHARACTER_SET_NAME, hidden, row end.
type ColumnRow = (String, String, String, String, Option<String>, bool, bool);

/// Whether a column is hidden from `SELECT *` (MySQL 8 and MariaDB write `INVISIBLE` in
/// `EXTRA`), and whether it is a system-versioned table's row end (MariaDB).
const COLUMN_FLAGS: &str = "EXTRA LIKE '%INVISIBLE%', \
    COALESCE(GENERATION_EXPRESSION = 'ROW END', FALSE)";

/// `describe` for many tables (database, table, CREATE_TIME) at once: two queries over
/// their databases, whatever their number.
async fn describe_many(
    conn: &mut mysql_async::Conn,
    tables: &[(String, String, Option<i64>, bool)],
    mariadb: bool,
) -> Result<BTreeMap<TableKey, DbTable>, SourceError> {
    let mut out: BTreeMap<TableKey, DbTable> = tables
        .iter()
        .map(|(db, table, created, versioned)| {
            let desc = DbTable {
                columns: Vec::new(),
                changed_at: created.and_then(|t| u64::try_from(t).ok()),
                versioned: *versioned,
                sequence: false,
            };
            ((db.clone(), table.clone()), desc)
        })
        .collect();
    let databases: BTreeSet<&String> = tables.iter().map(|(db, ..)| db).collect();
    if databases.is_empty() {
        return Ok(out);
    }
    // Both name lists, so that a covered table among thousands of others does not bring
    // every other table's columns along; pairs that cross are dropped below.
    let names: BTreeSet<&String> = tables.iter().map(|(_, table, ..)| table).collect();
    let in_list = |n: usize| vec!["?"; n].join(", ");
    let (dbs, tbls) = (in_list(databases.len()), in_list(names.len()));
    let params: Vec<&String> = databases.into_iter().chain(names).collect();
    let rows: Vec<ColumnRow> = conn
        .exec(
            format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, \
                 {COLUMN_FLAGS} FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA IN ({dbs}) AND TABLE_NAME IN ({tbls}) \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
            ),
            params.clone(),
        )
        .await?;
    let json: BTreeSet<(String, String, String)> = if mariadb {
        let clauses: Vec<(String, String, String)> = conn
            .exec(
                format!(
                    "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE \
                     FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE CONSTRAINT_SCHEMA IN ({dbs}) AND TABLE_NAME IN ({tbls})"
                ),
                params,
            )
            .await?;
        clauses
            .into_iter()
            .filter_map(|(db, table, clause)| Some((db, table, json_valid_column(&clause)?)))
            .collect()
    } else {
        BTreeSet::new()
    };
    for (db, table, name, column_type, charset, hidden, row_end) in rows {
        let key = (db, table);
        let Some(desc) = out.get_mut(&key) else {
            continue;
        };
        desc.columns.push(DbColumn {
            json: json.contains(&(key.0.clone(), key.1.clone(), name.clone())),
            name,
            column_type: column_type.to_ascii_lowercase(),
            charset,
            hidden,
            row_end,
        });
    }
    // A table dropped between the two queries has no columns: not there.
    out.retain(|_, desc| !desc.columns.is_empty());
    Ok(out)
}

pub async fn describe(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
    mariadb: bool,
) -> Result<Option<DbTable>, SourceError> {
    let rows: Vec<(String, String, Option<String>, bool, bool)> = conn
        .exec(
            format!(
                "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, {COLUMN_FLAGS} \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
            ),
            (db, table),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    // MariaDB's JSON is LONGTEXT plus a `json_valid(col)` check constraint.
    let json_columns: Vec<String> = if mariadb {
        conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await?
        .into_iter()
        .filter_map(|clause: String| json_valid_column(&clause))
        .collect()
    } else {
        Vec::new()
    };
    let columns = rows
        .into_iter()
        .map(|(name, column_type, charset, hidden, row_end)| DbColumn {
            json: json_columns.contains(&name),
            name,
            column_type: column_type.to_ascii_lowercase(),
            charset,
            hidden,
            row_end,
        })
        .collect();
    let found: Option<(Option<i64>, String)> = conn
        .exec_first(
            "SELECT CAST(UNIX_TIMESTAMP(CREATE_TIME) AS SIGNED), TABLE_TYPE \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await?;
    let (changed_at, kind) = found.unwrap_or_default();
    Ok(Some(DbTable {
        columns,
        changed_at: changed_at.and_then(|t| u64::try_from(t).ok()),
        versioned: kind == "SYSTEM VERSIONED",
        sequence: kind == "SEQUENCE",
    }))
}

/// Every collation id the server has, with its character set's name. MariaDB 10.10 and
/// later list the UCA 14 collations of each character set only in
/// `COLLATION_CHARACTER_SET_APPLICABILITY`, with an `ID` column older servers lack.
async fn collations(
    conn: &mut mysql_async::Conn,
    mariadb: bool,
) -> Result<HashMap<u16, String>, SourceError> {
    let listed: Vec<(u64, String)> = conn
        .query(
            "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS \
             WHERE ID IS NOT NULL AND CHARACTER_SET_NAME IS NOT NULL",
        )
        .await?;
    let mut by_id = HashMap::new();
    let mut add = |rows: Vec<(u64, String)>| {
        for (id, name) in rows {
            if let Ok(id) = u16::try_from(id) {
                by_id.insert(id, name);
            }
        }
    };
    add(listed);
    if mariadb {
        let full = conn
            .query(
                "SELECT ID, CHARACTER_SET_NAME \
                 FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY \
                 WHERE ID IS NOT NULL",
            )
            .await;
        match full {
            Ok(rows) => add(rows),
            // Before 10.10 the view has no ID column, and no collation it would add.
            Err(mysql_async::Error::Server(e)) if e.code == 1054 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(by_id)
}

/// `json_valid(`doc`)` → `doc`.
fn json_valid_column(clause: &str) -> Option<String> {
    let inner = clause
        .trim()
        .strip_prefix("json_valid(")?
        .strip_suffix(')')?;
    Some(inner.trim().trim_matches('`').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_json_valid_columns() {
        assert_eq!(
            super::json_valid_column("json_valid(`doc`)").as_deref(),
            Some("doc")
        );
        assert_eq!(super::json_valid_column("`a` > 0"), None);
    }
}
