//! Two-phase XA transactions on MariaDB, end to end: a prepared transaction's changes
//! reach the cache at its `XA COMMIT`, in commit order, never before it and never after an
//! `XA ROLLBACK`; the daemon killed (even in the middle of a stash) or the server crashed
//! between PREPARE and COMMIT loses nothing, nor does Redis coming back empty; a prepared
//! transaction larger than a step is stashed and applied in several; a COMMIT whose
//! PREPARE the daemon never saw stops it (exit 3) with the way out, which `check` and the
//! start-up warn of; a Redis user without `RPUSH` stops at the first PREPARE. An XA
//! transaction counts once in `transactions_applied`, at its commit.

mod support;

use std::time::Duration;

use redis::Commands;
use support::servers::mysql;
use support::{run_cli, Daemon, Env, CHECKPOINT_KEY};

const WAIT: Duration = Duration::from_secs(30);

const RULES: &str = "[[rules]]\ntable = \"shop.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

fn setup(env: &Env) {
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.kv (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO shop.kv VALUES (2, 'before')",
    ]);
}

fn value(env: &Env, id: u32) -> Option<String> {
    env.redis.conn().get(format!("kv:{id}")).expect("GET")
}

/// The stash keys under the checkpoint key.
fn stashes(env: &Env) -> Vec<String> {
    let mut keys: Vec<String> = env
        .redis
        .conn()
        .keys(format!("{CHECKPOINT_KEY}:xa:*"))
        .expect("KEYS");
    keys.sort();
    keys
}

fn checkpoint_text(env: &Env) -> String {
    env.redis
        .conn()
        .get(CHECKPOINT_KEY)
        .expect("GET checkpoint")
}

