//! TLS on both sides, least-privilege users, and secrets that never show: MariaDB with
//! `require_secure_transport=ON`, a TLS-only Redis, certificates made by the test; the
//! daemon logs in to MariaDB as a replication user (password from a file) and to Redis
//! as an ACL user allowed only the rule keys and the checkpoint (password from the
//! environment). No output of any command contains either password.

mod support;

use std::path::Path;
use std::time::Duration;

use redis::Commands;
use support::tls::certificates;
use support::{run_cli_env, Daemon, Env, MariaDb, Redis, CHECKPOINT_KEY};

const MYSQL_PASSWORD: &str = "my-Sq1-pw-3f9a";
const REDIS_PASSWORD: &str = "r3dis-pw-77c1";

#[test]
fn tls_acl_users_and_secrets_that_never_show() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = certificates(certs.path());
    let arg = |name: &str, p: &Path| format!("--{name}={}", p.display());
    let (ssl_cert, ssl_key, ssl_ca) = (
        arg("ssl-cert", &cert),
        arg("ssl-key", &key),
        arg("ssl-ca", &ca),
    );
    let mut db = MariaDb::start_with(&[
        "--log-bin=binlog",
        "--binlog-format=ROW",
        "--binlog-row-metadata=FULL",
        &ssl_cert,
        &ssl_key,
        &ssl_ca,
    ]);
    let redis = Redis::start_tls(&cert, &key, &ca);
    let mut admin = support::mysql::conn(&db.root_url()).expect("root");
    for sql in [
        "CREATE DATABASE t".to_string(),
        "CREATE TABLE t.kv (id INT PRIMARY KEY, v VARCHAR(20))".to_string(),
        format!("CREATE USER cdc@'%' IDENTIFIED BY '{MYSQL_PASSWORD}' REQUIRE SSL"),
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO cdc@'%'".to_string(),
        "GRANT SELECT ON t.* TO cdc@'%'".to_string(),
        "SET GLOBAL require_secure_transport = ON".to_string(),
    ] {
        support::mysql::query(&mut admin, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(admin);
    db.use_tls_for_root();
    // Plain TCP is refused now.
    let plain = format!("mysql://root@127.0.0.1:{}/", db.port);
    assert!(support::mysql::conn(&plain)
        .and_then(|mut c| support::mysql::query(&mut c, "SELECT 1"))
        .is_err());

    // First without the keys under the checkpoint key (where a refused step leaves its
    // mark): `check` must say what to grant.
    let acl_user = |keys: &str| {
        redis.command(&format!(
            "ACL SETUSER cdc on >{REDIS_PASSWORD} resetkeys ~kv:* {keys} \
             +@read +@write +@scripting +@transaction +@connection"
        ))
    };
    acl_user(&format!("~{CHECKPOINT_KEY}"));

    let env = Env::with_servers(db, redis);
    let password_file = env.dir.path().join("mysql-password");
    std::fs::write(&password_file, format!("{MYSQL_PASSWORD}\n")).expect("write secret");
    let source_url = format!("mysql://cdc@127.0.0.1:{}/", env.db.port);
    let rules = "[[rules]]\ntable = \"t.kv\"\naction = \"upsert\"\nkey = \"kv:{id}\"\n";
    let config = env.config_with(&source_url, "current", "", rules);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "heartbeat_secs = 1\n",
        &format!(
            "heartbeat_secs = 1\npassword_file = \"{}\"\ntls_ca_file = \"{}\"\n",
            password_file.display(),
            ca.display()
        ),
    );
    text = text.replace(
        "[redis]\n",
        &format!("[redis]\ntls_ca_file = \"{}\"\n", ca.display()),
    );
    std::fs::write(&config, &text).expect("rewrite config");
    assert!(!text.contains(MYSQL_PASSWORD) && !text.contains(REDIS_PASSWORD));
    let redis_url = format!(
        "rediss://cdc:{REDIS_PASSWORD}@127.0.0.1:{}/0",
        env.redis.port
    );
    let envs = [("CDC_CACHE_REDIS__URL", redis_url.as_str())];
    let path = config.to_str().expect("utf-8");

    let mut output = String::new();
    let (code, out, err) = run_cli_env(&["check", "--config", path], &envs);
    output += &(out.clone() + &err);
    assert_ne!(code, 0, "check without the fence's keys:\n{out}{err}");
    let advice = format!("~{CHECKPOINT_KEY}:*");
    assert!(
        out.contains(&advice),
        "check names the ACL to grant:\n{out}{err}"
    );
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("cdc")
        .arg(&advice)
        .query(&mut env.redis.conn())
        .expect("ACL SETUSER");
    let (code, out, err) = run_cli_env(&["check", "--config", path], &envs);
    output += &(out.clone() + &err);
    assert_eq!(code, 0, "check with the least-privilege user:\n{out}{err}");
    // MariaDB lists replicas only to REPLICATION MASTER ADMIN: a warning, not a failure,
    // and the daemon below starts all the same.
    assert!(
        out.contains("replicas cannot be listed") && out.contains("REPLICATION MASTER ADMIN"),
        "check says the server_id is not checked:\n{out}{err}"
    );
    // Nor are Redis's limits readable without `+config|get`: a warning naming it.
    assert!(
        out.contains("limits on a client's input could not be read") && out.contains("+config|get"),
        "check says the limits are assumed:\n{out}{err}"
    );

    let mut daemon = Daemon::start_with_env(&config, &envs);
    support::eventually("the first checkpoint", Duration::from_secs(30), || {
        assert!(daemon.is_running(), "{}", daemon.log());
        env.checkpoint()
    });
    env.exec(&[
        "INSERT INTO t.kv VALUES (1, 'one'), (2, 'two')",
        "UPDATE t.kv SET v = 'uno' WHERE id = 1",
    ]);
    env.wait_caught_up(Duration::from_secs(30));
    let v: String = env.redis.conn().get("kv:1").expect("GET over TLS");
    assert_eq!(v, r#"{"id":1,"v":"uno"}"#);

    // The ACL user can touch its keys only.
    let as_cdc = redis::Client::build_with_tls(
        redis_url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).expect("CA")),
        },
    )
    .and_then(|c| c.get_connection())
    .expect("connect as cdc");
    let mut as_cdc = as_cdc;
    let denied: redis::RedisResult<()> = as_cdc.set("other:1", "x");
    let denied = format!("{denied:?}");
    assert!(
        denied.contains("NOPERM") || denied.contains("NoPerm"),
        "ACL is not restrictive: {denied}"
    );

    for args in [
        vec!["status", "--config", path],
        vec!["verify", "--config", path],
    ] {
        let (code, out, err) = run_cli_env(&args, &envs);
        assert_eq!(code, 0, "{args:?}:\n{out}{err}");
        output += &(out + &err);
    }
    // Errors that involve the URLs: a wrong password on each side.
    let bad_redis = redis_url.replace(REDIS_PASSWORD, &format!("{REDIS_PASSWORD}-wrong"));
    let (code, out, err) = run_cli_env(
        &["status", "--config", path],
        &[("CDC_CACHE_REDIS__URL", &bad_redis)],
    );
    assert_ne!(code, 0);
    output += &(out + &err);
    std::fs::write(&password_file, format!("{MYSQL_PASSWORD}-wrong")).expect("write");
    let (code, out, err) = run_cli_env(&["check", "--config", path], &envs);
    assert_ne!(code, 0);
    output += &(out + &err);

    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
    output += &daemon.log();
    // URLs do appear (check prints them), redacted.
    assert!(
        output.contains("mysql://cdc:***@") && output.contains("rediss://cdc:***@"),
        "{output}"
    );
    for secret in [MYSQL_PASSWORD, REDIS_PASSWORD] {
        assert!(!output.contains(secret), "{secret} leaked:\n{output}");
    }
}
