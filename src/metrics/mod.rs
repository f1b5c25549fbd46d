//! Every metric the daemon exports, defined once with its help text, plus the shared
//! progress state behind the lag and readiness figures and the HTTP endpoints.
//!
//! Naming follows DESIGN.md: prefix `cdc_cache_`, base units (seconds, bytes), counters end
//! in `_total`, labels bounded: the `table` label is a configured rule's `table` pattern,
//! never a key, an id or error text.

mod http;
mod progress;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use http::serve;
pub use progress::Progress;

use crate::checkpoint::{file_index, Checkpoint, Position};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    /// The matching rule's `table` pattern (bounded by the configuration).
    pub table: String,
    pub kind: &'static str,
}

/// The matching rule's `table` pattern (bounded by the configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

/// `mysql` (the binlog source) or `redis` (the sink).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: &'static str,
}

/// Where an error happened: `source`, `decode`, `map`, `sink`, `checkpoint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// `consistent`, `inconsistent`, `superseded`, `skipped` (see `consistency`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsistencyLabels {
    pub result: &'static str,
}

pub const MYSQL: TargetLabels = TargetLabels { target: "mysql" };
pub const REDIS: TargetLabels = TargetLabels { target: "redis" };

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics. Cheap to share (`Arc<Metrics>`); every handle is atomic.
pub struct Metrics {
    registry: Registry,
    pub events: Family<EventLabels, Counter>,
    pub transactions: Counter,
    pub row_changes: Family<RowLabels, Counter>,
    pub cache_ops: Family<OpLabels, Counter>,
    pub writes_coalesced: Counter,
    pub transactions_split: Counter,
    pub table_clears: Family<TableLabels, Counter>,
    pub step_duration: Histogram,
    pub step_transactions: Histogram,
    pub step_operations: Histogram,
    lag_seconds: FloatGauge,
    lag_bytes: Gauge,
    checkpoint_file_index: Gauge,
    checkpoint_position: Gauge,
    checkpoint_time: Gauge,
    head_file_index: Gauge,
    head_position: Gauge,
    pub connected: Family<TargetLabels, Gauge>,
    ready: Gauge,
    pub reconnects: Family<TargetLabels, Counter>,
    pub errors: Family<StageLabels, Counter>,
    pub checkpoint_lost: Counter,
    pub consistency: Family<ConsistencyLabels, Counter>,
    retention_headroom: FloatGauge,
    /// Shared state the lag and readiness figures are computed from at scrape time.
    pub progress: Progress,
}

