//! `[redis]`: where the cache is, and how a step reaches it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SentinelConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// A file holding the password (put into `url`), so it stays out of the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify a `rediss://` server with (default: system roots).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate and private key the client presents, for a server that asks for
    /// one (`tls-auth-clients yes`). Both or neither.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Find the primary through Redis Sentinel: then `url` gives only the user, password,
    /// database and scheme, and its host and port are the ones the Sentinels name.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// `url` is a node of a Redis Cluster (`cluster`): every step is applied slot by slot.
    #[serde(default)]
    pub cluster: bool,
    /// With `cluster`: how many replicas of each primary must have a step's writes
    /// (`WAIT`) before the checkpoint moves past them, so that a failover cannot lose
    /// writes the checkpoint says are applied. 0: do not wait.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long one step waits for them before it fails (and is retried).
    #[serde(default = "default_wait_timeout_ms")]
    pub wait_timeout_ms: u64,
}

impl RedisConfig {
    /// The TLS files, for every connection to a node or a Sentinel.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.tls_ca_file.clone(),
            identity: self.tls_cert_file.clone().zip(self.tls_key_file.clone()),
        }
    }
}

/// `redis.tls_ca_file`, and the client's own certificate and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn default_wait_timeout_ms() -> u64 {
    5000
}
