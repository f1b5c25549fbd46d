//! `verify`: clean after the daemon applied a workload (tables larger than one chunk, a
//! composite primary key, JSON and hash rules, a delete rule), then every kind of damage
//! done to Redis by hand is reported with its key, and the exit code says so.

mod support;

use std::time::Duration;

use redis::Commands;
use support::{run_cli, Daemon, Env};

const RULES: &str = "\
[[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nkey = \"user:{id}\"\n\n\
[[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"user:by-name:{name}\"\n\n\
[[rules]]\ntable = \"shop.lines\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"line:{order_id}:{n}\"\n\n\
[[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"name:{name}:{id}\"\n";

fn verify(env: &Env, extra: &[&str]) -> (i32, String) {
    let config = env.dir.path().join("config.toml");
    let mut args = vec!["verify", "--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    (code, format!("{out}{err}"))
}

#[test]
fn verify_is_clean_after_the_daemon_and_reports_every_damage() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50), score DOUBLE)",
        "CREATE TABLE shop.lines (order_id INT, n INT, sku VARCHAR(20), qty INT, \
         PRIMARY KEY (order_id, n))",
    ]);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    env.exec(&[
        "INSERT INTO shop.users SELECT seq, CONCAT('u', seq), seq / 7 FROM shop.seq_1_to_1234",
        "INSERT INTO shop.lines SELECT seq DIV 3, seq MOD 3, CONCAT('s', seq), seq \
         FROM shop.seq_1_to_1500",
        "UPDATE shop.users SET name = 'changed' WHERE id % 10 = 0",
        "UPDATE shop.users SET name = 'a:b' WHERE id = 3",
        "DELETE FROM shop.users WHERE id > 1200",
        "UPDATE shop.lines SET qty = NULL WHERE order_id = 5",
    ]);
    env.wait_caught_up(Duration::from_secs(60));

    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verified 2700 rows (2700 keys compared), scanned 2700 keys: 0 mismatches"),
        "{out}"
    );

    // Damage: one key gone, one value changed, one hash field changed, stale keys left.
    let mut r = env.redis.conn();
    let _: () = r.del("user:17").expect("DEL");
    let _: () = r.set("user:18", "{\"id\":18}").expect("SET");
    let _: () = r.hset("line:7:1", "qty", "999").expect("HSET");
    let _: () = r.set("user:1210", "{\"id\":1210}").expect("SET"); // row deleted
    let _: () = r
        .set("user:by-name:u1222", "cached by the app")
        .expect("SET"); // row deleted
    let _: () = r.set("user:by-name:u4", "cached by the app").expect("SET"); // row exists: fine
                                                                             // The name holds the template's separator: the key splits two ways, and the second
                                                                             // is row 3's.
    let _: () = r.set("name:a:b:3", "cached by the app").expect("SET");
    // Keys of another application under the same prefix: `id` is an integer, so the
    // rule cannot have made them, and they are not judged.
    let _: () = r.set("user:not-a-number", "{}").expect("SET");
    let _: () = r.set("user:3:friends", "[4, 5]").expect("SET");
    // Values of the wrong type (a rule switched between `json` and `hash`) or not UTF-8
    // are different, not a reason to stop.
    let _: () = r.del("user:19").expect("DEL");
    let _: () = r.hset("user:19", "id", "19").expect("HSET");
    let _: () = r.del("line:8:1").expect("DEL");
    let _: () = r.set("line:8:1", "{\"qty\":25}").expect("SET");
    let _: () = r.set("user:20", b"\xff\xfe".as_slice()).expect("SET");
    // Not UTF-8, so no template made it (keys are rendered text): not judged, no error.
    let _: () = r.set(b"user:\xff\xfe".as_slice(), "binary").expect("SET");

    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 4, "{out}");
    for line in [
        "missing    user:17  (row in shop.users, rules[0])",
        "different  user:18  (shop.users, rules[0])",
        "different  line:7:1  (shop.lines, rules[2])",
        "different  user:19  (shop.users, rules[0])\n    redis:    (a hash, not a string)",
        "different  line:8:1  (shop.lines, rules[2])\n    redis:    (a string, not a hash)",
        "different  user:20  (shop.users, rules[0])\n    redis:    \u{FFFD}\u{FFFD}",
        "extra      user:1210  (rules[0]",
        "extra      user:by-name:u1222  (rules[1]",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    for fine in [
        "user:by-name:u4 ",
        "name:a:b:3",
        "user:not-a-number",
        "user:3:friends",
    ] {
        assert!(!out.contains(fine), "{fine} reported:\n{out}");
    }
    assert!(
        out.contains("8 mismatches (1 missing, 5 different, 2 extra)"),
        "{out}"
    );

    // --allow-missing lists the missing key but counts only stale data...
    let (code, out) = verify(&env, &["--allow-missing"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("missing    user:17 "), "{out}");
    assert!(
        out.contains("7 mismatches (1 missing, not counted, 5 different, 2 extra)"),
        "{out}"
    );
    // ...so once only missing keys are left, it passes where a plain verify does not.
    for key in [
        "user:18",
        "user:19",
        "user:20",
        "line:7:1",
        "line:8:1",
        "user:1210",
        "user:by-name:u1222",
    ] {
        let _: () = r.del(key).expect("DEL");
    }
    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("6 mismatches (6 missing, 0 different, 0 extra)"),
        "{out}"
    );
    let (code, out) = verify(&env, &["--allow-missing"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 mismatches (6 missing, not counted, 0 different, 0 extra)"),
        "{out}"
    );

    // A sample checks fewer rows and still exits non-zero only on what it saw.
    let (code, out) = verify(&env, &["--sample", "20"]);
    assert!(code == 0 || code == 4, "{out}");
    assert!(out.contains("verified 40 rows"), "{out}");
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

/// A rule may key on an INVISIBLE column (the binlog has it; `SELECT *` does not show it):
/// `verify` reads such columns by name, so it renders the same keys as the daemon, while
/// values still hold only the columns `SELECT *` shows, each read as its own type (not
/// as the type of the invisible column before it).
#[test]
fn verify_renders_keys_built_on_invisible_columns() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, code VARCHAR(10) INVISIBLE, \
         seen DATETIME(3), note TEXT, v INT)",
    ]);
    let rules = "[[rules]]\ntable = \"shop.items\"\naction = \"upsert\"\nkey = \"item:{code}\"\n";
    let mut daemon = Daemon::start_ready(&env, &env.config("current", rules));
    env.exec(&[
        "INSERT INTO shop.items (id, code, seen, note, v) SELECT seq, CONCAT('c', seq), \
         '2026-11-30 10:00:00.125', CONCAT('n', seq), seq FROM shop.seq_1_to_50",
        "UPDATE shop.items SET v = v + 1 WHERE id <= 10",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    let value: String = env.redis.conn().get("item:c3").expect("cached");
    assert_eq!(
        value,
        r#"{"id":3,"seen":"2026-11-30 10:00:00.125","note":"n3","v":4}"#
    );
    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("50"), "{out}");

    let _: () = env
        .redis
        .conn()
        .set("item:c7", r#"{"id":7,"v":0}"#)
        .expect("SET");
    let (code, out) = verify(&env, &[]);
    assert_ne!(code, 0, "a damaged value is found:\n{out}");
    assert!(out.contains("item:c7"), "{out}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

/// Keys on a non-unique column: many rows render each key, more than one lookup of a
/// batch returns in full, and every key a row produces is still found (none is reported
/// extra); the one no row produces is.
#[test]
fn verify_finds_keys_on_non_unique_columns_whatever_rows_each_matches() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, cat INT)",
        "INSERT INTO shop.items SELECT seq, seq DIV 40 FROM shop.seq_1_to_200",
    ]);
    let rules = "[[rules]]\ntable = \"shop.items\"\naction = \"delete\"\nkey = \"cat:{cat}\"\n";
    env.config("current", rules);
    let mut conn = env.redis.conn();
    for cat in [
        "cat:0", "cat:1", "cat:2", "cat:3", "cat:4", "cat:5", "cat:9",
    ] {
        let _: () = conn.set(cat, "the application's").expect("SET");
    }
    let (code, out) = verify(&env, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("1 mismatches (0 missing, 0 different, 1 extra)") && out.contains("cat:9"),
        "{out}"
    );
}
