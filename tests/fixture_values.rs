//! Every row of every recorded binlog in `tests/fixtures/mysql-binlogs/`, decoded by
//! `replay`, against values written here by hand. The data is what each recording's
//! statements wrote (their DDL is in the files' QUERY events, quoted per fixture); the
//! form of each value follows the MySQL type documentation and DESIGN.md's value rules
//! ("what a SELECT over the text protocol shows"):
//! - integers as JSON integers, UNSIGNED included (`INT UNSIGNED`, `BIGINT UNSIGNED`);
//!   BIT(n) as the integer of its bits;
//! - CHAR/VARCHAR/TEXT as strings (CHAR without its pad spaces); ENUM as its label; SET as
//!   its labels, comma-joined in definition order;
//! - TIME as `[-]h:mm:ss` with hours beyond 24 (TIME ranges over ±838:59:59);
//! - BLOB and VECTOR as base64 of their bytes; a VECTOR is its float32 values, little
//!   endian, one after the other;
//! - JSON as the document itself, with MySQL's opaque scalars as MySQL prints them:
//!   DATE `"2012-03-18"`, DATETIME and TIME with 6 fraction digits, DECIMAL as a number
//!   with its scale (`9.00`), other opaque types as `"base64:type<N>:<data>"`;
//! - without column names in the row metadata (`binlog_row_metadata=MINIMAL`) a column
//!   is `@<n>`; a column absent from a row image (MINIMAL row image) is absent here.

mod support;

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

/// (database, table, kind, before, after) of each row change line `replay` prints for
/// `file` (not the lines of statements that emptied tables).
fn decoded(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mysql-binlogs")
        .join(file);
    support::replay_lines(&path)
        .iter()
        .filter(|v| v["kind"] != "emptied")
        .map(|v| {
            json!([
                v["database"],
                v["table"],
                v["kind"],
                v["before"],
                v["after"]
            ])
        })
        .collect()
}

fn insert(db: &str, table: &str, after: Value) -> Value {
    json!([db, table, "insert", null, after])
}

fn update(db: &str, table: &str, before: Value, after: Value) -> Value {
    json!([db, table, "update", before, after])
}

fn delete(db: &str, table: &str, before: Value) -> Value {
    json!([db, table, "delete", before, null])
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A VECTOR's bytes: float32 little-endian, in order.
fn vector(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    b64(&bytes)
}

fn check(file: &str, expected: Vec<Value>) {
    let got = decoded(file);
    assert_eq!(got.len(), expected.len(), "{file}: row count; got {got:#?}");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "{file}: row {i}");
    }
}

#[test]
fn bit_columns() {
    // CREATE TABLE foo(a BIT(3), b TEXT, c BIT(8)); one row: b'100', 'foo', b'00100000'.
    check(
        "mysql_type_bit.000001",
        vec![insert("mysql", "foo", json!({"a": 4, "b": "foo", "c": 32}))],
    );
}

#[test]
fn invisible_columns_are_in_the_row_images() {
    // CREATE TABLE t1 (f1 INT UNSIGNED INVISIBLE, f2 INT UNSIGNED INVISIBLE, f3 INT,
    //   f4 TEXT, f5 BLOB, f6 BIGINT UNSIGNED INVISIBLE). Invisible columns are hidden
    // from SELECT * but are part of the table, and of every row image.
    let second =
        json!({"f1": null, "f2": null, "f3": -33, "f4": "44", "f5": b64(b"U"), "f6": null});
    check(
        "binlog-invisible-columns.000001",
        vec![
            insert(
                "mysql",
                "t1",
                json!({"f1": 1, "f2": 2, "f3": -3, "f4": "4", "f5": b64(&[5]), "f6": 6_000_000_000u64}),
            ),
            insert("mysql", "t1", second.clone()),
            update(
                "mysql",
                "t1",
                second,
                json!({"f1": 111, "f2": 222, "f3": -333, "f4": "444", "f5": b64(b"U"), "f6": null}),
            ),
        ],
    );
}

#[test]
fn enum_set_and_long_strings() {
    // CREATE TABLE t(f1 CHAR(128), f2 VARCHAR(300), f3 ENUM('var1', 'variant2', 'foo'),
    //   f4 SET('one', 'two', 'three', 'four'), f5 TEXT)
    let digits = "0123456789";
    let f1 = digits.repeat(10);
    let s129 = format!("{}012345678", digits.repeat(12));
    let long = format!("{}{}", s129.repeat(2), digits.repeat(4));
    let first = json!({"f1": f1, "f2": long, "f3": "var1", "f4": "one,three", "f5": digits});
    let second =
        json!({"f1": "field1", "f2": "field_2", "f3": "variant2", "f4": "two,four", "f5": long});
    check(
        "mysql-enum-string-set.000001",
        vec![
            insert("mysql", "t", first.clone()),
            update("mysql", "t", first, second.clone()),
            delete("mysql", "t", second),
        ],
    );
}

#[test]
fn negative_time() {
    // A TIME column (no names: MINIMAL metadata), value -507:48:27.
    check(
        "time_issue.000001",
        vec![insert("noria", "t", json!({"@1": "-507:48:27"}))],
    );
}

