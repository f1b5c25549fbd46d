//! The applier's side of XA transactions (`crate::xa`): a prepared transaction's
//! operations go to its stash, and its `XA COMMIT` applies them from there.

use tracing::{debug, info, warn};

use super::Applier;
use crate::checkpoint::{Checkpoint, Position};
use crate::error::Error;
use crate::mapper::CacheOp;
use crate::page_size::PageSize;
use crate::sink::step::Tally;
use crate::sink::{RedisSink, SinkError};
use crate::source::Commit;
use crate::spare;
use crate::xa::{self, Xid};

/// The XA transaction whose PREPARE group is being mapped.
pub(super) struct OpenXa {
    xid: Xid,
    key: String,
    /// Nothing of it has gone to the stash yet: the stash is emptied first (a crash
    /// repeats the group from its start) and gets its header.
    fresh: bool,
    /// The checkpoint before its group, for the header.
    before: Option<Checkpoint>,
}

impl Applier {
    /// XA START: the operations mapped until the group's end go to the stash.
    pub(super) fn xa_start(&mut self, xid: Xid) {
        let before = self.last_checkpoint();
        if let Some(before) = &before {
            self.pending.started(&xid, before.clone());
        }
        let key = xid.stash_key(self.sink.checkpoint_key());
        self.xa = Some(OpenXa {
            xid,
            key,
            fresh: true,
            before,
        });
    }

    /// Moves the open XA transaction's mapped operations into its stash (before a split
    /// step, and at its PREPARE). Returns them when they are the whole stash (never split),
    /// for `Recent`.
    pub(super) fn stash_open(&mut self) -> Option<Vec<CacheOp>> {
        let open = self.xa.as_mut()?;
        let mapped = self.step.take_open();
        let whole = open.fresh;
        let mut entries = Vec::with_capacity(mapped.len() + 1);
        if whole {
            entries.push(xa::header(open.before.as_ref()));
        }
        entries.extend(mapped.iter().map(xa::encode));
        // Counted in the step's bytes: a backlog of prepared transactions must fill steps
        // as the rows they hold would.
        if std::mem::take(&mut open.fresh) {
            self.step.append([CacheOp::Unstash {
                key: open.key.clone(),
            }]);
        }
        if !entries.is_empty() {
            self.step.append([CacheOp::Stash {
                key: open.key.clone(),
                entries,
            }]);
        }
        if whole {
            return Some(mapped);
        }
        spare::recycle_ops(mapped);
        None
    }

    /// The commit after an XA PREPARE: the stash is complete.
    pub(super) fn xa_prepared(&mut self, commit: Commit) {
        let whole = self.stash_open();
        if let Some(open) = self.xa.take() {
            debug!(xid = %open.xid, position = %commit.position, "XA transaction prepared: its operations wait in its stash for its XA COMMIT");
            if let Some(ops) = whole {
                self.recent.keep(open.xid, ops, self.limits);
            }
        }
        self.step.close_uncommitted(commit);
    }

    /// `XA COMMIT` or `XA ROLLBACK`: the stash's operations are applied, or dropped, with
    /// the checkpoint past it.
    pub(super) async fn xa_end(
        &mut self,
        xid: Xid,
        committed: bool,
        commit: Commit,
    ) -> Result<(), Error> {
        if let Some(open) = self.xa.take() {
            // MySQL's XA COMMIT … ONE PHASE ends the group that XA STARTed it.
            if open.fresh {
                // Not split: its operations are still in the step, a transaction like any.
                self.step.commit(commit);
                return Ok(());
            }
            // Split: part of it is in the stash already; the rest joins it, in a step
            // that moves no checkpoint, so a crash repeats the group from its XA START.
            self.xa = Some(open);
            if let Some(ops) = self.stash_open() {
                spare::recycle_ops(ops);
            }
            self.xa = None;
            self.apply_split().await?;
        }
        self.pending.resolved(&xid, &commit.position);
        let key = xid.stash_key(self.sink.checkpoint_key());
        match (committed, self.recent.take(&xid)) {
            (false, recent) => {
                info!(%xid, position = %commit.position, "XA ROLLBACK: its prepared operations are dropped");
                if let Some(ops) = recent {
                    spare::recycle_ops(ops);
                }
            }
            // Prepared in this session and still in memory: the operations the stash
            // holds, in a step behind the one that wrote it (the same connection, fenced
            // on its checkpoint), so no need to read them back.
            (true, Some(ops)) => self.step.append(ops),
            (true, None) => return self.apply_stash(&xid, commit).await,
        }
        self.step.append([CacheOp::Unstash { key }]);
        if committed {
            self.step.commit(commit);
        } else {
            self.step.close_uncommitted(commit);
        }
        Ok(())
    }

