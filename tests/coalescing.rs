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
