//! A Redis Cluster of three primaries (`redis.cluster = true`): rows reach keys on every
//! node, in commit order per key; the daemon killed again and again under a writer, an XA
//! transaction committed across a kill, and a TRUNCATE leave the cache equal to the
//! database (`verify`), which with `status`,
//! `check`, `load` and `reset` works across the nodes; a late leased fill is refused on
//! every node. A cluster node without
//! `redis.cluster`, and `redis.cluster` on a standalone Redis, are refused (exit 2).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_cache::checkpoint::{Checkpoint, Position};
use redis::Commands;
use support::cluster::Cluster;
use support::{eventually, run_cli, Daemon, Env, MariaDb, Redis, CHECKPOINT_KEY};

const WAIT: Duration = Duration::from_secs(30);

const RULES: &str = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
                     [[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"kvh:{id}\"\n\n\
                     [[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kvd:{v}\"\n";

/// A MariaDB with `t.kv`, a cluster of three, and a config for it (`redis.cluster`).
fn setup() -> (Env, Cluster, std::path::PathBuf) {
    let cluster = Cluster::start(3);
    let (env, config) = setup_for(&cluster, "");
    (env, cluster, config)
}

/// A MariaDB with `t.kv`, and a config for `cluster` with `redis` lines added.
fn setup_for(cluster: &Cluster, redis: &str) -> (Env, std::path::PathBuf) {
    let env = Env::with_servers(MariaDb::start(), Redis::start());
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let config = env.config("current", RULES);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        &format!("[redis]\nurl = \"{}\"", env.redis.url()),
        &format!(
            "[redis]\nurl = \"{}\"\ncluster = true\n{redis}",
            cluster.url()
        ),
    );
    assert!(text.contains("cluster = true"), "{text}");
    std::fs::write(&config, text).expect("config");
    (env, config)
}

fn checkpoint(cluster: &Cluster) -> Option<Checkpoint> {
    let text: Option<String> = cluster.conn().get(CHECKPOINT_KEY).expect("GET");
    text.map(|t| Checkpoint::decode(&t).expect("checkpoint"))
}

fn wait_caught_up(env: &Env, cluster: &Cluster) {
    let head = env.head();
    eventually("the checkpoint to reach the head", WAIT, || {
        let at: Option<Position> = checkpoint(cluster).map(|c| c.position);
        (at.as_ref() == Some(&head)).then_some(())
    });
}

fn cli(command: &str, config: &std::path::Path) -> (i32, String) {
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&[command, "--config", path]);
    (code, format!("{out}{err}"))
}

