//! The sink: applies cache operations and the checkpoint to Redis in one atomic, fenced step
//! (a `MULTI`/`EXEC` transaction watched by a fence script, see `transaction`).
//!
//! The sink remembers the exact checkpoint value it last saw in Redis and every step
//! requires Redis to still hold it. If another instance moved the checkpoint, or an old
//! step of a killed instance lands late, the fence rejects the step and this instance stops:
//! two writers can never interleave.
//!
//! On a Redis Cluster (`redis.cluster`), a step is applied slot by slot and then the
//! checkpoint, at least once (`cluster`).

mod cluster;
mod coalesce;
pub mod conn;
mod error;
mod limits;
mod probe;
mod sentinel;
pub mod slots;
mod stash;
pub mod step;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use redis::aio::{ConnectionLike, ConnectionManager};

use crate::config::{RedisConfig, TlsFiles};
use redis::AsyncCommands;

use crate::checkpoint::Checkpoint;
use crate::mapper::rules::RuleSet;
use crate::mapper::CacheOp;
use tracing::debug;

pub use coalesce::Coalescer;
use conn::{Conn, Scan};
pub use error::SinkError;
pub use limits::{Limits, Oversized};
pub use stash::Stash;
pub use step::{Step, StepLimits};

/// Keys SCAN looks at per call while deleting by pattern: each batch is one step.
const SCAN_COUNT: usize = 1000;

pub struct RedisSink {
    conn: Conn,
    key: String,
    /// Written by the fence script when a step is refused; watched with the checkpoint.
    /// One per connection, under the checkpoint key: a refused step of another (stale)
    /// instance writes its own and cannot abort this one's steps.
    abort_key: String,
    /// The checkpoint value Redis holds, as far as this instance knows: the fence.
    fence: Option<String>,
    /// With `[redis.sentinel]`: the primary this sink writes to.
    primary: Option<sentinel::Primary>,
    /// With `redis.cluster`: this session's epoch and order of steps (`cluster`).
    cluster: Option<cluster::Session>,
    /// What Redis takes from one client (`limits`).
    limits: Limits,
    /// Why `limits` are Redis's defaults, when the server would not give its own.
    limits_unread: Option<String>,
}

/// A Redis client for `[redis]`: the URL (password already merged in), or with
/// `[redis.sentinel]` the primary the Sentinels name now.
pub async fn client(config: &RedisConfig) -> Result<redis::Client, SinkError> {
    Ok(client_and_primary(config).await?.0)
}

async fn client_and_primary(
    config: &RedisConfig,
) -> Result<(redis::Client, Option<sentinel::Primary>), SinkError> {
    match &config.sentinel {
        None => Ok((node_client(&config.url, &config.tls())?, None)),
        Some(sentinel) => {
            let primary = sentinel::primary(config, sentinel).await?;
            let client = node_client(&primary.url, &config.tls())?;
            Ok((client, Some(primary)))
        }
    }
}

/// A client for one node, with the TLS files of `[redis]` (`conn::certificates`).
fn node_client(url: &str, tls: &TlsFiles) -> Result<redis::Client, SinkError> {
    let Some(certificates) = conn::certificates(tls)? else {
        return Ok(redis::Client::open(url)?);
    };
    Ok(redis::Client::build_with_tls(url, certificates)?)
}

/// A connection for the commands (`verify`, `reset`): to the cluster with
/// `redis.cluster`, else to the node of `client`.
pub async fn connection(config: &RedisConfig) -> Result<Conn, SinkError> {
    if config.cluster {
        return Ok(conn::cluster(&config.url, &config.tls()).await?);
    }
    let client = client(config).await?;
    Ok(Conn::Single(ConnectionManager::new(client).await?))
}

impl RedisSink {
    pub async fn connect(
        redis: &RedisConfig,
        checkpoint_key: &str,
    ) -> Result<RedisSink, SinkError> {
        let (conn, primary) = if redis.cluster {
            let conn = conn::cluster_with_retries(&redis.url, &redis.tls(), 0)
                .await
                .map_err(|e| match e.detail() {
                    Some(d) if d.contains("cluster support disabled") => SinkError::NotCluster {
                        detail: e.to_string(),
                    },
                    _ => e.into(),
                })?;
            (conn, None)
        } else {
            let (client, primary) = client_and_primary(redis).await?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
                .set_response_timeout(Some(std::time::Duration::from_secs(30)));
            let manager = ConnectionManager::new_with_config(client, config).await?;
            (Conn::Single(manager), primary)
        };
        let id = crate::checkpoint::random_id();
        let mut sink = RedisSink {
            conn,
            key: checkpoint_key.to_string(),
            abort_key: format!("{checkpoint_key}:fenced:{id:016x}"),
            fence: None,
            primary,
            cluster: None,
            limits: Limits::default(),
            limits_unread: None,
        };
        if redis.cluster {
            let wait = (redis.wait_replicas, redis.wait_timeout_ms);
            let session = cluster::Session::start(&mut sink.conn, checkpoint_key, id, wait).await?;
            sink.cluster = Some(session);
        }
        sink.check_mode().await?;
        sink.check_scripting().await?;
        (sink.limits, sink.limits_unread) = Limits::read(&mut sink.conn).await;
        if let Some(why) = &sink.limits_unread {
            debug!(
                reason = %why,
                "Redis's limits on a client's input not read: assuming its defaults"
            );
        }
        Ok(sink)
    }

