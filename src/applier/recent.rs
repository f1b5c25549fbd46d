//! The prepared XA transactions' operations kept at hand in this session (`Recent`).

use std::collections::VecDeque;

use crate::mapper::CacheOp;
use crate::sink::StepLimits;
use crate::spare;
use crate::xa::Xid;

/// The operations of the transactions prepared last in this session, as they went into
/// their stashes: an XA COMMIT close behind its PREPARE (the usual case) applies them
/// without reading the stash back, which would cost a wait for every step in flight and
/// two round trips. At most a step's worth in all (`StepLimits`: operations, a
/// transaction without any counting as one, and bytes), the oldest forgotten first
/// (their commits read the stash).
#[derive(Default)]
pub(crate) struct Recent {
    prepared: VecDeque<(Xid, Vec<CacheOp>)>,
    ops: usize,
    bytes: usize,
}

impl Recent {
    pub(super) fn keep(&mut self, xid: Xid, ops: Vec<CacheOp>, limits: StepLimits) {
        self.ops += weight(&ops);
        self.bytes += bytes(&ops);
        self.prepared.push_back((xid, ops));
        while self.ops > limits.ops || self.bytes > limits.bytes {
            let Some((_, old)) = self.prepared.pop_front() else {
                break;
            };
            self.forget(&old);
            spare::recycle_ops(old);
        }
    }

    pub(super) fn take(&mut self, xid: &Xid) -> Option<Vec<CacheOp>> {
        let at = self.prepared.iter().position(|(x, _)| x == xid)?;
        let (_, ops) = self.prepared.remove(at)?;
        self.forget(&ops);
        Some(ops)
    }

    fn forget(&mut self, ops: &[CacheOp]) {
        self.ops -= weight(ops);
        self.bytes -= bytes(ops);
    }
}

fn bytes(ops: &[CacheOp]) -> usize {
    ops.iter().map(CacheOp::bytes).sum()
}

fn weight(ops: &[CacheOp]) -> usize {
    ops.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applier::xa::tests::xid;

    fn ops(n: usize) -> Vec<CacheOp> {
        (0..n)
            .map(|i| CacheOp::Del {
                key: format!("k{i}"),
            })
            .collect()
    }

    fn ops_limit(ops: usize) -> StepLimits {
        StepLimits {
            ops,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn recent_transactions_are_bounded_by_operations_and_count() {
        let mut recent = Recent::default();
        recent.keep(xid(1), ops(2), ops_limit(3));
        recent.keep(xid(2), ops(0), ops_limit(3));
        recent.keep(xid(3), ops(0), ops_limit(3));
        assert_eq!(recent.take(&xid(1)), None, "forgotten: 4 over a bound of 3");
        recent.keep(xid(4), ops(3), ops_limit(3));
        assert_eq!(recent.prepared.len(), 1, "an empty one counts as one");
        assert_eq!(recent.take(&xid(4)), Some(ops(3)));
        assert_eq!(recent.take(&xid(4)), None, "taken once");
        assert_eq!(recent.ops, 0);
    }

    #[test]
    fn recent_transactions_are_bounded_by_bytes() {
        let limits = StepLimits {
            ops: 100,
            bytes: 2 * bytes(&ops(1)),
        };
        let mut recent = Recent::default();
        recent.keep(xid(1), ops(1), limits);
        recent.keep(xid(2), ops(1), limits);
        assert_eq!(recent.prepared.len(), 2, "within the bytes");
        recent.keep(xid(3), ops(1), limits);
        assert_eq!(recent.take(&xid(1)), None, "forgotten: over the bytes");
        assert_eq!(recent.take(&xid(3)), Some(ops(1)));
        assert_eq!(recent.bytes, bytes(&ops(1)));
    }
}
