//! The apply stage: maps the source's row changes to cache operations, groups them into
//! steps, and applies each step with its checkpoint.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use tracing::{debug, info, warn};

use crate::checkpoint::{Checkpoint, Position, ServerIdentity};
use crate::chunk::Chunk;
use crate::consistency::Sampler;
use crate::error::Error;
use crate::mapper::{CacheOp, Clear, KeyShapes, Mapper};
use crate::metrics::{Metrics, OpLabels, RowLabels, TableLabels};
use crate::sink::step::Tally;
use crate::sink::{Coalescer, RedisSink, SinkError, Step, StepLimits, Submitted};
use crate::source::{Commit, SourceItem};
use crate::spare;
use crate::value::{ChangeKind, Emptied, TableInfo};

mod oversized;
mod recent;
mod xa;

pub use xa::Pending;

pub struct Applier {
    mapper: Mapper,
    sink: RedisSink,
    step: Step,
    limits: StepLimits,
    /// Recorded in every checkpoint, so a resume against another server is caught.
    server: ServerIdentity,
    checkpoint_file: Option<PathBuf>,
    /// Last checkpoint applied, for the shutdown log line.
    applied: Option<Checkpoint>,
    metrics: Arc<Metrics>,
    /// The row counter of the table seen last: consecutive rows mostly share a table, so
    /// the labelled lookup happens once per run of rows, not per row.
    row_counter: Option<(Arc<TableInfo>, ChangeKind, Counter)>,
    /// Rows counted in `row_counter` but not yet added to it (added when a step lands).
    rows_pending: Vec<(Counter, u64)>,
    /// Consistency sampling of applied keys, when on.
    sampler: Option<Sampler>,
    /// The step sent to Redis whose reply has not been read yet (pipelining).
    in_flight: Option<InFlight>,
    /// The XA transaction being prepared, whose operations go to its stash.
    xa: Option<xa::OpenXa>,
    /// Transactions prepared in this session whose operations are still at hand.
    recent: recent::Recent,
    /// XA transactions seen prepared and not yet resolved, with where to re-read them.
    pending: xa::Pending,
    /// The checkpoint the session started from.
    start: Option<Checkpoint>,
    /// Leaves out of each step the writes a later write in it replaces.
    coalescer: Coalescer,
}

/// A step sent but not yet confirmed, with what to record once it lands.
struct InFlight {
    submitted: Submitted,
    step: Sent,
}

struct Sent {
    ops: Vec<CacheOp>,
    checkpoint: Option<Checkpoint>,
    tally: Tally,
    /// Writes left out of it (`Coalescer`).
    coalesced: usize,
    /// Rows it carries, per counter, counted when it lands.
    rows: Vec<(Counter, u64)>,
    started: Instant,
}

impl Applier {
    pub fn new(
        mapper: Mapper,
        sink: RedisSink,
        limits: StepLimits,
        server: ServerIdentity,
        checkpoint_file: Option<PathBuf>,
        metrics: Arc<Metrics>,
        sampler: Option<Sampler>,
    ) -> Self {
        // One series per rule table pattern from the start (a bounded set): a clear then
        // shows in `increase()`, which a series born at its first increment would hide.
        for rule in &mapper.rules().rules {
            let labels = TableLabels {
                table: rule.table_pattern.clone(),
            };
            metrics.table_clears.get_or_create(&labels).inc_by(0);
        }
        let limits = oversized::within_redis(limits, &sink);
        Applier {
            mapper,
            sink,
            step: Step::default(),
            limits,
            server,
            checkpoint_file,
            applied: None,
            metrics,
            row_counter: None,
            rows_pending: Vec::new(),
            sampler,
            in_flight: None,
            xa: None,
            recent: recent::Recent::default(),
            pending: xa::Pending::default(),
            start: None,
            coalescer: Coalescer::default(),
        }
    }

    pub fn applied(&self) -> Option<&Checkpoint> {
        self.applied.as_ref()
    }

