//! `load`: fills the cache from the database, so that `upsert` keys exist for rows that
//! have not changed since the daemon started, and hands over to the daemon at exactly
//! the position the values were read at.
//!
//! The rows are read in one consistent snapshot (`dbread::snapshot`) whose binlog
//! position S is known; every value written is the row as of S. The checkpoint ends at
//! S, so `run` applies every change after S and none before: the cache converges as if
//! the daemon had always run. While it works, the checkpoint holds S marked `loading`:
//! a daemon still running is fenced off by the change (its next step fails and it
//! stops), and one that starts waits (`SinkError::Loading`) rather than apply changes
//! after S that the load's older values would then overwrite.
//!
//! Keys are overwritten in place, so a cache being rebuilt stays readable; afterwards
//! the `upsert` rules' keys that no row at S produces are deleted (`sweep`).
//!
//! With a checkpoint already in Redis the daemon maintains the cache from there, and
//! moving it to S would skip the changes between the two: `--yes` is needed, and first
//! deletes the keys a load cannot rewrite (`delete` rules' keys, and those no rule's
//! column types can make), as `reset` would.

mod sweep;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tracing::info;

use crate::checkpoint::{this_process, Checkpoint, Position};
use crate::config::Config;
use crate::dbread::snapshot::{self, Method};
use crate::dbread::{self, row_change, Table};
use crate::error::Error;
use crate::mapper::rules::RuleSet;
use crate::mapper::{CacheOp, Mapper};
use crate::page_size::PageSize;
use crate::resume;
use crate::sink::{step, RedisSink, SinkError, StepLimits, Submitted};
use crate::source::{self, SourceError};
use sweep::Owners;

/// Rows read per query at most: one keyset page, mapped and written as one step (fewer
/// for wide rows: [`PageSize`]).
const PAGE: usize = 1000;

/// How often a table's progress is logged while it loads.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LoadReport {
    /// Where the values were read, and where the checkpoint now is.
    pub position: Option<Position>,
    pub tables: usize,
    pub rows: u64,
    pub keys: u64,
    /// Keys deleted first (`--yes` over an existing checkpoint): those of `delete` rules
    /// and those no rule can make.
    pub deleted: u64,
    /// Keys of `upsert` rules deleted after the load: no row produces them.
    pub swept: u64,
}

pub async fn load(config: &Config, rules: &RuleSet, replace: bool) -> Result<LoadReport, Error> {
    let upserts = upsert_rules(rules)?;
    let key = config.checkpoint.key.as_str();
    let mut sink = RedisSink::connect(&config.redis, key).await?;
    sink.probe_writes(rules).await?;
    let existing = sink.load_checkpoint().await?;
    if let (Some(cp), false) = (&existing, replace) {
        return Err(Error::Usage(already_maintained(key, cp)));
    }
    let (mut sql, server) = source::connect(&config.source).await?;
    // Prepared XA transactions are not in the snapshot and their PREPARE is before it.
    resume::warn_of_prepared_xa(
        &mut sql,
        "outside the snapshot: their XA PREPARE is before it, so the daemon will stop at \
         their XA COMMIT (exit 3); resolve them, then load again",
    )
    .await;
    let snap = snapshot::begin(&mut sql, &server, Method::for_server(&server)).await?;
    // Described inside the snapshot: a table altered after it started is refused by
    // the server when read (error 1412), never read under the wrong columns.
    let tables = dbread::tables(&mut sql, &upserts, server.mariadb).await?;
    let gtid = source::gtids_wanted(&config.source, &server)?
        .then_some(snap.gtid)
        .flatten();
    let target = Checkpoint::new(snap.position.clone(), server.identity.clone(), 0).with_gtid(gtid);
    let mut marker = target.clone();
    marker.loading = Some(format!("{} at unix time {}", this_process(), unix_now()));
    sink.apply(&[], Some(&marker)).await?;
    let about: u64 = tables.iter().map(|t| t.estimated_rows).sum();
    info!(position = %snap.position, tables = tables.len(), rows_estimated = about, "snapshot taken; loading");
    let mut report = LoadReport {
        tables: tables.len(),
        ..LoadReport::default()
    };
    let owners = Owners {
        rules,
        shapes: dbread::key_shapes(rules, &tables),
    };
    let prepared = sweep::prepare(&mut sink, &owners, existing.is_some()).await?;
    report.deleted = prepared.deleted;
    if existing.is_some() {
        info!(
            deleted = report.deleted,
            "deleted the keys a load cannot rewrite (delete rules', and those no rule makes)"
        );
    }
    let limits = StepLimits {
        ops: config.sink.max_ops_per_step.max(1),
        bytes: config.sink.max_bytes_per_step,
    }
    .for_redis(sink.limits());
    let mut filler = Filler {
        sql: &mut sql,
        sink: &mut sink,
        mapper: Mapper::new(upserts),
        limits,
        report: &mut report,
    };
    for table in &tables {
        filler.fill(table).await?;
    }
    if prepared.marked > 0 {
        report.swept = sweep::sweep(&mut sink, &owners).await?;
        info!(swept = report.swept, "deleted the keys no row produces");
    }
    sink.apply(&[], Some(&target)).await?;
    sql.query_drop("COMMIT").await.map_err(SourceError::from)?;
    report.position = Some(snap.position);
    Ok(report)
}

/// The `upsert` rules alone: the others cache what the application writes, which the
/// database cannot tell.
fn upsert_rules(rules: &RuleSet) -> Result<RuleSet, Error> {
    let rules = sweep::upserts(rules);
    if rules.rules.is_empty() {
        return Err(Error::Usage(
            "no rule has action = \"upsert\": load writes the values of upsert rules, and \
             delete rules' keys are the application's to fill"
                .into(),
        ));
    }
    Ok(rules)
}

