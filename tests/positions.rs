//! Issue 2, items 5 and 8: start policies, checkpoints ahead of and behind the server's
//! head, and the fail-closed stop when DDL removes a column a key template uses.

mod support;

use std::time::Duration;

use cdc_cache::checkpoint::{Checkpoint, Position};
use redis::Commands;
use support::{Daemon, Env, CHECKPOINT_KEY};

const RULE: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

fn setup() -> Env {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    env
}

/// Runs the daemon with `start` until it has applied everything, then stops it.
fn run_until_caught_up(env: &Env, start: &str) {
    let mut daemon = Daemon::start_ready(env, &env.config(start, RULE));
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn start_current_skips_history() {
    let env = setup();
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULE));
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["kv:2"]);

    // `status` reports the checkpoint, the head and the lag.
    let config = env.config("current", RULE);
    let (code, stdout, stderr) =
        support::run_cli(&["status", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("status is JSON");
    let head = env.head();
    assert_eq!(status["head"]["pos"], head.pos);
    assert_eq!(status["checkpoint"]["pos"], head.pos);
    assert_eq!(status["lag_bytes"], 0);
    // And which process wrote it (`host/pid/random`).
    let writer = status["written_by"].as_str().unwrap_or_default();
    assert!(writer.contains(&format!("/{}/", daemon.pid())), "{status}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);

    // Stopped while writes continue: the lag shows in bytes.
    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    let (_, stdout, _) = support::run_cli(&["status", "--config", config.to_str().expect("utf-8")]);
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("status is JSON");
    assert_eq!(status["lag_bytes"], env.head().pos - head.pos);
}

#[test]
fn start_earliest_replays_every_binlog() {
    let env = setup();
    env.exec(&[
        "INSERT INTO t.kv VALUES (1, 1)",
        "FLUSH BINARY LOGS",
        "INSERT INTO t.kv VALUES (2, 2)",
    ]);
    run_until_caught_up(&env, "earliest");
    assert_eq!(env.cache_keys(), ["kv:1", "kv:2"]);
}

#[test]
fn start_at_an_explicit_position_and_checkpoint_precedence() {
    let env = setup();
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    let after_first = env.head();
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    run_until_caught_up(&env, &after_first.to_string());
    assert_eq!(env.cache_keys(), ["kv:2"]);

    // With a checkpoint, the start policy is ignored: nothing before it is re-applied.
    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    run_until_caught_up(&env, "earliest");
    assert_eq!(env.cache_keys(), ["kv:2", "kv:3"]);
}

#[test]
fn a_checkpoint_behind_the_head_reapplies_from_there() {
    let env = setup();
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULE));
    let before = env.checkpoint().expect("initial checkpoint");
    env.exec(&[
        "INSERT INTO t.kv VALUES (1, 1)",
        "INSERT INTO t.kv VALUES (2, 2)",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);

    // Move the checkpoint back (as a restored Redis snapshot would) and lose a key.
    let _: () = env
        .redis
        .conn()
        .set(CHECKPOINT_KEY, before.encode())
        .expect("SET");
    let _: () = env.redis.conn().del("kv:1").expect("DEL");
    run_until_caught_up(&env, "current");
    assert_eq!(
        env.cache_keys(),
        ["kv:1", "kv:2"],
        "replayed from the older checkpoint"
    );
}

#[test]
fn a_checkpoint_ahead_of_the_head_or_unknown_file_exits_3() {
    let env = setup();
    run_until_caught_up(&env, "current");
    let cp = env.checkpoint().expect("checkpoint");
    let head = env.head();
    for (position, needle) in [
        (
            Position::new(head.file.clone(), head.pos + 1000),
            "ahead of the server's head",
        ),
        (
            Position::new("binlog.000999", 4),
            "ahead of the server's head",
        ),
    ] {
        let ahead = Checkpoint::new(position.clone(), cp.server.clone(), 0);
        let _: () = env
            .redis
            .conn()
            .set(CHECKPOINT_KEY, ahead.encode())
            .expect("SET");
        let mut daemon = Daemon::start(&env.config("current", RULE));
        let code = daemon.wait_exit(Duration::from_secs(30));
        let log = daemon.log();
        assert_eq!(code, 3, "{log}");
        assert!(
            log.contains(needle) && log.contains(&position.to_string()),
            "{log}"
        );
        let still: String = env.redis.conn().get(CHECKPOINT_KEY).expect("GET");
        assert_eq!(
            still,
            ahead.encode(),
            "the checkpoint is left for the operator"
        );
    }
}

#[test]
fn dropping_a_template_column_while_running_stops_with_exit_3() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.users (id INT PRIMARY KEY, email VARCHAR(50), n INT)",
    ]);
    let rules =
        "[[rules]]\ntable = \"t.users\"\naction = \"delete\"\nkey = \"user:by-email:{email}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO t.users VALUES (1, 'a@x', 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let applied = env.checkpoint().expect("checkpoint").position;

    env.exec(&[
        "ALTER TABLE t.users DROP COLUMN email",
        "INSERT INTO t.users VALUES (2, 2)",
    ]);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("t.users") && log.contains("email"),
        "names table and column: {log}"
    );
    println!("stop message: {}", log.lines().last().unwrap_or_default());
    let stopped = env.checkpoint().expect("checkpoint").position;
    assert!(
        log.contains(&format!("{}:", stopped.file)),
        "names the binlog position: {log}"
    );
    // The checkpoint may cover changes before the DDL, never the DDL or what follows.
    assert!(
        stopped >= applied && stopped < env.head(),
        "checkpoint {stopped} vs head {}",
        env.head()
    );

    // A restart refuses again instead of skipping the DDL.
    let mut again = Daemon::start(&env.config("current", rules));
    assert_ne!(
        again.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        again.log()
    );
    assert_eq!(env.checkpoint().expect("checkpoint").position, stopped);
}

/// Each change of the server's `binlog_checksum` rotates the binlog while the daemon
/// follows; the checkpoint must keep naming the file it is in (it was cut to
/// `binlog.00` after a switch to NONE), so that a restart resumes there.
#[test]
fn checkpoints_name_the_right_file_across_binlog_checksum_changes() {
    let env = setup();
    let config = env.config("current", RULE);
    let mut daemon = Daemon::start_ready(&env, &config);
    let changes = [
        "SET GLOBAL binlog_checksum = NONE",
        "FLUSH BINARY LOGS",
        "SET GLOBAL binlog_checksum = CRC32",
    ];
    for (i, change) in changes.iter().enumerate() {
        env.exec(&[change, &format!("INSERT INTO t.kv VALUES ({i}, {i})")]);
        env.wait_caught_up(Duration::from_secs(30));
        let at = env.checkpoint().expect("checkpoint").position;
        assert_eq!(at, env.head(), "after {change}: {}", daemon.log());
    }
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), ["kv:0", "kv:1", "kv:2", "kv:3"]);
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}
