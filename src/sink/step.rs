//! Step assembly: which operations go into the next atomic Redis step, and which checkpoint
//! it carries.
//!
//! Whole transactions are batched into one step while more are ready (batching under load).
//! A transaction whose operations exceed the [`StepLimits`] (a count, and the bytes they
//! carry: a thousand rows of megabyte documents must not make a gigabyte step) is split:
//! its earlier steps carry no new checkpoint, so a crash between them resumes at the
//! transaction's start and re-applies it (the operations are idempotent writes of row
//! images).

use crate::mapper::CacheOp;
use crate::source::Commit;
use crate::spare;

/// The event groups a step completes: each is one the server sent (and the progress
/// tracker counts), and those that are committed transactions (the metric).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub groups: usize,
    pub committed: usize,
}

/// How large a step may grow (`sink.max_ops_per_step`, `sink.max_bytes_per_step`): it is
/// sent once it reaches either, so it holds at most these and one more row's operations
/// (a single row larger than `bytes` still makes a step of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    pub ops: usize,
    pub bytes: usize,
}

impl StepLimits {
    /// These limits with the bytes lowered, when they must be, to what `redis` takes in
    /// one step (`Limits::step_bytes`).
    pub fn for_redis(self, redis: super::Limits) -> StepLimits {
        StepLimits {
            bytes: self.bytes.min(redis.step_bytes()),
            ..self
        }
    }
}

/// `ops` cut into steps within `limits`, in order: each as long as the next operation
/// fits, and at least one operation (for operations that need not wait for a commit, as
/// `load`'s).
pub fn parts(ops: &[CacheOp], limits: StepLimits) -> impl Iterator<Item = &[CacheOp]> {
    let mut rest = ops;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let len = rest
            .iter()
            .take(limits.ops.max(1))
            .take_while(|op| {
                bytes += op.bytes();
                bytes <= limits.bytes
            })
            .count()
            .max(1);
        let (part, after) = rest.split_at(len);
        rest = after;
        Some(part)
    })
}

#[derive(Debug, Default)]
pub struct Step {
    /// Operations of complete transactions, then of the open one.
    ops: Vec<CacheOp>,
    /// How many of `ops` belong to complete transactions.
    complete_ops: usize,
    /// The last complete transaction's commit: the checkpoint this step can carry.
    last_commit: Option<Commit>,
    /// Complete transactions (event groups) in this step.
    tally: Tally,
    /// The open transaction has already had a partial step applied.
    open_was_split: bool,
    /// Bytes of the operations counted by `mapped` (`CacheOp::bytes`), and of those the
    /// complete transactions' share.
    bytes: usize,
    complete_bytes: usize,
}

