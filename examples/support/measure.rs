//! What the harness reads from /proc: CPU time, peak memory, and whether the machine is quiet.

use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Waits (at most 10 s) until the machine's CPUs are at least 90 % idle over 200 ms, so
/// that a timed run does not share the cores with what the last one left behind: InnoDB
/// purging the backlog's deletes, or the kernel writing back the `--raw` reader's 250 MB
/// file. (One round's daemon run once took 0.72 s where the others took 0.56-0.59 s, with
/// MariaDB using 0.34 CPU-s instead of 0.14 meanwhile.) The rounds still vary: the
/// scheduler shares two cores among the daemon, Redis and the binlog dump thread.
pub fn wait_quiet() {
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
pub fn process_cpu_seconds(pid: u32) -> f64 {
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

pub fn peak_rss_mib(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
