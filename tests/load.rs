//! `cdc-cache load` on MariaDB and Redis: the cache is filled from one consistent
//! snapshot and the checkpoint set to the snapshot's exact binlog position, so with
//! writers busy throughout, the daemon started afterwards makes the cache equal to the
//! database (`verify`). Both ways of finding a snapshot's position (MariaDB's own, and
//! MySQL's read lock) are checked against the GTID of every row a writer commits. A
//! second load needs `--yes` and rebuilds, keys readable throughout and those no row
//! produces deleted; a running daemon is fenced off by a load, and one that starts
//! during a load waits for it.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_cache::dbread::snapshot::{self, Method};
use mysql_async::prelude::Queryable;
use redis::Commands;
use support::servers::mysql;
use support::{eventually, run_cli, Daemon, Env, CHECKPOINT_KEY};

const WAIT: Duration = Duration::from_secs(30);

const RULES: &str = "[[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nkey = \"user:{id}\"\n\n\
                     [[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"userh:{id}\"\n\n\
                     [[rules]]\ntable = \"shop.orders\"\naction = \"delete\"\nkey = \"order:{id}\"\n";

/// 3,000 users (three pages of the load), and an orders table for the delete rule.
fn setup(env: &Env) {
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(40), \
         balance DECIMAL(10,2), seen TIMESTAMP NULL)",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT)",
        "INSERT INTO shop.orders VALUES (1, 10)",
        "INSERT INTO shop.users SELECT seq, CONCAT('user ', seq), seq / 4, \
         FROM_UNIXTIME(1700000000 + seq) FROM shop.seq_1_to_3000",
    ]);
}

fn verify(config: &std::path::Path) -> (i32, String) {
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    (code, format!("{out}{err}"))
}

fn load(config: &std::path::Path, yes: bool) -> (i32, String, String) {
    let path = config.to_str().expect("utf-8 path");
    let mut args = vec!["load", "--config", path];
    if yes {
        args.push("--yes");
    }
    run_cli(&args)
}

/// Updates, inserts and deletes users until `stop` (at most 20,000 statements).
fn busy_writer(env: &Env, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut c = env.sql();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && n < 20_000 {
            n += 1;
            let id = (n * 7919) % 3500 + 1;
            let sql = match n % 3 {
                0 => format!("DELETE FROM shop.users WHERE id = {id}"),
                1 => format!(
                    "INSERT INTO shop.users VALUES ({id}, 'new {n}', {n}, NULL) \
                     ON DUPLICATE KEY UPDATE name = 'changed {n}', balance = balance + 1"
                ),
                _ => format!("UPDATE shop.users SET seen = NOW() WHERE id = {id}"),
            };
            mysql::query(&mut c, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        n
    })
}

