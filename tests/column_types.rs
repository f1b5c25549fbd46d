//! Issue 2, item 2: for a table with every MariaDB column type, the cached JSON equals the
//! encoding (DESIGN.md, "Value encoding") of what `SELECT` returns for the same row over
//! the text protocol. The expected side is computed here from the SELECT result alone.

mod support;

use std::time::Duration;

use base64::Engine as _;
use mysql_async::consts::{ColumnFlags, ColumnType as T};
use mysql_async::Value as V;
use redis::Commands;
use serde_json::{Map, Number, Value};
use support::{mysql, run_cli, Daemon, Env};

const TABLE: &str = "CREATE TABLE t.types (
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED,
    dec1 DECIMAL(20,6), dec2 DECIMAL(5,2), f FLOAT, d DOUBLE, g GEOMETRY NULL, b BIT(10), b64 BIT(64),
    dt DATE, dtm DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL, tm TIME, tm6 TIME(6), yr YEAR,
    c CHAR(10), vc VARCHAR(50) CHARACTER SET utf8mb4, lt VARCHAR(50) CHARACTER SET latin1,
    tx TEXT, mt MEDIUMTEXT, bl BLOB, bn BINARY(4), vb VARBINARY(10),
    en ENUM('a','b','c'), st SET('x','y','z'), js JSON, tm2 TIME(2), n INT NULL
) DEFAULT CHARSET=utf8mb4";

const ROWS: &[&str] = &[
    "INSERT INTO t.types VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648,
      4294967295, -9223372036854775808, 18446744073709551615, -12345678901234.123456, 12.50,
      1.5, -2.25e100, POINT(1, 2), b'1010101010', b'1111111111111111111111111111111111111111111111111111111111111111',
      '2026-11-23', '2026-11-23 10:00:00.123456', '1000-01-01 00:00:00', '2026-11-23 10:00:00.5',
      '-838:59:59', '-12:34:56.789012', 2155,
      'char', 'emoji 😀 ünï', 'caf\u{e9} \u{20ac}5', 'long text', 'medium', x'00ff10', x'01020304', x'',
      'b', 'x,z', '{\"a\": [1, 2.5, null, true], \"b\": {\"c\": \"d\"}}', '-00:00:00.5', NULL)",
    "INSERT INTO t.types VALUES (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.1, 0.1, NULL, b'0', b'0',
      '1000-01-01', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '1970-01-01 00:00:01',
      '00:00:00', '838:59:59.000000', 1901, '', '', '', '', '', '', x'00000000', x'00',
      'a', '', '[]', '-12:34:56.78', 0)",
    "INSERT INTO t.types (id) VALUES (3)",
];

/// The DESIGN.md JSON form of one text-protocol value.
fn expected(value: &V, column: &mysql_async::Column) -> Value {
    let bytes = match value {
        V::NULL => return Value::Null,
        V::Bytes(b) => b.clone(),
        other => panic!("text protocol returned {other:?}"),
    };
    let text = || String::from_utf8(bytes.clone()).expect("utf-8 from the server");
    let binary = column.character_set() == 63;
    match column.column_type() {
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG
        | T::MYSQL_TYPE_YEAR => {
            let t = text();
            match t.parse::<i64>() {
                Ok(v) => Value::from(v),
                Err(_) => Value::from(t.parse::<u64>().expect("integer")),
            }
        }
        T::MYSQL_TYPE_FLOAT | T::MYSQL_TYPE_DOUBLE => {
            Value::Number(Number::from_f64(text().parse().expect("float")).expect("finite"))
        }
        T::MYSQL_TYPE_NEWDECIMAL => Value::String(text()),
        // Raw bytes; the query also selects `b+0`, which is what is compared.
        T::MYSQL_TYPE_BIT => Value::Null,
        _ if column.name_str() == "js" => serde_json::from_str(&text()).expect("JSON column"),
        T::MYSQL_TYPE_GEOMETRY => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
        }
        T::MYSQL_TYPE_STRING | T::MYSQL_TYPE_VAR_STRING | T::MYSQL_TYPE_BLOB
            if binary
                && !column
                    .flags()
                    .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) =>
        {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
        }
        _ => Value::String(text()),
    }
}

fn select_expected(env: &Env, id: i32) -> Value {
    let mut c = env.sql();
    mysql::query(&mut c, "SET time_zone = '+00:00'").expect("set time zone");
    // BIT reads back as raw bytes over the text protocol; `+0` gives its integer.
    let rows = mysql::rows(
        &mut c,
        &format!("SELECT *, b+0 AS b_int, b64+0 AS b64_int FROM t.types WHERE id = {id}"),
    );
    let row = rows.first().expect("row exists");
    let mut out = Map::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let name = column.name_str().into_owned();
        let value = expected(row.as_ref(i).expect("value"), column);
        match name.as_str() {
            "b" | "b64" => {}
            "b_int" => drop(out.insert("b".into(), value)),
            "b64_int" => drop(out.insert("b64".into(), value)),
            _ => drop(out.insert(name, value)),
        }
    }
    Value::Object(out)
}

fn cached(env: &Env, id: i32) -> Value {
    let text: String = env
        .redis
        .conn()
        .get(format!("types:{id}"))
        .expect("key present");
    serde_json::from_str(&text).expect("cached JSON")
}

