//! Where a session starts: the checkpoint (as a MariaDB GTID state, resumable on any
//! server of the topology, or as a file position on the server that wrote it) or, without
//! one, the start policy. Every way a start can be wrong ends in a definite error that
//! names the checkpoint and the way out, never in a silent skip.

use mysql_async::prelude::Queryable;
use tracing::{error, info, warn};

use crate::applier::Pending;
use crate::checkpoint::{Checkpoint, Position};
use crate::config::{Config, StartPolicy};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::sink::SinkError;
use crate::source::gtid;
use crate::source::server::{self, ServerInfo};
use crate::source::{self, GtidSet, Gtids, SourceError, StartAt};

/// Where to resume when Redis has no checkpoint: the start policy, unless this process
/// applied something before. Then Redis restarted without persistence or was flushed, and
/// the cache went with the checkpoint: resuming from the last applied position (not the
/// start policy) keeps every change since then, so no read-through fill can stay stale;
/// or from before the first XA PREPARE still pending, whose stash went too.
pub fn after_loss(
    key: &str,
    known: Option<&Checkpoint>,
    pending: &mut Pending,
    metrics: &Metrics,
) -> Option<Checkpoint> {
    let last = known?;
    pending.lost();
    error!(
        key = %key,
        position = %last.position,
        "checkpoint vanished from Redis (restart without persistence or flush); \
         the cache lost its data; resuming from the last position this process applied"
    );
    metrics.checkpoint_lost.inc();
    let Some(before) = pending.rewind() else {
        return Some(last.clone());
    };
    warn!(
        position = %before.position,
        "XA transactions were prepared and not yet committed: resuming from \
         before the first of their XA PREPAREs, to write their stashes again"
    );
    Some(before.clone())
}

/// Refuses a checkpoint that another process moved past the last one this process
/// applied, found as a session starts: a step would have met it at its fence and stopped
/// (another instance with the same `[checkpoint] key`, a `reset`, a `load`), but the
/// session that would have sent it ended first. One written by this process (a late step
/// of its own), on another server, or at or behind the last one applied (a failover to a
/// replica that had not received the latest steps) is resumed from.
pub fn refuse_foreign_advance(
    found: &Checkpoint,
    known: Option<&Checkpoint>,
    key: &str,
) -> Result<(), SinkError> {
    let Some(known) = known else {
        return Ok(());
    };
    let writer = found.writer.as_deref();
    let foreign = writer != Some(crate::checkpoint::this_process());
    if foreign && found.server == known.server && found.position > known.position {
        return Err(SinkError::Fenced {
            key: key.to_string(),
            detail: format!(
                "moved from {} to {} while this daemon was reconnecting; it was written by {}",
                known.position,
                found.position,
                writer.unwrap_or("an earlier version")
            ),
        });
    }
    Ok(())
}

/// The start of a session against `server`.
pub async fn start_at(
    conn: &mut mysql_async::Conn,
    config: &Config,
    server: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
) -> Result<StartAt, SourceError> {
    if let Some(state) = gtid_resume(conn, config, server, checkpoint).await? {
        return Ok(StartAt::Gtid(state));
    }
    let position = resume_position(conn, server, checkpoint, &config.start_policy()).await?;
    Ok(StartAt::Position(position))
}

/// The GTIDs to resume from: a checkpoint with GTIDs, and GTIDs wanted on this server
/// (`source.gtid_mode` and the server agree). Then the file position and the server
/// identity do not matter: GTIDs mean the same on every server of the topology (failover).
async fn gtid_resume(
    conn: &mut mysql_async::Conn,
    config: &Config,
    server: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
) -> Result<Option<Gtids>, SourceError> {
    let Some(cp) = checkpoint else {
        return Ok(None);
    };
    let Some(text) = cp.gtid_state() else {
        return Ok(None);
    };
    if !source::gtids_wanted(&config.source, server)? {
        return Ok(None);
    }
    let gtids = Gtids::parse(text).map_err(|e| {
        SourceError::Setting(format!(
            "the checkpoint's GTID state `{text}` is malformed: {e}"
        ))
    })?;
    // A server outside the topology may accept GTIDs it never had (MariaDB when not in
    // strict mode) and stream something unrelated: check what it has first.
    let (missing, state) = match &gtids {
        Gtids::MariaDb(_) if !server.mariadb => return Err(flavour_mismatch(text, server)),
        Gtids::MySql(_) if server.mariadb => return Err(flavour_mismatch(text, server)),
        Gtids::MariaDb(state) => {
            let binlog_state: String = conn
                .query_first("SELECT @@global.gtid_binlog_state")
                .await?
                .unwrap_or_default();
            (
                gtid::missing_from(state, &binlog_state).join(","),
                binlog_state,
            )
        }
        Gtids::MySql(set) => {
            let executed: String = conn
                .query_first("SELECT @@GLOBAL.gtid_executed")
                .await?
                .unwrap_or_default();
            let have = GtidSet::parse(&executed).map_err(SourceError::Setting)?;
            (set.minus(&have).to_string(), executed.replace('\n', ""))
        }
    };
    if !missing.is_empty() {
        return Err(SourceError::GtidMissing {
            checkpoint: format!("{}, gtid {text}", cp.position),
            checkpoint_server: cp.server.to_string(),
            server: server.identity.to_string(),
            missing,
            state,
        });
    }
    info!(gtid = %gtids, server = %server.identity, "resuming from the checkpoint's GTIDs");
    Ok(Some(gtids))
}

