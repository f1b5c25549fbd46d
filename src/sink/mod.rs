//! The sink: applies cache operations and the checkpoint to Redis in one atomic, fenced step
//! (a Lua script, see `apply.lua`; a step of deletions only is a MULTI/EXEC transaction of
//! that script and one DEL, see `RedisSink::deletes`).
//!
//! The sink remembers the exact checkpoint value it last saw in Redis and every step
//! requires Redis to still hold it. If another instance moved the checkpoint, or an old
//! step of a killed instance lands late, the fence rejects the step and this instance stops:
//! two writers can never interleave.

pub mod step;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use redis::aio::{ConnectionLike, ConnectionManager};

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
                        Some(
                            "LOADING" | "BUSY" | "TRYAGAIN" | "READONLY" | "OOM" | "MASTERDOWN"
                                // The script cache was flushed: a new session loads it again.
                                | "NOSCRIPT"
                        )
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
        let mut sink = RedisSink {
            conn,
            script: Script::new(APPLY_SCRIPT),
            key: checkpoint_key.to_string(),
            fence: None,
        };
        sink.load_script().await?;
        Ok(sink)
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
        self.submit(ops, checkpoint).finish().await
    }

    /// Sends a step without waiting for its reply, so the next one can be prepared while
    /// Redis runs this one. Steps reach Redis in submission order (one connection), and
    /// each is fenced on the checkpoint the one before it writes: if a step fails, every
    /// step sent after it is refused by the fence and changes nothing.
    pub fn submit(&mut self, ops: &[CacheOp], checkpoint: Option<&Checkpoint>) -> Submitted {
        let new_value = checkpoint.map(Checkpoint::encode);
        let mut conn = self.conn.clone();
        let mut reply: Reply = if only_deletes(ops) {
            let transaction = self.deletes(ops, new_value.as_deref());
            // Skip MULTI's and the queued commands' acknowledgements; keep EXEC's reply.
            let skip = transaction.len() + 1;
            Box::pin(async move {
                let mut replies = conn.req_packed_commands(&transaction, skip, 1).await?;
                Ok(replies.pop().unwrap_or(redis::Value::Nil))
            })
        } else {
            let cmd = self.command(ops, new_value.as_deref());
            Box::pin(async move { conn.req_packed_command(&cmd).await })
        };
        // One poll queues the request on the connection now, before any later step's.
        let waker = futures_util::task::noop_waker();
        let early = match reply.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        };
        if let Some(v) = new_value {
            self.fence = Some(v);
        }
        Submitted {
            reply,
            early,
            key: self.key.clone(),
        }
    }

    /// `EVALSHA apply.lua` with every key, then the fence, the new checkpoint and the
    /// operations: built in one buffer, each value copied once.
    fn command(&self, ops: &[CacheOp], new_value: Option<&str>) -> redis::Cmd {
        let fence = self.fence.as_deref().unwrap_or("");
        let mut cmd = sized_command(ops, fence.len() + new_value.map_or(0, str::len));
        cmd.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(ops.len() + 1)
            .arg(&self.key);
        for op in ops {
            cmd.arg(op.key());
        }
        cmd.arg(fence).arg(new_value.unwrap_or(""));
        let mut rest = ops;
        while let Some(first) = rest.first() {
            let run = run_length(rest);
            match first {
                CacheOp::Set { ttl_ms: 0, .. } if run > 1 => {
                    cmd.arg("M").arg(run);
                    for op in &rest[..run] {
                        if let CacheOp::Set { key, value, .. } = op {
                            cmd.arg(key).arg(value);
                        }
                    }
                }
                CacheOp::Del { .. } if run > 1 => {
                    cmd.arg("X").arg(run);
                }
                op => push_single(&mut cmd, op),
            }
            rest = &rest[run.max(1)..];
        }
        cmd
    }

    /// A step of deletions only: `MULTI`, the script with no operations (the fence and
    /// the checkpoint), one `DEL` of every key, `EXEC`. Atomic like the script alone, and
    /// Redis spends a third of the CPU per key: each key passed through Lua becomes a Lua
    /// string and then a Redis argument again (0.19 against 0.075 µs per key, measured
    /// with 1,000-key steps). A transaction cannot skip its `DEL` when the fence refuses
    /// the step, but deleting a cache entry never makes the cache stale (the next read
    /// fills it from the database), and the refusal still stops this instance before the
    /// checkpoint moves.
    fn deletes(&self, ops: &[CacheOp], new_value: Option<&str>) -> redis::Pipeline {
        let fence = self.fence.as_deref().unwrap_or("");
        let mut fenced = redis::Cmd::new();
        fenced
            .arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(1)
            .arg(&self.key)
            .arg(fence)
            .arg(new_value.unwrap_or(""));
        let key_bytes: usize = ops.iter().map(|op| op.key().len()).sum();
        let mut del = redis::Cmd::with_capacity(ops.len() + 1, key_bytes + 8);
        del.arg("DEL");
        for op in ops {
            del.arg(op.key());
        }
        let mut transaction = redis::pipe();
        transaction.atomic().add_command(fenced).add_command(del);
        transaction
    }

    /// Loads the step script into Redis's script cache, for EVALSHA.
    pub async fn load_script(&mut self) -> Result<(), SinkError> {
        self.script.load_async(&mut self.conn).await?;
        Ok(())
    }
}

