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
//! `BENCH_SINK` (lines added to the daemon's `[sink]`, e.g. `linger_ms = 1`), and
//! `BENCH_LIVE_PAIRS` (more alternated runs without and with the daemon, for a steadier
//! overhead on a machine whose speed drifts).

#[path = "support/drain.rs"]
mod drain;
#[path = "support/env.rs"]
mod env;
#[path = "support/measure.rs"]
mod measure;
#[path = "support/report.rs"]
mod report;
#[path = "../tests/support/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::time::{Duration, Instant};

use env::Bench;
use measure::{peak_rss_mib, process_cpu_seconds, wait_quiet};
use report::{machine, median, percentile, print_table, CatchUpRound, Summary};

pub const CHECKPOINT_KEY: &str = "cdc-cache:checkpoint:bench";
pub const TABLES: u32 = 4;
pub const TABLE_ROWS: u32 = 100_000;
pub const CATCH_UP_ROWS: u64 = 1_000_000;
/// The live run's length; `BENCH_LIVE_SECS` shortens it for quick tuning loops.
pub fn live_secs() -> u64 {
    std::env::var("BENCH_LIVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
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
    env_count("BENCH_ROUNDS").filter(|&n| n > 0).unwrap_or(5)
}

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
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
    live_pairs(bench, s);
    if !live_only {
        big_transaction(bench, s);
    }
}

/// `BENCH_LIVE_PAIRS` (default 0) more pairs of runs, without a reader and with the
/// daemon, in alternating order (without first, then with first, …): this machine's
/// speed drifts by a quarter over minutes, which one pair of runs cannot tell from the
/// daemon's cost; the median of the pairs' overheads can.
fn live_pairs(bench: &Bench, s: &mut Summary) {
    for pair in 0..env_count("BENCH_LIVE_PAIRS").unwrap_or(0) {
        let (mut without, mut with) = (0.0, 0.0);
        for daemon_first in [pair % 2 == 1, pair % 2 == 0] {
            if daemon_first {
                let mut daemon = bench.daemon("upsert", "current");
                bench.wait_caught_up(Duration::from_secs(120));
                with = bench.live_tps(None);
                let _ = daemon.kill();
                let _ = daemon.wait();
            } else {
                without = bench.live_tps(None);
            }
        }
        eprintln!(
            "live pair {}: without {without:.0} tx/s, with {with:.0}",
            pair + 1
        );
        s.live_pair_overheads_percent
            .push(100.0 * (1.0 - with / without));
    }
    s.live_pair_overhead_median_percent = median(s.live_pair_overheads_percent.iter().copied());
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
