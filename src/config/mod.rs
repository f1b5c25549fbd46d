//! Configuration: types, defaults, loading (TOML file + `CDC_CACHE_` environment) and
//! validation.
//!
//! Loading and validation are separate so that `check --offline` can validate a file without
//! touching any server, and so that every message can name the offending key. Unknown keys
//! are rejected everywhere (`deny_unknown_fields`): a misspelt `ttl_sec` silently ignored
//! would be a cache that never expires.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Position;
use crate::mapper::rules::RuleSet;

mod cluster;
mod defaults;
mod parse_error;
mod redis_config;
mod secrets;
mod sentinel;

use defaults::*;

pub use redis_config::{RedisConfig, TlsFiles};
pub use sentinel::SentinelConfig;

/// Everything that can be wrong with a configuration. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist (pass an existing file with --config)")]
    Missing { path: PathBuf },
    /// The message names the key and where its value came from (`parse_error`).
    #[error("{message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub redis: RedisConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub consistency: ConsistencyConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user:password@host:port`; the user needs REPLICATION SLAVE, REPLICATION
    /// CLIENT and SELECT.
    pub url: String,
    /// Other servers of the same replication topology (replicas with `log_slave_updates`,
    /// the primary to be), tried in turn when the current one cannot be reached or cannot
    /// continue the checkpoint. Needs GTID checkpoints: a file position means nothing on
    /// another server.
    #[serde(default)]
    pub failover_urls: Vec<String>,
    /// Replica id announced to the server; two replicas with one id kick each other off.
    pub server_id: u32,
    /// Where to begin when Redis holds no checkpoint: `current`, `earliest` or `file:pos`.
    #[serde(default = "default_start")]
    pub start: String,
    /// Row changes buffered per message between the source and the sink. With
    /// `channel_capacity` this bounds the memory used by in-flight changes.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// A chunk also ends once its rows events reach this many bytes, so wide rows (large
    /// TEXT, BLOB, JSON) are bounded too.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// Messages queued between source and sink (backpressure beyond that).
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Heartbeat period asked from the server; a silent connection is declared dead after
    /// three periods.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// `auto` (the default: GTID checkpoints on MariaDB), `on` (require them) or `off`
    /// (file positions only).
    #[serde(default = "default_gtid_mode")]
    pub gtid_mode: String,
    /// A file holding the password (put into `url`), so it stays out of the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify the server with; setting it turns TLS on.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate and private key the client presents, for a user created
    /// `REQUIRE X509` (or `SUBJECT`/`ISSUER`); setting them turns TLS on. Both or neither.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Redis key holding the applied position, written in the same atomic step as the ops.
    #[serde(default = "default_checkpoint_key")]
    pub key: String,
    /// Optional mirror on disk, written atomically (tmp + rename) after each step.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Largest number of cache operations in one atomic step. Bigger transactions are split
    /// and only their last step moves the checkpoint.
    #[serde(default = "default_max_ops_per_step")]
    pub max_ops_per_step: usize,
    /// Largest number of bytes of commands (`CacheOp::bytes`: keys, values, command
    /// names) in one step, split likewise; lowered to what Redis takes at connect.
    #[serde(default = "default_max_bytes_per_step")]
    pub max_bytes_per_step: usize,
    /// Retry delays for transient failures start here and double up to `max_backoff_ms`.
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// When the stream is caught up, how long to gather further transactions before a
    /// step is sent (0: send at once). Fewer, larger steps cost Redis and the daemon less
    /// per transaction on a busy primary, at up to this much added latency.
    #[serde(default)]
    pub linger_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics and health endpoints (loopback by default on purpose).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human) or `json` (one object per line).
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter such as `info` or `cdc_cache=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

/// Continuous consistency sampling: re-read a fraction of applied keys' rows after a delay
/// and compare them with Redis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// Fraction of applied upsert keys to check, 0.0 (off, the default) to 1.0.
    #[serde(default)]
    pub sample_rate: f64,
    /// How long after the apply a sampled key is checked.
    #[serde(default = "default_consistency_delay_ms")]
    pub delay_ms: u64,
    /// Delete a key found inconsistent (a miss is always safe).
    #[serde(default)]
    pub repair: bool,
}

/// One `[[rules]]` entry as written by the user; compiled by [`RuleSet::compile`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub table: String,
    pub action: String,
    pub key: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Start even though a foreign key with a cascading action (ON DELETE CASCADE, …)
    /// changes rows of this rule's table without logging them: the operator knows the
    /// parent rows are never deleted or re-keyed. See `source::catalog`.
    #[serde(default)]
    pub accept_unlogged_cascades: bool,
}

/// A linger beyond a few seconds is a mistake, not a tuning: the cache would trail the
/// database by that much on every commit.
const MAX_LINGER_MS: u64 = 5_000;

/// Where replication begins when there is no checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPolicy {
    /// The server's current head: only changes made from now on.
    Current,
    /// The oldest binlog the server still has.
    Earliest,
    /// An explicit position.
    At(Position),
}

impl StartPolicy {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text {
            "current" => Ok(StartPolicy::Current),
            "earliest" => Ok(StartPolicy::Earliest),
            other => Position::parse(other).map(StartPolicy::At).map_err(|e| {
                ConfigError::invalid(
                    "source.start",
                    format!("`{other}` is not `current`, `earliest` or `file:pos` ({e})"),
                )
            }),
        }
    }
}

/// Environment variables that set config keys: `CDC_CACHE_SOURCE__URL` is `source.url`.
const ENV_PREFIX: &str = "CDC_CACHE_";

impl Config {
    /// Loads defaults < file < environment, without validating semantics.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing { path: path.into() });
        }
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract::<Config>()
            .map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: parse_error::describe(e, ENV_PREFIX, path),
            })
    }

    /// Loads and validates, then reads the password files; the usual entry point.
    pub fn load_valid(path: &Path) -> Result<(Config, RuleSet), ConfigError> {
        let mut config = Config::load(path)?;
        let rules = config.validate()?;
        secrets::resolve(&mut config)?;
        Ok((config, rules))
    }

    /// Reads the password files again into the URLs (a password being rotated).
    pub fn read_passwords(&mut self) -> Result<(), ConfigError> {
        secrets::resolve(self)
    }

    /// Checks everything that can be checked without a server and compiles the rules.
    pub fn validate(&self) -> Result<RuleSet, ConfigError> {
        validate_url(&self.source.url, "source.url", &["mysql"])?;
        for url in &self.source.failover_urls {
            validate_url(url, "source.failover_urls", &["mysql"])?;
        }
        if !self.source.failover_urls.is_empty() && self.source.gtid_mode == "off" {
            return Err(ConfigError::invalid(
                "source.failover_urls",
                "needs GTID checkpoints (a file position means nothing on another server); \
                 set source.gtid_mode to `auto` or `on`, or remove failover_urls",
            ));
        }
        validate_url(&self.redis.url, "redis.url", &["redis", "rediss"])?;
        sentinel::validate(&self.redis)?;
        cluster::validate(self)?;
        if self.source.server_id == 0 {
            return Err(ConfigError::invalid(
                "source.server_id",
                "must be a non-zero id unique among the server's replicas",
            ));
        }
        StartPolicy::parse(&self.source.start)?;
        if !matches!(self.source.gtid_mode.as_str(), "auto" | "on" | "off") {
            return Err(ConfigError::invalid(
                "source.gtid_mode",
                "must be `auto`, `on` or `off`",
            ));
        }
        positive(self.source.chunk_rows, "source.chunk_rows")?;
        positive(self.source.chunk_bytes, "source.chunk_bytes")?;
        positive(self.source.channel_capacity, "source.channel_capacity")?;
        positive(self.source.heartbeat_secs as usize, "source.heartbeat_secs")?;
        positive(self.sink.max_ops_per_step, "sink.max_ops_per_step")?;
        positive(self.sink.max_bytes_per_step, "sink.max_bytes_per_step")?;
        if self.sink.min_backoff_ms == 0 || self.sink.min_backoff_ms > self.sink.max_backoff_ms {
            return Err(ConfigError::invalid(
                "sink.min_backoff_ms",
                "must be at least 1 and not above sink.max_backoff_ms",
            ));
        }
        if self.sink.linger_ms > MAX_LINGER_MS {
            return Err(ConfigError::invalid(
                "sink.linger_ms",
                format!(
                    "{} ms would hold every change back that long; use 0 to 1 (the \
                     measured trade-off, README), at most {MAX_LINGER_MS}",
                    self.sink.linger_ms
                ),
            ));
        }
        if self.checkpoint.key.is_empty() {
            return Err(ConfigError::invalid("checkpoint.key", "must not be empty"));
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:9187",
                    self.metrics.listen
                ),
            ));
        }
        secrets::validate(self)?;
        if !(0.0..=1.0).contains(&self.consistency.sample_rate) {
            return Err(ConfigError::invalid(
                "consistency.sample_rate",
                "must be between 0.0 (off) and 1.0 (every applied key)",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid(
                "log.format",
                "must be `text` or `json`",
            ));
        }
        RuleSet::compile(&self.rules)
    }

    pub fn start_policy(&self) -> StartPolicy {
        // validate() has already accepted the text; fall back to the safest policy anyway.
        StartPolicy::parse(&self.source.start).unwrap_or(StartPolicy::Current)
    }
}

fn positive(value: usize, key: &str) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

fn validate_url(text: &str, key: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(text).map_err(|e| {
        ConfigError::invalid(key, format!("`{}` is not a URL: {e}", redact_url(text)))
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "scheme `{}` is not supported; use {}://",
                url.scheme(),
                schemes.join(":// or ")
            ),
        ));
    }
    if url.host_str().unwrap_or("").is_empty() {
        return Err(ConfigError::invalid(key, "the URL has no host"));
    }
    Ok(())
}

/// Replaces the password of a URL with `***` so it can be logged or shown in errors.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        // An unparsable URL may still hold a password: show only its scheme.
        Err(_) => match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("mysql://repl:s3cret@db:3306/x"),
            "mysql://repl:***@db:3306/x"
        );
        assert!(!redact_url("mysql://u:s3cret@@::bad").contains("s3cret"));
    }

    #[test]
    fn start_policies_parse() {
        assert_eq!(StartPolicy::parse("current").unwrap(), StartPolicy::Current);
        assert_eq!(
            StartPolicy::parse("earliest").unwrap(),
            StartPolicy::Earliest
        );
        assert_eq!(
            StartPolicy::parse("bin.000042:4").unwrap(),
            StartPolicy::At(Position::new("bin.000042", 4))
        );
        assert!(StartPolicy::parse("latest").is_err());
        assert!(StartPolicy::parse("bin.000042:x").is_err());
    }
}
