//! The sink: applies cache operations and the checkpoint to Redis in one atomic, fenced step
//! (a Lua script, see `apply.lua`).
//!
//! The sink remembers the exact checkpoint value it last saw in Redis and every step
//! requires Redis to still hold it. If another instance moved the checkpoint, or an old
//! step of a killed instance lands late, the fence rejects the step and this instance stops:
//! two writers can never interleave.

pub mod step;

use redis::aio::ConnectionManager;

use crate::config::RedisConfig;
use redis::{AsyncCommands, Script};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::mapper::CacheOp;

pub use step::Step;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "fenced: the checkpoint at Redis key `{key}` was changed by someone else ({detail}); \
         another cdc-cache instance is probably running with the same [checkpoint] key"
    )]
    Fenced { key: String, detail: String },
    #[error("Redis key `{key}`: {source}")]
    Checkpoint {
        key: String,
        source: CheckpointError,
    },
}

impl SinkError {
    /// True when retrying cannot help.
    pub fn is_definite(&self) -> bool {
        match self {
            SinkError::Redis(e) => {
                !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.code(),
                        Some("LOADING" | "BUSY" | "TRYAGAIN" | "READONLY" | "OOM" | "MASTERDOWN")
                    ))
            }
            SinkError::Fenced { .. } | SinkError::Checkpoint { .. } => true,
        }
    }
}

const APPLY_SCRIPT: &str = include_str!("apply.lua");

pub struct RedisSink {
    conn: ConnectionManager,
    script: Script,
    key: String,
    /// The checkpoint value Redis holds, as far as this instance knows: the fence.
    fence: Option<String>,
}

/// A Redis client for `[redis]`: the URL (password already merged in), with the CA of
/// `tls_ca_file` as the only root for a `rediss://` server when it is set.
pub fn client(config: &RedisConfig) -> Result<redis::Client, SinkError> {
    let Some(ca) = &config.tls_ca_file else {
        return Ok(redis::Client::open(config.url.as_str())?);
    };
    let root_cert = std::fs::read(ca).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis.tls_ca_file cannot be read",
            format!("{}: {e}", ca.display()),
        ))
    })?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    Ok(redis::Client::build_with_tls(
        config.url.as_str(),
        certificates,
    )?)
}

impl RedisSink {
    pub async fn connect(
        redis: &RedisConfig,
        checkpoint_key: &str,
    ) -> Result<RedisSink, SinkError> {
        let client = client(redis)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(30)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisSink {
            conn,
            script: Script::new(APPLY_SCRIPT),
            key: checkpoint_key.to_string(),
            fence: None,
        })
    }

    /// Reads the checkpoint and takes it as the fence for the next step.
    pub async fn load_checkpoint(&mut self) -> Result<Option<Checkpoint>, SinkError> {
        let raw: Option<String> = self.conn.get(&self.key).await?;
        let decoded = raw
            .as_deref()
            .map(Checkpoint::decode)
            .transpose()
            .map_err(|source| SinkError::Checkpoint {
                key: self.key.clone(),
                source,
            })?;
        self.fence = raw;
        Ok(decoded)
    }

    /// Applies `ops` and, when given, moves the checkpoint, all in one atomic step.
    pub async fn apply(
        &mut self,
        ops: &[CacheOp],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), SinkError> {
        let new_value = checkpoint.map(Checkpoint::encode);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(self.fence.as_deref().unwrap_or(""))
            .arg(new_value.as_deref().unwrap_or(""));
        for op in ops {
            invocation.key(op.key());
            match op {
                CacheOp::Set { value, ttl_ms, .. } => {
                    invocation.arg("S").arg(value).arg(ttl_ms);
                }
                CacheOp::Hash { fields, ttl_ms, .. } => {
                    invocation.arg("H").arg(fields.len());
                    for (f, v) in fields {
                        invocation.arg(f).arg(v);
                    }
                    invocation.arg(ttl_ms);
                }
                CacheOp::Del { .. } => {
                    invocation.arg("D");
                }
            }
        }
        let result: Result<i64, redis::RedisError> = invocation.invoke_async(&mut self.conn).await;
        match result {
            Ok(_) => {
                if let Some(v) = new_value {
                    self.fence = Some(v);
                }
                Ok(())
            }
            Err(e) if e.code() == Some("FENCED") || e.to_string().contains("FENCED") => {
                Err(SinkError::Fenced {
                    key: self.key.clone(),
                    detail: e.detail().unwrap_or("").to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
