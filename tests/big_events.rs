//! A binlog event larger than the server's `max_allowed_packet`: the server sends it to a
//! binlog reader all the same (its dump thread's limit is `slave_max_allowed_packet`, 1 GiB
//! by default), so the daemon must read it rather than fail on it and retry for ever.

mod support;

use std::time::Duration;

use redis::Commands;
use support::{Daemon, Env};

#[test]
fn an_event_larger_than_max_allowed_packet_is_applied() {
    let env = Env::start();
    env.exec(&[
        "SET GLOBAL max_allowed_packet = 16 * 1024 * 1024",
        "CREATE DATABASE t",
        "CREATE TABLE t.doc (id INT PRIMARY KEY, body LONGTEXT)",
    ]);
    let rules = "[[rules]]\ntable = \"t.doc\"\naction = \"upsert\"\nkey = \"doc:{id}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    // The UPDATE's event holds both images: about 20 MiB, over the 16 MiB limit.
    env.exec(&[
        "INSERT INTO t.doc VALUES (1, REPEAT('a', 10 * 1024 * 1024))",
        "UPDATE t.doc SET body = REPEAT('b', 10 * 1024 * 1024) WHERE id = 1",
        "INSERT INTO t.doc VALUES (2, 'after')",
    ]);
    support::eventually(
        "the row after the large event",
        Duration::from_secs(60),
        || {
            assert!(daemon.is_running(), "{}", daemon.log());
            let after: Option<String> = env.redis.conn().get("doc:2").expect("GET");
            after
        },
    );
    let body: String = env.redis.conn().get("doc:1").expect("GET doc:1");
    assert!(body.contains("bbbb") && !body.contains("aaaa"));
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log()
    );
}
