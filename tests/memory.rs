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

/// Wide rows: 200 rows of 1 MiB each in one transaction, with the default `chunk_rows`
/// (1,024: every row would fit in one chunk) and `max_ops_per_step` (1,000: in one
/// step). The byte limits end chunks and steps early, so the daemon never holds more
/// than a few of the rows.
#[test]
fn wide_rows_are_bounded_by_bytes_not_by_row_counts() {
    wide_rows(false);
}

/// The same as a prepared XA transaction: stashed in steps bounded by bytes, and read
/// back from the stash at the commit in pages bounded by bytes.
#[test]
fn wide_rows_of_a_prepared_xa_transaction_are_bounded_by_bytes() {
    wide_rows(true);
}

fn wide_rows(xa: bool) {
    const WIDE_ROWS: u64 = 200;
    const WIDTH: u64 = 1 << 20;
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.wide (id INT PRIMARY KEY, doc LONGTEXT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.wide\"\naction = \"upsert\"\nkey = \"wide:{id}\"\n";
    let config = env.config_with(
        &env.db.url(),
        "current",
        "max_bytes_per_step = 2097152",
        rules,
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text.replace(
        "heartbeat_secs = 1\n",
        "heartbeat_secs = 1\nchunk_bytes = 1048576\nchannel_capacity = 4\n",
    );
    std::fs::write(&config, text).expect("write config");
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.wide VALUES (0, 'warm-up')"]);
    env.wait_caught_up(Duration::from_secs(60));
    let baseline = peak_rss_kib(daemon.pid());

    let insert = format!(
        "INSERT INTO t.wide SELECT seq, REPEAT(CHAR(64 + seq % 26), {WIDTH}) \
         FROM t.seq_1_to_{WIDE_ROWS}"
    );
    if xa {
        env.exec(&["XA START 'w'", &insert, "XA END 'w'", "XA PREPARE 'w'"]);
        env.wait_caught_up(Duration::from_secs(300));
        assert_eq!(env.cache_keys().len(), 1, "nothing of it before the commit");
        env.exec(&["XA COMMIT 'w'"]);
    } else {
        env.exec(&[&insert]);
    }
    env.wait_caught_up(Duration::from_secs(300));
    let mut r = env.redis.conn();
    let doc: String = redis::Commands::get(&mut r, format!("wide:{WIDE_ROWS}")).expect("GET");
    assert_eq!(
        doc.len() as u64,
        WIDTH + r#"{"id":200,"doc":""}"#.len() as u64
    );

    let peak = peak_rss_kib(daemon.pid());
    let transaction_kib = WIDE_ROWS * WIDTH / 1024;
    println!(
        "baseline peak {baseline} KiB, after the wide rows {peak} KiB, rows {transaction_kib} KiB"
    );
    assert!(
        peak - baseline < transaction_kib / 4,
        "peak grew by {} KiB for {transaction_kib} KiB of rows",
        peak - baseline
    );
    assert!(
        daemon.log().contains("splitting it"),
        "the transaction was split by bytes: {}",
        daemon.log()
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
    if xa {
        return;
    }

    // `load` and `verify` read the table in pages sized by bytes as well.
    let path = config.to_str().expect("utf-8 path");
    for args in [
        &["load", "--config", path, "--yes"][..],
        &["verify", "--config", path][..],
    ] {
        let (code, output, peak) = run_measured(args);
        assert_eq!(code, 0, "{args:?}: {output}");
        println!("{} peak {peak} KiB", args[0]);
        // The whole process's peak, not its growth: 40 to 62 MiB in runs here, against
        // 369 MiB and more when a page was 500 or 1,000 rows.
        assert!(
            peak < transaction_kib / 2,
            "{} peaked at {peak} KiB for {transaction_kib} KiB of rows",
            args[0]
        );
    }
}

/// Runs `cdc-cache <args>` to its end: exit code, output, and peak RSS in KiB (`wait4`'s
/// `ru_maxrss`: that one process's whole life, which polling `/proc` could miss).
// The child is reaped by `wait4` (std's `wait` cannot return its resource usage).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (i32, String, u64) {
    use std::io::Read;
    let mut child = std::process::Command::new(support::binary())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cdc-cache");
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                pipe.read_to_string(&mut text).expect("read output");
                text
            })
        })
        .collect();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; the child is ours, and std waits for
    // it only when asked.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let output: String = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, output, usage.ru_maxrss as u64)
}

