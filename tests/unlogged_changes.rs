//! Changes the server does not log would leave stale keys, so rules on the tables they
//! touch are refused. Foreign key cascades change child rows without logging them
//! (MariaDB; MySQL unless the SQL layer handles foreign keys): a rule on such a child
//! table is refused at start-up (`check` and the daemon, exit 2) and after the DDL that
//! adds the key (exit 3), unless the rule accepts stale keys — which the accepted case
//! shows happen. Binlog filters (`binlog_ignore_db`, `binlog_do_db`) drop whole databases.

mod support;

use std::time::Duration;

use redis::Commands;
use support::servers::MariaDb;
use support::{run_cli, Daemon, Env};

const WAIT: Duration = Duration::from_secs(30);

fn rules(accept: bool) -> String {
    format!(
        "[[rules]]\ntable = \"shop.orders\"\naction = \"upsert\"\nkey = \"order:{{id}}\"\n\n\
         [[rules]]\ntable = \"shop.items\"\naction = \"upsert\"\nkey = \"item:{{id}}\"\n\
         accept_unlogged_cascades = {accept}\n\n\
         [[rules]]\ntable = \"shop.notes\"\naction = \"delete\"\nkey = \"note:{{id}}\"\n"
    )
}

#[test]
fn a_rule_on_the_child_of_an_unlogged_cascade_is_refused_unless_it_accepts_stale_keys() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY)",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, order_id INT, \
         CONSTRAINT fk_items FOREIGN KEY (order_id) REFERENCES shop.orders (id) \
         ON DELETE CASCADE)",
        "CREATE TABLE shop.notes (id INT PRIMARY KEY, order_id INT)",
    ]);

    // Refused: `check` names the key, the rule and the way out; the daemon stops with 2.
    let config = env.config("current", &rules(false));
    let path = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_ne!(code, 0, "{out}{err}");
    for part in [
        "`fk_items` (ON DELETE CASCADE)",
        "rules[1]",
        "accept_unlogged_cascades",
    ] {
        assert!(out.contains(part), "check names {part}:\n{out}{err}");
    }
    let mut daemon = Daemon::start(&config);
    assert_eq!(daemon.wait_exit(WAIT), 2, "{}", daemon.log());
    assert!(daemon.log().contains("fk_items"), "{}", daemon.log());

    // Accepted: it runs, says what it accepted, and the cascade indeed leaves a stale key.
    let config = env.config("current", &rules(true));
    let mut daemon = Daemon::start_ready(&env, &config);
    assert!(
        daemon.log().contains("rules[1] accepts"),
        "the accepted cascade is logged:\n{}",
        daemon.log()
    );
    env.exec(&[
        "INSERT INTO shop.orders VALUES (1)",
        "INSERT INTO shop.items VALUES (10, 1)",
        "DELETE FROM shop.orders WHERE id = 1",
    ]);
    env.wait_caught_up(WAIT);
    let item: Option<String> = env.redis.conn().get("item:10").expect("GET");
    assert!(
        item.is_some(),
        "the server logged no delete of item 10: its key stays (what accepting means)"
    );
    assert_eq!(env.cache_keys(), ["item:10"]);

    // A cascade added while running stops the daemon at that DDL (exit 3).
    env.exec(&[
        "ALTER TABLE shop.notes ADD CONSTRAINT fk_notes FOREIGN KEY (order_id) \
                REFERENCES shop.orders (id) ON DELETE SET NULL",
    ]);
    assert_eq!(daemon.wait_exit(WAIT), 3, "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("`fk_notes` (ON DELETE SET NULL)") && log.contains("rules[2]"),
        "{log}"
    );
}

#[test]
fn a_rule_on_a_database_the_binlog_filters_leave_out_is_refused() {
    for filter in ["--binlog-ignore-db=shop", "--binlog-do-db=crm"] {
        let env = Env::with_db(MariaDb::start_with(&[
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
            filter,
        ]));
        env.exec(&[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY)",
            "CREATE TABLE shop.items (id INT PRIMARY KEY)",
            "CREATE TABLE shop.notes (id INT PRIMARY KEY)",
        ]);
        let config = env.config("current", &rules(false));
        let path = config.to_str().expect("utf-8 path");
        let (code, out, err) = run_cli(&["check", "--config", path]);
        let setting = filter.trim_start_matches("--").replace('-', "_");
        assert_ne!(code, 0, "{filter}: {out}{err}");
        assert!(
            out.contains("database `shop`") && out.contains(&setting),
            "{filter}: check names the database and {setting}:\n{out}{err}"
        );
        let mut daemon = Daemon::start(&config);
        assert_eq!(daemon.wait_exit(WAIT), 2, "{filter}: {}", daemon.log());
        assert!(daemon.log().contains(&setting), "{}", daemon.log());
    }
}