/// True for a step that only deletes (and may move the checkpoint): it can go as a
/// transaction with one native `DEL` instead of through the script.
fn only_deletes(ops: &[CacheOp]) -> bool {
    !ops.is_empty() && ops.iter().all(|op| matches!(op, CacheOp::Del { .. }))
}

/// The longest group Lua unpacks at once: its C stack holds 8,000 values (a pair each).
const MAX_RUN: usize = 1000;

/// How many operations from the start of `ops` one grouped command can carry: a run of
/// SETs without TTL (MSET) or of DELs; 1 for anything else.
/// An empty command with room for a step's arguments, so that its buffer is not grown
/// (and copied) a dozen times on the way to a few hundred kilobytes. Keys may appear
/// twice (KEYS, and again in an MSET run); the rest is a generous allowance for the
/// script hash, the counts and the operation codes.
fn sized_command(ops: &[CacheOp], checkpoints: usize) -> redis::Cmd {
    let data: usize = ops
        .iter()
        .map(|op| {
            2 * op.key().len()
                + match op {
                    CacheOp::Set { value, .. } => value.len() + 24,
                    CacheOp::Hash { fields, .. } => {
                        fields.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>() + 48
                    }
                    CacheOp::Del { .. } => 2,
                }
        })
        .sum();
    redis::Cmd::with_capacity(3 * ops.len() + 8, data + checkpoints + 128)
}

fn run_length(ops: &[CacheOp]) -> usize {
    let groupable = |op: &CacheOp| {
        matches!(
            (&ops[0], op),
            (
                CacheOp::Set { ttl_ms: 0, .. },
                CacheOp::Set { ttl_ms: 0, .. }
            ) | (CacheOp::Del { .. }, CacheOp::Del { .. })
        )
    };
    ops.iter()
        .take(MAX_RUN)
        .take_while(|op| groupable(op))
        .count()
        .max(1)
}

/// One operation on its own ('S', 'H' or 'D').
fn push_single(cmd: &mut redis::Cmd, op: &CacheOp) {
    match op {
        CacheOp::Set { value, ttl_ms, .. } => {
            cmd.arg("S").arg(value).arg(ttl_ms);
        }
        CacheOp::Hash { fields, ttl_ms, .. } => {
            cmd.arg("H").arg(fields.len());
            for (f, v) in fields {
                cmd.arg(f).arg(v);
            }
            cmd.arg(ttl_ms);
        }
        CacheOp::Del { .. } => {
            cmd.arg("D");
        }
    }
}

/// A transaction refused before it ran (EXECABORT) carries the error of the command that
/// could not be queued: that one (OOM, LOADING, ...) says whether a retry can help.
fn queued_error(e: redis::RedisError) -> redis::RedisError {
    if e.code() != Some("EXECABORT") {
        return e;
    }
    let first = e
        .clone()
        .into_server_errors()
        .and_then(|errors| errors.first().map(|(_, error)| error.clone()));
    first.map_or(e, redis::RedisError::from)
}

type Reply = Pin<Box<dyn Future<Output = redis::RedisResult<redis::Value>> + Send>>;

/// A step on its way: `finish` waits for Redis's verdict.
pub struct Submitted {
    reply: Reply,
    early: Option<redis::RedisResult<redis::Value>>,
    key: String,
}

impl Submitted {
    pub async fn finish(mut self) -> Result<(), SinkError> {
        self.landed().await
    }

    /// Waits for Redis's verdict without giving up the step: if this future is dropped
    /// before the reply, the request stays queued and can be waited for again. Once it
    /// has returned, the step must not be waited for again.
    pub async fn landed(&mut self) -> Result<(), SinkError> {
        let result = match self.early.take() {
            Some(result) => result,
            None => (&mut self.reply).await,
        };
        // An error reply (the fence, a Lua error) arrives as a value, inside EXEC's reply
        // for a transaction: make it an error.
        let result = result
            .map_err(queued_error)
            .and_then(redis::Value::extract_error);
        match result {
            Ok(_) => Ok(()),
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
