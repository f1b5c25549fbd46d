//! `status`: the checkpoint, the server's head, and how far behind the cache is.

use serde::Serialize;

use crate::checkpoint::{Position, ServerIdentity};
use crate::config::Config;
use crate::error::Error;
use crate::sink::RedisSink;
use crate::source::{self, server};

#[derive(Debug, Serialize)]
pub struct Status {
    pub checkpoint: Option<Position>,
    /// The process that wrote the checkpoint (`host/pid/random`), when it says.
    pub written_by: Option<String>,
    /// Set while `cdc-cache load` fills the cache (or after a load that did not finish):
    /// a daemon waits until it is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loading: Option<String>,
    pub head: Position,
    /// Binlog bytes between the checkpoint and the head; `None` without a checkpoint, or
    /// for a checkpoint another server wrote (its position is in that server's binlog).
    pub lag_bytes: Option<u64>,
    /// Seconds between the last applied commit and now; 0 when caught up.
    pub lag_seconds: Option<u64>,
    /// With `[redis.sentinel]`: the primary the Sentinels named (password redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_primary: Option<String>,
    /// XA transactions the daemon saw prepared and not yet committed or rolled back (their
    /// stashes): compare with the server's `XA RECOVER`.
    pub xa_prepared: Vec<String>,
}

pub async fn status(config: &Config) -> Result<Status, Error> {
    let mut sink = RedisSink::connect(&config.redis, &config.checkpoint.key).await?;
    let checkpoint = sink.load_checkpoint().await?;
    let redis_primary = sink.primary_url().map(crate::config::redact_url);
    let xa_prepared = sink
        .stashed_xids()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let (mut conn, info) = source::connect(&config.source).await?;
    let head = server::head(&mut conn, &info).await?;
    let logs = server::binlogs(&mut conn).await?;
    let lag_bytes = checkpoint
        .as_ref()
        .and_then(|cp| lag_bytes(&cp.position, &cp.server, &info.identity, &head, &logs));
    let lag_seconds = checkpoint.as_ref().map(|cp| {
        if lag_bytes == Some(0) {
            return 0;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        now.saturating_sub(u64::from(cp.commit_time))
    });
    let written_by = checkpoint.as_ref().and_then(|c| c.writer.clone());
    let loading = checkpoint.as_ref().and_then(|c| c.loading.clone());
    Ok(Status {
        checkpoint: checkpoint.map(|c| c.position),
        written_by,
        loading,
        head,
        lag_bytes,
        lag_seconds,
        redis_primary,
        xa_prepared,
    })
}

/// Binlog bytes from a checkpoint to the head of `server`; `None` when the checkpoint was
/// written on another server (before a failover): a file position is one server's own.
pub fn lag_bytes(
    checkpoint: &Position,
    written_on: &ServerIdentity,
    server: &ServerIdentity,
    head: &Position,
    logs: &[(String, u64)],
) -> Option<u64> {
    (written_on == server).then(|| bytes_between(checkpoint, head, logs))
}

/// Bytes of binlog from `from` to `to`, summing whole files in between.
pub fn bytes_between(from: &Position, to: &Position, logs: &[(String, u64)]) -> u64 {
    if from >= to {
        return 0;
    }
    if from.file == to.file {
        return to.pos - from.pos;
    }
    let mut total = 0;
    for (file, size) in logs {
        let p = Position::new(file.clone(), 0);
        if *file == from.file {
            total += size.saturating_sub(from.pos);
        } else if *file == to.file {
            total += to.pos;
        } else if p > *from && p < *to {
            total += size;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_spans_files() {
        let logs = vec![
            ("b.000001".to_string(), 1000),
            ("b.000002".to_string(), 500),
            ("b.000003".to_string(), 300),
        ];
        let p = |f: &str, n| Position::new(f, n);
        assert_eq!(
            bytes_between(&p("b.000001", 900), &p("b.000003", 300), &logs),
            100 + 500 + 300
        );
        assert_eq!(
            bytes_between(&p("b.000003", 100), &p("b.000003", 300), &logs),
            200
        );
        assert_eq!(
            bytes_between(&p("b.000003", 300), &p("b.000003", 300), &logs),
            0
        );
    }

    #[test]
    fn a_checkpoint_another_server_wrote_has_no_lag_in_bytes_here() {
        let logs = vec![("b.000001".to_string(), 5000)];
        let identity = |id| ServerIdentity {
            server_id: id,
            uuid_or_host: "db".into(),
        };
        // The old primary's checkpoint lies past the new one's head in file order.
        let checkpoint = Position::new("b.000001", 4000);
        let head = Position::new("b.000001", 5000);
        let lag = |written_on| {
            lag_bytes(
                &checkpoint,
                &identity(written_on),
                &identity(2),
                &head,
                &logs,
            )
        };
        assert_eq!(lag(2), Some(1000));
        assert_eq!(lag(1), None, "a position in another server's binlog");
    }
}
