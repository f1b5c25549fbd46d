//! `verify`: compares Redis with the database for every `upsert` rule.
//!
//! Rows are read in primary-key order, up to `CHUNK` at a time (keyset pagination, never
//! the whole table in memory; fewer for wide rows, `page_size`), rendered by the
//! same mapper the daemon uses, and compared with what Redis holds: a key that should
//! exist but does not is *missing*, one whose value differs is *different*. Then the keys in Redis that match a rule's pattern are scanned
//! and each is traced back to its row through the key template: a key no row produces is
//! *extra* (a stale entry the daemon should have deleted).
//!
//! `delete` rules cache what the application writes, in its own format: only *extra* keys
//! are checked for them (a key whose row is gone). Keys of rules with a TTL may expire, so
//! a missing one is not a mismatch. Run it on a quiet or caught-up daemon: a change in
//! flight shows up as a mismatch until it is applied.

use std::collections::{HashMap, HashSet};

use crate::sink::conn::{read_each, Conn as RedisConn, Scan};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};

use crate::config::Config;
use crate::dbread::{self, hash_text, lookup, row_change, Table};
use crate::error::Error;
use crate::lease::is_lease_marker;
use crate::mapper::rules::{Action, Rule, RuleSet};
use crate::mapper::{CacheOp, KeyShapes, Mapper};
use crate::page_size::PageSize;
use crate::sink::SinkError;
use crate::source::{self, SourceError};

/// Rows read per query, and keys compared per Redis round trip.
const CHUNK: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    Missing {
        key: String,
        table: String,
        rule: usize,
    },
    Different {
        key: String,
        table: String,
        rule: usize,
        redis: String,
        database: String,
    },
    Extra {
        key: String,
        rule: usize,
    },
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub rows: u64,
    pub keys_compared: u64,
    pub keys_scanned: u64,
    pub missing: u64,
    pub different: u64,
    pub extra: u64,
}

impl Report {
    pub fn mismatches(&self) -> u64 {
        self.missing + self.different + self.extra
    }

    fn count(&mut self, m: &Mismatch) {
        match m {
            Mismatch::Missing { .. } => self.missing += 1,
            Mismatch::Different { .. } => self.different += 1,
            Mismatch::Extra { .. } => self.extra += 1,
        }
    }
}

struct Verifier<'a, F: FnMut(&Mismatch)> {
    sql: Conn,
    redis: RedisConn,
    checkpoint_key: &'a str,
    sample: Option<u64>,
    /// Bounds a chunk's values (`sink.max_bytes_per_step`), through [`PageSize`].
    max_bytes: usize,
    report: Report,
    on_mismatch: F,
}

/// Runs the comparison; `on_mismatch` sees each mismatch as it is found.
pub async fn verify(
    config: &Config,
    rules: &RuleSet,
    sample: Option<u64>,
    on_mismatch: impl FnMut(&Mismatch),
) -> Result<Report, Error> {
    let (mut sql, server) = source::connect(&config.source).await?;
    // TIMESTAMP values come back in the session time zone; the cache holds them in UTC.
    sql.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(SourceError::from)?;
    let redis = crate::sink::connection(&config.redis).await?;
    let mut v = Verifier {
        sql,
        redis,
        checkpoint_key: &config.checkpoint.key,
        sample,
        max_bytes: config.sink.max_bytes_per_step,
        report: Report::default(),
        on_mismatch,
    };
    let tables = dbread::tables(&mut v.sql, rules, server.mariadb).await?;
    for rule in &rules.rules {
        if let Action::Upsert(_) = rule.action {
            for table in tables.iter().filter(|t| rule.matches(t.info.qualified())) {
                v.compare_rows(rule, table).await?;
            }
        }
    }
    let shapes = dbread::key_shapes(rules, &tables);
    for i in 0..rules.rules.len() {
        v.find_extra(i, rules, &shapes, &tables).await?;
    }
    Ok(v.report)
}