    /// The checkpoint after the last transaction handed to this applier: the one a step
    /// waiting to be sent would carry, or the one in flight, landed, or started from.
    fn last_checkpoint(&self) -> Option<Checkpoint> {
        if let Some(commit) = self.step.last_commit() {
            return Some(self.checkpoint_of(commit.clone()));
        }
        let in_flight = self
            .in_flight
            .as_ref()
            .and_then(|f| f.step.checkpoint.clone());
        in_flight
            .or_else(|| self.applied.clone())
            .or_else(|| self.start.clone())
    }

    /// Applies a committed XA transaction's stash: in steps within the step limits that
    /// move no checkpoint (read in pages sized by their bytes: entries may hold megabyte
    /// values), then the last one with the stash's deletion and the commit.
    async fn apply_stash(&mut self, xid: &Xid, commit: Commit) -> Result<(), Error> {
        // The stash is read here: what is queued for it must have landed.
        self.flush().await?;
        self.settle().await?;
        let Some(stash) = self.sink.stash(xid).await? else {
            return Err(SinkError::UnknownXa {
                xid: xid.to_string(),
                key: xid.stash_key(self.sink.checkpoint_key()),
                position: commit.position.to_string(),
            }
            .into());
        };
        // Entry 0 is the header.
        let mut next = 1;
        let mut page = PageSize::new(self.limits.ops, self.limits.bytes);
        while next < stash.len {
            let asked = page.rows();
            let ops = self.sink.stashed_ops(&stash, next, asked).await?;
            let bytes: usize = ops.iter().map(CacheOp::bytes).sum();
            page.read(bytes * asked / ops.len().max(1));
            next += ops.len();
            if next >= stash.len {
                self.step.append(ops);
                break;
            }
            self.apply(ops, None, Tally::default()).await?;
        }
        debug!(%xid, operations = stash.len - 1, position = %commit.position, "XA COMMIT: applying its prepared operations");
        self.step.append([CacheOp::Unstash { key: stash.key }]);
        self.step.commit(commit);
        Ok(())
    }
}

/// The XA transactions this process saw prepared and has not seen resolved in a step
/// that landed, each with the checkpoint before its PREPARE group. Redis that comes back
/// empty (restarted without persistence, flushed) has lost their stashes with the
/// checkpoint; resuming from the last applied position would reach their COMMIT without
/// them and stop. The session resumes from the earliest of these checkpoints instead, and
/// reads the PREPAREs again (everything after them is applied again, to the same effect).
/// Kept across the sessions of one process. The PREPAREs an earlier process saw are
/// learnt from their stashes' headers when the process first finds its checkpoint, if it
/// says stashes may wait (`adopt`): they came before anything this process reads.
#[derive(Debug, Default)]
pub struct Pending {
    /// In the order their PREPAREs were seen.
    prepared: Vec<(Xid, Checkpoint)>,
    /// COMMITs or ROLLBACKs handed to the sink, with their positions, not yet landed.
    resolving: Vec<(Xid, Position)>,
    /// The stashes in Redis have been read, or the checkpoint said there were none.
    adopted: bool,
    /// The transactions whose stashes an earlier version wrote (no checkpoint in their
    /// headers): not followed, but their stashes wait until they are resolved.
    blind: Vec<Xid>,
}

