//! Every way a Redis step can fail, and whether retrying can help.

use crate::checkpoint::CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "fenced: the checkpoint at Redis key `{key}` was changed by someone else ({detail}); \
         another cdc-cache instance is probably running with the same [checkpoint] key"
    )]
    Fenced { key: String, detail: String },
    #[error(
        "a step this instance had given up on (no reply in time) ran late and moved the \
         checkpoint at Redis key `{key}` to {position}; resuming from there"
    )]
    OwnStepLanded { key: String, position: String },
    #[error(
        "redis.url points at a Redis Cluster node: set redis.cluster = true, so that steps \
         are applied slot by slot (at-least-once on a cluster, see the README), or use a \
         standalone Redis, or a Sentinel-managed one through [redis.sentinel]"
    )]
    Cluster,
    #[error(
        "redis.cluster = true but redis.url is not a Redis Cluster node ({detail}); set \
         redis.cluster = false for a standalone Redis"
    )]
    NotCluster { detail: String },
    #[error(
        "Redis Sentinel: no primary for `{master}` now ({detail}); retrying: the Sentinels \
         of redis.sentinel.nodes must be reachable and agree on a primary"
    )]
    NoPrimary {
        master: String,
        /// A Sentinel answered, naming a node that is not a working primary: a failover
        /// under way, soon over (not Sentinels out of reach).
        failover: bool,
        detail: String,
    },
    #[error(
        "Redis Sentinel: no Sentinel of redis.sentinel.nodes monitors a primary named \
         `{master}` ({detail}); set redis.sentinel.master_name to the name of the Sentinels' \
         `sentinel monitor <name> …` line"
    )]
    UnknownMaster { master: String, detail: String },
    #[error(
        "Redis Sentinel: no Sentinel of redis.sentinel.nodes could be asked ({detail}); \
         check that the nodes are Sentinels (port 26379 by default) and their user and \
         password (in the node URLs or redis.sentinel.password_file)"
    )]
    SentinelRefused { detail: String },
    #[error(
        "Redis Sentinel moved the primary of `{master}` from {from} to {to}; reconnecting \
         to the new primary and resuming from the checkpoint there"
    )]
    PrimaryMoved {
        master: String,
        from: String,
        to: String,
    },
    #[error(
        "the checkpoint at Redis key `{key}` vanished while running (FLUSHALL, DEL, or \
         evicted under an allkeys maxmemory policy); resuming from the last position this \
         process applied"
    )]
    CheckpointGone { key: String },
    #[error(
        "the Redis user cannot run a fenced step on checkpoint key `{key}` ({detail}): \
         allow it the checkpoint key and the keys under it (ACL `~{key} ~{key}:*`), \
         scripts and transactions (`+@scripting +@transaction`)"
    )]
    Permission { key: String, detail: String },
    #[error(
        "Redis refused a cache write, {command} ({detail}); nothing of this step was applied \
         and the checkpoint stays before it: allow the Redis user every rule's key (ACL \
         `~<prefix>*` for the fixed start of each rule's `key`) and the write commands \
         (`+@write`), then restart"
    )]
    WriteRefused { command: String, detail: String },
    #[error(
        "the write of Redis key `{key}` takes {bytes} bytes, more than the {limit} Redis \
         takes from one client (its {setting}), in {at}: raise that setting on the Redis \
         server, or leave the long column out of the rule (`columns`), then start again"
    )]
    ValueTooLarge {
        key: String,
        bytes: usize,
        limit: usize,
        /// The Redis setting that sets `limit`, and its value (`sink::Oversized`).
        setting: String,
        /// Where, and what was not applied: "the step ending at binlog position …, of which
        /// nothing was applied …", "a page of table …".
        at: String,
    },
    #[error(
        "the Redis user may not run {command} on `{key}`, a key of rules[{rule}] ({detail}): \
         allow it the rule's keys (ACL `~<prefix>*` for the fixed start of the rule's `key`) \
         and the commands a step sends (`+@write`, and `+scan` to find a table's keys after a \
         TRUNCATE), then restart"
    )]
    WriteNotAllowed {
        rule: usize,
        key: String,
        command: &'static str,
        detail: String,
    },
    #[error(
        "XA COMMIT of {xid} at binlog position {position}: Redis has no stash of its \
         prepared changes (`{key}`), so what it commits is unknown: the daemon started after \
         its XA PREPARE (a new checkpoint at source.start, or `reset`), or the stash was \
         deleted. Cached keys of its rows may be stale; run `cdc-cache reset --yes` to \
         delete the rules' keys and start at the server's head, or `cdc-cache load --yes` \
         to also write the upsert rules' values again"
    )]
    UnknownXa {
        xid: String,
        key: String,
        position: String,
    },
    #[error(
        "the XA stash `{key}` is not one this version wrote ({detail}); another program \
         wrote under the checkpoint key: give it another [checkpoint] key, then run \
         `cdc-cache reset --yes`"
    )]
    BadStash { key: String, detail: String },
    #[error(
        "the checkpoint at Redis key `{key}` is one `cdc-cache load` is filling the cache \
         for ({by}): waiting for the load to finish; if it was stopped, run \
         `cdc-cache load --yes` again (or `cdc-cache reset --yes`)"
    )]
    Loading { key: String, by: String },
    #[error(
        "Redis Cluster node {node}: {acked} of the {wanted} replicas (redis.wait_replicas) \
         confirmed a step's writes within {timeout_ms} ms; the checkpoint stays before it \
         and the step is retried: check the node's replicas (`INFO replication`)"
    )]
    ReplicasBehind {
        node: String,
        acked: i64,
        wanted: u32,
        timeout_ms: u64,
    },
    #[error("Redis key `{key}`: {source}")]
    Checkpoint {
        key: String,
        source: CheckpointError,
    },
}

