//! Schema changes while a writer keeps committing: ADD, DROP, RENAME and MODIFY COLUMN and
//! RENAME TABLE. After each change a marker row is written and its cached value must equal
//! the row as the database holds it; at the end no cached value differs from its row
//! (`verify --allow-missing`), and once every row is touched `verify` is clean. Run with and without `binlog_row_metadata=FULL` (without it, names come from
//! `information_schema`, re-read after every DDL event).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::Duration;

use redis::Commands;
use serde_json::{Map, Value};
use support::{mysql, run_cli, Daemon, Env, MariaDb};

const RULES: &str = "[[rules]]\ntable = \"t.kv*\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

/// The row as the daemon's JSON encoding renders these simple types.
fn row_json(env: &Env, table: &str, id: i64) -> Value {
    let rows = mysql::rows(
        &mut env.sql(),
        &format!("SELECT * FROM t.{table} WHERE id = {id}"),
    );
    let row = rows.first().expect("marker row");
    let mut out = Map::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let value = match row.as_ref(i).expect("value") {
            mysql_async::Value::NULL => Value::Null,
            mysql_async::Value::Bytes(b) => {
                let text = String::from_utf8_lossy(b).into_owned();
                match text.parse::<i64>() {
                    Ok(n) if !column.column_type().is_character_type() => Value::from(n),
                    _ => Value::String(text),
                }
            }
            other => panic!("text protocol returned {other:?}"),
        };
        out.insert(column.name_str().into_owned(), value);
    }
    Value::Object(out)
}

fn cached(env: &Env, id: i64) -> Value {
    let text: String = env.redis.conn().get(format!("kv:{id}")).expect("cached");
    serde_json::from_str(&text).expect("JSON")
}

fn schema_changes_under_load(metadata: &str) {
    let option = format!("--binlog-row-metadata={metadata}");
    let env = Env::with_db(MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        &option,
    ]));
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT, a INT, b VARCHAR(20))",
        "INSERT INTO t.kv SELECT seq, 0, seq, 'b' FROM t.seq_1_to_100",
    ]);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    let table = Arc::new(Mutex::new("kv".to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, table, stop) = (env.db.root_url(), table.clone(), stop.clone());
        thread::spawn(move || {
            let mut c = mysql::conn(&url).expect("writer");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = table.lock().expect("table name").clone();
                // Only `id` and `v` are used: the DDL leaves them alone. A statement racing
                // a RENAME TABLE may fail; that is the writer's problem, not the daemon's.
                let sql = format!("UPDATE t.{name} SET v = {n} WHERE id = {}", n % 100 + 1);
                let _ = mysql::query(&mut c, &sql);
                sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let steps: &[(&str, &str)] = &[
        (
            "ADD COLUMN",
            "ALTER TABLE t.kv ADD COLUMN x INT DEFAULT 7 AFTER v",
        ),
        ("DROP COLUMN", "ALTER TABLE t.kv DROP COLUMN a"),
        ("RENAME COLUMN", "ALTER TABLE t.kv RENAME COLUMN b TO c"),
        (
            "MODIFY COLUMN",
            "ALTER TABLE t.kv MODIFY COLUMN x VARCHAR(10)",
        ),
        ("RENAME TABLE", "RENAME TABLE t.kv TO t.kv2"),
    ];
    for (i, (what, ddl)) in steps.iter().enumerate() {
        sleep(Duration::from_millis(300));
        env.exec(&[ddl]);
        if ddl.starts_with("RENAME TABLE") {
            *table.lock().expect("table name") = "kv2".into();
        }
        let name = table.lock().expect("table name").clone();
        let marker = 1000 + i as i64;
        env.exec(&[&format!(
            "INSERT INTO t.{name} (id, v) VALUES ({marker}, {marker})"
        )]);
        env.wait_caught_up(Duration::from_secs(30));
        assert!(daemon.is_running(), "after {what}:\n{}", daemon.log());
        assert_eq!(
            cached(&env, marker),
            row_json(&env, &name, marker),
            "after {what}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    env.wait_caught_up(Duration::from_secs(30));
    // A column change clears the values that hold the old columns, so whatever is still
    // cached equals its row; the rows untouched since are missing.
    let config = env.dir.path().join("config.toml");
    let config = config.to_str().expect("utf-8");
    let (code, out, err) = run_cli(&["verify", "--config", config, "--allow-missing"]);
    assert_eq!(code, 0, "no value keeps an old shape:\n{out}{err}");
    // Touch every row: then every row is cached, as it is.
    env.exec(&["UPDATE t.kv2 SET v = v + 1"]);
    env.wait_caught_up(Duration::from_secs(30));
    let (code, out, err) = run_cli(&["verify", "--config", config]);
    println!(
        "{metadata} metadata: {writes} writes across 5 schema changes; verify: {}",
        out.lines().last().unwrap_or_default()
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn schema_changes_under_load_with_full_row_metadata() {
    schema_changes_under_load("FULL");
}

#[test]
fn schema_changes_under_load_without_row_metadata() {
    schema_changes_under_load("MINIMAL");
}
