//! The harness's summary: its fields (also the JSON), the medians and the printed table.

#[derive(serde::Serialize, Default)]
pub struct Summary {
    pub machine: String,
    pub catch_up_rows: u64,
    pub catch_up_delete_rows_per_sec: f64,
    pub catch_up_delete_peak_rss_mib: f64,
    pub catch_up_upsert_rows_per_sec: f64,
    pub catch_up_upsert_peak_rss_mib: f64,
    pub reference_rows_per_sec: f64,
    /// `mariadb-binlog --raw` over the same range: the server sending the events to a
    /// client that only copies them to a file.
    pub transfer_rows_per_sec: f64,
    /// The same range pulled through mysql_async and dropped (`support/drain.rs`): the
    /// floor for the daemon, which reads the same way.
    pub drain_rows_per_sec: f64,
    pub delete_vs_reference: f64,
    pub upsert_vs_reference: f64,
    /// The mean of the runs without a reader, first and last.
    pub live_tps_without: f64,
    pub live_tps_without_first: f64,
    pub live_tps_without_last: f64,
    pub live_tps_with: f64,
    pub live_overhead_percent: f64,
    /// `BENCH_LIVE_PAIRS` alternated pairs of runs without and with the daemon: each
    /// pair's overhead, and their median.
    pub live_pair_overheads_percent: Vec<f64>,
    pub live_pair_overhead_median_percent: f64,
    /// sysbench tx/s with `mariadb-binlog -v` following instead of the daemon.
    pub live_tps_reference_reader: f64,
    pub live_reference_overhead_percent: f64,
    pub live_cpu_reference_reader_secs: f64,
    /// sysbench tx/s with `mariadb-binlog --raw` following (copies, decodes nothing).
    pub live_tps_raw_reader: f64,
    pub live_raw_reader_overhead_percent: f64,
    pub live_cpu_raw_reader_secs: f64,
    pub live_peak_rss_mib: f64,
    /// CPU seconds used during the live run with the daemon, by process.
    pub live_cpu_daemon_secs: f64,
    pub live_cpu_redis_secs: f64,
    pub live_cpu_mariadb_secs: f64,
    /// Atomic Redis steps the daemon applied during its live run, and the mean number of
    /// transactions each carried (batching under load).
    pub live_steps: f64,
    pub live_transactions_per_step: f64,
    pub probes: usize,
    pub probe_p50_ms: f64,
    pub probe_p99_ms: f64,
    pub probe_max_ms: f64,
    pub big_txn_rows: u64,
    pub big_txn_secs: f64,
    pub big_txn_peak_rss_mib: f64,
    /// Every catch-up round; the rates and ratios above are their medians.
    pub catch_up_rounds: Vec<CatchUpRound>,
}

/// One catch-up round: the reference, the daemon with each rule kind and the copy-only
/// reader over the same backlog, run one after the other.
#[derive(serde::Serialize, Default)]
pub struct CatchUpRound {
    pub reference_secs: f64,
    pub transfer_secs: f64,
    pub drain_secs: f64,
    pub delete_secs: f64,
    pub upsert_secs: f64,
    pub delete_vs_reference: f64,
    pub upsert_vs_reference: f64,
    /// CPU seconds used during the run by the daemon, Redis and MariaDB: Redis runs
    /// commands on one thread, so its share bounds the run's time from below.
    pub delete_cpu_daemon_redis_mariadb: [f64; 3],
    pub upsert_cpu_daemon_redis_mariadb: [f64; 3],
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

pub fn machine() -> String {
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

pub fn print_table(s: &Summary) {
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
            "overhead, median of alternated pairs",
            pairs(
                &s.live_pair_overheads_percent,
                s.live_pair_overhead_median_percent,
            ),
        ),
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

/// `median % (pair, pair, …)`, or `-` when no pairs were run.
fn pairs(each: &[f64], median: f64) -> String {
    if each.is_empty() {
        return "-".into();
    }
    let list: Vec<String> = each.iter().map(|p| format!("{p:.1}")).collect();
    format!("{median:.1} % ({})", list.join(", "))
}
