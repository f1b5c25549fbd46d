//! Redis's limits on what one client sends, read at connect. Over either, Redis closes
//! the connection; the step would be sent again after the reconnect, and fail again, for
//! ever. So a step is checked before it is sent, and an operation over a limit stops the
//! daemon naming its key (`SinkError::ValueTooLarge`).
//!
//! - `proto-max-bulk-len` (512 MiB by default): the longest single argument.
//! - `client-query-buffer-limit` (1 GiB by default, 1 MiB at least): what a client's
//!   input holds. Newer Redis versions count the commands a `MULTI` has queued against
//!   it too, so a whole step must stay under it: steps are made smaller when
//!   `sink.max_bytes_per_step` would not.

use std::collections::HashMap;

use super::{Conn, RedisSink};
use crate::mapper::CacheOp;

/// Redis's defaults, used when the server will not say (`CONFIG` denied or renamed).
const DEFAULT_MAX_BULK: usize = 512 << 20;
const DEFAULT_QUERY_BUFFER: usize = 1 << 30;

/// Left out of the query buffer for what a step sends besides its operations (the
/// fence, the checkpoint) and for the bytes of the next command read with the last.
const MARGIN: usize = 64 << 10;

/// The limits of the Redis the sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `proto-max-bulk-len`.
    pub max_bulk: usize,
    /// `client-query-buffer-limit`.
    pub query_buffer: usize,
}

/// An operation Redis would not take: its key, its size and the limit it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub key: String,
    pub bytes: usize,
    pub limit: usize,
    /// The Redis setting that sets `limit`, and its value.
    pub setting: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: DEFAULT_MAX_BULK,
            query_buffer: DEFAULT_QUERY_BUFFER,
        }
    }
}

impl Limits {
    /// The server's settings; Redis's defaults, and why, when it will not give them (an
    /// ACL user without `+config|get`, which the documented grants leave out: it would
    /// also show the server's passwords).
    pub(super) async fn read(conn: &mut Conn) -> (Limits, Option<String>) {
        let max_bulk = setting(conn, "proto-max-bulk-len").await;
        let query_buffer = setting(conn, "client-query-buffer-limit").await;
        match (max_bulk, query_buffer) {
            (Ok(max_bulk), Ok(query_buffer)) => {
                let limits = Limits {
                    max_bulk,
                    query_buffer,
                };
                (limits, None)
            }
            (Err(e), _) | (_, Err(e)) => (Limits::default(), Some(e)),
        }
    }

    /// What they are, and the step size they leave of `configured` bytes, for `check`.
    pub fn describe(&self, configured: usize) -> String {
        format!(
            "proto-max-bulk-len {}, client-query-buffer-limit {}: steps of at most {} bytes",
            self.max_bulk,
            self.query_buffer,
            configured.min(self.step_bytes())
        )
    }

    /// The most bytes (`CacheOp::bytes`) a step's operations may take. A step holds at
    /// most its byte limit and one more row's operations, each at most this long
    /// (`oversized`), so two of this fit in the query buffer.
    pub fn step_bytes(&self) -> usize {
        self.query_buffer.saturating_sub(MARGIN) / 2
    }

    /// True when operations of `bytes` in all (`CacheOp::bytes`) surely hold no operation
    /// Redis would not take: a cheap test before `oversized`, since an operation's bytes
    /// count each of its arguments.
    pub fn surely_fit(&self, bytes: usize) -> bool {
        bytes <= self.step_bytes().min(self.max_bulk)
    }

    /// The first operation Redis would not take.
    pub fn oversized(&self, ops: &[CacheOp]) -> Option<Oversized> {
        ops.iter().find_map(|op| self.check(op))
    }

    fn check(&self, op: &CacheOp) -> Option<Oversized> {
        let oversized = |bytes, limit, setting| Oversized {
            key: op.key().to_string(),
            bytes,
            limit,
            setting,
        };
        let longest = largest_argument(op);
        if longest > self.max_bulk {
            let setting = format!("proto-max-bulk-len is {}", self.max_bulk);
            return Some(oversized(longest, self.max_bulk, setting));
        }
        let queued = op.bytes();
        (queued > self.step_bytes()).then(|| {
            let setting = format!(
                "client-query-buffer-limit is {}, and a step may hold two such writes",
                self.query_buffer
            );
            oversized(queued, self.step_bytes(), setting)
        })
    }
}

/// One numeric setting of `CONFIG GET`, or why the server did not give it.
async fn setting(conn: &mut Conn, name: &str) -> Result<usize, String> {
    let answer: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await
        .map_err(|e| format!("CONFIG GET {name}: {e}"))?;
    let value = answer
        .get(name)
        .ok_or_else(|| format!("CONFIG GET {name}: not a setting of this server"))?;
    value
        .parse()
        .map_err(|_| format!("CONFIG GET {name}: `{value}` is not a number"))
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
    /// The limits of the Redis this sink writes to, read when it connected.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Why the limits are Redis's defaults rather than the server's, if they are.
    pub fn limits_unread(&self) -> Option<&str> {
        self.limits_unread.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: usize) -> CacheOp {
        CacheOp::Set {
            key: "k".into(),
            value: "v".repeat(value),
            ttl_ms: 0,
        }
    }

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

    #[test]
    fn each_setting_is_named_when_it_is_the_one_exceeded() {
        let limits = Limits {
            max_bulk: 1000,
            query_buffer: 1 << 20,
        };
        assert_eq!(limits.oversized(&[set(10), set(1000)]), None);
        let over = limits
            .oversized(&[set(10), set(1001)])
            .expect("over the bulk");
        assert_eq!((over.bytes, over.limit), (1001, 1000));
        assert_eq!(over.setting, "proto-max-bulk-len is 1000");

        // Half the query buffer, less the margin, is the most one operation may take.
        let limits = Limits {
            max_bulk: 1 << 30,
            query_buffer: 1 << 20,
        };
        assert_eq!(limits.step_bytes(), ((1 << 20) - MARGIN) / 2);
        let fits = limits.step_bytes() - 200;
        assert_eq!(limits.oversized(&[set(fits)]), None);
        let over = limits
            .oversized(&[set(limits.step_bytes())])
            .expect("over half the query buffer");
        assert!(over
            .setting
            .starts_with("client-query-buffer-limit is 1048576"));
        assert_eq!(over.limit, limits.step_bytes());
    }
}
