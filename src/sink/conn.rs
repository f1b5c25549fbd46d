//! One connection type for a standalone (or Sentinel-managed) Redis and for a Redis
//! Cluster, so that single-key commands and single-slot transactions are written once.
//! On a cluster, each request goes to the node serving its keys' slot, and the client
//! follows `MOVED` and `ASK` redirections itself, except for the sink's steps, which
//! follow them per slot (`cluster`).

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::TlsFiles;

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

/// A connection to the cluster `url` is a node of, with the TLS files of `[redis]`
/// (`certificates`).
pub async fn cluster(url: &str, tls: &TlsFiles) -> redis::RedisResult<Conn> {
    cluster_with_retries(url, tls, 2).await
}

/// [`cluster`] with the client's own retries set. The sink's steps take none: the client
/// answers a pipeline holding one `MOVED` or `ASK` by sending the whole pipeline to that
/// one node again, where the other slots' parts cannot run; the step handles redirects
/// itself (`cluster`).
pub async fn cluster_with_retries(
    url: &str,
    tls: &TlsFiles,
    retries: u32,
) -> redis::RedisResult<Conn> {
    let mut builder = ClusterClientBuilder::new(vec![url])
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(30))
        .retries(retries);
    if let Some(certificates) = certificates(tls)? {
        builder = builder.certs(certificates);
    }
    let client = builder.build()?;
    Ok(Conn::Cluster(client.get_async_connection().await?))
}

/// A slot range and the primary serving it (`host`, `port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub node: (String, u16),
    /// How many replicas serve the range too.
    pub replicas: usize,
}

/// The cluster's slot ranges and their primaries, from `CLUSTER SLOTS`.
pub async fn slot_ranges(conn: &mut Conn) -> redis::RedisResult<Vec<SlotRange>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut found = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let field = |v: Option<&Value>| v.cloned().unwrap_or(Value::Nil);
        let Value::Array(primary) = field(items.get(2)) else {
            continue;
        };
        let parse = |v: Value| -> redis::RedisResult<u16> {
            redis::from_redis_value(v).map_err(redis::RedisError::from)
        };
        let host: String =
            redis::from_redis_value(field(primary.first())).map_err(redis::RedisError::from)?;
        found.push(SlotRange {
            first: parse(field(items.first()))?,
            last: parse(field(items.get(1)))?,
            node: (host, parse(field(primary.get(1)))?),
            replicas: items.len().saturating_sub(3),
        });
    }
    Ok(found)
}

/// The certificates for `rediss://` connections, `None` when `[redis]` names none: the
/// CA of `redis.tls_ca_file` as the only root to verify nodes with (else the system's),
/// and the client's own certificate and key (`redis.tls_cert_file`, `redis.tls_key_file`)
/// for a server that asks for one.
pub fn certificates(tls: &TlsFiles) -> redis::RedisResult<Option<redis::TlsCertificates>> {
    if tls.ca.is_none() && tls.identity.is_none() {
        return Ok(None);
    }
    let root_cert = tls
        .ca
        .as_deref()
        .map(|ca| read(ca, "redis.tls_ca_file cannot be read"))
        .transpose()?;
    let client_tls = match &tls.identity {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "redis.tls_cert_file cannot be read")?,
            client_key: read(key, "redis.tls_key_file cannot be read")?,
        }),
        None => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read(path: &Path, what: &'static str) -> redis::RedisResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            what,
            format!("{}: {e}", path.display()),
        ))
    })
}

/// The primaries of the cluster: where a SCAN must look, since each node only lists the
/// keys of its own slots.
pub async fn primaries(conn: &mut Conn) -> redis::RedisResult<Vec<(String, u16)>> {
    let mut nodes: Vec<(String, u16)> = Vec::new();
    for range in slot_ranges(conn).await? {
        if !nodes.contains(&range.node) {
            nodes.push(range.node);
        }
    }
    Ok(nodes)
}

/// The route to the node at `node` (`host`, `port`) of a cluster.
pub fn to_node(node: &(String, u16)) -> redis::cluster_routing::SingleNodeRoutingInfo {
    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
        host: node.0.clone(),
        port: node.1,
    }
}

/// A `SCAN` over the whole keyspace: every primary of a cluster in turn, or the one
/// server.
/// Each command's reply, an error reply (a key of the wrong type) among them not failing
/// the others: one pipeline on a standalone Redis, one request per key on a cluster
/// (whose pipelines cannot span slots).
pub async fn read_each(
    conn: &mut Conn,
    reads: Vec<Cmd>,
) -> redis::RedisResult<Vec<redis::RedisResult<Value>>> {
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    if !conn.is_cluster() {
        let mut pipe = redis::pipe();
        for cmd in reads {
            pipe.add_command(cmd);
        }
        return pipe.ignore_errors().query_async(conn).await;
    }
    let each = reads.into_iter().map(|cmd| {
        let mut conn = conn.clone();
        async move { cmd.query_async::<Value>(&mut conn).await }
    });
    Ok(futures_util::future::join_all(each).await)
}

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
            (Conn::Cluster(c), Some(node)) => {
                let route = redis::cluster_routing::RoutingInfo::SingleNode(to_node(&node));
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
