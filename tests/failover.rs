//! Following the primary through a failover with MariaDB GTID checkpoints: two private
//! servers in GTID replication, a writer on the primary, the primary killed, the replica
//! promoted and the daemon pointed at it. Nothing is lost or applied twice, and `verify`
//! is clean. A server that lacks the checkpoint's GTIDs is refused with exit code 3.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::Duration;

use support::prom::scrape;
use support::{eventually, mysql, run_cli, Daemon, Env, MariaDb};

const RULES: &str = "\
[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:by-v:{v}\"\n";

fn server(id: u32) -> MariaDb {
    let server_id = format!("--server-id={id}");
    MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=FULL",
        "--log-slave-updates",
        "--gtid-strict-mode=1",
        &server_id,
    ])
}

fn sql(db: &MariaDb, statement: &str) -> Vec<mysql_async::Row> {
    let mut c = mysql::conn(&db.root_url()).expect("connect");
    mysql::rows(&mut c, statement)
}

fn first_string(db: &MariaDb, statement: &str) -> String {
    sql(db, statement)
        .first()
        .and_then(|r| r.get::<Option<String>, _>(0).flatten())
        .unwrap_or_default()
}

/// Commits single-row transactions until stopped; returns how many committed.
fn writer(url: String, stop: Arc<AtomicBool>, base: u64) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut c = mysql::conn(&url).expect("writer connects");
        let mut committed = 0;
        let mut i = base;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            // Every statement changes a row (the delete hits the row written just
            // before), so every commit is a binlog transaction.
            let statement = match i % 4 {
                0 => format!("DELETE FROM t.kv WHERE id = {}", (i - 1) % 97),
                _ => format!(
                    "INSERT INTO t.kv VALUES ({}, {i}) ON DUPLICATE KEY UPDATE v = {i}",
                    i % 97
                ),
            };
            if mysql::query(&mut c, &statement).is_err() {
                break;
            }
            committed += 1;
            sleep(Duration::from_millis(2));
        }
        committed
    })
}

fn applied(port: u16) -> f64 {
    let m = scrape(port).expect("/metrics");
    m["cdc_cache_transactions_applied_total"]
}

/// A primary (`env.db`) and a replica in MariaDB GTID replication, with table `t.kv`.
fn replicated_pair() -> (Env, MariaDb) {
    let env = Env::with_db(server(1));
    let replica = server(2);
    let primary_port = env.db.port;
    for statement in [
        format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary_port}, \
             MASTER_USER = 'root', MASTER_USE_GTID = slave_pos"
        ),
        "START SLAVE".into(),
    ] {
        let mut c = mysql::conn(&replica.root_url()).expect("replica");
        mysql::query(&mut c, &statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    eventually("the table on the replica", Duration::from_secs(30), || {
        // information_schema: SHOW TABLES IN t fails while the database is not there yet.
        let tables = sql(
            &replica,
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 't' \
             AND TABLE_NAME = 'kv'",
        );
        (!tables.is_empty()).then_some(())
    });
    (env, replica)
}

/// Runs the writer against `url` for 3 s; returns how many transactions it committed.
fn write_for_a_while(url: String, base: u64) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(url, stop.clone(), base);
    sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer")
}

/// Asynchronous replication: the test lets the replica catch up before the crash, so the
/// new primary has every transaction the daemon may have applied.
fn wait_replica_caught_up(primary: &MariaDb, replica: &MariaDb) {
    let position = first_string(primary, "SELECT @@gtid_binlog_pos");
    let waited = sql(
        replica,
        &format!("SELECT MASTER_GTID_WAIT('{position}', 30)"),
    );
    assert_eq!(waited.first().and_then(|r| r.get::<i64, _>(0)), Some(0));
}

