//! The applier's side of XA transactions (`crate::xa`): a prepared transaction's
//! operations go to its stash, and its `XA COMMIT` applies them from there.

use std::collections::VecDeque;

use tracing::{debug, info};

use super::Applier;
use crate::error::Error;
use crate::mapper::CacheOp;
use crate::sink::SinkError;
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
}

impl Applier {
    /// XA START: the operations mapped until the group's end go to the stash.
    pub(super) fn xa_start(&mut self, xid: Xid) {
        let key = xid.stash_key(self.sink.checkpoint_key());
        self.xa = Some(OpenXa {
            xid,
            key,
            fresh: true,
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
            entries.push(xa::HEADER.to_string());
        }
        entries.extend(mapped.iter().map(xa::encode));
        let ops = self.step.ops_mut();
        if std::mem::take(&mut open.fresh) {
            ops.push(CacheOp::Unstash {
                key: open.key.clone(),
            });
        }
        if !entries.is_empty() {
            ops.push(CacheOp::Stash {
                key: open.key.clone(),
                entries,
            });
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
                self.recent.keep(open.xid, ops, self.max_ops);
            }
        }
        self.step.commit(commit);
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
            (true, Some(ops)) => self.step.ops_mut().extend(ops),
            (true, None) => return self.apply_stash(&xid, commit).await,
        }
        self.step.ops_mut().push(CacheOp::Unstash { key });
        self.step.commit(commit);
        Ok(())
    }

    /// Applies a committed XA transaction's stash: in steps of `max_ops` that move no
    /// checkpoint, then the last one with the stash's deletion and the commit.
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
        while next < stash.len {
            let ops = self.sink.stashed_ops(&stash, next, self.max_ops).await?;
            next += ops.len();
            if next >= stash.len {
                self.step.ops_mut().extend(ops);
                break;
            }
            self.apply(ops, None, 0).await?;
        }
        debug!(%xid, operations = stash.len - 1, position = %commit.position, "XA COMMIT: applying its prepared operations");
        self.step
            .ops_mut()
            .push(CacheOp::Unstash { key: stash.key });
        self.step.commit(commit);
        Ok(())
    }
}

/// The operations of the transactions prepared last in this session, as they went into
/// their stashes: an XA COMMIT close behind its PREPARE (the usual case) applies them
/// without reading the stash back, which would cost a wait for every step in flight and
/// two round trips. At most `max_ops` operations in all (a transaction without any counts
/// as one), the oldest forgotten first (their commits read the stash).
#[derive(Default)]
pub(super) struct Recent {
    prepared: VecDeque<(Xid, Vec<CacheOp>)>,
    ops: usize,
}

impl Recent {
    fn keep(&mut self, xid: Xid, ops: Vec<CacheOp>, max_ops: usize) {
        self.ops += weight(&ops);
        self.prepared.push_back((xid, ops));
        while self.ops > max_ops {
            let Some((_, old)) = self.prepared.pop_front() else {
                break;
            };
            self.ops -= weight(&old);
            spare::recycle_ops(old);
        }
    }

    fn take(&mut self, xid: &Xid) -> Option<Vec<CacheOp>> {
        let at = self.prepared.iter().position(|(x, _)| x == xid)?;
        let (_, ops) = self.prepared.remove(at)?;
        self.ops -= weight(&ops);
        Some(ops)
    }
}

fn weight(ops: &[CacheOp]) -> usize {
    ops.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(n: u8) -> Xid {
        Xid {
            format_id: 1,
            gtrid: vec![n],
            bqual: vec![],
        }
    }

    fn ops(n: usize) -> Vec<CacheOp> {
        (0..n)
            .map(|i| CacheOp::Del {
                key: format!("k{i}"),
            })
            .collect()
    }

    #[test]
    fn recent_transactions_are_bounded_by_operations_and_count() {
        let mut recent = Recent::default();
        recent.keep(xid(1), ops(2), 3);
        recent.keep(xid(2), ops(0), 3);
        recent.keep(xid(3), ops(0), 3);
        assert_eq!(recent.take(&xid(1)), None, "forgotten: 4 over a bound of 3");
        recent.keep(xid(4), ops(3), 3);
        assert_eq!(recent.prepared.len(), 1, "an empty one counts as one");
        assert_eq!(recent.take(&xid(4)), Some(ops(3)));
        assert_eq!(recent.take(&xid(4)), None, "taken once");
        assert_eq!(recent.ops, 0);
    }
}
