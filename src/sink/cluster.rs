//! A step on a Redis Cluster (`redis.cluster = true`).
//!
//! A `MULTI`/`EXEC` or a script runs on one node, and all its keys must share a hash
//! slot, so a step is cut into one part per slot its operations touch. Each part is one
//! script (`slot_step.lua`, atomic in Redis), and the parts of a node go to it in one
//! pipeline. Once every part has landed, the checkpoint moves by a transaction of its own,
//! fenced like a standalone step (see `transaction`).
//!
//! Each session has an epoch, which each part writes to a fence key of its slot
//! (`<checkpoint>:slot:{tag}`); a part finding a later epoch there writes nothing and
//! fails the step. So once a session has written a slot,
//! no earlier session can: not an instance that was replaced and still runs, nor a step
//! of a killed one that lands late. An earlier session can only write slots the later one
//! has not written yet; the later one replays from the checkpoint, which such a step has
//! not moved, through every transaction that step carried, so its writes are overwritten,
//! and the earlier session stops at its checkpoint's fence.
//!
//! The epoch is handed out by `epoch.lua` on one key (`<checkpoint>:epoch`): the time the
//! session connected in microseconds, or one more than the last epoch when that is later,
//! so every session's is above all before it whatever the instances' clocks say. (Epochs
//! stay times, as they were before that key existed, so fence keys written then keep
//! their meaning.)
//!
//! What this gives (DESIGN: at-least-once on a cluster):
//! - per slot, the writes land in commit order and each transaction's writes to the slot
//!   together; two transactions' writes to different slots may be seen apart;
//! - a crash between the parts and the checkpoint resumes before the step and writes it
//!   again: every operation writes a row image (or deletes), so the second time leaves
//!   the same values, and the keys reach their latest value once the replay has passed
//!   them (a reader may see an older value for that long).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_routing::RoutingInfo;
use redis::{Pipeline, Value};

use super::conn::{self, Conn, SlotRange};
use super::slots::{self, by_slot};
use super::transaction::{self, Keys};
use super::SinkError;
use crate::mapper::CacheOp;

const SLOT_STEP: &str = include_str!("slot_step.lua");
const EPOCH: &str = include_str!("epoch.lua");

/// Times a step sends the parts a node did not run because their slot moved (`MOVED`:
/// the layout is read again) or is moving (`ASK`, `TRYAGAIN`), each time after a pause
/// 10 ms longer (8 s in all). Then the step fails, the session ends and the next one
/// resumes from the checkpoint.
const MAX_ATTEMPTS: u32 = 40;
const MIGRATING_PAUSE: Duration = Duration::from_millis(10);

/// A session on a cluster.
#[derive(Clone)]
pub struct Session {
    /// Steps run one after the other, in the order they were submitted: the lock is
    /// fair, and each step queues for it when submitted.
    order: Arc<tokio::sync::Mutex<()>>,
    /// This connection's id in its abort keys.
    abort_id: u64,
    epoch: u64,
    /// The primary of each slot, as the cluster said at connect or at the last `MOVED`.
    layout: Arc<RwLock<Layout>>,
    checkpoint_key: String,
    /// The slot script's SHA1, loaded on every primary at connect.
    sha: String,
    /// `redis.wait_replicas` and `redis.wait_timeout_ms`.
    wait: (u32, u64),
}

impl Session {
    /// Reads the cluster's layout and loads the slot script on every primary.
    pub async fn start(
        conn: &mut Conn,
        checkpoint_key: &str,
        abort_id: u64,
        wait: (u32, u64),
    ) -> Result<Session, SinkError> {
        let ranges = layout(conn, checkpoint_key).await?;
        let epoch = next_epoch(conn, checkpoint_key).await?;
        Ok(Session {
            order: Arc::default(),
            abort_id,
            epoch,
            layout: Arc::new(RwLock::new(Layout {
                ranges,
                moved: HashMap::new(),
            })),
            checkpoint_key: checkpoint_key.to_string(),
            sha: redis::Script::new(SLOT_STEP).get_hash().to_string(),
            wait,
        })
    }

