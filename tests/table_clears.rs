//! Statements that empty a table without logging its rows (`TRUNCATE TABLE`, `DROP
//! TABLE`, `DROP DATABASE`, a `RENAME TABLE` swap, partition statements) delete the keys of that table's rules,
//! in binlog order, live and in a catch-up, against a private MariaDB and Redis.

mod support;

use std::time::Duration;

use redis::Commands;
use support::prom::scrape;
use support::{Daemon, Env};

const RULES: &str = r#"
[[rules]]
table = "shop.users"
action = "upsert"
key = "user:{id}"

[[rules]]
table = "shop.users"
action = "delete"
key = "user:by-email:{email}"

[[rules]]
table = "shop.profiles"
action = "upsert"
key = "user:{id}:profile"

[[rules]]
table = "shop.orders"
action = "upsert"
format = "hash"
key = "order:{id}"

[[rules]]
table = "crm.leads"
action = "upsert"
key = "lead:{id}"
"#;

const WAIT: Duration = Duration::from_secs(30);

fn clears(env: &Env, table: &str) -> f64 {
    let metrics = scrape(env.metrics_port).expect("/metrics");
    let name = format!("cdc_cache_table_clears_total{{table=\"{table}\"}}");
    // Every rule's series exists from the start, at 0.
    metrics
        .get(&name)
        .copied()
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn truncate_and_drop_delete_the_keys_of_the_emptied_tables_only() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE DATABASE crm",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(80))",
        "CREATE TABLE shop.profiles (id INT PRIMARY KEY, bio TEXT)",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT)",
        "CREATE TABLE crm.leads (id INT PRIMARY KEY, name TEXT)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let mut redis = env.redis.conn();
    // A key the rules never wrote but whose pattern matches (an orphan), and keys of
    // another application: only the first may go. Three of those match a rule's pattern
    // (`user:*`, `lead:*`), but the id columns are integers, so no rule made them.
    let _: () = redis.set("user:99", "orphan").expect("SET");
    for foreign in [
        "session:1",
        "user:1:friends",
        "user:session:abc",
        "lead:all",
    ] {
        let _: () = redis.set(foreign, "not a cache key").expect("SET");
    }
    env.exec(&[
        "INSERT INTO shop.users VALUES (1, 'ann@x.org'), (2, 'bob@x.org')",
        "INSERT INTO shop.profiles VALUES (1, 'hi')",
        "INSERT INTO shop.orders VALUES (10, 5)",
        "INSERT INTO crm.leads VALUES (1, 'lead one')",
    ]);
    env.wait_caught_up(WAIT);
    let _: () = redis.set("user:by-email:ann@x.org", "cached").expect("SET");
    assert_eq!(
        env.cache_keys(),
        [
            "lead:1",
            "lead:all",
            "order:10",
            "session:1",
            "user:1",
            "user:1:friends",
            "user:1:profile",
            "user:2",
            "user:99",
            "user:by-email:ann@x.org",
            "user:session:abc",
        ]
    );

    // Live: each statement's keys go before the next transaction's are written. The
    // column types the daemon read at start are used for a statement logged in a later
    // second (a catch-up over older statements cannot trust today's types): wait for it.
    std::thread::sleep(Duration::from_millis(1100));
    env.exec(&[
        "TRUNCATE TABLE shop.users",
        "INSERT INTO shop.users VALUES (5, 'eve@x.org')",
        "DROP TABLE shop.orders",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        env.cache_keys(),
        [
            "lead:1",
            "lead:all",
            "session:1",
            "user:1:friends",
            "user:1:profile",
            "user:5",
            "user:session:abc"
        ],
        "the users' and orders' keys went; the profile (a more specific rule of another \
         table), the leads and the other application's keys stayed; the row inserted after \
         the TRUNCATE is cached"
    );
    assert_eq!(clears(&env, "shop.users"), 1.0);
    assert_eq!(clears(&env, "shop.orders"), 1.0);
    assert_eq!(clears(&env, "crm.leads"), 0.0);
    assert!(
        daemon.log().contains("emptied or replaced a cached table")
            && daemon.log().contains("TRUNCATE TABLE shop.users"),
        "the clear is logged with its statement:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());

    // Catch-up: the database is dropped and re-created while the daemon is stopped. The
    // lead written before the drop goes, the one written after it stays. The types read
    // at start are newer than the drop, so they are not trusted: `lead:all` goes too.
    env.exec(&[
        "INSERT INTO crm.leads VALUES (2, 'lead two')",
        "DROP DATABASE crm",
        "CREATE DATABASE crm",
        "CREATE TABLE crm.leads (id INT PRIMARY KEY, name TEXT)",
        "INSERT INTO crm.leads VALUES (3, 'lead three')",
    ]);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(WAIT);
    assert_eq!(
        env.cache_keys(),
        [
            "lead:3",
            "session:1",
            "user:1:friends",
            "user:1:profile",
            "user:5",
            "user:session:abc"
        ]
    );
    assert_eq!(clears(&env, "crm.leads"), 1.0);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

#[test]
fn replay_names_the_emptied_tables_and_the_patterns_it_would_clear() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(80))",
        "CREATE TABLE shop.audit (id INT PRIMARY KEY)",
        "FLUSH BINARY LOGS",
        "TRUNCATE shop.audit",
        "TRUNCATE TABLE shop.users",
        "ALTER TABLE shop.users ADD COLUMN nick TEXT, ADD INDEX (email)",
    ]);
    let file = env.head().file;
    let path = env.db.binlog(&file);
    let lines = support::replay_lines(&path);
    let emptied: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "emptied")
        .map(|l| format!("{}.{}", l["database"], l["table"]).replace('"', ""))
        .collect();
    assert_eq!(emptied, ["shop.audit", "shop.users"], "{lines:?}");
    let changed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["kind"] == "columns changed")
        .map(|l| &l["columns"])
        .collect();
    assert_eq!(changed, [&serde_json::json!(["nick"])], "{lines:?}");
    let statements: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["statement"].as_str())
        .collect();
    assert_eq!(
        statements,
        [
            "TRUNCATE shop.audit",
            "TRUNCATE TABLE shop.users",
            "ALTER TABLE shop.users ADD COLUMN nick TEXT, ADD INDEX (email)"
        ],
        "{lines:?}"
    );

    let config = env.config("current", RULES);
    let (code, out, err) = support::run_cli(&[
        "replay",
        "--config",
        config.to_str().expect("utf-8 path"),
        path.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "{err}");
    let ops: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let patterns: Vec<&str> = ops
        .iter()
        .filter(|o| o["op"] == "clear")
        .filter_map(|o| o["pattern"].as_str())
        .collect();
    // The column change clears the upsert rule's values only.
    assert_eq!(patterns, ["user:*", "user:by-email:*", "user:*"], "{out}");
}

