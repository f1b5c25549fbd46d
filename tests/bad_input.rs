//! Issue 2, item 7: broken configurations and unsuitable servers are refused with exit
//! code 2 and a message that names what is wrong — never a panic.

mod support;

use std::time::Duration;

use support::{run_cli, Daemon, Env, MariaDb};

const SOURCE: &str = "[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nserver_id = 4242\n";
const REDIS: &str = "[redis]\nurl = \"redis://127.0.0.1:1/0\"\n";
const RULE: &str = "[[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nkey = \"user:{id}\"\n";

/// Writes `text` as a config and runs `cdc-cache run`; returns (code, stderr).
fn run_with(text: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(support::binary())
        .args(["run", "--config"])
        .arg(&path)
        // Any free port: tests run in parallel and must not share the default one.
        .env("CDC_CACHE_METRICS__LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .output()
        .expect("run cdc-cache");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_configs_exit_2_naming_the_problem() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("TOML syntax error", format!("{SOURCE}{REDIS}[[rules]\n"), "TOML"),
        ("unknown key", format!("{SOURCE}colour = \"red\"\n{REDIS}{RULE}"), "colour"),
        ("unknown section", format!("{SOURCE}{REDIS}[sinks]\nx = 1\n{RULE}"), "sinks"),
        ("bad MySQL URL", format!("[source]\nurl = \"http://x\"\nserver_id = 1\n{REDIS}{RULE}"), "source.url"),
        ("bad Redis URL", format!("{SOURCE}[redis]\nurl = \"not a url\"\n{RULE}"), "redis.url"),
        ("empty rules", format!("{SOURCE}{REDIS}"), "rules"),
        ("bad glob", format!("{SOURCE}{REDIS}[[rules]]\ntable = \"shop.[users\"\naction = \"delete\"\nkey = \"u:{{id}}\"\n"), "rules[0].table"),
        ("table without database", format!("{SOURCE}{REDIS}[[rules]]\ntable = \"users\"\naction = \"delete\"\nkey = \"u:{{id}}\"\n"), "rules[0].table"),
        ("bad start", format!("[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nserver_id = 4242\nstart = \"yesterday\"\n{REDIS}{RULE}"), "source.start"),
        ("zero ttl_secs", format!("{SOURCE}{REDIS}{RULE}ttl_secs = 0\n"), "rules[0].ttl_secs"),
        ("negative ttl_secs", format!("{SOURCE}{REDIS}{RULE}ttl_secs = -5\n"), "ttl_secs"),
        ("unknown action", format!("{SOURCE}{REDIS}[[rules]]\ntable = \"a.b\"\naction = \"upsert-ish\"\nkey = \"k:{{id}}\"\n"), "action"),
        ("unclosed template", format!("{SOURCE}{REDIS}[[rules]]\ntable = \"a.b\"\naction = \"delete\"\nkey = \"k:{{id\"\n"), "rules[0].key"),
        ("template without columns", format!("{SOURCE}{REDIS}[[rules]]\ntable = \"a.b\"\naction = \"delete\"\nkey = \"constant\"\n"), "rules[0].key"),
        ("unknown format", format!("{SOURCE}{REDIS}{RULE}format = \"xml\"\n"), "format"),
        ("server_id zero", format!("[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nserver_id = 0\n{REDIS}{RULE}"), "source.server_id"),
        ("server_id not a number", format!("[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nserver_id = \"abc\"\n{REDIS}{RULE}"), "server_id"),
        ("missing source.url", format!("[source]\nserver_id = 1\n{REDIS}{RULE}"), "url"),
        ("failover without GTIDs", format!("[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nfailover_urls = [\"mysql://root@127.0.0.1:2/\"]\ngtid_mode = \"off\"\nserver_id = 4242\n{REDIS}{RULE}"), "source.failover_urls"),
        ("bad failover url", format!("[source]\nurl = \"mysql://root@127.0.0.1:1/\"\nfailover_urls = [\"redis://127.0.0.1:2/\"]\nserver_id = 4242\n{REDIS}{RULE}"), "source.failover_urls"),
        ("empty columns list", format!("{SOURCE}{REDIS}{RULE}columns = []\n"), "rules[0].columns"),
        ("linger of a minute", format!("{SOURCE}{REDIS}[sink]\nlinger_ms = 60000\n{RULE}"), "sink.linger_ms"),
    ];
    assert!(cases.len() >= 12);
    for (what, text, needle) in &cases {
        let (code, stderr) = run_with(text, &[]);
        assert_eq!(code, 2, "{what}: exit code; stderr:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{what}: message should name `{needle}`:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    }
}

#[test]
fn missing_file_and_bad_environment_override_exit_2() {
    let (code, _, stderr) = run_cli(&["run", "--config", "/nonexistent/cdc-cache.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/cdc-cache.toml"), "{stderr}");

    let text = format!("{SOURCE}{REDIS}{RULE}");
    let (code, stderr) = run_with(&text, &[("CDC_CACHE_SOURCE__SERVER_ID", "many")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.to_lowercase().contains("server_id"), "{stderr}");

    let (code, _, stderr) = run_cli(&["run"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn a_template_column_missing_from_the_table_exits_2() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name TEXT)",
    ]);
    let rules = "[[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"user:{email}\"\n";
    let config = env.config("current", rules);
    for command in ["run", "check"] {
        let (code, stdout, stderr) =
            run_cli(&[command, "--config", config.to_str().expect("utf-8")]);
        let all = format!("{stdout}{stderr}");
        assert_eq!(code, 2, "{command}: {all}");
        assert!(
            all.contains("shop.users") && all.contains("email"),
            "{command}: {all}"
        );
    }
}

fn check_against(db: MariaDb) -> (i32, String) {
    let env = Env::with_db(db);
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY)",
    ]);
    let config = env.config("current", RULE);
    let (code, stdout, stderr) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn check_refuses_statement_format_and_binlog_off() {
    let (code, out) = check_against(MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=STATEMENT",
    ]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("binlog_format"), "{out}");

    let (code, out) = check_against(MariaDb::start_with(&["--skip-log-bin"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("log_bin"), "{out}");

    let (code, out) = check_against(MariaDb::start());
    assert_eq!(code, 0, "a well-configured server passes: {out}");
}

/// The daemon refuses such a server at start too, instead of following it until the
/// first change it cannot apply.
#[test]
fn run_refuses_statement_format_and_partial_row_images() {
    for options in [
        ["--log-bin=binlog", "--binlog-format=MIXED"],
        ["--log-bin=binlog", "--binlog-row-image=NOBLOB"],
    ] {
        let env = Env::with_db(MariaDb::start_with(&options));
        env.exec(&[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.users (id INT PRIMARY KEY)",
        ]);
        let mut daemon = Daemon::start(&env.config("current", RULE));
        let code = daemon.wait_exit(Duration::from_secs(30));
        let log = daemon.log();
        assert_eq!(code, 3, "{options:?}: {log}");
        let fix = if options[1].contains("format") {
            "set binlog_format=ROW"
        } else {
            "set binlog_row_image=FULL"
        };
        assert!(log.contains(fix), "{options:?}: {log}");
        assert_eq!(env.checkpoint(), None, "nothing written: {log}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let (code, stdout, stderr) = run_cli(&["check", "--offline", "--config", example]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 rule(s)"), "{stdout}");
}

#[test]
fn check_names_missing_replication_privileges() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY)",
        "CREATE USER 'weak'@'%' IDENTIFIED BY 'pw'",
        "GRANT SELECT ON shop.* TO 'weak'@'%'",
    ]);
    let url = format!("mysql://weak:pw@127.0.0.1:{}/", env.db.port);
    let config = env.config_with(&url, "current", "", RULE);
    let (code, stdout, stderr) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("REPLICATION SLAVE") && out.contains("REPLICATION CLIENT"),
        "{out}"
    );
    assert!(!out.contains(":pw@"), "the password is never shown: {out}");
}

