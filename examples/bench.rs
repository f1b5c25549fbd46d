//! The performance harness: starts a private MariaDB and Redis, prepares the data, runs
//! every scenario of the performance issue in one run, and prints a table and a JSON
//! summary.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench
//! ```
//!
//! Scenarios:
//! - catch-up: 1,000,000 row changes (INSERT, UPDATE, DELETE on sysbench-shaped tables, in
//!   transactions of 1 to 100 rows) committed with the daemon stopped; the daemon then
//!   starts from its checkpoint, timed until the checkpoint reaches the server's head, for
//!   `delete` rules and for `upsert` JSON rules; `mariadb-binlog --read-from-remote-server
//!   -v` decodes the same range as the reference, `mariadb-binlog --raw` copies it to a
//!   file, and a mysql_async client drains it without decoding (`support/drain.rs`, the
//!   daemon's transfer floor); all five are timed in each of `BENCH_ROUNDS` rounds
//!   (default 5), and the medians are reported;
//! - live: `sysbench oltp_write_only`, 8 threads, 60 s: without a binlog reader, with
//!   `mariadb-binlog -v` and then `mariadb-binlog --raw` following (the floor any reader
//!   costs), with the daemon following and a probe that commits a row and waits for Redis
//!   to announce its key (≥ 1,000 probes), and without a reader again (the baseline is
//!   the mean of the first and last runs);
//! - one transaction of 1,000,000 rows: time until applied;
//! - the daemon's peak RSS (VmHWM) in each.
//!
//! Knobs for tuning loops: `BENCH_ONLY=catch-up|live|big`, `BENCH_ROUNDS`, `BENCH_LIVE_SECS`,
//! and `BENCH_SINK` (lines added to the daemon's `[sink]`, e.g. `linger_ms = 1`).

#[path = "support/drain.rs"]
mod drain;
#[path = "../tests/support/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::Commands;
use servers::{free_port, mysql, MariaDb, Redis};

