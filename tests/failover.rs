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

#[test]
fn the_daemon_follows_a_promoted_replica_losing_and_repeating_nothing() {
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
        (!sql(&replica, "SHOW TABLES IN t LIKE 'kv'").is_empty()).then_some(())
    });
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(env.db.root_url(), stop.clone(), 0);
    sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let before = w.join().expect("writer");
    // Asynchronous replication: the test lets the replica catch up before the crash, so
    // the new primary has every transaction the daemon may have applied.
    let position = first_string(&env.db, "SELECT @@gtid_binlog_pos");
    let waited = sql(
        &replica,
        &format!("SELECT MASTER_GTID_WAIT('{position}', 30)"),
    );
    assert_eq!(waited.first().and_then(|r| r.get::<i64, _>(0)), Some(0));
    eventually(
        "the daemon caught up with the primary",
        Duration::from_secs(30),
        || (applied(env.metrics_port) == before as f64).then_some(()),
    );
    let mut env = env;
    env.db.kill();
    for statement in ["STOP SLAVE", "RESET SLAVE ALL"] {
        let mut c = mysql::conn(&replica.root_url()).expect("replica");
        mysql::query(&mut c, statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
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
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(replica.root_url(), stop.clone(), 1_000_000);
    sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let after = w.join().expect("writer");
    let head = first_string(&replica, "SELECT @@gtid_binlog_pos");
    eventually(
        "caught up on the new primary",
        Duration::from_secs(60),
        || {
            assert!(daemon.is_running(), "{}", daemon.log());
            (env.checkpoint().and_then(|c| c.gtid) == Some(head.clone())).then_some(())
        },
    );
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
        .contains("resuming from the checkpoint's GTID state"));
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
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
