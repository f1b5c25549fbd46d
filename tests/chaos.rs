//! Chaos soak: sysbench `oltp_write_only` against the private MariaDB for 95 s while the
//! daemon is SIGKILLed every 5 s, MariaDB is restarted once, Redis is hung (SIGSTOP) for
//! 10 s once and restarted once. Afterwards `verify` must find Redis equal to the database.

mod support;

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{run_cli, Daemon, Env};

const SOAK: Duration = Duration::from_secs(95);
const KILL_EVERY: Duration = Duration::from_secs(5);

const RULES: &str = "\
[[rules]]\ntable = \"sbtest.sbtest1\"\naction = \"upsert\"\nkey = \"sb1:{id}\"\n\n\
[[rules]]\ntable = \"sbtest.sbtest2\"\naction = \"upsert\"\nkey = \"sb2:{id}\"\n\n\
[[rules]]\ntable = \"sbtest.sbtest3\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"sb3:{id}\"\n\n\
[[rules]]\ntable = \"sbtest.sbtest4\"\naction = \"upsert\"\ncolumns = [\"id\", \"k\"]\nkey = \"sb4:{id}\"\n\n\
[[rules]]\ntable = \"sbtest.sbtest*\"\naction = \"delete\"\nkey = \"sbk:{k}\"\n";

fn sysbench(port: u16, command: &str, extra: &[String]) -> Command {
    let mut c = Command::new(support::servers::find_binary("sysbench"));
    c.args([
        "oltp_write_only",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
    ])
    .arg(format!("--mysql-port={port}"))
    .args([
        "--mysql-user=root",
        "--mysql-db=sbtest",
        "--tables=4",
        "--table-size=2000",
    ])
    .args(extra)
    .arg(command);
    c
}

/// A sysbench run for the time left; it is restarted if the MariaDB restart ends it.
fn start_load(port: u16, left: Duration) -> Child {
    sysbench(
        port,
        "run",
        &[
            "--threads=4".into(),
            format!("--time={}", left.as_secs().max(1)),
            "--mysql-ignore-errors=all".into(),
            "--report-interval=0".into(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn sysbench")
}

/// The "transactions: N" and "ignored errors: N" figures of a finished run.
fn figures(child: Child) -> (u64, u64) {
    let out = child.wait_with_output().expect("sysbench output");
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (figure("transactions:"), figure("ignored errors:"))
}

#[test]
fn chaos_soak_under_sysbench_ends_with_a_clean_verify() {
    let mut env = Env::start();
    env.exec(&["CREATE DATABASE sbtest"]);
    // The daemon follows from before the tables exist, so every row passes through it.
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let prepared = sysbench(env.db.port, "prepare", &[])
        .stdout(Stdio::null())
        .status()
        .expect("sysbench prepare");
    assert!(prepared.success(), "sysbench prepare failed");

    let started = Instant::now();
    let mut load = start_load(env.db.port, SOAK);
    let (mut kills, mut committed, mut failed, mut runs) = (0u32, 0u64, 0u64, 1u32);
    let (mut db_restarted, mut redis_hung, mut redis_restarted) = (false, false, false);
    while started.elapsed() < SOAK {
        sleep(KILL_EVERY);
        daemon.kill();
        kills += 1;
        let t = started.elapsed();
        if !db_restarted && t > Duration::from_secs(25) {
            env.db.kill();
            sleep(Duration::from_secs(1));
            env.db.restart();
            db_restarted = true;
        }
        daemon = Daemon::start(&config);
        if !redis_hung && t > Duration::from_secs(45) {
            env.redis.pause(true);
            sleep(Duration::from_secs(10));
            env.redis.pause(false);
            redis_hung = true;
        }
        if !redis_restarted && t > Duration::from_secs(70) {
            env.redis.shutdown_saving();
            sleep(Duration::from_secs(1));
            env.redis.launch_again();
            redis_restarted = true;
        }
        if load.try_wait().expect("sysbench status").is_some() && started.elapsed() < SOAK {
            let (ok, errors) = figures(load);
            committed += ok;
            failed += errors;
            load = start_load(env.db.port, SOAK.saturating_sub(started.elapsed()));
            runs += 1;
        }
    }
    let (ok, errors) = figures(load);
    committed += ok;
    failed += errors;
    assert!(db_restarted && redis_hung && redis_restarted);
    assert!(kills >= 15, "only {kills} kills");

    env.wait_caught_up(Duration::from_secs(180));
    let path = config.to_str().expect("utf-8");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    let summary = out.lines().last().unwrap_or_default().to_string();
    println!(
        "chaos soak: {kills} kills, {committed} sysbench transactions ({failed} ignored \
         errors) in {runs} run(s), MariaDB restarted, Redis hung 10 s and restarted; \
         verify: {summary}"
    );
    assert_eq!(
        code,
        0,
        "verify after the soak:\n{out}{err}\n{}",
        daemon.log()
    );
    assert!(committed > 1000, "the load ran: {committed} transactions");
    assert!(out.contains("0 mismatches"), "{out}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log()
    );
}
