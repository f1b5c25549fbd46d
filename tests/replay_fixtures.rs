//! `replay` on the recorded MySQL/MariaDB binlogs of `tests/fixtures/mysql-binlogs/`
//! (copied from `../shared/fixtures/mysql-binlogs/`, licences alongside): the row-image
//! counts its README lists, decoded values, and failure on every truncated or corrupted copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use cdc_cache::commands::replay::replay;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mysql-binlogs")
        .join(name)
}

/// (file, committed row images) exactly as the fixtures' README lists them.
const EXPECTED: &[(&str, usize)] = &[
    ("transaction_compression.000001", 1),
    ("json.binlog.000001", 18),
    ("json-opaque.binlog", 8),
    ("vector.binlog", 10),
    ("mysql-enum-string-set.000001", 3),
    ("mysql_type_bit.000001", 1),
    ("binlog-invisible-columns.000001", 3),
    ("minimal_row_metadata.000001", 1),
    ("time_issue.000001", 1),
    ("mariadb-bin.000001", 2),
];

fn run_binary(path: &Path) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-cache"))
        .arg("replay")
        .arg(path)
        .output()
        .expect("run cdc-cache");
    let lines = String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), lines, stderr)
}

#[test]
fn every_fixture_yields_its_documented_row_count() {
    for (file, count) in EXPECTED {
        let (code, lines, stderr) = run_binary(&fixture(file));
        assert_eq!(code, 0, "{file}: {stderr}");
        let (emptied, lines): (Vec<Value>, Vec<Value>) =
            lines.into_iter().partition(|l| l["kind"] == "emptied");
        assert_eq!(lines.len(), *count, "{file}");
        // The MySQL 9 recording drops its database before creating it: a statement that
        // empties tables without logging rows, named by database.
        let expected = match *file {
            "vector.binlog" => vec![json!({"database": "dtb", "table": null, "kind": "emptied",
                                           "position": "vector.binlog:1610",
                                           "statement": "drop database dtb"})],
            _ => Vec::new(),
        };
        assert_eq!(emptied, expected, "{file}");
        for line in &lines {
            for field in ["position", "database", "table", "kind", "before", "after"] {
                assert!(
                    line.get(field).is_some(),
                    "{file}: {field} missing in {line}"
                );
            }
        }
    }
}

/// The row change lines `replay` prints for a fixture.
fn rows(file: &str) -> Vec<Value> {
    let (code, mut lines, stderr) = run_binary(&fixture(file));
    assert_eq!(code, 0, "{file}: {stderr}");
    lines.retain(|l| l["kind"] != "emptied");
    lines
}

#[test]
fn decoded_values_match_what_the_server_wrote() {
    let bit = rows("mysql_type_bit.000001");
    assert_eq!(bit[0]["after"], json!({"a": 4, "b": "foo", "c": 32}));

    let time = rows("time_issue.000001");
    assert_eq!(time[0]["after"]["@1"], "-507:48:27");

    let minimal = rows("minimal_row_metadata.000001");
    // Without names, columns are @n; signedness still comes from MINIMAL metadata.
    assert_eq!(
        minimal[0]["after"],
        json!({"@1": 1, "@3": "a", "@5": 3_230_202_323u64})
    );

    let enums = rows("mysql-enum-string-set.000001");
    assert_eq!(enums[1]["after"]["f3"], "variant2");
    assert_eq!(enums[1]["after"]["f4"], "two,four");
    assert_eq!(enums[2]["kind"], "delete");

    let invisible = rows("binlog-invisible-columns.000001");
    assert_eq!(invisible[2]["kind"], "update");
    assert_eq!(invisible[2]["after"]["f1"], 111);
    assert_eq!(invisible[2]["before"]["f3"], -33);
    assert_eq!(invisible[0]["after"]["f6"], 6_000_000_000u64);

    let opaque = rows("json-opaque.binlog");
    assert_eq!(opaque[1]["after"]["a"], json!({"b": "2012-03-18"}));
    assert_eq!(
        opaque[2]["after"]["a"],
        json!({"c": "2012-03-18 11:30:45.000000"})
    );

    let vector = rows("vector.binlog");
    // VECTOR is base64 of its little-endian float32 bytes: [1.1, 2.2, 3.3].
    assert_eq!(vector[0]["after"]["vector_column"], "zcyMP83MDEAzM1NA");

    let compressed = rows("transaction_compression.000001");
    assert_eq!(compressed[0]["after"], json!({"@1": 1}));
    assert_eq!(
        compressed[0]["position"],
        "transaction_compression.000001:431"
    );

    let maria = rows("mariadb-bin.000001");
    assert_eq!(maria[1]["after"]["id"], 63);
    assert_eq!(maria[1]["after"]["topic"], "foo");
    assert_eq!(maria[1]["position"], "mariadb-bin.000001:1074");
}

