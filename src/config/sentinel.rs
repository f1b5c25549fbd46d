//! `[redis.sentinel]`: find the Redis primary through Redis Sentinel, so that a Sentinel
//! failover moves the daemon to the new primary without an operator.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{validate_url, ConfigError, RedisConfig};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the primary under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The Sentinels, `redis://[user:password@]host:port` (`rediss://` for TLS), asked in
    /// order until one names the primary.
    pub nodes: Vec<String>,
    /// A file holding the Sentinels' own password (their `requirepass`), put into every
    /// node URL; the primary's password stays in `redis.url` / `redis.password_file`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Checks `[redis.sentinel]` when it is there.
pub fn validate(redis: &RedisConfig) -> Result<(), ConfigError> {
    let Some(sentinel) = &redis.sentinel else {
        return Ok(());
    };
    if sentinel.master_name.trim().is_empty() {
        return Err(ConfigError::invalid(
            "redis.sentinel.master_name",
            "must name the primary as the Sentinels monitor it (`sentinel monitor <name> …`)",
        ));
    }
    if sentinel.nodes.is_empty() {
        return Err(ConfigError::invalid(
            "redis.sentinel.nodes",
            "must list at least one Sentinel, like \"redis://10.0.0.5:26379\"",
        ));
    }
    for node in &sentinel.nodes {
        validate_url(node, "redis.sentinel.nodes", &["redis", "rediss"])?;
    }
    if let Some(path) = &sentinel.password_file {
        if !path.is_file() {
            return Err(ConfigError::invalid(
                "redis.sentinel.password_file",
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(master_name: &str, nodes: &[&str]) -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sentinel: Some(SentinelConfig {
                master_name: master_name.into(),
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                password_file: None,
            }),
            cluster: false,
            wait_replicas: 0,
            wait_timeout_ms: 5000,
        }
    }

    fn key_of(result: Result<(), ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn a_sentinel_section_names_its_bad_key() {
        assert!(validate(&redis("cache", &["redis://10.0.0.5:26379"])).is_ok());
        assert_eq!(
            key_of(validate(&redis(" ", &["redis://10.0.0.5:26379"]))),
            "redis.sentinel.master_name"
        );
        assert_eq!(
            key_of(validate(&redis("cache", &[]))),
            "redis.sentinel.nodes"
        );
        assert_eq!(
            key_of(validate(&redis("cache", &["10.0.0.5:26379"]))),
            "redis.sentinel.nodes"
        );
        assert_eq!(
            key_of(validate(&redis("cache", &["http://10.0.0.5:26379"]))),
            "redis.sentinel.nodes"
        );
    }
}
