//! A step on a Redis Cluster (`redis.cluster = true`).
//!
//! A `MULTI`/`EXEC` runs on one node and all its keys must share a hash slot, so a step is
//! cut into one transaction per slot its operations touch. Once every slot's transaction
//! has landed, the checkpoint moves, by a transaction of its own fenced like a standalone
//! step (see `transaction`).
//!
//! Each session has an epoch, the time it connected in microseconds, and each slot's
//! transaction writes it to a fence key of that slot (`<checkpoint>:slot:{tag}`) behind a
//! script that refuses it when the key holds a later epoch (`slot_fence.lua`). So once a
//! session has written a slot, no earlier session can: not an instance that was
//! replaced and still runs, nor a step of a killed one that lands late. An earlier
//! session can only write slots the later one has not written yet, and the later one
//! replays from the checkpoint, which such a step has not moved, through every
//! transaction that step carried: its writes are overwritten, and the earlier session
//! stops at its checkpoint's fence. Instances' clocks must agree better than the time
//! between one's stop and the next one's start.
//!
//! What this gives (DESIGN: at-least-once on a cluster):
//! - per slot, the writes land in commit order and each transaction's writes to the slot
//!   together; two transactions' writes to different slots may be seen apart;
//! - a crash between the slots' transactions and the checkpoint's resumes before the step
//!   and writes it again: every operation writes a row image (or deletes), so the second
//!   time leaves the same values, and the keys reach their latest value once the replay
//!   has passed them (a reader may see an older value for that long).

use std::sync::Arc;

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::Pipeline;

use super::conn::Conn;
use super::slots::{self, by_slot};
use super::transaction::{self, Keys};
use super::SinkError;
use crate::mapper::CacheOp;

/// A session on a cluster.
#[derive(Clone)]
pub struct Session {
    /// Steps run one after the other, in the order they were submitted: the lock is
    /// fair, and each step queues for it when submitted.
    order: Arc<tokio::sync::Mutex<()>>,
    /// This connection's id in its abort keys.
    abort_id: u64,
    epoch: u64,
}

impl Session {
    pub fn new(abort_id: u64) -> Session {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Session {
            order: Arc::default(),
            abort_id,
            epoch,
        }
    }
}

/// The fence key of `slot`.
pub fn slot_key(checkpoint_key: &str, slot: u16) -> String {
    format!("{checkpoint_key}:slot:{{{}}}", slots::tag(slot))
}

/// The abort key of this connection in `slot` (see `transaction`).
fn abort_key(checkpoint_key: &str, slot: u16, id: u64) -> String {
    format!("{checkpoint_key}:fenced:{{{}}}:{id:016x}", slots::tag(slot))
}

/// Everything a step needs, owned: it runs after `submit` has returned.
pub struct ClusterStep {
    pub conn: Conn,
    pub session: Session,
    pub checkpoint_key: String,
    pub ops: Vec<CacheOp>,
    /// The checkpoint value the step expects ('' for none).
    pub fence: String,
    pub new_value: Option<String>,
}

impl ClusterStep {
    pub async fn run(self) -> Result<(), SinkError> {
        let _turn = self.session.order.clone().lock_owned().await;
        let epoch = self.session.epoch.to_string();
        let sends = by_slot(&self.ops).into_iter().map(|(slot, ops)| {
            let key = slot_key(&self.checkpoint_key, slot);
            let abort = abort_key(&self.checkpoint_key, slot, self.session.abort_id);
            let keys = Keys {
                checkpoint: &key,
                abort: &abort,
            };
            let script = transaction::SLOT_FENCE_SCRIPT;
            let step = transaction::build_with(&ops, &keys, script, &epoch, Some(&epoch));
            run_transaction(self.conn.clone(), step, key)
        });
        try_join_all(sends).await?;
        let Some(value) = &self.new_value else {
            return Ok(());
        };
        let key = &self.checkpoint_key;
        let abort = abort_key(key, slots::slot_of(key), self.session.abort_id);
        let keys = Keys {
            checkpoint: key,
            abort: &abort,
        };
        let step = transaction::build(&[], &keys, &self.fence, Some(value));
        run_transaction(self.conn.clone(), step, key.clone()).await
    }
}

/// Sends one fenced transaction (built by `transaction::build` for `key`) and reads its
/// verdict. A `WATCH` that saw the fence key written tells, by who wrote it, a late step
/// of this process (retry) from another writer (stop).
pub async fn run_transaction(
    mut conn: impl ConnectionLike,
    step: Pipeline,
    key: String,
) -> Result<(), SinkError> {
    // Every reply but WATCH's: the fence's, MULTI's, the queued ones, EXEC's.
    let replies = conn.req_packed_commands(&step, 1, step.len() - 1).await?;
    match transaction::verdict(replies, &key, &step) {
        Err(SinkError::Fenced { detail, .. }) if detail == transaction::WATCHED => {
            let found: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let details = format!("{detail}; found: {}", found.unwrap_or_default());
            Err(transaction::fence_refusal(&details, &key))
        }
        verdict => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slots_fence_and_abort_keys_are_in_that_slot_under_the_checkpoint_key() {
        for slot in [0, 866, 16383] {
            let fence = slot_key("cdc-cache:checkpoint:x", slot);
            let abort = abort_key("cdc-cache:checkpoint:x", slot, 7);
            assert!(fence.starts_with("cdc-cache:checkpoint:x:slot:{"));
            assert!(abort.starts_with("cdc-cache:checkpoint:x:fenced:{"));
            assert_eq!(
                (slots::slot_of(&fence), slots::slot_of(&abort)),
                (slot, slot)
            );
        }
    }
}
