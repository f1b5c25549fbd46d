//! Continuous consistency sampling: a fraction of the upsert keys the daemon applies are
//! checked again after a delay, against the row as the database holds it then.
//!
//! Redis is read *before* the row: a commit landing between the two reads then shows as
//! the row having changed since the apply (*superseded*), never as a false inconsistency.
//! Outcomes:
//! - *consistent*: Redis holds what the row renders now (or nothing: a miss is never wrong
//!   data, and leases, evictions and TTLs make misses);
//! - *superseded*: the row changed since the sampled apply, so the comparison says nothing
//!   until that change is applied;
//! - *inconsistent*: the row is as the daemon wrote it, yet Redis holds something else.
//!   Logged with its key, and deleted when `repair = true`.
//!
//! Samples travel through a bounded queue; when it is full, samples are dropped rather
//! than slowing the apply path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::{ConsistencyConfig, RedisConfig, SourceConfig};
use crate::dbread::{self, hash_text, op_text, Table};
use crate::error::Error;
use crate::lease::is_lease_marker;
use crate::mapper::rules::RuleSet;
use crate::mapper::CacheOp;
use crate::metrics::{ConsistencyLabels, Metrics};
use crate::sink::SinkError;
use crate::source::{self, SourceError};

/// Samples waiting for their check.
const QUEUE: usize = 1024;
/// How long table descriptions are trusted.
const TABLES_TTL: Duration = Duration::from_secs(60);

pub struct Sample {
    key: String,
    /// What the sampled step stored, as comparable text.
    written: String,
    due: Instant,
    /// The source server the step's changes came from (it changes on failover).
    source: Arc<str>,
    /// The URL of the Redis the step went to: with Sentinel the primary (it changes on
    /// failover), and the session's URL with its password read again (rotation).
    primary: Arc<str>,
}

/// The apply side: decides which applied operations are sampled.
#[derive(Clone)]
pub struct Sampler {
    tx: mpsc::Sender<Sample>,
    rate: f64,
    delay: Duration,
    state: u64,
    source: Arc<str>,
    primary: Arc<str>,
}

impl Sampler {
    /// `None` when sampling is off.
    pub fn new(config: &ConsistencyConfig) -> Option<(Sampler, mpsc::Receiver<Sample>)> {
        if config.sample_rate <= 0.0 {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let sampler = Sampler {
            tx,
            rate: config.sample_rate,
            delay: Duration::from_millis(config.delay_ms),
            state: seed | 1,
            source: Arc::from(""),
            primary: Arc::from(""),
        };
        Some((sampler, rx))
    }

    /// Samples from now on are checked against this server (the one being followed) and
    /// this Redis (the one the session writes to: with Sentinel, until it demotes the old
    /// primary, that one still answers, with values the session never wrote). Both URLs
    /// carry the session's passwords, read again from their files.
    pub fn for_session(mut self, source: &str, primary: Option<&str>) -> Sampler {
        self.source = Arc::from(source);
        self.primary = Arc::from(primary.unwrap_or(""));
        self
    }

    /// Offers the operations of a step that landed.
    pub fn offer(&mut self, ops: &[CacheOp]) {
        let due = Instant::now() + self.delay;
        for op in ops {
            if !self.pick() {
                continue;
            }
            let Some(written) = op_text(op) else {
                continue; // deletes: the application's own values cannot be judged
            };
            let sample = Sample {
                key: op.key().to_string(),
                written,
                due,
                source: self.source.clone(),
                primary: self.primary.clone(),
            };
            // Full: drop the sample; the apply path never waits for the checker.
            let _ = self.tx.try_send(sample);
        }
    }

    /// xorshift64: cheap and good enough to pick a fraction.
    fn pick(&mut self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 11) as f64 / ((1u64 << 53) as f64);
        unit < self.rate
    }
}

/// The checking side: runs until the sender is dropped.
pub async fn run(
    config: ConsistencyConfig,
    source: SourceConfig,
    redis: RedisConfig,
    rules: Arc<RuleSet>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Sample>,
) {
    let mut checker = Checker {
        source,
        redis,
        rules,
        repair: config.repair,
        sql: None,
        mariadb: false,
        conn: None,
        tables: Vec::new(),
        tables_read: None,
    };
    while let Some(sample) = rx.recv().await {
        tokio::time::sleep_until(sample.due.into()).await;
        if !sample.source.is_empty() && *sample.source != *checker.source.url {
            // The daemon moved to another server (failover): read rows from that one.
            checker.source.url = sample.source.to_string();
            checker.sql = None;
        }
        if !sample.primary.is_empty() && *sample.primary != *checker.redis.url {
            // The same for a Redis primary found through Sentinel (read that very node),
            // or a password rotated.
            checker.redis.url = sample.primary.to_string();
            checker.redis.sentinel = None;
            checker.conn = None;
        }
        match checker.check(&sample).await {
            Ok(result) => {
                metrics
                    .consistency
                    .get_or_create(&ConsistencyLabels { result })
                    .inc();
            }
            Err(e) => {
                // The check could not run (a connection is down): no verdict, but counted,
                // so a sampler that checks nothing shows; later samples get fresh
                // connections.
                debug!(key = %sample.key, error = %e, "consistency sample skipped");
                metrics
                    .consistency
                    .get_or_create(&ConsistencyLabels { result: "skipped" })
                    .inc();
                checker.sql = None;
                checker.conn = None;
            }
        }
    }
}

