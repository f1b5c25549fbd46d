//! The atomic step against a real Redis: runs of plain SETs and of DELs are sent grouped
//! (MSET, multi-key DEL), so a step mixing every kind of operation, with keys repeated,
//! must leave exactly what applying the operations one by one would; and steps sent
//! back to back without waiting (pipelined) land in order, each fenced on the last.
//! Each step is a watched MULTI/EXEC transaction behind a fence script: a refused step
//! runs none of its commands. On a Redis Cluster, the same per hash slot
//! (`cluster_steps`).

mod support;

use cdc_cache::checkpoint::Position;
use cdc_cache::mapper::CacheOp;
use redis::Commands;
use support::steps::{checkpoint, del, set, sink};
use support::Redis;

#[test]
fn a_mixed_step_ends_as_the_operations_applied_in_order() {
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let mut c = redis.conn();
    let _: () = c.set("gone", "old").expect("seed");
    let ops = vec![
        set("a", "1", 0),
        set("b", "2", 0),
        set("a", "3", 0), // the same key twice in one MSET run: the later value wins
        del("a"),
        del("gone"),
        del("never"),
        set("a", "4", 0),
        set("t", "ttl", 60_000),
        CacheOp::Hash {
            key: "h".into(),
            fields: vec![("f".into(), "v".into())],
            ttl_ms: 0,
        },
        set("c", "5", 0),
        del("b"),
        set("b", "6", 0),
        CacheOp::Expire {
            key: "c".into(),
            ttl_ms: 90_000_000,
        },
    ];
    rt.block_on(sink.apply(&ops, Some(&checkpoint(100))))
        .expect("step applies");
    let get = |c: &mut redis::Connection, k: &str| -> Option<String> { c.get(k).expect("GET") };
    assert_eq!(get(&mut c, "a").as_deref(), Some("4"));
    assert_eq!(get(&mut c, "b").as_deref(), Some("6"));
    assert_eq!(get(&mut c, "c").as_deref(), Some("5"));
    assert_eq!(get(&mut c, "gone"), None);
    assert_eq!(get(&mut c, "t").as_deref(), Some("ttl"));
    let ttl: i64 = c.pttl("t").expect("PTTL");
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    let field: Option<String> = c.hget("h", "f").expect("HGET");
    assert_eq!(field.as_deref(), Some("v"));
    let ttl: i64 = c.pttl("c").expect("PTTL");
    assert!(ttl > 60_000 && ttl <= 90_000_000, "a load's mark: {ttl}");
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(stored, checkpoint(100).encode());
}

#[test]
fn pipelined_steps_land_in_order_and_a_fenced_one_stops_the_rest() {
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    // `submit` starts the request on the runtime's connection right away.
    let _inside = rt.enter();
    // Large runs (beyond one grouped command) in steps sent before any reply is read.
    let runs: Vec<Vec<CacheOp>> = (0..3)
        .map(|s| {
            (0..2500)
                .map(|i| set(&format!("k{i}"), &format!("step{s}"), 0))
                .collect()
        })
        .collect();
    let sent: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(s, ops)| sink.submit(ops, Some(&checkpoint(100 + s as u64))))
        .collect();
    for step in sent {
        rt.block_on(step.finish()).expect("step lands");
    }
    let mut c = redis.conn();
    for i in [0, 999, 1000, 2499] {
        let v: String = c.get(format!("k{i}")).expect("GET");
        assert_eq!(v, "step2", "key k{i}: the last step wins");
    }
    // Someone else moves the checkpoint: the next step and every step after it are refused.
    let _: () = c.set("cp", "moved").expect("SET");
    let first = sink.submit(&[set("x", "1", 0)], Some(&checkpoint(200)));
    let second = sink.submit(&[set("y", "1", 0)], Some(&checkpoint(201)));
    let e = rt.block_on(first.finish()).expect_err("fenced");
    assert!(e.to_string().contains("fenced"), "{e}");
    assert!(e.to_string().contains("it holds `moved`"), "{e}");
    assert!(rt.block_on(second.finish()).is_err(), "fenced too");
    let x: Option<String> = c.get("x").expect("GET");
    let y: Option<String> = c.get("y").expect("GET");
    assert_eq!((x, y), (None, None));
}

