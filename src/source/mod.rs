//! The source: connects to MySQL/MariaDB as a replica, streams binlog events from a
//! position, and assembles them into row changes and commits ([`SourceItem`]).
//!
//! Progress is only ever reported at commit: a [`Commit`] carries the position after its
//! transaction, which is what the sink stores as the checkpoint. Restarting from such a
//! position replays nothing that was applied and skips nothing that was not.

pub mod assembler;
pub mod cascades;
pub mod catalog;
pub mod charsets;
mod column_compression;
mod compressed;
pub mod ddl;
pub mod decode;
mod error;
pub mod file;
pub mod gtid;
mod jsonb;
mod jsondiff;
mod mariadb_types;
mod rowparse;
pub mod schema;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, Pool};
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, info, warn};

pub use assembler::{Assembler, Commit, SourceItem};
use error::stream_error;
pub use error::SourceError;
pub use gtid::{GtidScan, GtidSet, GtidState, GtidTracker, Gtids};

use crate::checkpoint::Position;
use crate::config::SourceConfig;
use crate::mapper::rules::RuleSet;
use crate::metrics::{EventLabels, Metrics};
use catalog::Catalog;
use server::ServerInfo;

/// The largest packet the client takes: the protocol's, and the default of the server's
/// `slave_max_allowed_packet`, up to which its binlog dump sends an event.
const MAX_PACKET: usize = 1 << 30;

/// Connection options from `[source]`: the URL (password already merged in), plus the CA
/// of `tls_ca_file`, which turns TLS on and verifies the server against it, and the
/// client certificate of `tls_cert_file` and `tls_key_file` (which turn TLS on too).
///
/// The client takes packets up to 1 GiB (`MAX_PACKET`), not the server's `max_allowed_packet`
/// (mysql_async's default): a rows event holds a row's before and after images, so
/// updating a row near that limit makes an event twice as large, which the server sends a
/// binlog reader all the same. Refused, it would be read again at every reconnect.
pub fn opts(config: &SourceConfig) -> Result<Opts, SourceError> {
    let opts = Opts::from_url(&config.url).map_err(mysql_async::Error::Url)?;
    let builder = mysql_async::OptsBuilder::from_opts(opts).max_allowed_packet(Some(MAX_PACKET));
    let identity = config
        .tls_cert_file
        .clone()
        .zip(config.tls_key_file.clone());
    if config.tls_ca_file.is_none() && identity.is_none() {
        return Ok(builder.into());
    }
    let opts: Opts = builder.into();
    let mut ssl = opts.ssl_opts().cloned().unwrap_or_default();
    if let Some(ca) = &config.tls_ca_file {
        ssl = ssl.with_root_certs(vec![ca.clone().into()]);
    }
    if let Some((cert, key)) = identity {
        let identity = mysql_async::ClientIdentity::new(cert.into(), key.into());
        ssl = ssl.with_client_identity(Some(identity));
    }
    Ok(mysql_async::OptsBuilder::from_opts(opts)
        .ssl_opts(Some(ssl))
        .into())
}

/// An open SQL connection plus what we learnt about the server.
pub async fn connect(config: &SourceConfig) -> Result<(Conn, ServerInfo), SourceError> {
    let mut conn = Conn::new(opts(config)?).await?;
    let info = server::info(&mut conn).await?;
    Ok((conn, info))
}

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    Position(Position),
    /// Resume after these GTIDs, on whichever server of the topology.
    Gtid(Gtids),
}

impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartAt::Position(p) => write!(f, "{p}"),
            StartAt::Gtid(g) => write!(f, "gtid {g}"),
        }
    }
}

/// Whether checkpoints carry GTIDs on this server: `source.gtid_mode` and the server
/// must agree. MariaDB always has GTIDs; MySQL only with `gtid_mode=ON`.
pub fn gtids_wanted(config: &SourceConfig, server: &ServerInfo) -> Result<bool, SourceError> {
    let has_gtids = server.mariadb || server.mysql_gtids;
    match config.gtid_mode.as_str() {
        "off" => Ok(false),
        "on" if !has_gtids => Err(SourceError::Setting(
            "source.gtid_mode = \"on\" but the server's gtid_mode is not ON; enable GTIDs \
             (gtid_mode=ON, enforce_gtid_consistency=ON) or set source.gtid_mode = \"auto\""
                .into(),
        )),
        _ => Ok(has_gtids),
    }
}

