//! MySQL's form of XA transactions, which no server here can write: `XA START` is a
//! statement (MariaDB puts it in its GTID event), and `XA COMMIT … ONE PHASE` ends in an
//! `XA_PREPARE` event flagged one-phase (MariaDB logs an ordinary transaction). A recorded
//! MySQL 8.0 file is rewritten into both forms, its INSERT transaction turned into an XA
//! one, and `replay` must read each phase in place; the one-phase commit's items are fed
//! to the applier against a real Redis. (The real-server tests in `xa_transactions.rs`
//! cover MariaDB's form end to end.)

mod support;

use std::path::Path;

use redis::Commands;
use support::CHECKPOINT_KEY;

const RULES: &str = "[[rules]]\ntable = \"shop.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

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

/// MySQL logs `XA COMMIT … ONE PHASE` as one group: `XA START`, the rows, and an
/// `XA_PREPARE` event flagged one-phase, which the source hands over as `XaEnd`. MariaDB
/// logs it as an ordinary transaction, so the items are fed to the applier here, against
/// a real Redis: fitting one step, and split over several (part of it stashed first).
#[test]
fn a_one_phase_xa_commit_applies_its_rows_whether_split_or_not() {
    use cdc_cache::applier::Applier;
    use cdc_cache::checkpoint::{Position, ServerIdentity};
    use cdc_cache::chunk::Chunk;
    use cdc_cache::config::Config;
    use cdc_cache::mapper::{rules::RuleSet, Mapper};
    use cdc_cache::metrics::Metrics;
    use cdc_cache::sink::{RedisSink, StepLimits};
    use cdc_cache::source::{Commit, SourceItem};
    use cdc_cache::value::{ChangeKind, SqlValue, TableInfo};
    use cdc_cache::xa::Xid;
    use std::sync::Arc;

    let redis = support::Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let text = format!(
        "[source]\nurl = \"mysql://x@127.0.0.1/\"\nserver_id = 9\n[redis]\nurl = \"{}\"\n{RULES}",
        redis.url()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let config = Config::load(&path).expect("config");
    let rules = RuleSet::compile(&config.rules).expect("rules");
    let table = Arc::new(TableInfo::new(
        "shop".into(),
        "kv".into(),
        vec!["id".into(), "v".into()],
    ));
    let xid = Xid::parse("X'6f6e65',X'',1").expect("xid");
    let mut end = 100;
    for (max_ops, first) in [(50, 1), (3, 101)] {
        let mut chunk = Chunk::default();
        chunk.begin_event(table.clone(), ChangeKind::Insert, Position::new("b.1", end));
        for id in first..first + 10 {
            chunk
                .push_row::<()>(false, true, |_, values| {
                    values.extend([Some(SqlValue::Int(id)), Some(SqlValue::Text("one".into()))]);
                    Ok(())
                })
                .expect("row");
        }
        // The last row changes the first again: applied out of order, it would lose.
        chunk.begin_event(
            table.clone(),
            ChangeKind::Update,
            Position::new("b.1", end + 50),
        );
        chunk
            .push_row::<()>(true, true, |side, values| {
                let v = ["one", "last"][side as usize];
                values.extend([Some(SqlValue::Int(first)), Some(SqlValue::Text(v.into()))]);
                Ok(())
            })
            .expect("row");
        end += 100;
        let commit = Commit {
            position: Position::new("b.1", end),
            time: 0,
            transaction: true,
            gtid: None,
        };
        let checkpoint = rt.block_on(async {
            let mut sink = RedisSink::connect(&config.redis, CHECKPOINT_KEY)
                .await
                .expect("connect");
            sink.load_checkpoint().await.expect("checkpoint");
            let server = ServerIdentity {
                server_id: 1,
                uuid_or_host: "db".into(),
            };
            let metrics = Arc::new(Metrics::new(1));
            let mapper = Mapper::new(rules.clone());
            let limits = StepLimits {
                ops: max_ops,
                bytes: usize::MAX,
            };
            let mut applier = Applier::new(mapper, sink, limits, server, None, metrics, None);
            for item in [
                SourceItem::XaStart(xid.clone()),
                SourceItem::Changes(chunk),
                SourceItem::XaEnd {
                    xid: xid.clone(),
                    committed: true,
                    commit,
                },
            ] {
                applier.handle(item).await.expect("handled");
            }
            applier.flush().await.expect("flush");
            applier.settle().await.expect("settle");
            applier.applied().map(|c| c.position.clone())
        });
        assert_eq!(
            checkpoint,
            Some(Position::new("b.1", end)),
            "max_ops {max_ops}"
        );
        let mut c = redis.conn();
        let written = (first..first + 10)
            .filter(|id| c.exists::<_, bool>(format!("kv:{id}")).expect("EXISTS"))
            .count();
        assert_eq!(written, 10, "max_ops {max_ops}");
        let last: String = c.get(format!("kv:{first}")).expect("GET");
        assert_eq!(
            last,
            format!(r#"{{"id":{first},"v":"last"}}"#),
            "max_ops {max_ops}"
        );
        let stashes: Vec<String> = c.keys(format!("{CHECKPOINT_KEY}:xa:*")).expect("KEYS");
        assert!(stashes.is_empty(), "max_ops {max_ops}: {stashes:?}");
    }
}
