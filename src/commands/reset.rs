//! `reset`: the way out when the checkpoint cannot be resumed (binlog purged, other
//! server, ahead of the head). Deletes every key the rules can have written, found with
//! SCAN over the patterns the key templates imply (never FLUSHDB: other data in the same
//! database survives), and sets the checkpoint to the server's head.
//!
//! The checkpoint is written *first*: a daemon still running against this Redis is fenced
//! by it (its next step fails and it stops), so it cannot re-create keys behind the scan.

use std::collections::BTreeSet;

use redis::AsyncCommands;

use crate::checkpoint::{Checkpoint, Position};
use crate::config::Config;
use crate::error::Error;
use crate::mapper::rules::RuleSet;
use crate::sink::conn::{Conn, Scan};
use crate::sink::slots::slot_of;
use crate::sink::SinkError;
use crate::source::{self, server};

/// Keys deleted per UNLINK call: bounded memory however many keys match.
const SCAN_BATCH: usize = 1000;

#[derive(Debug)]
pub struct ResetReport {
    pub patterns: Vec<String>,
    pub deleted: u64,
    pub checkpoint: Position,
}

/// The SCAN patterns of every rule, without duplicates.
pub fn patterns(rules: &RuleSet) -> Vec<String> {
    let set: BTreeSet<String> = rules.rules.iter().map(|r| r.key.scan_pattern()).collect();
    set.into_iter().collect()
}

pub async fn reset(config: &Config, rules: &RuleSet) -> Result<ResetReport, Error> {
    let (mut conn, info) = source::connect(&config.source).await?;
    let head = server::head(&mut conn, &info).await?;
    let mut redis = crate::sink::connection(&config.redis).await?;
    let checkpoint = Checkpoint::new(head.clone(), info.identity.clone(), 0);
    let _: () = redis
        .set(&config.checkpoint.key, checkpoint.encode())
        .await
        .map_err(SinkError::from)?;
    // Every key under the patterns goes, also those today's column types say no rule
    // made: a table dropped since, or a column whose type changed, may have made them,
    // and reset is the way to start over from nothing.
    let patterns = patterns(rules);
    let keep = config.checkpoint.key.as_str();
    let mut deleted = 0;
    for pattern in &patterns {
        deleted += delete_matching(&mut redis, pattern, keep).await?;
    }
    Ok(ResetReport {
        patterns,
        deleted,
        checkpoint: head,
    })
}

async fn delete_matching(redis: &mut Conn, pattern: &str, keep: &str) -> Result<u64, Error> {
    let mut scan = Scan::start(redis).await.map_err(SinkError::from)?;
    let mut deleted = 0;
    while let Some(keys) = scan
        .next(redis, pattern, SCAN_BATCH)
        .await
        .map_err(SinkError::from)?
    {
        // A key that is not UTF-8 is no rule's (templates render text): it stays. So do
        // the checkpoint and the keys under it: prepared XA transactions' stashes, which
        // their commits, maybe after the new checkpoint, still need.
        let keys: Vec<String> = keys
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .filter(|k| k != keep && !k.strip_prefix(keep).is_some_and(|r| r.starts_with(':')))
            .collect();
        // On a cluster one UNLINK per slot: a command's keys must share one.
        for keys in by_slot(keys, redis.is_cluster()) {
            let n: u64 = redis.unlink(&keys).await.map_err(SinkError::from)?;
            deleted += n;
        }
    }
    Ok(deleted)
}

/// `keys` in groups of one hash slot each (`cluster`), or as one group.
fn by_slot(keys: Vec<String>, cluster: bool) -> Vec<Vec<String>> {
    if !cluster {
        return vec![keys].into_iter().filter(|k| !k.is_empty()).collect();
    }
    let mut groups: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for key in keys {
        groups.entry(slot_of(&key)).or_default().push(key);
    }
    groups.into_values().collect()
}