#[test]
fn minimal_metadata_and_minimal_image() {
    // Columns INT, BLOB, CHAR, INT, INT UNSIGNED (no names logged); the INSERT's row
    // image holds columns 1, 3 and 5 only. Signedness is part of MINIMAL metadata.
    check(
        "minimal_row_metadata.000001",
        vec![insert(
            "noria",
            "t1",
            json!({"@1": 1, "@3": "a", "@5": 3_230_202_323u64}),
        )],
    );
}

#[test]
fn compressed_transaction() {
    // binlog_transaction_compression=ON: the row is inside a zstd TRANSACTION_PAYLOAD.
    check(
        "transaction_compression.000001",
        vec![insert("test", "tb1", json!({"@1": 1}))],
    );
}

#[test]
fn vectors() {
    // CREATE TABLE foo(id SERIAL, vector_column VECTOR(3) NOT NULL)
    // CREATE TABLE bar(id SERIAL, vector_column VECTOR(2) NOT NULL, foo TEXT,
    //   vector_column2 VECTOR(4) NOT NULL); the same rows twice (the database is
    // dropped and created again in between), then a DELETE and an INSERT.
    let foo =
        |id: u64, v: &[f32]| insert("dtb", "foo", json!({"id": id, "vector_column": vector(v)}));
    let bar_row = |id: u64, v: &[f32], text: Value, v2: &[f32]| json!({"id": id, "vector_column": vector(v), "foo": text, "vector_column2": vector(v2)});
    let bar1 = bar_row(1, &[1.1, 2.2], Value::Null, &[1.1, 2.2, 3.3, 4.4]);
    let bar2 = bar_row(2, &[1.01, -1.01], json!("bar"), &[42.0, 43.0, 44.0, 45.0]);
    let round = vec![
        foo(1, &[1.1, 2.2, 3.3]),
        foo(2, &[1.0, -1.0, 0.0]),
        insert("dtb", "bar", bar1),
        insert("dtb", "bar", bar2.clone()),
    ];
    let mut expected = round.clone();
    expected.extend(round);
    expected.push(delete("dtb", "bar", bar2));
    expected.push(insert(
        "dtb",
        "bar",
        bar_row(3, &[2.01, -2.01], Value::Null, &[42.1, 43.2, 44.3, 45.4]),
    ));
    check("vector.binlog", expected);
}

#[test]
fn json_opaque_scalars() {
    // create table test (a json); one document per row with an opaque scalar inside.
    let docs = [
        json!({"a": "base64:type15:VQ=="}), // a binary string: type 15 is VARCHAR
        json!({"b": "2012-03-18"}),
        json!({"c": "2012-03-18 11:30:45.000000"}),
        json!({"c": "87:31:46.654321"}),
        serde_json::from_str(r#"{"d": 123.456}"#).expect("json"),
        serde_json::from_str(r#"{"e": 9.00}"#).expect("json"),
        json!({"e": [0, 1, true, false]}),
        json!({"e": null}),
    ];
    check(
        "json-opaque.binlog",
        docs.into_iter()
            .map(|d| insert("foo", "test", json!({"a": d})))
            .collect(),
    );
}

#[test]
fn json_documents_and_partial_updates() {
    // CREATE TABLE t(id INT PRIMARY KEY AUTO_INCREMENT, json_col JSON,
    //   name VARCHAR(100) AS (json_col->>'$.name'), age INT AS (json_col->'$.age'))
    // (no names logged: @1..@4). Three people inserted one by one, then again in one
    // statement; every age raised by one with full row images; then again with
    // binlog_row_image=MINIMAL and PARTIAL_JSON: the before image is the key only, and
    // the document is a diff, which replay shows as such (there is no before document).
    let people = [("Joe", 24, 'x'), ("Sue", 32, 'y'), ("Pete", 40, 'z')];
    let row = |id: usize, (name, age, c): (&str, i64, char), plus: i64| {
        let data: String = std::iter::repeat_n(c, 10).collect();
        json!({"@1": id, "@2": {"age": age + plus, "data": data, "name": name}, "@3": name, "@4": age + plus})
    };
    let mut expected = Vec::new();
    for round in 0..2 {
        for (i, p) in people.iter().enumerate() {
            expected.push(insert("mysql", "t", row(round * 3 + i + 1, *p, 0)));
        }
    }
    for id in 1..=6 {
        let p = people[(id - 1) % 3];
        expected.push(update("mysql", "t", row(id, p, 0), row(id, p, 1)));
    }
    for id in 1..=6 {
        let (name, age, _) = people[(id - 1) % 3];
        let diff = json!([{"op": "replace", "path": "$.age", "value": age + 2}]);
        expected.push(update(
            "mysql",
            "t",
            json!({"@1": id}),
            json!({"@2": {"partial_json": diff}, "@3": name, "@4": age + 2}),
        ));
    }
    check("json.binlog.000001", expected);
}

#[test]
fn mariadb_rows_v1_and_annotations() {
    // MariaDB 10.5 with FULL metadata: toddy_test.outbox, whose `event` column is binary
    // (a BLOB holding `{"foo":1}`) and `created` a DATETIME; two INSERTs as v1 rows
    // events, each with its ANNOTATE_ROWS event.
    let row = |id: u64, created: &str| json!({"id": id, "topic": "foo", "event_type": "JSON", "event": b64(br#"{"foo":1}"#), "created": created});
    check(
        "mariadb-bin.000001",
        vec![
            insert("toddy_test", "outbox", row(62, "2022-04-20 22:18:04")),
            insert("toddy_test", "outbox", row(63, "2022-04-20 22:19:55")),
        ],
    );
}
