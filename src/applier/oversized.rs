//! What the Redis server takes from one client (`sink::Limits`), on the apply path: steps
//! lowered to fit its query buffer, and a row with an operation it would not take stopped
//! right before its transaction instead of being sent.

use tracing::warn;

use super::Applier;
use crate::chunk::EventView;
use crate::error::Error;
use crate::sink::{RedisSink, SinkError, StepLimits};

/// `limits` lowered to what the Redis of `sink` takes in one step, said when it is.
pub(super) fn within_redis(limits: StepLimits, sink: &RedisSink) -> StepLimits {
    let redis = sink.limits();
    let lowered = limits.for_redis(redis);
    if lowered != limits {
        warn!(
            max_bytes_per_step = limits.bytes,
            client_query_buffer_limit = redis.query_buffer,
            step_bytes = lowered.bytes,
            "sink.max_bytes_per_step is more than half of Redis's client-query-buffer-limit, \
             which newer Redis versions apply to the commands a MULTI queues: steps are made \
             smaller; raise client-query-buffer-limit, or lower sink.max_bytes_per_step, to \
             silence this"
        );
    }
    lowered
}

impl Applier {
    /// Stops at a row with an operation Redis would not take, once the transactions
    /// before it have landed: the checkpoint is then right before the row's transaction,
    /// and the error names the row's table and rows event.
    pub(super) async fn refuse_oversized(
        &mut self,
        from: usize,
        event: &EventView<'_>,
    ) -> Result<(), Error> {
        let Some(over) = self.sink.limits().oversized(self.step.ops_since(from)) else {
            return Ok(());
        };
        self.flush().await?;
        self.settle().await?;
        let at = format!(
            "a row of table {} in the rows event at binlog position {}, whose transaction was \
             not applied (the checkpoint stays before it)",
            event.table().qualified(),
            event.position()
        );
        Err(SinkError::too_large(over, at).into())
    }
}
