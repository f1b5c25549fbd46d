//! Issue 2, items 3 and 4: atomicity under a concurrent reader, and crash safety under
//! repeated SIGKILL while a writer commits.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use redis::Commands;
use serde_json::{json, Value};
use support::{mysql, Daemon, Env};

const N: usize = 500;

#[test]
fn no_reader_ever_sees_part_of_a_transaction() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE t.b (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.a\"\naction = \"upsert\"\nkey = \"a:{id}\"\n\n\
                 [[rules]]\ntable = \"t.b\"\naction = \"upsert\"\nkey = \"b:{id}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));

    let keys: Vec<String> = (1..=N)
        .flat_map(|i| [format!("a:{i}"), format!("b:{i}")])
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let mut redis = env.redis.conn();
    let poller = {
        let (stop, polls) = (stop.clone(), polls.clone());
        thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // MGET is atomic: one consistent view of all 1,000 keys.
                let values: Vec<Option<String>> = redis.mget(&keys).expect("MGET");
                let present = values.iter().flatten().count();
                let updated = values
                    .iter()
                    .flatten()
                    .filter(|v| v.contains("\"v\":2"))
                    .count();
                let state = (present, updated);
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
                polls.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };

    let mut c = env.sql();
    let rows = |table: &str, v: i32| -> String {
        let values: Vec<String> = (1..=N).map(|i| format!("({i}, {v})")).collect();
        format!("INSERT INTO t.{table} VALUES {}", values.join(","))
    };
    let transactions = [
        vec![rows("a", 1), rows("b", 1)],
        vec!["UPDATE t.a SET v = 2".into(), "UPDATE t.b SET v = 2".into()],
        vec!["DELETE FROM t.a".into(), "DELETE FROM t.b".into()],
    ];
    for statements in transactions {
        mysql::query(&mut c, "BEGIN").expect("BEGIN");
        for s in statements {
            mysql::query(&mut c, &s).expect("statement");
        }
        mysql::query(&mut c, "COMMIT").expect("COMMIT");
        env.wait_caught_up(Duration::from_secs(60));
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().expect("poller");
    let polls = polls.load(Ordering::Relaxed);
    println!("polls: {polls}, states seen: {seen:?}");
    assert!(polls > 10, "the poller must have run during the test");
    // Only whole states: nothing, all rows at v=1, all rows at v=2, nothing.
    for (present, updated) in &seen {
        assert!(
            *present == 0 || *present == 2 * N,
            "a poll saw {present} of {} keys",
            2 * N
        );
        assert!(
            *updated == 0 || *updated == *present,
            "a poll saw {updated} of {present} rows updated"
        );
    }
    assert!(
        seen.contains(&(2 * N, 0)),
        "the inserted state was observed: {seen:?}"
    );
    assert!(
        seen.contains(&(2 * N, 2 * N)),
        "the updated state was observed: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&(0, 0)));
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

/// xorshift: enough randomness for kill timing without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const KILLS: usize = 20;

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT, s VARCHAR(20))",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
                 [[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"h:{id}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = env.db.root_url();
        thread::spawn(move || {
            let mut c = mysql::conn(&url).expect("writer connects");
            let mut rng = Rng::seeded();
            let mut transactions = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = rng.below(200) + 1;
                let sql = match rng.below(10) {
                    0..=5 => format!(
                        "INSERT INTO t.kv VALUES ({id}, {transactions}, 's{transactions}') \
                         ON DUPLICATE KEY UPDATE v = VALUES(v), s = VALUES(s)"
                    ),
                    6..=7 => format!("DELETE FROM t.kv WHERE id = {id}"),
                    _ => format!(
                        "BEGIN; UPDATE t.kv SET v = v + 1 WHERE id <= {id} AND id > {id} - 5; \
                         INSERT IGNORE INTO t.kv VALUES ({}, 0, NULL); COMMIT",
                        id + 200
                    ),
                };
                mysql::query(&mut c, &sql).expect("writer statement");
                transactions += 1;
            }
            transactions
        })
    };

    let mut rng = Rng::seeded();
    for _ in 0..KILLS {
        thread::sleep(Duration::from_millis(150 + rng.below(600)));
        daemon.kill();
        daemon = Daemon::start(&config);
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.join().expect("writer");
    let started = Instant::now();
    env.wait_caught_up(Duration::from_secs(120));
    println!(
        "kills: {KILLS}, transactions: {transactions}, catch-up after writer stop: {:?}",
        started.elapsed()
    );

    // Redis holds exactly the database.
    let rows = mysql::rows(&mut env.sql(), "SELECT id, v, s FROM t.kv ORDER BY id");
    let mut expected_keys = Vec::new();
    let mut conn = env.redis.conn();
    for row in &rows {
        let (id, v, s): (i64, Option<i64>, Option<String>) = (
            row.get(0).expect("id"),
            row.get(1).expect("v"),
            row.get(2).expect("s"),
        );
        let cached: String = conn
            .get(format!("kv:{id}"))
            .unwrap_or_else(|_| panic!("kv:{id} missing"));
        let cached: Value = serde_json::from_str(&cached).expect("JSON");
        assert_eq!(cached, json!({"id": id, "v": v, "s": s}), "kv:{id}");
        let hash: std::collections::HashMap<String, String> =
            conn.hgetall(format!("h:{id}")).expect("HGETALL");
        assert_eq!(hash.get("v").cloned(), v.map(|v| v.to_string()), "h:{id}");
        expected_keys.push(format!("kv:{id}"));
        expected_keys.push(format!("h:{id}"));
    }
    expected_keys.sort();
    assert_eq!(
        env.cache_keys(),
        expected_keys,
        "no missing and no extra keys"
    );
    assert_eq!(env.checkpoint().map(|c| c.position), Some(env.head()));
    assert!(
        transactions > 100,
        "the writer must have been busy: {transactions}"
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(20)),
        0,
        "{}",
        daemon.log()
    );
}

#[test]
fn a_transaction_larger_than_a_step_is_split_and_checkpointed_once_complete() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
    let config = env.config_with(&env.db.url(), "current", "max_ops_per_step = 50", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, {i})")).collect();
    env.exec(&[&format!("INSERT INTO t.kv VALUES {}", values.join(","))]);
    env.wait_caught_up(Duration::from_secs(60));
    assert_eq!(env.cache_keys().len(), 1000);
    let v: String = env.redis.conn().get("kv:1000").expect("GET");
    assert_eq!(v, r#"{"id":1000,"v":1000}"#);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    assert!(daemon.log().contains("splitting"), "{}", daemon.log());
}
