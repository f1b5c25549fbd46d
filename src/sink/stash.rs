//! Reading a prepared XA transaction's stash back at its `XA COMMIT` (`crate::xa`).

use super::conn::Scan;
use super::{RedisSink, SinkError};
use crate::checkpoint::Checkpoint;
use crate::mapper::CacheOp;
use crate::xa;

/// What a stash holds at the commit: how many entries, header included.
pub struct Stash {
    pub key: String,
    pub len: usize,
    /// The checkpoint before its PREPARE group, from its header.
    pub before: Option<Checkpoint>,
}

impl RedisSink {
    /// The XA transactions prepared and not yet committed or rolled back, as far as the
    /// stashes say.
    pub async fn stashed_xids(&mut self) -> Result<Vec<xa::Xid>, SinkError> {
        let pattern = format!("{}:xa:*", self.key);
        let mut keys: Vec<String> = Vec::new();
        let mut scan = Scan::start(&mut self.conn).await?;
        while let Some(batch) = scan.next(&mut self.conn, &pattern, 1000).await? {
            keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
        }
        keys.sort();
        keys.dedup();
        Ok(keys
            .iter()
            .filter_map(|k| xa::Xid::from_stash_key(&self.key, k))
            .collect())
    }

    /// The XA transactions whose stashes are in Redis, each with the checkpoint before
    /// its PREPARE group (`None` in a stash an earlier version wrote), in no order.
    pub async fn prepared_before(
        &mut self,
    ) -> Result<Vec<(xa::Xid, Option<Checkpoint>)>, SinkError> {
        let mut prepared = Vec::new();
        for xid in self.stashed_xids().await? {
            // Resolved since the scan: nothing to follow.
            if let Some(stash) = self.stash(&xid).await? {
                prepared.push((xid, stash.before));
            }
        }
        Ok(prepared)
    }

    /// The stash of `xid`, checked to be one this version can read; `None` when Redis
    /// has none (its PREPARE was never applied here).
    pub async fn stash(&mut self, xid: &xa::Xid) -> Result<Option<Stash>, SinkError> {
        let key = xid.stash_key(&self.key);
        let (len, first): (usize, Option<String>) = redis::pipe()
            .cmd("LLEN")
            .arg(&key)
            .cmd("LINDEX")
            .arg(&key)
            .arg(0)
            .query_async(&mut self.conn)
            .await?;
        let Some(first) = first else {
            return Ok(None);
        };
        match xa::parse_header(&first) {
            Some(before) => Ok(Some(Stash { key, len, before })),
            None => Err(SinkError::BadStash {
                key,
                detail: format!(
                    "first entry `{}`",
                    first.chars().take(40).collect::<String>()
                ),
            }),
        }
    }

    /// Up to `count` operations of `stash` from entry `from` on.
    pub async fn stashed_ops(
        &mut self,
        stash: &Stash,
        from: usize,
        count: usize,
    ) -> Result<Vec<CacheOp>, SinkError> {
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(&stash.key)
            .arg(from)
            .arg(from + count.max(1) - 1)
            .query_async(&mut self.conn)
            .await?;
        if entries.is_empty() {
            return Err(SinkError::BadStash {
                key: stash.key.clone(),
                detail: format!("it ended at entry {from} of {}", stash.len),
            });
        }
        entries
            .iter()
            .map(|entry| {
                xa::decode(entry).ok_or_else(|| SinkError::BadStash {
                    key: stash.key.clone(),
                    detail: format!(
                        "unreadable entry `{}`",
                        entry.chars().take(40).collect::<String>()
                    ),
                })
            })
            .collect()
    }
}