fn already_maintained(key: &str, cp: &Checkpoint) -> String {
    match &cp.loading {
        Some(by) => format!(
            "Redis key `{key}` holds the checkpoint of a load that did not finish ({by}); \
             its keys are partly written: pass --yes to delete the rules' keys and load \
             again"
        ),
        None => format!(
            "Redis key `{key}` holds a checkpoint ({}): a daemon maintains the cache from \
             there, and loading would skip the changes since. To rebuild the cache from the \
             database, stop the daemon and pass --yes: the keys are rewritten from the \
             database, those no row produces deleted, and the daemon continues from the \
             load's position",
            cp.position
        ),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads tables page by page in the snapshot and writes their values.
struct Filler<'a> {
    sql: &'a mut Conn,
    sink: &'a mut RedisSink,
    mapper: Mapper,
    /// A step's size (`sink.max_ops_per_step`, `sink.max_bytes_per_step`, as far as
    /// Redis takes it); the bytes bound a page too, through [`PageSize`].
    limits: StepLimits,
    report: &'a mut LoadReport,
}

impl Filler<'_> {
    /// One page's values are written while the next page is read: one step in flight.
    async fn fill(&mut self, table: &Table) -> Result<(), Error> {
        let (rows_before, keys_before) = (self.report.rows, self.report.keys);
        let mut said = std::time::Instant::now();
        let mut after = None;
        let mut in_flight: Option<Submitted> = None;
        let mut ops = Vec::new();
        let mut page = PageSize::new(PAGE, self.limits.bytes);
        loop {
            let (query, params) = dbread::page_query(table, after.as_deref(), page.rows());
            let rows: Vec<Row> = self
                .sql
                .exec(query, params)
                .await
                .map_err(SourceError::from)?;
            let full = rows.len() == page.rows();
            if let Some(last) = rows.last() {
                after = Some(dbread::primary_key_values(table, last));
            }
            ops.clear();
            for row in rows {
                self.mapper.map(row_change(table, row).as_row(), &mut ops)?;
                self.report.rows += 1;
            }
            page.read(ops.iter().map(CacheOp::bytes).sum());
            for part in step::parts(&ops, self.limits) {
                if let Some(over) = self.sink.limits().oversized(part) {
                    let at = format!(
                        "a page of table {}, which was not written (the pages before it were)",
                        table.info.qualified()
                    );
                    return Err(SinkError::too_large(over, at).into());
                }
                if let Some(step) = in_flight.take() {
                    step.finish().await?;
                }
                in_flight = Some(self.sink.submit(part, None));
                self.report.keys += part.len() as u64;
            }
            if !full {
                break;
            }
            if said.elapsed() >= PROGRESS_EVERY {
                // A large table takes minutes: say how far it is.
                let rows = self.report.rows - rows_before;
                info!(
                    table = table.info.qualified(),
                    rows,
                    of_about = table.estimated_rows,
                    percent = %percent_of(rows, table.estimated_rows),
                    "loading"
                );
                said = std::time::Instant::now();
            }
        }
        if let Some(step) = in_flight {
            step.finish().await?;
        }
        info!(
            table = table.info.qualified(),
            rows = self.report.rows - rows_before,
            keys = self.report.keys - keys_before,
            "table loaded"
        );
        Ok(())
    }
}

/// How far `done` rows are into a table the server estimates at `estimated`: below 100
/// until it is done, as the estimate may be short; `unknown` without an estimate (a
/// table whose statistics were not gathered yet shows none).
fn percent_of(done: u64, estimated: u64) -> String {
    if estimated == 0 {
        return "unknown".to_string();
    }
    (done.saturating_mul(100) / estimated).min(99).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_stays_below_a_hundred_percent_until_the_table_is_done() {
        assert_eq!(percent_of(250, 1000), "25");
        assert_eq!(percent_of(999, 1000), "99");
        assert_eq!(percent_of(1500, 1000), "99", "the estimate was short");
        assert_eq!(percent_of(10, 0), "unknown");
    }

    fn rules(text: &str) -> RuleSet {
        use figment::providers::{Format, Toml};
        let config: Config = figment::Figment::from(Toml::string(text))
            .extract()
            .expect("config parses");
        config.validate().expect("rules are valid")
    }

    #[test]
    fn only_upsert_rules_are_loaded_and_none_is_a_usage_error() {
        let both = rules(
            r#"
            [source]
            url = "mysql://u@h/"
            server_id = 7
            [redis]
            url = "redis://h/"
            [[rules]]
            table = "shop.users"
            key = "user:{id}"
            action = "upsert"
            [[rules]]
            table = "shop.orders"
            key = "order:{id}"
            action = "delete"
            "#,
        );
        let upserts = upsert_rules(&both).expect("one upsert rule");
        assert_eq!(upserts.rules.len(), 1);
        assert!(upserts.covers("shop.users") && !upserts.covers("shop.orders"));
        let deletes_only = RuleSet {
            rules: both.rules[1..].to_vec(),
        };
        let e = upsert_rules(&deletes_only).expect_err("nothing to load");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn an_existing_checkpoint_is_named_with_the_way_out() {
        let server = crate::checkpoint::ServerIdentity {
            server_id: 1,
            uuid_or_host: "db".into(),
        };
        let mut cp = Checkpoint::new(Position::new("bin.000002", 400), server, 0);
        let message = already_maintained("cp", &cp);
        assert!(message.contains("bin.000002:400") && message.contains("--yes"));
        cp.loading = Some("host/1/ab at unix time 5".into());
        let message = already_maintained("cp", &cp);
        assert!(message.contains("did not finish") && message.contains("host/1/ab"));
    }
}
