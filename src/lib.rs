//! # cdc-cache
//!
//! Keeps Redis caches exactly consistent with MySQL / MariaDB by tailing the binlog: for
//! every committed row change it applies the matching cache write or delete, and it records
//! the binlog position it has applied in the same atomic Redis step.
//!
//! ## The contract
//!
//! 1. **Commit order**: transactions reach Redis in binlog commit order; only committed
//!    transactions are applied. A statement that empties a covered table without logging
//!    its rows (TRUNCATE, DROP TABLE, a RENAME swap, …; `source::ddl`) deletes the keys
//!    its rules' templates match, between the transactions before and after it
//!    (`mapper::clear`, `RedisSink::delete_matching`), except the keys the column types
//!    say no rule made (`mapper::shapes`).
//! 2. **No partial transaction**: a transaction's operations and the checkpoint past it are
//!    one atomic, fenced step (a watched MULTI/EXEC). Transactions larger than
//!    `sink.max_ops_per_step` operations or `sink.max_bytes_per_step` bytes are split and
//!    only the last step moves the checkpoint (logged, and counted in
//!    `transactions_split_total`).
//! 3. **Exactly-once effect on one Redis**: the checkpoint moves with the writes, and every
//!    step is fenced on the checkpoint it started from, so a crash at any instant resumes at
//!    the next transaction and a stale step of a dead instance can never land. Steps are
//!    pipelined (the next sent before the last reply) on one connection: each is fenced on
//!    its predecessor's checkpoint, so nothing after a failed step lands.
//! 4. **Fail closed**: anything that cannot be applied correctly stops the daemon with an
//!    error naming the position and table (exit code 3); transient failures are retried
//!    from the checkpoint with capped backoff and never move it.
//! 5. **Bounded memory**: row changes travel in chunks of `source.chunk_rows` rows or
//!    `source.chunk_bytes` bytes through a channel of `source.channel_capacity`; steps hold
//!    at most `sink.max_ops_per_step` operations or `sink.max_bytes_per_step` bytes (kept
//!    under half of Redis's `client-query-buffer-limit`, `sink::Limits`) and one more
//!    row's.
//!
//! ## Layout
//!
//! ```text
//! source/      binlog connection, event assembly, row decoding, schema, GTIDs, tables
//!              emptied or swapped by a statement, unlogged cascades        → SourceItem
//! mapper/      rules, per-table plans, key templates, value encoding, the keys an
//!              emptied table clears, key shapes from column types (pure)    → CacheOp
//! applier/     groups mapped transactions into steps; prepared XA transactions' stashes
//! xa           XA transaction ids, and the stash format (a prepared transaction's
//!              operations wait in Redis for its XA COMMIT)
//! sink/        the atomic fenced Redis step and its checkpoint; what Redis takes from one
//!              client (limits); on a Redis Cluster, slot by slot under session epochs
//!              (cluster, slots, conn)
//! chunk        a transaction's row changes, stored flat, as the source hands them over
//! spare        chunks and key/value strings recycled between rows (no per-row allocation)
//! page_size    pages of reads sized by the bytes they return (load, verify, XA stashes)
//! pipeline     wiring: tasks, bounded channel, retry, shutdown
//! resume       where a session starts: GTIDs, file position or start policy
//! failover     which source server: source.url, then source.failover_urls in turn
//! metrics/     every metric, the lag/readiness state, /metrics /healthz /readyz
//! monitor      polls the server's head and retention and pings Redis for the metrics
//! consistency  re-checks a sample of applied keys against the database after a delay
//! dbread/      rows read back over SQL and rendered as the daemon would (verify, sampling)
//! commands/    check, status, replay, reset, verify
//! lease        lease-protected read-through fills for applications (scripts/lease_*.lua)
//! config/      configuration types, loading, validation, secrets from files
//! ```

pub mod applier;
pub mod checkpoint;
pub mod chunk;
pub mod commands;
pub mod config;
pub mod consistency;
pub mod dbread;
pub mod error;
pub mod failover;
pub mod lease;
pub mod mapper;
pub mod metrics;
pub mod monitor;
pub mod page_size;
pub mod pipeline;
pub mod resume;
pub mod sink;
pub mod source;
pub mod spare;
pub mod value;
pub mod xa;

pub use error::Error;
