//! Metrics, lag and health as operators see them: a real Prometheus scraping the daemon,
//! every metric the dashboard and alerts use being exported, lag that is right after a
//! backlog and while idle, and /readyz following Redis.

mod support;

use std::collections::HashMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::Commands;
use support::prom::{http_get, sample_names, scrape, Prometheus};
use support::{eventually, Daemon, Env};

const RULES: &str = "\
[[rules]]\ntable = \"shop.users\"\naction = \"upsert\"\nkey = \"user:{id}\"\n\n\
[[rules]]\ntable = \"shop.users\"\naction = \"delete\"\nkey = \"user:by-name:{name}\"\n\n\
[[rules]]\ntable = \"shop.carts\"\naction = \"upsert\"\nformat = \"hash\"\nkey = \"cart:{id}\"\n";

fn shop(env: &Env) {
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50))",
        "CREATE TABLE shop.carts (id INT PRIMARY KEY, items INT)",
    ]);
}

fn metric(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} not exported; have {:?}", samples.keys()))
}

/// Metric names a dashboard or alert file refers to.
fn names_used_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("cdc_cache_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn prometheus_sees_transactions_lag_and_latency_and_every_dashboard_metric_exists() {
    let env = Env::start();
    shop(&env);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    let prometheus = Prometheus::start(env.metrics_port, None);

    // 40 transactions of 5 rows, then updates and deletes on both rule kinds.
    for t in 0..40 {
        let values: Vec<String> = (0..5)
            .map(|r| format!("({}, 'n{}')", t * 5 + r, t * 5 + r))
            .collect();
        env.exec(&[&format!(
            "INSERT INTO shop.users VALUES {}",
            values.join(",")
        )]);
    }
    env.exec(&[
        "INSERT INTO shop.carts VALUES (1, 2), (2, 3)",
        "UPDATE shop.users SET name = 'renamed' WHERE id = 7",
        "DELETE FROM shop.users WHERE id < 3",
        "DELETE FROM shop.carts WHERE id = 2",
    ]);
    env.wait_caught_up(Duration::from_secs(60));
    let committed = 44.0;

    eventually(
        "prometheus to scrape the applied transactions",
        Duration::from_secs(60),
        || {
            let v = prometheus.query("cdc_cache_transactions_applied_total");
            (v == vec![committed]).then_some(())
        },
    );
    assert_eq!(
        prometheus.query("sum(cdc_cache_row_changes_applied_total)"),
        vec![200.0 + 2.0 + 1.0 + 3.0 + 1.0]
    );
    assert_eq!(
        prometheus
            .query(r#"cdc_cache_row_changes_applied_total{table="shop.users",kind="delete"}"#),
        vec![3.0]
    );
    // Every step is timed; there is at least one step per burst, at most one per commit.
    let steps = prometheus.query("cdc_cache_apply_step_duration_seconds_count")[0];
    assert!((1.0..=committed).contains(&steps), "{steps} steps");
    let seconds = prometheus.query("cdc_cache_apply_step_duration_seconds_sum")[0];
    assert!(seconds > 0.0 && seconds < 60.0, "{seconds} s applying");
    // Quantile over every step since the start (the raw cumulative buckets).
    let p99 = prometheus
        .query("histogram_quantile(0.99, cdc_cache_apply_step_duration_seconds_bucket)")[0];
    assert!(p99 > 0.0 && p99.is_finite(), "p99 {p99}");
    eventually("lag 0 in prometheus", Duration::from_secs(30), || {
        (prometheus.query("cdc_cache_lag_seconds") == vec![0.0]
            && prometheus.query("cdc_cache_lag_bytes") == vec![0.0])
        .then_some(())
    });
    assert_eq!(prometheus.query("cdc_cache_ready"), vec![1.0]);

    // Every metric the dashboard and the alert rules use is exported.
    let (_, text) = http_get(env.metrics_port, "/metrics").expect("/metrics answers");
    let exported = sample_names(&text);
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["dashboards/cdc-cache.json", "dashboards/alerts.yml"] {
        let used = names_used_in(&std::fs::read_to_string(format!("{root}/{file}")).expect(file));
        assert!(used.len() >= 5, "{file} uses only {used:?}");
        let missing: Vec<_> = used.iter().filter(|n| !exported.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses {missing:?}, not exported:\n{text}"
        );
    }
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

#[test]
fn lag_rises_with_a_backlog_falls_to_zero_and_stays_zero_while_idle() {
    let env = Env::start();
    env.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50))",
    ]);
    // Binlogs expire after an hour: the retention headroom is measured against that.
    env.exec(&["SET GLOBAL binlog_expire_logs_seconds = 3600"]);
    let config = env.config("current", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    // One applied transaction gives the checkpoint a commit time.
    env.exec(&["INSERT INTO shop.users VALUES (0, 'first')"]);
    env.wait_caught_up(Duration::from_secs(30));
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);

    // A backlog committed while the daemon is down, then left to age. The server moves to
    // a new binlog file in the middle, so the checkpoint's file is no longer the active one.
    for t in 0..60 {
        env.exec(&[&format!(
            "INSERT INTO shop.users SELECT seq + {}, 'x' FROM shop.seq_1_to_2000",
            t * 2000
        )]);
        if t == 5 {
            env.exec(&["FLUSH BINARY LOGS"]);
        }
    }
    sleep(Duration::from_secs(3));
    let mut daemon = Daemon::start(&config);
    let (mut max_seconds, mut max_bytes) = (0.0f64, 0.0f64);
    let mut min_headroom = f64::INFINITY;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        assert!(daemon.is_running(), "daemon exited:\n{}", daemon.log());
        assert!(
            Instant::now() < deadline,
            "lag never returned to 0 (peak {max_seconds} s, {max_bytes} B; last {last:?}; \
             checkpoint {:?}, head {})",
            env.checkpoint(),
            env.head()
        );
        if let Some(s) = scrape(env.metrics_port) {
            last = Some((
                metric(&s, "cdc_cache_lag_seconds"),
                metric(&s, "cdc_cache_lag_bytes"),
            ));
            let (secs, bytes) = (
                metric(&s, "cdc_cache_lag_seconds"),
                metric(&s, "cdc_cache_lag_bytes"),
            );
            max_seconds = max_seconds.max(secs);
            max_bytes = max_bytes.max(bytes);
            let headroom = metric(&s, "cdc_cache_binlog_retention_headroom_seconds");
            if headroom > 0.0 {
                min_headroom = min_headroom.min(headroom);
            }
            let caught_up = env.checkpoint().map(|c| c.position) == Some(env.head());
            if caught_up && secs == 0.0 && bytes == 0.0 && max_bytes > 0.0 {
                break;
            }
        }
        sleep(Duration::from_millis(20));
    }
    println!("backlog: max lag {max_seconds:.1} s, {max_bytes} bytes");
    // The oldest pending change was committed at least 3 s before the restart.
    assert!(max_seconds >= 2.5, "lag seconds peaked at {max_seconds}");
    assert!(max_bytes > 100_000.0, "lag bytes peaked at {max_bytes}");
    // While the checkpoint sat in the old file, its hour counted from its last commit.
    assert!(
        (3000.0..3598.0).contains(&min_headroom),
        "retention headroom went down to {min_headroom}"
    );
    let s = scrape(env.metrics_port).expect("/metrics answers");
    let idle_headroom = metric(&s, "cdc_cache_binlog_retention_headroom_seconds");
    assert_eq!(idle_headroom, 3600.0, "the active file cannot be purged");

    // Idle: the heartbeat keeps confirming the daemon is current.
    let idle_until = Instant::now() + Duration::from_secs(30);
    let mut samples = 0;
    while Instant::now() < idle_until {
        let s = scrape(env.metrics_port).expect("/metrics answers");
        assert_eq!(metric(&s, "cdc_cache_lag_seconds"), 0.0, "lag while idle");
        assert_eq!(
            metric(&s, "cdc_cache_lag_bytes"),
            0.0,
            "lag bytes while idle"
        );
        samples += 1;
        sleep(Duration::from_millis(250));
    }
    assert!(samples > 50, "only {samples} samples while idle");
    assert!(
        daemon.log().contains("caught up"),
        "no 'caught up' line:\n{}",
        daemon.log()
    );
    // The log starts with what the run was started with.
    let log = daemon.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("starting")
            && first.contains(concat!("version=", env!("CARGO_PKG_VERSION")))
            && first.contains("server_id=4242")
            && first.contains("max_ops_per_step=1000"),
        "{first}"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}

