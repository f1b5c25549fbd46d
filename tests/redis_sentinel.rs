//! Redis behind Sentinel: the daemon finds the primary through `[redis.sentinel]` (not
//! through `redis.url`'s host), and after a Sentinel failover it writes to the promoted
//! replica, resuming from the checkpoint found there, also when the old primary died with
//! steps the replica never got. A master name no Sentinel monitors stops it with exit
//! code 2, naming the key to fix.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cdc_cache::checkpoint::Checkpoint;
use redis::Commands;
use support::prom::scrape;
use support::sentinel::{Sentinel, MASTER};
use support::servers::free_port;
use support::{eventually, run_cli, Daemon, Env, MariaDb, Redis, CHECKPOINT_KEY};

const RULES: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";

/// A config whose `redis.url` names a port nothing listens on, with `[redis.sentinel]`
/// listing a dead Sentinel first: only asking the live one finds the primary.
fn sentinel_config(env: &Env, sentinel: &Sentinel, master: &str, extra: &str) -> PathBuf {
    let path = env.config("current", &format!("{extra}\n{RULES}"));
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(&path)
        .expect("read config")
        .replace(&env.redis.url(), &format!("{dead}/0"));
    let text = format!(
        "{text}\n[redis.sentinel]\nmaster_name = \"{master}\"\nnodes = [\"{dead}\", \"{}\"]\n",
        sentinel.url()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn replica_of(primary: &Redis) -> Redis {
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    eventually("the replica in sync", Duration::from_secs(30), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .ok()?;
        info.contains("master_link_status:up").then_some(())
    });
    replica
}

fn role(redis: &Redis) -> String {
    let values: Vec<redis::Value> = redis::cmd("ROLE").query(&mut redis.conn()).expect("ROLE");
    redis::from_redis_value_ref(&values[0]).expect("role name")
}

/// Waits until the checkpoint on `redis` is the binlog head, the daemon still running.
fn caught_up_on(redis: &Redis, env: &Env, daemon: &mut Daemon) {
    eventually(
        "the promoted replica caught up",
        Duration::from_secs(60),
        || {
            assert!(daemon.is_running(), "daemon exited:\n{}", daemon.log());
            (checkpoint_in(redis).map(|c| c.position) == Some(env.head())).then_some(())
        },
    );
}

fn checkpoint_in(redis: &Redis) -> Option<Checkpoint> {
    let text: Option<String> = redis.conn().get(CHECKPOINT_KEY).ok()?;
    text.map(|t| Checkpoint::decode(&t).expect("checkpoint decodes"))
}

fn samples(m: &HashMap<String, f64>, result: &str) -> f64 {
    let name = format!("cdc_cache_consistency_samples_total{{result=\"{result}\"}}");
    m.get(&name).copied().unwrap_or(0.0)
}

/// Waits until the consistency checker has given `count` verdicts; the metrics then.
fn checked(env: &Env, count: f64) -> HashMap<String, f64> {
    eventually("the samples checked", Duration::from_secs(30), || {
        let m = scrape(env.metrics_port)?;
        let verdicts = ["consistent", "superseded", "inconsistent", "skipped"]
            .iter()
            .map(|r| samples(&m, r))
            .sum::<f64>();
        (verdicts >= count).then_some(m)
    })
}

fn setup() -> (Env, Redis, Sentinel) {
    let primary = Redis::start();
    let replica = replica_of(&primary);
    let sentinel = Sentinel::watch(&primary, 1);
    let env = Env::with_servers(MariaDb::start(), primary);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    (env, replica, sentinel)
}

#[test]
fn a_sentinel_failover_moves_the_daemon_to_the_promoted_replica() {
    let (env, replica, sentinel) = setup();
    // Every upsert is read back from Redis and compared with its row: from the node the
    // session wrote it to, not from the old primary, which still answers for a while.
    let sampling = "[consistency]\nsample_rate = 1.0\ndelay_ms = 200\n";
    let config = sentinel_config(&env, &sentinel, MASTER, sampling);
    let mut daemon = Daemon::start_ready(&env, &config);
    for id in 1..=20 {
        env.exec(&[&format!("INSERT INTO t.kv VALUES ({id}, {id})")]);
    }
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys().len(), 20, "applied to the first primary");
    // The checker has read the first primary before the failover.
    checked(&env, 20.0);

    sentinel.fail_over();
    eventually("the replica promoted", Duration::from_secs(60), || {
        (sentinel.primary_port() == Some(replica.port) && role(&replica) == "master").then_some(())
    });
    // Sentinel has not demoted the old primary yet; the daemon leaves it on its own.
    eventually(
        "the daemon off the old primary",
        Duration::from_secs(30),
        || {
            daemon
                .log()
                .contains("moved the primary of `cache`")
                .then_some(())
        },
    );
    env.exec(&[
        "UPDATE t.kv SET v = v + 100 WHERE id <= 10",
        "DELETE FROM t.kv WHERE id > 15",
        "INSERT INTO t.kv VALUES (21, 21), (22, 22)",
    ]);
    caught_up_on(&replica, &env, &mut daemon);
    let mut keys: Vec<String> = replica.conn().keys("kv:*").expect("KEYS");
    keys.sort();
    let mut expected: Vec<String> = (1..=15).chain(21..=22).map(|i| format!("kv:{i}")).collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "the changes after the failover are on the new primary"
    );
    let value: String = replica.conn().get("kv:1").expect("GET kv:1");
    assert!(
        value.contains("101"),
        "kv:1 updated after the failover: {value}"
    );
    assert!(
        daemon
            .log()
            .contains("reconnecting after transient failure"),
        "{}",
        daemon.log()
    );
    // 20 inserts, then 10 updates and 2 inserts; the deletes are not sampled.
    let m = checked(&env, 32.0);
    let verdicts: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.contains("consistency"))
        .collect();
    assert_eq!(samples(&m, "inconsistent"), 0.0, "{verdicts:?}");
    assert!(samples(&m, "consistent") >= 30.0, "{verdicts:?}");

    // `verify` finds the primary the same way and compares it with the database.
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "verify after the failover:\n{out}\n{err}");
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

