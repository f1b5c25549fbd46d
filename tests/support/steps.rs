//! The atomic step against a real Redis, driven from a test: operations, checkpoints and
//! a connected sink (`sink_steps`, `cluster_steps`).

use cdc_cache::checkpoint::{Checkpoint, Position, ServerIdentity};
use cdc_cache::config::RedisConfig;
use cdc_cache::mapper::CacheOp;
use cdc_cache::sink::RedisSink;

use super::Redis;

pub fn set(key: &str, value: &str, ttl_ms: u64) -> CacheOp {
    CacheOp::Set {
        key: key.into(),
        value: value.into(),
        ttl_ms,
    }
}

pub fn del(key: &str) -> CacheOp {
    CacheOp::Del { key: key.into() }
}

pub fn checkpoint(pos: u64) -> Checkpoint {
    let server = ServerIdentity {
        server_id: 1,
        uuid_or_host: "db".into(),
    };
    Checkpoint::new(Position::new("binlog.000001", pos), server, 0)
}

pub fn sink(redis: &Redis, rt: &tokio::runtime::Runtime) -> RedisSink {
    sink_at(&redis.url(), false, rt)
}

pub fn sink_at(url: &str, cluster: bool, rt: &tokio::runtime::Runtime) -> RedisSink {
    let config = RedisConfig {
        url: url.into(),
        password_file: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        sentinel: None,
        cluster,
        wait_replicas: 0,
        wait_timeout_ms: 5000,
    };
    rt.block_on(async {
        let mut sink = RedisSink::connect(&config, "cp").await.expect("connect");
        sink.load_checkpoint().await.expect("load");
        sink
    })
}
