//! A binlog reader's server_id must be its own: the server disconnects a reader when
//! another connects under the same id. The daemon must not do that to a database
//! replica, and when another reader does it to the daemon, the daemon stops naming the
//! id instead of retrying (which would disconnect the other in turn, for ever).

mod support;

use std::time::Duration;

use support::servers::free_port;
use support::{eventually, mysql, run_cli, Daemon, Env, MariaDb};

const WAIT: Duration = Duration::from_secs(60);

const RULES: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:{id}\"\n";

/// The server_id `Env::config` gives the daemon.
const DAEMON_ID: u32 = 4242;

fn rows(db: &MariaDb, statement: &str) -> Vec<mysql_async::Row> {
    let mut c = mysql::conn(&db.root_url()).expect("connect");
    mysql::rows(&mut c, statement)
}

/// The replica's I/O thread state and last I/O error number.
fn io_state(replica: &MariaDb) -> (String, u32) {
    let status = rows(replica, "SHOW SLAVE STATUS");
    let row = status.first().expect("a replica status row");
    let running: String = row.get("Slave_IO_Running").expect("Slave_IO_Running");
    let errno: u32 = row.get("Last_IO_Errno").expect("Last_IO_Errno");
    (running, errno)
}

#[test]
fn a_replica_with_the_daemons_server_id_is_never_disconnected() {
    let env = Env::start();
    let replica = MariaDb::start_with(&[&format!("--server-id={DAEMON_ID}")]);
    let mut c = mysql::conn(&replica.root_url()).expect("replica");
    for statement in [
        format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'root', MASTER_USE_GTID = slave_pos",
            env.db.port
        ),
        "START SLAVE".into(),
    ] {
        mysql::query(&mut c, &statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    eventually("the replica registered", WAIT, || {
        let hosts = rows(&env.db, "SHOW SLAVE HOSTS");
        (!hosts.is_empty()).then_some(())
    });
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY)",
    ]);
    let config = env.config("current", RULES);
    let path = config.to_str().expect("utf-8 path");

    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 2, "{out}{err}");
    let port = replica.port.to_string();
    assert!(
        out.contains(&format!("source.server_id {DAEMON_ID}")) && out.contains(&port),
        "check names the id and the replica: {out}{err}"
    );

    let mut daemon = Daemon::start(&config);
    assert_eq!(daemon.wait_exit(WAIT), 3, "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!("source.server_id {DAEMON_ID} is in use")) && log.contains(&port),
        "{log}"
    );
    // The replica was never disconnected, and still replicates.
    env.exec(&["INSERT INTO t.kv VALUES (1)"]);
    eventually("the row on the replica", WAIT, || {
        (!rows(&replica, "SELECT id FROM t.kv").is_empty()).then_some(())
    });
    assert_eq!(io_state(&replica), ("Yes".to_string(), 0));
    assert!(
        !env.db.error_log().contains("same server_uuid/server_id"),
        "{}",
        env.db.error_log()
    );
}

#[test]
fn a_second_daemon_with_the_same_server_id_stops_the_first() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY)",
    ]);
    let config = env.config("current", RULES);
    let mut first = Daemon::start_ready(&env, &config);

    // Another daemon, for another checkpoint, copied from the first's config.
    let text = std::fs::read_to_string(&config).expect("config");
    let second_port = free_port();
    let text = text
        .replace(support::CHECKPOINT_KEY, "cdc-cache:checkpoint:second")
        .replace(
            &format!("127.0.0.1:{}", env.metrics_port),
            &format!("127.0.0.1:{second_port}"),
        );
    let second_config = config.with_file_name("second.toml");
    std::fs::write(&second_config, text).expect("write");
    let mut second = Daemon::start(&second_config);

    assert_eq!(first.wait_exit(WAIT), 3, "{}", first.log());
    let log = first.log();
    assert!(
        log.contains(&format!("source.server_id {DAEMON_ID} is in use"))
            && log.contains("ended this daemon's binlog stream"),
        "{log}"
    );
    // The second one goes on.
    env.exec(&["INSERT INTO t.kv VALUES (1)"]);
    eventually("the second daemon past the insert", WAIT, || {
        assert!(second.is_running(), "{}", second.log());
        let applied = support::prom::scrape(second_port)?["cdc_cache_transactions_applied_total"];
        (applied >= 1.0).then_some(())
    });
    // The server lists it under the name its checkpoints carry, with no port.
    let checkpoint: String =
        redis::Commands::get(&mut env.redis.conn(), "cdc-cache:checkpoint:second")
            .expect("the second checkpoint");
    let checkpoint: serde_json::Value = serde_json::from_str(&checkpoint).expect("JSON");
    let writer = checkpoint["writer"].as_str().expect("a writer");
    let hosts: Vec<(String, u32)> = rows(&env.db, "SHOW SLAVE HOSTS")
        .into_iter()
        .map(|r| (r.get("Host").expect("Host"), r.get("Port").expect("Port")))
        .collect();
    assert_eq!(hosts, vec![(format!("cdc-cache/{writer}"), 0)]);
}
