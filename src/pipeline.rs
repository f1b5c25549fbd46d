//! Wiring only: source task → bounded channel → apply stage, with retry from the checkpoint
//! on transient failures and a shutdown that never cuts an atomic step in half.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::applier::{Applier, Pending};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::consistency::{self, Sampler};
use crate::error::Error;
use crate::failover::{Next, Servers};
use crate::mapper::rules::RuleSet;
use crate::mapper::Mapper;
use crate::metrics::{Metrics, StageLabels, TargetLabels, MYSQL, REDIS};
use crate::monitor;
use crate::resume;
use crate::sink::{RedisSink, SinkError, StepLimits};
use crate::source::server::ServerInfo;
use crate::source::{self, BinlogSource, SourceError, SourceItem, StartAt};

/// Resolves when the Redis primary moved under the session (Sentinel).
type Moved = Pin<Box<dyn Future<Output = SinkError> + Send>>;

/// Runs the daemon until `shutdown` turns true (Ok) or a definite error (Err).
pub async fn run(
    config: &Config,
    rules: RuleSet,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let rules = Arc::new(rules);
    let min_backoff = Duration::from_millis(config.sink.min_backoff_ms);
    let max_backoff = Duration::from_millis(config.sink.max_backoff_ms);
    let mut backoff = min_backoff;
    let mut carried = Carried::default();
    let sampler = start_sampling(config, &rules, &metrics);
    let mut servers = Servers::new(config);
    loop {
        let before = carried.known.as_ref().map(|k| k.position.clone());
        let result = run_once(
            &servers.session_config(config),
            rules.clone(),
            &metrics,
            sampler.clone(),
            &mut shutdown,
            &mut carried,
        )
        .await;
        metrics.progress.stream_ended();
        // The stream is closed whatever ended the session: not ready until it reopens.
        metrics.set_connected(&MYSQL, false);
        let e = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        metrics
            .errors
            .get_or_create(&StageLabels { stage: e.stage() })
            .inc();
        let target = failed_target(&e);
        metrics.set_connected(target, false);
        let progressed = carried.known.as_ref().map(|k| &k.position) != before.as_ref();
        if servers.after_failure(&e, progressed, carried.authenticated) == Next::Stop {
            return Err(e);
        }
        if progressed {
            // The failed session applied something: this is a new incident, so the wait
            // starts small again instead of staying at its cap forever.
            backoff = min_backoff;
        }
        if failover_under_way(&e) {
            // Sentinel is promoting a replica: the cache is stale until the new primary
            // is found, and asking costs one round trip, so the wait does not grow.
            backoff = backoff.min(FAILOVER_BACKOFF).max(min_backoff);
        }
        let delay = jittered(backoff);
        warn!(error = %e, target = target.target, delay_ms = delay.as_millis() as u64, "reconnecting after transient failure");
        metrics.reconnects.get_or_create(target).inc();
        metrics.progress.set_backoff(true);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        metrics.progress.set_backoff(false);
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// Spawns the consistency checker when `[consistency] sample_rate` is above 0; it lives
/// as long as the daemon, across reconnects.
fn start_sampling(
    config: &Config,
    rules: &Arc<RuleSet>,
    metrics: &Arc<Metrics>,
) -> Option<Sampler> {
    let (sampler, rx) = Sampler::new(&config.consistency)?;
    tokio::spawn(consistency::run(
        config.consistency.clone(),
        config.source.clone(),
        config.redis.clone(),
        rules.clone(),
        metrics.clone(),
        rx,
    ));
    info!(
        sample_rate = config.consistency.sample_rate,
        delay_ms = config.consistency.delay_ms,
        repair = config.consistency.repair,
        "consistency sampling on"
    );
    Some(sampler)
}

/// The longest wait between asks while a Redis Sentinel failover is under way.
const FAILOVER_BACKOFF: Duration = Duration::from_secs(1);

fn failover_under_way(e: &Error) -> bool {
    matches!(e, Error::Sink(SinkError::NoPrimary { failover: true, .. }))
}

/// Which side a failure came from, for the reconnect count and the connection gauge.
fn failed_target(e: &Error) -> &'static TargetLabels {
    match e {
        Error::Sink(_) => &REDIS,
        _ => &MYSQL,
    }
}

/// Full jitter between half the delay and the delay: daemons that lost the same server
/// do not all come back in the same instant.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(fraction)
}

/// What one session hands the next.
#[derive(Default)]
struct Carried {
    /// The last checkpoint this process knows was in Redis, so that a Redis that comes
    /// back empty does not send the daemon to the start policy.
    known: Option<Checkpoint>,
    /// XA transactions prepared and not yet resolved: where to rewind to if Redis loses
    /// their stashes (see `applier::Pending`).
    pending: Pending,
    /// Both servers took this process's credentials once: a refusal now is taken for a
    /// password being rotated, and retried (`Servers::after_failure`).
    authenticated: bool,
}

