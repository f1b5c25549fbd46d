//! Memory is bounded by configuration, not by transaction size: a daemon with a small
//! pipeline (`chunk_rows`, `channel_capacity`, `max_ops_per_step`) applies a transaction of
//! 300,000 wide rows — far more data than its peak memory — without its peak RSS growing
//! with the transaction. Nothing here is timed.

mod support;

use std::time::Duration;

use support::{eventually, Daemon, Env};

/// Peak resident set size of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value")
}

const ROWS: u64 = 300_000;
const PAYLOAD: usize = 400;

/// A daemon with a small pipeline over `t.big` and `t.small`, and its peak RSS after a
/// warm-up transaction of 1,000 rows (the baseline).
fn small_pipeline(env: &Env) -> (Daemon, u64) {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.big (id INT PRIMARY KEY, payload VARCHAR(500))",
        "CREATE TABLE t.small (id INT PRIMARY KEY, payload VARCHAR(500))",
    ]);
    let rules =
        "[[rules]]\ntable = \"t.*\"\naction = \"upsert\"\nkey = \"{id}\"\ncolumns = [\"id\"]\n";
    let config = env.config_with(&env.db.url(), "current", "max_ops_per_step = 500", rules);
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text.replace(
        "heartbeat_secs = 1\n",
        "heartbeat_secs = 1\nchunk_rows = 128\nchannel_capacity = 4\n",
    );
    std::fs::write(&config, text).expect("write config");
    let daemon = Daemon::start_ready(env, &config);
    env.exec(&[&format!(
        "INSERT INTO t.small SELECT seq, REPEAT('x', {PAYLOAD}) FROM t.seq_1_to_1000"
    )]);
    env.wait_caught_up(Duration::from_secs(60));
    let baseline = peak_rss_kib(daemon.pid());
    (daemon, baseline)
}

/// Holding the transaction would need at least its row data (~117 MiB); the pipeline
/// may hold only a few chunks of it.
fn assert_bounded(daemon: &Daemon, baseline: u64) {
    let peak = peak_rss_kib(daemon.pid());
    let transaction_kib = ROWS * PAYLOAD as u64 / 1024;
    println!("baseline peak {baseline} KiB, after {ROWS} rows peak {peak} KiB, row data {transaction_kib} KiB");
    assert!(
        peak - baseline < transaction_kib / 4,
        "peak grew by {} KiB for {transaction_kib} KiB of rows",
        peak - baseline
    );
}

const BIG_INSERT: &str = "INSERT INTO t.big SELECT seq, REPEAT('y', 400) FROM t.seq_1_to_300000";

#[test]
fn peak_memory_does_not_grow_with_transaction_size() {
    let env = Env::start();
    let (mut daemon, baseline) = small_pipeline(&env);
    env.exec(&[BIG_INSERT]);
    env.wait_caught_up(Duration::from_secs(600));
    // Both tables write `{id}`; the small table's ids are a subset of the big one's.
    assert_eq!(env.cache_keys().len() as u64, ROWS);
    // Rows are counted once per rows event, or up to the split when a step ends inside
    // one (steps of 500 operations end inside most events here): each row once.
    let counted = r#"cdc_cache_row_changes_applied_total{table="t.*",kind="insert"}"#;
    eventually("every row to be counted", Duration::from_secs(30), || {
        let metrics = support::prom::scrape(env.metrics_port)?;
        (metrics.get(counted) == Some(&(1000.0 + ROWS as f64))).then_some(())
    });
    assert_bounded(&daemon, baseline);
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// The same transaction as a two-phase XA transaction: its operations go to the stash in
/// steps at the PREPARE, and come back from it in steps at the COMMIT.
#[test]
fn a_prepared_xa_transaction_is_stashed_and_applied_in_bounded_memory() {
    let env = Env::start();
    let (mut daemon, baseline) = small_pipeline(&env);
    let mut xa = env.sql();
    for statement in [
        "XA START 'big'",
        BIG_INSERT,
        "XA END 'big'",
        "XA PREPARE 'big'",
    ] {
        support::mysql::query(&mut xa, statement).expect(statement);
    }
    env.wait_caught_up(Duration::from_secs(600));
    assert_eq!(
        env.cache_keys().len(),
        1000,
        "nothing of it before the commit"
    );
    support::mysql::query(&mut xa, "XA COMMIT 'big'").expect("XA COMMIT");
    env.wait_caught_up(Duration::from_secs(600));
    assert_eq!(env.cache_keys().len() as u64, ROWS);
    assert_bounded(&daemon, baseline);
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}
