//! Binlog positions and the checkpoint record stored in Redis.
//!
//! The checkpoint is the position *after* the last transaction whose cache operations are in
//! Redis. It is written in the same atomic step as those operations, so it can never claim
//! more (or less) than what was applied. The record is versioned JSON so that later releases
//! can add fields (GTID sets) and still read old records.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A binlog coordinate: file name and byte offset of the next event to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    pub pos: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected `file:pos` such as `mysql-bin.000042:4`")]
pub struct PositionParseError;

impl Position {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Position {
            file: file.into(),
            pos,
        }
    }

    /// Parses `file:pos`. The file is split at the last colon so that names with colons work.
    pub fn parse(text: &str) -> Result<Position, PositionParseError> {
        let (file, pos) = text.rsplit_once(':').ok_or(PositionParseError)?;
        let pos: u64 = pos.parse().map_err(|_| PositionParseError)?;
        if file.is_empty() || pos < 4 {
            return Err(PositionParseError);
        }
        Ok(Position::new(file, pos))
    }

    /// Numeric index of the file (`mysql-bin.000042` → 42); binlog files are numbered in
    /// creation order, which is what orders positions across files.
    pub fn file_index(&self) -> Option<u64> {
        file_index(&self.file)
    }
}

/// Extracts the numeric suffix of a binlog file name.
pub fn file_index(file: &str) -> Option<u64> {
    file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        // Files of one server share a base name; the suffix orders them. Fall back to the
        // name itself so the order stays total for odd names.
        let by_file = match (self.file_index(), other.file_index()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        };
        by_file.then(self.pos.cmp(&other.pos))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Which server a checkpoint belongs to. A file position means nothing on another server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerIdentity {
    pub server_id: u32,
    /// MySQL's `server_uuid`; MariaDB has none, so the host name stands in.
    pub uuid_or_host: String,
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server_id {} ({})", self.server_id, self.uuid_or_host)
    }
}

/// The record stored under `[checkpoint] key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version of this record.
    pub version: u32,
    pub position: Position,
    pub server: ServerIdentity,
    /// Commit time (unix seconds) of the last applied transaction, for lag reporting.
    #[serde(default)]
    pub commit_time: u32,
    /// GTIDs at `position`: MariaDB's state (`domain-server-seq,...`) or MySQL's executed
    /// set (`uuid:1-100,...`). Lets a restart resume on another server of the topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// The process that wrote this record (`host/pid/random`, see `this_process`): a step
    /// fenced on a checkpoint of its own process (an earlier step it gave up on after a
    /// timeout, run late) is told apart from another instance's, and the operator sees
    /// who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Set while `cdc-cache load` fills the cache at `position` (who, since when): the
    /// values are not all there yet, so a daemon waits instead of resuming from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loading: Option<String>,
    /// Prepared XA transactions' stashes may wait under the checkpoint key: a process
    /// that starts reads their headers (`applier::Pending`). When false it need not scan
    /// the keyspace for them, which takes seconds on a large cache. Absent (a record of
    /// an earlier version) counts as true.
    #[serde(default = "absent_is_true")]
    pub xa: bool,
}

fn absent_is_true() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint `{text}` is not a cdc-cache checkpoint record: {source}")]
    Malformed {
        text: String,
        source: serde_json::Error,
    },
    #[error("checkpoint has format version {0}; this build reads version 1 only")]
    Version(u32),
}

impl Checkpoint {
    pub const VERSION: u32 = 1;

    pub fn new(position: Position, server: ServerIdentity, commit_time: u32) -> Self {
        Checkpoint {
            version: Self::VERSION,
            position,
            server,
            commit_time,
            gtid: None,
            writer: Some(this_process().to_string()),
            loading: None,
            xa: false,
        }
    }

    pub fn with_xa(mut self, xa: bool) -> Self {
        self.xa = xa;
        self
    }

    pub fn with_gtid(mut self, gtid: Option<String>) -> Self {
        self.gtid = gtid;
        self
    }

    /// The GTID state to resume from, if the checkpoint has a non-empty one.
    pub fn gtid_state(&self) -> Option<&str> {
        self.gtid.as_deref().filter(|g| !g.trim().is_empty())
    }

    pub fn encode(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Checkpoint, CheckpointError> {
        let record: Checkpoint =
            serde_json::from_str(text).map_err(|source| CheckpointError::Malformed {
                text: text.chars().take(200).collect(),
                source,
            })?;
        if record.version != Self::VERSION {
            return Err(CheckpointError::Version(record.version));
        }
        Ok(record)
    }
}

/// This process as a checkpoint writer: host name, pid and a random part (a pid is
/// reused, and containers all run as pid 1).
pub fn this_process() -> &'static str {
    static WRITER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".to_string());
        format!("{host}/{}/{:08x}", std::process::id(), random_id() as u32)
    });
    &WRITER
}

/// A random number (std's hasher keys are random), for ids that must differ between
/// processes and connections.
pub fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orders_across_files_numerically() {
        let a = Position::new("bin.000009", 900);
        let b = Position::new("bin.000010", 4);
        assert!(a < b);
        assert!(Position::new("bin.000010", 5) > b);
    }

    #[test]
    fn parses_positions() {
        assert_eq!(
            Position::parse("a:b.000001:120").unwrap(),
            Position::new("a:b.000001", 120)
        );
        assert!(Position::parse("bin.000001").is_err());
        assert!(Position::parse(":5").is_err());
        assert!(Position::parse("bin.000001:3").is_err());
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_other_versions() {
        let cp = Checkpoint::new(
            Position::new("bin.000001", 1234),
            ServerIdentity {
                server_id: 1,
                uuid_or_host: "db1".into(),
            },
            7,
        );
        assert_eq!(Checkpoint::decode(&cp.encode()).unwrap(), cp);
        let v2 = cp.encode().replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            Checkpoint::decode(&v2),
            Err(CheckpointError::Version(2))
        ));
        assert!(Checkpoint::decode("bin.000001:4").is_err());
    }

    #[test]
    fn a_record_of_an_earlier_version_may_have_xa_stashes_waiting() {
        let server = ServerIdentity {
            server_id: 1,
            uuid_or_host: "db1".into(),
        };
        let cp = Checkpoint::new(Position::new("bin.000001", 4), server, 0);
        assert!(cp.encode().contains(r#""xa":false"#), "written either way");
        let earlier = cp.encode().replace(r#","xa":false"#, "");
        assert!(Checkpoint::decode(&earlier).unwrap().xa);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(idx in 1u64..999_999, pos in 4u64..u64::MAX) {
            let p = Position::new(format!("mysql-bin.{idx:06}"), pos);
            prop_assert_eq!(Position::parse(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn order_is_file_then_offset(a in 1u64..1000, b in 1u64..1000, x in 4u64..1_000_000, y in 4u64..1_000_000) {
            let p = Position::new(format!("bin.{a:06}"), x);
            let q = Position::new(format!("bin.{b:06}"), y);
            prop_assert_eq!(p.cmp(&q), a.cmp(&b).then(x.cmp(&y)));
        }
    }
}