#[test]
fn check_says_which_keys_under_each_pattern_count_as_the_rules_and_what_alters_delete() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id BIGINT UNSIGNED PRIMARY KEY, email VARCHAR(80))",
    ]);
    let rules = "[[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nkey = \"user:{id}\"\n\n\
                 [[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"mail:{email}\"\n";
    let config = env.config("current", rules);
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "ok       rules[0] `user:{id}`: `id` is an integer in every matching table, so keys \
         matching `user:*` with other text there are left to their owners",
        "ok       rules[1] `mail:{email}`: every key matching `mail:*` counts as the rule's",
        "ok       rules[0] `user:{id}` stores every column: an ALTER TABLE that adds, drops, \
         renames or retypes a column of a matching table deletes its keys",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
}

#[test]
fn help_explains_every_command_and_the_exit_codes() {
    // A supervisor's author reads `--help` to learn which exits a restart can fix.
    for args in [&["--help"][..], &["run", "--help"]] {
        let (code, out, err) = run_cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        for needle in [
            "Exit codes:",
            "2  bad configuration",
            "3  definite replication error",
        ] {
            assert!(out.contains(needle), "{args:?} lacks {needle:?}:\n{out}");
        }
    }
    let (code, out, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    for command in [
        "run", "check", "status", "reset", "load", "verify", "replay",
    ] {
        assert!(
            out.contains(&format!("\n  {command} ")),
            "{command} missing:\n{out}"
        );
    }
    let (code, _, err) = run_cli(&["frobnicate"]);
    assert_eq!(code, 2, "an unknown command is a usage error: {err}");
}

/// A rule whose table matches none on the server (a misspelt name) would cache nothing
/// and say nothing: `check` and the daemon warn, naming the rule; the rule on a table
/// that exists is not named.
#[test]
fn a_rule_that_matches_no_table_is_named() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY)",
    ]);
    let rules = "[[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"user:{id}\"\n\n\
                 [[rules]]\ntable = \"shop.user\"\naction = \"delete\"\nkey = \"u:{id}\"\n";
    let config = env.config("current", rules);
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "a warning, not a problem: {out}{err}");
    let warning = "rules[1] table = \"shop.user\" matches no table on the server";
    assert!(out.contains(warning), "{out}{err}");
    assert!(!out.contains("rules[0] table = "), "{out}{err}");

    let mut daemon = Daemon::start_ready(&env, &config);
    assert!(daemon.log().contains(warning), "{}", daemon.log());
    // Created later, the table is followed without a restart.
    let _: () = redis::Commands::set(&mut env.redis.conn(), "u:1", "stale").expect("SET");
    env.exec(&[
        "CREATE TABLE shop.user (id INT PRIMARY KEY)",
        "INSERT INTO shop.user VALUES (1)",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    let left: Option<String> = redis::Commands::get(&mut env.redis.conn(), "u:1").expect("GET");
    assert_eq!(left, None, "the new table's row deleted its key");
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}