/// The XA transactions `status` lists as prepared.
fn prepared(config: &std::path::Path) -> Vec<String> {
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["status", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    serde_json::from_value(status["xa_prepared"].clone()).expect("a list of xids")
}

/// Prepares XA transaction `kept` (row 2's update), commits row 7 after it, and waits
/// for the daemon; returns the connection the transaction lives in.
fn prepare_kept_then_insert(env: &Env) -> mysql::Conn {
    let mut xa = env.sql();
    run(
        &mut xa,
        &[
            "XA START 'kept'",
            "UPDATE shop.kv SET v = 'kept' WHERE id = 2",
            "XA END 'kept'",
            "XA PREPARE 'kept'",
        ],
    );
    env.exec(&["INSERT INTO shop.kv VALUES (7, 'after')"]);
    env.wait_caught_up(WAIT);
    xa
}

/// Runs statements on one connection (an XA transaction lives in its session).
fn run(c: &mut mysql::Conn, statements: &[&str]) {
    for s in statements {
        mysql::query(c, s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

#[test]
fn a_prepared_transaction_reaches_the_cache_at_its_commit_and_a_rolled_back_one_never() {
    let env = Env::start();
    setup(&env);
    let config = env.config_with(&env.db.url(), "current", "max_ops_per_step = 4", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["UPDATE shop.kv SET v = 'cached' WHERE id = 2"]);
    env.wait_caught_up(WAIT);

    let mut xa = env.sql();
    run(
        &mut xa,
        &[
            "XA START 'order-1'",
            "INSERT INTO shop.kv VALUES (1, 'prepared')",
            "UPDATE shop.kv SET v = 'prepared' WHERE id = 2",
            "XA END 'order-1'",
            "XA PREPARE 'order-1'",
        ],
    );
    env.exec(&["INSERT INTO shop.kv VALUES (3, 'after prepare')"]);
    env.wait_caught_up(WAIT);
    // The checkpoint is past the PREPARE and the later commit; the prepared changes wait.
    assert_eq!(
        value(&env, 3).as_deref(),
        Some(r#"{"id":3,"v":"after prepare"}"#)
    );
    assert_eq!(value(&env, 1), None, "a prepared insert is not committed");
    assert_eq!(
        value(&env, 2).as_deref(),
        Some(r#"{"id":2,"v":"cached"}"#),
        "a prepared update is not committed"
    );
    assert_eq!(
        stashes(&env),
        [format!("{CHECKPOINT_KEY}:xa:1:6f726465722d31:")]
    );
    assert_eq!(
        prepared(&config),
        ["X'6f726465722d31',X'',1"],
        "status names it"
    );

    // The daemon killed and the server restarted between PREPARE and COMMIT: the stash is
    // in Redis with the checkpoint, and the prepared transaction survives in the server
    // (its COMMIT goes to a new binlog file, from another session).
    daemon.kill();
    let mut env = env;
    env.db.restart();
    let mut daemon = Daemon::start_ready(&env, &config);
    let mut xa = env.sql();
    run(&mut xa, &["XA COMMIT 'order-1'"]);
    env.wait_caught_up(WAIT);
    assert_eq!(
        value(&env, 1).as_deref(),
        Some(r#"{"id":1,"v":"prepared"}"#)
    );
    assert_eq!(
        value(&env, 2).as_deref(),
        Some(r#"{"id":2,"v":"prepared"}"#)
    );
    assert!(stashes(&env).is_empty(), "the commit deletes its stash");
    assert!(prepared(&config).is_empty());

    // Rolled back after its PREPARE: nothing of it ever shows.
    run(
        &mut xa,
        &[
            "XA START 'order-2', 'branch', 7",
            "INSERT INTO shop.kv VALUES (4, 'rolled back')",
            "DELETE FROM shop.kv WHERE id = 3",
            "XA END 'order-2', 'branch', 7",
            "XA PREPARE 'order-2', 'branch', 7",
        ],
    );
    env.wait_caught_up(WAIT);
    assert_eq!(stashes(&env).len(), 1);
    run(&mut xa, &["XA ROLLBACK 'order-2', 'branch', 7"]);
    env.wait_caught_up(WAIT);
    assert_eq!(value(&env, 4), None);
    assert!(
        value(&env, 3).is_some(),
        "the rolled-back delete did not happen"
    );
    assert!(stashes(&env).is_empty(), "the rollback deletes its stash");
    let metrics = support::prom::scrape(env.metrics_port).expect("/metrics");
    assert_eq!(
        metrics.get("cdc_cache_transactions_applied_total"),
        Some(&1.0),
        "since the restart one transaction committed (order-1); a PREPARE and a ROLLBACK \
         are not committed transactions"
    );

    // Committed right behind its PREPARE: applied from the operations still in memory.
    run(
        &mut xa,
        &[
            "XA START 'quick'",
            "UPDATE shop.kv SET v = 'quick' WHERE id = 2",
            "XA END 'quick'",
            "XA PREPARE 'quick'",
            "XA COMMIT 'quick'",
        ],
    );
    env.wait_caught_up(WAIT);
    assert_eq!(value(&env, 2).as_deref(), Some(r#"{"id":2,"v":"quick"}"#));
    assert!(stashes(&env).is_empty());

    // Larger than a step (max_ops_per_step = 4): stashed in parts, applied in parts.
    let mut statements = vec!["XA START 'bulk'".to_string()];
    statements.extend((100..130).map(|id| format!("INSERT INTO shop.kv VALUES ({id}, 'bulk')")));
    statements.push("DELETE FROM shop.kv WHERE id = 3".into());
    statements.extend(["XA END 'bulk'".into(), "XA PREPARE 'bulk'".into()]);
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    run(&mut xa, &statements);
    env.wait_caught_up(WAIT);
    assert!(value(&env, 100).is_none() && value(&env, 3).is_some());
    let stash = &stashes(&env)[0];
    let entries: usize = env.redis.conn().llen(stash).expect("LLEN");
    assert_eq!(entries, 32, "the header and 31 operations");
    run(&mut xa, &["XA COMMIT 'bulk'"]);
    env.wait_caught_up(WAIT);
    let bulk = (100..130).filter(|&id| value(&env, id).is_some()).count();
    assert_eq!(bulk, 30);
    assert_eq!(value(&env, 3), None, "the committed delete is applied");
    assert!(stashes(&env).is_empty());
    assert!(daemon.is_running(), "{}", daemon.log());

    // `replay` shows each phase in place (the PREPARE in the file before the restart).
    let mut lines = support::replay_lines(&env.db.binlog("binlog.000001"));
    lines.extend(support::replay_lines(&env.db.binlog(&env.head().file)));
    let phases: Vec<String> = lines
        .iter()
        .filter_map(|l| Some(format!("{} {}", l["xa"].as_str()?, l["xid"].as_str()?)))
        .collect();
    assert_eq!(
        phases,
        [
            "prepare X'6f726465722d31',X'',1",
            "commit X'6f726465722d31',X'',1",
            "prepare X'6f726465722d32',X'6272616e6368',7",
            "rollback X'6f726465722d32',X'6272616e6368',7",
            "prepare X'717569636b',X'',1",
            "commit X'717569636b',X'',1",
            "prepare X'62756c6b',X'',1",
            "commit X'62756c6b',X'',1",
        ]
    );
}

#[test]
fn a_commit_whose_prepare_the_daemon_never_saw_stops_it_with_the_way_out() {
    let env = Env::start();
    setup(&env);
    env.exec(&["CREATE TABLE shop.tags (name VARCHAR(20) PRIMARY KEY)"]);
    // A key pattern of `*`: `reset` must still spare the stashes under the checkpoint.
    let rules = format!(
        "{RULES}\n[[rules]]\ntable = \"shop.tags\"\naction = \"delete\"\nkey = \"{{name}}\"\n"
    );
    let (mut early, mut seen) = (env.sql(), env.sql());
    run(
        &mut early,
        &[
            "XA START 'early'",
            "UPDATE shop.kv SET v = 'early' WHERE id = 2",
            "XA END 'early'",
            "XA PREPARE 'early'",
        ],
    );
    let config = env.config("current", &rules);
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 0, "a warning, not a problem:\n{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warning") && l.contains("X'6561726c79',X'',1")),
        "check names the prepared transaction:\n{out}"
    );
    let mut daemon = Daemon::start_ready(&env, &config);
    assert!(
        daemon
            .log()
            .contains("XA transactions are prepared on the server")
            && daemon.log().contains("X'6561726c79',X'',1"),
        "a start at the head warns of the transaction prepared before it:\n{}",
        daemon.log()
    );
    run(
        &mut seen,
        &[
            "XA START 'seen'",
            "INSERT INTO shop.kv VALUES (6, 'seen')",
            "XA END 'seen'",
            "XA PREPARE 'seen'",
        ],
    );
    run(&mut early, &["XA COMMIT 'early'"]);
    assert_eq!(daemon.wait_exit(WAIT), 3, "{}", daemon.log());
    for part in ["XA COMMIT of X'6561726c79',X'',1", "reset --yes"] {
        assert!(
            daemon.log().contains(part),
            "names {part}:\n{}",
            daemon.log()
        );
    }
    assert_eq!(stashes(&env).len(), 1, "the PREPARE it saw is stashed");

    // The way out it names works, and keeps the stash of the transaction still prepared.
    let (code, out, err) = run_cli(&["reset", "--config", path, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(stashes(&env).len(), 1, "reset spares the stash");
    let daemon = Daemon::start_ready(&env, &config);
    run(&mut seen, &["XA COMMIT 'seen'"]);
    env.wait_caught_up(WAIT);
    assert_eq!(value(&env, 6).as_deref(), Some(r#"{"id":6,"v":"seen"}"#));
    assert!(stashes(&env).is_empty());
    drop(daemon);
}

/// XA transactions larger than a step, prepared and committed (or rolled back) with
/// ordinary transactions between the two phases, and the daemon SIGKILLed after every
/// round of them, while it is still applying: whatever step a kill interrupts (a stash
/// half written, a stash half applied), the cache ends equal to the database and no stash
/// is left.
#[test]
fn xa_transactions_under_repeated_kills_leave_the_cache_equal_to_the_database() {
    let env = Env::start();
    setup(&env);
    // Every row of the table goes through the daemon, so `verify` can miss none.
    env.exec(&["DELETE FROM shop.kv"]);
    let config = env.config_with(&env.db.url(), "current", "max_ops_per_step = 4", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let (mut xa, mut plain) = (env.sql(), env.sql());
    for round in 0..8u32 {
        for i in round * 20..round * 20 + 20 {
            let xid = format!("'w{i}'");
            let mut statements = vec![format!("XA START {xid}")];
            statements.extend((0..10).map(|k| {
                let id = 10 + (i * 7 + k * 3) % 60;
                format!("REPLACE INTO shop.kv VALUES ({id}, 'w{i}')")
            }));
            statements.push(format!(
                "DELETE FROM shop.kv WHERE id = {}",
                10 + (i * 11) % 60
            ));
            statements.extend([format!("XA END {xid}"), format!("XA PREPARE {xid}")]);
            let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
            run(&mut xa, &statements);
            let between = format!("REPLACE INTO shop.kv VALUES ({}, 'plain {i}')", 80 + i % 5);
            run(&mut plain, &[&between]);
            let end = if i % 4 == 3 { "ROLLBACK" } else { "COMMIT" };
            run(&mut xa, &[&format!("XA {end} {xid}")]);
        }
        daemon.kill();
        daemon = Daemon::start_ready(&env, &config);
    }
    env.wait_caught_up(WAIT);
    assert!(daemon.is_running(), "{}", daemon.log());
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    assert_eq!(code, 0, "verify found mismatches:\n{out}{err}");
    assert!(stashes(&env).is_empty(), "{:?}", stashes(&env));
}

/// A Redis user allowed everything but `RPUSH` passes the start-up probe (which asks for
/// what every step needs), and is stopped at the first XA PREPARE, before any of it
/// lands, naming the refused command; the checkpoint stays before the PREPARE.
#[test]
fn a_redis_user_that_may_not_push_to_the_stash_stops_at_the_first_prepare() {
    let env = Env::start();
    setup(&env);
    env.redis.command(&format!(
        "ACL SETUSER cdc on >pw resetkeys ~kv:* ~{CHECKPOINT_KEY} ~{CHECKPOINT_KEY}:* +@all -rpush"
    ));
    let config = env.config("current", RULES);
    let url = env.redis.url().replace("redis://", "redis://cdc:pw@");
    let envs = [("CDC_CACHE_REDIS__URL", url.as_str())];
    let mut daemon = Daemon::start_with_env(&config, &envs);
    support::eventually("the daemon's first checkpoint", WAIT, || env.checkpoint());
    let before = env.checkpoint().expect("checkpoint").position;
    let mut xa = env.sql();
    run(
        &mut xa,
        &[
            "XA START 'denied'",
            "INSERT INTO shop.kv VALUES (9, 'denied')",
            "XA END 'denied'",
            "XA PREPARE 'denied'",
        ],
    );
    assert_eq!(daemon.wait_exit(WAIT), 3, "{}", daemon.log());
    assert!(daemon.log().contains("RPUSH"), "{}", daemon.log());
    assert_eq!(env.checkpoint().expect("checkpoint").position, before);
    assert!(stashes(&env).is_empty());
    run(&mut xa, &["XA ROLLBACK 'denied'"]);
}

/// Redis restarted without persistence between an XA PREPARE and its COMMIT loses the
/// stash with the checkpoint. The daemon resumes from before the PREPARE it saw (not from
/// the last position it applied, after it), writes the stash again, and applies the
/// COMMIT; without that it would stop there (exit 3), since the changes were unknown.
#[test]
fn redis_restarted_empty_between_prepare_and_commit_loses_nothing() {
    let mut env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let daemon = Daemon::start_ready(&env, &config);
    let mut xa = prepare_kept_then_insert(&env);
    assert_eq!(stashes(&env).len(), 1);

    // The daemon finds the checkpoint gone at its next step: the COMMIT's.
    env.redis.restart();
    run(&mut xa, &["XA COMMIT 'kept'"]);
    env.wait_caught_up(WAIT);
    let mut daemon = daemon;
    assert!(daemon.is_running(), "{}", daemon.log());
    assert_eq!(value(&env, 2).as_deref(), Some(r#"{"id":2,"v":"kept"}"#));
    assert_eq!(value(&env, 7).as_deref(), Some(r#"{"id":7,"v":"after"}"#));
    assert!(stashes(&env).is_empty());
    assert!(
        daemon
            .log()
            .contains("resuming from before the first of their XA PREPAREs"),
        "{}",
        daemon.log()
    );
}

/// The same loss after a restart of the daemon: the PREPARE came before this process
/// started, so only its stash's header says where to read it again. The new process reads
/// the headers when it finds its checkpoint; without that, the COMMIT would stop it
/// (exit 3), its changes unknown. A stash an earlier version wrote (no position in its
/// header) is named in a warning.
#[test]
fn redis_restarted_empty_after_a_daemon_restart_reads_an_earlier_prepare_again() {
    let mut env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let mut first = Daemon::start_ready(&env, &config);
    let mut xa = prepare_kept_then_insert(&env);
    // The checkpoint tells a starting process to look for stashes (it need not scan the
    // keyspace otherwise).
    assert!(
        checkpoint_text(&env).contains(r#""xa":true"#),
        "{}",
        checkpoint_text(&env)
    );
    first.kill();
    let _: () = env
        .redis
        .conn()
        .rpush(
            format!("{CHECKPOINT_KEY}:xa:1:6f6c64:"),
            "cdc-cache xa stash v1",
        )
        .expect("RPUSH");

    let mut second = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO shop.kv VALUES (8, 'restarted')"]);
    env.wait_caught_up(WAIT);
    assert_eq!(stashes(&env).len(), 2);
    let log = second.log();
    assert!(
        log.contains("prepared before this process started wait for their commits"),
        "{log}"
    );
    assert!(
        log.contains("X'6f6c64',X'',1"),
        "the old stash named: {log}"
    );

    env.redis.restart();
    run(&mut xa, &["XA COMMIT 'kept'"]);
    env.wait_caught_up(WAIT);
    assert!(second.is_running(), "{}", second.log());
    assert_eq!(value(&env, 2).as_deref(), Some(r#"{"id":2,"v":"kept"}"#));
    assert_eq!(value(&env, 7).as_deref(), Some(r#"{"id":7,"v":"after"}"#));
    assert_eq!(
        value(&env, 8).as_deref(),
        Some(r#"{"id":8,"v":"restarted"}"#)
    );
    assert!(stashes(&env).is_empty());
    env.exec(&["INSERT INTO shop.kv VALUES (9, 'done')"]);
    env.wait_caught_up(WAIT);
    assert!(
        checkpoint_text(&env).contains(r#""xa":false"#),
        "{}",
        checkpoint_text(&env)
    );
    assert!(
        second
            .log()
            .contains("resuming from before the first of their XA PREPAREs"),
        "{}",
        second.log()
    );
}
