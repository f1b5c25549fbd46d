//! `ALTER TABLE` clauses that add, drop, rename or retype columns change every row without
//! logging one: the values `upsert` rules stored must not keep the old columns. The keys
//! of the rules that store a changed column go (a miss is never wrong); keys of other
//! rules, and every key after a change that stores nothing (an index), stay. Online
//! schema change tools alter a copy and swap it in: the keys go at the swap. Against a
//! private MariaDB and Redis, live and in a catch-up.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};
use support::{run_cli, Daemon, Env};

const RULES: &str = r#"
[[rules]]
table = "shop.items"
action = "upsert"
key = "item:{id}"

[[rules]]
table = "shop.items"
action = "upsert"
key = "name:{id}"
columns = ["name"]

[[rules]]
table = "shop.items"
action = "delete"
key = "gone:{id}"
"#;

const WAIT: Duration = Duration::from_secs(30);

fn json_at(env: &Env, key: &str) -> Option<Value> {
    let text: Option<String> = env.redis.conn().get(key).expect("GET");
    text.map(|t| serde_json::from_str(&t).expect("JSON"))
}

/// Two rows of `shop.items` cached by a running daemon, whose key shapes count for the
/// statements that follow (those logged in a later second than the daemon's start).
fn cached_items(env: &Env) -> (PathBuf, Daemon) {
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), qty INT)",
        "INSERT INTO shop.items VALUES (1, 'pen', 3), (2, 'ink', 4)",
    ]);
    let config = env.config("current", RULES);
    let daemon = Daemon::start_ready(env, &config);
    env.exec(&["UPDATE shop.items SET qty = qty + 1"]);
    env.wait_caught_up(WAIT);
    std::thread::sleep(Duration::from_millis(1100));
    (config, daemon)
}

/// `verify --allow-missing`: exit 0 when every cached value equals its row.
fn verify_cached_values(env: &Env) {
    let config = env.dir.path().join("config.toml");
    let config = config.to_str().expect("utf-8");
    let (code, out, err) = run_cli(&["verify", "--config", config, "--allow-missing"]);
    assert_eq!(code, 0, "a cached value differs from its row:\n{out}{err}");
}