/// The primary dies with steps its replica never got: the promoted replica holds an older
/// checkpoint, and the daemon applies those transactions again from there.
#[test]
fn steps_lost_with_a_dead_primary_are_applied_again_on_the_promoted_replica() {
    let (mut env, replica, sentinel) = setup();
    let config = sentinel_config(&env, &sentinel, MASTER, "");
    let mut daemon = Daemon::start_ready(&env, &config);
    for id in 1..=10 {
        env.exec(&[&format!("INSERT INTO t.kv VALUES ({id}, {id})")]);
    }
    env.wait_caught_up(Duration::from_secs(30));
    let replicated = eventually(
        "the replica has the checkpoint",
        Duration::from_secs(30),
        || checkpoint_in(&replica).filter(|c| c.position == env.head()),
    );

    // The replica stops and the primary drops its link: what follows reaches the primary
    // only (a stopped replica cannot connect again).
    replica.pause(true);
    env.redis.command("CLIENT KILL TYPE replica");
    for id in 11..=20 {
        env.exec(&[&format!("INSERT INTO t.kv VALUES ({id}, {id})")]);
    }
    env.wait_caught_up(Duration::from_secs(30));
    env.redis.kill();
    replica.pause(false);
    eventually("the replica promoted", Duration::from_secs(90), || {
        assert!(daemon.is_running(), "daemon exited:\n{}", daemon.log());
        (sentinel.primary_port() == Some(replica.port) && role(&replica) == "master").then_some(())
    });
    env.exec(&["UPDATE t.kv SET v = v + 100 WHERE id = 15"]);
    caught_up_on(&replica, &env, &mut daemon);
    let keys: Vec<String> = replica.conn().keys("kv:*").expect("KEYS");
    assert_eq!(
        keys.len(),
        20,
        "every row, also those lost with the primary: {keys:?}"
    );
    let value: String = replica.conn().get("kv:15").expect("GET kv:15");
    assert!(value.contains("115"), "kv:15 after the failover: {value}");
    // The promoted replica had lost the last ten steps, checkpoint included: the daemon
    // found the checkpoint from before them there, and applied them again.
    let resumed = format!("connected to redis checkpoint=\"{}\"", replicated.position);
    assert!(
        daemon.log().contains(&resumed),
        "{resumed}:\n{}",
        daemon.log()
    );
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "verify after the failover:\n{out}\n{err}");
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

