//! The atomic step on a Redis Cluster: one fenced transaction per hash slot, then the
//! checkpoint's. Steps land in order and a replaced instance is fenced off in every slot;
//! session epochs outrank earlier ones whatever the clocks; a part that a migrating slot
//! stops lands after the move; a node's script cache flushed mid-session is loaded again.

mod support;

use cdc_cache::checkpoint::Checkpoint;
use cdc_cache::mapper::CacheOp;
use redis::Commands;
use support::steps::{checkpoint, del, set, sink_at};

/// On a cluster a step is one fenced transaction per hash slot, then the checkpoint's:
/// steps sent back to back land in order, and an instance that loaded the checkpoint
/// before another moved on has every slot's transaction refused.
#[test]
fn on_a_cluster_steps_land_slot_by_slot_and_a_replaced_instance_is_fenced_off() {
    let cluster = support::cluster::Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut old = sink_at(&cluster.url(), true, &rt);
    let mut new = sink_at(&cluster.url(), true, &rt);
    let _inside = rt.enter();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let step = |value: &str| -> Vec<CacheOp> { keys.iter().map(|k| set(k, value, 0)).collect() };
    // Written as by another process, which `old` is to the one that replaced it.
    let elsewhere = |pos| Checkpoint {
        writer: Some("another-host/1/0".into()),
        ..checkpoint(pos)
    };
    let sent: Vec<_> = (0..3)
        .map(|s| new.submit(&step(&format!("step{s}")), Some(&elsewhere(100 + s))))
        .collect();
    for step in sent {
        rt.block_on(step.finish()).expect("step lands");
    }
    let mut c = cluster.conn();
    let values: Vec<String> = keys.iter().map(|k| c.get(k).expect("GET")).collect();
    assert!(values.iter().all(|v| v == "step2"), "the last step wins");
    assert!(
        cluster.keys_by_node("k*").iter().all(|k| k.len() > 20),
        "the keys are spread over the nodes"
    );
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(stored, elsewhere(102).encode());

    // Every kind of operation, in one slot (a hash tag) and spread over several.
    for tag in ["{same}", ""] {
        let k = |name: &str| format!("{tag}{name}");
        let ops = vec![
            set(&k("a"), "1", 0),
            set(&k("a"), "3", 0),
            del(&k("a")),
            set(&k("a"), "4", 0),
            set(&k("t"), "ttl", 60_000),
            CacheOp::Hash {
                key: k("h"),
                fields: vec![("f".into(), "v".into()), ("g".into(), "w".into())],
                ttl_ms: 60_000,
            },
            CacheOp::Stash {
                key: k("list"),
                entries: vec!["x".into(), "y".into()],
            },
            set(&k("gone"), "soon", 0),
            CacheOp::Unstash { key: k("gone") },
            set(&k("m"), "marked", 0),
            CacheOp::Expire {
                key: k("m"),
                ttl_ms: 90_000_000,
            },
        ];
        rt.block_on(new.apply(&ops, None)).expect("step applies");
        let a: Option<String> = c.get(k("a")).expect("GET");
        assert_eq!(a.as_deref(), Some("4"), "{tag}");
        let ttl: i64 = c.pttl(k("t")).expect("PTTL");
        assert!(ttl > 0 && ttl <= 60_000, "{tag}: {ttl}");
        let h: Vec<(String, String)> = c.hgetall(k("h")).expect("HGETALL");
        assert_eq!(h.len(), 2, "{tag}");
        let ttl: i64 = c.pttl(k("h")).expect("PTTL");
        assert!(ttl > 0, "{tag}: {ttl}");
        let list: Vec<String> = c.lrange(k("list"), 0, -1).expect("LRANGE");
        assert_eq!(list, ["x", "y"], "{tag}");
        let gone: Option<String> = c.get(k("gone")).expect("GET");
        assert_eq!(gone, None, "{tag}");
        let ttl: i64 = c.pttl(k("m")).expect("PTTL");
        assert!(
            ttl > 60_000 && ttl <= 90_000_000,
            "{tag}: a load's mark: {ttl}"
        );
    }

    // `old` loaded the checkpoint before any of that: each of its slot transactions and
    // its checkpoint are refused, and none of its values lands.
    let e = rt
        .block_on(old.apply(&step("stale"), Some(&checkpoint(101))))
        .expect_err("fenced");
    assert!(e.to_string().contains("fenced"), "{e}");
    let values: Vec<String> = keys.iter().map(|k| c.get(k).expect("GET")).collect();
    assert!(values.iter().all(|v| v == "step2"), "nothing stale landed");
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(stored, elsewhere(102).encode());
}

