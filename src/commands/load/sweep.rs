//! The keys a load leaves or removes. A load overwrites the keys of `upsert` rules in
//! place, so the cache stays readable while it runs; what it cannot overwrite is
//! handled here:
//!
//! - before the load, over a maintained checkpoint (`--yes`), the keys the load cannot
//!   judge are deleted: those of `delete` rules (the application's values, which may be
//!   stale by the changes the load skips) and those no rule's column types can make;
//! - after the load, the keys of `upsert` rules that no row of the snapshot produces are
//!   deleted: their rows were deleted, or their key columns changed, while no daemon
//!   applied the change.
//!
//! Stale keys are told apart without asking the database: before the fill, every key an
//! `upsert` rule owns gets a time to live no rule sets (`MARK_TTL_MS`, 1,000 years; a
//! rule's is at most 10), and the fill's `SET` (or `DEL` and `HSET`) of a key drops it.
//! A key still carrying it afterwards was not rewritten: no row produces it. Looking
//! each key up in the database instead is a random read per key; on a table larger than
//! the server's buffer pool that took 13 times as long as the load itself.
//!
//! The marks are written by fenced steps, as everything else: a load that another load
//! (or `reset`) has superseded cannot mark keys the newer one has rewritten. With a
//! `volatile-*` maxmemory policy, marked keys may be evicted while the load runs: a miss
//! until the fill rewrites the key, or a key the sweep would have deleted.

use crate::commands::reset;
use crate::error::Error;
use crate::mapper::rules::{Action, RuleSet, MAX_TTL_SECS};
use crate::mapper::{CacheOp, KeyShapes};
use crate::sink::RedisSink;

/// The time to live that marks a key the load has yet to rewrite.
pub const MARK_TTL_MS: u64 = 1000 * YEAR_MS;

/// A time to live above this is a mark: ten times the longest a rule may set.
const MARKED_ABOVE_MS: i64 = 100 * YEAR_MS as i64;

const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

// A mark is above the threshold, and no rule's time to live reaches it.
const _: () =
    assert!(MARK_TTL_MS as i64 > MARKED_ABOVE_MS && MAX_TTL_SECS * 1000 < MARKED_ABOVE_MS);

/// Which rule owns a key, by template and column types (as `verify` judges keys).
pub struct Owners<'a> {
    pub rules: &'a RuleSet,
    pub shapes: KeyShapes,
}

impl Owners<'_> {
    /// Whether an `upsert` rule owns `key`.
    fn upsert_owns(&self, key: &str) -> bool {
        self.rules
            .owner_with(key, &self.shapes)
            .is_some_and(|i| matches!(self.rules.rules[i].action, Action::Upsert(_)))
    }
}

/// What `prepare` did.
#[derive(Debug, Default)]
pub struct Prepared {
    /// `upsert` keys marked (a key under two patterns counts twice).
    pub marked: u64,
    /// Keys deleted (only with `rebuild`).
    pub deleted: u64,
}

/// Marks every key under the rules' patterns that an `upsert` rule owns; with `rebuild`,
/// deletes the others.
pub async fn prepare(
    sink: &mut RedisSink,
    owners: &Owners<'_>,
    rebuild: bool,
) -> Result<Prepared, Error> {
    let mut done = Prepared::default();
    for pattern in reset::patterns(owners.rules) {
        let mut scan = sink.scan().await?;
        while let Some(keys) = sink.next_keys(&mut scan, &pattern).await? {
            let mut ops = Vec::with_capacity(keys.len());
            for key in keys {
                if owners.upsert_owns(&key) {
                    done.marked += 1;
                    ops.push(CacheOp::Expire {
                        key,
                        ttl_ms: MARK_TTL_MS,
                    });
                } else if rebuild {
                    done.deleted += 1;
                    ops.push(CacheOp::Del { key });
                }
            }
            if !ops.is_empty() {
                sink.apply(&ops, None).await?;
            }
        }
    }
    Ok(done)
}

/// Deletes the keys `upsert` rules own that still carry the mark; returns how many.
pub async fn sweep(sink: &mut RedisSink, owners: &Owners<'_>) -> Result<u64, Error> {
    let mut deleted = 0;
    for pattern in reset::patterns(&upserts(owners.rules)) {
        let mut scan = sink.scan().await?;
        while let Some(mut keys) = sink.next_keys(&mut scan, &pattern).await? {
            keys.retain(|k| owners.upsert_owns(k));
            let ttls = sink.ttls(&keys).await?;
            let stale = keys
                .into_iter()
                .zip(ttls)
                .filter(|(_, ttl)| *ttl > MARKED_ABOVE_MS)
                .map(|(key, _)| key);
            deleted += sink.delete(stale).await?;
        }
    }
    Ok(deleted)
}

/// The `upsert` rules alone.
pub fn upserts(rules: &RuleSet) -> RuleSet {
    RuleSet {
        rules: rules
            .rules
            .iter()
            .filter(|r| matches!(r.action, Action::Upsert(_)))
            .cloned()
            .collect(),
    }
}