/// More pending transactions than this are not followed (the oldest kept): an
/// application holding that many prepared at once is not one this protects.
const MAX_PENDING: usize = 10_000;

impl Pending {
    /// Where to resume from when Redis lost the checkpoint and these stashes with it.
    pub fn rewind(&self) -> Option<&Checkpoint> {
        self.prepared.first().map(|(_, before)| before)
    }

    /// Whether a stash may wait in Redis after the steps handed to the sink so far: the
    /// checkpoints say so (`Checkpoint::xa`). Errs on the side of yes: a PREPARE counts
    /// from its XA START, a resolution only once it landed.
    pub fn waiting(&self) -> bool {
        !self.prepared.is_empty() || !self.blind.is_empty()
    }

    /// Redis lost its data: the stashes an earlier version wrote are gone for good.
    pub fn lost(&mut self) {
        self.blind.clear();
    }

    /// Reads the stashes in Redis and takes them in (`adopt`), once per process and only
    /// when the checkpoint found (`at_start`) says some may wait.
    pub async fn adopt_stashes(
        &mut self,
        sink: &mut RedisSink,
        at_start: &Checkpoint,
    ) -> Result<(), SinkError> {
        if self.adopted || !at_start.xa {
            self.adopted = true;
            return Ok(());
        }
        // Adopted only once read: a failed read (Redis gone) is tried again next session.
        let found = sink.prepared_before().await?;
        let count = found.len();
        for xid in self.adopt(found) {
            warn!(%xid, "an XA transaction prepared before this process started has a stash \
                   written by an earlier version, without the position of its XA PREPARE: \
                   should Redis lose it before its XA COMMIT, the daemon stops there");
        }
        if count > 0 {
            info!(
                transactions = count,
                rewind = %self.rewind().map(|c| c.position.to_string()).unwrap_or_default(),
                "XA transactions prepared before this process started wait for their \
                 commits; should Redis lose their stashes, their PREPAREs are read again"
            );
        }
        Ok(())
    }

    /// Takes in the transactions whose stashes a process before this one wrote, found in
    /// Redis at the first session that found its checkpoint. Their PREPAREs came before
    /// any this process saw: they go first, the earliest checkpoint first. Returns the
    /// stashes whose headers hold no checkpoint (an earlier version's), which cannot be
    /// followed.
    pub fn adopt(&mut self, found: Vec<(Xid, Option<Checkpoint>)>) -> Vec<Xid> {
        self.adopted = true;
        let mut blind = Vec::new();
        let mut earlier = Vec::new();
        for (xid, before) in found {
            match before {
                _ if self.prepared.iter().any(|(x, _)| *x == xid) => {}
                Some(before) => earlier.push((xid, before)),
                None => blind.push(xid),
            }
        }
        earlier.sort_by(|a, b| a.1.position.cmp(&b.1.position));
        earlier.truncate(MAX_PENDING.saturating_sub(self.prepared.len()));
        earlier.append(&mut self.prepared);
        self.prepared = earlier;
        self.blind.extend(blind.iter().cloned());
        blind
    }

    fn started(&mut self, xid: &Xid, before: Checkpoint) {
        // Read again after a rewind: the first checkpoint stays.
        if self.prepared.len() < MAX_PENDING && !self.prepared.iter().any(|(x, _)| x == xid) {
            self.prepared.push((xid.clone(), before));
        }
    }

    fn resolved(&mut self, xid: &Xid, at: &Position) {
        self.resolving.push((xid.clone(), at.clone()));
    }

    /// A step moved the checkpoint to `at`: the resolutions up to it have landed.
    pub(super) fn landed(&mut self, at: &Position) {
        if self.resolving.is_empty() {
            return; // every step lands here: nothing to do without XA
        }
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.resolving.drain(..).partition(|(_, p)| p <= at);
        self.resolving = waiting;
        self.prepared
            .retain(|(xid, _)| !done.iter().any(|(resolved, _)| resolved == xid));
        self.blind
            .retain(|xid| !done.iter().any(|(resolved, _)| resolved == xid));
    }