#[test]
fn a_redis_user_that_may_not_scan_is_refused_at_start() {
    // Without SCAN the keys of an emptied table could not be found: the daemon would
    // stop at the first TRUNCATE. The start-up probe says so before any step instead.
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE crm",
        "CREATE TABLE crm.leads (id INT PRIMARY KEY, name TEXT)",
    ]);
    env.redis.command(&format!(
        "ACL SETUSER cdc on >pw resetkeys ~lead:* ~{0} ~{0}:* +@all -scan",
        support::CHECKPOINT_KEY
    ));
    let rules = "[[rules]]\ntable = \"crm.leads\"\naction = \"upsert\"\nkey = \"lead:{id}\"\n";
    let config = env.config("current", rules);
    let url = env.redis.url().replace("redis://", "redis://cdc:pw@");
    let mut daemon = Daemon::start_with_env(&config, &[("CDC_CACHE_REDIS__URL", url.as_str())]);
    let code = daemon.wait_exit(WAIT);
    let log = daemon.log();
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("may not run SCAN") && log.contains("rules[0]") && log.contains("+scan"),
        "{log}"
    );
    assert_eq!(env.checkpoint(), None, "nothing written");
}

#[test]
fn a_memory_table_emptied_by_a_restart_is_cleared_and_a_statement_delete_of_rows_stops() {
    // A MEMORY table loses its rows when the server restarts; the server logs that as a
    // statement when the table is first opened again (`TRUNCATE TABLE … generated by
    // server`, `DELETE FROM …` on MySQL 5.7). The daemon reconnects and clears its keys.
    let mut env = Env::start();
    env.exec(&[
        "CREATE DATABASE mem",
        "CREATE TABLE mem.sessions (id INT PRIMARY KEY) ENGINE=MEMORY",
    ]);
    let rules = "[[rules]]\ntable = \"mem.sessions\"\naction = \"upsert\"\nkey = \"s:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO mem.sessions VALUES (1), (2)"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["s:1", "s:2"]);

    env.db.restart();
    env.exec(&["INSERT INTO mem.sessions VALUES (3)"]);
    env.wait_caught_up(Duration::from_secs(60));
    assert_eq!(env.cache_keys(), ["s:3"], "{}", daemon.log());
    // A whole-table DELETE logged as a statement (as MySQL 5.7 logs that emptying) is the
    // same clear; a statement-logged DELETE of some rows still stops the daemon.
    env.exec(&[
        "SET SESSION binlog_format = STATEMENT",
        "DELETE FROM mem.sessions",
        "SET SESSION binlog_format = ROW",
        "INSERT INTO mem.sessions VALUES (4)",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["s:4"], "{}", daemon.log());
    assert!(daemon.is_running(), "{}", daemon.log());
    let before = env.checkpoint().expect("checkpoint").position;
    env.exec(&[
        "SET SESSION binlog_format = STATEMENT",
        "DELETE FROM mem.sessions WHERE id = 4",
    ]);
    assert_eq!(daemon.wait_exit(WAIT), 3, "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("statement-based change `DELETE FROM mem.sessions WHERE id = 4`"),
        "{}",
        daemon.log()
    );
    assert_eq!(env.checkpoint().expect("checkpoint").position, before);
    assert_eq!(env.cache_keys(), ["s:4"], "nothing applied past it");
}

