//! The `cdc-cache` binary: parse the command line, set up logging, call the library, map
//! errors to exit codes (0 ok, 1 runtime failure, 2 bad configuration or usage, 3 definite
//! replication error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use cdc_cache::commands::{check, load, replay, reset, status, verify};
use cdc_cache::config::{Config, LogConfig};
use cdc_cache::metrics::{self, Metrics};
use cdc_cache::{pipeline, Error};

/// Keeps Redis caches exactly consistent with MySQL / MariaDB by tailing the binlog.
///
/// Every committed row change becomes the cache writes or deletes that the [[rules]] of the
/// config ask for, applied to Redis together with the binlog position in one atomic step,
/// so a restart resumes exactly where the last run stopped.
#[derive(Parser)]
#[command(version, about, long_about, after_help = EXIT_CODES)]
struct Cli {
    /// The TOML configuration file. Environment variables CDC_CACHE_<SECTION>__<KEY>
    /// override it (for example CDC_CACHE_SOURCE__URL).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// What a supervisor (systemd, Kubernetes) needs to decide whether a restart can help.
const EXIT_CODES: &str = "\
Exit codes:
  0  ok (run: stopped by SIGTERM/SIGINT after its current step)
  1  any other failure, named in the log (transient ones are retried, not exits)
  2  bad configuration or usage, or a Redis user not allowed what the rules need: fix it
  3  definite replication error (fail-closed stop; the checkpoint stays before the
     problem): fix the cause named in the log, then restart
  4  verify found mismatches";

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: stream the binlog and apply changes to Redis until SIGTERM/SIGINT,
    /// which finish the current atomic step and exit 0.
    #[command(after_help = EXIT_CODES)]
    Run,
    /// Validate the config, connect to MySQL and Redis, check server settings, privileges
    /// and rule columns; print every problem with its fix. Exit 2 if any.
    Check {
        /// Only validate the configuration file; connect to nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Print the checkpoint, the server's binlog head and the lag (bytes, seconds) as JSON.
    Status,
    /// Re-sync from scratch when the checkpoint cannot be resumed (binlog purged, another
    /// server, position beyond the head): delete every key the rules can have written
    /// (SCAN over the key patterns, never FLUSHDB) and set the checkpoint to the server's
    /// current head. A daemon still running is fenced off by the new checkpoint and stops.
    Reset {
        /// Really do it; without this flag, only show what would be deleted.
        #[arg(long)]
        yes: bool,
    },
    /// Fill the cache from the database: write every row's value for each `upsert` rule,
    /// read in one consistent snapshot, then set the checkpoint to the snapshot's binlog
    /// position so that `run` applies exactly the changes after it. Run it before the
    /// first start. On MySQL it takes FLUSH TABLES WITH READ LOCK for a moment to find
    /// the snapshot's position (privilege RELOAD); MariaDB reports it without a lock.
    /// A daemon that starts meanwhile waits for the load to finish.
    Load {
        /// With a checkpoint already in Redis (a daemon maintains the cache): rebuild it.
        /// Keys of `delete` rules (and keys no rule's column types make) are deleted
        /// first; `upsert` keys stay readable while they are rewritten, and those no row
        /// produces are deleted after. A daemon still running is fenced off and stops;
        /// restarted, it continues from the load.
        #[arg(long)]
        yes: bool,
    },
    /// Compare Redis with the database for every rule: each row's key and value (primary-key
    /// chunks, never a whole table in memory), then every key in Redis matching a rule's
    /// pattern traced back to its row. Prints each mismatch (missing, different, extra);
    /// exit 4 if there is any. Run it while the daemon is caught up.
    Verify {
        /// Check N random rows per rule and table, and N scanned keys per rule, instead of
        /// everything.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        /// List keys absent from Redis but do not count them: for a cache filled on read,
        /// or one whose daemon started after rows that have not changed since. Different
        /// and extra keys (stale data) still exit 4.
        #[arg(long)]
        allow_missing: bool,
    },
    /// Decode recorded binlog files and print committed row changes as JSON lines, or with
    /// --config the cache operations the rules produce. Never touches Redis.
    Replay {
        /// Binlog files, replayed in the order given.
        #[arg(required = true, value_name = "BINLOG_FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the daemon's work is a pipeline of small steps (a binlog packet, a
    // chunk on the channel, a Redis reply), and on a multi-threaded runtime each hand-over
    // woke another thread. Measured live, context switches were a third of its CPU time;
    // catch-up is bound by Redis and the database, not by a second daemon thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %e, "stopping");
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let config = cli.config;
    match cli.command {
        Command::Replay { files } => replay_files(config, &files).await,
        Command::Run => run(&require_config(&config)?).await,
        Command::Check { offline } => check_config(&require_config(&config)?, offline).await,
        Command::Verify {
            sample,
            allow_missing,
        } => verify_cache(&require_config(&config)?, sample, allow_missing).await,
        Command::Reset { yes } => reset_cache(&require_config(&config)?, yes).await,
        Command::Load { yes } => load_cache(&require_config(&config)?, yes).await,
        Command::Status => {
            let (config, _) = Config::load_valid(&require_config(&config)?)?;
            let status = status::status(&config).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

async fn replay_files(config: Option<PathBuf>, files: &[PathBuf]) -> Result<u8, Error> {
    let rules = match &config {
        Some(path) => Some(Config::load_valid(path)?.1),
        None => None,
    };
    init_logging(&LogConfig::default());
    let stats = replay::replay(files, rules, &mut std::io::stdout().lock()).await?;
    tracing::info!(
        transactions = stats.transactions,
        row_changes = stats.row_changes,
        "replay done"
    );
    Ok(0)
}

/// The daemon, until a signal (exit 0) or a definite error.
async fn run(path: &Path) -> Result<u8, Error> {
    let (config, rules) = Config::load_valid(path)?;
    init_logging(&config.log);
    // What this run was started with, so that a log read later says it.
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        rules = rules.rules.len(),
        server_id = config.source.server_id,
        start = %config.source.start,
        checkpoint = %config.checkpoint.key,
        max_ops_per_step = config.sink.max_ops_per_step,
        max_bytes_per_step = config.sink.max_bytes_per_step,
        linger_ms = config.sink.linger_ms,
        "starting"
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: finishing the current step");
        let _ = tx.send(true);
    });
    let metrics = Arc::new(Metrics::new(config.source.heartbeat_secs));
    let server = metrics::serve(&config.metrics.listen, metrics.clone()).await?;
    tokio::spawn(server);
    tracing::info!(listen = %config.metrics.listen, "serving /metrics, /healthz, /readyz");
    pipeline::run(&config, rules, metrics, rx).await?;
    Ok(0)
}

async fn check_config(path: &Path, offline: bool) -> Result<u8, Error> {
    let (config, rules) = Config::load_valid(path)?;
    let report = check::check(&config, &rules, offline).await;
    for line in &report.ok {
        println!("ok       {line}");
    }
    for line in &report.warnings {
        println!("warning  {line}");
    }
    for line in &report.problems {
        println!("PROBLEM  {line}");
    }
    Ok(if report.problems.is_empty() { 0 } else { 2 })
}

async fn verify_cache(path: &Path, sample: Option<u64>, allow_missing: bool) -> Result<u8, Error> {
    let (config, rules) = Config::load_valid(path)?;
    init_logging(&config.log);
    let report = verify::verify(&config, &rules, sample, print_mismatch).await?;
    let counted = if allow_missing {
        report.mismatches() - report.missing
    } else {
        report.mismatches()
    };
    println!(
        "verified {} rows ({} keys compared), scanned {} keys: {counted} mismatches \
         ({} missing{}, {} different, {} extra)",
        report.rows,
        report.keys_compared,
        report.keys_scanned,
        report.missing,
        if allow_missing { ", not counted" } else { "" },
        report.different,
        report.extra
    );
    Ok(if counted == 0 { 0 } else { 4 })
}

async fn reset_cache(path: &Path, yes: bool) -> Result<u8, Error> {
    let (config, rules) = Config::load_valid(path)?;
    init_logging(&config.log);
    if !yes {
        println!("would delete every key matching:");
        for p in reset::patterns(&rules) {
            println!("  {p}");
        }
        println!(
            "and set the checkpoint `{}` to the server's head",
            config.checkpoint.key
        );
        return Err(Error::Usage("nothing done: pass --yes to reset".into()));
    }
    let report = reset::reset(&config, &rules).await?;
    for p in &report.patterns {
        println!("scanned  {p}");
    }
    println!("deleted  {} key(s)", report.deleted);
    println!(
        "checkpoint set to {} (the server's head)",
        report.checkpoint
    );
    Ok(0)
}

async fn load_cache(path: &Path, yes: bool) -> Result<u8, Error> {
    let (config, rules) = Config::load_valid(path)?;
    init_logging(&config.log);
    let report = load::load(&config, &rules, yes).await?;
    if yes {
        println!(
            "deleted  {} key(s) a load cannot rewrite (delete rules', and those no \
             rule's column types make)",
            report.deleted
        );
    }
    println!(
        "loaded   {} row(s) of {} table(s): {} key(s) written",
        report.rows, report.tables, report.keys
    );
    println!("deleted  {} key(s) no row produces", report.swept);
    if let Some(position) = &report.position {
        println!("checkpoint set to {position} (the snapshot's binlog position)");
    }
    Ok(0)
}

fn print_mismatch(m: &verify::Mismatch) {
    use verify::Mismatch;
    match m {
        Mismatch::Missing { key, table, rule } => {
            println!("missing    {key}  (row in {table}, rules[{rule}])")
        }
        Mismatch::Different {
            key,
            table,
            rule,
            redis,
            database,
        } => println!(
            "different  {key}  ({table}, rules[{rule}])\n    redis:    {}\n    database: {}",
            shorten(redis),
            shorten(database)
        ),
        Mismatch::Extra { key, rule } => {
            println!("extra      {key}  (rules[{rule}]: no row produces this key)")
        }
    }
}

/// Long values are cut for the terminal; the key is enough to look them up.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn require_config(path: &Option<PathBuf>) -> Result<PathBuf, Error> {
    path.clone()
        .ok_or_else(|| Error::Usage("this command needs --config FILE".into()))
}

fn init_logging(log: &LogConfig) {
    // The level comes from the config, so CDC_CACHE_LOG__LEVEL overrides it like any key.
    let filter = tracing_subscriber::EnvFilter::new(&log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            // By default SIGHUP would end the process mid-step, unlogged (a closed
            // terminal, or a reload habit). The configuration is only read at start.
            _ = hangup.recv() => tracing::info!(
                "SIGHUP ignored: the configuration is read at start; restart the daemon to \
                 apply a change"
            ),
        }
    }
}