/// The GTID state at a file position (a transaction boundary), to track GTIDs from there
/// on. MariaDB answers `BINLOG_GTID_POS`; MySQL has no such function, so its binlog file
/// is read from the start: the PREVIOUS_GTIDS event there plus the GTIDs up to `position`.
async fn gtid_at(
    conn: &mut Conn,
    config: &SourceConfig,
    server: &ServerInfo,
    position: &Position,
) -> Result<Option<Gtids>, SourceError> {
    if !server.mariadb {
        return mysql_gtid_at(config, position)
            .await
            .map(|s| s.map(Gtids::MySql));
    }
    let text: Option<String> = conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&position.file, position.pos),
        )
        .await?;
    Ok(text.and_then(|t| GtidState::parse(&t).ok().map(Gtids::MariaDb)))
}

/// MySQL: the GTID set at `position`, read from its binlog file's start.
async fn mysql_gtid_at(
    config: &SourceConfig,
    position: &Position,
) -> Result<Option<GtidSet>, SourceError> {
    let mut conn = Conn::new(opts(config)?).await?;
    prepare_dump(&mut conn, config).await?;
    let request = dump_request(config.server_id)
        .with_filename(position.file.as_bytes())
        .with_pos(4u64);
    let mut stream = conn.get_binlog_stream(request).await?;
    let mut scan = GtidScan::new(position.pos);
    let read_timeout = Duration::from_secs(config.heartbeat_secs * 3);
    info!(position = %position, "reading the binlog file's GTIDs up to the start position");
    loop {
        let event = tokio::time::timeout(read_timeout, stream.next())
            .await
            .map_err(|_| SourceError::Stalled {
                secs: read_timeout.as_secs(),
            })?;
        let Some(event) = event else {
            return Ok(None);
        };
        let event = event.map_err(|e| stream_error(e, config.server_id))?;
        let found = scan
            .feed(&event)
            .map_err(|message| SourceError::Unsupported {
                position: position.clone(),
                message,
            })?;
        match found {
            Some(Gtids::MySql(set)) => return Ok(Some(set)),
            Some(Gtids::MariaDb(_)) => return Ok(None),
            None => {}
        }
    }
}

/// Session variables a binlog dump needs: heartbeats, so a dead connection is noticed
/// while idle, and MariaDB's GTID events (capability 4), so transaction boundaries are
/// explicit. MySQL 8.0.26+ reads the `source_` spellings (8.4 dropped the old names in
/// many places); MariaDB and older MySQL read `master_`. Setting both costs nothing: they
/// are plain user variables to a server that does not look at them. mysql_async itself
/// sets @master_binlog_checksum before the dump.
/// Said of a rule no table on the server matches (by `check`, and at each connect).
pub fn unmatched_rule_message(index: usize, pattern: &str) -> String {
    format!(
        "rules[{index}] table = \"{pattern}\" matches no table on the server: nothing is \
         applied for it until such a table is created; check the name (`database.table`, \
         case-sensitive unless the server sets lower_case_table_names)"
    )
}

/// A binlog dump registered as `cdc-cache/<host>/<pid>/<random>`, the name its
/// checkpoints carry, so that `SHOW REPLICAS` (`SHOW SLAVE HOSTS`) tells a DBA what
/// reads the binlog and where. Its port stays 0: a database replica reports its own
/// (`server::Replica::is_database_replica`).
fn dump_request(server_id: u32) -> BinlogStreamRequest<'static> {
    static NAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut name = format!("cdc-cache/{}", crate::checkpoint::this_process());
        // The protocol gives the name one length byte.
        while name.len() > 255 {
            name.pop();
        }
        name
    });
    BinlogStreamRequest::new(server_id).with_hostname(NAME.as_bytes())
}

async fn prepare_dump(conn: &mut Conn, config: &SourceConfig) -> Result<(), SourceError> {
    let heartbeat_ns = config.heartbeat_secs.saturating_mul(1_000_000_000);
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {heartbeat_ns}, \
         @source_heartbeat_period = {heartbeat_ns}, @source_binlog_checksum = 'ALL'"
    ))
    .await?;
    conn.query_drop("SET @mariadb_slave_capability = 4").await?;
    refuse_shared_server_id(conn, config.server_id).await
}