    /// Resolutions not landed by the end of a session may never have: their PREPAREs
    /// stay pending.
    pub(super) fn session_ended(&mut self) {
        self.resolving.clear();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::applier) fn xid(n: u8) -> Xid {
        Xid {
            format_id: 1,
            gtrid: vec![n],
            bqual: vec![],
        }
    }

    fn checkpoint(pos: u64) -> Checkpoint {
        let server = crate::checkpoint::ServerIdentity {
            server_id: 1,
            uuid_or_host: "db".into(),
        };
        Checkpoint::new(Position::new("b.000001", pos), server, 0)
    }

    #[test]
    fn a_prepare_stays_pending_until_its_resolution_lands() {
        let mut pending = Pending::default();
        pending.started(&xid(1), checkpoint(100));
        pending.started(&xid(2), checkpoint(200));
        pending.started(&xid(1), checkpoint(300)); // read again after a rewind
        assert_eq!(pending.rewind().map(|c| c.position.pos), Some(100));

        pending.resolved(&xid(1), &Position::new("b.000001", 400));
        pending.landed(&Position::new("b.000001", 350));
        assert_eq!(
            pending.rewind().map(|c| c.position.pos),
            Some(100),
            "not landed yet"
        );
        pending.session_ended();
        pending.landed(&Position::new("b.000001", 500));
        assert_eq!(
            pending.rewind().map(|c| c.position.pos),
            Some(100),
            "a resolution of an ended session may never have landed"
        );

        pending.resolved(&xid(1), &Position::new("b.000001", 600));
        pending.landed(&Position::new("b.000001", 600));
        assert_eq!(pending.rewind().map(|c| c.position.pos), Some(200));
        assert!(pending.waiting());
        pending.resolved(&xid(2), &Position::new("b.000001", 700));
        assert!(pending.waiting(), "resolved, not landed");
        pending.landed(&Position::new("b.000001", 800));
        assert_eq!(pending.rewind(), None);
        assert!(!pending.waiting());
    }

    #[test]
    fn stashes_of_an_earlier_process_come_first_earliest_first() {
        let mut pending = Pending::default();
        pending.started(&xid(1), checkpoint(900));
        let blind = pending.adopt(vec![
            (xid(3), Some(checkpoint(500))),
            (xid(1), Some(checkpoint(800))), // its own: known already
            (xid(4), None),
            (xid(2), Some(checkpoint(300))),
        ]);
        assert!(pending.adopted);
        assert_eq!(blind, vec![xid(4)], "an earlier version's header");
        assert!(pending.waiting());
        let order: Vec<(u8, u64)> = pending
            .prepared
            .iter()
            .map(|(x, c)| (x.gtrid[0], c.position.pos))
            .collect();
        assert_eq!(order, vec![(2, 300), (3, 500), (1, 900)]);

        pending.resolved(&xid(2), &Position::new("b.000001", 1000));
        pending.landed(&Position::new("b.000001", 1000));
        assert_eq!(pending.rewind().map(|c| c.position.pos), Some(500));
        for (x, at) in [(3, 1100), (1, 1200)] {
            pending.resolved(&xid(x), &Position::new("b.000001", at));
        }
        pending.landed(&Position::new("b.000001", 1200));
        assert_eq!(pending.rewind(), None);
        assert!(pending.waiting(), "the old stash still waits");
        pending.lost();
        assert!(!pending.waiting(), "gone with Redis's data");
        pending.adopt(vec![(xid(4), None)]);
        pending.resolved(&xid(4), &Position::new("b.000001", 1300));
        pending.landed(&Position::new("b.000001", 1300));
        assert!(!pending.waiting(), "resolved");
    }
}
