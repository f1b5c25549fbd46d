//! One connection type for a standalone (or Sentinel-managed) Redis and for a Redis
//! Cluster, so that single-key commands and single-slot transactions are written once.
//! On a cluster, each request goes to the node serving its keys' slot, and the client
//! follows `MOVED` and `ASK` redirections itself.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection to the cluster `url` is a node of, with the CA of `redis.tls_ca_file` as
/// the only root for `rediss://` nodes when it is set.
pub async fn cluster(url: &str, tls_ca_file: Option<&Path>) -> redis::RedisResult<Conn> {
    let mut builder = ClusterClientBuilder::new(vec![url])
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(30))
        .retries(2);
    if let Some(ca) = tls_ca_file {
        let root_cert = std::fs::read(ca).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis.tls_ca_file cannot be read",
                format!("{}: {e}", ca.display()),
            ))
        })?;
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    let client = builder.build()?;
    Ok(Conn::Cluster(client.get_async_connection().await?))
}

/// The primaries of the cluster (`host`, `port`), from `CLUSTER SLOTS`: where a SCAN must
/// look, since each node only lists the keys of its own slots.
pub async fn primaries(conn: &mut Conn) -> redis::RedisResult<Vec<(String, u16)>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut nodes: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let Some(Value::Array(primary)) = items.get(2) else {
            continue;
        };
        let field = |i: usize| primary.get(i).cloned().unwrap_or(Value::Nil);
        let host: String = redis::from_redis_value(field(0)).map_err(redis::RedisError::from)?;
        let port: u16 = redis::from_redis_value(field(1)).map_err(redis::RedisError::from)?;
        if !nodes.contains(&(host.clone(), port)) {
            nodes.push((host, port));
        }
    }
    Ok(nodes)
}

/// A `SCAN` over the whole keyspace: every primary of a cluster in turn, or the one
/// server.
pub struct Scan {
    nodes: Vec<Option<(String, u16)>>,
    cursor: u64,
}

impl Scan {
    pub async fn start(conn: &mut Conn) -> redis::RedisResult<Scan> {
        let nodes = match conn {
            Conn::Cluster(_) => primaries(conn).await?.into_iter().map(Some).collect(),
            Conn::Single(_) => vec![None],
        };
        Ok(Scan { nodes, cursor: 0 })
    }

    /// The next batch of keys matching `pattern`; `None` once every node is done.
    pub async fn next(
        &mut self,
        conn: &mut Conn,
        pattern: &str,
        count: usize,
    ) -> redis::RedisResult<Option<Vec<Vec<u8>>>> {
        let Some(node) = self.nodes.last().cloned() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let (next, keys): (u64, Vec<Vec<u8>>) = match (conn, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                redis::from_redis_value(c.route_command(cmd, route).await?)
                    .map_err(redis::RedisError::from)?
            }
            (conn, _) => cmd.query_async(conn).await?,
        };
        self.cursor = next;
        if next == 0 {
            self.nodes.pop();
        }
        Ok(Some(keys))
    }
}
