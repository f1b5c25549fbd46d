//! A private three-node Redis Cluster (primaries only), slots split evenly, and reads that
//! follow the keys to their node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::cluster::ClusterClient;

use super::servers::{wait_until, Redis};

pub struct Cluster {
    pub nodes: Vec<Redis>,
    /// With TLS: the CA that verifies the nodes.
    ca: Option<PathBuf>,
}

/// A cluster node's options. Its bus port is chosen like its own: the default (port +
/// 10000) is past 65535 for a port above 55535, which the OS hands out.
fn options() -> Vec<String> {
    let bus = super::servers::free_port().to_string();
    [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        "5000",
        "--cluster-port",
        &bus,
    ]
    .map(String::from)
    .to_vec()
}

/// `CLUSTER MEET` of `node`, at its port and its bus port.
fn meet(node: &Redis) -> String {
    let (_, bus): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("cluster-port")
        .query(&mut node.conn())
        .expect("CONFIG GET cluster-port");
    format!("CLUSTER MEET 127.0.0.1 {} {bus}", node.port)
}

fn node(tls: Option<(&Path, &Path, &Path)>) -> Redis {
    let options = options();
    let mut options: Vec<&str> = options.iter().map(String::as_str).collect();
    match tls {
        None => Redis::start_with(&options),
        Some((cert, key, ca)) => {
            options.extend(["--tls-cluster", "yes"]);
            Redis::start_tls_with(cert, key, ca, &options)
        }
    }
}

impl Cluster {
    /// Starts `n` nodes, gives each an equal range of the 16384 slots and joins them.
    pub fn start(n: u16) -> Self {
        Self::join((0..n).map(|_| node(None)).collect())
    }

    /// The same over TLS only (clients and the cluster bus), with these certificate, key
    /// and CA files.
    pub fn start_tls(n: u16, (cert, key, ca): (&Path, &Path, &Path)) -> Self {
        let nodes = (0..n).map(|_| node(Some((cert, key, ca)))).collect();
        let mut cluster = Self::join(nodes);
        cluster.ca = Some(ca.to_path_buf());
        cluster
    }

    /// `n` primaries as `start` makes them, and then one replica for each
    /// (`nodes[n + i]` replicates `nodes[i]`).
    pub fn start_with_replicas(n: u16) -> Self {
        let mut cluster = Self::start(n);
        let id = |node: &Redis| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut node.conn())
                .expect("CLUSTER MYID")
        };
        for i in 0..usize::from(n) {
            let replica = node(None);
            replica.command(&meet(&cluster.nodes[0]));
            let primary = id(&cluster.nodes[i]);
            wait_until(
                "the replica to know its primary",
                Duration::from_secs(30),
                || {
                    redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(&primary)
                        .query::<()>(&mut replica.conn())
                        .is_ok()
                },
            );
            cluster.nodes.push(replica);
        }
        wait_until(
            "every primary to have its replica",
            Duration::from_secs(30),
            || {
                cluster.nodes[..usize::from(n)].iter().all(|node| {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut node.conn())
                        .unwrap_or_default();
                    info.contains("connected_slaves:1")
                })
            },
        );
        // Every node must also have heard (by gossip) that each range has its replica.
        wait_until(
            "every node to list the replicas",
            Duration::from_secs(30),
            || {
                cluster.nodes.iter().all(|node| {
                    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query(&mut node.conn())
                        .unwrap_or_default();
                    !ranges.is_empty() && ranges.iter().all(|r| r.len() >= 4)
                })
            },
        );
        cluster
    }

    /// A new primary without slots (a scale-out's first step); returns its index.
    pub fn add_empty_node(&mut self) -> usize {
        let new = node(None);
        new.command(&meet(&self.nodes[0]));
        self.nodes.push(new);
        let n = self.nodes.len();
        // The new node must also have learnt every slot's owner (`cluster_state:ok`):
        // until then it answers CLUSTERDOWN, and a reshard onto it fails.
        wait_until(
            "every node to know the new one",
            Duration::from_secs(30),
            || {
                self.nodes.iter().all(|node| {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut node.conn())
                        .unwrap_or_default();
                    info.contains(&format!("cluster_known_nodes:{n}"))
                        && info.contains("cluster_state:ok")
                })
            },
        );
        n - 1
    }

    fn join(nodes: Vec<Redis>) -> Self {
        let n = nodes.len() as u16;
        let per = 16384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let first = per * i as u16;
            let last = if i as u16 == n - 1 {
                16383
            } else {
                first + per - 1
            };
            node.command(&format!("CLUSTER ADDSLOTSRANGE {first} {last}"));
            if i > 0 {
                nodes[0].command(&meet(node));
            }
        }
        let cluster = Cluster { nodes, ca: None };
        wait_until("the cluster to agree", Duration::from_secs(30), || {
            cluster.nodes.iter().all(|node| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.conn())
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{n}"))
            })
        });
        cluster
    }

    /// A seed node's URL (any node leads to all).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let mut builder = ClusterClient::builder(vec![self.url()]);
        if let Some(ca) = &self.ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("read CA")),
            });
        }
        builder
            .build()
            .and_then(|c| c.get_connection())
            .expect("connect to the private cluster")
    }

    /// The keys matching `pattern` on each node.
    pub fn keys_by_node(&self, pattern: &str) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|node| {
                let mut keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut node.conn())
                    .expect("KEYS");
                keys.sort();
                keys
            })
            .collect()
    }
}
