//! Source errors, split into *definite* (the binlog cannot be applied correctly: stop) and
//! *transient* (the connection failed: retry from the checkpoint).

use crate::checkpoint::Position;
use crate::source::decode::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("MySQL: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("no binlog event or heartbeat for {secs} s; the connection is presumed dead")]
    Stalled { secs: u64 },
    #[error("table {table} at binlog position {position}: {message}")]
    Schema {
        table: String,
        position: Position,
        message: String,
    },
    #[error("table {table}, rows event at binlog position {position}: {source}")]
    Decode {
        table: String,
        position: Position,
        source: DecodeError,
    },
    #[error(
        "checksum mismatch in the event ending at binlog position {position}: stored \
         {stored:08x}, computed {computed:08x}; the binlog or the network corrupted it"
    )]
    Checksum {
        position: Position,
        stored: u32,
        computed: u32,
    },
    #[error("binlog position {position}: {message}")]
    Unsupported { position: Position, message: String },
    #[error(
        "the checkpoint {checkpoint} is no longer on the server (oldest binlog: {oldest}); \
         changes since then are lost to this replica. Run `cdc-cache reset --yes` to drop the \
         cached keys and restart from the server's head, or `cdc-cache load --yes` to also \
         write the upsert rules' values again"
    )]
    Purged {
        checkpoint: Position,
        oldest: String,
    },
    #[error(
        "the start position {requested} is ahead of the server's head {head}: the server was \
         restored or replaced; check [source] url, or run `cdc-cache reset --yes`"
    )]
    AheadOfHead { requested: Position, head: Position },
    #[error(
        "the checkpoint was written for {checkpoint} but the server is {server}; a file \
         position means nothing on another server. Point [source] url at the original \
         server, or run `cdc-cache reset --yes`"
    )]
    OtherServer { checkpoint: String, server: String },
    #[error(
        "the checkpoint ({checkpoint}, written for {checkpoint_server}) cannot be resumed on \
         {server}: its binlog lacks GTID {missing} (its GTID state: `{state}`). It is not a \
         server of the same replication topology, or it is behind. Point [source] url at a \
         server that has these transactions, or run `cdc-cache reset --yes`"
    )]
    GtidMissing {
        checkpoint: String,
        checkpoint_server: String,
        server: String,
        missing: String,
        state: String,
    },
    #[error(
        "the checkpoint ({checkpoint}) cannot be resumed: the server refused its GTID state \
         ({detail}); oldest binlog on the server: {oldest}. If binlogs were purged, changes \
         since then are lost to this replica: run `cdc-cache reset --yes` (or `cdc-cache load \
         --yes` to also write the upsert rules' values again)"
    )]
    GtidRefused {
        checkpoint: String,
        oldest: String,
        detail: String,
    },
    /// A rule does not fit the tables as they are at startup: a configuration problem.
    #[error("{0}; fix the rule in the config (or the table), then start again")]
    RulesAtStartup(Box<SourceError>),
    #[error("server setting: {0}")]
    Setting(String),
    /// Two binlog readers under one server_id make the server disconnect one whenever the
    /// other connects: retrying would only take turns with the other reader.
    #[error(
        "source.server_id {server_id} is in use by another replica of the server: {detail}; \
         give every replica and every cdc-cache its own server_id, then start again"
    )]
    ServerIdInUse { server_id: u32, detail: String },
    #[error("binlog file {file}: {message}")]
    File { file: String, message: String },
}

impl SourceError {
    /// True when retrying cannot help: the daemon must stop (exit code 3).
    pub fn is_definite(&self) -> bool {
        match self {
            SourceError::Mysql(e) => mysql_is_definite(e),
            SourceError::Stalled { .. } => false,
            _ => true,
        }
    }

    /// `source` for connection and server problems, `decode` for what the binlog holds.
    pub fn stage(&self) -> &'static str {
        match self {
            SourceError::Decode { .. }
            | SourceError::Checksum { .. }
            | SourceError::Unsupported { .. }
            | SourceError::Schema { .. }
            | SourceError::File { .. } => "decode",
            SourceError::RulesAtStartup(_) => "config",
            _ => "source",
        }
    }
}

/// The error a binlog stream ended with. The server ends a dump when another reader
/// connects with the same server_id (MariaDB's ER_SLAVE_SAME_ID 4052; MySQL's 1236 with
/// that text).
pub fn stream_error(e: mysql_async::Error, server_id: u32) -> SourceError {
    match &e {
        mysql_async::Error::Server(s)
            if s.code == 4052 || s.message.contains("same server_uuid/server_id") =>
        {
            SourceError::ServerIdInUse {
                server_id,
                detail: format!(
                    "the server ended this daemon's binlog stream when another reader \
                     connected with it (server error {}: {})",
                    s.code, s.message
                ),
            }
        }
        _ => SourceError::Mysql(e),
    }
}

/// Server errors that no retry fixes. 1236 is the replication fatal error ("could not find
/// first log file", "position beyond end of file", …); the others are privilege and
/// configuration errors.
fn mysql_is_definite(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => matches!(
            s.code,
            1236 | 1045 | 1044 | 1142 | 1227 | 1381 | 1049 | 1698 | 1370
        ),
        mysql_async::Error::Url(_) => true,
        _ => false,
    }
}
