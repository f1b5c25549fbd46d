//! Faults the daemon must handle without losing or skipping anything (issue: faults):
//! long outages of either side, a purged binlog, a checkpoint from another server, and
//! Redis losing its data. Each ends with `verify` against the database.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use redis::Commands;

use support::{mysql, run_cli, run_cli_env, Daemon, Env, MariaDb};

const RULES: &str = "\
[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:by-v:{v}\"\n";

fn setup(env: &Env) {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
}

fn verify_clean(env: &Env) {
    let config = env.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    println!("verify: {}", out.lines().last().unwrap_or_default());
    assert_eq!(code, 0, "verify found mismatches:\n{out}{err}");
}

/// Waits for the daemon to stop by itself, with `code`, having logged `says`.
fn stops_with(daemon: &mut Daemon, code: i32, says: &str) {
    let exited = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(exited, code, "{log}");
    assert!(log.contains(says), "the log says `{says}`:\n{log}");
}

/// The delays of the "reconnecting" log lines, in milliseconds.
fn reconnect_delays(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("reconnecting after transient failure"))
        .filter_map(|l| l.split("delay_ms=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// One side down for 30 s while a writer commits on MariaDB (when it is up): afterwards
/// nothing is lost, the reconnects were logged with their delays, and the backoff stayed
/// at its cap (`max_backoff_ms = 500` in the test config).
fn outage_loses_nothing(target: &str, down: impl FnOnce(&mut Env), up: impl FnOnce(&mut Env)) {
    let mut env = Env::start();
    setup(&env);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    let stop = Arc::new(AtomicBool::new(false));
    let w = support::kv_writer(
        env.db.root_url(),
        stop.clone(),
        500,
        Duration::from_millis(5),
    );
    sleep(Duration::from_secs(2));
    down(&mut env);
    sleep(Duration::from_secs(30));
    up(&mut env);
    sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (committed, _) = w.join().expect("writer");
    env.wait_caught_up(Duration::from_secs(120));
    let log = daemon.log();
    let delays = reconnect_delays(&log);
    println!(
        "{target} down 30 s: committed {committed}; {} reconnect attempts, delays {delays:?}",
        delays.len()
    );
    assert!(delays.len() >= 5, "retried while {target} was down:\n{log}");
    assert!(
        delays.iter().all(|d| *d <= 500),
        "backoff capped at max_backoff_ms: {delays:?}"
    );
    assert!(log.contains(&format!("target=\"{target}\"")), "{log}");
    verify_clean(&env);
    assert!(daemon.is_running(), "{log}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn redis_down_for_30_seconds_while_mariadb_commits_loses_nothing() {
    outage_loses_nothing(
        "redis",
        |env| env.redis.shutdown_saving(),
        |env| env.redis.launch_again(),
    );
}

#[test]
fn mariadb_down_for_30_seconds_loses_nothing() {
    outage_loses_nothing("mysql", |env| env.db.kill(), |env| env.db.restart());
}

#[test]
fn a_purged_binlog_stops_with_exit_3_and_reset_recovers() {
    let env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv VALUES (1, 1), (2, 2)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    let checkpoint = env.checkpoint().expect("checkpoint").position;

    // While the daemon is down the server moves on and purges the checkpoint's file.
    env.exec(&[
        "UPDATE t.kv SET v = 10 WHERE id = 1",
        "FLUSH BINARY LOGS",
        "INSERT INTO t.kv VALUES (3, 3)",
        "FLUSH BINARY LOGS",
    ]);
    let head = env.head();
    // MariaDB keeps a file until InnoDB has made its transactions durable (its binlog
    // checkpoint); with relaxed flushing that takes a moment, so purge until it is gone.
    support::eventually("the purge", Duration::from_secs(30), || {
        env.exec(&[
            "FLUSH ENGINE LOGS",
            &format!("PURGE BINARY LOGS TO '{}'", head.file),
        ]);
        let logs = mysql::rows(&mut env.sql(), "SHOW BINARY LOGS");
        let first: String = logs.first().and_then(|r| r.get(0)).expect("a binlog");
        (first == head.file).then_some(())
    });

    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    let last = log.lines().last().unwrap_or_default().to_string();
    println!("stop message: {last}");
    for needle in [
        checkpoint.to_string(),
        head.file.clone(),
        "cdc-cache reset --yes".into(),
    ] {
        assert!(log.contains(&needle), "the message names {needle}:\n{log}");
    }
    assert_eq!(
        log.matches("reconnecting").count(),
        0,
        "no retry loop:\n{log}"
    );

    // The documented way out, then the cache follows again and matches the database.
    // Every key under the rules' patterns goes, also one today's column types say no rule
    // made (a table dropped since may have); one that is not UTF-8 stays (no template
    // renders it) and does not stop the reset.
    let mut redis = env.redis.conn();
    let _: () = redis
        .set("kv:1:meta", "made by a table since dropped")
        .expect("SET");
    let binary = b"kv:\xff".as_slice();
    let _: () = redis.set(binary, "binary").expect("SET");
    let path = config.to_str().expect("utf-8");
    let (code, out, err) = run_cli(&["reset", "--yes", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    let mut left: Vec<Vec<u8>> = redis.keys("kv:*").expect("KEYS");
    left.sort();
    assert_eq!(left, [binary], "{out}");
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["UPDATE t.kv SET v = v + 100"]);
    env.wait_caught_up(Duration::from_secs(30));
    verify_clean(&env);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn a_checkpoint_from_another_server_stops_with_exit_3() {
    let env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);

    // Another server (its own server_id), with the same binlog file names.
    let other = MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=FULL",
        "--server-id=2",
    ]);
    let other_config = env.config_with(&other.url(), "current", "", RULES);
    let mut daemon = Daemon::start(&other_config);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("server_id 1") && log.contains("server_id 2"),
        "{log}"
    );
    assert!(log.contains("reset --yes"), "{log}");
}

/// A daemon following `t.kv`, with row 1 applied.
fn following_past_row_one(env: &Env) -> Daemon {
    setup(env);
    let daemon = Daemon::start_ready(env, &env.config("current", RULES));
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    daemon
}

/// Sends `signal` (`-STOP`, `-CONT`) to the daemon.
fn send_signal(daemon: &Daemon, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &daemon.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Writes the checkpoint a step applying everything committed would, in another
/// process's name (`cache-2/41/00c0ffee`).
fn foreign_checkpoint_at_head(env: &Env) {
    let mut other = env.checkpoint().expect("checkpoint");
    move_to_head(env, &mut other);
    other.writer = Some("cache-2/41/00c0ffee".into());
    let _: () = redis::cmd("SET")
        .arg(support::CHECKPOINT_KEY)
        .arg(other.encode())
        .query(&mut env.redis.conn())
        .expect("SET");
}

/// Moves `checkpoint` to the server's head, its GTIDs too when it has them: the record a
/// step applying everything committed so far would write.
fn move_to_head(env: &Env, checkpoint: &mut cdc_cache::checkpoint::Checkpoint) {
    checkpoint.position = env.head();
    if checkpoint.gtid.is_some() {
        let rows = mysql::rows(&mut env.sql(), "SELECT @@global.gtid_binlog_pos");
        checkpoint.gtid = rows.first().and_then(|r| r.get(0));
    }
}

#[test]
fn a_late_step_of_its_own_is_resumed_from_and_another_writer_stops_it_by_name() {
    // A step the daemon gave up on (no reply within the response timeout) can run when a
    // stalled Redis wakes, after the reconnected daemon read the checkpoint. The next
    // step is then fenced on a checkpoint its own process wrote. Simulated: with the daemon
    // stopped, the test commits a row and writes, as that late step would, the row's key
    // and a checkpoint past it in the daemon's name. The daemon must resume from that
    // checkpoint (not apply the row again, not stop); a checkpoint in another name stops it.
    let env = Env::start();
    let mut daemon = following_past_row_one(&env);
    let mut late = env.checkpoint().expect("checkpoint");
    assert!(late
        .writer
        .as_deref()
        .is_some_and(|w| w.contains(&format!("/{}/", daemon.pid()))));

    send_signal(&daemon, "-STOP");
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    move_to_head(&env, &mut late);
    let mut c = env.redis.conn();
    let _: () = redis::cmd("MSET")
        .arg("kv:2")
        .arg("written by the late step")
        .arg(support::CHECKPOINT_KEY)
        .arg(late.encode())
        .query(&mut c)
        .expect("MSET");
    send_signal(&daemon, "-CONT");

    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert!(daemon.is_running(), "{}", daemon.log());
    let get = |key: &str| -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut env.redis.conn())
            .expect("GET")
    };
    assert_eq!(
        get("kv:2").as_deref(),
        Some("written by the late step"),
        "row 2 applied again"
    );
    assert!(
        get("kv:3").is_some_and(|v| v.contains("3")),
        "row 3 applied"
    );
    // The step after the refused one may have passed the fence (it expected what the late
    // step wrote), so the test can see row 3 applied before the daemon has even logged the
    // refusal. What follows tests the fence, so wait for the refusal and for the session
    // to be back (a checkpoint moved while the daemon reconnects is the next test's).
    support::eventually(
        "the refusal and the session after the late step",
        Duration::from_secs(30),
        || {
            let log = daemon.log();
            (log.contains("ran late") && log.matches("streaming binlog").count() >= 2).then_some(())
        },
    );

    // The same, in another process's name: a stop (exit 3) that names that process.
    send_signal(&daemon, "-STOP");
    env.exec(&["INSERT INTO t.kv VALUES (4, 4)"]);
    foreign_checkpoint_at_head(&env);
    send_signal(&daemon, "-CONT");
    env.exec(&["INSERT INTO t.kv VALUES (5, 5)"]);
    stops_with(&mut daemon, 3, "written by cache-2/41/00c0ffee");
}