impl<F: FnMut(&Mismatch)> Verifier<'_, F> {
    fn found(&mut self, m: Mismatch) {
        self.report.count(&m);
        (self.on_mismatch)(&m);
    }

    /// Every base table some rule covers, with its columns and primary key.
    /// Reads the table chunk by chunk and compares each row's cache entry.
    async fn compare_rows(&mut self, rule: &Rule, table: &Table) -> Result<(), Error> {
        let mapper = Mapper::new(RuleSet {
            rules: vec![rule.clone()],
        });
        let mut after: Option<Vec<Value>> = None;
        let mut page = PageSize::new(CHUNK, self.max_bytes);
        loop {
            let (sql, params) = chunk_query(table, after.as_deref(), self.sample, page.rows());
            let rows: Vec<Row> = self
                .sql
                .exec(sql, params)
                .await
                .map_err(SourceError::from)?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = Some(dbread::primary_key_values(table, last));
            let full = rows.len() == page.rows();
            let mut expected = Vec::with_capacity(rows.len());
            for r in rows {
                mapper.map(row_change(table, r).as_row(), &mut expected)?;
                self.report.rows += 1;
            }
            page.read(expected.iter().map(CacheOp::bytes).sum());
            self.compare(rule, table.info.qualified(), expected).await?;
            if !full || self.sample.is_some() {
                return Ok(());
            }
        }
    }

    async fn compare(&mut self, rule: &Rule, table: &str, ops: Vec<CacheOp>) -> Result<(), Error> {
        let reads: Vec<redis::Cmd> = ops
            .iter()
            .filter_map(|op| match op {
                CacheOp::Set { key, .. } => Some(redis::Cmd::get(key)),
                CacheOp::Hash { key, .. } => Some(redis::Cmd::hgetall(key)),
                CacheOp::Del { .. }
                | CacheOp::Stash { .. }
                | CacheOp::Unstash { .. }
                | CacheOp::Expire { .. } => None,
            })
            .collect();
        let values = read_each(&mut self.redis, reads)
            .await
            .map_err(SinkError::from)?;
        let wanted = ops.iter().filter(|op| !matches!(op, CacheOp::Del { .. }));
        for (op, got) in wanted.zip(values) {
            self.report.keys_compared += 1;
            let (key, expected, ttl_ms) = match op {
                CacheOp::Set { key, value, ttl_ms } => (key, value.clone(), *ttl_ms),
                CacheOp::Hash {
                    key,
                    fields,
                    ttl_ms,
                } => (key, hash_text(fields.clone()), *ttl_ms),
                CacheOp::Del { .. }
                | CacheOp::Stash { .. }
                | CacheOp::Unstash { .. }
                | CacheOp::Expire { .. } => continue,
            };
            let actual = self.actual(op, key, got).await?;
            let (key, table, rule) = (key.clone(), table.to_string(), rule.index);
            match actual {
                None if ttl_ms > 0 => {} // expired: allowed
                None => self.found(Mismatch::Missing { key, table, rule }),
                Some(a) if a != expected => self.found(Mismatch::Different {
                    key,
                    table,
                    rule,
                    redis: a,
                    database: expected,
                }),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What Redis holds for `op`'s key, as text to compare with the expected value; `None`
    /// for a miss. A value of the wrong type (a rule switched between `json` and `hash`)
    /// or not UTF-8 is shown as it is: it is different, not a reason to stop.
    async fn actual(
        &mut self,
        op: &CacheOp,
        key: &str,
        got: redis::RedisResult<redis::Value>,
    ) -> Result<Option<String>, Error> {
        let wanted = if let CacheOp::Hash { .. } = op {
            "hash"
        } else {
            "string"
        };
        let got = match got {
            Ok(v) => v,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let found: String = redis::cmd("TYPE")
                    .arg(key)
                    .query_async(&mut self.redis)
                    .await
                    .map_err(SinkError::from)?;
                return Ok(Some(format!("(a {found}, not a {wanted})")));
            }
            Err(e) => return Err(SinkError::from(e).into()),
        };
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Ok(match (op, got) {
            (_, redis::Value::Nil) => None,
            (CacheOp::Hash { .. }, v) => {
                let map: HashMap<Vec<u8>, Vec<u8>> = parse(v)?;
                let fields: Vec<(String, String)> =
                    map.into_iter().map(|(f, v)| (text(f), text(v))).collect();
                (!fields.is_empty()).then(|| hash_text(fields))
            }
            // A lease marker is a fill in progress, not a value: a miss.
            (_, v) => Some(parse::<Vec<u8>>(v)?)
                .filter(|b| !is_lease_marker(b))
                .map(text),
        })
    }

    /// Scans Redis for the keys of `rules[i]` and reports those no row produces. Patterns
    /// can overlap (`user:*` also matches `user:by-name:*`): a key is judged once, under
    /// its owner (`RuleSet::owner_with`), and is fine if any rule's row produces it. A key
    /// the column types say no rule can have made (`user:7:friends` under `user:{id}`
    /// with an integer `id`) is another application's: not judged. Each SCAN batch is
    /// looked up with one query per rule and table (`dbread::lookup`).
    async fn find_extra(
        &mut self,
        i: usize,
        rules: &RuleSet,
        shapes: &KeyShapes,
        tables: &[Table],
    ) -> Result<(), Error> {
        let rule = &rules.rules[i];
        let pattern = rule.key.scan_pattern();
        let mut scan = Scan::start(&mut self.redis)
            .await
            .map_err(SinkError::from)?;
        let mut left = self.sample.unwrap_or(u64::MAX);
        while let Some(keys) = scan
            .next(&mut self.redis, &pattern, CHUNK)
            .await
            .map_err(SinkError::from)?
        {
            // A key that is not UTF-8 is no rule's (templates render text).
            let mut judged: Vec<String> = keys
                .into_iter()
                .filter_map(|k| String::from_utf8(k).ok())
                .filter(|key| {
                    let own = key.strip_prefix(self.checkpoint_key);
                    !own.is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
                        && rules.owner_with(key, shapes) == Some(i)
                })
                .collect();
            judged.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            left -= judged.len() as u64;
            self.report.keys_scanned += judged.len() as u64;
            let keys: Vec<&str> = judged.iter().map(String::as_str).collect();
            let produced = self.produced_by_any_rule(rules, tables, &keys).await?;
            for key in judged {
                if !produced.contains(&key) && !self.holds_a_lease(&key).await? {
                    self.found(Mismatch::Extra {
                        key,
                        rule: rule.index,
                    });
                }
            }
            if left == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A key that only holds a lease marker is a miss being filled, not a stale value.
    async fn holds_a_lease(&mut self, key: &str) -> Result<bool, Error> {
        let value: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis)
            .await;
        match value {
            Ok(v) => Ok(v.is_some_and(|v| is_lease_marker(&v))),
            // A hash (or another type) is not a marker.
            Err(e) if e.code() == Some("WRONGTYPE") => Ok(false),
            Err(e) => Err(SinkError::from(e).into()),
        }
    }

    /// The keys among `keys` that some rule's row produces.
    async fn produced_by_any_rule(
        &mut self,
        rules: &RuleSet,
        tables: &[Table],
        keys: &[&str],
    ) -> Result<HashSet<String>, Error> {
        let mut produced = HashSet::new();
        for rule in &rules.rules {
            let covered: Vec<&Table> = tables
                .iter()
                .filter(|t| rule.matches(t.info.qualified()))
                .collect();
            let fitting: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| !produced.contains(*k) && rule.key.splits_key(k))
                .collect();
            if covered.is_empty() || fitting.is_empty() {
                continue;
            }
            let found =
                lookup::produced_keys(&mut self.sql, rule, &covered, &fitting, self.max_bytes)
                    .await?;
            produced.extend(found);
        }
        Ok(produced)
    }
}

/// `SELECT` of the next chunk after `after` (the last primary key seen), or a random
/// sample of `sample` rows.
fn chunk_query(
    table: &Table,
    after: Option<&[Value]>,
    sample: Option<u64>,
    rows: usize,
) -> (String, Params) {
    match sample {
        Some(n) => (
            format!(
                "SELECT {} FROM {} ORDER BY RAND() LIMIT {n}",
                table.select,
                dbread::table_name(table)
            ),
            Params::Empty,
        ),
        None => dbread::page_query(table, after, rows),
    }
}

fn parse<T: redis::FromRedisValue>(v: redis::Value) -> Result<T, Error> {
    redis::from_redis_value(v).map_err(|e| SinkError::from(redis::RedisError::from(e)).into())
}