#[test]
fn waiting_for_a_step_can_be_given_up_and_taken_up_again() {
    // The apply loop waits for a step's reply and for new changes at once, and drops the
    // wait when changes come first: the step must still be there to wait for afterwards.
    use futures_util::FutureExt;
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let _inside = rt.enter();
    let ops: Vec<CacheOp> = (0..2000).map(|i| set(&format!("w{i}"), "1", 0)).collect();
    let mut first = sink.submit(&ops, Some(&checkpoint(300)));
    // Polled once, then dropped mid-wait, three times (a reply this early is not expected,
    // but would be legal: then there is nothing left to wait for).
    let mut landed_early = false;
    for _ in 0..3 {
        if let Some(result) = first.landed().now_or_never() {
            result.expect("first step lands");
            landed_early = true;
            break;
        }
    }
    let mut second = sink.submit(&[set("after", "1", 0)], Some(&checkpoint(301)));
    let guard = std::time::Duration::from_secs(30); // a hang guard, not a timing assertion
    if !landed_early {
        rt.block_on(tokio::time::timeout(guard, first.landed()))
            .expect("the first step's reply is still waited for")
            .expect("first step lands");
    }
    rt.block_on(tokio::time::timeout(guard, second.landed()))
        .expect("the second step's reply arrives")
        .expect("second step lands, fenced on the first");
    let mut c = redis.conn();
    let (w, after): (Option<String>, Option<String>) =
        (c.get("w1999").expect("GET"), c.get("after").expect("GET"));
    assert_eq!((w.as_deref(), after.as_deref()), (Some("1"), Some("1")));
}

#[test]
fn a_step_of_deletions_moves_the_checkpoint_with_them_and_obeys_the_fence() {
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let _inside = rt.enter();
    let mut c = redis.conn();
    for i in 0..3000 {
        let _: () = c.set(format!("d{i}"), "cached").expect("seed");
    }
    let _: () = c.set("kept", "cached").expect("seed");
    // More keys than one grouped Lua command takes, a key twice, a key never cached; then
    // a middle step of a split transaction (no checkpoint), pipelined behind the first.
    let mut ops: Vec<CacheOp> = (0..2500).map(|i| del(&format!("d{i}"))).collect();
    ops.extend([del("d0"), del("never")]);
    let first = sink.submit(&ops, Some(&checkpoint(400)));
    let rest: Vec<CacheOp> = (2500..3000).map(|i| del(&format!("d{i}"))).collect();
    let second = sink.submit(&rest, None);
    rt.block_on(first.finish()).expect("first step lands");
    rt.block_on(second.finish()).expect("second step lands");
    let left: Vec<Option<String>> = ["d0", "d2499", "d2500", "d2999", "kept"]
        .iter()
        .map(|k| c.get(k).expect("GET"))
        .collect();
    assert_eq!(left, [None, None, None, None, Some("cached".into())]);
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(
        stored,
        checkpoint(400).encode(),
        "a step without checkpoint leaves it"
    );

    // Someone else moves the checkpoint: the step is refused and runs nothing, and the
    // step pipelined behind it is refused too.
    let _: () = c.set("cp", "moved").expect("SET");
    let first = sink.submit(&[del("kept")], Some(&checkpoint(500)));
    let second = sink.submit(&[del("other")], Some(&checkpoint(501)));
    let e = rt.block_on(first.finish()).expect_err("fenced");
    assert!(e.to_string().contains("fenced"), "{e}");
    assert!(e.is_definite());
    assert!(rt.block_on(second.finish()).is_err(), "fenced too");
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(stored, "moved");
    let kept: Option<String> = c.get("kept").expect("GET");
    assert_eq!(
        kept.as_deref(),
        Some("cached"),
        "a refused step deletes nothing"
    );
}

#[test]
fn a_deletion_step_refused_by_a_read_only_replica_is_retried_not_fatal() {
    // A primary demoted to replica refuses the queued DEL, and Redis aborts the whole
    // transaction (EXECABORT): the error that counts is the refusal, which a retry
    // (after failover) can get past.
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let _inside = rt.enter();
    let mut c = redis.conn();
    let _: () = c.set("x", "cached").expect("seed");
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query(&mut c)
        .expect("REPLICAOF");
    let e = rt
        .block_on(sink.submit(&[del("x")], Some(&checkpoint(600))).finish())
        .expect_err("a replica refuses writes");
    assert!(e.to_string().contains("read only replica"), "{e}");
    assert!(!e.is_definite(), "{e}");
    let x: Option<String> = c.get("x").expect("GET");
    assert_eq!(x.as_deref(), Some("cached"), "nothing ran");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .expect("REPLICAOF NO ONE");
}

