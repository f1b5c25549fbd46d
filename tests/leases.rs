//! Lease-protected fills (scripts/lease_get.lua, scripts/lease_fill.lua, and the Rust
//! helper on them) against the running daemon: the stale-fill race closed for both rule
//! kinds (and shown open with a plain SET), concurrent readers and writers ending equal to
//! the database, and a hot key read from the database once.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_cache::lease::{LeaseCache, Lookup};
use redis::Commands;
use support::{mysql, run_cli, Daemon, Env};

const RULES: &str = "\
[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n\n\
[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kvd:{id}\"\n";

type Failure = std::io::Error;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn cache(env: &Env) -> LeaseCache<redis::aio::MultiplexedConnection> {
    cache_at(&env.redis.url()).await
}

/// A lease cache on its own connection (a task of its own needs an owned URL).
async fn cache_at(redis_url: &str) -> LeaseCache<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url).expect("client");
    LeaseCache::new(
        client
            .get_multiplexed_async_connection()
            .await
            .expect("connect"),
    )
}

/// The row as the daemon's json rule renders it, read now.
fn row_json(env: &Env, id: i64) -> Option<String> {
    let rows = mysql::rows(
        &mut env.sql(),
        &format!("SELECT v FROM t.kv WHERE id = {id}"),
    );
    rows.first().map(|r| {
        let v: i64 = r.get(0).expect("v");
        format!(r#"{{"id":{id},"v":{v}}}"#)
    })
}

fn start(env: &Env) -> Daemon {
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
    ]);
    let daemon = Daemon::start_ready(env, &env.config("current", RULES));
    env.exec(&["INSERT INTO t.kv SELECT seq, 1 FROM t.seq_1_to_50"]);
    env.wait_caught_up(Duration::from_secs(30));
    daemon
}

#[test]
fn a_late_fill_cannot_restore_a_stale_value_and_a_plain_set_can() {
    let env = Env::start();
    let mut daemon = start(&env);
    let rt = runtime();
    let mut r = env.redis.conn();
    for key in ["kv:1", "kvd:1"] {
        // Leased: miss, read the old row, a commit lands and is applied, then the fill.
        let _: () = r.del(key).expect("DEL (an eviction)");
        let token = rt.block_on(async {
            match cache(&env)
                .await
                .lookup::<Failure>(key)
                .await
                .expect("lease_get")
            {
                Lookup::Lease(token) => token,
                other => panic!("{key}: expected a lease, got {other:?}"),
            }
        });
        let old = row_json(&env, 1).expect("row 1");
        env.exec(&["UPDATE t.kv SET v = v + 1 WHERE id = 1"]);
        env.wait_caught_up(Duration::from_secs(30));
        let stored = rt.block_on(async {
            cache(&env)
                .await
                .fill::<Failure>(key, &token, &old, None)
                .await
                .expect("lease_fill")
        });
        assert!(!stored, "{key}: the late fill was refused");
        let now: Option<String> = r.get(key).expect("GET");
        let expected = if key == "kv:1" {
            row_json(&env, 1)
        } else {
            None
        };
        assert_eq!(now, expected, "{key} holds the committed state");

        // The same sequence with a plain SET leaves the stale value behind.
        let _: () = r.del(key).expect("DEL");
        let old = row_json(&env, 1).expect("row 1");
        env.exec(&["UPDATE t.kv SET v = v + 1 WHERE id = 1"]);
        env.wait_caught_up(Duration::from_secs(30));
        let _: () = r.set(key, &old).expect("plain SET");
        let now: Option<String> = r.get(key).expect("GET");
        assert_eq!(
            now.as_ref(),
            Some(&old),
            "{key}: the plain SET left a stale value"
        );
        assert_ne!(
            now,
            row_json(&env, 1),
            "{key}: and it differs from the database"
        );
        println!(
            "{key}: leased late fill refused; plain SET left {old} against {:?}",
            row_json(&env, 1)
        );
        let _: () = r.del(key).expect("clean up");
    }
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn concurrent_readers_and_writers_end_equal_to_the_database() {
    let env = Env::start();
    let mut daemon = start(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, stop) = (env.db.root_url(), stop.clone());
            std::thread::spawn(move || {
                let mut c = mysql::conn(&url).expect("writer connects");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = (n * 7 + w * 13) % 50 + 1;
                    let sql = match n % 5 {
                        0 => format!("DELETE FROM t.kv WHERE id = {id}"),
                        1 => format!("INSERT IGNORE INTO t.kv VALUES ({id}, {n})"),
                        _ => format!("UPDATE t.kv SET v = {n} WHERE id = {id}"),
                    };
                    mysql::query(&mut c, &sql).expect("write");
                    std::thread::sleep(Duration::from_millis(3));
                }
                n
            })
        })
        .collect();
    let rt = runtime();
    let (fills, reads) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let loads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..8)
            .map(|r| {
                let url = env.db.root_url();
                let loads = loads.clone();
                let redis_url = env.redis.url();
                tokio::spawn(async move {
                    let mut cache = cache_at(&redis_url).await;
                    let pool = mysql_async::Pool::new(url.as_str());
                    let mut reads = 0u64;
                    let mut i = r as u64;
                    while Instant::now() < deadline {
                        i = i
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let id = (i >> 33) % 50 + 1;
                        let pool = pool.clone();
                        let loads = loads.clone();
                        cache
                            .get_or_fill(&format!("kv:{id}"), None, || async move {
                                use mysql_async::prelude::Queryable;
                                loads.fetch_add(1, Ordering::Relaxed);
                                let mut c = pool.get_conn().await?;
                                let v: Option<i64> = c
                                    .query_first(format!("SELECT v FROM t.kv WHERE id = {id}"))
                                    .await?;
                                Ok::<_, mysql_async::Error>(
                                    v.map(|v| format!(r#"{{"id":{id},"v":{v}}}"#)),
                                )
                            })
                            .await
                            .expect("get_or_fill");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut reads = 0;
        for r in readers {
            reads += r.await.expect("reader");
        }
        (loads.load(Ordering::Relaxed), reads)
    });
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    env.wait_caught_up(Duration::from_secs(60));
    let config = env.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["verify", "--config", config.to_str().expect("utf-8")]);
    println!(
        "{reads} reads ({fills} database loads) by 8 readers against {writes} writes; verify: {}",
        out.lines().last().unwrap_or_default()
    );
    assert!(reads > 1000 && writes > 1000, "the load ran");
    assert_eq!(code, 0, "every cached key equals the database:\n{out}{err}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn fifty_readers_missing_one_hot_key_read_the_database_once() {
    let env = Env::start();
    let mut daemon = start(&env);
    let _: () = env.redis.conn().del("kv:7").expect("DEL");
    let rt = runtime();
    let loads = Arc::new(AtomicUsize::new(0));
    let values = rt.block_on(async {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let loads = loads.clone();
                let redis_url = env.redis.url();
                tokio::spawn(async move {
                    let mut cache = cache_at(&redis_url).await;
                    cache
                        .get_or_fill("kv:7", None, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            // A slow query: everyone else arrives while it runs.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok::<_, Failure>(Some(r#"{"id":7,"v":1}"#.to_string()))
                        })
                        .await
                        .expect("get_or_fill")
                })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.expect("reader"));
        }
        values
    });
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one database read for 50 misses"
    );
    assert!(
        values
            .iter()
            .all(|v| v.as_deref() == Some(r#"{"id":7,"v":1}"#)),
        "{values:?}"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}
