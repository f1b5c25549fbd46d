//! MySQL GTID sets: `uuid:1-100:105,uuid2:tag:1-7`. A MySQL replica resumes by sending
//! the whole set it has applied (`COM_BINLOG_DUMP_GTID`); the server skips those
//! transactions on whichever server of the topology it is asked.
//!
//! MySQL 8.4 adds tagged GTIDs (`uuid:tag:n`): the tag is part of the transaction's
//! identity, so `uuid:5` and `uuid:blue:5` are different transactions. The text form
//! lists a uuid once, its untagged intervals first, then each `tag:intervals` group.

use std::collections::BTreeMap;
use std::fmt;

use mysql_common::packets::{GnoInterval, Sid, Tag};

/// A source uuid and tag (`""` for untagged): what a GTID's number counts within.
type Key = ([u8; 16], String);

/// A set of MySQL GTIDs, kept as merged, sorted inclusive intervals per (uuid, tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet {
    sets: BTreeMap<Key, Vec<(u64, u64)>>,
}

impl GtidSet {
    /// Parses `@@gtid_executed` text (newlines after commas allowed); empty is the empty set.
    pub fn parse(text: &str) -> Result<GtidSet, String> {
        let mut set = GtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = parse_uuid(fields.next().unwrap_or_default())
                .ok_or_else(|| format!("`{part}` does not start with a server uuid"))?;
            let mut tag = String::new();
            for field in fields {
                if field.starts_with(|c: char| c.is_ascii_digit()) {
                    let (start, end) = parse_interval(field)
                        .ok_or_else(|| format!("`{part}`: bad interval `{field}`"))?;
                    set.insert_interval((uuid, tag.clone()), start, end);
                } else {
                    let lower = field.to_ascii_lowercase();
                    Tag::new(lower.as_str())
                        .map_err(|e| format!("`{part}`: bad tag `{field}`: {e}"))?;
                    tag = lower;
                }
            }
        }
        Ok(set)
    }

    /// Adds one transaction.
    pub fn add(&mut self, uuid: [u8; 16], tag: &str, gno: u64) {
        self.insert_interval((uuid, tag.to_string()), gno, gno);
    }

    /// Adds the transactions `start..=end`.
    pub fn add_range(&mut self, uuid: [u8; 16], tag: &str, start: u64, end: u64) {
        self.insert_interval((uuid, tag.to_string()), start, end);
    }

    /// Adds every transaction of `other`.
    pub fn union(&mut self, other: &GtidSet) {
        for (key, intervals) in &other.sets {
            for &(start, end) in intervals {
                self.insert_interval(key.clone(), start, end);
            }
        }
    }

    /// The transactions of `self` that `other` lacks.
    pub fn minus(&self, other: &GtidSet) -> GtidSet {
        let mut rest = GtidSet::default();
        for (key, intervals) in &self.sets {
            let theirs = other.sets.get(key).map(Vec::as_slice).unwrap_or(&[]);
            for &(start, end) in intervals {
                for (s, e) in subtract(start, end, theirs) {
                    rest.insert_interval(key.clone(), s, e);
                }
            }
        }
        rest
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The SID block of `COM_BINLOG_DUMP_GTID` (intervals there are end-exclusive). A tag
    /// on any entry makes mysql_common send the tagged (8.4) wire format.
    pub fn to_sids(&self) -> Vec<Sid<'static>> {
        self.sets
            .iter()
            .map(|((uuid, tag), intervals)| {
                let intervals = intervals
                    .iter()
                    .map(|&(s, e)| GnoInterval::new(s, e + 1))
                    .collect();
                let sid = Sid::new(*uuid).with_intervals(intervals);
                match Tag::new(tag.clone()) {
                    Ok(tag) => sid.with_tag(tag),
                    Err(_) => sid, // the empty tag: untagged
                }
            })
            .collect()
    }

    fn insert_interval(&mut self, key: Key, start: u64, end: u64) {
        let intervals = self.sets.entry(key).or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        // Merge overlapping and adjacent intervals: `1-3` and `4-9` are `1-9`.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }
}