#[test]
fn a_column_change_clears_the_values_that_store_the_column() {
    let env = Env::start();
    let (_, mut daemon) = cached_items(&env);
    let _: () = env.redis.conn().set("gone:2", "the app's").expect("SET");
    let all = ["gone:2", "item:1", "item:2", "name:1", "name:2"];
    assert_eq!(env.cache_keys(), all);

    env.exec(&["ALTER TABLE shop.items ADD INDEX by_name (name), ALTER qty SET DEFAULT 0"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), all, "no stored value changed");

    // Every row now has `price`: the values of the rule storing every column lack it.
    env.exec(&["ALTER TABLE shop.items ADD COLUMN price DECIMAL(6,2) DEFAULT 1.5"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["gone:2", "name:1", "name:2"]);
    verify_cached_values(&env);
    env.exec(&["UPDATE shop.items SET qty = 9 WHERE id = 1"]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        json_at(&env, "item:1"),
        Some(json!({"id": 1, "name": "pen", "qty": 9, "price": "1.50"}))
    );

    // The column the second rule stores changes type: its values go too.
    env.exec(&["ALTER TABLE shop.items MODIFY name CHAR(3) CHARACTER SET latin1"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["gone:2"]);
    verify_cached_values(&env);
    assert!(
        daemon.log().contains("columns name of table shop.items"),
        "the log says what changed:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// pt-online-schema-change's steps (gh-ost's are the same with `_items_gho`).
const ONLINE_CHANGE: &[&str] = &[
    "CREATE TABLE shop._items_new LIKE shop.items",
    "ALTER TABLE shop._items_new ADD COLUMN note VARCHAR(10) DEFAULT 'n'",
    "INSERT INTO shop._items_new (id, name, qty) SELECT id, name, qty FROM shop.items",
];
const SWAP: &str = "RENAME TABLE shop.items TO shop._items_old, shop._items_new TO shop.items";

#[test]
fn an_online_schema_change_clears_at_its_swap_live_and_in_a_catch_up() {
    let env = Env::start();
    let (config, mut daemon) = cached_items(&env);

    // Until the swap the table is unchanged: its keys stay, and writes reach them.
    env.exec(ONLINE_CHANGE);
    env.exec(&["UPDATE shop.items SET qty = 7 WHERE id = 2"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["item:1", "item:2", "name:1", "name:2"]);
    env.exec(&[SWAP]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        env.cache_keys(),
        ["name:1", "name:2"],
        "the swapped-in rows have `note`"
    );
    verify_cached_values(&env);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());

    // The same while the daemon is down: both steps are in the catch-up.
    env.exec(&[
        "UPDATE shop.items SET qty = 1",
        "DROP TABLE shop._items_old",
        "CREATE TABLE shop._items_new LIKE shop.items",
        "ALTER TABLE shop._items_new DROP COLUMN qty",
        "INSERT INTO shop._items_new (id, name, note) SELECT id, name, note FROM shop.items",
        SWAP,
    ]);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["name:1", "name:2"]);
    verify_cached_values(&env);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// A migration that only adds an index: its copy holds the same values.
const INDEX_ONLY: &[&str] = &[
    "DROP TABLE IF EXISTS shop._items_old",
    "CREATE TABLE shop._items_new LIKE shop.items",
    "ALTER TABLE shop._items_new ADD INDEX IF NOT EXISTS by_qty (qty), COMMENT 'm'",
    "INSERT INTO shop._items_new SELECT * FROM shop.items",
];

#[test]
fn a_swap_clears_when_the_copy_was_altered_before_the_daemon_started() {
    let env = Env::start();
    let (config, mut daemon) = cached_items(&env);
    let cached = ["item:1", "item:2", "name:1", "name:2"];

    // Seen from the copy's creation: nothing changed, nothing is cleared.
    env.exec(INDEX_ONLY);
    env.exec(&[SWAP]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), cached);

    // Restarted between the copy's creation and the swap: what the copy's ALTER did is
    // not known, so the values of every upsert rule go, whichever columns they hold.
    env.exec(INDEX_ONLY);
    env.wait_caught_up(WAIT);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&[SWAP]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), Vec::<String>::new());
    assert!(
        daemon
            .log()
            .contains("swapped in from a copy altered before the start"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

#[test]
fn a_two_phase_alter_clears_once_it_completes() {
    // MariaDB's `binlog_alter_two_phase` logs the statement twice, when the ALTER starts
    // and when it commits: the keys must be gone after the second.
    let env = Env::start();
    let (_, mut daemon) = cached_items(&env);
    env.exec(&[
        "SET SESSION binlog_alter_two_phase = 1",
        "ALTER TABLE shop.items ADD COLUMN price INT DEFAULT 2",
        "SET SESSION binlog_alter_two_phase = 0",
    ]);
    env.exec(&["UPDATE shop.items SET qty = 5 WHERE id = 1"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), ["item:1", "name:1", "name:2"]);
    assert_eq!(
        json_at(&env, "item:1"),
        Some(json!({"id": 1, "name": "pen", "qty": 5, "price": 2}))
    );
    verify_cached_values(&env);
    let log = daemon.log();
    assert_eq!(
        log.matches("emptied=columns price of table shop.items")
            .count(),
        2,
        "a clear at the start and one at the commit of the ALTER:\n{log}"
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// `CONVERT TO CHARACTER SET binary` turns every text column into a binary one, cached as
/// base64: every value that stores a column goes. A conversion to another character set
/// keeps every character, and every value.
#[test]
fn a_conversion_to_binary_clears_every_stored_value() {
    let env = Env::start();
    let (_, mut daemon) = cached_items(&env);
    let all = ["item:1", "item:2", "name:1", "name:2"];
    assert_eq!(env.cache_keys(), all);

    env.exec(&["ALTER TABLE shop.items CONVERT TO CHARACTER SET utf8mb4"]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        env.cache_keys(),
        all,
        "the same text in another character set"
    );
    verify_cached_values(&env);

    env.exec(&["ALTER TABLE shop.items CONVERT TO CHARACTER SET binary"]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), Vec::<String>::new());
    verify_cached_values(&env);
    env.exec(&["UPDATE shop.items SET qty = 7 WHERE id = 2"]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        json_at(&env, "name:2"),
        Some(json!({"name": "aW5r"})),
        "the name is bytes now"
    );
    assert!(
        daemon.log().contains("every column of table shop.items"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

#[test]
fn a_lossy_conversion_in_a_session_that_is_not_strict_clears_every_stored_value() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), qty INT) \
         CHARACTER SET utf8mb4",
        "INSERT INTO shop.items VALUES (1, '漢字', 3), (2, 'ink', 4)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["UPDATE shop.items SET qty = qty + 1"]);
    env.wait_caught_up(WAIT);
    std::thread::sleep(Duration::from_millis(1100));
    let all = ["item:1", "item:2", "name:1", "name:2"];
    assert_eq!(env.cache_keys(), all);

    // A strict session (the server's default here) refuses to lose the characters.
    let refused = support::mysql::query(
        &mut env.sql(),
        "ALTER TABLE shop.items CONVERT TO CHARACTER SET latin1",
    );
    assert!(refused.is_err(), "latin1 has no 漢字");
    // One that is not strict stores `??` and logs no row: the cached `漢字` must go.
    env.exec(&[
        "SET SESSION sql_mode = ''",
        "ALTER TABLE shop.items CONVERT TO CHARACTER SET latin1",
    ]);
    env.wait_caught_up(WAIT);
    assert_eq!(env.cache_keys(), Vec::<String>::new());
    verify_cached_values(&env);
    env.exec(&["UPDATE shop.items SET qty = 9 WHERE id = 1"]);
    env.wait_caught_up(WAIT);
    assert_eq!(json_at(&env, "name:1"), Some(json!({"name": "??"})));
    assert!(
        daemon.log().contains("every column of table shop.items"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}
