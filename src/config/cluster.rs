//! `redis.cluster`: what a Redis Cluster cannot be combined with.

use super::{Config, ConfigError};

pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if !config.redis.cluster {
        if config.redis.wait_replicas > 0 {
            return Err(ConfigError::invalid(
                "redis.wait_replicas",
                "is for a Redis Cluster (redis.cluster = true), whose checkpoint lives on \
                 another node than most keys; a standalone Redis keeps the checkpoint with \
                 the data, and a failover loses both together",
            ));
        }
        return Ok(());
    }
    if config.redis.wait_replicas > 0 && config.redis.wait_timeout_ms == 0 {
        return Err(ConfigError::invalid(
            "redis.wait_timeout_ms",
            "must be above 0 with redis.wait_replicas: WAIT 0 would wait forever",
        ));
    }
    if config.redis.sentinel.is_some() {
        return Err(ConfigError::invalid(
            "redis.cluster",
            "a Redis Cluster fails over by itself and is not watched by Sentinels: remove \
             [redis.sentinel], or set redis.cluster = false",
        ));
    }
    // The keys cdc-cache keeps next to the cache's (per-slot fences, XA stashes) start
    // with the checkpoint key and are placed in a slot by a hash tag of their own.
    let key = &config.checkpoint.key;
    if key.contains('{') || key.contains('}') {
        return Err(ConfigError::invalid(
            "checkpoint.key",
            format!(
                "`{key}` holds a brace: with redis.cluster the keys under the checkpoint key \
                 are placed in hash slots by a `{{…}}` tag of their own; use a key without braces"
            ),
        ));
    }
    if config.consistency.sample_rate > 0.0 {
        return Err(ConfigError::invalid(
            "consistency.sample_rate",
            "consistency sampling does not support redis.cluster yet: set it to 0, and use \
             `cdc-cache verify`",
        ));
    }
    Ok(())
}