fn promote(replica: &MariaDb) {
    for statement in ["STOP SLAVE", "RESET SLAVE ALL"] {
        let mut c = mysql::conn(&replica.root_url()).expect("replica");
        mysql::query(&mut c, statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// Waits until the daemon's checkpoint holds `server`'s whole GTID state.
fn wait_gtid_caught_up(env: &Env, daemon: &mut Daemon, server: &MariaDb) {
    let head = first_string(server, "SELECT @@gtid_binlog_pos");
    eventually("caught up by GTID", Duration::from_secs(60), || {
        assert!(daemon.is_running(), "{}", daemon.log());
        (env.checkpoint().and_then(|c| c.gtid) == Some(head.clone())).then_some(())
    });
}

#[test]
fn the_daemon_follows_a_promoted_replica_losing_and_repeating_nothing() {
    let (env, replica) = replicated_pair();
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let before = write_for_a_while(env.db.root_url(), 0);
    wait_replica_caught_up(&env.db, &replica);
    eventually(
        "the daemon caught up with the primary",
        Duration::from_secs(30),
        || (applied(env.metrics_port) == before as f64).then_some(()),
    );
    let mut env = env;
    env.db.kill();
    promote(&replica);
    let first_run = applied(env.metrics_port);
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    let checkpoint = env.checkpoint().expect("checkpoint");
    assert!(
        checkpoint.gtid.is_some(),
        "a GTID checkpoint: {checkpoint:?}"
    );

    // Pointed at the promoted replica (a new URL after a restart).
    let new_config = env.config_with(&replica.url(), "current", "", RULES);
    let mut daemon = Daemon::start(&new_config);
    let after = write_for_a_while(replica.root_url(), 1_000_000);
    wait_gtid_caught_up(&env, &mut daemon, &replica);
    let second_run = applied(env.metrics_port);
    let (code, out, err) = run_cli(&["verify", "--config", new_config.to_str().expect("utf-8")]);
    println!(
        "failover: {before} commits before, {after} after; applied {first_run} + {second_run}; \
         verify: {}",
        out.lines().last().unwrap_or_default()
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        first_run + second_run,
        (before + after) as f64,
        "every commit applied exactly once"
    );
    assert!(daemon
        .log()
        .contains("resuming from the checkpoint's GTIDs"));
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

/// `config_with` plus `source.failover_urls`.
fn config_with_failover(env: &Env, url: &str, failover: &[String]) -> std::path::PathBuf {
    let path = env.config_with(url, "current", "", RULES);
    let list: Vec<String> = failover.iter().map(|u| format!("\"{u}\"")).collect();
    let text = std::fs::read_to_string(&path).expect("config").replacen(
        "server_id = ",
        &format!("failover_urls = [{}]\nserver_id = ", list.join(", ")),
        1,
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn with_failover_urls_the_daemon_moves_to_the_replica_by_itself() {
    let (env, replica) = replicated_pair();
    let config = config_with_failover(&env, &env.db.url(), &[replica.url()]);
    let mut daemon = Daemon::start_ready(&env, &config);
    let before = write_for_a_while(env.db.root_url(), 0);
    wait_replica_caught_up(&env.db, &replica);
    let mut env = env;
    // The primary dies; the daemon, still running, finds the replica on its own (first
    // still replicating, then promoted) and goes on from its GTID checkpoint.
    env.db.kill();
    promote(&replica);
    let after = write_for_a_while(replica.root_url(), 1_000_000);
    wait_gtid_caught_up(&env, &mut daemon, &replica);
    let total = applied(env.metrics_port);
    let log = daemon.log();
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    // `verify` reads rows from `source.url`, the dead primary: point it at the replica.
    let replica_config = env.config_with(&replica.url(), "current", "", RULES);
    let (code, out, err) = run_cli(&[
        "verify",
        "--config",
        replica_config.to_str().expect("utf-8"),
    ]);
    println!(
        "automatic failover: {before} commits before, {after} after; applied {total}; \
         verify: {}",
        out.lines().last().unwrap_or_default()
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(total, (before + after) as f64, "every commit applied once");
    assert!(log.contains("trying the next one"), "{log}");
    assert!(
        log.contains("resuming from the checkpoint's GTIDs"),
        "{log}"
    );
}

#[test]
fn a_server_lacking_the_checkpoints_gtids_is_refused() {
    let env = Env::with_db(server(1));
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&[
        "INSERT INTO t.kv VALUES (1, 1)",
        "INSERT INTO t.kv VALUES (2, 2)",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    let gtid = env
        .checkpoint()
        .and_then(|c| c.gtid)
        .expect("GTID checkpoint");

    // An unrelated server, with its own short history in the same domain.
    let other = server(3);
    let mut c = mysql::conn(&other.root_url()).expect("other");
    mysql::query(&mut c, "CREATE DATABASE t").expect("create");
    mysql::query(&mut c, "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)").expect("create");
    // With failover URLs, it stops only once every server has refused (here: twice the
    // same one), not at the first.
    let config = config_with_failover(&env, &other.url(), &[other.url()]);
    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("trying the next one"), "{log}");
    assert!(log.contains("every source server refused"), "{log}");

    let mut daemon = Daemon::start(&env.config_with(&other.url(), "current", "", RULES));
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    let last = log.lines().last().unwrap_or_default();
    println!("stop message: {last}");
    assert!(
        last.contains(&gtid) || last.contains("GTID"),
        "names the GTIDs: {log}"
    );
}
