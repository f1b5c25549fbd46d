//! Writes a step need not send: one atomic step shows readers only the state after its
//! last transaction, so a write of a key that a later write in the same step replaces
//! whole is never seen by anyone. `Set`, `Hash` and `Del` each replace the key whole (a
//! hash is deleted, then written, with its time to live; `SET` without `KEEPTTL` drops
//! any time to live), so dropping an earlier one changes nothing a reader or the
//! checkpoint can tell. An `Expire` before such a write is replaced with the key too.
//! A row updated many times between two steps (a counter, a session, a catch-up over a
//! busy hour) then costs Redis one write per step instead of one per change, and a row
//! deleted and inserted again in one transaction (as sysbench's write mix does) one
//! write instead of two: Redis is what bounds an `upsert` catch-up.
//!
//! An `Expire` replaces nothing: it applies to the write before it, which stays. Stash
//! operations build XA lists in order and are never dropped. A step that writes no value
//! (deletes only) is left alone.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::mapper::CacheOp;

/// Reused from step to step, so coalescing allocates nothing once warm.
#[derive(Default)]
pub struct Coalescer {
    /// Key hash → index in `ops` of the last whole write seen (walking backwards).
    last: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
    /// Indexes to drop, in descending order.
    dropped: Vec<usize>,
}

impl Coalescer {
    /// Drops from `ops` every whole write that a later whole write of the same key
    /// replaces; keeps the order of the rest. Returns how many were dropped.
    pub fn coalesce(&mut self, ops: &mut Vec<CacheOp>) -> usize {
        self.coalesce_with(ops, hash)
    }

    fn coalesce_with(&mut self, ops: &mut Vec<CacheOp>, hash: fn(&str) -> u64) -> usize {
        // A step of deletes only is sent as it is: a `DEL` costs Redis less than finding
        // its duplicate costs here, and a `delete` rules' catch-up is all such steps.
        let writes_values = ops
            .iter()
            .any(|op| matches!(op, CacheOp::Set { .. } | CacheOp::Hash { .. }));
        if !writes_values || ops.iter().filter(|op| is_whole_write(op)).nth(1).is_none() {
            return 0;
        }
        self.last.clear();
        self.dropped.clear();
        for (i, op) in ops.iter().enumerate().rev() {
            let whole = is_whole_write(op);
            if !whole && !matches!(op, CacheOp::Expire { .. }) {
                continue; // stash operations: never dropped, never replacing
            }
            let key = op.key();
            match self.last.get(&hash(key)) {
                // A different key with the same hash keeps both: only ever a write too many.
                Some(&later) if ops[later].key() == key => self.dropped.push(i),
                Some(_) => {}
                None if whole => {
                    self.last.insert(hash(key), i);
                }
                None => {}
            }
        }
        let count = self.dropped.len();
        if count > 0 {
            let mut index = 0;
            ops.retain(|_| {
                let drop = self.dropped.last() == Some(&index);
                if drop {
                    self.dropped.pop();
                }
                index += 1;
                !drop
            });
        }
        count
    }
}

/// A write that leaves the key in a state independent of what it held before.
fn is_whole_write(op: &CacheOp) -> bool {
    matches!(
        op,
        CacheOp::Set { .. } | CacheOp::Hash { .. } | CacheOp::Del { .. }
    )
}

/// FxHash's mixing over the key's bytes: keys are short and the table is rebuilt per step,
/// so a keyed hash would cost more than the writes it saves.
fn hash(key: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = key.len() as u64;
    let mut chunks = key.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        h = (h.rotate_left(5) ^ word).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h
}

