//! GTIDs read from recorded binlogs: the checkpoint each commit would carry. MySQL 8.0
//! files (untagged GTIDs, the PREVIOUS_GTIDS event at the file start) and MariaDB's
//! (GTID and GTID_LIST events) are recorded by real servers; MySQL 8.4's tagged GTIDs
//! come from no recorded file, so one recorded file is rewritten with tagged GTID
//! events in the 8.4 format, built by mysql_common.

mod support;

use std::path::{Path, PathBuf};

use mysql_common::binlog::events::GtidEvent;
use mysql_common::packets::Tag;
use mysql_common::proto::MySerialize;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mysql-binlogs")
        .join(name)
}

/// (position, gtid) of every line `replay` prints for `path`.
fn checkpoints(path: &Path) -> Vec<(String, Option<String>)> {
    support::replay_lines(path)
        .iter()
        .map(|v| {
            (
                v["position"].as_str().expect("position").to_string(),
                v["gtid"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn pair(position: &str, gtid: &str) -> (String, Option<String>) {
    (position.to_string(), Some(gtid.to_string()))
}

#[test]
fn mysql_commits_carry_the_executed_set() {
    // The server uuid is the 16 bytes of each GTID event, in the dashed 8-4-4-4-12 form
    // of @@server_uuid. Transactions 1 and 2 are DDL (no rows); the INSERT is the 3rd.
    assert_eq!(
        checkpoints(&fixture("mysql_type_bit.000001")),
        vec![pair(
            "mysql_type_bit.000001:1001",
            "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:1-3"
        )]
    );
    // Two DDL, an INSERT (3), an UPDATE (4), a DELETE (5): the set grows by one each time.
    let uuid = "93e95066-a2f4-11ec-9b69-9657f0ae95e2";
    assert_eq!(
        checkpoints(&fixture("mysql-enum-string-set.000001")),
        vec![
            pair("mysql-enum-string-set.000001:1560", &format!("{uuid}:1-3")),
            pair("mysql-enum-string-set.000001:2659", &format!("{uuid}:1-4")),
            pair("mysql-enum-string-set.000001:3331", &format!("{uuid}:1-5")),
        ]
    );
    // Anonymous transactions (gtid_mode OFF) add nothing: the set stays what the
    // PREVIOUS_GTIDS event at the file start says came before.
    assert_eq!(
        checkpoints(&fixture("transaction_compression.000001")),
        vec![pair(
            "transaction_compression.000001:431",
            "357df524-4139-11ee-9979-b033ee13919e:1"
        )]
    );
    // No GTIDs at all: nothing to record.
    assert!(checkpoints(&fixture("json.binlog.000001"))
        .iter()
        .all(|(_, g)| g.is_none()));
}

#[test]
fn mariadb_commits_carry_the_domain_state() {
    // GTID_LIST [] at the start, then GTIDs 0-1-1 and 0-1-2 (domain 0, server 1).
    assert_eq!(
        checkpoints(&fixture("mariadb-bin.000001")),
        vec![
            pair("mariadb-bin.000001:702", "0-1-1"),
            pair("mariadb-bin.000001:1074", "0-1-2"),
        ]
    );
}

const GTID_EVENT: u8 = 33;
const GTID_TAGGED_EVENT: u8 = 42;

/// `bytes` (a binlog with CRC32 checksums) with every GTID event replaced by a tagged
/// one (MySQL 8.4, `uuid:tag:gno`); sizes, end positions and checksums are rewritten.
fn with_tagged_gtids(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes[..4].to_vec();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().expect("4 bytes")) as usize;
        let event = &bytes[at..at + size];
        let (kind, mut body) = (event[4], event[19..size - 4].to_vec());
        if at == 4 {
            // The format description stays as it is: its checksum is computed with the
            // in-use flag cleared, and nothing before it moves.
            out.extend_from_slice(event);
            at += size;
            continue;
        }
        let mut header = event[..19].to_vec();
        if kind == GTID_EVENT {
            let sid: [u8; 16] = body[1..17].try_into().expect("sid");
            let gno = u64::from_le_bytes(body[17..25].try_into().expect("gno"));
            let tagged = GtidEvent::new_tagged(sid, Tag::new(tag.to_string()).expect("tag"), gno);
            body.clear();
            tagged.serialize(&mut body);
            header[4] = GTID_TAGGED_EVENT;
        }
        let new_size = (19 + body.len() + 4) as u32;
        let end = (out.len() as u32) + new_size;
        header[9..13].copy_from_slice(&new_size.to_le_bytes());
        header[13..17].copy_from_slice(&end.to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        at += size;
    }
    out
}

#[test]
fn mysql_tagged_gtids_are_separate_from_untagged_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tagged-bit.000001");
    let original = std::fs::read(fixture("mysql_type_bit.000001")).expect("fixture");
    std::fs::write(&path, with_tagged_gtids(&original, "blue")).expect("write");
    let lines = checkpoints(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0].1.as_deref(),
        Some("fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:blue:1-3"),
        "a tagged GTID is `uuid:tag:gno` (MySQL 8.4)"
    );
}

/// What a MySQL start at a file position computes (MySQL has no BINLOG_GTID_POS).
fn gtids_at(file: &str, pos: u64) -> Option<String> {
    let mut reader =
        cdc_cache::source::file::BinlogFileReader::open(&fixture(file)).expect("open fixture");
    let mut scan = cdc_cache::source::GtidScan::new(pos);
    while let Some(event) = reader.next_event().expect("event") {
        if let Some(found) = scan.feed(&event).expect("GTID events parse") {
            return Some(found.to_string());
        }
    }
    None
}

#[test]
fn the_gtid_set_at_a_position_is_read_from_the_file_start() {
    let uuid = "93e95066-a2f4-11ec-9b69-9657f0ae95e2";
    let file = "mysql-enum-string-set.000001";
    // The same positions `replay` reports as the commits of transactions 3, 4 and 5.
    assert_eq!(gtids_at(file, 1560), Some(format!("{uuid}:1-3")));
    assert_eq!(gtids_at(file, 2659), Some(format!("{uuid}:1-4")));
    assert_eq!(gtids_at(file, 3331), Some(format!("{uuid}:1-5")));
    // At the file start: what PREVIOUS_GTIDS says came before (nothing here; one
    // transaction in the compression recording).
    assert_eq!(gtids_at(file, 4), Some(String::new()));
    assert_eq!(
        gtids_at("transaction_compression.000001", 4),
        Some("357df524-4139-11ee-9979-b033ee13919e:1".into())
    );
}