impl SinkError {
    /// An operation over a limit of Redis (`Limits::oversized`), in the step `at`.
    pub fn too_large(over: super::Oversized, at: String) -> SinkError {
        SinkError::ValueTooLarge {
            key: over.key,
            bytes: over.bytes,
            limit: over.limit,
            setting: over.setting,
            at,
        }
    }

    /// True when retrying cannot help.
    pub fn is_definite(&self) -> bool {
        match self {
            // The retry starts from the checkpoint that late step wrote.
            SinkError::OwnStepLanded { .. } => false,
            // The retry finds no checkpoint and resumes from the last applied position.
            SinkError::CheckpointGone { .. } => false,
            // A failover under way, or Sentinels not reachable: like a Redis that is down.
            SinkError::NoPrimary { .. } | SinkError::PrimaryMoved { .. } => false,
            // The load ends by writing its final checkpoint: the retry resumes from it.
            SinkError::Loading { .. } => false,
            // A replica slow or reconnecting: the retry waits again.
            SinkError::ReplicasBehind { .. } => false,
            SinkError::Redis(e) => {
                !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.code(),
                        Some(
                            "LOADING"
                                | "BUSY"
                                | "TRYAGAIN"
                                | "READONLY"
                                | "OOM"
                                | "MASTERDOWN"
                                | "MOVED"
                                | "ASK"
                                | "CLUSTERDOWN"
                        )
                    ))
            }
            SinkError::Fenced { .. }
            | SinkError::Cluster
            | SinkError::NotCluster { .. }
            | SinkError::UnknownMaster { .. }
            | SinkError::SentinelRefused { .. }
            | SinkError::WriteRefused { .. }
            | SinkError::ValueTooLarge { .. }
            | SinkError::WriteNotAllowed { .. }
            | SinkError::Checkpoint { .. }
            | SinkError::UnknownXa { .. }
            | SinkError::BadStash { .. }
            | SinkError::Permission { .. } => true,
        }
    }
}