/// Refuses to stream under a server_id that a database replica is registered with: the
/// server would disconnect that replica for this daemon, and the replica, reconnecting,
/// this daemon. A user that may not list the replicas is not checked here (`check`
/// says so); the server ending the stream for that reason stops the daemon anyway.
async fn refuse_shared_server_id(conn: &mut Conn, server_id: u32) -> Result<(), SourceError> {
    let replicas = match server::replicas(conn).await? {
        Ok(replicas) => replicas,
        Err(refusal) => {
            debug!(%refusal, "the server's replicas cannot be listed: server_id not checked");
            return Ok(());
        }
    };
    match server::replica_using(&replicas, server_id) {
        Some(r) => Err(SourceError::ServerIdInUse {
            server_id,
            detail: format!(
                "the replica at {}:{} is registered with it (SHOW SLAVE HOSTS)",
                r.host, r.port
            ),
        }),
        None => Ok(()),
    }
}

/// A live binlog stream being assembled into transactions.
pub struct BinlogSource {
    stream: BinlogStream,
    assembler: Assembler,
    /// A connection silent for this long (no event, no heartbeat) is declared dead.
    read_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Event counters by raw type, resolved once: the label lookup is too slow per event.
    event_counters: Vec<Option<Counter>>,
    /// Named when the server ends the stream for another reader with the same id.
    server_id: u32,
}

/// Stops before streaming from a server whose settings make some changes impossible to
/// apply (statement-based logging, row images without every column): otherwise the
/// daemon would look healthy until the first such change, perhaps hours later. Checked
/// at every connection, so also after a failover to another server.
async fn refuse_unusable_settings(conn: &mut Conn) -> Result<(), SourceError> {
    let problems = server::settings(conn).await?.problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(SourceError::Setting(format!(
        "{} (`cdc-cache check` lists every problem)",
        problems.join("; ")
    )))
}

impl BinlogSource {
    /// Opens the stream at `start`: a transaction boundary (a checkpoint), as a file
    /// position or as a MariaDB GTID state.
    pub async fn open(
        config: &SourceConfig,
        start: &StartAt,
        rules: Arc<RuleSet>,
        server: &ServerInfo,
        metrics: Arc<Metrics>,
    ) -> Result<BinlogSource, SourceError> {
        let opts = opts(config)?;
        let mut conn = Conn::new(opts.clone()).await?;
        refuse_unusable_settings(&mut conn).await?;
        prepare_dump(&mut conn, config).await?;
        let checksum: Option<String> = conn.query_first("SELECT @@global.binlog_checksum").await?;
        let tracker = match (gtids_wanted(config, server)?, start) {
            (false, _) => None,
            (true, StartAt::Gtid(g)) => Some(GtidTracker::enabled(Some(g.clone()))),
            (true, StartAt::Position(p)) => {
                let state = gtid_at(&mut conn, config, server, p).await?;
                if state.is_none() && config.gtid_mode == "on" {
                    return Err(SourceError::Setting(format!(
                        "the server cannot tell the GTID state at {p}; with \
                         source.gtid_mode = \"on\" a GTID checkpoint is required"
                    )));
                }
                // Unknown here: the next binlog file's start event will tell.
                Some(GtidTracker::enabled(state))
            }
        };
        let mut sids = Vec::new();
        let (position, use_gtid) = match start {
            StartAt::Gtid(Gtids::MariaDb(state)) => {
                // The state is digits, dashes and commas only (it was parsed).
                conn.query_drop(format!("SET @slave_connect_state = '{state}'"))
                    .await?;
                // Strict: a server lacking part of the state refuses instead of guessing.
                conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
                // The server ignores file and offset and announces where it starts with
                // a ROTATE event.
                (Position::new("", 4), false)
            }
            StartAt::Gtid(Gtids::MySql(set)) => {
                // COM_BINLOG_DUMP_GTID: the server skips what the set holds and starts
                // with a ROTATE event naming its file.
                sids = set.to_sids();
                (Position::new("", 4), true)
            }
            StartAt::Position(p) => (p.clone(), false),
        };
        let mut request = dump_request(config.server_id)
            .with_filename(position.file.as_bytes())
            .with_pos(position.pos);
        if use_gtid {
            request = request.with_gtid().with_gtid_set(sids);
        }
        let stream = conn.get_binlog_stream(request).await?;
        let pool = Pool::new(opts);
        let catalog = Catalog::online(pool, server.mariadb);
        let mut assembler =
            Assembler::new(&position, config.chunk_rows, Some(rules.clone()), catalog);
        assembler.set_stream_checksums(checksum.as_deref() == Some("CRC32"));
        assembler.set_chunk_bytes(config.chunk_bytes);
        if let Some(tracker) = tracker {
            assembler.track_gtids(tracker);
        }
        assembler
            .catalog_mut()
            .check_rules(&rules, &position)
            .await
            .map_err(|e| match e {
                SourceError::Schema { .. } => SourceError::RulesAtStartup(Box::new(e)),
                other => other,
            })?;
        for &index in assembler.catalog_mut().unmatched_rules() {
            if let Some(rule) = rules.rules.iter().find(|r| r.index == index) {
                warn!("{}", unmatched_rule_message(index, &rule.table_pattern));
            }
        }
        Ok(BinlogSource {
            stream,
            assembler,
            read_timeout: Duration::from_secs(config.heartbeat_secs * 3),
            metrics,
            event_counters: vec![None; 256],
            server_id: config.server_id,
        })
    }

