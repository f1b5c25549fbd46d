//! Client certificates (mutual TLS) on both sides: a MariaDB user created `REQUIRE X509`
//! and a Redis that asks every client for a certificate (`tls-auth-clients yes`). Without
//! `tls_cert_file` and `tls_key_file` `check` names what each server refused; with them
//! the daemon applies rows. A certificate without its key is a configuration error.

mod support;

use std::path::Path;
use std::time::Duration;

use redis::Commands;
use support::tls::certificates;
use support::{run_cli, Daemon, Env, MariaDb, Redis};

#[test]
fn client_certificates_are_presented_to_both_servers() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = certificates(certs.path());
    let arg = |name: &str, p: &Path| format!("--{name}={}", p.display());
    let db = MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=FULL",
        &arg("ssl-cert", &cert),
        &arg("ssl-key", &key),
        &arg("ssl-ca", &ca),
    ]);
    let redis = Redis::start_tls_with(&cert, &key, &ca, &["--tls-auth-clients", "yes"]);
    let env = Env::with_servers(db, redis);
    env.exec(&[
        "CREATE DATABASE t",
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v INT)",
        "CREATE USER cdc@'%' REQUIRE X509",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO cdc@'%'",
    ]);
    let source_url = format!("mysql://cdc@127.0.0.1:{}/", env.db.port);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
    let config = env.config_with(&source_url, "current", "", rules);
    let text = std::fs::read_to_string(&config).expect("config");
    let with_ca = text
        .replace(
            "heartbeat_secs = 1\n",
            &format!("heartbeat_secs = 1\ntls_ca_file = \"{}\"\n", ca.display()),
        )
        .replace(
            "[redis]\n",
            &format!("[redis]\ntls_ca_file = \"{}\"\n", ca.display()),
        );
    let path = config.to_str().expect("utf-8");

    // Verified servers, but no client certificate: both refuse, and `check` says so.
    std::fs::write(&config, &with_ca).expect("write config");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("Access denied for user 'cdc'") && out.contains("CertificateRequired"),
        "{out}{err}"
    );

    // A certificate without its key.
    let half = with_ca.replace(
        "[redis]\n",
        &format!("[redis]\ntls_cert_file = \"{}\"\n", cert.display()),
    );
    std::fs::write(&config, &half).expect("write config");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("redis.tls_key_file"), "{out}{err}");

    // Both, on both sides.
    let full = with_ca
        .replace(
            "heartbeat_secs = 1\n",
            &format!(
                "heartbeat_secs = 1\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        )
        .replace(
            "[redis]\n",
            &format!(
                "[redis]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        );
    std::fs::write(&config, &full).expect("write config");
    let (code, out, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
    let mut daemon = Daemon::start_ready(&env, &config);
    env.exec(&["INSERT INTO t.kv VALUES (1, 10)"]);
    env.wait_caught_up(Duration::from_secs(30));
    let value: Option<String> = env.redis.conn().get("kv:1").expect("GET over mutual TLS");
    assert_eq!(value.as_deref(), Some(r#"{"id":1,"v":10}"#));
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log()
    );
}