/// `[start, end]` minus the sorted, disjoint `theirs`.
fn subtract(start: u64, end: u64, theirs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut rest = Vec::new();
    let mut from = start;
    for &(s, e) in theirs {
        if e < from || s > end {
            continue;
        }
        if s > from {
            rest.push((from, s - 1));
        }
        if e >= end {
            return rest;
        }
        from = e + 1;
    }
    rest.push((from, end));
    rest
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse_interval(text: &str) -> Option<(u64, u64)> {
    let (start, end) = match text.split_once('-') {
        Some((s, e)) => (s.parse().ok()?, e.parse().ok()?),
        None => {
            let n = text.parse().ok()?;
            (n, n)
        }
    };
    // GTID numbers start at 1.
    (start >= 1 && start <= end).then_some((start, end))
}

/// The canonical text of a uuid: lowercase, dashed 8-4-4-4-12.
pub fn uuid_text(uuid: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_uuid: Option<&[u8; 16]> = None;
        for ((uuid, tag), intervals) in &self.sets {
            if last_uuid != Some(uuid) {
                if last_uuid.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(&uuid_text(uuid))?;
                last_uuid = Some(uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for (s, e) in intervals {
                if s == e {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{e}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn set(text: &str) -> GtidSet {
        GtidSet::parse(text).expect("valid set")
    }

    #[test]
    fn text_round_trips_in_canonical_form() {
        let s = set("3E11FA47-71CA-11E1-9E33-C80AA9429562:4-7:1-3:9,\n b0000000-0000-0000-0000-000000000001:2");
        assert_eq!(
            s.to_string(),
            format!("{A}:1-7:9,b0000000-0000-0000-0000-000000000001:2")
        );
        assert!(set("").is_empty());
        assert!(GtidSet::parse("nope:1-2").is_err());
        assert!(
            GtidSet::parse(&format!("{A}:0-2")).is_err(),
            "numbers start at 1"
        );
        assert!(GtidSet::parse(&format!("{A}:5-2")).is_err());
        assert!(GtidSet::parse(&format!("{A}:Bad-Tag:1")).is_err());
    }

    #[test]
    fn tags_are_separate_transactions() {
        // MySQL 8.4: untagged intervals first, then each tag with its own intervals.
        let s = set(&format!("{A}:1-3:blue:1-2:5,{A}:red:7"));
        assert_eq!(s.to_string(), format!("{A}:1-3:blue:1-2:5:red:7"));
        let only_untagged = set(&format!("{A}:1-3"));
        assert_eq!(
            s.minus(&only_untagged).to_string(),
            format!("{A}:blue:1-2:5:red:7")
        );
        let sids = s.to_sids();
        assert_eq!(sids.len(), 3);
        assert_eq!(sids[1].tag().map(|t| t.as_str()), Some("blue"));
        // Wire intervals are end-exclusive.
        assert_eq!(sids[1].intervals()[0].end(), 3);
        assert_eq!(sids[0].tag(), None);
    }

    #[test]
    fn add_merges_and_minus_names_the_gaps() {
        let mut s = set(&format!("{A}:1-3"));
        let uuid = parse_uuid(A).expect("uuid");
        s.add(uuid, "", 4);
        s.add(uuid, "", 6);
        assert_eq!(s.to_string(), format!("{A}:1-4:6"));
        s.add(uuid, "", 5);
        assert_eq!(s.to_string(), format!("{A}:1-6"));
        let server = set(&format!("{A}:1-2:5"));
        assert_eq!(s.minus(&server).to_string(), format!("{A}:3-4:6"));
        assert!(s.minus(&set(&format!("{A}:1-100"))).is_empty());
        let mut u = server.clone();
        u.union(&set(&format!("{A}:3-4")));
        assert_eq!(u.to_string(), format!("{A}:1-5"));
    }

    #[test]
    fn dump_request_carries_the_set_as_the_protocol_documents() {
        use mysql_common::packets::ComBinlogDumpGtid;
        use mysql_common::proto::MySerialize;
        let s = set(&format!("{A}:1-3:7"));
        let mut wire = Vec::new();
        ComBinlogDumpGtid::new(9)
            .with_pos(4)
            .with_sids(s.to_sids())
            .serialize(&mut wire);
        // COM_BINLOG_DUMP_GTID (0x1e), flags with BINLOG_THROUGH_GTID (0x04), server id.
        assert_eq!(wire[0], 0x1e);
        assert_eq!(u16::from_le_bytes([wire[1], wire[2]]) & 0x04, 0x04);
        assert_eq!(u32::from_le_bytes(wire[3..7].try_into().unwrap()), 9);
        // Empty file name (length 0), position 4, then the SID block's size and the block:
        // n_sids, uuid, n_intervals, and [start, end) pairs.
        assert_eq!(&wire[7..11], &[0, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(wire[11..19].try_into().unwrap()), 4);
        let block = &wire[23..];
        assert_eq!(
            u32::from_le_bytes(wire[19..23].try_into().unwrap()) as usize,
            block.len()
        );
        let word = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().unwrap());
        assert_eq!(word(0), 1, "one sid, untagged format");
        assert_eq!(&block[8..24], &parse_uuid(A).unwrap());
        assert_eq!(
            [word(24), word(32), word(40), word(48), word(56)],
            [2, 1, 4, 7, 8]
        );
    }
}