#[test]
fn readyz_follows_redis_and_healthz_stays_up() {
    let mut env = Env::start();
    shop(&env);
    let mut daemon = Daemon::start_ready(&env, &env.config("current", RULES));
    let port = env.metrics_port;
    let status = |path: &str| http_get(port, path).map(|(s, _)| s);
    eventually("ready", Duration::from_secs(30), || {
        (status("/readyz") == Some(200)).then_some(())
    });
    assert_eq!(status("/healthz"), Some(200));
    // The idle daemon checks Redis every second on the connection it keeps: it opens no
    // new one per check (it did, once a second, before).
    let mut info = env.redis.conn();
    let mut opened = || -> u64 {
        let text: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut info)
            .expect("INFO");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"));
        line.expect("the counter").trim().parse().expect("a number")
    };
    // Ready comes from the stream's own connections; the monitor opens its ping connection
    // on its first round, which may come later on a loaded host. Count from then on.
    eventually(
        "the monitor's ping connection",
        Duration::from_secs(30),
        || {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut env.redis.conn())
                .expect("CLIENT LIST");
            clients.contains("cmd=ping").then_some(())
        },
    );
    let before = opened();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(opened(), before, "connections opened while idle");
    // A ping answered late (a host too busy for a second) has not broken the connection:
    // it is kept, not replaced by a new one.
    env.redis.pause(true);
    std::thread::sleep(Duration::from_millis(1600));
    env.redis.pause(false);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(opened(), before, "connections opened after a late ping");
    assert_eq!(status("/readyz"), Some(200), "ready again");

    env.redis.kill();
    eventually("not ready without redis", Duration::from_secs(10), || {
        (status("/readyz") == Some(503)).then_some(())
    });
    assert_eq!(status("/healthz"), Some(200), "the process is alive");
    let s = scrape(port).expect("/metrics answers");
    assert_eq!(s.get(r#"cdc_cache_connected{target="redis"}"#), Some(&0.0));
    assert_eq!(s.get("cdc_cache_ready"), Some(&0.0));

    env.redis.restart();
    eventually("ready again", Duration::from_secs(30), || {
        (status("/readyz") == Some(200)).then_some(())
    });
    // And it applies again.
    env.exec(&["INSERT INTO shop.users VALUES (1, 'back')"]);
    eventually(
        "the row after redis returned",
        Duration::from_secs(30),
        || {
            let v: Option<String> = env.redis.conn().get("user:1").expect("GET");
            v.filter(|v| v.contains("back"))
        },
    );
    assert!(daemon.is_running(), "{}", daemon.log());
}

/// With `sink.linger_ms`, a burst of single-row transactions reaches Redis in a few steps
/// instead of one or two each, and every change still arrives. (Without the linger this
/// burst takes a step per commit or two: the test was run that way and fails.)
#[test]
fn linger_gathers_a_burst_of_transactions_into_few_steps() {
    let env = Env::start();
    shop(&env);
    let config = env.config_with(&env.db.url(), "current", "linger_ms = 2000", RULES);
    let mut daemon = Daemon::start_ready(&env, &config);
    let commits = 12;
    for id in 0..commits {
        env.exec(&[&format!("INSERT INTO shop.users VALUES ({id}, 'n{id}')")]);
    }
    env.wait_caught_up(Duration::from_secs(60));
    let mut r = env.redis.conn();
    for id in 0..commits {
        let value: Option<String> = r.get(format!("user:{id}")).expect("GET");
        assert!(value.is_some(), "user:{id} missing");
    }
    // A step is counted when the daemon reads its reply, which can come just after its
    // checkpoint is visible in Redis.
    let (transactions, steps) = eventually("every step counted", Duration::from_secs(10), || {
        let samples = scrape(env.metrics_port).expect("/metrics answers");
        let transactions = metric(&samples, "cdc_cache_step_transactions_sum");
        let steps = metric(&samples, "cdc_cache_step_transactions_count");
        (transactions >= f64::from(commits)).then_some((transactions, steps))
    });
    assert_eq!(transactions, f64::from(commits));
    // A burst lasting more than two lingers would need three steps; far more means the
    // steps were not gathered.
    assert!(steps <= 3.0, "{commits} commits took {steps} steps");
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
}
