//! Redis Cluster hash slots: which slot a key is in (CRC16 of the key, or of its `{tag}`,
//! modulo 16384), a short tag for every slot, and a step's operations grouped by slot.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::mapper::CacheOp;

pub const SLOTS: u16 = 16384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: the first non-empty `{…}`, else all of it.
fn hashed(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

pub fn slot_of(key: &str) -> u16 {
    crc16(hashed(key.as_bytes())) % SLOTS
}

/// A short string that hashes to `slot`, to put keys of this process into that slot
/// (`…{tag}…`). Found once for all slots: counting up, every slot is hit within a few
/// hundred thousand numbers.
pub fn tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut n: u64 = 0;
        while missing > 0 {
            let candidate = n.to_string();
            let s = usize::from(crc16(candidate.as_bytes()) % SLOTS);
            if tags[s].is_empty() {
                tags[s] = candidate;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[usize::from(slot % SLOTS)]
}

/// The operations of a step by slot, each slot's in the step's order: what one script
/// on one node can apply.
pub fn by_slot(ops: &[CacheOp]) -> BTreeMap<u16, Vec<&CacheOp>> {
    let mut groups: BTreeMap<u16, Vec<&CacheOp>> = BTreeMap::new();
    for op in ops {
        groups.entry(slot_of(op.key())).or_default().push(op);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_the_slots_redis_gives_them() {
        // `CLUSTER KEYSLOT` on a Redis 7 cluster.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
        assert_eq!(slot_of("user:1000"), 1649);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(
            slot_of("foo{}{bar}"),
            crc16(b"foo{}{bar}") % SLOTS,
            "empty tag"
        );
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in [0, 1, 5061, 12182, SLOTS - 1] {
            assert_eq!(slot_of(&format!("x:{{{}}}:y", tag(slot))), slot);
        }
        assert!((0..SLOTS).all(|s| slot_of(tag(s)) == s));
    }

    #[test]
    fn a_steps_operations_are_grouped_by_slot_in_order() {
        let del = |k: &str| CacheOp::Del { key: k.into() };
        let ops = [del("{a}1"), del("b"), del("{a}2"), del("b")];
        let groups = by_slot(&ops);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&slot_of("a")], [&del("{a}1"), &del("{a}2")]);
        assert_eq!(groups[&slot_of("b")], [&del("b"), &del("b")]);
    }
}
