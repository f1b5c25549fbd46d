//! Issue 2, item 1: row changes on several tables produce exactly the configured keys and
//! values (json and hash), against a private MariaDB and Redis.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};
use support::{Daemon, Env};

const RULES: &str = r#"
[[rules]]
table = "shop.users"
action = "upsert"
key = "user:{id}"
columns = ["id", "name", "email"]
ttl_secs = 3600

[[rules]]
table = "shop.users"
action = "delete"
key = "user:by-email:{email}"

[[rules]]
table = "shop.orders"
action = "upsert"
format = "hash"
key = "order:{id}"

[[rules]]
table = "shop.prod_*"
action = "upsert"
key = "prod:{sku}"
"#;

fn json_at(env: &Env, key: &str) -> Option<Value> {
    let text: Option<String> = env.redis.conn().get(key).expect("GET");
    text.map(|t| serde_json::from_str(&t).expect("cached JSON"))
}

#[test]
fn rules_produce_exactly_the_configured_keys_and_values() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(80), secret VARCHAR(20))",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, user_id INT, total DECIMAL(10,2), note TEXT)",
        "CREATE TABLE shop.prod_a (sku VARCHAR(10) PRIMARY KEY, price INT)",
        "CREATE TABLE shop.prod_b (sku VARCHAR(10) PRIMARY KEY, price INT)",
        "CREATE TABLE shop.audit (id INT PRIMARY KEY, what TEXT)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    // Pre-seed the secondary key that the first insert must invalidate.
    let _: () = env
        .redis
        .conn()
        .set("user:by-email:ann@x.org", "stale")
        .expect("SET");

    env.exec(&[
        "INSERT INTO shop.users VALUES (1, 'Ann', 'ann@x.org', 's1'), (2, 'Bob', 'bob@x.org', 's2')",
        "INSERT INTO shop.orders VALUES (10, 1, 12.50, NULL)",
        "INSERT INTO shop.prod_a VALUES ('A1', 5)",
        "INSERT INTO shop.prod_b VALUES ('B1', 7)",
        "INSERT INTO shop.audit VALUES (1, 'ignored')",
    ]);
    env.wait_caught_up(Duration::from_secs(30));

    assert_eq!(
        json_at(&env, "user:1"),
        Some(json!({"id": 1, "name": "Ann", "email": "ann@x.org"}))
    );
    assert_eq!(
        json_at(&env, "user:2"),
        Some(json!({"id": 2, "name": "Bob", "email": "bob@x.org"}))
    );
    let ttl: i64 = env.redis.conn().pttl("user:1").expect("PTTL");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "ttl {ttl}");
    let no_ttl: i64 = env.redis.conn().pttl("prod:A1").expect("PTTL");
    assert_eq!(no_ttl, -1);
    let order: HashMap<String, String> = env.redis.conn().hgetall("order:10").expect("HGETALL");
    // NULL columns are absent from hashes.
    assert_eq!(
        order,
        HashMap::from([
            ("id".into(), "10".into()),
            ("user_id".into(), "1".into()),
            ("total".into(), "12.50".into())
        ])
    );
    assert_eq!(
        json_at(&env, "prod:A1"),
        Some(json!({"sku": "A1", "price": 5}))
    );
    assert_eq!(
        json_at(&env, "prod:B1"),
        Some(json!({"sku": "B1", "price": 7}))
    );
    assert_eq!(
        env.cache_keys(),
        ["order:10", "prod:A1", "prod:B1", "user:1", "user:2"],
        "the delete rule removed the stale key; the audit table wrote nothing"
    );

    // A key column change: the old key goes, the new one appears.
    let _: () = env
        .redis
        .conn()
        .set("user:by-email:ann@new.org", "stale")
        .expect("SET");
    let _: () = env
        .redis
        .conn()
        .set("user:by-email:bob@x.org", "stale")
        .expect("SET");
    env.exec(&[
        "UPDATE shop.users SET id = 3 WHERE id = 1",
        "UPDATE shop.users SET email = 'ann@new.org' WHERE id = 3",
        "UPDATE shop.orders SET total = 99.99, note = 'gift' WHERE id = 10",
        "DELETE FROM shop.users WHERE id = 2",
        "DELETE FROM shop.prod_b",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(json_at(&env, "user:1"), None);
    assert_eq!(
        json_at(&env, "user:3"),
        Some(json!({"id": 3, "name": "Ann", "email": "ann@new.org"}))
    );
    let order: HashMap<String, String> = env.redis.conn().hgetall("order:10").expect("HGETALL");
    assert_eq!(order.get("total").map(String::as_str), Some("99.99"));
    assert_eq!(order.get("note").map(String::as_str), Some("gift"));
    assert_eq!(env.cache_keys(), ["order:10", "prod:A1", "user:3"]);

    // SIGTERM finishes the current step and exits 0.
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn a_rolled_back_transaction_leaves_redis_untouched() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(80), secret VARCHAR(20))",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, user_id INT, total DECIMAL(10,2), note TEXT)",
    ]);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    let mut c = env.sql();
    for s in [
        "BEGIN",
        "INSERT INTO shop.users VALUES (7, 'Gone', 'g@x.org', '')",
        "ROLLBACK",
    ] {
        support::mysql::query(&mut c, s).expect(s);
    }
    env.exec(&["INSERT INTO shop.orders VALUES (1, 1, 1.00, NULL)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["order:1"]);
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn without_row_metadata_names_come_from_information_schema_and_follow_ddl() {
    let db = support::MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=MINIMAL",
    ]);
    let env = Env::with_db(db);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT UNSIGNED, s VARCHAR(10))",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO t.kv VALUES (1, 4294967295, 'a')"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(
        json_at(&env, "kv:1"),
        Some(json!({"id": 1, "v": 4_294_967_295u64, "s": "a"}))
    );
    // After DDL the names are read again; rows written after it decode with the new shape.
    env.exec(&[
        "ALTER TABLE t.kv ADD COLUMN extra VARCHAR(5) AFTER id",
        "INSERT INTO t.kv VALUES (2, 'x', 7, 'b')",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(
        json_at(&env, "kv:2"),
        Some(json!({"id": 2, "extra": "x", "v": 7, "s": "b"}))
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn non_transactional_tables_commit_with_a_query_event() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM",
        "CREATE TABLE t.a (id INT PRIMARY KEY, v INT) ENGINE=Aria",
    ]);
    let rules = "[[rules]]\ntable = \"t.*\"\naction = \"upsert\"\nkey = \"{id}:row\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&[
        "INSERT INTO t.m VALUES (1, 1)",
        "INSERT INTO t.a VALUES (2, 2)",
        "UPDATE t.m SET v = 3",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(json_at(&env, "1:row"), Some(json!({"id": 1, "v": 3})));
    assert_eq!(json_at(&env, "2:row"), Some(json!({"id": 2, "v": 2})));
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// Without row metadata: the daemon is stopped, `while_down` writes a row and changes
/// the table, and the restarted daemon must stop (exit 3) with a message containing
/// `needle`, neither moving the checkpoint nor writing a key.
fn restart_behind_a_ddl_fails_closed(table: &str, while_down: impl FnOnce(&Env), needle: &str) {
    let db = support::MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=MINIMAL",
    ]);
    let env = Env::with_db(db);
    env.exec(&["CREATE DATABASE t", table]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    let before = env.checkpoint().expect("checkpoint").position;
    while_down(&env);
    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("t.kv") && log.contains("binlog.000001:") && log.contains(needle),
        "{log}"
    );
    println!("stop message: {}", log.lines().last().unwrap_or_default());
    assert_eq!(env.checkpoint().expect("checkpoint").position, before);
    assert_eq!(env.cache_keys(), Vec::<String>::new(), "nothing guessed");
}