/// A cluster session's epoch is above every earlier one even when this instance's clock
/// is behind: a session whose clock ran an hour ahead wrote a slot, and the next one, on
/// a clock that is right, still writes it (with epochs from the clock alone, every part
/// it sent to that slot was refused).
#[test]
fn on_a_cluster_a_new_session_outranks_one_whose_clock_ran_ahead() {
    use cdc_cache::sink::slots::{slot_of, tag};
    let cluster = support::cluster::Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let ahead = now + 3_600_000_000;
    let mut c = cluster.conn();
    // What that session left: the last epoch handed out, and a slot written with it.
    let _: () = c.set("cp:epoch", ahead).expect("SET");
    let fence = format!("cp:slot:{{{}}}", tag(slot_of("k1")));
    let _: () = c.set(&fence, ahead).expect("SET");

    let mut sink = sink_at(&cluster.url(), true, &rt);
    let _inside = rt.enter();
    rt.block_on(sink.apply(&[set("k1", "new", 0)], Some(&checkpoint(5))))
        .expect("the new session outranks the earlier one");
    let value: String = c.get("k1").expect("GET");
    assert_eq!(value, "new");
    let epoch: u64 = c.get("cp:epoch").expect("GET");
    assert!(epoch > ahead, "{epoch} after {ahead}");
    let written: u64 = c.get(&fence).expect("GET");
    assert_eq!(written, epoch, "the slot carries the new session's epoch");
}

/// A hash replaced (`DEL`, then `HSET`) in a slot that has begun migrating stops inside
/// its script: the key it just deleted is missing there, and Redis refuses the `HSET` as
/// "a non local key". The step sends the part again until the slot has moved, and lands
/// on the new node (it failed, and the daemon stopped, before).
#[test]
fn on_a_cluster_a_part_stopped_by_its_slot_migrating_lands_after_the_move() {
    use cdc_cache::sink::slots::slot_of;
    let cluster = support::cluster::Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink_at(&cluster.url(), true, &rt);
    let _inside = rt.enter();
    let hash = |value: &str| CacheOp::Hash {
        key: "h1".into(),
        fields: vec![("f".into(), value.into())],
        ttl_ms: 0,
    };
    rt.block_on(sink.apply(&[hash("v1")], Some(&checkpoint(1))))
        .expect("the first step lands");

    // The slot's node (the test cluster splits the slots evenly) starts migrating it.
    let slot = slot_of("h1");
    let from = usize::from(slot / (16384 / 3)).min(2);
    let to = (from + 1) % 3;
    let id = |i: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[i].conn())
            .expect("CLUSTER MYID")
    };
    let (from_id, to_id) = (id(from), id(to));
    let setslot = |node: usize, how: &str, whom: &str| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(whom)
            .query(&mut cluster.nodes[node].conn())
            .expect("CLUSTER SETSLOT");
    };
    setslot(to, "IMPORTING", &from_id);
    setslot(from, "MIGRATING", &to_id);

    let step = sink.submit(&[hash("v2")], Some(&checkpoint(2)));
    let landing = rt.spawn(step.finish());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !landing.is_finished(),
        "the step waits while the slot migrates"
    );

    // The migration ends: the slot's keys move, then the slot.
    let mut source = cluster.nodes[from].conn();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut source)
        .expect("GETKEYSINSLOT");
    if !keys.is_empty() {
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[to].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut source)
            .expect("MIGRATE");
    }
    for node in 0..3 {
        setslot(node, "NODE", &to_id);
    }
    rt.block_on(landing)
        .expect("the step's task")
        .expect("the step lands on the slot's new node");
    let mut c = cluster.conn();
    let value: Option<String> = c.hget("h1", "f").expect("HGET");
    assert_eq!(value.as_deref(), Some("v2"));
    let on_new: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut cluster.nodes[to].conn())
        .expect("GETKEYSINSLOT");
    assert!(on_new.contains(&"h1".to_string()), "{on_new:?}");
}

/// A node's script cache emptied while a session runs (`SCRIPT FLUSH`, a restart that
/// kept its data): the parts answered `NOSCRIPT` are sent again once the slot script is
/// loaded anew, and the step lands whole.
#[test]
fn on_a_cluster_a_flushed_script_cache_is_loaded_again() {
    let cluster = support::cluster::Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut sink = sink_at(&cluster.url(), true, &rt);
    let _inside = rt.enter();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let step = |value: &str| -> Vec<CacheOp> { keys.iter().map(|k| set(k, value, 0)).collect() };
    rt.block_on(sink.apply(&step("one"), Some(&checkpoint(1))))
        .expect("the first step lands");

    for node in &cluster.nodes {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut node.conn())
            .expect("SCRIPT FLUSH");
    }
    rt.block_on(sink.apply(&step("two"), Some(&checkpoint(2))))
        .expect("the step lands after the scripts are loaded again");
    let mut c = cluster.conn();
    let values: Vec<String> = keys.iter().map(|k| c.get(k).expect("GET")).collect();
    assert!(values.iter().all(|v| v == "two"), "{values:?}");
    let stored: String = c.get("cp").expect("checkpoint");
    assert_eq!(
        Checkpoint::decode(&stored).expect("a checkpoint"),
        checkpoint(2)
    );
}