    /// The session starts at `start`, with the XA transactions earlier sessions of this
    /// process left pending (`take_pending` gives them back).
    pub fn resuming(mut self, start: Option<Checkpoint>, pending: xa::Pending) -> Self {
        self.start = start;
        self.pending = pending;
        self
    }

    /// The pending XA transactions, for the next session (see `xa::Pending`).
    pub fn take_pending(&mut self) -> xa::Pending {
        let mut pending = std::mem::take(&mut self.pending);
        pending.session_ended();
        pending
    }

    /// Takes one item from the source. May apply a split step of a huge transaction.
    pub async fn handle(&mut self, item: SourceItem) -> Result<(), Error> {
        match item {
            SourceItem::Changes(chunk) => {
                let mapped = self.map_chunk(&chunk).await;
                spare::recycle_chunk(chunk);
                mapped?;
            }
            SourceItem::Commit(commit) if self.xa.is_some() => self.xa_prepared(commit),
            SourceItem::Commit(commit) => self.step.commit(commit),
            SourceItem::XaStart(xid) => self.xa_start(xid),
            SourceItem::XaEnd {
                xid,
                committed,
                commit,
            } => self.xa_end(xid, committed, commit).await?,
            SourceItem::Cleared {
                emptied,
                position,
                statement,
                shapes,
            } => self.clear(&emptied, &position, &statement, &shapes).await?,
        }
        Ok(())
    }

    /// Deletes the keys of the rules of a table a statement emptied (or whose stored
    /// columns it changed) without logging its rows, after every earlier transaction has landed and before any later one is sent.
    /// The statement's own commit follows and moves the checkpoint past it: a crash in
    /// between repeats the deletion, which changes nothing the second time.
    async fn clear(
        &mut self,
        emptied: &Emptied,
        position: &Position,
        statement: &str,
        shapes: &KeyShapes,
    ) -> Result<(), Error> {
        let Some(clear) = self.mapper.rules().clear(emptied) else {
            return Ok(());
        };
        self.flush().await?;
        self.settle().await?;
        let started = Instant::now();
        let mut deleted = 0;
        for pattern in &clear.patterns {
            let rules = self.mapper.rules();
            deleted += self
                .sink
                .delete_matching(pattern, |key| clear.deletes(rules, shapes, key))
                .await?;
        }
        self.record_clear(&clear, deleted);
        warn!(
            %emptied,
            %position,
            statement,
            patterns = ?clear.patterns,
            deleted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "a statement emptied or replaced a cached table, or changed columns its values \
             hold, without logging its rows: deleted the keys its rules' templates match"
        );
        Ok(())
    }

    /// Maps a chunk's rows into the open step, sending the complete transactions before it
    /// when the step grows too large, or the open one split when it alone does. Rows are
    /// counted once per rows event, or up to the split inside one.
    async fn map_chunk(&mut self, chunk: &Chunk) -> Result<(), Error> {
        for event in chunk.events() {
            let mut counted = 0;
            for (i, row) in event.rows().enumerate() {
                let from = self.step.len();
                self.mapper.map(row, self.step.ops_mut())?;
                if !self.sink.limits().surely_fit(self.step.mapped(from)) {
                    self.refuse_oversized(from, &event).await?;
                }
                if self.step.open_too_large(self.limits) {
                    self.count_rows(event.table(), event.kind(), (i + 1 - counted) as u64);
                    counted = i + 1;
                    self.apply_split().await?;
                } else if self.step.full(self.limits) {
                    // The complete transactions and this one's rows so far reach a limit:
                    // the complete ones go now, so that no step holds more than the limits
                    // and one row (Redis may count a whole MULTI against a client's query
                    // buffer). Rows of this transaction's earlier events were counted
                    // already: they show with this step, one step early.
                    self.flush().await?;
                }
            }
            self.count_rows(event.table(), event.kind(), (event.len() - counted) as u64);
        }
        Ok(())
    }

    /// True when the complete transactions gathered so far fill a step.
    pub fn step_full(&self) -> bool {
        self.step.full(self.limits)
    }