#[test]
fn without_row_metadata_a_column_count_change_since_the_event_fails_closed() {
    // A row in the old shape, then the table changes: the binlog does not name the
    // columns and information_schema now describes a different table.
    restart_behind_a_ddl_fails_closed(
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
        |env| {
            env.exec(&[
                "INSERT INTO t.kv VALUES (1, 1)",
                "ALTER TABLE t.kv ADD COLUMN extra INT",
            ])
        },
        "2 columns but the table now has 3",
    );
}

#[test]
fn without_row_metadata_a_rename_since_the_event_fails_closed() {
    // A row, then (a second later) the columns swap names: the count is unchanged, yet
    // information_schema now describes another table.
    restart_behind_a_ddl_fails_closed(
        "CREATE TABLE t.kv (id INT PRIMARY KEY, a INT, b INT)",
        |env| {
            env.exec(&["INSERT INTO t.kv VALUES (1, 10, 20)"]);
            std::thread::sleep(Duration::from_millis(1100));
            env.exec(&[
                "ALTER TABLE t.kv RENAME COLUMN a TO tmp",
                "ALTER TABLE t.kv RENAME COLUMN b TO a",
                "ALTER TABLE t.kv RENAME COLUMN tmp TO b",
            ]);
        },
        "altered after this event",
    );
}