/// A step holds at most `sink.max_ops_per_step` operations and one more row's: the
/// complete transactions go before a transaction that takes the step past its limit,
/// which is then split alone. A backlog of 100 pairs of transactions of 5 and 20 rows
/// (one key per row) under steps of 8: every step holds 8 operations or fewer (before,
/// the split of a 20-row transaction took the 5-row one before it along: 13).
#[test]
fn no_step_grows_past_its_limit_with_a_large_transaction() {
    let env = Env::start();
    env.exec(&["CREATE DATABASE t", "CREATE TABLE t.k (id INT PRIMARY KEY)"]);
    let rules = "[[rules]]\ntable = \"t.k\"\naction = \"delete\"\nkey = \"k:{id}\"\n";
    // The linger gathers transactions into steps whatever the source's pace.
    let sink = "max_ops_per_step = 8\nlinger_ms = 1000";
    let config = env.config_with(&env.db.url(), "current", sink, rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    let mut next = 0;
    let mut insert = |rows: usize| {
        let values: Vec<String> = (0..rows).map(|i| format!("({})", next + i)).collect();
        next += rows;
        format!("INSERT INTO t.k VALUES {}", values.join(","))
    };
    let inserts: Vec<String> = (0..100).flat_map(|_| [insert(5), insert(20)]).collect();
    let inserts: Vec<&str> = inserts.iter().map(String::as_str).collect();
    env.exec(&inserts);
    let _daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(Duration::from_secs(60));
    // The checkpoint is in Redis before the daemon reads the reply and counts the step.
    let metrics = eventually("every operation counted", Duration::from_secs(30), || {
        let metrics = support::prom::scrape(env.metrics_port)?;
        (metrics["cdc_cache_step_operations_sum"] == 2500.0).then_some(metrics)
    });
    let steps = metrics["cdc_cache_step_operations_count"];
    let within = metrics[r#"cdc_cache_step_operations_bucket{le="8.0"}"#];
    // Each 20-row transaction, and none of the 5-row ones, was split.
    assert_eq!(metrics["cdc_cache_transactions_split_total"], 100.0);
    assert_eq!(within, steps, "steps of more than 8 operations");
}

/// A prepared XA transaction's stash, and its operations at its COMMIT, count in a step's
/// bytes as rows do. A backlog of 40 XA transactions of one 20 KB row each under steps
/// of 64 KiB: no step gathers more than 8 event groups (PREPAREs and COMMITs). Before,
/// their bytes went uncounted, and steps grew to `max_ops_per_step` operations whatever
/// their rows held.
#[test]
fn xa_transactions_fill_steps_by_their_bytes() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.doc (id INT PRIMARY KEY, body TEXT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.doc\"\naction = \"upsert\"\nkey = \"doc:{id}\"\n";
    // The linger gathers the groups into steps whatever the source's pace.
    let sink = "max_bytes_per_step = 65536\nlinger_ms = 1000";
    let config = env.config_with(&env.db.url(), "current", sink, rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    let statements: Vec<String> = (1..=40)
        .flat_map(|id| {
            [
                format!("XA START 'x{id}'"),
                format!("INSERT INTO t.doc VALUES ({id}, REPEAT('d', 20000))"),
                format!("XA END 'x{id}'"),
                format!("XA PREPARE 'x{id}'"),
                format!("XA COMMIT 'x{id}'"),
            ]
        })
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    env.exec(&statements);
    let _daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(Duration::from_secs(60));
    assert_eq!(env.cache_keys().len(), 40);
    // The checkpoint is in Redis before the daemon reads the reply and counts the step.
    let metrics = eventually("every group counted", Duration::from_secs(30), || {
        let metrics = support::prom::scrape(env.metrics_port)?;
        (metrics["cdc_cache_step_transactions_sum"] == 80.0).then_some(metrics)
    });
    let steps = metrics["cdc_cache_step_transactions_count"];
    let within = metrics[r#"cdc_cache_step_transactions_bucket{le="8.0"}"#];
    assert_eq!(within, steps, "steps of more than 8 groups");
}