#[test]
fn a_late_step_of_this_process_is_retried_and_another_writer_is_named() {
    // A step given up after a response timeout can still run when Redis wakes, after the
    // reconnected sink has read the checkpoint: the next step then finds a checkpoint of
    // its own process. That is no other instance, so the error is one to retry from the
    // checkpoint, not a stop. (Simulated: this test process writes the checkpoint a late
    // step would have.)
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let _inside = rt.enter();
    let mut c = redis.conn();
    rt.block_on(
        sink.submit(&[set("a", "1", 0)], Some(&checkpoint(700)))
            .finish(),
    )
    .expect("first step lands");
    let _: () = c.set("cp", checkpoint(701).encode()).expect("SET");
    let e = rt
        .block_on(
            sink.submit(&[set("b", "1", 0)], Some(&checkpoint(702)))
                .finish(),
        )
        .expect_err("fenced");
    assert!(!e.is_definite(), "{e}");
    assert!(e.to_string().contains("binlog.000001:701"), "{e}");
    let b: Option<String> = c.get("b").expect("GET");
    assert_eq!(b, None, "the fenced step ran nothing");

    // The same record from another process: a stop, naming that process.
    let mut other = checkpoint(703);
    other.writer = Some("cache-2/41/00c0ffee".into());
    let _: () = c.set("cp", other.encode()).expect("SET");
    rt.block_on(sink.load_checkpoint()).expect("reload");
    let _: () = c
        .set("cp", {
            other.position = Position::new("binlog.000001", 704);
            other.encode()
        })
        .expect("SET");
    let e = rt
        .block_on(
            sink.submit(&[set("b", "1", 0)], Some(&checkpoint(705)))
                .finish(),
        )
        .expect_err("fenced");
    assert!(e.is_definite(), "{e}");
    assert!(
        e.to_string().contains("written by cache-2/41/00c0ffee"),
        "{e}"
    );
}

#[test]
fn a_checkpoint_written_under_a_step_is_traced_to_its_writer() {
    // A write to the checkpoint after a step's fence ran and before its EXEC makes the EXEC
    // run nothing (WATCH). The checkpoint is then read: written by this process (a late
    // step of its own), the step is retried; by another writer, the daemon stops naming
    // it. Redis reads a large step in many parts and serves other clients in between, so
    // a client rewriting the checkpoint meanwhile lands under the step. It rewrites the
    // value the step expects, so that the fence itself always passes.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink(&redis, &rt);
    let _inside = rt.enter();
    rt.block_on(
        sink.submit(&[set("a", "1", 0)], Some(&checkpoint(800)))
            .finish(),
    )
    .expect("first step lands");
    let big = "x".repeat(32 << 20);
    let mut under_a_step = |value: String| {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let mut c = redis.conn();
        let writer = std::thread::spawn({
            let (stop, written) = (stop.clone(), written.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let _: () = c.set("cp", &value).expect("SET");
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while written.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        // (A host too busy to run the writer during the step lets the step land: again.)
        let mut result = Ok(());
        for _ in 0..5 {
            rt.block_on(sink.load_checkpoint())
                .expect("reload the fence");
            let _: () = redis.conn().del("big").expect("DEL");
            let step = sink.submit(&[set("big", &big, 0)], Some(&checkpoint(801)));
            result = rt.block_on(step.finish());
            if result.is_err() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        result.expect_err("EXEC ran nothing")
    };
    let e = under_a_step(checkpoint(800).encode());
    assert!(!e.is_definite(), "{e}");
    assert!(e.to_string().contains("binlog.000001:800"), "{e}");

    let mut other = checkpoint(800);
    other.writer = Some("cache-2/41/00c0ffee".into());
    let e = under_a_step(other.encode());
    assert!(e.is_definite(), "{e}");
    assert!(
        e.to_string().contains("written by cache-2/41/00c0ffee"),
        "{e}"
    );
    let big: Option<String> = redis.conn().get("big").expect("GET");
    assert_eq!(big, None, "a step whose EXEC ran nothing wrote nothing");
}
