//! MariaDB column compression (`VARCHAR(n) COMPRESSED`, `TEXT COMPRESSED`, `BLOB
//! COMPRESSED`): the binlog carries these values as the server stores them, compressed,
//! under column types of their own. They are cached as `SELECT` shows them, in both of
//! the server's compressed forms and its short uncompressed one, with and without row
//! metadata; columns after them keep their own types and character sets.

mod support;

use std::time::Duration;

use base64::Engine as _;
use redis::Commands;
use serde_json::{json, Value};
use support::{run_cli, Daemon, Env, MariaDb};

const RULES: &str = "\
[[rules]]\ntable = \"t.docs\"\naction = \"upsert\"\nkey = \"doc:{id}\"\n\n\
[[rules]]\ntable = \"t.docs\"\naction = \"upsert\"\nkey = \"n:{id}\"\ncolumns = [\"n\"]\n";

fn cached(env: &Env, key: &str) -> Option<Value> {
    let text: Option<String> = env.redis.conn().get(key).expect("GET");
    text.map(|t| serde_json::from_str(&t).expect("cached JSON"))
}

fn applies_compressed_columns(db: MariaDb) {
    let env = Env::with_db(db);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.docs (id INT PRIMARY KEY, \
         title VARCHAR(200) CHARACTER SET utf8mb4 COMPRESSED, \
         body TEXT CHARACTER SET utf8mb4 COMPRESSED, \
         code CHAR(3) CHARACTER SET latin1, \
         data BLOB COMPRESSED, \
         n INT)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let long_body = "caf\u{e9} \u{1f600} ".repeat(300);
    let data: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
    let data_hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    env.exec(&[
        // 'hi' is too short to gain from compression: stored as it is, behind a header.
        &format!(
            "INSERT INTO t.docs VALUES (1, 'hi', '{long_body}', '\u{f1}\u{e9}', x'{data_hex}', 42)"
        ),
        "INSERT INTO t.docs VALUES (2, '', NULL, 'x', '', 7)",
        // The other compressed form: a zlib-wrapped stream instead of a raw one.
        "SET GLOBAL column_compression_zlib_wrap = ON",
    ]);
    let long_title = "ab".repeat(100);
    env.exec(&[
        &format!("INSERT INTO t.docs VALUES (3, '{long_title}', 'short', 'z', NULL, 3)"),
        "SET GLOBAL column_compression_zlib_wrap = OFF",
        "UPDATE t.docs SET body = CONCAT(body, 'more'), n = 43 WHERE id = 1",
        "DELETE FROM t.docs WHERE id = 2",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    let base64 = base64::engine::general_purpose::STANDARD.encode(&data);
    assert_eq!(
        cached(&env, "doc:1"),
        Some(
            json!({"id": 1, "title": "hi", "body": format!("{long_body}more"),
                    "code": "\u{f1}\u{e9}", "data": base64, "n": 43})
        ),
        "{}",
        daemon.log()
    );
    assert_eq!(
        cached(&env, "doc:3"),
        Some(
            json!({"id": 3, "title": long_title, "body": "short", "code": "z",
                    "data": null, "n": 3})
        )
    );
    assert_eq!(cached(&env, "doc:2"), None, "deleted");
    // A rule that reads none of them steps over the compressed values.
    assert_eq!(cached(&env, "n:1"), Some(json!({"n": 43})));
    assert_eq!(cached(&env, "n:3"), Some(json!({"n": 3})));

    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "verify:\n{out}\n{err}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn compressed_columns_are_cached_as_select_shows_them() {
    applies_compressed_columns(MariaDb::start());
}

#[test]
fn compressed_columns_without_row_metadata() {
    applies_compressed_columns(MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=MINIMAL",
    ]));
}