impl Step {
    /// Where mapped operations of the open transaction go.
    pub fn ops_mut(&mut self) -> &mut Vec<CacheOp> {
        &mut self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Counts the bytes of the operations appended since `ops_mut().len()` was `from`,
    /// and returns them.
    pub fn mapped(&mut self, from: usize) -> usize {
        let added = self.ops[from..].iter().map(CacheOp::bytes).sum::<usize>();
        self.bytes += added;
        added
    }

    /// The operations appended since `ops_mut().len()` was `from`.
    pub fn ops_since(&self, from: usize) -> &[CacheOp] {
        &self.ops[from..]
    }

    /// Appends operations the mapper did not write here (an XA transaction's stash, or
    /// its operations at its COMMIT), counting their bytes as `mapped` does.
    pub fn append(&mut self, ops: impl IntoIterator<Item = CacheOp>) {
        let from = self.ops.len();
        self.ops.extend(ops);
        self.mapped(from);
    }

    /// True when the complete transactions gathered so far fill a step.
    pub fn full(&self, limits: StepLimits) -> bool {
        self.ops.len() >= limits.ops || self.bytes >= limits.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.last_commit.is_none()
    }

    /// Marks the open transaction complete: a committed transaction.
    pub fn commit(&mut self, commit: Commit) {
        // A position-only move (idle) is not a transaction.
        self.tally.committed += usize::from(commit.transaction);
        self.close(commit);
    }

    /// Marks the open event group complete without counting it as a committed
    /// transaction: an XA PREPARE (counted at its XA COMMIT) or an XA ROLLBACK.
    pub fn close_uncommitted(&mut self, commit: Commit) {
        self.close(commit);
    }

    fn close(&mut self, commit: Commit) {
        self.complete_ops = self.ops.len();
        self.complete_bytes = self.bytes;
        self.tally.groups += usize::from(commit.transaction);
        self.last_commit = Some(commit);
        self.open_was_split = false;
    }

    /// Takes out the open transaction's operations (a prepared XA transaction's go to
    /// its stash instead).
    pub fn take_open(&mut self) -> Vec<CacheOp> {
        let mut open = spare::ops();
        open.extend(self.ops.drain(self.complete_ops..));
        self.bytes = self.complete_bytes;
        open
    }

    /// The last complete transaction's commit, if this step holds one.
    pub fn last_commit(&self) -> Option<&Commit> {
        self.last_commit.as_ref()
    }

    /// True when the open transaction alone reaches a limit.
    pub fn open_too_large(&self, limits: StepLimits) -> bool {
        self.ops.len() - self.complete_ops >= limits.ops
            || self.bytes - self.complete_bytes >= limits.bytes
    }

    /// True if the open transaction has been split before.
    pub fn open_was_split(&self) -> bool {
        self.open_was_split
    }

    /// Takes everything for a step: all ops (complete and open) plus the checkpoint of the
    /// last complete transaction. Used when the open transaction must be split.
    pub fn take_split(&mut self) -> (Vec<CacheOp>, Option<Commit>, Tally) {
        self.open_was_split = true;
        self.complete_ops = 0;
        self.bytes = 0;
        self.complete_bytes = 0;
        let n = std::mem::take(&mut self.tally);
        let ops = std::mem::replace(&mut self.ops, spare::ops());
        (ops, self.last_commit.take(), n)
    }

    /// Takes the complete transactions only, leaving the open one's operations in place.
    pub fn take_complete(&mut self) -> (Vec<CacheOp>, Option<Commit>, Tally) {
        let open_bytes = self.bytes - self.complete_bytes;
        let open = self.take_open();
        let done = std::mem::replace(&mut self.ops, open);
        self.complete_ops = 0;
        self.bytes = open_bytes;
        self.complete_bytes = 0;
        let n = std::mem::take(&mut self.tally);
        (done, self.last_commit.take(), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Position;

    fn del(k: &str) -> CacheOp {
        CacheOp::Del { key: k.into() }
    }

    fn commit(pos: u64) -> Commit {
        Commit {
            position: Position::new("b.000001", pos),
            time: 0,
            transaction: true,
            gtid: None,
        }
    }

    #[test]
    fn complete_transactions_leave_the_open_one_behind() {
        let mut s = Step::default();
        s.ops_mut().push(del("a"));
        s.commit(commit(100));
        s.ops_mut().push(del("b"));
        s.commit(commit(200));
        s.ops_mut().push(del("open"));
        let (ops, cp, n) = s.take_complete();
        assert_eq!(ops, vec![del("a"), del("b")]);
        assert_eq!(cp.unwrap().position.pos, 200);
        assert_eq!(
            n,
            Tally {
                groups: 2,
                committed: 2
            }
        );
        assert_eq!(s.len(), 1);
        assert!(s.open_too_large(ops_limit(1)));
    }

    fn ops_limit(ops: usize) -> StepLimits {
        StepLimits {
            ops,
            bytes: usize::MAX,
        }
    }

    fn set(key: &str, bytes: usize) -> CacheOp {
        CacheOp::Set {
            key: key.into(),
            value: "v".repeat(bytes - key.len()),
            ttl_ms: 0,
        }
    }

    #[test]
    fn bytes_fill_a_step_as_operations_do() {
        let limits = StepLimits {
            ops: 100,
            bytes: 1000,
        };
        let mut s = Step::default();
        let from = s.len();
        s.ops_mut().push(set("a", 600));
        s.mapped(from);
        assert!(!s.open_too_large(limits));
        s.commit(commit(100));
        assert!(!s.full(limits));
        let from = s.len();
        s.ops_mut().push(set("b", 500));
        s.mapped(from);
        // The open transaction alone is under the limit; with the complete one, over it.
        assert!(!s.open_too_large(limits));
        s.commit(commit(200));
        assert!(s.full(limits));
        let from = s.len();
        s.ops_mut().push(set("c", 1000));
        s.mapped(from);
        assert!(s.open_too_large(limits));
        // Taking the complete transactions leaves the open one's bytes counted.
        let (ops, _, _) = s.take_complete();
        assert_eq!(ops.len(), 2);
        assert!(s.open_too_large(limits));
        s.take_split();
        assert!(!s.open_too_large(limits) && !s.full(limits));
    }

    #[test]
    fn parts_stay_within_both_limits_and_hold_at_least_one_operation() {
        let ops: Vec<CacheOp> = [300, 300, 300, 2000, 100, 100, 100, 100]
            .iter()
            .enumerate()
            .map(|(i, &n)| set(&format!("k{i}"), n))
            .collect();
        let limits = StepLimits { ops: 3, bytes: 800 };
        let lens: Vec<usize> = parts(&ops, limits).map(<[CacheOp]>::len).collect();
        // Bytes end the first two (a third 300 would pass 800) and the third (the large
        // one would pass it), the large one goes alone, and the count ends the fourth.
        assert_eq!(lens, vec![2, 1, 1, 3, 1]);
        assert_eq!(lens.iter().sum::<usize>(), ops.len());
        assert_eq!(parts(&[], limits).count(), 0);
    }

    #[test]
    fn split_carries_only_the_completed_checkpoint() {
        let mut s = Step::default();
        s.ops_mut().push(del("a"));
        s.commit(commit(100));
        s.ops_mut().extend([del("x"), del("y")]);
        assert!(s.open_too_large(ops_limit(2)));
        let (ops, cp, transactions) = s.take_split();
        assert_eq!(ops.len(), 3);
        assert_eq!(transactions.groups, 1);
        assert_eq!(cp.unwrap().position.pos, 100);
        assert!(s.open_was_split());
        s.ops_mut().push(del("z"));
        s.commit(commit(300));
        let (ops, cp, _) = s.take_complete();
        assert_eq!(ops, vec![del("z")]);
        assert_eq!(cp.unwrap().position.pos, 300);
    }
}