/// One connected session: resume from the checkpoint, stream, apply.
async fn run_once(
    config: &Config,
    rules: Arc<RuleSet>,
    metrics: &Arc<Metrics>,
    sampler: Option<Sampler>,
    shutdown: &mut watch::Receiver<bool>,
    carried: &mut Carried,
) -> Result<(), Error> {
    let Carried {
        known,
        pending,
        authenticated,
    } = carried;
    let (mut sink, in_redis) = connect_redis(config, &rules, metrics, pending).await?;
    if let Some(found) = &in_redis {
        resume::refuse_foreign_advance(found, known.as_ref(), &config.checkpoint.key)?;
    }
    let mut checkpoint = match &in_redis {
        Some(cp) => Some(cp.clone()),
        None => resume::after_loss(&config.checkpoint.key, known.as_ref(), pending, metrics),
    };
    known.clone_from(&checkpoint);
    let (mut conn, server) = source::connect(&config.source).await?;
    *authenticated = true;
    let start = resume::start_at(&mut conn, config, &server, checkpoint.as_ref()).await?;
    drop(conn);
    let source = BinlogSource::open(
        &config.source,
        &start,
        rules.clone(),
        &server,
        metrics.clone(),
    )
    .await?;
    if in_redis.is_none() {
        let initial =
            write_initial(&mut sink, &start, checkpoint.as_ref(), &server, &source).await?;
        // From now on this is the position to come back to if Redis loses its data: the
        // start policy must never be consulted twice (it would skip what came between).
        *known = Some(initial.clone());
        checkpoint = Some(initial);
    }
    metrics.set_connected(&MYSQL, true);
    metrics.progress.stream_started();
    if let Some(cp) = &checkpoint {
        metrics.set_checkpoint(cp);
    }
    info!(position = %start, server = %server.identity, version = %server.version, "connected to mysql; streaming binlog");
    let monitor = tokio::spawn(monitor::run(
        config.source.clone(),
        config.redis.clone(),
        server.clone(),
        metrics.clone(),
    ));

    let (tx, mut rx) = mpsc::channel(config.source.channel_capacity);
    let source_task = tokio::spawn(read_source(source, tx));
    let mut moved: Moved = Box::pin(sink.primary_moved(&config.redis));
    let redis_url = sink.primary_url().unwrap_or(&config.redis.url);
    let sampler = sampler.map(|s| s.for_session(&config.source.url, Some(redis_url)));
    let mut applier = Applier::new(
        Mapper::new((*rules).clone()),
        sink,
        StepLimits {
            ops: config.sink.max_ops_per_step,
            bytes: config.sink.max_bytes_per_step,
        },
        server.identity.clone(),
        config.checkpoint.file.clone(),
        metrics.clone(),
        sampler,
    )
    .resuming(checkpoint.clone(), std::mem::take(pending));
    let linger = Duration::from_millis(config.sink.linger_ms);
    let result = apply_loop(&mut applier, &mut rx, shutdown, &mut moved, linger).await;
    source_task.abort();
    monitor.abort();
    if let Some(applied) = applier.applied() {
        *known = Some(applied.clone());
    }
    *pending = applier.take_pending();
    let stopped_at = applier
        .applied()
        .map(|c| c.position.to_string())
        .unwrap_or_else(|| start.to_string());
    match result {
        Ok(()) => {
            info!(position = %stopped_at, "stopped");
            Ok(())
        }
        // The source ended: its error is the reason.
        Err(None) => match (source_task.await, &start, &checkpoint) {
            (Ok(Err(e)), StartAt::Gtid(_), Some(cp)) => {
                Err(resume::explain_gtid_refusal(config, cp, e.into()).await)
            }
            (Ok(Err(e)), _, _) => Err(e.into()),
            _ => Err(SourceError::Stalled { secs: 0 }.into()),
        },
        Err(Some(e)) => Err(e),
    }
}

/// Connects to Redis, checks what a session needs there (the user may write the rules'
/// keys; no load is filling the cache), and reads the checkpoint.
async fn connect_redis(
    config: &Config,
    rules: &RuleSet,
    metrics: &Metrics,
    pending: &mut Pending,
) -> Result<(RedisSink, Option<Checkpoint>), Error> {
    let mut sink = RedisSink::connect(&config.redis, &config.checkpoint.key).await?;
    if let Some(warning) = sink.eviction_warning().await {
        warn!("{warning}");
    }
    sink.probe_writes(rules).await?;
    let in_redis = sink.load_checkpoint().await?;
    if let Some(by) = in_redis.as_ref().and_then(|c| c.loading.clone()) {
        return Err(SinkError::Loading {
            key: config.checkpoint.key.clone(),
            by,
        }
        .into());
    }
    if let Some(found) = &in_redis {
        pending.adopt_stashes(&mut sink, found).await?;
    }
    metrics.set_connected(&REDIS, true);
    info!(
        checkpoint = in_redis
            .as_ref()
            .map(|c| c.position.to_string())
            .as_deref()
            .unwrap_or("none"),
        "connected to redis"
    );
    Ok((sink, in_redis))
}