    /// Sends every complete transaction gathered so far, with the checkpoint past them,
    /// as one step; the step before it must land first (at most one step waits for its
    /// reply while the next is prepared). `settle` waits for the last one.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let (ops, commit, tally) = self.step.take_complete();
        let Some(commit) = commit else {
            debug_assert!(ops.is_empty());
            return Ok(());
        };
        self.apply(ops, Some(commit), tally).await
    }

    /// True while a step waits for Redis's reply.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the step in flight to land, and records it; never returns when none is.
    /// Cancel-safe: dropped before the reply, the step stays in flight, so the apply loop
    /// can wait for the reply and for new changes at once.
    pub async fn land(&mut self) -> Result<(), Error> {
        let Some(flight) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        flight.submitted.landed().await?;
        match self.in_flight.take() {
            Some(InFlight { step, .. }) => self.landed(step),
            None => Ok(()),
        }
    }

    /// Waits until every step sent has landed (or failed).
    pub async fn settle(&mut self) -> Result<(), Error> {
        let Some(InFlight { submitted, step }) = self.in_flight.take() else {
            return Ok(());
        };
        submitted.finish().await?;
        debug!(
            ops = step.ops.len(),
            transactions = step.tally.groups,
            "step applied"
        );
        self.landed(step)
    }

    async fn apply_split(&mut self) -> Result<(), Error> {
        // A prepared XA transaction's operations go to its stash, not to the cache.
        if let Some(ops) = self.stash_open() {
            spare::recycle_ops(ops);
        }
        let first = !self.step.open_was_split();
        let (ops, commit, tally) = self.step.take_split();
        if first {
            self.metrics.transactions_split.inc();
            info!(
                max_ops_per_step = self.limits.ops,
                max_bytes_per_step = self.limits.bytes,
                "transaction larger than one step: splitting it; only its last step moves the checkpoint"
            );
        }
        self.apply(ops, commit, tally).await
    }

    /// Sends a step, then waits for the one sent before it (before sending, when that one
    /// moves no checkpoint).
    async fn apply(
        &mut self,
        mut ops: Vec<CacheOp>,
        commit: Option<Commit>,
        tally: Tally,
    ) -> Result<(), Error> {
        let coalesced = self.coalescer.coalesce(&mut ops);
        if let Some(over) = self.sink.limits().oversized(&ops) {
            // Checked on what is sent: Redis would drop the connection on such a value,
            // and a retry would send it again.
            self.settle().await?;
            let at = commit.map_or(
                "a part of a transaction larger than one step, which was not applied (the \
                 checkpoint stays before the transaction)"
                    .into(),
                |c| {
                    format!(
                        "the step ending at binlog position {}, of which nothing was applied \
                         (the checkpoint stays before it)",
                        c.position
                    )
                },
            );
            return Err(SinkError::too_large(over, at).into());
        }
        let checkpoint = commit.map(|c| self.checkpoint_of(c));
        // A step that moves no checkpoint (an early part of a split transaction) leaves
        // the fence where it was: a step sent behind it would pass the fence even if it
        // had been refused, and could move the checkpoint past a transaction not wholly
        // applied. So it must land before the next one is sent.
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.step.checkpoint.is_none())
        {
            self.settle().await?;
        }
        let started = Instant::now();
        let submitted = self.sink.submit(&ops, checkpoint.as_ref());
        let step = Sent {
            ops,
            checkpoint,
            tally,
            coalesced,
            rows: std::mem::take(&mut self.rows_pending),
            started,
        };
        match self.in_flight.replace(InFlight { submitted, step }) {
            Some(InFlight { submitted, step }) => {
                submitted.finish().await?;
                self.landed(step)
            }
            None => Ok(()),
        }
    }

    fn checkpoint_of(&self, c: Commit) -> Checkpoint {
        Checkpoint::new(c.position, self.server.clone(), c.time)
            .with_gtid(c.gtid)
            .with_xa(self.pending.waiting())
    }

    /// Counts a clear: its deletions as `del` operations, and once per table pattern of
    /// the rules it cleared for.
    fn record_clear(&self, clear: &Clear, deleted: u64) {
        let m = &self.metrics;
        m.cache_ops
            .get_or_create(&OpLabels { op: "del" })
            .inc_by(deleted);
        let rules = &self.mapper.rules().rules;
        let tables: BTreeSet<&String> = clear
            .rules
            .iter()
            .map(|&i| &rules[i].table_pattern)
            .collect();
        for table in tables {
            let labels = TableLabels {
                table: table.clone(),
            };
            m.table_clears.get_or_create(&labels).inc();
        }
    }

    /// Records a step Redis confirmed: metrics, sampling, the checkpoint mirror.
    fn landed(&mut self, step: Sent) -> Result<(), Error> {
        self.record_step(&step);
        if let Some(sampler) = &mut self.sampler {
            sampler.offer(&step.ops);
        }
        spare::recycle_ops(step.ops);
        if let Some(cp) = step.checkpoint {
            if let Some(path) = &self.checkpoint_file {
                write_file_atomically(path, &cp.encode())?;
            }
            self.metrics.set_checkpoint(&cp);
            self.pending.landed(&cp.position);
            self.applied = Some(cp);
        }
        Ok(())
    }

    fn count_rows(&mut self, table: &Arc<TableInfo>, kind: ChangeKind, rows: u64) {
        if rows == 0 {
            return;
        }
        let same =
            matches!(&self.row_counter, Some((t, k, _)) if Arc::ptr_eq(t, table) && *k == kind);
        if !same {
            let qualified = table.qualified();
            let Some(rule) = self.mapper.rules().matching(qualified).next() else {
                return;
            };
            let labels = RowLabels {
                table: rule.table_pattern.clone(),
                kind: kind.as_str(),
            };
            let counter = self.metrics.row_changes.get_or_create(&labels).clone();
            self.row_counter = Some((table.clone(), kind, counter));
        }
        if let Some((_, _, counter)) = &self.row_counter {
            match self.rows_pending.last_mut() {
                Some((c, n)) if std::ptr::eq(c.inner(), counter.inner()) => *n += rows,
                _ => self.rows_pending.push((counter.clone(), rows)),
            }
        }
    }

    /// Counts what a step that landed carried. Rows are counted when a step lands (those of
    /// a still-open transaction with the step before its own), so a failed step that is
    /// retried from the checkpoint is not counted twice.
    fn record_step(&self, step: &Sent) {
        let Sent {
            ops,
            tally,
            started,
            rows,
            coalesced,
            ..
        } = step;
        let m = &self.metrics;
        m.writes_coalesced.inc_by(*coalesced as u64);
        m.step_duration.observe(started.elapsed().as_secs_f64());
        m.step_operations.observe(ops.len() as f64);
        if tally.groups > 0 {
            m.step_transactions.observe(tally.groups as f64);
            // An XA transaction is counted once, at its XA COMMIT.
            m.transactions.inc_by(tally.committed as u64);
            m.progress.applied(tally.groups);
        }
        let mut counts = [0u64; 3];
        for index in ops.iter().filter_map(op_index) {
            counts[index] += 1;
        }
        for (i, n) in counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let op = ["set", "hset", "del"][i];
            m.cache_ops.get_or_create(&OpLabels { op }).inc_by(n);
        }
        for (counter, n) in rows {
            counter.inc_by(*n);
        }
    }
}

/// A cache write's slot in `cdc_cache_cache_ops_total`; an XA stash's writes are not
/// counted there (their operations are, when applied at the commit).
fn op_index(op: &CacheOp) -> Option<usize> {
    match op {
        CacheOp::Set { .. } => Some(0),
        CacheOp::Hash { .. } => Some(1),
        CacheOp::Del { .. } => Some(2),
        CacheOp::Stash { .. } | CacheOp::Unstash { .. } | CacheOp::Expire { .. } => None,
    }
}

/// Writes a file so that readers see either the old or the new content, never a mix.
fn write_file_atomically(path: &PathBuf, content: &str) -> Result<(), Error> {
    let err = |e: std::io::Error| Error::CheckpointFile {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