#[test]
fn a_table_swapped_in_by_rename_clears_the_keys_and_an_online_schema_change_does_not() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(80))",
        "INSERT INTO shop.users VALUES (1, 'ann@x.org'), (2, 'bob@x.org')",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["UPDATE shop.users SET email = CONCAT('old-', email)"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["user:1", "user:2"]);

    // A bulk reload: the new rows are logged under `users_new`, which no rule covers.
    // The swap must not leave user:1 and user:2 with the old table's values.
    env.exec(&[
        "CREATE TABLE shop.users_new LIKE shop.users",
        "INSERT INTO shop.users_new VALUES (1, 'new-ann@x.org'), (3, 'new-cy@x.org')",
        "RENAME TABLE shop.users TO shop.users_old, shop.users_new TO shop.users",
        "UPDATE shop.users SET email = 'cy@x.org' WHERE id = 3",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        env.cache_keys(),
        ["user:3"],
        "the swapped-out table's keys went; the row changed after the swap is cached"
    );
    assert_eq!(clears(&env, "shop.users"), 1.0);
    assert!(
        daemon
            .log()
            .contains("RENAME TABLE shop.users TO shop.users_old, shop.users_new TO shop.users"),
        "the log names the statement:\n{}",
        daemon.log()
    );

    // gh-ost's cut-over: the copy holds the same rows, so the keys stay.
    env.exec(&[
        "CREATE TABLE shop._users_gho LIKE shop.users",
        "INSERT INTO shop._users_gho SELECT * FROM shop.users",
        "RENAME TABLE shop.users TO shop._users_del, shop._users_gho TO shop.users",
        "UPDATE shop.users SET email = 'ann@x.org' WHERE id = 1",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["user:1", "user:3"]);
    assert_eq!(clears(&env, "shop.users"), 1.0, "no clear for the cut-over");

    // Renamed away, the table's keys go as with DROP TABLE.
    env.exec(&["ALTER TABLE shop.users RENAME TO shop.users_archive"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), Vec::<String>::new());
    assert_eq!(clears(&env, "shop.users"), 2.0);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// MariaDB's partition statements move rows between tables without logging them:
/// `DROP PARTITION` (here under `ALTER TABLE IF EXISTS`, whose `IF` is not the table),
/// `CONVERT PARTITION … TO TABLE` and `CONVERT TABLE … TO PARTITION`.
#[test]
fn partition_statements_clear_the_keys_of_the_tables_whose_rows_they_move() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.events (id INT PRIMARY KEY, v INT) PARTITION BY RANGE (id) \
         (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20), \
          PARTITION p2 VALUES LESS THAN (30))",
        "CREATE TABLE shop.staging (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = r#"
[[rules]]
table = "shop.events"
action = "upsert"
key = "ev:{id}"

[[rules]]
table = "shop.staging"
action = "upsert"
key = "st:{id}"
"#;
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&[
        "INSERT INTO shop.events VALUES (1, 1), (11, 1), (21, 1)",
        "INSERT INTO shop.staging VALUES (35, 1)",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["ev:1", "ev:11", "ev:21", "st:35"]);
    // Types read at start are trusted for statements logged in a later second.
    std::thread::sleep(Duration::from_millis(1100));

    let steps: &[(&str, &[&str])] = &[
        (
            "ALTER TABLE IF EXISTS shop.events DROP PARTITION p0",
            &["ev:11", "ev:21", "st:35"],
        ),
        (
            "ALTER TABLE shop.events CONVERT PARTITION p1 TO TABLE shop.events_2024",
            &["ev:21", "st:35"],
        ),
        (
            "ALTER TABLE shop.events CONVERT TABLE shop.staging \
             TO PARTITION p3 VALUES LESS THAN (40)",
            &["ev:21"],
        ),
        (
            "ALTER TABLE IF EXISTS shop.events ADD COLUMN w INT",
            &["ev:21"],
        ),
    ];
    for (i, (statement, expected)) in steps.iter().enumerate() {
        // After each clear the rows still in `events` are written again; a row gone from
        // it must not come back.
        env.exec(&[
            statement,
            &format!("UPDATE shop.events SET v = {} WHERE id IN (11, 21)", i + 2),
        ]);
        env.wait_caught_up(WAIT);
        assert_eq!(&env.cache_keys(), expected, "after {statement}");
    }
    let mut redis = env.redis.conn();
    let value: String = redis.get("ev:21").expect("GET");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&value).expect("json"),
        serde_json::json!({"id": 21, "v": 5, "w": null}),
        "rewritten with the added column"
    );
    assert_eq!(clears(&env, "shop.events"), 3.0, "{}", daemon.log());
    assert_eq!(clears(&env, "shop.staging"), 1.0);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// MariaDB logs `CREATE OR REPLACE TABLE … SELECT` inside the transaction of the rows it
/// copies: the old table's keys go before the new rows are written.
#[test]
fn create_or_replace_table_select_clears_before_its_own_rows() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.src (id INT PRIMARY KEY, v INT)",
        "INSERT INTO shop.src VALUES (1, 1), (2, 2)",
        "CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"shop.t\"\naction = \"upsert\"\nkey = \"t:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO shop.t VALUES (1, 0), (9, 9)"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["t:1", "t:9"]);
    std::thread::sleep(Duration::from_millis(1100));
    env.exec(&[
        "CREATE OR REPLACE TABLE shop.t (id INT PRIMARY KEY, v INT) SELECT * FROM shop.src",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["t:1", "t:2"], "{}", daemon.log());
    let v1: String = env.redis.conn().get("t:1").expect("GET");
    assert_eq!(v1, r#"{"id":1,"v":1}"#, "the copied row, not the old one");
    assert_eq!(clears(&env, "shop.t"), 1.0);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}
