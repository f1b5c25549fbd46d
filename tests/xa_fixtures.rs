//! MySQL's form of XA transactions, which no server here can write: `XA START` is a
//! statement (MariaDB puts it in its GTID event), and `XA COMMIT … ONE PHASE` ends in an
//! `XA_PREPARE` event flagged one-phase (MariaDB logs an ordinary transaction). A recorded
//! MySQL 8.0 file is rewritten into both forms, its INSERT transaction turned into an XA
//! one, and `replay` must read each phase in place. (The real-server tests in
//! `xa_transactions.rs` cover MariaDB's form end to end.)

mod support;

use std::path::Path;

const QUERY_EVENT: u8 = 2;
const XID_EVENT: u8 = 16;
const GTID_EVENT: u8 = 33;
const XA_PREPARE_EVENT: u8 = 38;

const XID: &str = "X'7831',X'',1";

/// One event: its type, its header (19 bytes) and its body (without checksum).
struct Event {
    kind: u8,
    header: Vec<u8>,
    body: Vec<u8>,
}

fn events(bytes: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().expect("4 bytes")) as usize;
        let event = &bytes[at..at + size];
        out.push(Event {
            kind: event[4],
            header: event[..19].to_vec(),
            body: event[19..size - 4].to_vec(),
        });
        at += size;
    }
    out
}

/// A binlog file of `events`, sizes, end positions and CRC32 checksums written anew. The
/// first (the format description) is kept byte for byte: its checksum is computed with
/// the in-use flag cleared.
fn file(original: &[u8], events: &[Event]) -> Vec<u8> {
    let fde_size = u32::from_le_bytes(original[13..17].try_into().expect("4 bytes")) as usize;
    let mut out = original[..4 + fde_size].to_vec();
    for event in &events[1..] {
        let mut header = event.header.clone();
        header[4] = event.kind;
        let size = (19 + event.body.len() + 4) as u32;
        let end = out.len() as u32 + size;
        header[9..13].copy_from_slice(&size.to_le_bytes());
        header[13..17].copy_from_slice(&end.to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&header);
        out.extend_from_slice(&event.body);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

/// A copy of the `BEGIN` statement event saying `text` instead (the statement is the
/// body's tail).
fn statement(begin: &Event, text: &str) -> Event {
    let mut body = begin.body[..begin.body.len() - "BEGIN".len()].to_vec();
    body.extend_from_slice(text.as_bytes());
    Event {
        kind: QUERY_EVENT,
        header: begin.header.clone(),
        body,
    }
}

/// The recorded file with its one INSERT transaction made an XA transaction: prepared and
/// then committed in a second group, or committed in one phase.
fn as_xa(original: &[u8], one_phase: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut begin = None;
    let mut last_gtid = None;
    for event in events(original) {
        match event.kind {
            QUERY_EVENT if event.body.ends_with(b"BEGIN") => {
                out.push(statement(&event, &format!("XA START {XID}")));
                begin = Some(event);
            }
            XID_EVENT => {
                let begin = begin.as_ref().expect("BEGIN before the XID");
                out.push(statement(begin, &format!("XA END {XID}")));
                let mut body = vec![u8::from(one_phase)];
                body.extend(1u32.to_le_bytes());
                body.extend(2u32.to_le_bytes());
                body.extend(0u32.to_le_bytes());
                body.extend(b"x1");
                out.push(Event {
                    kind: XA_PREPARE_EVENT,
                    header: event.header.clone(),
                    body,
                });
                if !one_phase {
                    let mut gtid: Event = last_gtid.take().expect("a GTID before");
                    let gno = u64::from_le_bytes(gtid.body[17..25].try_into().expect("gno"));
                    gtid.body[17..25].copy_from_slice(&(gno + 1).to_le_bytes());
                    out.push(gtid);
                    out.push(statement(begin, &format!("XA COMMIT {XID}")));
                }
            }
            GTID_EVENT => {
                last_gtid = Some(Event {
                    kind: event.kind,
                    header: event.header.clone(),
                    body: event.body.clone(),
                });
                out.push(event);
            }
            _ => out.push(event),
        }
    }
    file(original, &out)
}

/// What `replay` prints for the rewritten file: each line's kind (a row change's, or the
/// XA phase with its xid) and the GTIDs it carries.
fn replayed(bytes: &[u8]) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("xa.000001");
    std::fs::write(&path, bytes).expect("write");
    support::replay_lines(&path)
        .iter()
        .map(|l| {
            let what = match (l["kind"].as_str(), l["xa"].as_str()) {
                (Some(kind), _) => kind.to_string(),
                (None, Some(phase)) => format!("{phase} {}", l["xid"].as_str().unwrap_or("?")),
                _ => panic!("unexpected line {l}"),
            };
            (what, l["gtid"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn mysql_xa_transactions_replay_in_both_forms() {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mysql-binlogs/mysql_type_bit.000001");
    let original = std::fs::read(recorded).expect("fixture");
    let uuid = "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a";
    let owned = |what: &str, gtid: &str| (what.to_string(), format!("{uuid}:{gtid}"));

    // Prepared by the third transaction, committed by a fourth.
    assert_eq!(
        replayed(&as_xa(&original, false)),
        [
            owned("insert", "1-3"),
            owned(&format!("prepare {XID}"), "1-3"),
            owned(&format!("commit {XID}"), "1-4"),
        ]
    );
    // Committed in one phase: one group, one transaction.
    assert_eq!(
        replayed(&as_xa(&original, true)),
        [
            owned("insert", "1-3"),
            owned(&format!("commit {XID}"), "1-3")
        ]
    );
}
