//! Signals: SIGTERM and SIGINT finish the current step and exit 0 (tested throughout);
//! SIGHUP, which by default would end the process mid-step without a word (a closed
//! terminal, a reload habit), is logged and ignored.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Daemon, Env};

#[test]
fn sighup_is_logged_and_ignored() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY)",
    ]);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"delete\"\nkey = \"kv:{id}\"\n";
    let config = env.config("current", rules);
    let mut daemon = Daemon::start_ready(&env, &config);
    let status = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    support::eventually("the SIGHUP line", Duration::from_secs(10), || {
        daemon.log().contains("SIGHUP ignored").then_some(())
    });
    // Still following.
    let _: () = redis::Commands::set(&mut env.redis.conn(), "kv:1", "stale").expect("SET");
    env.exec(&["INSERT INTO t.kv VALUES (1)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let left: Option<String> = redis::Commands::get(&mut env.redis.conn(), "kv:1").expect("GET");
    assert_eq!(left, None, "{}", daemon.log());
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log()
    );
}