/// Records where a session without a checkpoint starts, before applying anything: a
/// restart must resume there, not re-resolve `current` and skip what was committed in
/// between. With the GTIDs, so that even this first checkpoint survives a failover.
async fn write_initial(
    sink: &mut RedisSink,
    start: &StartAt,
    resumed: Option<&Checkpoint>,
    server: &ServerInfo,
    source: &BinlogSource,
) -> Result<Checkpoint, Error> {
    let initial = match (start, resumed) {
        (StartAt::Position(p), _) => {
            Checkpoint::new(p.clone(), server.identity.clone(), 0).with_gtid(source.gtids())
        }
        (StartAt::Gtid(_), Some(cp)) => cp.clone(),
        (StartAt::Gtid(g), None) => unreachable!("GTID start {g} without a checkpoint"),
    };
    sink.apply(&[], Some(&initial)).await?;
    info!(position = %start, "initial checkpoint written");
    Ok(initial)
}

/// Applies items as they come; batches what is ready; sends a step when the channel runs
/// dry. One step may wait for Redis's reply while the next is prepared and sent (the
/// fence orders them), so a commit that arrives while a step is in flight goes out at
/// once instead of after that step's reply. At shutdown every step is waited for.
/// `Err(None)` means the source ended. When Sentinel names another Redis primary
/// (`moved`), the session ends without waiting: the new one holds the checkpoint to
/// resume from.
async fn apply_loop(
    applier: &mut Applier,
    rx: &mut mpsc::Receiver<SourceItem>,
    shutdown: &mut watch::Receiver<bool>,
    moved: &mut Moved,
    linger: Duration,
) -> Result<(), Option<Error>> {
    loop {
        let in_flight = applier.in_flight();
        let item = tokio::select! {
            biased;
            _ = shutdown.changed() => None,
            e = &mut *moved => return Err(Some(e.into())),
            landed = applier.land(), if in_flight => {
                landed.map_err(Some)?;
                continue;
            }
            item = rx.recv() => Some(item),
        };
        // Shutdown: send what is complete and wait for every step.
        let Some(item) = item else {
            applier.flush().await.map_err(Some)?;
            return applier.settle().await.map_err(Some);
        };
        // The source ended: the same, then report it.
        let Some(item) = item else {
            applier.flush().await.map_err(Some)?;
            applier.settle().await.map_err(Some)?;
            return Err(None);
        };
        applier.handle(item).await.map_err(Some)?;
        while let Ok(item) = rx.try_recv() {
            applier.handle(item).await.map_err(Some)?;
            if applier.step_full() {
                applier.flush().await.map_err(Some)?;
            }
        }
        gather(applier, rx, linger).await.map_err(Some)?;
        applier.flush().await.map_err(Some)?;
    }
}

/// With `sink.linger_ms`, keeps taking items for that long or until the step is full, so
/// that a busy stream's transactions go to Redis many to a step rather than two or three
/// (measured: 5.6x fewer steps and a third less Redis CPU under sysbench, for ~1 ms more
/// latency). During a catch-up the step fills first, so nothing waits.
async fn gather(
    applier: &mut Applier,
    rx: &mut mpsc::Receiver<SourceItem>,
    linger: Duration,
) -> Result<(), Error> {
    if linger.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + linger;
    while !applier.step_full() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => applier.handle(item).await?,
            // Time is up, or the source ended (the apply loop sees that next).
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
}

async fn read_source(
    mut source: BinlogSource,
    tx: mpsc::Sender<SourceItem>,
) -> Result<(), SourceError> {
    let mut items = Vec::new();
    loop {
        source.next(&mut items).await?;
        for item in items.drain(..) {
            if tx.send(item).await.is_err() {
                return Ok(()); // the apply stage is gone: shutting down
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_primary(failover: bool) -> Error {
        Error::Sink(SinkError::NoPrimary {
            master: "cache".into(),
            failover,
            detail: String::new(),
        })
    }

    #[test]
    fn only_a_failover_under_way_keeps_the_wait_short() {
        assert!(failover_under_way(&no_primary(true)));
        // Sentinels out of reach are an outage: the wait grows as for a Redis down.
        assert!(!failover_under_way(&no_primary(false)));
        let moved = Error::Sink(SinkError::PrimaryMoved {
            master: "cache".into(),
            from: "a:1".into(),
            to: "b:2".into(),
        });
        assert!(!failover_under_way(&moved));
    }
}
