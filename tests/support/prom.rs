//! Plain HTTP GET over loopback, the daemon's /metrics parsed, and a private Prometheus
//! server scraping the daemon.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::servers::free_port;

/// GET http://127.0.0.1:port/path → (status, body); `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The daemon's samples: `name{labels}` → value.
pub fn scrape(port: u16) -> Option<HashMap<String, f64>> {
    let (status, body) = http_get(port, "/metrics")?;
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    Some(parse_samples(&body))
}

pub fn parse_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((name.to_string(), value))
        })
        .collect()
}

/// Names of the metric families in a scrape (without labels).
pub fn sample_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = parse_samples(text)
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A private Prometheus (Debian package `prometheus`) scraping one target every second.
pub struct Prometheus {
    _dir: TempDir,
    pub port: u16,
    child: Child,
}

impl Prometheus {
    pub fn start(target_port: u16, rules: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cdc-cache-prometheus-")
            .tempdir()
            .expect("tempdir");
        let rule_files = rules
            .map(|p| format!("rule_files: [\"{}\"]\n", p.display()))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
             scrape_configs:\n  - job_name: cdc-cache\n    static_configs:\n      \
             - targets: [\"127.0.0.1:{target_port}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(super::servers::find_binary("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let prom = Prometheus {
            _dir: dir,
            port,
            child,
        };
        super::eventually("prometheus to answer", Duration::from_secs(30), || {
            http_get(port, "/-/ready").filter(|(s, _)| *s == 200)
        });
        prom
    }

    /// Evaluates an instant PromQL query; the values of the result vector.
    pub fn query(&self, promql: &str) -> Vec<f64> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (status, body) =
            http_get(self.port, &format!("/api/v1/query?query={q}")).expect("prometheus answers");
        assert_eq!(status, 200, "{promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query result is JSON");
        json["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a numeric sample")
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