    /// Reads the layout again after a `MOVED` (a slot has a new primary, maybe one this
    /// session has not loaded the slot script on) or a `NOSCRIPT`, then takes the slots
    /// the `MOVED`s named at their word: the node asked may not have learnt of every
    /// move yet.
    async fn refresh(
        &self,
        conn: &mut Conn,
        moved: &[&redis::RedisError],
    ) -> Result<(), SinkError> {
        let ranges = layout(conn, &self.checkpoint_key).await?;
        let mut layout = self.layout.write().unwrap_or_else(|e| e.into_inner());
        layout.ranges = ranges;
        layout.moved.clear();
        for (addr, slot) in moved.iter().filter_map(|e| e.redirect_node()) {
            if let Some((host, port)) = addr.rsplit_once(':') {
                if let Ok(port) = port.parse() {
                    layout.moved.insert(slot, (host.to_string(), port));
                }
            }
        }
        Ok(())
    }

    fn node_of(&self, slot: u16) -> Result<(String, u16), SinkError> {
        let layout = self.layout.read().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = layout.moved.get(&slot) {
            return Ok(node.clone());
        }
        layout
            .ranges
            .iter()
            .find(|r| (r.first..=r.last).contains(&slot))
            .map(|r| r.node.clone())
            .ok_or_else(|| {
                SinkError::Redis(redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                    "no primary serves hash slot",
                    slot.to_string(),
                )))
            })
    }
}

/// A part stopped inside its script because its slot began migrating: a key the script
/// deleted and then writes again (a hash replaced, a row deleted and inserted again) is
/// missing from a migrating slot, and Redis refuses the write as "a non local key". The
/// writes before it stay, so the part is sent again whole once the slot has moved; in
/// between a reader may miss that key, as in any replay.
fn is_migrating_mid_script(e: &redis::RedisError) -> bool {
    e.to_string().contains("non local key")
}

/// Which node serves each slot.
struct Layout {
    ranges: Vec<SlotRange>,
    /// Slots a `MOVED` named a node for since the ranges were read.
    moved: HashMap<u16, (String, u16)>,
}

/// A part not run because of where its slot is: `MOVED` (served elsewhere now), `ASK` or
/// `TRYAGAIN` (its keys on their way there), `NOSCRIPT` (a node this session has not
/// loaded the slot script on).
fn is_redirect(code: Option<&str>) -> bool {
    matches!(code, Some("MOVED" | "ASK" | "TRYAGAIN" | "NOSCRIPT"))
}

/// The slot ranges and their primaries, with the slot script loaded on each primary.
async fn layout(conn: &mut Conn, checkpoint_key: &str) -> Result<Vec<SlotRange>, SinkError> {
    let ranges = conn::slot_ranges(conn).await?;
    let Conn::Cluster(cluster) = conn else {
        unreachable!("a cluster session on a standalone connection");
    };
    for node in conn::primaries(&mut Conn::Cluster(cluster.clone())).await? {
        let load = redis::cmd("SCRIPT").arg("LOAD").arg(SLOT_STEP).clone();
        let route = RoutingInfo::SingleNode(conn::to_node(&node));
        cluster.route_command(load, route).await.map_err(|e| {
            match transaction::is_no_perm(&e) {
                true => SinkError::Permission {
                    key: checkpoint_key.to_string(),
                    detail: format!("SCRIPT LOAD on {}:{}: {e}", node.0, node.1),
                },
                false => e.into(),
            }
        })?;
    }
    Ok(ranges)
}

/// A new session's epoch: above every one handed out before (`epoch.lua`).
async fn next_epoch(conn: &mut Conn, checkpoint_key: &str) -> Result<u64, SinkError> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let epoch: String = redis::Script::new(EPOCH)
        .key(format!("{checkpoint_key}:epoch"))
        .arg(clock)
        .invoke_async(conn)
        .await?;
    epoch.parse().map_err(|_| {
        SinkError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "the epoch script answered no number",
            epoch,
        )))
    })
}