impl Metrics {
    pub fn new(heartbeat_secs: u64) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("cdc_cache"),
            events: Family::default(),
            transactions: Counter::default(),
            row_changes: Family::default(),
            cache_ops: Family::default(),
            writes_coalesced: Counter::default(),
            transactions_split: Counter::default(),
            table_clears: Family::default(),
            // 100 µs .. ~6.5 s
            step_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            step_transactions: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            step_operations: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            lag_seconds: FloatGauge::default(),
            lag_bytes: Gauge::default(),
            checkpoint_file_index: Gauge::default(),
            checkpoint_position: Gauge::default(),
            checkpoint_time: Gauge::default(),
            head_file_index: Gauge::default(),
            head_position: Gauge::default(),
            connected: Family::default(),
            ready: Gauge::default(),
            reconnects: Family::default(),
            errors: Family::default(),
            checkpoint_lost: Counter::default(),
            consistency: Family::default(),
            retention_headroom: FloatGauge::default(),
            progress: Progress::new(heartbeat_secs),
        };
        m.register_all();
        m.create_bounded_series();
        m
    }

    /// Series with a known, bounded label set exist from the start at 0: a counter that
    /// appears only at its first increment hides that first increment from `rate()` and
    /// `increase()`, and alerts on it would never fire for a single error.
    fn create_bounded_series(&self) {
        for stage in ["source", "decode", "map", "sink", "checkpoint", "config"] {
            self.errors.get_or_create(&StageLabels { stage }).inc_by(0);
        }
        for target in [&MYSQL, &REDIS] {
            self.reconnects.get_or_create(target).inc_by(0);
            self.connected.get_or_create(target).set(0);
        }
        for result in ["consistent", "inconsistent", "superseded", "skipped"] {
            self.consistency
                .get_or_create(&ConsistencyLabels { result })
                .inc_by(0);
        }
        for op in ["set", "hset", "del"] {
            self.cache_ops.get_or_create(&OpLabels { op }).inc_by(0);
        }
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "build",
            "Build information: the running version (value is always 1).",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "binlog_events",
            "Binlog events received from the server, by event type.",
            self.events.clone(),
        );
        r.register(
            "transactions_applied",
            "Committed transactions applied to Redis (their checkpoint is stored).",
            self.transactions.clone(),
        );
        r.register(
            "row_changes_applied",
            "Row changes applied, by rule table pattern and kind (insert, update, delete).",
            self.row_changes.clone(),
        );
        r.register(
            "cache_operations",
            "Cache operations sent to Redis, by operation (set, hset, del).",
            self.cache_ops.clone(),
        );
        r.register(
            "cache_writes_coalesced",
            "Cache writes and deletes (set, hset, del) left out of a step because a later \
             write or delete of the same key in the same atomic step replaces it: readers \
             never see the earlier one.",
            self.writes_coalesced.clone(),
        );
        r.register(
            "transactions_split",
            "Transactions too large for one step (sink.max_ops_per_step, \
             sink.max_bytes_per_step) applied in several: only the last moves the \
             checkpoint, and readers may see the earlier ones' writes before it lands.",
            self.transactions_split.clone(),
        );
        r.register(
            "table_clears",
            "Statements that emptied a table, or changed columns its upsert rules store, \
             without logging its rows (TRUNCATE, DROP TABLE, ALTER TABLE ... ADD COLUMN, \
             ...), after which the keys of its rules were deleted by pattern, by rule table \
             pattern.",
            self.table_clears.clone(),
        );
        r.register_with_unit(
            "apply_step_duration",
            "Time to apply one atomic step (operations plus checkpoint) to Redis.",
            Unit::Seconds,
            self.step_duration.clone(),
        );
        r.register(
            "step_transactions",
            "Transactions per atomic step (batching under load).",
            self.step_transactions.clone(),
        );
        r.register(
            "step_operations",
            "Cache operations per atomic step.",
            self.step_operations.clone(),
        );
        r.register_with_unit(
            "lag",
            "Replication lag: age of the oldest received but unapplied change; 0 when caught \
             up and the server's heartbeat confirms it is idle; time since the server was \
             last heard from when the connection is down or silent.",
            Unit::Seconds,
            self.lag_seconds.clone(),
        );
        r.register_with_unit(
            "lag",
            "Binlog bytes between the checkpoint and the server's head (last polled).",
            Unit::Bytes,
            self.lag_bytes.clone(),
        );
        r.register(
            "checkpoint_file_index",
            "Numeric suffix of the binlog file holding the checkpoint.",
            self.checkpoint_file_index.clone(),
        );
        r.register_with_unit(
            "checkpoint_position",
            "Offset of the checkpoint inside its binlog file.",
            Unit::Bytes,
            self.checkpoint_position.clone(),
        );
        r.register_with_unit(
            "checkpoint_commit_timestamp",
            "Commit time (unix) of the last applied transaction, from the server's clock.",
            Unit::Seconds,
            self.checkpoint_time.clone(),
        );
        r.register(
            "source_head_file_index",
            "Numeric suffix of the server's current binlog file (last polled).",
            self.head_file_index.clone(),
        );
        r.register_with_unit(
            "source_head_position",
            "Offset of the server's binlog head in its current file (last polled).",
            Unit::Bytes,
            self.head_position.clone(),
        );
        r.register(
            "connected",
            "1 while the connection to the target (mysql, redis) is up.",
            self.connected.clone(),
        );
        r.register(
            "ready",
            "1 when connected to both sides and not waiting in reconnect backoff (/readyz).",
            self.ready.clone(),
        );
        r.register(
            "reconnects",
            "Reconnections after a transient failure, by the target that failed.",
            self.reconnects.clone(),
        );
        r.register(
            "errors",
            "Errors by stage (source, decode, map, sink, checkpoint).",
            self.errors.clone(),
        );
        r.register(
            "checkpoint_lost",
            "Times the checkpoint vanished from Redis (restart without persistence, flush).",
            self.checkpoint_lost.clone(),
        );
        r.register(
            "consistency_samples",
            "Applied keys re-checked against the database after a delay, by result \
             (consistent, inconsistent, superseded; skipped when the check could not run); \
             see [consistency].",
            self.consistency.clone(),
        );
        r.register_with_unit(
            "binlog_retention_headroom",
            "Lower bound of the time until the binlog file holding the checkpoint may be \
             purged by binlog_expire_logs_seconds / expire_logs_days (+Inf when the server \
             never expires binlogs).",
            Unit::Seconds,
            self.retention_headroom.clone(),
        );
    }

    /// Records an applied checkpoint.
    pub fn set_checkpoint(&self, checkpoint: &Checkpoint) {
        let Checkpoint {
            position,
            commit_time,
            ..
        } = checkpoint;
        self.checkpoint_file_index
            .set(file_index(&position.file).unwrap_or(0) as i64);
        self.checkpoint_position.set(position.pos as i64);
        if *commit_time > 0 {
            self.checkpoint_time.set(i64::from(*commit_time));
        }
        self.progress.set_applied(checkpoint);
    }

    /// Records what the last poll of the server found.
    pub fn set_head(&self, head: &Position, lag_bytes: u64, retention_headroom_secs: f64) {
        self.head_file_index
            .set(file_index(&head.file).unwrap_or(0) as i64);
        self.head_position.set(head.pos as i64);
        self.lag_bytes.set(lag_bytes as i64);
        self.retention_headroom.set(retention_headroom_secs);
    }

    pub fn set_connected(&self, target: &TargetLabels, up: bool) {
        self.connected.get_or_create(target).set(i64::from(up));
    }

    pub fn is_connected(&self, target: &TargetLabels) -> bool {
        self.connected.get_or_create(target).get() == 1
    }

    /// Ready: both connections up and not waiting in backoff.
    pub fn is_ready(&self) -> bool {
        self.is_connected(&MYSQL) && self.is_connected(&REDIS) && !self.progress.in_backoff()
    }

    /// The Prometheus text exposition, with the scrape-time figures refreshed first.
    pub fn encode(&self) -> String {
        self.lag_seconds.set(self.progress.lag_seconds());
        self.ready.set(i64::from(self.is_ready()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_the_prefix() {
        let m = Metrics::new(5);
        m.set_connected(&MYSQL, true);
        m.errors.get_or_create(&StageLabels { stage: "sink" }).inc();
        let text = m.encode();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("cdc_cache_"), "unprefixed sample: {line}");
        }
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, helps, "a metric without help text:\n{text}");
        assert!(
            text.contains("cdc_cache_errors_total{stage=\"sink\"} 1"),
            "{text}"
        );
        assert!(text.contains("cdc_cache_lag_seconds 0"), "{text}");
        assert!(text.contains("cdc_cache_build_info{version="), "{text}");
    }
}