    /// With `redis.cluster`: the cluster's slot ranges, their primaries and replicas.
    pub async fn cluster_layout(&mut self) -> Result<Option<Vec<conn::SlotRange>>, SinkError> {
        if !self.conn.is_cluster() {
            return Ok(None);
        }
        Ok(Some(conn::slot_ranges(&mut self.conn).await?))
    }

    /// The checkpoint's Redis key.
    pub fn checkpoint_key(&self) -> &str {
        &self.key
    }

    /// With `[redis.sentinel]`: the URL of the primary this sink writes to.
    pub fn primary_url(&self) -> Option<&str> {
        self.primary.as_ref().map(|p| p.url.as_str())
    }

    /// With `[redis.sentinel]`: resolves once the Sentinels name another primary, when
    /// this sink's session must end (see `sentinel::moved`). Never resolves without.
    pub fn primary_moved(&self, redis: &RedisConfig) -> impl Future<Output = SinkError> + Send {
        let watch = self
            .primary
            .clone()
            .map(|current| sentinel::moved(redis.clone(), current));
        async move {
            match watch {
                Some(watch) => watch.await,
                None => std::future::pending().await,
            }
        }
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
    /// step sent after it is refused by the fence and changes nothing. A step without a
    /// checkpoint moves no fence, so the caller must wait for it before sending another.
    pub fn submit(&mut self, ops: &[CacheOp], checkpoint: Option<&Checkpoint>) -> Submitted {
        let new_value = checkpoint.map(Checkpoint::encode);
        let fence = self.fence.as_deref().unwrap_or("");
        let mut reply: Reply = match &self.cluster {
            Some(session) => Box::pin(
                cluster::ClusterStep {
                    conn: self.conn.clone(),
                    session: session.clone(),
                    checkpoint_key: self.key.clone(),
                    ops: ops.to_vec(),
                    fence: fence.to_string(),
                    new_value: new_value.clone(),
                }
                .run(),
            ),
            None => {
                let keys = transaction::Keys {
                    checkpoint: &self.key,
                    abort: &self.abort_key,
                };
                let step = transaction::build(ops, &keys, fence, new_value.as_deref());
                Box::pin(cluster::run_transaction(
                    self.conn.clone(),
                    step,
                    self.key.clone(),
                ))
            }
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
        Submitted { reply, early }
    }

    /// Deletes every key matching `pattern` (SCAN, then fenced steps of `DEL`s that move
    /// no checkpoint) for which `deletes` holds; never the checkpoint or a key under it.
    /// Returns how many keys it deleted.
    pub async fn delete_matching(
        &mut self,
        pattern: &str,
        deletes: impl Fn(&str) -> bool,
    ) -> Result<u64, SinkError> {
        let mut scan = self.scan().await?;
        let mut deleted = 0;
        while let Some(keys) = self.next_keys(&mut scan, pattern).await? {
            deleted += self.delete(keys.into_iter().filter(|k| deletes(k))).await?;
        }
        Ok(deleted)
    }

    /// A SCAN over every key (on a cluster, over every primary), for [`Self::next_keys`].
    pub async fn scan(&mut self) -> Result<Scan, SinkError> {
        Ok(Scan::start(&mut self.conn).await?)
    }

    /// The next batch of keys matching `pattern` that a rule can have written: not the
    /// checkpoint or a key under it, and UTF-8 (templates render text). `None` at the end.
    pub async fn next_keys(
        &mut self,
        scan: &mut Scan,
        pattern: &str,
    ) -> Result<Option<Vec<String>>, SinkError> {
        let own = format!("{}:", self.key);
        let Some(keys) = scan.next(&mut self.conn, pattern, SCAN_COUNT).await? else {
            return Ok(None);
        };
        Ok(Some(
            keys.into_iter()
                .filter_map(|k| String::from_utf8(k).ok())
                .filter(|k| *k != self.key && !k.starts_with(&own))
                .collect(),
        ))
    }

    /// Each key's time to live in milliseconds (`PTTL`: -1 for none, -2 for no key).
    pub async fn ttls(&mut self, keys: &[String]) -> Result<Vec<i64>, SinkError> {
        let reads = keys.iter().map(redis::Cmd::pttl).collect();
        conn::read_each(&mut self.conn, reads)
            .await?
            .into_iter()
            .map(|reply| Ok(redis::from_redis_value(reply?).map_err(redis::RedisError::from)?))
            .collect()
    }

    /// Deletes `keys` in one fenced step that moves no checkpoint; returns how many.
    pub async fn delete(&mut self, keys: impl Iterator<Item = String>) -> Result<u64, SinkError> {
        let ops: Vec<CacheOp> = keys.map(|key| CacheOp::Del { key }).collect();
        if !ops.is_empty() {
            self.apply(&ops, None).await?;
        }
        Ok(ops.len() as u64)
    }

    /// Refuses a Redis Cluster node unless `redis.cluster` says so: a standalone step's
    /// MULTI/EXEC cannot span hash slots. A user that may not run INFO is not refused here
    /// (a cluster then shows as MOVED or CROSSSLOT errors at the first step). With
    /// `redis.cluster`, a node without cluster support refused the connection already.
    async fn check_mode(&mut self) -> Result<(), SinkError> {
        if self.conn.is_cluster() {
            return Ok(());
        }
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut self.conn)
            .await;
        match info {
            Ok(text) if text.lines().any(|l| l.trim() == "cluster_enabled:1") => {
                Err(SinkError::Cluster)
            }
            _ => Ok(()),
        }
    }

    /// A warning when Redis may evict the checkpoint: an `allkeys-*` maxmemory policy
    /// evicts any key, the checkpoint included, while `volatile-*` ones only evict keys
    /// with a TTL (the checkpoint has none). `None` also when the user may not run INFO.
    pub async fn eviction_warning(&mut self) -> Option<String> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn)
            .await
            .ok()?;
        let policy = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))?
            .trim();
        policy.starts_with("allkeys").then(|| {
            format!(
                "Redis maxmemory-policy is {policy}: under memory pressure it may evict the \
                 checkpoint `{}`. A running daemon then resumes from the last position it \
                 applied, but one starting meanwhile falls back to `source.start`. Use a \
                 volatile-* policy (with `ttl_secs` on the rules) or noeviction",
                self.key
            )
        })
    }

    /// Finds, before the first step, a rule key or command the Redis user may not write
    /// (`probe`): nothing is written.
    pub async fn probe_writes(&mut self, rules: &RuleSet) -> Result<(), SinkError> {
        // A cluster runs a MULTI on one slot: one probe per rule (its sample key's).
        let sets: Vec<RuleSet> = if self.conn.is_cluster() {
            let one = |r: &crate::mapper::rules::Rule| RuleSet {
                rules: vec![r.clone()],
            };
            rules.rules.iter().map(one).collect()
        } else {
            vec![rules.clone()]
        };
        for set in &sets {
            let (pipe, replies) = probe::build(set);
            let replies = self.conn.req_packed_commands(&pipe, 0, replies).await?;
            probe::verdict(set, &replies)?;
        }
        Ok(())
    }

    /// Runs an empty step once (`WATCH`, the fence script, `MULTI`, `EXEC`) on this
    /// connection's abort key alone, so that a Redis user without the commands or keys a
    /// step needs is refused at start-up, before any step (fail closed: a transaction
    /// whose fence is refused must never be the first news of it).
    async fn check_scripting(&mut self) -> Result<(), SinkError> {
        let key = &self.abort_key;
        // One request: on a cluster it goes whole to the node of the key's slot.
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(key);
        pipe.cmd("EVAL")
            .arg(transaction::FENCE_SCRIPT)
            .arg(2)
            .arg(key)
            .arg(key)
            .arg("");
        pipe.cmd("MULTI");
        pipe.cmd("EXEC");
        let result: redis::RedisResult<Vec<redis::Value>> =
            pipe.query_async(&mut self.conn.clone()).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if transaction::is_no_perm(&e) => Err(SinkError::Permission {
                key: self.key.clone(),
                detail: e.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

type Reply = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// A step on its way: `finish` waits for Redis's verdict.
pub struct Submitted {
    reply: Reply,
    early: Option<Result<(), SinkError>>,
}

impl Submitted {
    pub async fn finish(mut self) -> Result<(), SinkError> {
        self.landed().await
    }

    /// Waits for Redis's verdict without giving up the step: if this future is dropped
    /// before the reply, the request stays queued and can be waited for again. Once it
    /// has returned, the step must not be waited for again.
    pub async fn landed(&mut self) -> Result<(), SinkError> {
        match self.early.take() {
            Some(result) => result,
            None => (&mut self.reply).await,
        }
    }
}
