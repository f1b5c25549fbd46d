//! Redis's limit on one argument (`proto-max-bulk-len`, 512 MiB by default, often set
//! lower to protect a server). A longer value makes Redis close the connection with a
//! protocol error; the step would be sent again after the reconnect, and fail again,
//! for ever. So a step is checked before it is sent, and a value over the limit stops
//! the daemon naming its key (`SinkError::ValueTooLarge`).

use std::collections::HashMap;

use super::{Conn, RedisSink};
use crate::mapper::CacheOp;

/// Redis's default, used when the server will not say (`CONFIG` denied or renamed).
const DEFAULT_MAX_BULK: usize = 512 << 20;

/// The server's `proto-max-bulk-len`.
pub(super) async fn max_bulk(conn: &mut Conn) -> usize {
    let answer: Result<HashMap<String, String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query_async(conn)
        .await;
    answer
        .ok()
        .and_then(|m| m.get("proto-max-bulk-len")?.parse().ok())
        .unwrap_or(DEFAULT_MAX_BULK)
}

/// The longest single argument an operation sends.
fn largest_argument(op: &CacheOp) -> usize {
    match op {
        CacheOp::Set { key, value, .. } => key.len().max(value.len()),
        CacheOp::Hash { key, fields, .. } => fields
            .iter()
            .map(|(f, v)| f.len().max(v.len()))
            .fold(key.len(), usize::max),
        CacheOp::Stash { key, entries } => {
            entries.iter().map(String::len).fold(key.len(), usize::max)
        }
        other => other.key().len(),
    }
}

impl RedisSink {
    /// The first operation with an argument longer than Redis takes: its key and length.
    pub fn oversized(&self, ops: &[CacheOp]) -> Option<(String, usize)> {
        ops.iter()
            .map(|op| (op, largest_argument(op)))
            .find(|&(_, len)| len > self.max_bulk)
            .map(|(op, len)| (op.key().to_string(), len))
    }

    /// The limit `oversized` checks against.
    pub fn max_bulk(&self) -> usize {
        self.max_bulk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_argument_counts_not_the_sum() {
        let set = CacheOp::Set {
            key: "k".into(),
            value: "v".repeat(10),
            ttl_ms: 0,
        };
        assert_eq!(largest_argument(&set), 10);
        let hash = CacheOp::Hash {
            key: "key-of-twelve".into(),
            fields: vec![("a".into(), "x".repeat(5)), ("b".into(), "y".repeat(7))],
            ttl_ms: 0,
        };
        assert_eq!(largest_argument(&hash), 13);
        let stash = CacheOp::Stash {
            key: "s".into(),
            entries: vec!["e".repeat(20), "f".into()],
        };
        assert_eq!(largest_argument(&stash), 20);
    }
}