#[test]
fn a_load_under_busy_writers_hands_over_to_the_daemon_at_its_snapshot() {
    let env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let mut conn = env.redis.conn();
    let _: () = conn.set("order:1", "the application's").expect("SET");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = busy_writer(&env, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let (code, out, err) = load(&config, false);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert_eq!(code, 0, "{out}{err}");
    assert!(written > 100, "the writer ran alongside: {written}");
    assert!(out.contains("key(s) written"), "{out}");
    let checkpoint = env.checkpoint().expect("the load set a checkpoint");
    assert_eq!(
        checkpoint.loading, None,
        "the final checkpoint is not a marker"
    );
    assert!(
        out.contains(&format!("checkpoint set to {}", checkpoint.position)),
        "{out}"
    );
    assert!(
        checkpoint.position < env.head(),
        "writes came after the snapshot"
    );
    let name: Option<String> = conn.hget("userh:3000", "name").expect("HGET");
    assert!(name.is_some(), "the last page was loaded");

    // The cache is the snapshot; the daemon applies what came after it.
    let mut daemon = Daemon::start_ready(&env, &config);
    env.wait_caught_up(WAIT);
    let (code, report) = verify(&config);
    assert_eq!(code, 0, "the cache equals the database:\n{report}");
    let order: Option<String> = conn.get("order:1").expect("GET");
    assert_eq!(
        order.as_deref(),
        Some("the application's"),
        "a first load deletes nothing"
    );
    assert_eq!(daemon.terminate(WAIT), 0, "{}", daemon.log());
}

#[test]
fn a_second_load_needs_yes_and_then_rebuilds_the_cache() {
    let env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let (code, out, err) = load(&config, false);
    assert_eq!(code, 0, "{out}{err}");
    let mut conn = env.redis.conn();
    let _: () = conn.set("user:1", "wrong").expect("SET");
    let _: () = conn.set("user:999999", "stale").expect("SET");
    let _: () = conn.set("order:5", "stale order").expect("SET");
    let under = format!("{CHECKPOINT_KEY}:xa:1:61:");
    let _: () = conn
        .rpush(&under, "a prepared transaction's stash")
        .expect("RPUSH");

    let (code, out, err) = load(&config, false);
    assert_eq!(
        code, 2,
        "a maintained cache is not loaded over:\n{out}{err}"
    );
    assert!(
        err.contains("--yes") && err.contains("holds a checkpoint"),
        "{err}"
    );
    let kept: Option<String> = conn.get("user:1").expect("GET");
    assert_eq!(kept.as_deref(), Some("wrong"), "nothing was written");

    let (code, out, err) = load(&config, true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted"), "{out}");
    let (code, report) = verify(&config);
    assert_eq!(code, 0, "rebuilt:\n{report}");
    let gone: Vec<Option<String>> = ["user:999999", "order:5"]
        .iter()
        .map(|k| conn.get(*k).expect("GET"))
        .collect();
    assert_eq!(
        gone,
        [None, None],
        "the stale upsert key and the delete rule's key went"
    );
    let stash: u64 = conn.llen(&under).expect("LLEN");
    assert_eq!(stash, 1, "keys under the checkpoint key stay");
}

#[test]
fn a_load_fences_off_a_running_daemon_and_a_starting_one_waits_for_it() {
    let env = Env::start();
    setup(&env);
    let config = env.config("current", RULES);
    let mut running = Daemon::start_ready(&env, &config);
    let (code, out, err) = load(&config, true);
    assert_eq!(code, 0, "{out}{err}");
    env.exec(&["UPDATE shop.users SET name = 'after the load' WHERE id = 7"]);
    assert_eq!(
        running.wait_exit(WAIT),
        3,
        "its next step is fenced: {}",
        running.log()
    );

    // A load that did not finish leaves its marker: a daemon waits, applying nothing.
    let mut marker = env.checkpoint().expect("checkpoint");
    marker.loading = Some("a load stopped half-way".into());
    let mut conn = env.redis.conn();
    let _: () = conn.set(CHECKPOINT_KEY, marker.encode()).expect("SET");
    let mut waiting = Daemon::start(&config);
    eventually("the daemon to say it waits", WAIT, || {
        waiting.log().contains("cdc-cache load").then_some(())
    });
    assert!(waiting.is_running(), "waiting is not a stop");
    assert_eq!(
        env.checkpoint().expect("checkpoint"),
        marker,
        "nothing applied"
    );
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["status", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#""loading": "a load stopped half-way""#),
        "{out}"
    );

    let (code, out, err) = load(&config, true);
    assert_eq!(code, 0, "{out}{err}");
    env.exec(&["UPDATE shop.users SET name = 'streamed' WHERE id = 8"]);
    eventually("the waiting daemon to apply a change", WAIT, || {
        let v: Option<String> = conn.get("user:8").expect("GET");
        v.filter(|v| v.contains("streamed"))
    });
    env.wait_caught_up(WAIT);
    let (code, report) = verify(&config);
    assert_eq!(code, 0, "{report}");
    assert_eq!(waiting.terminate(WAIT), 0, "{}", waiting.log());
}

/// Each method's snapshot shows exactly the rows whose transactions are before its
/// position: a writer records the GTID of every row it commits.
#[test]
fn both_ways_of_finding_a_snapshot_position_match_what_the_snapshot_reads() {
    let env = Env::start();
    env.exec(&["CREATE DATABASE t", "CREATE TABLE t.c (id INT PRIMARY KEY)"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let read_lock = Method::ReadLock { wait_secs: 10 };
    for method in [Method::SnapshotStatus, read_lock] {
        let base: u64 = if method == read_lock { 1_000_000 } else { 0 };
        let stop = Arc::new(AtomicBool::new(false));
        let writer = gtid_writer(&env, base, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        let (visible, seq_at) = rt.block_on(async {
            let opts = mysql_async::Opts::from_url(&env.db.root_url()).expect("url");
            let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
            let server = cdc_cache::source::server::info(&mut conn)
                .await
                .expect("server");
            let snap = snapshot::begin(&mut conn, &server, method)
                .await
                .expect("snapshot");
            // The rows the snapshot shows, and the GTID state at its position.
            let visible: Vec<u64> = conn
                .exec(
                    "SELECT id FROM t.c WHERE id > ? AND id < ? ORDER BY id",
                    (base, base + 1_000_000),
                )
                .await
                .expect("select");
            let state: String = conn
                .exec_first(
                    "SELECT BINLOG_GTID_POS(?, ?)",
                    (&snap.position.file, snap.position.pos),
                )
                .await
                .expect("gtid pos")
                .expect("a state");
            if method == Method::SnapshotStatus {
                assert_eq!(snap.gtid.as_deref(), Some(state.as_str()));
            }
            conn.query_drop("COMMIT").await.expect("commit");
            (visible, sequence_number(&state))
        });
        stop.store(true, Ordering::Relaxed);
        let committed = writer.join().expect("writer");
        let before: Vec<u64> = committed
            .iter()
            .filter(|(_, seq)| *seq <= seq_at)
            .map(|(id, _)| *id)
            .collect();
        assert!(
            !before.is_empty() && before.len() < committed.len(),
            "{method:?}: the snapshot fell among the writes ({} of {})",
            before.len(),
            committed.len()
        );
        assert_eq!(
            visible, before,
            "{method:?}: the snapshot shows exactly the rows committed before its position"
        );
    }
}

/// Inserts rows `base+1, base+2, …` one transaction each until `stop`, returning each
/// row's GTID sequence number (`@@last_gtid`), at most 20,000 rows.
fn gtid_writer(
    env: &Env,
    base: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, u64)>> {
    let mut c = env.sql();
    std::thread::spawn(move || {
        let mut rows = Vec::new();
        let mut id = base;
        while !stop.load(Ordering::Relaxed) && rows.len() < 20_000 {
            id += 1;
            mysql::query(&mut c, &format!("INSERT INTO t.c VALUES ({id})")).expect("insert");
            let gtid: String = mysql::rows(&mut c, "SELECT @@last_gtid")[0]
                .get(0)
                .expect("last_gtid");
            rows.push((id, sequence_number(&gtid)));
        }
        rows
    })
}

/// The sequence number of a one-domain MariaDB GTID (state) `0-1-42`.
fn sequence_number(gtid: &str) -> u64 {
    gtid.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a GTID: {gtid:?}"))
}

/// MySQL's way waits for the read lock only so long: writers queue behind a waiting
/// `FLUSH TABLES WITH READ LOCK`, so it gives up rather than stall them.
#[test]
fn the_read_lock_is_not_waited_for_long_behind_a_locked_table() {
    let env = Env::start();
    env.exec(&["CREATE DATABASE t", "CREATE TABLE t.c (id INT PRIMARY KEY)"]);
    let mut holder = env.sql();
    mysql::query(&mut holder, "LOCK TABLES t.c WRITE").expect("lock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = rt.block_on(async {
        let opts = mysql_async::Opts::from_url(&env.db.root_url()).expect("url");
        let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
        let server = cdc_cache::source::server::info(&mut conn)
            .await
            .expect("server");
        let attempt = snapshot::begin(&mut conn, &server, Method::ReadLock { wait_secs: 1 });
        tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .expect("the wait for the lock is bounded")
            .expect_err("the lock is held")
    });
    let message = refused.to_string();
    assert!(
        message.contains("not granted within 1 s") && message.contains("run it again"),
        "{message}"
    );
    mysql::query(&mut holder, "UNLOCK TABLES").expect("unlock");
    mysql::query(&mut holder, "INSERT INTO t.c VALUES (1)").expect("writers go on");
}

/// Keys of rows a rebuild rewrites are never missing while it runs: a reader polling the
/// key of the last row in primary-key order (the last one rewritten) sees its value
/// throughout. Afterwards the keys no row produces are gone, also under a template with
/// text columns that hold its separator, and keys no rule can make stay.
#[test]
fn a_rebuild_keeps_keys_readable_and_deletes_those_no_row_produces() {
    let env = Env::start();
    setup(&env);
    env.exec(&[
        "CREATE TABLE shop.tags (owner VARCHAR(20), tag VARCHAR(20), n INT, \
         PRIMARY KEY (owner, tag))",
        "INSERT INTO shop.tags VALUES ('a:b', 'c', 1), ('a', 'b:d', 2), ('x', 'y', 3)",
        "INSERT INTO shop.users SELECT seq, 'more', 0, NULL FROM shop.seq_3001_to_40000",
    ]);
    let rules = format!(
        "{RULES}\n[[rules]]\ntable = \"shop.tags\"\naction = \"upsert\"\nkey = \"tag:{{owner}}:{{tag}}\"\n"
    );
    let config = env.config("current", &rules);
    let mut conn = env.redis.conn();
    // Before any checkpoint, a load leaves the delete rule's keys and others' keys alone
    // but deletes upsert keys no row produces.
    for (key, value) in [
        ("user:50000", "no such row"),
        ("tag:a:b:x", "no such row"),
        ("order:5", "the application's"),
        ("user:7:friends", "another application's"),
    ] {
        let _: () = conn.set(key, value).expect("SET");
    }
    let (code, out, err) = load(&config, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted  2 key(s) no row produces"), "{out}");
    let values: Vec<Option<String>> = ["user:50000", "tag:a:b:x", "order:5", "user:7:friends"]
        .iter()
        .map(|k| conn.get(*k).expect("GET"))
        .collect();
    assert_eq!(
        values,
        [
            None,
            None,
            Some("the application's".into()),
            Some("another application's".into())
        ]
    );
    let tags: Vec<Option<String>> = ["tag:a:b:c", "tag:a:b:d", "tag:x:y"]
        .iter()
        .map(|k| conn.get(*k).expect("GET"))
        .collect();
    assert!(tags.iter().all(Option::is_some), "{tags:?}");

    // Rows deleted and keys changed while no daemon runs; then a rebuild under a reader.
    env.exec(&[
        "DELETE FROM shop.users WHERE id BETWEEN 10 AND 19",
        "UPDATE shop.tags SET tag = 'z' WHERE owner = 'x'",
    ]);
    let last = "user:40000";
    let reader_env = env.redis.conn();
    let stop = Arc::new(AtomicBool::new(false));
    let reading = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut conn = reader_env;
        let (mut reads, mut missing) = (0u64, 0u64);
        while !reading.load(Ordering::Relaxed) && reads < 10_000_000 {
            let value: Option<String> = conn.get(last).expect("GET");
            reads += 1;
            missing += u64::from(value.is_none());
        }
        (reads, missing)
    });
    let (code, out, err) = load(&config, true);
    stop.store(true, Ordering::Relaxed);
    let (reads, missing) = reader.join().expect("reader");
    assert_eq!(code, 0, "{out}{err}");
    assert!(reads > 10, "the reader ran during the load: {reads}");
    assert_eq!(
        missing, 0,
        "{last} was missing in {missing} of {reads} reads"
    );
    assert!(
        out.contains("deleted  21 key(s) no row produces"),
        "10 users twice (JSON and hash), the tag whose key changed, and none else:\n{out}"
    );
    let (code, report) = verify(&config);
    assert_eq!(code, 0, "rebuilt:\n{report}");
    let friends: Option<String> = conn.get("user:7:friends").expect("GET");
    assert_eq!(friends, None, "a rebuild deletes what no rule can make");
}