const CHECKPOINT_KEY: &str = "cdc-cache:checkpoint:bench";
const TABLES: u32 = 4;
const TABLE_ROWS: u32 = 100_000;
const CATCH_UP_ROWS: u64 = 1_000_000;
/// The live run's length; `BENCH_LIVE_SECS` shortens it for quick tuning loops.
fn live_secs() -> u64 {
    std::env::var("BENCH_LIVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

struct Bench {
    db: MariaDb,
    redis: Redis,
    dir: tempfile::TempDir,
    binary: PathBuf,
    metrics_port: u16,
}

#[derive(serde::Serialize, Default)]
struct Summary {
    machine: String,
    catch_up_rows: u64,
    catch_up_delete_rows_per_sec: f64,
    catch_up_delete_peak_rss_mib: f64,
    catch_up_upsert_rows_per_sec: f64,
    catch_up_upsert_peak_rss_mib: f64,
    reference_rows_per_sec: f64,
    /// `mariadb-binlog --raw` over the same range: the server sending the events to a
    /// client that only copies them to a file.
    transfer_rows_per_sec: f64,
    /// The same range pulled through mysql_async and dropped (`support/drain.rs`): the
    /// floor for the daemon, which reads the same way.
    drain_rows_per_sec: f64,
    delete_vs_reference: f64,
    upsert_vs_reference: f64,
    /// The mean of the runs without a reader, first and last.
    live_tps_without: f64,
    live_tps_without_first: f64,
    live_tps_without_last: f64,
    live_tps_with: f64,
    live_overhead_percent: f64,
    /// sysbench tx/s with `mariadb-binlog -v` following instead of the daemon.
    live_tps_reference_reader: f64,
    live_reference_overhead_percent: f64,
    live_cpu_reference_reader_secs: f64,
    /// sysbench tx/s with `mariadb-binlog --raw` following (copies, decodes nothing).
    live_tps_raw_reader: f64,
    live_raw_reader_overhead_percent: f64,
    live_cpu_raw_reader_secs: f64,
    live_peak_rss_mib: f64,
    /// CPU seconds used during the live run with the daemon, by process.
    live_cpu_daemon_secs: f64,
    live_cpu_redis_secs: f64,
    live_cpu_mariadb_secs: f64,
    /// Atomic Redis steps the daemon applied during its live run, and the mean number of
    /// transactions each carried (batching under load).
    live_steps: f64,
    live_transactions_per_step: f64,
    probes: usize,
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    probe_max_ms: f64,
    big_txn_rows: u64,
    big_txn_secs: f64,
    big_txn_peak_rss_mib: f64,
    /// Every catch-up round; the rates and ratios above are their medians.
    catch_up_rounds: Vec<CatchUpRound>,
}

/// One catch-up round: the reference, the daemon with each rule kind and the copy-only
/// reader over the same backlog, run one after the other.
#[derive(serde::Serialize, Default)]
struct CatchUpRound {
    reference_secs: f64,
    transfer_secs: f64,
    drain_secs: f64,
    delete_secs: f64,
    upsert_secs: f64,
    delete_vs_reference: f64,
    upsert_vs_reference: f64,
    /// CPU seconds used during the run by the daemon, Redis and MariaDB: Redis runs
    /// commands on one thread, so its share bounds the run's time from below.
    delete_cpu_daemon_redis_mariadb: [f64; 3],
    upsert_cpu_daemon_redis_mariadb: [f64; 3],
}

fn main() {
    let bench = Bench::start();
    let mut s = Summary {
        machine: machine(),
        catch_up_rows: CATCH_UP_ROWS,
        ..Summary::default()
    };
    eprintln!("preparing {TABLES} sysbench tables of {TABLE_ROWS} rows");
    bench
        .sysbench("prepare", &[])
        .status()
        .expect("sysbench prepare");

    // `BENCH_ONLY=live` or `BENCH_ONLY=catch-up` runs one scenario alone (a quicker loop
    // while tuning it).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    match only.as_str() {
        "catch-up" => catch_up(&bench, &mut s),
        "live" => live(&bench, &mut s, true),
        "big" => big_transaction(&bench, &mut s),
        _ => {
            catch_up(&bench, &mut s);
            live(&bench, &mut s, false);
        }
    }

    print_table(&s);
    println!(
        "{}",
        serde_json::to_string_pretty(&s).expect("summary serialises")
    );
}

/// Catch-up: a checkpoint at the current head, then the backlog; then, in each of
/// `BENCH_ROUNDS` rounds (default 5), the reference decoder, the daemon with each rule
/// kind and the copy-only reader over the same range, one after the other.
///
/// Why rounds: single runs on this machine vary by ±15 % and the reference alone moved
/// by 44 % between two runs, so one pair of timings cannot say whether the daemon is 2×
/// the reference. Each round's ratio compares runs made seconds apart; the summary gives
/// the median of the rounds' ratios (and of their rates), and the JSON every round.
fn catch_up(bench: &Bench, s: &mut Summary) {
    let start = bench.checkpoint_at_head();
    let (from, backlog) = bench.commit_backlog();
    let head = bench.head();
    eprintln!("backlog: {backlog} row changes committed");
    let rounds = catch_up_rounds();
    for round in 1..=rounds {
        wait_quiet();
        let reference = bench.reference_decode(&from, "-v");
        let mut timed = [(0.0, [0.0; 3]); 2];
        let [delete, upsert] = &mut timed;
        for (action, (secs, cpu), rss) in [
            ("delete", delete, &mut s.catch_up_delete_peak_rss_mib),
            ("upsert", upsert, &mut s.catch_up_upsert_peak_rss_mib),
        ] {
            bench.restore_checkpoint(&start);
            wait_quiet();
            let peak;
            (*secs, peak, *cpu) = bench.time_catch_up(action);
            *rss = rss.max(peak);
        }
        wait_quiet();
        let transfer = bench.reference_decode(&from, "--raw");
        wait_quiet();
        let drain = drain::seconds(&bench.db.root_url(), &from, &head);
        let r = CatchUpRound {
            reference_secs: reference,
            transfer_secs: transfer,
            drain_secs: drain,
            delete_secs: timed[0].0,
            upsert_secs: timed[1].0,
            delete_vs_reference: reference / timed[0].0,
            upsert_vs_reference: reference / timed[1].0,
            delete_cpu_daemon_redis_mariadb: timed[0].1,
            upsert_cpu_daemon_redis_mariadb: timed[1].1,
        };
        eprintln!(
            "catch-up round {round}/{rounds}: reference {reference:.2} s, delete {:.2} s \
             ({:.2}x; CPU s daemon/redis/mariadbd {:.2?}), upsert {:.2} s ({:.2}x; {:.2?}), \
             transfer only {transfer:.2} s, drain {drain:.2} s",
            r.delete_secs,
            r.delete_vs_reference,
            r.delete_cpu_daemon_redis_mariadb,
            r.upsert_secs,
            r.upsert_vs_reference,
            r.upsert_cpu_daemon_redis_mariadb
        );
        s.catch_up_rounds.push(r);
    }
    let rounds = &s.catch_up_rounds;
    let rate = |secs: fn(&CatchUpRound) -> f64| backlog as f64 / median(rounds.iter().map(secs));
    s.catch_up_delete_rows_per_sec = rate(|r| r.delete_secs);
    s.catch_up_upsert_rows_per_sec = rate(|r| r.upsert_secs);
    s.reference_rows_per_sec = rate(|r| r.reference_secs);
    s.transfer_rows_per_sec = rate(|r| r.transfer_secs);
    s.drain_rows_per_sec = rate(|r| r.drain_secs);
    s.delete_vs_reference = median(rounds.iter().map(|r| r.delete_vs_reference));
    s.upsert_vs_reference = median(rounds.iter().map(|r| r.upsert_vs_reference));
}

fn catch_up_rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Live: sysbench without anything following, with each reference reader, with the
/// daemon (and the probe), and without anything again; then, unless `live_only`, one
/// transaction of 1,000,000 rows.
///
/// The run without a reader comes first and last, and the baseline is their mean: the
/// same load runs slower as the tables churn, so a baseline measured only first would
/// count that drift as overhead of whatever ran after it.
fn live(bench: &Bench, s: &mut Summary, live_only: bool) {
    s.live_tps_without_first = bench.live_tps(None);
    live_readers(bench, s);
    live_daemon(bench, s);
    s.live_tps_without_last = bench.live_tps(None);
    s.live_tps_without = (s.live_tps_without_first + s.live_tps_without_last) / 2.0;
    let overhead = |tps: f64| 100.0 * (1.0 - tps / s.live_tps_without);
    s.live_reference_overhead_percent = overhead(s.live_tps_reference_reader);
    s.live_raw_reader_overhead_percent = overhead(s.live_tps_raw_reader);
    s.live_overhead_percent = overhead(s.live_tps_with);
    if !live_only {
        big_transaction(bench, s);
    }
}

/// The floor: what any binlog reader costs the primary, with the reference decoder (and
/// then a reader that only copies) following the same load on the shared cores.
fn live_readers(bench: &Bench, s: &mut Summary) {
    for (mode, tps, cpu) in [
        (
            "-v",
            &mut s.live_tps_reference_reader,
            &mut s.live_cpu_reference_reader_secs,
        ),
        (
            "--raw",
            &mut s.live_tps_raw_reader,
            &mut s.live_cpu_raw_reader_secs,
        ),
    ] {
        let mut reader = bench.binlog_follower(mode);
        *tps = bench.live_tps(None);
        *cpu = process_cpu_seconds(reader.id());
        let _ = reader.kill();
        let _ = reader.wait();
    }
}

/// sysbench with the daemon following, the probe measuring, and CPU per process.
fn live_daemon(bench: &Bench, s: &mut Summary) {
    let mut daemon = bench.daemon("upsert", "current");
    bench.wait_caught_up(Duration::from_secs(120));
    let mut probe_latencies = Vec::new();
    let cpu_before = bench.cpu_seconds(&daemon);
    let steps_before = bench.step_counts();
    s.live_tps_with = bench.live_tps(Some(&mut probe_latencies));
    let cpu_after = bench.cpu_seconds(&daemon);
    let steps_after = bench.step_counts();
    s.live_steps = steps_after.0 - steps_before.0;
    s.live_transactions_per_step = (steps_after.1 - steps_before.1) / s.live_steps.max(1.0);
    [
        s.live_cpu_daemon_secs,
        s.live_cpu_redis_secs,
        s.live_cpu_mariadb_secs,
    ] = [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]);
    s.live_peak_rss_mib = peak_rss_mib(&daemon);
    probe_latencies.sort_by(f64::total_cmp);
    s.probes = probe_latencies.len();
    s.probe_p50_ms = percentile(&probe_latencies, 0.50);
    s.probe_p99_ms = percentile(&probe_latencies, 0.99);
    s.probe_max_ms = probe_latencies.last().copied().unwrap_or(0.0);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// One transaction of 1,000,000 rows, with the daemon following from its checkpoint.
fn big_transaction(bench: &Bench, s: &mut Summary) {
    let mut daemon = bench.daemon("upsert", "current");
    bench.wait_caught_up(Duration::from_secs(300));
    let started = Instant::now();
    bench.exec("INSERT INTO sbtest.big SELECT seq, seq, 'c', 'p' FROM sbtest.seq_1_to_1000000");
    bench.wait_checkpoint_at(&bench.head(), Duration::from_secs(600));
    s.big_txn_rows = 1_000_000;
    s.big_txn_secs = started.elapsed().as_secs_f64();
    s.big_txn_peak_rss_mib = peak_rss_mib(&daemon);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

impl Bench {
    fn start() -> Bench {
        let binary = std::env::current_exe()
            .expect("own path")
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/examples")
            .join("cdc-cache");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --release` first",
            binary.display()
        );
        let db = MariaDb::start_with(&[
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
            "--innodb-buffer-pool-size=1G",
            "--max-binlog-size=1G",
        ]);
        let bench = Bench {
            db,
            redis: Redis::start(),
            dir: tempfile::tempdir().expect("tempdir"),
            binary,
            metrics_port: free_port(),
        };
        bench.exec("CREATE DATABASE sbtest");
        bench
            .exec("CREATE TABLE sbtest.big (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60))");
        bench.exec("CREATE TABLE sbtest.probe (id INT PRIMARY KEY, at BIGINT)");
        bench
    }

    fn exec(&self, sql: &str) {
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        mysql::query(&mut c, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn sysbench(&self, command: &str, extra: &[String]) -> Command {
        let mut c = Command::new("sysbench");
        c.args([
            "oltp_write_only",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
        ])
        .arg(format!("--mysql-port={}", self.db.port))
        .args(["--mysql-user=root", "--mysql-db=sbtest"])
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_ROWS}"))
        .args(extra)
        .arg(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        c
    }

    fn config(&self, action: &str, start: &str) -> PathBuf {
        let mut rules = String::new();
        for t in ["sbtest*", "big", "probe"] {
            let key = if t == "sbtest*" {
                "sb:{id}:{k}"
            } else {
                "x:{id}"
            };
            let key = if t == "probe" { "probe:{id}" } else { key };
            let action = if t == "probe" { "upsert" } else { action };
            rules += &format!(
                "[[rules]]\ntable = \"sbtest.{t}\"\naction = \"{action}\"\nkey = \"{key}\"\n\n"
            );
        }
        // `BENCH_SINK` adds lines to `[sink]` (e.g. `linger_ms = 1`), to measure a setting.
        let sink = std::env::var("BENCH_SINK").unwrap_or_default();
        let text = format!(
            "[source]\nurl = \"{}\"\nserver_id = 777\nstart = \"{start}\"\n\n\
             [redis]\nurl = \"{}\"\n\n[sink]\n{sink}\n\n\
             [checkpoint]\nkey = \"{CHECKPOINT_KEY}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nlevel = \"warn\"\n\n{rules}",
            self.db.url(),
            self.redis.url(),
            self.metrics_port
        );
        let path = self.dir.path().join(format!("{action}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn daemon(&self, action: &str, start: &str) -> Child {
        Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(self.config(action, start))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cdc-cache")
    }

    fn head(&self) -> String {
        let rows = mysql::rows(
            &mut mysql::conn(&self.db.root_url()).expect("connect"),
            "SHOW MASTER STATUS",
        );
        let row = rows.first().expect("binlog on");
        let file: String = row.get(0).expect("file");
        let pos: u64 = row.get(1).expect("pos");
        format!("{file}:{pos}")
    }

    fn checkpoint_position(&self) -> Option<String> {
        let text: Option<String> = self.redis.conn().get(CHECKPOINT_KEY).ok()?;
        position_of(&text?)
    }

    fn wait_caught_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.checkpoint_position() != Some(self.head()) {
            assert!(Instant::now() < deadline, "the daemon did not catch up");
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the checkpoint to reach `head`, a head known not to move. Polls one Redis
    /// connection: a new MySQL and Redis connection per poll (as `wait_caught_up` makes)
    /// costs the shared cores enough to slow the catch-up it times.
    fn wait_checkpoint_at(&self, head: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut r = self.redis.conn();
        loop {
            let text: Option<String> = r.get(CHECKPOINT_KEY).expect("GET checkpoint");
            if text.as_deref().and_then(position_of).as_deref() == Some(head) {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon did not catch up");
            sleep(Duration::from_millis(2));
        }
    }

    /// Runs the daemon until its checkpoint is at the head; returns the checkpoint.
    fn checkpoint_at_head(&self) -> String {
        let mut d = self.daemon("delete", "current");
        self.wait_caught_up(Duration::from_secs(60));
        let _ = d.kill();
        let _ = d.wait();
        self.redis.conn().get(CHECKPOINT_KEY).expect("checkpoint")
    }

    fn restore_checkpoint(&self, checkpoint: &str) {
        let mut r = self.redis.conn();
        let _: () = redis::cmd("FLUSHDB")
            .query(&mut r)
            .expect("FLUSHDB (private Redis)");
        let _: () = r.set(CHECKPOINT_KEY, checkpoint).expect("SET checkpoint");
    }

    /// Commits the catch-up backlog; returns the binlog start and the row changes made.
    fn commit_backlog(&self) -> (String, u64) {
        let from = self.head();
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        let (mut rows, mut seed, mut next_id) = (0u64, 7u64, TABLE_ROWS as u64 + 1);
        while rows < CATCH_UP_ROWS {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((seed >> 33) % 100 + 1).min(CATCH_UP_ROWS - rows);
            let table = (seed >> 40) % TABLES as u64 + 1;
            let at = (seed >> 20) % (TABLE_ROWS as u64 - 100) + 1;
            let sql = match (seed >> 50) % 3 {
                0 => {
                    let s = format!(
                        "INSERT INTO sbtest.sbtest{table} (id, k, c, pad) SELECT seq, seq, \
                         'c', 'p' FROM sbtest.seq_{next_id}_to_{}",
                        next_id + n - 1
                    );
                    next_id += n;
                    s
                }
                1 => format!(
                    "UPDATE sbtest.sbtest{table} SET k = k + 1 WHERE id BETWEEN {at} AND {}",
                    at + n - 1
                ),
                _ => format!(
                    "DELETE FROM sbtest.sbtest{table} WHERE id >= {at} ORDER BY id LIMIT {n}"
                ),
            };
            mysql::query(&mut c, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            // Deletes may find fewer rows than asked: count what the binlog holds.
            rows += affected(&mut c);
        }
        (from, rows)
    }

    /// Seconds until the checkpoint reaches the head, the daemon's peak RSS, and the CPU
    /// seconds the daemon, Redis and MariaDB used meanwhile.
    fn time_catch_up(&self, action: &str) -> (f64, f64, [f64; 3]) {
        let head = self.head();
        let servers_before = self.cpu_seconds_servers();
        let started = Instant::now();
        let mut d = self.daemon(action, "current");
        self.wait_checkpoint_at(&head, Duration::from_secs(600));
        let secs = started.elapsed().as_secs_f64();
        let peak = peak_rss_mib(&d);
        let [daemon, redis, db] = self.cpu_seconds(&d);
        let _ = d.kill();
        let _ = d.wait();
        let cpu = [daemon, redis - servers_before[0], db - servers_before[1]];
        (secs, peak, cpu)
    }

    /// Seconds for `mariadb-binlog --read-from-remote-server` to read from `from` to the
    /// end: with `-v` it decodes every row (output discarded), with `--raw` it only copies
    /// the events to a file.
    fn reference_decode(&self, from: &str, mode: &str) -> f64 {
        let (file, pos) = from.split_once(':').expect("file:pos");
        let started = Instant::now();
        let mut c = Command::new("mariadb-binlog");
        c.args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            "--user=root",
            mode,
        ])
        .arg(format!("--port={}", self.db.port))
        .arg(format!("--start-position={pos}"))
        .args(["--to-last-log", file])
        .stdout(Stdio::null());
        if mode == "--raw" {
            let dir = self.dir.path().join("raw-catch-up");
            std::fs::create_dir_all(&dir).expect("raw binlog dir");
            c.arg(format!("--result-file={}/", dir.display()));
        }
        let status = c.status().expect("run mariadb-binlog");
        assert!(status.success(), "mariadb-binlog {mode} failed");
        started.elapsed().as_secs_f64()
    }

    /// `mariadb-binlog --read-from-remote-server --stop-never` from the head. With `-v`
    /// (output discarded) it decodes every event and stores nothing; with `--raw` it only
    /// copies the events to a file: the least any binlog reader can do.
    fn binlog_follower(&self, mode: &str) -> Child {
        let head = self.head();
        let (file, pos) = head.split_once(':').expect("file:pos");
        let mut c = Command::new("mariadb-binlog");
        c.args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            "--user=root",
            "--stop-never",
            mode,
        ])
        .arg(format!("--port={}", self.db.port))
        .arg(format!("--start-position={pos}"));
        if mode == "--raw" {
            let dir = self.dir.path().join("raw");
            std::fs::create_dir_all(&dir).expect("raw binlog dir");
            c.arg(format!("--result-file={}/", dir.display()));
        }
        c.arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("run mariadb-binlog --stop-never")
    }

    /// sysbench tx/s; with `probes`, also measures commit-to-visible latency meanwhile.
    fn live_tps(&self, probes: Option<&mut Vec<f64>>) -> f64 {
        let load = self
            .sysbench(
                "run",
                &[
                    "--threads=8".into(),
                    format!("--time={}", live_secs()),
                    "--report-interval=0".into(),
                ],
            )
            .spawn()
            .expect("sysbench run");
        if let Some(out) = probes {
            self.probe(out);
        }
        let output = load.wait_with_output().expect("sysbench output");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("transactions:"))
            .and_then(|rest| rest.split('(').nth(1))
            .and_then(|rate| rate.split_whitespace().next()?.parse().ok())
            .expect("sysbench reports transactions per second")
    }

    /// Commits a row and waits for Redis to announce its key; one probe every ~40 ms
    /// during the run. The wait is on a keyspace notification, not a polling loop: on two
    /// shared cores a busy poll takes CPU (and Redis's one thread) from what it measures.
    /// The notification is published while the step that writes the key runs, so it is
    /// the tightest bound on when the key became visible. (Client-side caching's
    /// broadcast invalidation was tried instead: it saved Redis no measurable CPU and
    /// arrived later, a p99 1–3 ms higher.)
    fn probe(&self, out: &mut Vec<f64>) {
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        let mut r = self.redis.conn();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("K$")
            .query(&mut r)
            .expect("enable keyspace notifications");
        let mut sub = self.redis.conn();
        let mut pubsub = sub.as_pubsub();
        pubsub
            .psubscribe("__keyspace@*__:probe:*")
            .expect("PSUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(live_secs() - 2);
        let mut id = 0;
        while Instant::now() < deadline {
            id += 1;
            mysql::query(
                &mut c,
                &format!("INSERT INTO sbtest.probe VALUES ({id}, 0)"),
            )
            .expect("probe insert");
            let committed = Instant::now();
            let suffix = format!(":probe:{id}");
            loop {
                let message = pubsub.get_message().expect("probe lost (30 s)");
                if message.get_channel_name().ends_with(&suffix) {
                    break;
                }
            }
            out.push(committed.elapsed().as_secs_f64() * 1000.0);
            sleep(Duration::from_millis(40));
        }
    }
}

impl Bench {
    /// (steps, transactions) so far, from the daemon's `cdc_cache_step_transactions`
    /// histogram (count and sum) on its metrics endpoint.
    fn step_counts(&self) -> (f64, f64) {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("daemon metrics endpoint");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("metrics request");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("metrics response");
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in the daemon's metrics"))
        };
        (
            sample("cdc_cache_step_transactions_count"),
            sample("cdc_cache_step_transactions_sum"),
        )
    }

    /// CPU seconds (user + system) used so far by the daemon, Redis and MariaDB.
    fn cpu_seconds_servers(&self) -> [f64; 2] {
        [self.redis.pid(), self.db.pid()].map(|pid| pid.map(process_cpu_seconds).unwrap_or(0.0))
    }

    fn cpu_seconds(&self, daemon: &Child) -> [f64; 3] {
        [Some(daemon.id()), self.redis.pid(), self.db.pid()]
            .map(|pid| pid.map(process_cpu_seconds).unwrap_or(0.0))
    }
}

/// The `file:pos` of a checkpoint's text.
fn position_of(checkpoint: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(checkpoint).ok()?;
    let p = &json["position"];
    Some(format!("{}:{}", p["file"].as_str()?, p["pos"].as_u64()?))
}

/// Waits (at most 10 s) until the machine's CPUs are at least 90 % idle over 200 ms, so
/// that a timed run does not share the cores with what the last one left behind: InnoDB
/// purging the backlog's deletes, or the kernel writing back the `--raw` reader's 250 MB
/// file. (One round's daemon run once took 0.72 s where the others took 0.56-0.59 s, with
/// MariaDB using 0.34 CPU-s instead of 0.14 meanwhile.) The rounds still vary: the
/// scheduler shares two cores among the daemon, Redis and the binlog dump thread.
fn wait_quiet() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_busy_and_total();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(200));
        let now = cpu_busy_and_total();
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && busy * 10 <= total {
            return;
        }
        last = now;
    }
    eprintln!("note: the machine did not go quiet within 10 s; timing anyway");
}

/// Busy and total clock ticks of all CPUs, from the first line of /proc/stat.
fn cpu_busy_and_total() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // Fields 4 and 5 are idle and iowait.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime of a process, from /proc/<pid>/stat (in clock ticks of 1/100 s).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn affected(c: &mut mysql::Conn) -> u64 {
    let rows = mysql::rows(c, "SELECT ROW_COUNT()");
    rows.first()
        .and_then(|r| r.get::<i64, _>(0))
        .map(|n| n.max(0) as u64)
        .unwrap_or(0)
}

fn peak_rss_mib(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores, {mem:.0} GiB")
}

/// A median ratio with the lowest and highest round: `2.10x; 1.90-2.30`.
fn ratio_range(median: f64, rounds: impl Iterator<Item = f64> + Clone) -> String {
    let low = rounds.clone().fold(f64::INFINITY, f64::min);
    let high = rounds.fold(f64::NEG_INFINITY, f64::max);
    format!("{median:.2}x; {low:.2}-{high:.2}")
}

/// The median CPU seconds of each process over the rounds: `0.30 / 0.13 / 0.12`.
fn median_cpu(rounds: &[CatchUpRound], cpu: fn(&CatchUpRound) -> [f64; 3]) -> String {
    let [d, r, m] = [0, 1, 2].map(|i| median(rounds.iter().map(|x| cpu(x)[i])));
    format!("{d:.2} / {r:.2} / {m:.2}")
}

fn print_table(s: &Summary) {
    println!("machine: {}", s.machine);
    println!("{:<44} {:>14}", "scenario", "result");
    let rows = [
        (
            "catch-up, delete rules (median, rows/s)",
            format!("{:.0}", s.catch_up_delete_rows_per_sec),
        ),
        (
            "catch-up, upsert JSON rules (median)",
            format!("{:.0}", s.catch_up_upsert_rows_per_sec),
        ),
        (
            "reference mariadb-binlog -v (median)",
            format!("{:.0}", s.reference_rows_per_sec),
        ),
        (
            "mariadb-binlog --raw, transfer only (median)",
            format!("{:.0}", s.transfer_rows_per_sec),
        ),
        (
            "mysql_async drain, no decoding (median)",
            format!("{:.0}", s.drain_rows_per_sec),
        ),
        (
            "delete / reference (median; lowest-highest)",
            ratio_range(
                s.delete_vs_reference,
                s.catch_up_rounds.iter().map(|r| r.delete_vs_reference),
            ),
        ),
        (
            "upsert / reference (median; lowest-highest)",
            ratio_range(
                s.upsert_vs_reference,
                s.catch_up_rounds.iter().map(|r| r.upsert_vs_reference),
            ),
        ),
        (
            "catch-up delete CPU s daemon/redis/db (med.)",
            median_cpu(&s.catch_up_rounds, |r| r.delete_cpu_daemon_redis_mariadb),
        ),
        (
            "catch-up upsert CPU s daemon/redis/db (med.)",
            median_cpu(&s.catch_up_rounds, |r| r.upsert_cpu_daemon_redis_mariadb),
        ),
        (
            "peak RSS catch-up delete / upsert (MiB)",
            format!(
                "{:.0} / {:.0}",
                s.catch_up_delete_peak_rss_mib, s.catch_up_upsert_peak_rss_mib
            ),
        ),
        (
            "sysbench tx/s without daemon (first / last: mean)",
            format!(
                "{:.0} / {:.0}: {:.0}",
                s.live_tps_without_first, s.live_tps_without_last, s.live_tps_without
            ),
        ),
        (
            "sysbench tx/s with daemon",
            format!("{:.0}", s.live_tps_with),
        ),
        ("overhead", format!("{:.1} %", s.live_overhead_percent)),
        (
            "sysbench tx/s with mariadb-binlog -v following",
            format!("{:.0}", s.live_tps_reference_reader),
        ),
        (
            "overhead of that reference reader",
            format!("{:.1} %", s.live_reference_overhead_percent),
        ),
        (
            "CPU s of the reference reader in its run",
            format!("{:.1}", s.live_cpu_reference_reader_secs),
        ),
        (
            "sysbench tx/s with mariadb-binlog --raw following",
            format!("{:.0}", s.live_tps_raw_reader),
        ),
        (
            "overhead of that raw reader / its CPU s",
            format!(
                "{:.1} % / {:.1}",
                s.live_raw_reader_overhead_percent, s.live_cpu_raw_reader_secs
            ),
        ),
        (
            "CPU s in the live run: daemon / redis / mariadbd",
            format!(
                "{:.1} / {:.1} / {:.1}",
                s.live_cpu_daemon_secs, s.live_cpu_redis_secs, s.live_cpu_mariadb_secs
            ),
        ),
        (
            "live steps / transactions per step",
            format!("{:.0} / {:.2}", s.live_steps, s.live_transactions_per_step),
        ),
        (
            "commit-to-visible p50 / p99 / max (ms)",
            format!(
                "{:.2} / {:.2} / {:.2}",
                s.probe_p50_ms, s.probe_p99_ms, s.probe_max_ms
            ),
        ),
        ("probes", s.probes.to_string()),
        ("peak RSS live (MiB)", format!("{:.0}", s.live_peak_rss_mib)),
        (
            "1,000,000-row transaction applied in (s)",
            format!("{:.1}", s.big_txn_secs),
        ),
        (
            "peak RSS 1M-row transaction (MiB)",
            format!("{:.0}", s.big_txn_peak_rss_mib),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<44} {value:>14}");
    }
}
