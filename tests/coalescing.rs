//! Writes replaced within one atomic step are left out of it: rows updated again and
//! again in a backlog cost Redis a write per step, not per change, and the cache still
//! ends equal to the database. Every mapped write is either sent or counted as coalesced.

mod support;

use std::time::Duration;

use redis::Commands;
use support::{prom, run_cli, Daemon, Env};

const WAIT: Duration = Duration::from_secs(60);

const RULES: &str = "\
[[rules]]\ntable = \"shop.counter\"\naction = \"upsert\"\nkey = \"counter:{id}\"\n\n\
[[rules]]\ntable = \"shop.counter\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"counterh:{id}\"\n";

const UPDATES: u32 = 1000;

#[test]
fn hot_rows_updated_in_a_backlog_are_written_once_per_step() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.counter (id INT PRIMARY KEY, n INT)",
        "INSERT INTO shop.counter VALUES (1, 0), (2, 0)",
        // Each UPDATE is a transaction of its own (autocommit).
        &format!(
            "CREATE PROCEDURE shop.bump() BEGIN DECLARE i INT DEFAULT 0; \
             WHILE i < {UPDATES} DO \
             UPDATE shop.counter SET n = n + 1 WHERE id = 1; \
             UPDATE shop.counter SET n = n + 1 WHERE id = 2; \
             SET i = i + 1; END WHILE; END"
        ),
    ]);
    let config = env.config("current", RULES);
    let mut first = Daemon::start_ready(&env, &config);
    assert_eq!(first.terminate(WAIT), 0, "{}", first.log());

    // The backlog: 2,000 transactions on two rows, applied in a catch-up.
    env.exec(&["CALL shop.bump()"]);
    let daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(WAIT);
    let mut r = env.redis.conn();
    for id in [1, 2] {
        let json: String = r.get(format!("counter:{id}")).expect("GET");
        assert_eq!(json, format!(r#"{{"id":{id},"n":{UPDATES}}}"#));
        let n: String = r.hget(format!("counterh:{id}"), "n").expect("HGET");
        assert_eq!(n, UPDATES.to_string());
    }

    let m = prom::scrape(env.metrics_port).expect("metrics");
    let sent = m["cdc_cache_cache_operations_total{op=\"set\"}"]
        + m["cdc_cache_cache_operations_total{op=\"hset\"}"];
    let coalesced = m["cdc_cache_cache_writes_coalesced_total"];
    let mapped = f64::from(4 * UPDATES);
    assert_eq!(sent + coalesced, mapped, "each write sent or coalesced");
    assert!(
        coalesced > mapped / 2.0,
        "most writes were replaced within their step: {coalesced} of {mapped} coalesced, \
         {sent} sent"
    );
    println!("{mapped} writes mapped: {sent} sent, {coalesced} coalesced");

    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    drop(daemon);
}

const SWAP_RULES: &str = "\
[[rules]]\ntable = \"shop.item\"\naction = \"upsert\"\nkey = \"item:{id}\"\n\n\
[[rules]]\ntable = \"shop.item\"\naction = \"delete\"\nkey = \"item-page:{id}\"\n";

const SWAPS: u32 = 200;

/// sysbench's write mix deletes a row and inserts it again in one transaction: the
/// `DEL` of the first is replaced by the second's write, whichever rule.
#[test]
fn a_row_deleted_and_inserted_again_in_one_transaction_is_written_once() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.item (id INT PRIMARY KEY, v INT)",
        &format!(
            "CREATE PROCEDURE shop.fill() BEGIN DECLARE i INT DEFAULT 0; \
             WHILE i < {SWAPS} DO INSERT INTO shop.item VALUES (i, 0); SET i = i + 1; \
             END WHILE; END"
        ),
        &format!(
            "CREATE PROCEDURE shop.swap() BEGIN DECLARE i INT DEFAULT 0; \
             WHILE i < {SWAPS} DO START TRANSACTION; \
             DELETE FROM shop.item WHERE id = i; INSERT INTO shop.item VALUES (i, 1); \
             COMMIT; SET i = i + 1; END WHILE; END"
        ),
        "CALL shop.fill()",
    ]);
    let config = env.config("current", SWAP_RULES);
    let daemon = Daemon::start_ready(&env, &config);
    env.exec(&["CALL shop.swap()"]);
    env.wait_caught_up(WAIT);

    let mut r = env.redis.conn();
    let json: String = r.get("item:7").expect("GET");
    assert_eq!(json, r#"{"id":7,"v":1}"#);
    let m = prom::scrape(env.metrics_port).expect("metrics");
    let op = |name: &str| m[&format!("cdc_cache_cache_operations_total{{op=\"{name}\"}}")];
    let coalesced = m["cdc_cache_cache_writes_coalesced_total"];
    // Per swap: upsert DEL + SET, delete DEL + DEL; one of each pair is left out.
    let swaps = f64::from(SWAPS);
    assert_eq!(
        coalesced,
        2.0 * swaps,
        "set {} del {}",
        op("set"),
        op("del")
    );
    assert_eq!(op("set"), swaps);
    assert_eq!(op("del"), swaps);

    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    drop(daemon);
}