#[test]
fn partial_json_updates_are_rebuilt_or_described() {
    let json_rows = rows("json.binlog.000001");
    let partial: Vec<&Value> = json_rows
        .iter()
        .filter(|r| r["after"]["@2"].get("partial_json").is_some())
        .collect();
    // The MINIMAL-image partial update lacks the before document: only the diff is known.
    assert!(!partial.is_empty());
    assert_eq!(
        partial[0]["after"]["@2"]["partial_json"][0],
        json!({"op": "replace", "path": "$.age", "value": partial[0]["after"]["@4"]})
    );
    // Full-image updates carry whole documents.
    let full = json_rows
        .iter()
        .find(|r| r["kind"] == "update")
        .expect("an update");
    assert!(full["after"]["@2"].is_object() && full["after"]["@2"].get("partial_json").is_none());
}

/// Offsets where events end, read from the event headers.
fn event_ends(bytes: &[u8]) -> Vec<(usize, u8)> {
    let mut ends = Vec::new();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().expect("4 bytes")) as usize;
        ends.push((at + size, bytes[at + 4]));
        at += size;
    }
    ends
}

fn replay_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write copy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut sink = Vec::new();
    rt.block_on(replay(&[path], None, &mut sink))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn truncated_copies_never_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Rows events (v1, v2, partial) and table maps; a compressed payload holds its commit.
    const ROWS_EVENTS: [u8; 8] = [23, 24, 25, 30, 31, 32, 39, 19];
    for (file, _) in EXPECTED {
        let bytes = std::fs::read(fixture(file)).expect("read fixture");
        let ends = event_ends(&bytes);
        let boundaries: Vec<usize> = ends.iter().map(|(e, _)| *e).collect();
        // Every cut inside an event, plus every cut right after a table map or rows
        // event (inside a transaction), must fail.
        let mut cuts: Vec<usize> = (1..bytes.len())
            .filter(|c| !boundaries.contains(c) && *c != 4)
            .collect();
        cuts.extend(
            ends.iter()
                .filter(|(e, t)| ROWS_EVENTS.contains(t) && *e < bytes.len())
                .map(|(e, _)| *e),
        );
        for cut in cuts {
            let result = replay_bytes(dir.path(), file, &bytes[..cut]);
            assert!(
                result.is_err(),
                "{file} cut at {cut} of {} replayed without error",
                bytes.len()
            );
        }
    }
}

#[test]
fn corrupted_copies_never_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, _) in EXPECTED {
        let bytes = std::fs::read(fixture(file)).expect("read fixture");
        for at in (0..bytes.len()).step_by(3) {
            let mut copy = bytes.clone();
            copy[at] ^= 0x5a;
            let result = replay_bytes(dir.path(), file, &copy);
            assert!(
                result.is_err(),
                "{file} with byte {at} flipped replayed without error"
            );
        }
    }
}

#[test]
fn binary_exits_non_zero_on_a_truncated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(fixture("mysql_type_bit.000001")).expect("read fixture");
    let path = dir.path().join("cut.000001");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
    let (code, _, stderr) = run_binary(&path);
    assert_ne!(code, 0);
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn a_wrong_checksum_stops_replay_with_the_events_position() {
    let name = "mariadb-bin.000001";
    let bytes = std::fs::read(fixture(name)).expect("read fixture");
    // The first rows event: flip a byte in its body (not the header, not the checksum).
    let ends = event_ends(&bytes);
    let (end, _) = *ends
        .iter()
        .find(|(_, t)| [23u8, 30].contains(t))
        .expect("a write rows event");
    let mut copy = bytes.clone();
    copy[end - 6] ^= 0x01;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, &copy).expect("write copy");
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-cache"))
        .arg("replay")
        .arg(&path)
        .output()
        .expect("run replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains(&format!("{name}:{end}")),
        "names the checksum and the position {name}:{end}: {stderr}"
    );
}

#[test]
fn an_upsert_rule_on_a_partial_json_update_without_the_document_fails_closed() {
    // json.binlog.000001 ends with PARTIAL_JSON updates logged with a MINIMAL row image:
    // the full document is not in the binlog, so an upsert cannot be built and must stop,
    // naming the server setting that fixes it. The full-image updates before it apply.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rules.toml");
    std::fs::write(
        &config,
        "[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nserver_id = 1\n\
         [redis]\nurl = \"redis://127.0.0.1:1/\"\n\
         [[rules]]\ntable = \"mysql.t\"\naction = \"upsert\"\nkey = \"t:{@1}\"\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-cache"))
        .args(["replay", "--config"])
        .arg(&config)
        .arg(fixture("json.binlog.000001"))
        .output()
        .expect("run cdc-cache");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("binlog_row_image=FULL"), "{stderr}");
    assert!(stderr.contains("json.binlog.000001:3980"), "{stderr}");
    // 6 inserts and 6 full-image updates were applied before the stop.
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
}
