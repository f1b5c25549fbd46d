//! The harness's servers and the daemon: a private MariaDB and Redis, the config, the
//! backlog, and every run it times.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::measure::{peak_rss_mib, process_cpu_seconds};
use crate::servers::{free_port, mysql, MariaDb, Redis};
use crate::{live_secs, CATCH_UP_ROWS, CHECKPOINT_KEY, TABLES, TABLE_ROWS};

pub struct Bench {
    pub db: MariaDb,
    pub redis: Redis,
    pub dir: tempfile::TempDir,
    pub binary: PathBuf,
    pub metrics_port: u16,
}

impl Bench {
    pub fn start() -> Bench {
        let binary = std::env::current_exe()
            .expect("own path")
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/examples")
            .join("cdc-cache");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --release` first",
            binary.display()
        );
        let db = MariaDb::start_with(&[
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
            "--innodb-buffer-pool-size=1G",
            "--max-binlog-size=1G",
        ]);
        let bench = Bench {
            db,
            redis: Redis::start(),
            dir: tempfile::tempdir().expect("tempdir"),
            binary,
            metrics_port: free_port(),
        };
        bench.exec("CREATE DATABASE sbtest");
        bench
            .exec("CREATE TABLE sbtest.big (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60))");
        bench.exec("CREATE TABLE sbtest.probe (id INT PRIMARY KEY, at BIGINT)");
        bench
    }

    pub fn exec(&self, sql: &str) {
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        mysql::query(&mut c, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn sysbench(&self, command: &str, extra: &[String]) -> Command {
        let mut c = Command::new("sysbench");
        c.args([
            "oltp_write_only",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
        ])
        .arg(format!("--mysql-port={}", self.db.port))
        .args(["--mysql-user=root", "--mysql-db=sbtest"])
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_ROWS}"))
        .args(extra)
        .arg(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        c
    }

    pub fn config(&self, action: &str, start: &str) -> PathBuf {
        let mut rules = String::new();
        for t in ["sbtest*", "big", "probe"] {
            let key = if t == "sbtest*" {
                "sb:{id}:{k}"
            } else {
                "x:{id}"
            };
            let key = if t == "probe" { "probe:{id}" } else { key };
            let action = if t == "probe" { "upsert" } else { action };
            rules += &format!(
                "[[rules]]\ntable = \"sbtest.{t}\"\naction = \"{action}\"\nkey = \"{key}\"\n\n"
            );
        }
        // `BENCH_SINK` adds lines to `[sink]` (e.g. `linger_ms = 1`), to measure a setting.
        let sink = std::env::var("BENCH_SINK").unwrap_or_default();
        let text = format!(
            "[source]\nurl = \"{}\"\nserver_id = 777\nstart = \"{start}\"\n\n\
             [redis]\nurl = \"{}\"\n\n[sink]\n{sink}\n\n\
             [checkpoint]\nkey = \"{CHECKPOINT_KEY}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nlevel = \"warn\"\n\n{rules}",
            self.db.url(),
            self.redis.url(),
            self.metrics_port
        );
        let path = self.dir.path().join(format!("{action}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn daemon(&self, action: &str, start: &str) -> Child {
        Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(self.config(action, start))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cdc-cache")
    }

    pub fn head(&self) -> String {
        let rows = mysql::rows(
            &mut mysql::conn(&self.db.root_url()).expect("connect"),
            "SHOW MASTER STATUS",
        );
        let row = rows.first().expect("binlog on");
        let file: String = row.get(0).expect("file");
        let pos: u64 = row.get(1).expect("pos");
        format!("{file}:{pos}")
    }

    pub fn checkpoint_position(&self) -> Option<String> {
        let text: Option<String> = self.redis.conn().get(CHECKPOINT_KEY).ok()?;
        position_of(&text?)
    }

    pub fn wait_caught_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.checkpoint_position() != Some(self.head()) {
            assert!(Instant::now() < deadline, "the daemon did not catch up");
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the checkpoint to reach `head`, a head known not to move. Polls one Redis
    /// connection: a new MySQL and Redis connection per poll (as `wait_caught_up` makes)
    /// costs the shared cores enough to slow the catch-up it times.
    pub fn wait_checkpoint_at(&self, head: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut r = self.redis.conn();
        loop {
            let text: Option<String> = r.get(CHECKPOINT_KEY).expect("GET checkpoint");
            if text.as_deref().and_then(position_of).as_deref() == Some(head) {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon did not catch up");
            sleep(Duration::from_millis(2));
        }
    }

    /// Runs the daemon until its checkpoint is at the head; returns the checkpoint.
    pub fn checkpoint_at_head(&self) -> String {
        let mut d = self.daemon("delete", "current");
        self.wait_caught_up(Duration::from_secs(60));
        let _ = d.kill();
        let _ = d.wait();
        self.redis.conn().get(CHECKPOINT_KEY).expect("checkpoint")
    }

    pub fn restore_checkpoint(&self, checkpoint: &str) {
        let mut r = self.redis.conn();
        let _: () = redis::cmd("FLUSHDB")
            .query(&mut r)
            .expect("FLUSHDB (private Redis)");
        let _: () = r.set(CHECKPOINT_KEY, checkpoint).expect("SET checkpoint");
    }

    /// Commits the catch-up backlog; returns the binlog start and the row changes made.
    pub fn commit_backlog(&self) -> (String, u64) {
        let from = self.head();
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        let (mut rows, mut seed, mut next_id) = (0u64, 7u64, TABLE_ROWS as u64 + 1);
        while rows < CATCH_UP_ROWS {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((seed >> 33) % 100 + 1).min(CATCH_UP_ROWS - rows);
            let table = (seed >> 40) % TABLES as u64 + 1;
            let at = (seed >> 20) % (TABLE_ROWS as u64 - 100) + 1;
            let sql = match (seed >> 50) % 3 {
                0 => {
                    let s = format!(
                        "INSERT INTO sbtest.sbtest{table} (id, k, c, pad) SELECT seq, seq, \
                         'c', 'p' FROM sbtest.seq_{next_id}_to_{}",
                        next_id + n - 1
                    );
                    next_id += n;
                    s
                }
                1 => format!(
                    "UPDATE sbtest.sbtest{table} SET k = k + 1 WHERE id BETWEEN {at} AND {}",
                    at + n - 1
                ),
                _ => format!(
                    "DELETE FROM sbtest.sbtest{table} WHERE id >= {at} ORDER BY id LIMIT {n}"
                ),
            };
            mysql::query(&mut c, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            // Deletes may find fewer rows than asked: count what the binlog holds.
            rows += affected(&mut c);
        }
        (from, rows)
    }

    /// Seconds until the checkpoint reaches the head, the daemon's peak RSS, and the CPU
    /// seconds the daemon, Redis and MariaDB used meanwhile.
    pub fn time_catch_up(&self, action: &str) -> (f64, f64, [f64; 3]) {
        let head = self.head();
        let servers_before = self.cpu_seconds_servers();
        let started = Instant::now();
        let mut d = self.daemon(action, "current");
        self.wait_checkpoint_at(&head, Duration::from_secs(600));
        let secs = started.elapsed().as_secs_f64();
        let peak = peak_rss_mib(&d);
        let [daemon, redis, db] = self.cpu_seconds(&d);
        let _ = d.kill();
        let _ = d.wait();
        let cpu = [daemon, redis - servers_before[0], db - servers_before[1]];
        (secs, peak, cpu)
    }

    /// Seconds for `mariadb-binlog --read-from-remote-server` to read from `from` to the
    /// end: with `-v` it decodes every row (output discarded), with `--raw` it only copies
    /// the events to a file.
    pub fn reference_decode(&self, from: &str, mode: &str) -> f64 {
        let (file, pos) = from.split_once(':').expect("file:pos");
        let started = Instant::now();
        let mut c = Command::new("mariadb-binlog");
        c.args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            "--user=root",
            mode,
        ])
        .arg(format!("--port={}", self.db.port))
        .arg(format!("--start-position={pos}"))
        .args(["--to-last-log", file])
        .stdout(Stdio::null());
        if mode == "--raw" {
            let dir = self.dir.path().join("raw-catch-up");
            std::fs::create_dir_all(&dir).expect("raw binlog dir");
            c.arg(format!("--result-file={}/", dir.display()));
        }
        let status = c.status().expect("run mariadb-binlog");
        assert!(status.success(), "mariadb-binlog {mode} failed");
        started.elapsed().as_secs_f64()
    }

    /// `mariadb-binlog --read-from-remote-server --stop-never` from the head. With `-v`
    /// (output discarded) it decodes every event and stores nothing; with `--raw` it only
    /// copies the events to a file: the least any binlog reader can do.
    pub fn binlog_follower(&self, mode: &str) -> Child {
        let head = self.head();
        let (file, pos) = head.split_once(':').expect("file:pos");
        let mut c = Command::new("mariadb-binlog");
        c.args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            "--user=root",
            "--stop-never",
            mode,
        ])
        .arg(format!("--port={}", self.db.port))
        .arg(format!("--start-position={pos}"));
        if mode == "--raw" {
            let dir = self.dir.path().join("raw");
            std::fs::create_dir_all(&dir).expect("raw binlog dir");
            c.arg(format!("--result-file={}/", dir.display()));
        }
        c.arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("run mariadb-binlog --stop-never")
    }

    /// sysbench tx/s; with `probes`, also measures commit-to-visible latency meanwhile.
    pub fn live_tps(&self, probes: Option<&mut Vec<f64>>) -> f64 {
        let load = self
            .sysbench(
                "run",
                &[
                    "--threads=8".into(),
                    format!("--time={}", live_secs()),
                    "--report-interval=0".into(),
                ],
            )
            .spawn()
            .expect("sysbench run");
        if let Some(out) = probes {
            self.probe(out);
        }
        let output = load.wait_with_output().expect("sysbench output");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("transactions:"))
            .and_then(|rest| rest.split('(').nth(1))
            .and_then(|rate| rate.split_whitespace().next()?.parse().ok())
            .expect("sysbench reports transactions per second")
    }

    /// Commits a row and waits for Redis to announce its key; one probe every ~40 ms
    /// during the run. The wait is on a keyspace notification, not a polling loop: on two
    /// shared cores a busy poll takes CPU (and Redis's one thread) from what it measures.
    /// The notification is published while the step that writes the key runs, so it is
    /// the tightest bound on when the key became visible. (Client-side caching's
    /// broadcast invalidation was tried instead: it saved Redis no measurable CPU and
    /// arrived later, a p99 1–3 ms higher.)
    pub fn probe(&self, out: &mut Vec<f64>) {
        let mut c = mysql::conn(&self.db.root_url()).expect("connect");
        let mut r = self.redis.conn();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("K$")
            .query(&mut r)
            .expect("enable keyspace notifications");
        let mut sub = self.redis.conn();
        let mut pubsub = sub.as_pubsub();
        pubsub
            .psubscribe("__keyspace@*__:probe:*")
            .expect("PSUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(live_secs() - 2);
        let mut id = 0;
        while Instant::now() < deadline {
            id += 1;
            mysql::query(
                &mut c,
                &format!("INSERT INTO sbtest.probe VALUES ({id}, 0)"),
            )
            .expect("probe insert");
            let committed = Instant::now();
            let suffix = format!(":probe:{id}");
            loop {
                let message = pubsub.get_message().expect("probe lost (30 s)");
                if message.get_channel_name().ends_with(&suffix) {
                    break;
                }
            }
            out.push(committed.elapsed().as_secs_f64() * 1000.0);
            sleep(Duration::from_millis(40));
        }
    }
}

impl Bench {
    /// (steps, transactions) so far, from the daemon's `cdc_cache_step_transactions`
    /// histogram (count and sum) on its metrics endpoint.
    pub fn step_counts(&self) -> (f64, f64) {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("daemon metrics endpoint");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("metrics request");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("metrics response");
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in the daemon's metrics"))
        };
        (
            sample("cdc_cache_step_transactions_count"),
            sample("cdc_cache_step_transactions_sum"),
        )
    }

    /// CPU seconds (user + system) used so far by the daemon, Redis and MariaDB.
    pub fn cpu_seconds_servers(&self) -> [f64; 2] {
        [self.redis.pid(), self.db.pid()].map(|pid| pid.map(process_cpu_seconds).unwrap_or(0.0))
    }

    pub fn cpu_seconds(&self, daemon: &Child) -> [f64; 3] {
        [Some(daemon.id()), self.redis.pid(), self.db.pid()]
            .map(|pid| pid.map(process_cpu_seconds).unwrap_or(0.0))
    }
}

/// The `file:pos` of a checkpoint's text.
fn position_of(checkpoint: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(checkpoint).ok()?;
    let p = &json["position"];
    Some(format!("{}:{}", p["file"].as_str()?, p["pos"].as_u64()?))
}

fn affected(c: &mut mysql::Conn) -> u64 {
    let rows = mysql::rows(c, "SELECT ROW_COUNT()");
    rows.first()
        .and_then(|r| r.get::<i64, _>(0))
        .map(|n| n.max(0) as u64)
        .unwrap_or(0)
}