#[test]
fn a_checkpoint_another_writer_moved_while_the_daemon_reconnected_stops_it() {
    // Another writer that moves the checkpoint while this daemon is between sessions is
    // met as the next session starts, not at a fence: the daemon must stop all the same,
    // not resume from it. Simulated: the daemon stopped, its Redis connections closed, a
    // checkpoint past the next row written in another process's name.
    let env = Env::start();
    let mut daemon = following_past_row_one(&env);
    send_signal(&daemon, "-STOP");
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    foreign_checkpoint_at_head(&env);
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut env.redis.conn())
        .expect("CLIENT KILL");
    send_signal(&daemon, "-CONT");
    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    stops_with(
        &mut daemon,
        3,
        "while this daemon was reconnecting; it was written by cache-2/41/00c0ffee",
    );
}

#[test]
fn redis_restarted_empty_continues_and_verify_is_clean_after_new_writes() {
    let mut env = Env::start();
    setup(&env);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_50"]);
    env.wait_caught_up(Duration::from_secs(30));
    verify_clean(&env);

    env.redis.restart(); // no persistence: everything is gone, the checkpoint too
    env.exec(&["INSERT INTO t.kv VALUES (51, 51)"]);
    env.wait_caught_up(Duration::from_secs(60));
    // Per the policy the daemon resumed where it was: rows changed since are cached, rows
    // untouched since the loss are misses, which verify reports.
    let config = env.dir.path().join("config.toml");
    let (code, out, _) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("50 missing, 0 different, 0 extra"), "{out}");

    // New writes to every row bring the cache back to the database.
    env.exec(&["UPDATE t.kv SET v = v + 1"]);
    env.wait_caught_up(Duration::from_secs(60));
    verify_clean(&env);
    let log = daemon.log();
    assert!(log.contains("checkpoint vanished"), "{log}");
    let metrics = support::prom::scrape(env.metrics_port).expect("/metrics");
    assert_eq!(metrics.get("cdc_cache_checkpoint_lost_total"), Some(&1.0));
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn a_silent_mariadb_is_detected_by_the_heartbeat_and_resumed() {
    let env = Env::start();
    setup(&env);
    // heartbeat_secs = 1 in the test config: 3 silent seconds mean a dead connection.
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    env.db.pause(true);
    sleep(Duration::from_secs(6));
    env.db.pause(false);
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    env.wait_caught_up(Duration::from_secs(60));
    let log = daemon.log();
    assert!(
        log.contains("no binlog event or heartbeat for 3 s"),
        "the silence was noticed:\n{log}"
    );
    verify_clean(&env);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn a_refused_part_of_a_split_transaction_keeps_the_checkpoint_before_it() {
    // A transaction larger than one step goes to Redis in parts, and only its last part
    // moves the checkpoint. When an earlier part is refused (here: a key the Redis user may
    // no longer write), no later part may land and move the checkpoint past the
    // transaction: after the refusal is fixed, the restarted daemon must apply it whole.
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.a (id INT PRIMARY KEY)",
        "CREATE TABLE t.b (id INT PRIMARY KEY)",
    ]);
    let acl = |keys: &str| {
        env.redis.command(&format!(
            "ACL SETUSER cdc on >pw resetkeys ~a:* ~{0} ~{0}:* {keys} +@all",
            support::CHECKPOINT_KEY
        ))
    };
    let rules = "[[rules]]\ntable = \"t.a\"\naction = \"upsert\"\nkey = \"a:{id}\"\n\n\
                 [[rules]]\ntable = \"t.b\"\naction = \"upsert\"\nkey = \"b:{id}\"\n";
    let config = env.config_with(&env.db.url(), "current", "max_ops_per_step = 2", rules);
    let url = env.redis.url().replace("redis://", "redis://cdc:pw@");
    let envs = [("CDC_CACHE_REDIS__URL", url.as_str())];
    let path = config.to_str().expect("utf-8");

    // Not allowed the keys of rules[1] from the start: `check` and the daemon say so
    // before any step, and nothing is written.
    acl("");
    let (code, out, err) = run_cli_env(&["check", "--config", path], &envs);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("rules[1]") && out.contains("`b:0`"),
        "{out}{err}"
    );
    let mut daemon = Daemon::start_with_env(&config, &envs);
    stops_with(&mut daemon, 2, "a key of rules[1]");
    assert_eq!(env.checkpoint(), None, "nothing written");

    // Allowed at start, refused once running.
    acl("~b:*");
    let mut daemon = Daemon::start_with_env(&config, &envs);
    support::eventually("the first checkpoint", Duration::from_secs(30), || {
        assert!(daemon.is_running(), "{}", daemon.log());
        env.checkpoint()
    });
    let before = env.checkpoint().expect("checkpoint").position;
    acl("");
    // Two parts: b:1 and b:2 (refused), then a:1 with the checkpoint.
    env.exec(&[
        "BEGIN",
        "INSERT INTO t.b VALUES (1), (2)",
        "INSERT INTO t.a VALUES (1)",
        "COMMIT",
    ]);
    stops_with(
        &mut daemon,
        3,
        "Redis refused a cache write, MSET of 2 keys `b:1` … `b:2`",
    );
    // Anything the daemon sent has been run by now: this reply comes after it.
    let _: () = redis::cmd("PING")
        .query(&mut env.redis.conn())
        .expect("PING");
    assert_eq!(
        env.checkpoint().expect("checkpoint").position,
        before,
        "the checkpoint stays before the transaction"
    );

    acl("~b:*");
    let mut daemon = Daemon::start_with_env(&config, &envs);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["a:1", "b:1", "b:2"]);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}
