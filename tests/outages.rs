//! Outages while a writer keeps committing: MariaDB killed and restarted, Redis hung
//! (SIGSTOP) for a while, and for longer than the response timeout; and a Redis out of
//! memory. Afterwards Redis holds exactly the database.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use cdc_cache::checkpoint::Position;
use redis::Commands;
use support::{mysql, run_cli, Daemon, Env};

const KV_RULES: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

/// Creates `t.kv` and starts the daemon with an upsert rule for it.
fn start_kv_daemon(env: &Env) -> Daemon {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    Daemon::start_ready(env, &env.config("current", KV_RULES))
}

/// Redis holds exactly the rows of `t.kv`, each as its JSON.
fn assert_cache_is_the_table(env: &Env) {
    let rows = mysql::rows(&mut env.sql(), "SELECT id, v FROM t.kv ORDER BY id");
    let mut conn = env.redis.conn();
    for row in &rows {
        let (id, v): (i64, i64) = (row.get(0).expect("id"), row.get(1).expect("v"));
        let cached: Option<String> = conn.get(format!("kv:{id}")).expect("GET");
        assert_eq!(cached, Some(format!(r#"{{"id":{id},"v":{v}}}"#)), "kv:{id}");
    }
    assert_eq!(env.cache_keys().len(), rows.len());
}

/// After Redis lost the checkpoint (at `before`) and the cache: a reader fills `kv:1`,
/// then its row changes. The change must still invalidate the fill, and the checkpoint
/// move on from where it was.
fn assert_a_fill_after_the_loss_is_invalidated(env: &Env, before: Position) {
    let _: () = env
        .redis
        .conn()
        .set("kv:1", "filled after the loss")
        .expect("SET");
    env.exec(&["UPDATE t.kv SET v = 2 WHERE id = 1"]);
    env.wait_caught_up(Duration::from_secs(60));
    assert_eq!(
        env.cache_keys(),
        Vec::<String>::new(),
        "the fill was invalidated"
    );
    assert!(env.checkpoint().expect("checkpoint").position > before);
}

#[test]
fn mariadb_restart_and_hung_redis_lose_nothing() {
    let mut env = Env::start();
    let mut daemon = start_kv_daemon(&env);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = support::kv_writer(env.db.root_url(), stop.clone(), 300, Duration::ZERO);

    sleep(Duration::from_secs(2));
    env.db.kill();
    sleep(Duration::from_secs(2));
    env.db.restart();
    sleep(Duration::from_secs(2));
    env.redis.pause(true);
    sleep(Duration::from_secs(4));
    env.redis.pause(false);
    sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (committed, failed) = writer.join().expect("writer");
    env.wait_caught_up(Duration::from_secs(120));
    println!("committed: {committed}, failed while MariaDB was down: {failed}");

    assert_cache_is_the_table(&env);
    assert!(
        daemon.is_running(),
        "the daemon rides out outages:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("reconnecting"), "reconnects are logged: {log}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0, "{log}");
}

#[test]
fn redis_coming_back_empty_resumes_from_the_last_applied_position() {
    let mut env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let before = env.checkpoint().expect("checkpoint").position;

    // Redis restarts without persistence; while the daemon reconnects, a reader fills a
    // key and then the row changes. The change must still invalidate the fill.
    env.redis.restart();
    assert_a_fill_after_the_loss_is_invalidated(&env, before);
    let log = daemon.log();
    assert!(log.contains("checkpoint vanished"), "logged loudly: {log}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0, "{log}");
}

#[test]
fn a_checkpoint_deleted_while_running_is_resumed_from_the_last_applied_position() {
    // FLUSHALL, a DEL of the checkpoint, or its eviction under an allkeys maxmemory policy,
    // with no Redis restart: the next step's fence finds no checkpoint. That is no other
    // writer; stopping would leave a restart to the start policy, which skips what came
    // in between. The daemon resumes from the last position it applied instead.
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:{id}\"\n";
    // A policy that may evict the checkpoint: `check` and the daemon warn about it.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-random"])
        .query(&mut env.redis.conn())
        .expect("CONFIG SET");
    let config = env.config("current", rules);
    let (_, out, err) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    assert!(
        out.contains("maxmemory-policy is allkeys-random"),
        "{out}{err}"
    );
    let mut daemon = Daemon::start_ready(&env, &config);
    assert!(
        daemon.log().contains("maxmemory-policy is allkeys-random"),
        "{}",
        daemon.log()
    );
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let before = env.checkpoint().expect("checkpoint").position;

    env.redis.command("FLUSHALL");
    assert_a_fill_after_the_loss_is_invalidated(&env, before);
    assert!(daemon.is_running(), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("checkpoint vanished"), "logged loudly: {log}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0, "{log}");
}

#[test]
fn redis_hung_beyond_the_response_timeout_loses_nothing_and_keeps_running() {
    // A step whose reply takes longer than the response timeout (30 s) is given up, but
    // Redis still holds it, and runs it when it wakes. The daemon must then carry on from
    // whatever Redis holds: nothing lost, and no stop for a step that was its own.
    let env = Env::start();
    let mut daemon = start_kv_daemon(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = support::kv_writer(
        env.db.root_url(),
        stop.clone(),
        300,
        Duration::from_millis(5),
    );
    sleep(Duration::from_secs(2));
    env.redis.pause(true);
    sleep(Duration::from_secs(40));
    env.redis.pause(false);
    sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    env.wait_caught_up(Duration::from_secs(120));
    assert_cache_is_the_table(&env);
    let log = daemon.log();
    assert!(daemon.is_running(), "the daemon rides out the hang:\n{log}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0, "{log}");
}

#[test]
fn a_full_redis_is_retried_until_it_has_room_and_loses_nothing() {
    // A Redis at its maxmemory with `noeviction` refuses every write (OOM), the
    // checkpoint's too, while it still takes DELs. The daemon must keep its checkpoint where
    // it was, retry, say why, and apply everything once Redis has room again.
    let env = Env::start();
    let mut daemon = start_kv_daemon(&env);
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let before = env.checkpoint().expect("checkpoint").position;
    let config = |name: &str, value: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut env.redis.conn())
            .expect("CONFIG SET");
    };
    config("maxmemory-policy", "noeviction");
    config("maxmemory", "1");
    env.exec(&[
        "INSERT INTO t.kv VALUES (2, 2)",
        "UPDATE t.kv SET v = 10 WHERE id = 1",
    ]);
    support::eventually("the refusals", Duration::from_secs(30), || {
        (daemon.log().matches("OOM").count() >= 3).then_some(())
    });
    let log = daemon.log();
    assert!(daemon.is_running(), "{log}");
    assert_eq!(env.checkpoint().expect("checkpoint").position, before);
    assert!(
        log.contains("maxmemory"),
        "the log says what to change:\n{log}"
    );

    config("maxmemory", "0");
    env.wait_caught_up(Duration::from_secs(30));
    assert_cache_is_the_table(&env);
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}