    /// Reads one event and appends what it completes to `out`.
    pub async fn next(&mut self, out: &mut Vec<SourceItem>) -> Result<(), SourceError> {
        let event = tokio::time::timeout(self.read_timeout, self.stream.next())
            .await
            .map_err(|_| SourceError::Stalled {
                secs: self.read_timeout.as_secs(),
            })?;
        let Some(event) = event else {
            return Err(SourceError::Mysql(mysql_async::Error::Io(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "binlog stream ended")
                    .into(),
            )));
        };
        let event = event.map_err(|e| stream_error(e, self.server_id))?;
        let raw = event.header().event_type_raw();
        self.count_event(raw);
        let before = out.len();
        self.assembler.handle(&event, out).await?;
        let progress = &self.metrics.progress;
        if raw == HEARTBEAT || raw == HEARTBEAT_V2 {
            if let Some(commit) = self.assembler.idle_commit() {
                out.push(SourceItem::Commit(commit));
            }
            progress.heartbeat();
            return Ok(());
        }
        for item in &out[before..] {
            if let SourceItem::Commit(c) | SourceItem::XaEnd { commit: c, .. } = item {
                if c.transaction {
                    progress.received_commit(c.time);
                }
            }
        }
        progress.event(event.header().timestamp(), self.assembler.in_transaction());
        Ok(())
    }

    fn count_event(&mut self, raw: u8) {
        let slot = &mut self.event_counters[usize::from(raw)];
        let counter = slot.get_or_insert_with(|| {
            let labels = EventLabels {
                r#type: event_type_name(raw),
            };
            self.metrics.events.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    pub fn position(&self) -> Position {
        self.assembler.position()
    }

    /// The GTIDs after everything read so far (at open: at the start position).
    pub fn gtids(&self) -> Option<String> {
        self.assembler.gtids()
    }
}

/// HEARTBEAT_LOG_EVENT: sent by the server while it has nothing else to send. MySQL
/// 8.0.26+ may send the V2 form (type 41) instead.
const HEARTBEAT: u8 = 27;
const HEARTBEAT_V2: u8 = 41;

/// The `type` label of `cdc_cache_binlog_events_total`: a fixed set of names.
fn event_type_name(raw: u8) -> &'static str {
    match raw {
        2 => "query",
        4 => "rotate",
        15 => "format_description",
        16 => "xid",
        19 => "table_map",
        23 => "write_rows_v1",
        24 => "update_rows_v1",
        25 => "delete_rows_v1",
        26 => "incident",
        27 | 41 => "heartbeat",
        29 => "rows_query",
        30 => "write_rows",
        31 => "update_rows",
        32 => "delete_rows",
        33 | 42 | 162 => "gtid",
        34 => "anonymous_gtid",
        35 => "previous_gtids",
        38 => "xa_prepare",
        39 => "partial_update_rows",
        40 => "transaction_payload",
        160 => "annotate_rows",
        161 => "binlog_checkpoint",
        163 => "gtid_list",
        _ => "other",
    }
}
