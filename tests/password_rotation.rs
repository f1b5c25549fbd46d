//! Passwords rotated under a running daemon: it reads its `password_file`s again at each
//! connection, and a refusal of credentials that worked before is retried until the file
//! and the server agree, in either order, instead of stopping it; the consistency checker
//! follows. A wrong password at the first connection still stops it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{mysql, Daemon, Env};

const RULES: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
const WAIT: Duration = Duration::from_secs(30);
const REFUSED: &str = "credentials that worked before were refused";

/// A MariaDB user and a Redis ACL user `cdc`, and a config reading their passwords from
/// files; returns the config and the two files.
fn users_with_password_files(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
        "CREATE USER cdc@'%' IDENTIFIED BY 'mysql-1'",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO cdc@'%'",
        "GRANT SELECT ON t.* TO cdc@'%'",
    ]);
    redis_command(
        env,
        &[
            "ACL", "SETUSER", "cdc", "on", ">redis-1", "~*", "&*", "+@all",
        ],
    );
    let mysql_file = env.dir.path().join("mysql-password");
    let redis_file = env.dir.path().join("redis-password");
    std::fs::write(&mysql_file, "mysql-1\n").expect("write");
    std::fs::write(&redis_file, "redis-1\n").expect("write");
    let url = format!("mysql://cdc@127.0.0.1:{}/", env.db.port);
    // Every applied write is sampled: the checker's connections need the new passwords.
    let sampling = "\n[consistency]\nsample_rate = 1.0\ndelay_ms = 100\n";
    let config = env.config_with(&url, "current", sampling, RULES);
    let text = std::fs::read_to_string(&config).expect("config");
    let redis_url = env.redis.url();
    let text = text
        .replace(
            "heartbeat_secs = 1\n",
            &format!(
                "heartbeat_secs = 1\npassword_file = \"{}\"\n",
                mysql_file.display()
            ),
        )
        .replace(
            &format!("[redis]\nurl = \"{redis_url}\"\n"),
            &format!(
                "[redis]\nurl = \"{}\"\npassword_file = \"{}\"\n",
                redis_url.replacen("redis://", "redis://cdc@", 1),
                redis_file.display()
            ),
        );
    assert!(text.contains("redis://cdc@"), "{text}");
    std::fs::write(&config, text).expect("rewrite config");
    (config, mysql_file, redis_file)
}

fn redis_command(env: &Env, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd.query(&mut env.redis.conn()).expect("redis command");
}

/// Closes every MariaDB connection of user `cdc`: the daemon has to connect again.
fn kill_mysql_sessions(env: &Env) {
    let mut admin = env.sql();
    let ids = mysql::rows(
        &mut admin,
        "SELECT id FROM information_schema.PROCESSLIST WHERE user = 'cdc'",
    );
    for row in ids {
        let id: u64 = row.get(0).expect("id");
        // A connection may end by itself meanwhile.
        let _ = mysql::query(&mut admin, &format!("KILL {id}"));
    }
}

/// Waits until the log holds `count` refusals of credentials that worked before.
fn wait_refusals(daemon: &mut Daemon, count: usize) {
    support::eventually("the refusals to be retried", WAIT, || {
        assert!(daemon.is_running(), "{}", daemon.log());
        (daemon.log().matches(REFUSED).count() >= count).then_some(())
    });
}

fn write(file: &Path, password: &str) {
    std::fs::write(file, format!("{password}\n")).expect("write password");
}

#[test]
fn rotated_passwords_are_used_from_the_next_connection_in_either_order() {
    let env = Env::start();
    let (config, mysql_file, redis_file) = users_with_password_files(&env);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(WAIT);

    // MariaDB first, then the file: the reconnections meanwhile are refused and retried.
    env.exec(&["ALTER USER cdc@'%' IDENTIFIED BY 'mysql-2'"]);
    kill_mysql_sessions(&env);
    env.exec(&["INSERT INTO t.kv VALUES (2, 2)"]);
    wait_refusals(&mut daemon, 2);
    write(&mysql_file, "mysql-2");
    env.wait_caught_up(WAIT);

    // The file first, then Redis: the next connection uses the new password at once.
    write(&redis_file, "redis-2");
    redis_command(&env, &["ACL", "SETUSER", "cdc", "resetpass", ">redis-2"]);
    redis_command(&env, &["CLIENT", "KILL", "USER", "cdc"]);
    env.exec(&["INSERT INTO t.kv VALUES (3, 3)"]);
    env.wait_caught_up(WAIT);

    // Redis first, then the file.
    let before = daemon.log().matches(REFUSED).count();
    redis_command(&env, &["ACL", "SETUSER", "cdc", "resetpass", ">redis-3"]);
    redis_command(&env, &["CLIENT", "KILL", "USER", "cdc"]);
    env.exec(&["INSERT INTO t.kv VALUES (4, 4)"]);
    wait_refusals(&mut daemon, before + 2);
    write(&redis_file, "redis-3");
    env.wait_caught_up(WAIT);

    let keys = env.cache_keys();
    assert_eq!(keys, ["kv:1", "kv:2", "kv:3", "kv:4"], "{}", daemon.log());
    // The consistency checker reads both servers with the new passwords too.
    let consistent = || {
        let m = support::prom::scrape(env.metrics_port).expect("/metrics");
        m.get("cdc_cache_consistency_samples_total{result=\"consistent\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let before = consistent();
    for id in 5..=10 {
        env.exec(&[&format!("INSERT INTO t.kv VALUES ({id}, {id})")]);
    }
    support::eventually("samples checked after the rotation", WAIT, || {
        (consistent() >= before + 5.0).then_some(())
    });
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());

    // A wrong password at the first connection is a mistake, not a rotation: a stop.
    write(&mysql_file, "not-the-password");
    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(WAIT);
    let log = daemon.log();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("Access denied") && !log.contains(REFUSED),
        "{log}"
    );
}
