//! Generated columns: a STORED one is in the row images like any column, and MariaDB
//! logs a VIRTUAL one's value in a full row image too. The cached value must be what
//! `SELECT` shows, and a key built from a virtual column must follow it.

mod support;

use std::time::Duration;

use redis::Commands;
use support::{run_cli, Daemon, Env};

#[test]
fn generated_columns_are_cached_as_select_shows_them() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.g (id INT PRIMARY KEY, doc JSON, \
         name VARCHAR(50) AS (JSON_VALUE(doc, '$.name')) VIRTUAL, \
         twice INT AS (id * 2) STORED)",
    ]);
    let rules = "[[rules]]\ntable = \"t.g\"\naction = \"upsert\"\nkey = \"g:{id}\"\n\n\
                 [[rules]]\ntable = \"t.g\"\naction = \"upsert\"\nkey = \"gn:{name}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&[
        r#"INSERT INTO t.g (id, doc) VALUES (1, '{"name": "ann"}'), (2, '{"name": "bob"}')"#,
        r#"UPDATE t.g SET doc = '{"name": "cy"}' WHERE id = 2"#,
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    let mut redis = env.redis.conn();
    let one: Option<String> = redis.get("g:1").expect("GET");
    assert_eq!(
        one.as_deref(),
        Some(r#"{"id":1,"doc":{"name":"ann"},"name":"ann","twice":2}"#)
    );
    // The key made of the virtual column moved with it.
    let cy: Option<String> = redis.get("gn:cy").expect("GET");
    assert_eq!(
        cy.as_deref(),
        Some(r#"{"id":2,"doc":{"name":"cy"},"name":"cy","twice":4}"#)
    );
    let bob: Option<String> = redis.get("gn:bob").expect("GET");
    assert_eq!(bob, None, "the old key of the virtual column's old value");
    let path = config.to_str().expect("utf-8");
    let (code, out, err) = run_cli(&["verify", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(daemon.is_running(), "{}", daemon.log());
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}
