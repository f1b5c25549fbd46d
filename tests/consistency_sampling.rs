//! Continuous consistency sampling: with every applied key sampled, a clean workload
//! counts no inconsistency; a stale value planted by hand is counted, logged, and with
//! `repair = true` removed.

mod support;

use std::time::Duration;

use redis::Commands;
use support::prom::scrape;
use support::{eventually, Daemon, Env};

const RULES: &str = "\
[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"kvh:{id}\"\n";

fn samples(env: &Env) -> (f64, f64, f64) {
    let m = scrape(env.metrics_port).expect("/metrics");
    let get = |r: &str| {
        *m.get(&format!(
            "cdc_cache_consistency_samples_total{{result=\"{r}\"}}"
        ))
        .unwrap_or_else(|| panic!("no {r} series"))
    };
    (get("consistent"), get("inconsistent"), get("superseded"))
}

#[test]
fn a_clean_workload_samples_no_inconsistency() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let sampling = "\n[consistency]\nsample_rate = 1.0\ndelay_ms = 200\n";
    let config = env.config_with(&env.db.url(), "current", sampling, RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&[
        "INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_200",
        "UPDATE t.kv SET v = v + 1 WHERE id % 3 = 0",
    ]);
    for i in 0..50 {
        env.exec(&[&format!(
            "UPDATE t.kv SET v = v * 2 WHERE id = {}",
            i % 10 + 1
        )]);
    }
    env.wait_caught_up(Duration::from_secs(30));
    // Every SET and HSET step operation was sampled. A step is counted when the daemon
    // reads its reply, which can come just after its checkpoint is visible in Redis.
    // Writes a later one in the same step replaced were never sent (coalesced).
    let expected = 2.0 * (200.0 + 66.0 + 50.0);
    let (applied, coalesced) =
        eventually("every operation counted", Duration::from_secs(10), || {
            let m = scrape(env.metrics_port).expect("/metrics");
            let applied = m["cdc_cache_cache_operations_total{op=\"set\"}"]
                + m["cdc_cache_cache_operations_total{op=\"hset\"}"];
            let coalesced = m["cdc_cache_cache_writes_coalesced_total"];
            (applied + coalesced >= expected).then_some((applied, coalesced))
        });
    assert_eq!(
        applied + coalesced,
        expected,
        "operations applied or coalesced"
    );
    let (consistent, inconsistent, superseded) =
        eventually("every sample checked", Duration::from_secs(60), || {
            let (c, i, s) = samples(&env);
            (c + i + s >= applied).then_some((c, i, s))
        });
    println!(
        "samples: {consistent} consistent, {inconsistent} inconsistent, {superseded} superseded"
    );
    assert_eq!(inconsistent, 0.0);
    assert!(consistent >= 400.0, "{consistent}");
    assert_eq!(consistent + superseded, applied);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn a_planted_stale_value_is_counted_logged_and_repaired() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let sampling = "\n[consistency]\nsample_rate = 1.0\ndelay_ms = 1500\nrepair = true\n";
    let config = env.config_with(&env.db.url(), "current", sampling, RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv VALUES (1, 1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    // Within the delay, something else overwrites the key with a value the row never had.
    let _: () = env
        .redis
        .conn()
        .set("kv:1", r#"{"id":1,"v":999}"#)
        .expect("plant");
    eventually("the inconsistency counted", Duration::from_secs(30), || {
        (samples(&env).1 == 1.0).then_some(())
    });
    let log = daemon.log();
    assert!(
        log.contains("inconsistent cache entry") && log.contains("kv:1"),
        "logged with its key:\n{log}"
    );
    let left: Option<String> = env.redis.conn().get("kv:1").expect("GET");
    assert_eq!(left, None, "repair deleted the stale entry");
    let hash: Option<String> = env.redis.conn().hget("kvh:1", "v").expect("HGET");
    assert_eq!(
        hash.as_deref(),
        Some("1"),
        "the consistent key is untouched"
    );
    assert_eq!(samples(&env).0, 1.0, "the hash key was consistent");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn samples_that_cannot_be_checked_are_counted_as_skipped() {
    // The database goes away between the apply and the check: no verdict is possible,
    // and the sampler must say so rather than count nothing (which looks like a clean
    // cache on the dashboard).
    let mut env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let sampling = "\n[consistency]\nsample_rate = 1.0\ndelay_ms = 3000\n";
    let config = env.config_with(&env.db.url(), "current", sampling, RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv SELECT seq, seq FROM t.seq_1_to_5"]);
    env.wait_caught_up(Duration::from_secs(30));
    env.db.kill();
    let skipped = || {
        let m = scrape(env.metrics_port).expect("/metrics");
        m["cdc_cache_consistency_samples_total{result=\"skipped\"}"]
    };
    eventually("the 10 samples skipped", Duration::from_secs(60), || {
        (skipped() == 10.0).then_some(())
    });
    assert_eq!(
        samples(&env),
        (0.0, 0.0, 0.0),
        "no verdict without the database"
    );
    assert!(daemon.is_running(), "{}", daemon.log());
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}
