//! Private `mariadbd` and `redis-server` instances on free ports, in temporary
//! directories. Each instance is stopped when dropped; tests can kill and restart them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn find_binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} not found: install mariadb-server, redis-server, prometheus and sysbench (see .ci/run)");
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not become ready in {timeout:?}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// SIGSTOP (`on`) or SIGCONT a running server.
fn pause(child: Option<&Child>, on: bool) {
    let pid = child.expect("running").id().to_string();
    let signal = if on { "-STOP" } else { "-CONT" };
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

pub fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A fresh data directory made by `mariadb-install-db`. The installer's temporary files
/// go to a directory of its own: installers running in parallel and sharing `/tmp`
/// collide on temporary table names.
fn install_datadir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cdc-cache-mariadb-")
        .tempdir()
        .expect("tempdir");
    let tmp = dir.path().join("install-tmp");
    std::fs::create_dir_all(&tmp).expect("create install tmpdir");
    let out = Command::new(find_binary("mariadb-install-db"))
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", dir.path().join("data").display()))
        .arg("--user=root")
        .env("TMPDIR", &tmp)
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A private MariaDB server with binary logging.
pub struct MariaDb {
    dir: TempDir,
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// The test's own connections use TLS (once the server requires it).
    root_tls: bool,
}

impl MariaDb {
    /// The server process, while it runs (for CPU accounting in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The path of one of the server's binlog files.
    pub fn binlog(&self, file: &str) -> PathBuf {
        self.dir.path().join("data").join(file)
    }

    /// ROW format, FULL image and FULL row metadata: what the daemon needs.
    pub fn start() -> Self {
        Self::start_with(&[
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
        ])
    }

    /// Starts with these binlog-related options instead of the defaults.
    pub fn start_with(options: &[&str]) -> Self {
        let dir = install_datadir();
        let mut db = MariaDb {
            dir,
            port: free_port(),
            args: options.iter().map(|s| s.to_string()).collect(),
            child: None,
            root_tls: false,
        };
        db.launch();
        db
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        std::fs::create_dir_all(d.join("tmp")).expect("create tmpdir");
        let child = Command::new(find_binary("mariadbd"))
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--server-id=1",
                "--innodb-buffer-pool-size=64M",
            ])
            .args(["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let url = self.root_url();
        let deadline = Instant::now() + Duration::from_secs(60);
        while mysql::conn(&url)
            .and_then(|mut c| mysql::query(&mut c, "SELECT 1"))
            .is_err()
        {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "mariadbd did not start ({exited:?}); its log:\n{}",
                    self.error_log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `mysql://root@127.0.0.1:port/`: the test's own administrative connection.
    pub fn root_url(&self) -> String {
        let tls = if self.root_tls {
            "?require_ssl=true&verify_ca=false&verify_identity=false"
        } else {
            ""
        };
        format!("mysql://root@127.0.0.1:{}/{tls}", self.port)
    }

    /// From now on the test's own connections use TLS (after `require_secure_transport`).
    pub fn use_tls_for_root(&mut self) {
        self.root_tls = true;
    }

    /// The URL the daemon gets.
    pub fn url(&self) -> String {
        self.root_url()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    /// SIGSTOP / SIGCONT: a server (or a network path) that goes silent without closing
    /// its connections.
    pub fn pause(&self, on: bool) {
        pause(self.child.as_ref(), on);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped server must be continued for the kill to take effect promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        stop_child(&mut self.child);
    }
}

/// A private Redis server without persistence.
pub struct Redis {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// TLS only: (certificate, key, CA) files; the CA PEM verifies the server.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// More `redis-server` options.
    extra: Vec<String>,
}

impl Redis {
    /// The server process, while it runs (for CPU accounting in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// A Redis started with these options as well (`--cluster-enabled yes`, …).
    pub fn start_with(options: &[&str]) -> Self {
        let mut redis = Self::new(None);
        redis.extra = options.iter().map(|o| o.to_string()).collect();
        redis.launch();
        redis
    }

    /// A Redis that accepts TLS connections only, with this certificate, key and CA.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start_with_tls(Some((cert.into(), key.into(), ca.into())))
    }

    /// A TLS-only Redis started with these options as well.
    pub fn start_tls_with(cert: &Path, key: &Path, ca: &Path, options: &[&str]) -> Self {
        let mut redis = Self::new(Some((cert.into(), key.into(), ca.into())));
        redis.extra = options.iter().map(|o| o.to_string()).collect();
        redis.launch();
        redis
    }

    fn start_with_tls(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        let mut redis = Self::new(tls);
        redis.launch();
        redis
    }

    fn new(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cdc-cache-redis-")
            .tempdir()
            .expect("tempdir");
        Redis {
            dir,
            port: free_port(),
            child: None,
            tls,
            extra: Vec::new(),
        }
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url().as_str()),
            // The server's certificate is also a client one (`tls::certificates`): it
            // passes a server that asks clients for theirs (`--tls-auth-clients yes`).
            Some((cert, key, ca)) => redis::Client::build_with_tls(
                self.url().as_str(),
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: std::fs::read(cert).expect("read certificate"),
                        client_key: std::fs::read(key).expect("read key"),
                    }),
                    root_cert: Some(std::fs::read(ca).expect("read CA")),
                },
            ),
        }
    }

    fn launch(&mut self) {
        let mut command = Command::new(find_binary("redis-server"));
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key, ca)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        wait_until("redis-server", Duration::from_secs(20), || {
            self.client()
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Runs a command given as whitespace-separated words (`ACL SETUSER …`, `FLUSHALL`).
    pub fn command(&self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let _: () = redis::cmd(words[0])
            .arg(&words[1..])
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }

    pub fn conn(&self) -> redis::Connection {
        self.client()
            .and_then(|c| c.get_connection())
            .expect("connect to the private redis")
    }

    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SHUTDOWN SAVE: stops with its data written to disk; `launch_again` reloads it (an
    /// outage without data loss).
    pub fn shutdown_saving(&mut self) {
        let _: Result<(), _> = redis::cmd("SHUTDOWN").arg("SAVE").query(&mut self.conn());
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory.
    pub fn launch_again(&mut self) {
        self.launch();
    }

    /// SIGSTOP / SIGCONT: a server that hangs without closing its connections.
    pub fn pause(&self, on: bool) {
        pause(self.child.as_ref(), on);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process ignores SIGKILL until continued on some kernels' ptrace
            // paths; continue it first so the kill always lands.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        stop_child(&mut self.child);
    }
}

/// Blocking SQL helpers for tests (a tiny runtime per call keeps tests synchronous).
pub mod mysql {
    use mysql_async::prelude::Queryable;

    pub struct Conn {
        rt: tokio::runtime::Runtime,
        conn: mysql_async::Conn,
    }

    pub fn conn(url: &str) -> Result<Conn, mysql_async::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let opts = mysql_async::Opts::from_url(url).expect("valid url");
        let conn = rt.block_on(mysql_async::Conn::new(opts))?;
        Ok(Conn { rt, conn })
    }

    pub fn query(c: &mut Conn, sql: &str) -> Result<(), mysql_async::Error> {
        let Conn { rt, conn } = c;
        rt.block_on(conn.query_drop(sql))
    }

    pub fn rows(c: &mut Conn, sql: &str) -> Vec<mysql_async::Row> {
        let Conn { rt, conn } = c;
        rt.block_on(conn.query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
