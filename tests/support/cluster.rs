//! A private three-node Redis Cluster (primaries only), slots split evenly, and reads that
//! follow the keys to their node.

use std::time::Duration;

use redis::cluster::ClusterClient;

use super::servers::{wait_until, Redis};

pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts `n` nodes, gives each an equal range of the 16384 slots and joins them.
    pub fn start(n: u16) -> Self {
        let nodes: Vec<Redis> = (0..n)
            .map(|_| {
                Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
            })
            .collect();
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
                nodes[0].command(&format!("CLUSTER MEET 127.0.0.1 {}", node.port));
            }
        }
        let cluster = Cluster { nodes };
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
        ClusterClient::new(vec![self.url()])
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