struct Checker {
    source: SourceConfig,
    redis: RedisConfig,
    rules: Arc<RuleSet>,
    repair: bool,
    sql: Option<Conn>,
    mariadb: bool,
    conn: Option<redis::aio::MultiplexedConnection>,
    tables: Vec<Table>,
    tables_read: Option<Instant>,
}

impl Checker {
    async fn check(&mut self, sample: &Sample) -> Result<&'static str, Error> {
        let Some(rule_index) = self.rules.owner(&sample.key) else {
            return Ok("consistent");
        };
        let rule = self.rules.rules[rule_index].clone();
        let actual = self.read_redis(&sample.key).await?;
        self.connect_sql().await?;
        let stale = self.tables_read.is_none_or(|t| t.elapsed() > TABLES_TTL);
        if stale || !self.tables.iter().any(|t| rule.matches(t.info.qualified())) {
            self.read_tables().await?;
        }
        let Checker { sql, tables, .. } = self;
        let sql = sql.as_mut().expect("connected above");
        let covered: Vec<&Table> = tables
            .iter()
            .filter(|t| rule.matches(t.info.qualified()))
            .collect();
        let now = dbread::render_key(sql, &rule, &covered, &sample.key)
            .await?
            .as_ref()
            .and_then(op_text);
        let Some(actual) = actual else {
            return Ok("consistent");
        };
        if Some(&actual) == now.as_ref() {
            return Ok("consistent");
        }
        if now.as_ref() != Some(&sample.written) {
            return Ok("superseded");
        }
        warn!(
            key = %sample.key,
            rule = rule_index,
            repair = self.repair,
            "inconsistent cache entry: the row is unchanged since the daemon wrote it, \
             but Redis holds something else"
        );
        if self.repair {
            let _: () = redis::cmd("DEL")
                .arg(&sample.key)
                .query_async(self.redis().await?)
                .await
                .map_err(SinkError::from)?;
        }
        Ok("inconsistent")
    }

    /// The key's value as comparable text; `None` when absent or only a lease marker.
    async fn read_redis(&mut self, key: &str) -> Result<Option<String>, Error> {
        let conn = self.redis().await?;
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut *conn)
            .await
            .map_err(SinkError::from)?;
        let text = match kind.as_str() {
            "string" => {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut *conn)
                    .await
                    .map_err(SinkError::from)?;
                v.filter(|v| !is_lease_marker(v))
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            }
            "hash" => {
                let map: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut *conn)
                    .await
                    .map_err(SinkError::from)?;
                let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                Some(hash_text(
                    map.into_iter().map(|(f, v)| (text(f), text(v))).collect(),
                ))
            }
            "none" => None,
            other => Some(format!("<a {other}>")),
        };
        Ok(text)
    }

    async fn connect_sql(&mut self) -> Result<(), Error> {
        if self.sql.is_none() {
            let (mut conn, server) = source::connect(&self.source).await?;
            conn.query_drop("SET time_zone = '+00:00'")
                .await
                .map_err(SourceError::from)?;
            self.mariadb = server.mariadb;
            self.sql = Some(conn);
        }
        Ok(())
    }

    /// Table descriptions are re-read now and then (a DDL may have changed them) and when
    /// a rule covers no known table (one created since).
    async fn read_tables(&mut self) -> Result<(), Error> {
        let sql = self.sql.as_mut().expect("connected before");
        self.tables = dbread::tables(sql, &self.rules, self.mariadb).await?;
        self.tables_read = Some(Instant::now());
        Ok(())
    }

    async fn redis(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, Error> {
        if self.conn.is_none() {
            let client = crate::sink::client(&self.redis).await?;
            // A check is not urgent: a busy Redis (a catch-up) may answer late without the
            // sample being lost (the default is half a second).
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(5)));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(SinkError::from)?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_picks_about_that_fraction() {
        let config = ConsistencyConfig {
            sample_rate: 0.25,
            delay_ms: 0,
            repair: false,
        };
        let (mut s, _rx) = Sampler::new(&config).expect("on");
        let picked = (0..100_000).filter(|_| s.pick()).count();
        assert!((23_000..27_000).contains(&picked), "{picked}");
        let off = ConsistencyConfig {
            sample_rate: 0.0,
            ..config
        };
        assert!(Sampler::new(&off).is_none());
    }
}