/// The map's keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> CacheOp {
        CacheOp::Set {
            key: key.into(),
            value: value.into(),
            ttl_ms: 0,
        }
    }

    fn hash_op(key: &str, value: &str) -> CacheOp {
        CacheOp::Hash {
            key: key.into(),
            fields: vec![("v".into(), value.into())],
            ttl_ms: 0,
        }
    }

    fn del(key: &str) -> CacheOp {
        CacheOp::Del { key: key.into() }
    }

    fn expire(key: &str) -> CacheOp {
        CacheOp::Expire {
            key: key.into(),
            ttl_ms: 5,
        }
    }

    /// What Redis holds after `ops`, applied one by one: key → (value, has a TTL).
    fn apply(ops: &[CacheOp]) -> std::collections::BTreeMap<String, (String, bool)> {
        let mut state = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                CacheOp::Set { key, value, ttl_ms } => {
                    state.insert(key.clone(), (value.clone(), *ttl_ms > 0));
                }
                CacheOp::Hash {
                    key,
                    fields,
                    ttl_ms,
                } => {
                    state.insert(key.clone(), (format!("{fields:?}"), *ttl_ms > 0));
                }
                CacheOp::Del { key } => {
                    state.remove(key);
                }
                CacheOp::Expire { key, .. } => {
                    if let Some(entry) = state.get_mut(key) {
                        entry.1 = true;
                    }
                }
                CacheOp::Stash { .. } | CacheOp::Unstash { .. } => {}
            }
        }
        state
    }

    #[test]
    fn only_the_last_whole_write_of_a_key_is_sent() {
        let mut ops = vec![
            set("a", "1"),
            set("b", "1"),
            hash_op("a", "2"),
            del("b"),
            set("a", "3"),
            set("b", "2"),
        ];
        let before = apply(&ops);
        assert_eq!(Coalescer::default().coalesce(&mut ops), 4);
        assert_eq!(ops, vec![set("a", "3"), set("b", "2")]);
        assert_eq!(apply(&ops), before);
    }

    #[test]
    fn a_write_an_expire_applies_to_is_kept() {
        let mut ops = vec![set("a", "1"), expire("a"), del("c"), expire("c")];
        let kept = ops.clone();
        assert_eq!(Coalescer::default().coalesce(&mut ops), 0);
        assert_eq!(ops, kept);
        let mut ops = vec![set("a", "1"), expire("a"), set("a", "2")];
        assert_eq!(Coalescer::default().coalesce(&mut ops), 2);
        assert_eq!(ops, vec![set("a", "2")]);
    }

    #[test]
    fn a_delete_replaces_and_is_replaced() {
        // sysbench's mix: a row deleted and inserted again in one transaction.
        let mut ops = vec![del("a"), set("a", "1"), set("b", "1"), del("b"), del("b")];
        let before = apply(&ops);
        assert_eq!(Coalescer::default().coalesce(&mut ops), 3);
        assert_eq!(ops, vec![set("a", "1"), del("b")]);
        assert_eq!(apply(&ops), before);
    }

    #[test]
    fn a_step_of_deletes_only_is_left_alone() {
        let mut ops = vec![del("a"), del("a"), expire("b")];
        assert_eq!(Coalescer::default().coalesce(&mut ops), 0);
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn stash_operations_stay_whatever_follows() {
        let stash = CacheOp::Stash {
            key: "a".into(),
            entries: vec!["x".into()],
        };
        let unstash = CacheOp::Unstash { key: "a".into() };
        let mut ops = vec![stash.clone(), unstash.clone(), set("a", "1")];
        assert_eq!(Coalescer::default().coalesce(&mut ops), 0);
        assert_eq!(ops, vec![stash, unstash, set("a", "1")]);
    }

    #[test]
    fn keys_with_the_same_hash_are_told_apart() {
        // Every key collides: only the key first met (from the end) is coalesced.
        let mut ops = vec![set("a", "1"), set("b", "1"), set("a", "2"), set("b", "2")];
        let before = apply(&ops);
        assert_eq!(Coalescer::default().coalesce_with(&mut ops, |_| 7), 1);
        assert_eq!(ops, vec![set("a", "1"), set("a", "2"), set("b", "2")]);
        assert_eq!(apply(&ops), before);
    }

    proptest::proptest! {
        #[test]
        fn coalescing_never_changes_what_a_step_leaves(
            script in proptest::collection::vec((0u8..5, 0u8..4), 0..40)
        ) {
            let mut ops: Vec<CacheOp> = script
                .iter()
                .map(|&(kind, k)| {
                    let key = format!("k{k}");
                    match kind {
                        0 | 1 => set(&key, &format!("{kind}{k}")),
                        2 => hash_op(&key, "h"),
                        3 => del(&key),
                        _ => expire(&key),
                    }
                })
                .collect();
            let before = apply(&ops);
            let n = ops.len();
            let dropped = Coalescer::default().coalesce(&mut ops);
            proptest::prop_assert_eq!(ops.len() + dropped, n);
            proptest::prop_assert_eq!(apply(&ops), before);
        }
    }
}