#[test]
fn rows_reach_keys_on_every_node_and_kills_and_a_truncate_leave_the_cache_right() {
    let (env, cluster, config) = setup();
    let (code, out) = cli("check", &config);
    assert_eq!(code, 0, "{out}");
    let mut daemon = Daemon::start(&config);
    eventually("the first checkpoint", WAIT, || checkpoint(&cluster));
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_300"]);
    env.exec(&["UPDATE t.kv SET v = v + 1000 WHERE id <= 100"]);
    wait_caught_up(&env, &cluster);
    let value: Option<String> = cluster.conn().get("kv:7").expect("GET");
    assert_eq!(value.as_deref(), Some(r#"{"id":7,"v":1007}"#));
    let per_node = cluster.keys_by_node("kv:*");
    assert!(
        per_node.iter().all(|keys| keys.len() > 50),
        "keys on every node: {:?}",
        per_node.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "{out}");

    // A writer busy throughout; the daemon killed four times.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writer(&env, stop.clone());
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        daemon.kill();
        daemon = Daemon::start(&config);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 100, "{written}");
    wait_caught_up(&env, &cluster);
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "equal after the kills:\n{out}");
    let (code, out) = cli("status", &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"lag_bytes\": 0"), "{out}");

    // An XA transaction prepared before a kill and committed after it: its stash (a
    // list under the checkpoint key) is read back from its node.
    let mut xa = env.sql();
    for statement in [
        "XA START 'c1'",
        "INSERT INTO t.kv VALUES (5000, 1), (5001, 2), (5002, 3)",
        "XA END 'c1'",
        "XA PREPARE 'c1'",
    ] {
        support::servers::mysql::query(&mut xa, statement).expect(statement);
    }
    wait_caught_up(&env, &cluster);
    daemon.kill();
    support::servers::mysql::query(&mut xa, "XA COMMIT 'c1'").expect("commit");
    daemon = Daemon::start(&config);
    wait_caught_up(&env, &cluster);
    let committed: Vec<Option<String>> = (5000..5003)
        .map(|id| cluster.conn().get(format!("kv:{id}")).expect("GET"))
        .collect();
    assert!(committed.iter().all(Option::is_some), "{committed:?}");

    // A TRUNCATE clears the rules' keys on every node.
    env.exec(&["TRUNCATE TABLE t.kv"]);
    wait_caught_up(&env, &cluster);
    assert!(
        cluster.keys_by_node("kv*").iter().all(Vec::is_empty),
        "{:?}",
        cluster.keys_by_node("kv*")
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// Updates, inserts and deletes `t.kv` rows until `stop` (at most 20,000 statements).
fn writer(env: &Env, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut c = env.sql();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && n < 20_000 {
            n += 1;
            let id = (n * 7919) % 400 + 1;
            let sql = match n % 4 {
                0 => format!("DELETE FROM t.kv WHERE id = {id}"),
                1 => format!("BEGIN; UPDATE t.kv SET v = v + 1 WHERE id = {id}; UPDATE t.kv SET v = {n} WHERE id = {}; COMMIT", id % 50 + 1),
                _ => format!("INSERT INTO t.kv VALUES ({id}, {n}) ON DUPLICATE KEY UPDATE v = {n}"),
            };
            support::servers::mysql::query(&mut c, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    })
}

#[test]
fn load_and_reset_work_across_the_nodes() {
    let (env, cluster, config) = setup();
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_500"]);
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["load", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1000 key(s) written"), "{out}");
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "{out}");
    let mut daemon = Daemon::start(&config);
    env.exec(&["DELETE FROM t.kv WHERE id = 9"]);
    wait_caught_up(&env, &cluster);
    let gone: Option<String> = cluster.conn().get("kv:9").expect("GET");
    assert_eq!(gone, None);
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());

    // Rows deleted with no daemon running: a rebuild marks the keys on every node, and
    // deletes those it did not rewrite.
    env.exec(&["DELETE FROM t.kv WHERE id BETWEEN 10 AND 19"]);
    let (code, out, err) = run_cli(&["load", "--config", path, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted  20 key(s) no row produces"), "{out}");
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "{out}");
    let ttl: i64 = cluster.conn().pttl("kv:20").expect("PTTL");
    assert_eq!(ttl, -1, "a rewritten key keeps no mark");

    let (code, out, err) = run_cli(&["reset", "--config", path, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        cluster.keys_by_node("kv*").iter().all(Vec::is_empty),
        "reset deletes on every node"
    );
    assert_eq!(checkpoint(&cluster).map(|c| c.position), Some(env.head()));
}

#[test]
fn a_cluster_node_needs_redis_cluster_and_redis_cluster_needs_a_cluster() {
    let (env, cluster, config) = setup();
    let standalone = std::fs::read_to_string(&config)
        .expect("config")
        .replace("cluster = true\n", "");
    std::fs::write(&config, &standalone).expect("config");
    let (code, out) = cli("check", &config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("redis.cluster = true"), "{out}");
    let mut daemon = Daemon::start(&config);
    assert_eq!(daemon.wait_exit(WAIT), 2, "{}", daemon.log());
    assert!(daemon.log().contains("Redis Cluster"), "{}", daemon.log());

    let waiting = standalone.replace(
        &format!("url = \"{}\"", cluster.url()),
        &format!("url = \"{}\"\nwait_replicas = 1", env.redis.url()),
    );
    std::fs::write(&config, &waiting).expect("config");
    let (code, out) = cli("check", &config);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("redis.wait_replicas"), "{out}");

    let wrong = standalone.replace(
        &format!("url = \"{}\"", cluster.url()),
        &format!("url = \"{}\"\ncluster = true", env.redis.url()),
    );
    std::fs::write(&config, wrong).expect("config");
    let mut daemon = Daemon::start(&config);
    assert_eq!(daemon.wait_exit(WAIT), 2, "{}", daemon.log());
    assert!(
        daemon.log().contains("not a Redis Cluster node"),
        "{}",
        daemon.log()
    );
}

/// Slots moved to a node added while the daemon runs (a scale-out), under a writer
/// (`MOVED` and `ASK` while the keys migrate): the steps that meet them read the layout
/// again, load the slot script on the new primary and send those slots' parts there,
/// without a reconnection, and the cache ends equal to the database.
#[test]
fn slots_resharded_under_a_writer_leave_the_cache_right() {
    let (env, mut cluster, config) = setup();
    let mut daemon = Daemon::start(&config);
    eventually("the first checkpoint", WAIT, || checkpoint(&cluster));
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_400"]);
    let added = cluster.add_empty_node();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writer(&env, stop.clone());
    let id = |i: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[i].conn())
            .expect("CLUSTER MYID")
    };
    let moved = std::process::Command::new(support::servers::find_binary("redis-cli"))
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", cluster.nodes[0].port),
        ])
        .args(["--cluster-from", &id(0), "--cluster-to", &id(added)])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        moved.status.success(),
        "{}{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    wait_caught_up(&env, &cluster);
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "equal after the resharding:\n{out}");
    let sizes: Vec<usize> = cluster.keys_by_node("kv:*").iter().map(Vec::len).collect();
    assert!(
        sizes[added] > sizes[0],
        "slots moved from node 0 to the new node: {sizes:?}"
    );
    assert!(daemon.is_running(), "{}", daemon.log());
    let metrics = support::prom::scrape(env.metrics_port).expect("/metrics answers");
    assert_eq!(
        metrics.get(r#"cdc_cache_reconnects_total{target="redis"}"#),
        Some(&0.0),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// A cluster reached over TLS only (`rediss://`, `redis.tls_ca_file`), its bus too.
#[test]
fn a_cluster_over_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = support::tls::certificates(certs.path());
    let cluster = Cluster::start_tls(3, (&cert, &key, &ca));
    let (env, config) = setup_for(&cluster, &format!("tls_ca_file = \"{}\"", ca.display()));
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("rediss://"), "{text}");
    let mut daemon = Daemon::start(&config);
    eventually("the first checkpoint", WAIT, || checkpoint(&cluster));
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_100"]);
    wait_caught_up(&env, &cluster);
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// With `redis.wait_replicas`, a step's checkpoint moves only once every primary's
/// replica has its writes: with the replicas stopped the checkpoint stays, and it moves
/// when they are back.
#[test]
fn the_checkpoint_waits_for_the_replicas_when_asked() {
    let cluster = Cluster::start_with_replicas(3);
    let (env, config) = setup_for(&cluster, "wait_replicas = 1\nwait_timeout_ms = 300");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, &text).expect("config");
    let (code, out) = cli("check", &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 primaries serving 16384 of 16384 slots, each with at least 1 replica"),
        "{out}"
    );
    // Asking for more replicas than there are is a problem; none, with replicas, a warning.
    for (wanted, expected) in [
        ("2", "PROBLEM  redis.wait_replicas = 2"),
        ("0", "warning  Redis Cluster primaries have replicas"),
    ] {
        let other = text.replace("wait_replicas = 1", &format!("wait_replicas = {wanted}"));
        std::fs::write(&config, other).expect("config");
        let (_, out) = cli("check", &config);
        assert!(out.contains(expected), "{out}");
    }
    std::fs::write(&config, &text).expect("config");
    let mut daemon = Daemon::start(&config);
    eventually("the first checkpoint", WAIT, || checkpoint(&cluster));
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_100"]);
    wait_caught_up(&env, &cluster);

    let before = checkpoint(&cluster).expect("checkpoint").position;
    for replica in &cluster.nodes[3..] {
        replica.pause(true);
    }
    env.exec(&["UPDATE t.kv SET v = -1"]);
    eventually("the daemon to say the replicas are behind", WAIT, || {
        daemon.log().contains("redis.wait_replicas").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        checkpoint(&cluster).map(|c| c.position),
        Some(before),
        "no checkpoint past writes the replicas lack"
    );
    for replica in &cluster.nodes[3..] {
        replica.pause(false);
    }
    wait_caught_up(&env, &cluster);
    let (code, out) = cli("verify", &config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

/// A primary down while no step runs shows as Redis not connected (`/readyz` 503): the
/// health ping goes to every primary, not only to the node of `redis.url`.
#[test]
fn a_primary_down_while_idle_shows_as_redis_not_connected() {
    let (env, mut cluster, config) = setup();
    let _daemon = Daemon::start(&config);
    let connected = |want: f64| {
        support::prom::scrape(env.metrics_port)
            .and_then(|s| s.get(r#"cdc_cache_connected{target="redis"}"#).copied())
            .filter(|v| *v == want)
    };
    eventually("connected to the cluster", WAIT, || connected(1.0));
    cluster.nodes[2].kill();
    eventually("a primary down is seen while idle", WAIT, || connected(0.0));
}

/// The lease protocol on a cluster: each key's scripts run on its own node, and the
/// daemon's step for the key's slot replaces the marker there, so a fill that read the
/// row before a commit is refused on every node.
#[test]
fn a_late_leased_fill_is_refused_on_every_node() {
    use cdc_cache::lease::{LeaseCache, Lookup};
    let (env, cluster, config) = setup();
    let mut daemon = Daemon::start(&config);
    wait_caught_up(&env, &cluster);
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_12"]);
    wait_caught_up(&env, &cluster);
    let keys: Vec<String> = (1..=12).map(|i| format!("kv:{i}")).collect();
    assert!(
        cluster.keys_by_node("kv:*").iter().all(|k| !k.is_empty()),
        "keys on every node: {:?}",
        cluster.keys_by_node("kv:*")
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cache = rt.block_on(async {
        let client = redis::cluster::ClusterClient::new(vec![cluster.url()]).expect("client");
        LeaseCache::new(client.get_async_connection().await.expect("connect"))
    });
    let mut c = cluster.conn();
    let mut tokens = Vec::new();
    for key in &keys {
        let _: () = c.del(key).expect("DEL (an eviction)");
        let lookup = rt.block_on(cache.lookup::<std::io::Error>(key));
        match lookup.expect("lease_get") {
            Lookup::Lease(token) => tokens.push(token),
            other => panic!("{key}: expected a lease, got {other:?}"),
        }
    }

    env.exec(&["UPDATE t.kv SET v = v + 100"]);
    wait_caught_up(&env, &cluster);
    for (i, (key, token)) in keys.iter().zip(&tokens).enumerate() {
        let stale = format!(r#"{{"id":{},"v":{}}}"#, i + 1, i + 1);
        let stored = rt.block_on(cache.fill::<std::io::Error>(key, token, &stale, None));
        assert!(
            !stored.expect("lease_fill"),
            "{key}: the late fill was refused"
        );
        let now: String = c.get(key).expect("GET");
        assert_eq!(now, format!(r#"{{"id":{},"v":{}}}"#, i + 1, i + 101));
    }
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}
