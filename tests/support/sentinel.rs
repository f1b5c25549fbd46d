//! A private Redis Sentinel (`redis-server --sentinel`) watching a private primary under
//! the name `cache`, with a quorum of one, so a test can fail the primary over at will.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::servers::{find_binary, free_port, stop_child, wait_until};
use super::Redis;

pub const MASTER: &str = "cache";

pub struct Sentinel {
    _dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Its own `requirepass`, when it has one.
    password: Option<String>,
    /// With TLS only: the CA that verifies it.
    tls_ca: Option<PathBuf>,
}

impl Sentinel {
    /// A Sentinel monitoring `primary`; ready once it knows `replicas` replicas of it
    /// (a failover needs one to promote).
    pub fn watch(primary: &Redis, replicas: usize) -> Self {
        Self::launch(primary, replicas, None, None)
    }

    /// As `watch`, with a password of its own (`requirepass`).
    pub fn watch_with_password(primary: &Redis, password: &str) -> Self {
        Self::launch(primary, 0, Some(password), None)
    }

    /// As `watch`, over TLS only, both to its clients and to the (TLS) primary: the
    /// (certificate, key, CA) files.
    pub fn watch_tls(primary: &Redis, tls: (&Path, &Path, &Path)) -> Self {
        Self::launch(primary, 0, None, Some(tls))
    }

    fn launch(
        primary: &Redis,
        replicas: usize,
        password: Option<&str>,
        tls: Option<(&Path, &Path, &Path)>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cdc-cache-sentinel-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let listen = match tls {
            None => format!("port {port}\n"),
            Some((cert, key, ca)) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                cert.display(),
                key.display(),
                ca.display()
            ),
        };
        // Sentinel rewrites its config file, so it lives in the temporary directory.
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "{listen}bind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 10000\n{requirepass}",
            dir = dir.path().display(),
            primary = primary.port,
            requirepass = password
                .map(|p| format!("requirepass {p}\n"))
                .unwrap_or_default(),
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new(find_binary("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let sentinel = Sentinel {
            _dir: dir,
            port,
            child: Some(child),
            password: password.map(str::to_string),
            tls_ca: tls.map(|(_, _, ca)| ca.to_path_buf()),
        };
        wait_until(
            "sentinel to see the replicas",
            Duration::from_secs(60),
            || {
                sentinel
                    .replicas_known()
                    .map(|n| n >= replicas)
                    .unwrap_or(false)
            },
        );
        sentinel
    }

    /// Its address, without its password.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let mut url = url::Url::parse(&self.url()).expect("valid URL");
        if let Some(p) = &self.password {
            url.set_password(Some(p)).expect("a password fits");
        }
        let client = match &self.tls_ca {
            None => redis::Client::open(url.as_str())?,
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).expect("read CA")),
                },
            )?,
        };
        client.get_connection()
    }

    fn replicas_known(&self) -> redis::RedisResult<usize> {
        let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER)
            .query(&mut self.conn()?)?;
        Ok(replicas.len())
    }

    /// The port of the primary this Sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut self.conn().ok()?)
            .ok()?;
        reply.map(|(_, port)| port)
    }

    /// `SENTINEL FAILOVER`: promotes a replica without asking the primary or a quorum.
    pub fn fail_over(&self) {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query(&mut self.conn().expect("connect to sentinel"))
            .expect("SENTINEL FAILOVER");
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