#[test]
fn cached_json_equals_the_select_encoding_for_every_column_type() {
    let env = Env::start();
    env.exec(&["CREATE DATABASE t", TABLE]);
    let rules = "[[rules]]\ntable = \"t.types\"\naction = \"upsert\"\nkey = \"types:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(ROWS);
    env.wait_caught_up(Duration::from_secs(30));
    for id in 1..=3 {
        assert_eq!(cached(&env, id), select_expected(&env, id), "row {id}");
    }
    // The update path decodes both images the same way.
    env.exec(&[
        "UPDATE t.types SET biu = 1, tm = '-00:00:01', lt = '\u{fc}ber', st = 'x,y,z', js = '\"str\"' WHERE id = 1",
        "UPDATE t.types SET ti = 1, vc = '漢字' WHERE id = 3",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    for id in 1..=3 {
        assert_eq!(
            cached(&env, id),
            select_expected(&env, id),
            "row {id} after update"
        );
    }
    // `verify` reads the same rows over SQL and must render every type identically.
    let config = env.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "verify:\n{out}{err}");
    assert!(
        out.contains("verified 3 rows (3 keys compared), scanned 3 keys: 0 mismatches"),
        "{out}"
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn columns_no_rule_reads_are_stepped_over_exactly() {
    // Only `id` and `n` (the last column) are read: the decoder steps over every other
    // column's bytes without parsing them, in both images of each update. One byte off
    // anywhere and `n` would come out wrong or the row would fail to decode.
    let env = Env::start();
    env.exec(&["CREATE DATABASE t", TABLE]);
    let rules = "[[rules]]\ntable = \"t.types\"\naction = \"upsert\"\nkey = \"last:{id}\"\n\
                 columns = [\"n\"]\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(ROWS);
    env.exec(&["UPDATE t.types SET n = id * 1000 + 7"]);
    env.wait_caught_up(Duration::from_secs(30));
    for id in 1..=3 {
        let text: String = env
            .redis
            .conn()
            .get(format!("last:{id}"))
            .expect("key present");
        let value: Value = serde_json::from_str(&text).expect("cached JSON");
        assert_eq!(value, serde_json::json!({"n": id * 1000 + 7}), "row {id}");
    }
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// MariaDB's UUID, INET4 and INET6 are BINARY(16) / BINARY(4) in the binlog; the cache
/// holds (and keys use) the text `SELECT` shows, as `verify` reads it.
#[test]
fn mariadb_uuid_and_inet_columns_are_cached_as_select_shows_them() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.net (id INT PRIMARY KEY, u UUID, i6 INET6, i4 INET4)",
    ]);
    let rules = "[[rules]]\ntable = \"t.net\"\naction = \"upsert\"\nkey = \"net:{id}\"\n\n\
                 [[rules]]\ntable = \"t.net\"\naction = \"upsert\"\nkey = \"by-uuid:{u}\"\n\
                 columns = [\"i4\"]\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO t.net VALUES
        (1, '00000000-0000-0000-0000-000000000001', '::', '0.0.0.0'),
        (2, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '::1', '255.255.255.255'),
        (3, '6ccd780c-baba-1026-9564-5b8c656024db', '::1.2.3.4', '1.2.3.0'),
        (4, '550e8400-e29b-41d4-a716-446655440000', '2001:db8:0:0:1:0:0:1', '0.0.0.1'),
        (5, UUID(), 'fe80::', '1.0.0.0'),
        (6, '00000000-0000-0000-0000-000000000000', '::ffff:0:0', NULL),
        (7, '123e4567-e89b-12d3-a456-426655440000', '1:0:2:0:0:0:0:3', '9.9.9.9'),
        (8, NULL, '2001:0:0:1::', '10.0.0.255')"]);
    env.wait_caught_up(Duration::from_secs(30));
    let mut c = env.sql();
    let rows = mysql::rows(&mut c, "SELECT id, u, i6, i4 FROM t.net ORDER BY id");
    let mut redis = env.redis.conn();
    for row in rows {
        let text = |i: usize| -> Value {
            row.get::<Option<String>, _>(i)
                .expect("text")
                .map_or(Value::Null, Value::String)
        };
        let id: i32 = row.get(0).expect("id");
        let cached: String = redis.get(format!("net:{id}")).expect("net key");
        let cached: Value = serde_json::from_str(&cached).expect("cached JSON");
        let shown = serde_json::json!({"id": id, "u": text(1), "i6": text(2), "i4": text(3)});
        assert_eq!(cached, shown, "row {id}");
        if let Value::String(u) = text(1) {
            let by_uuid: String = redis.get(format!("by-uuid:{u}")).expect("keyed by uuid");
            assert_eq!(by_uuid, serde_json::json!({"i4": text(3)}).to_string());
        }
    }
    let config = env.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "verify:\n{out}{err}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// MariaDB numbers its NO PAD and UCA 14 collations above 255: the server's own list says
/// which character set each is, so a latin1 NO PAD column is not read as UTF-8.
#[test]
fn collations_numbered_above_255_decode_by_their_character_set() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.texts (id INT PRIMARY KEY, \
         l VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_nopad_ci, \
         u VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_uca1400_ai_ci)",
    ]);
    let rules = "[[rules]]\ntable = \"t.texts\"\naction = \"upsert\"\nkey = \"text:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO t.texts VALUES (1, 'caf\u{e9} \u{20ac}5', '\u{fc}ber \u{1f600}')"]);
    env.wait_caught_up(Duration::from_secs(30));
    let text: String = env.redis.conn().get("text:1").expect("cached");
    let cached: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        cached,
        serde_json::json!({"id": 1, "l": "caf\u{e9} \u{20ac}5", "u": "\u{fc}ber \u{1f600}"}),
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}
