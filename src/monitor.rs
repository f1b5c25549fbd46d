//! A per-session side task that polls what the binlog stream does not tell: the server's
//! head (lag in bytes), binlog retention (headroom before the checkpoint's file may be
//! purged) and whether Redis answers (readiness while idle, when no step would notice).
//!
//! It only observes: a failed poll is logged and shown in the metrics, never acted on.
//! The stream and the sink decide when to reconnect.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::RoutingInfo;
use tracing::debug;

use crate::checkpoint::Position;
use crate::commands::status::lag_bytes;
use crate::config::{RedisConfig, SourceConfig};
use crate::metrics::{Metrics, REDIS};
use crate::sink::conn::{self, Conn as RedisConn};
use crate::source::server::{self, ServerInfo};
use crate::source::{self, SourceError};

const INTERVAL: Duration = Duration::from_secs(1);

/// Polls until the task is aborted (at the end of the session).
pub async fn run(
    source: SourceConfig,
    redis: RedisConfig,
    server: ServerInfo,
    metrics: Arc<Metrics>,
) {
    let mut sql: Option<Conn> = None;
    let redis = match redis.cluster {
        true => Some(Target::Cluster(redis)),
        false => crate::sink::client(&redis).await.ok().map(Target::Node),
    };
    let mut pinger = Pinger::default();
    let mut expire: Option<u64> = None;
    loop {
        if let Err(e) = poll_server(&source, &server, &metrics, &mut sql, &mut expire).await {
            debug!(error = %e, "server poll failed; retrying");
            sql = None;
        }
        if let Some(target) = &redis {
            metrics.set_connected(&REDIS, pinger.ping(target).await);
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

async fn poll_server(
    source: &SourceConfig,
    server: &ServerInfo,
    metrics: &Metrics,
    sql: &mut Option<Conn>,
    expire: &mut Option<u64>,
) -> Result<(), SourceError> {
    if sql.is_none() {
        *sql = Some(source::connect(source).await?.0);
    }
    let conn = sql.as_mut().expect("connected just above");
    let head = server::head(conn, server).await?;
    let logs = server::binlogs(conn).await?;
    if expire.is_none() {
        *expire = Some(expire_seconds(conn).await?);
    }
    let Some(applied) = metrics.progress.applied_checkpoint() else {
        return Ok(());
    };
    // Right after a failover the last checkpoint is still the old server's: its position
    // means nothing in this server's binlog, until the first step here replaces it.
    let Some(behind) = lag_bytes(
        &applied.position,
        &applied.server,
        &server.identity,
        &head,
        &logs,
    ) else {
        return Ok(());
    };
    let headroom = retention_headroom(
        &applied.position,
        applied.commit_time,
        &head,
        expire.unwrap_or(0),
        now(),
    );
    metrics.set_head(&head, behind, headroom);
    Ok(())
}

/// Where the pings go: the node of `redis.url` (or the primary the Sentinels named), or
/// with `redis.cluster` every primary the cluster's layout names, one by one, so that a
/// node down while no step runs shows as not connected. (A cluster connection's own
/// all-primaries `PING` kept answering with a primary killed.)
enum Target {
    Node(redis::Client),
    Cluster(RedisConfig),
}

enum PingConn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Target {
    async fn open(&self) -> redis::RedisResult<PingConn> {
        match self {
            Target::Node(client) => Ok(PingConn::Node(
                client.get_multiplexed_async_connection().await?,
            )),
            Target::Cluster(config) => match conn::cluster(&config.url, &config.tls()).await? {
                RedisConn::Cluster(c) => Ok(PingConn::Cluster(c)),
                RedisConn::Single(_) => unreachable!("conn::cluster makes cluster connections"),
            },
        }
    }
}

impl PingConn {
    async fn ping(&mut self) -> redis::RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            PingConn::Node(c) => ping.query_async(c).await,
            PingConn::Cluster(c) => {
                let primaries = conn::primaries(&mut RedisConn::Cluster(c.clone())).await?;
                for node in primaries {
                    let route = RoutingInfo::SingleNode(conn::to_node(&node));
                    c.route_command(ping.clone(), route).await?;
                }
                Ok(())
            }
        }
    }
}

/// PINGs on one kept connection, opened again only after it failed. Why not a connection
/// per ping: Redis would count 86,400 new connections a day in `total_connections_received`
/// and log each one at verbose level, hiding real reconnections from the operator.
#[derive(Default)]
struct Pinger {
    conn: Option<PingConn>,
    /// Pings in a row that got no reply within the interval.
    late: u32,
}

/// Late replies in a row after which the connection is given up. One late reply is a busy
/// host, not a broken connection (its reply is dropped when it comes): opening a new one
/// for it is what the comment above is against. A connection that has silently died
/// stays late, and is replaced after these.
const LATE_BEFORE_RECONNECT: u32 = 3;

impl Pinger {
    /// True when Redis answered within the interval.
    async fn ping(&mut self, target: &Target) -> bool {
        let conn = &mut self.conn;
        let attempt = async {
            if conn.is_none() {
                *conn = Some(target.open().await?);
            }
            conn.as_mut().expect("opened just above").ping().await
        };
        // The connection's own response timeout (half a second) also means late.
        match tokio::time::timeout(INTERVAL, attempt).await {
            Ok(Ok(_)) => self.late = 0,
            Ok(Err(e)) if !e.is_timeout() => *conn = None,
            Ok(Err(_)) | Err(_) => {
                self.late += 1;
                if self.late >= LATE_BEFORE_RECONNECT {
                    *conn = None;
                    self.late = 0;
                }
            }
        }
        self.late == 0 && self.conn.is_some()
    }
}

/// The server's binlog expiry in seconds (0 = never). MySQL 8 and MariaDB 10.6+ have
/// `binlog_expire_logs_seconds`; older servers only `expire_logs_days`.
async fn expire_seconds(conn: &mut Conn) -> Result<u64, SourceError> {
    let seconds: Option<u64> = conn
        .query_first("SELECT @@global.binlog_expire_logs_seconds")
        .await
        .unwrap_or(None);
    if let Some(s) = seconds.filter(|s| *s > 0) {
        return Ok(s);
    }
    let days: Option<f64> = conn
        .query_first("SELECT @@global.expire_logs_days")
        .await
        .unwrap_or(None);
    Ok(days.map(|d| (d * 86_400.0) as u64).unwrap_or(0))
}

/// Seconds until the file holding the checkpoint may be purged, as a lower bound: a file
/// becomes eligible `expire` seconds after it was last written, and it was last written no
/// earlier than the checkpoint's commit. The file being written now cannot be purged.
pub fn retention_headroom(
    checkpoint: &Position,
    commit_time: u32,
    head: &Position,
    expire: u64,
    now: u64,
) -> f64 {
    if expire == 0 {
        return f64::INFINITY;
    }
    if checkpoint.file == head.file || commit_time == 0 {
        return expire as f64;
    }
    (u64::from(commit_time) + expire) as f64 - now as f64
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_counts_from_the_checkpoints_commit() {
        let cp = Position::new("b.000001", 500);
        let head = Position::new("b.000003", 4);
        assert_eq!(retention_headroom(&cp, 1000, &head, 3600, 1600), 3000.0);
        assert_eq!(retention_headroom(&cp, 1000, &head, 3600, 5600), -1000.0);
        assert_eq!(retention_headroom(&cp, 1000, &cp, 3600, 9999), 3600.0);
        assert!(retention_headroom(&cp, 1000, &head, 0, 1600).is_infinite());
    }
}
