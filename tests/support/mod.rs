//! Test support: private servers, a daemon runner, and the waits integration tests share.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod prom;
pub mod sentinel;
pub mod servers;
pub mod steps;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cdc_cache::checkpoint::{Checkpoint, Position};
use redis::Commands;
use tempfile::TempDir;

pub use servers::{mysql, MariaDb, Redis};

pub const CHECKPOINT_KEY: &str = "cdc-cache:checkpoint:test";

/// A MariaDB, a Redis and a directory for configs and logs.
pub struct Env {
    pub db: MariaDb,
    pub redis: Redis,
    pub dir: TempDir,
    /// Where the daemon serves /metrics, /healthz and /readyz.
    pub metrics_port: u16,
}

impl Env {
    pub fn start() -> Self {
        Self::with_db(MariaDb::start())
    }

    pub fn with_db(db: MariaDb) -> Self {
        Self::with_servers(db, Redis::start())
    }

    pub fn with_servers(db: MariaDb, redis: Redis) -> Self {
        Env {
            db,
            redis,
            dir: tempfile::Builder::new()
                .prefix("cdc-cache-test-")
                .tempdir()
                .expect("tempdir"),
            metrics_port: servers::free_port(),
        }
    }

    pub fn sql(&self) -> mysql::Conn {
        mysql::conn(&self.db.root_url()).expect("connect to the private mariadbd")
    }

    /// Runs statements, panicking with the statement on error.
    pub fn exec(&self, statements: &[&str]) {
        let mut c = self.sql();
        for s in statements {
            mysql::query(&mut c, s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    /// A config with the servers' URLs, `start`, and the given `[[rules]]` TOML.
    pub fn config(&self, start: &str, rules: &str) -> PathBuf {
        self.config_with(&self.db.url(), start, "", rules)
    }

    /// A config with a chosen MySQL URL and extra `[sink]` lines.
    pub fn config_with(&self, url: &str, start: &str, sink: &str, rules: &str) -> PathBuf {
        let text = format!(
            "[source]\nurl = \"{url}\"\nserver_id = 4242\nstart = \"{start}\"\nheartbeat_secs = 1\n\n\
             [redis]\nurl = \"{}\"\n\n[checkpoint]\nkey = \"{CHECKPOINT_KEY}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
             [sink]\nmin_backoff_ms = 50\nmax_backoff_ms = 500\n{sink}\n\n{rules}\n",
            self.redis.url(),
            self.metrics_port
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let text: Option<String> = self
            .redis
            .conn()
            .get(CHECKPOINT_KEY)
            .expect("GET checkpoint");
        text.map(|t| Checkpoint::decode(&t).expect("checkpoint decodes"))
    }

    /// The server's binlog head (`SHOW MASTER STATUS`).
    pub fn head(&self) -> Position {
        let rows = mysql::rows(&mut self.sql(), "SHOW MASTER STATUS");
        let row = rows.first().expect("binary logging is on");
        let file: String = row.get(0).expect("File");
        let pos: u64 = row.get(1).expect("Position");
        Position::new(file, pos)
    }

    /// Waits until the checkpoint equals the server's head (everything applied).
    pub fn wait_caught_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let head = self.head();
            let at = self.checkpoint().map(|c| c.position);
            if at.as_ref() == Some(&head) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not caught up: checkpoint {at:?}, head {head}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// All keys but the checkpoint and the keys under it (a refused step's abort key),
    /// sorted.
    pub fn cache_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.redis.conn().keys("*").expect("KEYS");
        let under = format!("{CHECKPOINT_KEY}:");
        keys.retain(|k| k != CHECKPOINT_KEY && !k.starts_with(&under));
        keys.sort();
        keys
    }
}

/// The daemon binary, running or exited.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cdc-cache")
}

impl Daemon {
    /// `cdc-cache run --config <config>`, logging to `<dir>/daemon-<n>.log`.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// As `start`, with extra environment variables (config overrides, secrets).
    pub fn start_with_env(config: &Path, envs: &[(&str, &str)]) -> Self {
        let dir = config.parent().expect("config dir");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("daemon-{n}.log"));
        let file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn cdc-cache");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Starts the daemon and waits until it has a checkpoint (its start position is fixed).
    pub fn start_ready(env: &Env, config: &Path) -> Self {
        let mut daemon = Daemon::start(config);
        eventually(
            "the daemon's first checkpoint",
            Duration::from_secs(30),
            || {
                assert!(daemon.is_running(), "daemon exited:\n{}", daemon.log());
                env.checkpoint().map(drop)
            },
        );
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: a crash at an arbitrary moment.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.wait_exit(timeout)
    }

    /// Waits for the daemon to exit by itself; panics (with its log) on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running after {timeout:?}:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- daemon log {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// Runs `cdc-cache <args>` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_env(args, &[])
}

/// The JSON lines `cdc-cache replay <path>` prints; the replay must succeed.
pub fn replay_lines(path: &Path) -> Vec<serde_json::Value> {
    let path = path.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["replay", path]);
    assert_eq!(code, 0, "replay {path}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// As `run_cli`, with extra environment variables.
pub fn run_cli_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run cdc-cache");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns `Some`, or panics with `what`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

/// A writer upserting `t.kv (id, v)` rows (ids `0..rows`) until `stop`, reconnecting
/// whenever MariaDB goes away; returns (committed, failed) statements.
pub fn kv_writer(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rows: u64,
    pause: Duration,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut committed, mut failed, mut i) = (0u64, 0u64, 0u64);
        let mut conn = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            if conn.is_none() {
                conn = mysql::conn(&url).ok();
            }
            let Some(c) = conn.as_mut() else {
                sleep(Duration::from_millis(100));
                continue;
            };
            let sql = format!(
                "INSERT INTO t.kv VALUES ({}, {i}) ON DUPLICATE KEY UPDATE v = {i}",
                i % rows
            );
            match mysql::query(c, &sql) {
                Ok(()) => committed += 1,
                Err(_) => {
                    failed += 1;
                    conn = None;
                }
            }
            sleep(pause);
        }
        (committed, failed)
    })
}
