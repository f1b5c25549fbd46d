//! A value Redis cannot take (longer than its `proto-max-bulk-len`, or than its
//! `client-query-buffer-limit` lets a client send) is a definite error: the daemon stops
//! naming the key and the setting, instead of reconnecting and sending the same step for
//! ever. Steps are kept within what the query buffer holds.

mod support;

use std::time::Duration;

use support::servers::Redis;
use support::{run_cli, Daemon, Env, MariaDb};

const RULES: &str = "[[rules]]\ntable = \"t.doc\"\naction = \"upsert\"\nkey = \"doc:{id}\"\n";

#[test]
fn a_value_longer_than_redis_takes_stops_the_daemon_naming_the_key() {
    let env = Env::with_servers(
        MariaDb::start(),
        Redis::start_with(&["--proto-max-bulk-len", "1mb"]),
    );
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.doc (id INT PRIMARY KEY, body LONGTEXT)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&[
        "INSERT INTO t.doc VALUES (1, 'small')",
        "INSERT INTO t.doc VALUES (2, REPEAT('x', 2 * 1024 * 1024))",
    ]);
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("doc:2") && log.contains("proto-max-bulk-len"),
        "{log}"
    );
    // The row before it was applied; the checkpoint stays before the big one.
    let small: Option<String> = redis::Commands::get(&mut env.redis.conn(), "doc:1").expect("GET");
    assert_eq!(small.as_deref(), Some(r#"{"id":1,"body":"small"}"#));

    // `load` meets the same row: it stops too, naming the key and the table.
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["load", "--config", path, "--yes"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("doc:2") && err.contains("a page of table t.doc"),
        "{out}{err}"
    );
}

/// Redis closes a client whose input passes `client-query-buffer-limit` (newer versions
/// count a MULTI's queued commands too). Against a 1 MiB limit the daemon makes its steps
/// smaller than `sink.max_bytes_per_step` (8 MiB), splitting a 1.6 MB transaction, and a
/// 1.5 MiB value stops it (exit 3) instead of a reconnect loop; `load` too.
#[test]
fn a_small_query_buffer_makes_steps_smaller_and_stops_on_a_value_it_cannot_hold() {
    let env = Env::with_servers(
        MariaDb::start(),
        Redis::start_with(&["--client-query-buffer-limit", "1mb"]),
    );
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.doc (id INT PRIMARY KEY, body LONGTEXT)",
    ]);
    let config = env.config("current", RULES);
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("client-query-buffer-limit 1048576: steps of at most 491520 bytes")
            && out.contains("sink.max_bytes_per_step = 8388608 is more than half"),
        "check reads the limit and says what it does to steps: {out}{err}"
    );
    // Both transactions are committed while the daemon is stopped, so that the 8-row
    // one's last part and the 1.5 MiB row meet in one step.
    let mut daemon = Daemon::start_ready(&env, &config);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    env.exec(&["INSERT INTO t.doc SELECT seq, REPEAT('x', 200 * 1000) FROM t.seq_1_to_8"]);
    let before_nine = env.head();
    env.exec(&["INSERT INTO t.doc VALUES (9, REPEAT('y', 1536 * 1024))"]);
    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("more than half of Redis's client-query-buffer-limit")
            && log.contains("transaction larger than one step"),
        "the 8-row transaction was split: {log}"
    );
    assert!(
        log.contains("doc:9")
            && log.contains("its client-query-buffer-limit is 1048576")
            && log.contains("a row of table t.doc in the rows event at binlog position"),
        "{log}"
    );
    // Everything before the row's transaction was applied.
    let at = env.checkpoint().expect("checkpoint").position;
    assert_eq!(at, before_nine, "{log}");
    let mut redis = env.redis.conn();
    for id in 1..=8 {
        let len: usize = redis::Commands::strlen(&mut redis, format!("doc:{id}")).expect("STRLEN");
        assert!(len > 200 * 1000, "doc:{id} holds {len} bytes");
    }

    let (code, out, err) = run_cli(&["load", "--config", path, "--yes"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("doc:9") && err.contains("client-query-buffer-limit"),
        "{out}{err}"
    );
}
