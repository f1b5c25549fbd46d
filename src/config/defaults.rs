//! Built-in defaults, the lowest layer under the config file and the environment. Each
//! says why when the value was chosen by measurement rather than convention.

use super::{CheckpointConfig, ConsistencyConfig, LogConfig, MetricsConfig, SinkConfig};

pub(super) fn default_start() -> String {
    "current".into()
}
pub(super) fn default_chunk_rows() -> usize {
    1024
}
pub(super) fn default_channel_capacity() -> usize {
    64
}
/// Far above a chunk of ordinary rows (1,024 sysbench rows are ~200 KiB), so only wide
/// rows end a chunk early: 64 chunks then hold at most ~64 MiB plus one rows event each.
pub(super) fn default_chunk_bytes() -> usize {
    1 << 20
}
pub(super) fn default_heartbeat_secs() -> u64 {
    5
}
pub(super) fn default_checkpoint_key() -> String {
    "cdc-cache:checkpoint:default".into()
}
/// Measured (BENCHMARKS.md): 1,000 operations per step caught up nearly twice as fast as
/// 10,000, with less CPU on both sides; a step of ~250 KB passes the loopback socket
/// whole, while Redis reads a multi-megabyte command in pieces as the daemon writes it.
pub(super) fn default_max_ops_per_step() -> usize {
    1_000
}
/// A thousand ordinary rows make ~250 KiB; this only splits steps of wide rows.
pub(super) fn default_max_bytes_per_step() -> usize {
    8 << 20
}
pub(super) fn default_min_backoff_ms() -> u64 {
    100
}
pub(super) fn default_max_backoff_ms() -> u64 {
    10_000
}
pub(super) fn default_metrics_listen() -> String {
    "127.0.0.1:9187".into()
}
pub(super) fn default_gtid_mode() -> String {
    "auto".into()
}
pub(super) fn default_consistency_delay_ms() -> u64 {
    1000
}
pub(super) fn default_log_format() -> String {
    "text".into()
}
pub(super) fn default_log_level() -> String {
    "info".into()
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            key: default_checkpoint_key(),
            file: None,
        }
    }
}
impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            max_ops_per_step: default_max_ops_per_step(),
            max_bytes_per_step: default_max_bytes_per_step(),
            min_backoff_ms: default_min_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            linger_ms: 0,
        }
    }
}
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}
impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            sample_rate: 0.0,
            delay_ms: default_consistency_delay_ms(),
            repair: false,
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}