/// MariaDB's `log_bin_compress` logs long statements and rows zlib-compressed, as event
/// types of their own: the daemon expands them, live and in `replay`.
#[test]
fn mariadb_compressed_binlog_events_are_applied() {
    let db = support::MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=FULL",
        "--log-bin-compress=ON",
        "--log-bin-compress-min-len=10",
    ]);
    let env = Env::with_db(db);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, s TEXT)",
        "CREATE TABLE t.gone (id INT PRIMARY KEY)",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
                 [[rules]]\ntable = \"t.gone\"\naction = \"upsert\"\nkey = \"gone:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    let long = "x".repeat(300);
    env.exec(&[
        &format!("INSERT INTO t.kv VALUES (1, '{long}'), (2, '{long}'), (3, 'c')"),
        "UPDATE t.kv SET s = 'changed' WHERE id = 1",
        "DELETE FROM t.kv WHERE id IN (2, 3)",
        "INSERT INTO t.gone VALUES (9)",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["gone:9", "kv:1"]);
    assert_eq!(
        json_at(&env, "kv:1"),
        Some(json!({"id": 1, "s": "changed"}))
    );
    // A compressed TRUNCATE is still a clear.
    env.exec(&["TRUNCATE TABLE t.gone"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["kv:1"]);

    let mut c = env.sql();
    let types: Vec<String> = support::mysql::rows(&mut c, "SHOW BINLOG EVENTS IN 'binlog.000001'")
        .into_iter()
        .map(|r| r.get::<String, _>("Event_type").expect("Event_type"))
        .collect();
    for kind in [
        "Query_compressed",
        "Write_rows_compressed_v1",
        "Update_rows_compressed_v1",
        "Delete_rows_compressed_v1",
    ] {
        assert!(types.iter().any(|t| t == kind), "no {kind} in {types:?}");
    }
    let (code, out, err) = support::run_cli(&[
        "replay",
        env.db.binlog("binlog.000001").to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(r#""before":{{"id":1,"s":"{long}"}}"#))
            && out.contains(r#""statement":"TRUNCATE TABLE t.gone""#),
        "{out}"
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// MariaDB's system-versioned tables log history rows too: an UPDATE adds the old row
/// as an insert, a DELETE closes the row's period by an update. Only current rows reach
/// the cache, with the columns `SELECT *` shows.
#[test]
fn system_versioned_tables_cache_their_current_rows_only() {
    versioned_tables_case(Env::start());
}

/// Without row metadata the binlog's columns are the table's plus the implicit period,
/// last.
#[test]
fn system_versioned_tables_without_row_metadata() {
    versioned_tables_case(Env::with_db(support::MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=MINIMAL",
    ])));
}

fn versioned_tables_case(env: Env) {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.hist (id INT PRIMARY KEY, v INT, secret INT INVISIBLE) \
         WITH SYSTEM VERSIONING",
        "CREATE TABLE t.period (id INT PRIMARY KEY, v INT, \
         s TIMESTAMP(6) GENERATED ALWAYS AS ROW START, \
         e TIMESTAMP(6) GENERATED ALWAYS AS ROW END, PERIOD FOR SYSTEM_TIME(s, e)) \
         WITH SYSTEM VERSIONING",
    ]);
    let rules = "[[rules]]\ntable = \"t.hist\"\naction = \"upsert\"\nkey = \"hist:{id}\"\n\n\
                 [[rules]]\ntable = \"t.period\"\naction = \"upsert\"\nkey = \"period:{id}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    for table in ["t.hist", "t.period"] {
        env.exec(&[
            &format!("INSERT INTO {table} (id, v) VALUES (1, 1), (2, 2), (3, 3)"),
            &format!("UPDATE {table} SET v = 10 WHERE id = 1"),
            &format!("DELETE FROM {table} WHERE id = 2"),
        ]);
    }
    env.exec(&["UPDATE t.hist SET secret = 7 WHERE id = 3"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(
        env.cache_keys(),
        ["hist:1", "hist:3", "period:1", "period:3"]
    );
    assert_eq!(json_at(&env, "hist:1"), Some(json!({"id": 1, "v": 10})));
    assert_eq!(json_at(&env, "hist:3"), Some(json!({"id": 3, "v": 3})));
    let period = json_at(&env, "period:1").expect("cached");
    assert_eq!(
        (&period["v"], &period["e"]),
        (&json!(10), &json!("2038-01-19 03:14:07.999999")),
        "the visible period columns are values: {period}"
    );
    // `verify` reads `SELECT *`: the same rows, the same columns.
    let (code, out, err) =
        support::run_cli(&["verify", "--config", config.to_str().expect("path")]);
    assert_eq!(code, 0, "verify:\n{out}{err}");
    assert!(out.contains("verified 4 rows"), "{out}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// A MariaDB SEQUENCE logs its state as a row each time it reserves values: a glob rule
/// covering it must not stop on that row (it has none of the rule's columns).
#[test]
fn a_sequence_under_a_glob_rule_is_not_data() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
        "CREATE SEQUENCE t.ids CACHE 2",
    ]);
    let rules = "[[rules]]\ntable = \"t.*\"\naction = \"upsert\"\nkey = \"row:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    for _ in 0..3 {
        env.exec(&["INSERT INTO t.kv VALUES (NEXTVAL(t.ids), 0)"]);
    }
    env.exec(&[
        "SELECT SETVAL(t.ids, 100)",
        "INSERT INTO t.kv VALUES (NEXTVAL(t.ids), 1)",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(
        env.cache_keys(),
        ["row:1", "row:101", "row:2", "row:3"],
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