/// The fence key of `slot`.
pub fn slot_key(checkpoint_key: &str, slot: u16) -> String {
    format!("{checkpoint_key}:slot:{{{}}}", slots::tag(slot))
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
        self.write_parts().await?;
        match &self.new_value {
            Some(value) => self.move_checkpoint(value).await,
            None => Ok(()),
        }
    }

    /// Sends every slot's part, and again the parts a node did not run because their
    /// slot is elsewhere or moving, up to `MAX_ATTEMPTS` times.
    async fn write_parts(&self) -> Result<(), SinkError> {
        let parts = by_slot(&self.ops);
        let mut pending: Vec<u16> = parts.keys().copied().collect();
        for attempt in 1.. {
            let redirected = self.send_parts(&parts, &pending).await?;
            let Some((_, last)) = redirected.last() else {
                return Ok(());
            };
            if attempt == MAX_ATTEMPTS {
                return Err(SinkError::Redis(last.clone()));
            }
            // ASK or TRYAGAIN: the slot's keys are moving, and it ends as MOVED. The pause
            // also lets the nodes agree on a move before the layout is read again.
            tokio::time::sleep(MIGRATING_PAUSE * (attempt - 1)).await;
            let moved: Vec<&redis::RedisError> = redirected
                .iter()
                .map(|(_, e)| e)
                .filter(|e| matches!(e.code(), Some("MOVED" | "NOSCRIPT")))
                .collect();
            if !moved.is_empty() {
                self.session.refresh(&mut self.conn.clone(), &moved).await?;
            }
            pending = redirected.into_iter().map(|(slot, _)| slot).collect();
        }
        unreachable!("the loop returns by its last attempt")
    }

    /// The checkpoint's own fenced transaction, once every part has landed. A redirect
    /// of its slot ran nothing (the `EXEC` is aborted with its queued commands): the
    /// client learns the new layout, and the transaction goes again.
    async fn move_checkpoint(&self, value: &str) -> Result<(), SinkError> {
        let key = &self.checkpoint_key;
        let abort = format!(
            "{key}:fenced:{{{}}}:{:016x}",
            slots::tag(slots::slot_of(key)),
            self.session.abort_id
        );
        let keys = Keys {
            checkpoint: key,
            abort: &abort,
        };
        let step = transaction::build(&[], &keys, &self.fence, Some(value));
        for attempt in 1.. {
            match run_transaction(self.conn.clone(), step.clone(), key.clone()).await {
                Err(SinkError::Redis(e)) if is_redirect(e.code()) && attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(MIGRATING_PAUSE * attempt).await;
                }
                // An attempt answered with a redirect had run after all (seen once in the
                // reshard test, while the checkpoint's slot moved): the checkpoint holds
                // exactly this step's record, so the step is done. Any other record of
                // this process still ends the session.
                Err(SinkError::OwnStepLanded { .. })
                    if attempt > 1 && self.holds(value).await? =>
                {
                    tracing::info!(
                        attempt,
                        "the checkpoint's transaction, answered with a redirect, had run: \
                         the step is done"
                    );
                    return Ok(());
                }
                verdict => return verdict,
            }
        }
        unreachable!("the loop returns by its last attempt")
    }

    /// Whether the checkpoint key holds exactly `value`.
    async fn holds(&self, value: &str) -> Result<bool, SinkError> {
        let found: Option<String> = redis::cmd("GET")
            .arg(&self.checkpoint_key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(found.as_deref() == Some(value))
    }

    /// The slot script for `ops` (all in the slot of `fence_key`).
    fn slot_part(&self, fence_key: &str, ops: &[&CacheOp]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.session.sha).arg(ops.len() + 1).arg(fence_key);
        for op in ops {
            cmd.arg(op.key());
        }
        cmd.arg(self.session.epoch);
        for op in ops {
            match op {
                CacheOp::Set {
                    value, ttl_ms: 0, ..
                } => cmd.arg("S").arg(value),
                CacheOp::Set { value, ttl_ms, .. } => cmd.arg("P").arg(value).arg(ttl_ms),
                CacheOp::Del { .. } | CacheOp::Unstash { .. } => cmd.arg("D"),
                CacheOp::Hash { fields, ttl_ms, .. } => {
                    cmd.arg("H").arg(ttl_ms).arg(fields.len());
                    for (f, v) in fields {
                        cmd.arg(f).arg(v);
                    }
                    &mut cmd
                }
                CacheOp::Stash { entries, .. } => cmd.arg("R").arg(entries.len()).arg(entries),
                CacheOp::Expire { ttl_ms, .. } => cmd.arg("E").arg(ttl_ms),
            };
        }
        cmd
    }

    /// Sends the parts of the `pending` slots, each node's in one pipeline; returns the
    /// slots whose part was not run because the slot is elsewhere now or moving (`MOVED`,
    /// `ASK`, `TRYAGAIN`), with the error.
    async fn send_parts(
        &self,
        parts: &BTreeMap<u16, Vec<&CacheOp>>,
        pending: &[u16],
    ) -> Result<Vec<(u16, redis::RedisError)>, SinkError> {
        let mut by_node: HashMap<(String, u16), (Pipeline, Vec<u16>)> = HashMap::new();
        for &slot in pending {
            let key = slot_key(&self.checkpoint_key, slot);
            let (pipe, slots) = by_node.entry(self.session.node_of(slot)?).or_default();
            pipe.add_command(self.slot_part(&key, &parts[&slot]));
            slots.push(slot);
        }
        let sends = by_node
            .into_iter()
            .map(|(node, (pipe, slots))| self.send(node, pipe, slots));
        Ok(try_join_all(sends).await?.into_iter().flatten().collect())
    }

    /// Sends a node's parts in one pipeline and reads each part's reply; returns the
    /// slots redirected elsewhere.
    async fn send(
        &self,
        node: (String, u16),
        pipe: Pipeline,
        slots: Vec<u16>,
    ) -> Result<Vec<(u16, redis::RedisError)>, SinkError> {
        let node = &node;
        let Conn::Cluster(mut cluster) = self.conn.clone() else {
            unreachable!("a cluster step on a standalone connection");
        };
        let mut pipe = pipe;
        let (replicas, timeout_ms) = self.session.wait;
        if replicas > 0 {
            pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
        }
        let count = pipe.len();
        let mut replies = match cluster
            .route_pipeline(pipe, 0, count, conn::to_node(node))
            .await
        {
            Ok(replies) => replies,
            // The client fails the whole pipeline for one part's redirect, and tells not
            // which: every part sent here goes again (a part run twice leaves the same
            // values: each operation writes a row image or deletes).
            Err(e) if is_redirect(e.code()) => {
                return Ok(slots.into_iter().map(|slot| (slot, e.clone())).collect());
            }
            Err(e) => return Err(e.into()),
        };
        if replicas > 0 {
            let acked: i64 = match replies.pop() {
                Some(v) => redis::from_redis_value(v).map_err(redis::RedisError::from)?,
                None => 0,
            };
            if acked < i64::from(replicas) {
                return Err(SinkError::ReplicasBehind {
                    node: format!("{}:{}", node.0, node.1),
                    acked,
                    wanted: replicas,
                    timeout_ms,
                });
            }
        }
        let mut redirected = Vec::new();
        for (reply, slot) in replies.into_iter().zip(slots) {
            if let Value::ServerError(e) = reply {
                let key = &slot_key(&self.checkpoint_key, slot);
                if e.code() == "FENCED" {
                    return Err(transaction::fence_refusal(e.details().unwrap_or(""), key));
                }
                let e: redis::RedisError = e.into();
                if is_redirect(e.code()) || is_migrating_mid_script(&e) {
                    redirected.push((slot, e));
                    continue;
                }
                return Err(match transaction::is_no_perm(&e) {
                    true => SinkError::WriteRefused {
                        command: format!("the slot script for `{key}`'s slot"),
                        detail: e.to_string(),
                    },
                    false => SinkError::Redis(e),
                });
            }
        }
        Ok(redirected)
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
    fn a_slots_fence_key_is_in_that_slot_under_the_checkpoint_key() {
        for slot in [0, 866, 16383] {
            let fence = slot_key("cdc-cache:checkpoint:x", slot);
            assert!(fence.starts_with("cdc-cache:checkpoint:x:slot:{"));
            assert_eq!(slots::slot_of(&fence), slot);
        }
    }
}