#[test]
fn a_master_name_no_sentinel_monitors_stops_with_the_key_to_fix() {
    let (env, _replica, sentinel) = setup();
    let config = sentinel_config(&env, &sentinel, "no-such-primary", "");
    let path = config.to_str().expect("utf-8");

    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_ne!(code, 0, "check passed:\n{out}");
    assert!(
        format!("{out}{err}").contains("redis.sentinel.master_name"),
        "{out}\n{err}"
    );
    let mut daemon = Daemon::start(&config);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        2,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("no-such-primary") && log.contains("redis.sentinel.master_name"),
        "{log}"
    );
}

/// The primary's ACL password (`redis.password_file`) and the Sentinels' own
/// (`redis.sentinel.password_file`) each reach the server they belong to; a wrong
/// Sentinel password stops the daemon with exit code 2, naming where to fix it.
#[test]
fn passwords_for_the_primary_and_the_sentinels_come_from_their_files() {
    let primary = Redis::start();
    primary.command("ACL SETUSER cdc on >primary-secret ~* +@all");
    let sentinel = Sentinel::watch_with_password(&primary, "sentinel-secret");
    let env = Env::with_servers(MariaDb::start(), primary);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let write = |name: &str, text: &str| {
        let path = env.dir.path().join(name);
        std::fs::write(&path, text).expect("write secret");
        path.display().to_string()
    };
    let primary_file = write("redis-password", "primary-secret\n");
    let config_with = |sentinel_file: &str| {
        let path = env.config("current", RULES);
        let dead = format!("redis://cdc@127.0.0.1:{}", free_port());
        let text = std::fs::read_to_string(&path)
            .expect("read config")
            .replace(
                &format!("url = \"{}\"", env.redis.url()),
                &format!("url = \"{dead}/0\"\npassword_file = \"{primary_file}\""),
            );
        let text = format!(
            "{text}\n[redis.sentinel]\nmaster_name = \"{MASTER}\"\nnodes = [\"{}\"]\n\
             password_file = \"{sentinel_file}\"\n",
            sentinel.url()
        );
        std::fs::write(&path, text).expect("write config");
        path
    };

    let wrong = config_with(&write("sentinel-wrong", "not-it\n"));
    let mut daemon = Daemon::start(&wrong);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        2,
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("redis.sentinel.password_file"),
        "{}",
        daemon.log()
    );

    let config = config_with(&write("sentinel-password", "sentinel-secret\n"));
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}\n{err}");
    let named = format!("redis://cdc:***@127.0.0.1:{}/0", env.redis.port);
    assert!(
        out.contains(&named),
        "check names the primary it found:\n{out}"
    );
    assert!(!out.contains("primary-secret"), "{out}");
    let mut daemon = Daemon::start_ready(&env, &config);
    let (code, out, err) = run_cli(&["status", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    assert_eq!(status["redis_primary"], serde_json::json!(named), "{out}");
    env.exec(&["INSERT INTO t.kv VALUES (1, 10)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), vec!["kv:1".to_string()]);
    assert!(
        daemon.log().contains("Sentinel named the primary"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

/// TLS on both hops: `rediss://` Sentinels and a TLS-only primary, both verified with
/// `redis.tls_ca_file`.
#[test]
fn sentinels_and_the_primary_over_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = support::tls::certificates(certs.path());
    let primary = Redis::start_tls(&cert, &key, &ca);
    let sentinel = Sentinel::watch_tls(&primary, (&cert, &key, &ca));
    let env = Env::with_servers(MariaDb::start(), primary);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let path = env.config("current", RULES);
    let text = std::fs::read_to_string(&path)
        .expect("read config")
        .replace(
            &format!("url = \"{}\"", env.redis.url()),
            &format!(
                "url = \"rediss://127.0.0.1:{}/0\"\ntls_ca_file = \"{}\"",
                free_port(),
                ca.display()
            ),
        );
    let text = format!(
        "{text}\n[redis.sentinel]\nmaster_name = \"{MASTER}\"\nnodes = [\"{}\"]\n",
        sentinel.url()
    );
    std::fs::write(&path, text).expect("write config");
    assert!(sentinel.url().starts_with("rediss://"));

    let mut daemon = Daemon::start_ready(&env, &path);
    env.exec(&["INSERT INTO t.kv VALUES (1, 10)"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(env.cache_keys(), vec!["kv:1".to_string()]);
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}