/// A MariaDB GTID state cannot be resumed on MySQL, nor a MySQL set on MariaDB.
fn flavour_mismatch(text: &str, server: &ServerInfo) -> SourceError {
    SourceError::Setting(format!(
        "the checkpoint's GTIDs `{text}` were written against a server of the other \
         flavour (MySQL vs MariaDB) than {} ({}); point [source] url at the original \
         topology, or run `cdc-cache reset --yes`",
        server.identity, server.version
    ))
}

/// A server refusing a GTID resume (error 1236: purged, or not in its binlog) said so in
/// its own words; this adds the checkpoint and the oldest binlog it still has.
pub async fn explain_gtid_refusal(config: &Config, checkpoint: &Checkpoint, e: Error) -> Error {
    let Error::Source(SourceError::Mysql(mysql_async::Error::Server(server_error))) = &e else {
        return e;
    };
    if server_error.code != 1236 {
        return e;
    }
    let oldest = match source::connect(&config.source).await {
        Ok((mut conn, _)) => server::binlogs(&mut conn)
            .await
            .ok()
            .and_then(|logs| logs.first().map(|(f, _)| f.clone())),
        Err(_) => None,
    };
    SourceError::GtidRefused {
        checkpoint: format!(
            "{}, gtid {}",
            checkpoint.position,
            checkpoint.gtid_state().unwrap_or("")
        ),
        oldest: oldest.unwrap_or_else(|| "unknown".into()),
        detail: server_error.message.clone(),
    }
    .into()
}

/// Where to start: the checkpoint if there is one (checked against this server), else the
/// start policy. Either way the position must still exist on the server.
pub async fn resume_position(
    conn: &mut mysql_async::Conn,
    server: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
    policy: &StartPolicy,
) -> Result<Position, SourceError> {
    let logs = server::binlogs(conn).await?;
    let head = server::head(conn, server).await?;
    let start = match (checkpoint, policy) {
        (Some(cp), _) => {
            if cp.server != server.identity {
                return Err(SourceError::OtherServer {
                    checkpoint: cp.server.to_string(),
                    server: server.identity.to_string(),
                });
            }
            cp.position.clone()
        }
        (None, StartPolicy::Current) => head.clone(),
        (None, StartPolicy::Earliest) => {
            let first = logs
                .first()
                .map(|(f, _)| f.clone())
                .unwrap_or_else(|| head.file.clone());
            Position::new(first, 4)
        }
        (None, StartPolicy::At(p)) => p.clone(),
    };
    server::check_position(&start, &logs, &head)?;
    if checkpoint.is_none() {
        info!(position = %start, policy = ?policy, "no checkpoint: starting by policy");
        if *policy == StartPolicy::Current {
            warn_prepared_xa(conn).await;
        }
    }
    Ok(start)
}

/// XA transactions prepared before a start at the head have their rows before it: their
/// COMMIT will stop the daemon (`SinkError::UnknownXa`). Said now, when the operator can
/// still resolve them.
async fn warn_prepared_xa(conn: &mut mysql_async::Conn) {
    warn_of_prepared_xa(
        conn,
        "before this start at its head: their rows are not seen, so their XA COMMIT will \
         stop the daemon (exit 3); resolve them first, or start (source.start) before their \
         XA PREPARE",
    )
    .await;
}

/// Warns of the XA transactions prepared on the server now (`XA RECOVER`), `before` saying
/// where they are and what that means. A user that may not list them is told that they
/// were not checked.
pub async fn warn_of_prepared_xa(conn: &mut mysql_async::Conn, before: &str) {
    match server::prepared_xa(conn).await {
        Ok(xids) if xids.is_empty() => {}
        Ok(xids) => {
            let xids: Vec<String> = xids.iter().map(ToString::to_string).collect();
            warn!(
                ?xids,
                "XA transactions are prepared on the server, {before}"
            );
        }
        Err(e) => info!(
            error = %e,
            "prepared XA transactions not checked: the [source] user may not run XA RECOVER \
             (MySQL: XA_RECOVER_ADMIN)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ServerIdentity;

    fn at(pos: u64, server_id: u32, writer: Option<&str>) -> Checkpoint {
        let server = ServerIdentity {
            server_id,
            uuid_or_host: "db".into(),
        };
        let mut checkpoint = Checkpoint::new(Position::new("binlog.000001", pos), server, 0);
        checkpoint.writer = writer.map(str::to_string);
        checkpoint
    }

    #[test]
    fn only_another_writer_moving_the_checkpoint_ahead_on_the_same_server_is_refused() {
        let own = crate::checkpoint::this_process();
        let known = at(100, 1, Some(own));
        let refused = |found: &Checkpoint| refuse_foreign_advance(found, Some(&known), "k");
        assert!(matches!(
            refused(&at(200, 1, Some("other/1/0"))),
            Err(SinkError::Fenced { detail, .. }) if detail.contains("other/1/0")
        ));
        assert!(refused(&at(200, 1, None)).is_err(), "an earlier version's");
        // A late step of this process; a failover to a replica behind; another server.
        assert!(refused(&at(200, 1, Some(own))).is_ok());
        assert!(refused(&at(50, 1, Some("other/1/0"))).is_ok());
        assert!(refused(&at(100, 1, Some("other/1/0"))).is_ok());
        assert!(refused(&at(200, 2, Some("other/1/0"))).is_ok());
        // The first session of a process takes whatever it finds.
        assert!(refuse_foreign_advance(&at(200, 1, Some("other/1/0")), None, "k").is_ok());
    }
}
