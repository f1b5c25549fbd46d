//! A consistent read of the database together with the binlog position it stands at:
//! every row a query in the snapshot returns is the row as of that position, so the
//! values rendered from it belong exactly there in the stream (`load`).
//!
//! Two ways to get the position, as `mysqldump --single-transaction` does:
//! - MariaDB reports the binlog position of a `START TRANSACTION WITH CONSISTENT
//!   SNAPSHOT` itself (`binlog_snapshot_file`, `binlog_snapshot_position`): no lock, no
//!   extra privilege.
//! - MySQL does not; there `FLUSH TABLES WITH READ LOCK` stops commits while the
//!   snapshot starts and the head is read, then `UNLOCK TABLES` (privilege RELOAD; a
//!   long-running query delays the lock, and every writer waits behind it).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::checkpoint::Position;
use crate::source::server::{self, ServerInfo};
use crate::source::SourceError;

/// How the snapshot's binlog position is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// MariaDB's `binlog_snapshot_*` status of the snapshot transaction.
    SnapshotStatus,
    /// A global read lock around the snapshot's start and the head (MySQL), waited for
    /// at most `wait_secs`: while `FLUSH TABLES WITH READ LOCK` waits for a long
    /// statement to finish, every writer of the server waits behind it.
    ReadLock { wait_secs: u32 },
}

/// How long the read lock is waited for by default: long enough for the usual short
/// statements, short enough that writers never stall for long behind it.
pub const READ_LOCK_WAIT_SECS: u32 = 10;

impl Method {
    /// The one the server has: MariaDB reports the position, MySQL needs the lock.
    pub fn for_server(server: &ServerInfo) -> Method {
        if server.mariadb {
            Method::SnapshotStatus
        } else {
            Method::ReadLock {
                wait_secs: READ_LOCK_WAIT_SECS,
            }
        }
    }
}

/// A snapshot transaction open on a connection, and where it stands in the binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub position: Position,
    /// The GTIDs at `position` (MariaDB's state or MySQL's executed set), when the
    /// server has them.
    pub gtid: Option<String>,
}

/// Starts a consistent-snapshot transaction on `conn` (in a UTC session: TIMESTAMP
/// values are cached in UTC) and finds its binlog position. Every later query on `conn`
/// reads the snapshot until the transaction ends.
pub async fn begin(
    conn: &mut Conn,
    server: &ServerInfo,
    method: Method,
) -> Result<Snapshot, SourceError> {
    conn.query_drop("SET time_zone = '+00:00'").await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    match method {
        Method::SnapshotStatus => by_snapshot_status(conn).await,
        Method::ReadLock { wait_secs } => by_read_lock(conn, server, wait_secs).await,
    }
}

async fn by_snapshot_status(conn: &mut Conn) -> Result<Snapshot, SourceError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        .await?;
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(pos)) = (
        value("binlog_snapshot_file"),
        value("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
    ) else {
        return Err(SourceError::Setting(
            "the server does not report the binlog position of a consistent snapshot \
             (binlog_snapshot_file / binlog_snapshot_position): binary logging must be on"
                .into(),
        ));
    };
    if file.is_empty() {
        return Err(SourceError::Setting(
            "binlog_snapshot_file is empty: binary logging is off (start the server with \
             log_bin)"
                .into(),
        ));
    }
    let gtid: Option<String> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
        .await?;
    Ok(Snapshot {
        position: Position::new(file, pos),
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

async fn by_read_lock(
    conn: &mut Conn,
    server: &ServerInfo,
    wait_secs: u32,
) -> Result<Snapshot, SourceError> {
    conn.query_drop(format!("SET SESSION lock_wait_timeout = {wait_secs}"))
        .await?;
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(|e| match e {
            mysql_async::Error::Server(s) if s.code == 1227 => SourceError::Setting(format!(
                "FLUSH TABLES WITH READ LOCK refused ({}): the [source] user needs the \
                 RELOAD privilege to find the binlog position of a snapshot on MySQL",
                s.message
            )),
            mysql_async::Error::Server(s) if s.code == 1205 => SourceError::Setting(format!(
                "FLUSH TABLES WITH READ LOCK not granted within {wait_secs} s ({}): a long \
                 statement or a LOCK TABLES holds a table, and writers would wait behind \
                 the lock; the load gave up rather than stall them: run it again when the \
                 statement is done",
                s.message
            )),
            other => other.into(),
        })?;
    // Commits wait for the lock: the snapshot and the head read now agree. Whatever
    // happens next, the lock must go; closing the connection releases it too.
    let taken = async {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        let position = server::head(conn, server).await?;
        let gtid: Option<String> = if server.mysql_gtids {
            let row: Option<Row> = conn.query_first("SELECT @@GLOBAL.gtid_executed").await?;
            row.and_then(|r| r.get::<String, _>(0))
                .map(|g| g.replace('\n', ""))
        } else {
            None
        };
        Ok::<_, SourceError>(Snapshot { position, gtid })
    }
    .await;
    conn.query_drop("UNLOCK TABLES").await?;
    taken
}
