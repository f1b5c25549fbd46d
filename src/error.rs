//! The library's top-level error, and how it maps to exit codes.

use crate::config::ConfigError;
use crate::mapper::MapError;
use crate::sink::SinkError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}; replication stopped before this change, the checkpoint was not moved")]
    Map(#[from] MapError),
    #[error("checkpoint file {path}: {message}")]
    CheckpointFile { path: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("metrics.listen = {addr:?}: cannot listen: {message}; choose a free address")]
    Listen { addr: String, message: String },
}

impl Error {
    /// True when retrying from the checkpoint cannot help.
    pub fn is_definite(&self) -> bool {
        match self {
            Error::Source(e) => e.is_definite(),
            Error::Sink(e) => e.is_definite(),
            _ => true,
        }
    }

    /// True when a server refused this process's credentials (MySQL's access denied,
    /// Redis's WRONGPASS or NOAUTH).
    pub fn is_auth_refusal(&self) -> bool {
        match self {
            Error::Source(SourceError::Mysql(mysql_async::Error::Server(e))) => {
                matches!(e.code, 1045 | 1698)
            }
            Error::Sink(SinkError::Redis(e)) => {
                e.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
            }
            _ => false,
        }
    }

    /// The pipeline stage an error belongs to (the `stage` label of `cdc_cache_errors_total`).
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Source(e) => e.stage(),
            Error::Sink(_) => "sink",
            Error::Map(_) => "map",
            Error::CheckpointFile { .. } => "checkpoint",
            Error::Config(_) | Error::Usage(_) | Error::Listen { .. } => "config",
        }
    }

    /// DESIGN.md: 1 runtime failure, 2 bad configuration or usage, 3 definite replication
    /// error (fail-closed stop).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            // The Redis user is not allowed what the configuration needs, or the Redis
            // is a cluster node, or no Sentinel knows the configured primary.
            Error::Sink(
                SinkError::Permission { .. }
                | SinkError::WriteNotAllowed { .. }
                | SinkError::Cluster
                | SinkError::NotCluster { .. }
                | SinkError::UnknownMaster { .. }
                | SinkError::SentinelRefused { .. },
            ) => 2,
            Error::Source(SourceError::RulesAtStartup(_)) => 2,
            Error::Map(_) => 3,
            Error::Source(SourceError::Setting(_)) => 3,
            Error::Source(e) if e.is_definite() => 3,
            Error::Sink(
                SinkError::Fenced { .. }
                | SinkError::Checkpoint { .. }
                | SinkError::UnknownXa { .. }
                | SinkError::BadStash { .. }
                | SinkError::WriteRefused { .. }
                | SinkError::ValueTooLarge { .. },
            ) => 3,
            _ => 1,
        }
    }
}
