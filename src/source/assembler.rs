//! Transaction assembly: binlog events in, row changes and commits out.
//!
//! One function per event kind. Row changes are handed out in chunks of at most
//! `chunk_rows`, so a huge transaction never sits in memory whole; a [`Commit`] follows the
//! last chunk of each transaction, carrying the position *after* its commit event. Nothing
//! about a transaction is final before its commit: the sink applies a transaction's
//! operations and the checkpoint past it together.
//!
//! Used by the live stream and by offline replay alike.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_common::binlog::consts::{BinlogChecksumAlg, EventType};
use mysql_common::binlog::events::{Event, RotateEvent, TableMapEvent};

use crate::checkpoint::Position;
use crate::chunk::Chunk;
use crate::mapper::rules::RuleSet;
use crate::mapper::KeyShapes;
use crate::source::catalog::Catalog;
use crate::source::compressed;
use crate::source::ddl::Copies;
use crate::source::decode::Wanted;
use crate::source::gtid::{GtidTracker, MARIADB_GTID, MARIADB_GTID_LIST};
use crate::source::schema::ColumnMeta;
use crate::source::SourceError;
use crate::value::{Emptied, TableInfo};
use crate::xa::Xid;

mod query;
mod rows;
mod table_map;
mod xa;

// MariaDB event types mysql_common does not know.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
const MARIADB_START_ENCRYPTION: u8 = 164;
/// Events a replica may skip when it does not understand them.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;

/// What the source hands to the sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// Committed-to-be row changes of the current transaction (one chunk).
    Changes(Chunk),
    /// The current transaction is complete.
    Commit(Commit),
    /// A statement ending at `position` emptied a table (or database) the rules cover, or
    /// changed columns their values hold, without logging its rows (`ddl`): its keys must
    /// go before the commit that follows.
    Cleared {
        emptied: Emptied,
        position: Position,
        /// The statement's start, for the log: an operator wants to know what cleared keys.
        statement: String,
        /// The covered tables' key shapes before the statement, which tell the rules' keys
        /// from other keys under the same patterns (unknown in a catch-up:
        /// `Catalog::shapes_at`).
        shapes: Arc<KeyShapes>,
    },
    /// The transaction that follows is an XA transaction: its changes are prepared, not
    /// committed, when its `Commit` arrives (after the XA PREPARE), unless an `XaEnd`
    /// of the same xid ends it instead (MySQL's `XA COMMIT … ONE PHASE`).
    XaStart(Xid),
    /// `XA COMMIT` (`committed`) or `XA ROLLBACK` of a prepared transaction, or the
    /// one-phase commit of the open one; `commit` is the position after it.
    XaEnd {
        xid: Xid,
        committed: bool,
        commit: Commit,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Position after the commit event: where to resume.
    pub position: Position,
    /// Commit timestamp (unix seconds) from the event header.
    pub time: u32,
    /// False for a position-only move while idle (see [`Assembler::idle_commit`]).
    pub transaction: bool,
    /// MariaDB GTID state after this commit, when tracked.
    pub gtid: Option<String>,
}

/// A table map we decode rows for.
struct MappedTable {
    tme: TableMapEvent<'static>,
    info: Arc<TableInfo>,
    columns: Arc<[ColumnMeta]>,
    /// Columns some rule reads; the others are not converted.
    needed: Wanted,
}

pub struct Assembler {
    file: String,
    /// End position of the last event read from the outer stream (events inside a
    /// compressed payload share their payload's position).
    outer_end: u64,
    in_tx: bool,
    /// Set after a TRANSACTION_PAYLOAD event until its first inner event arrives: a payload
    /// that yields nothing must not pass silently.
    payload_at: Option<Position>,
    /// Between a TRANSACTION_PAYLOAD event and the commit inside it. Inner events carry no
    /// checksum; this flag keeps a server with `binlog_checksum=NONE` (where no event has
    /// one) from having its outer events mistaken for inner ones.
    in_payload: bool,
    /// The live stream carries CRC32 checksums: the fake ROTATE that opens it arrives before
    /// any format description, so its parsed name still ends with the 4 checksum bytes.
    stream_checksums: bool,
    pending: Chunk,
    /// Bytes of the rows events whose rows are in `pending`: a chunk ends at `chunk_rows`
    /// rows or `chunk_bytes` bytes, so wide rows are bounded as well as many rows.
    pending_bytes: usize,
    /// The current transaction has had a rows event (some of its chunks may be out).
    had_rows: bool,
    chunk_rows: usize,
    chunk_bytes: usize,
    /// `None` = decode every table (replay without a config).
    rules: Option<Arc<RuleSet>>,
    /// table id → decoded table, or `None` for tables no rule covers.
    tables: HashMap<u64, Option<MappedTable>>,
    catalog: Catalog,
    /// The position and time of the last commit handed out.
    last_commit: Position,
    last_time: u32,
    /// The GTID state after each commit, when GTIDs are tracked.
    gtids: GtidTracker,
    /// Online schema change copies and their column changes, which reach the cached
    /// values when a copy is swapped in.
    copies: Copies,
    /// The XA transaction whose PREPARE group is open.
    xa: Option<Xid>,
}

impl Assembler {
    pub fn new(
        start: &Position,
        chunk_rows: usize,
        rules: Option<Arc<RuleSet>>,
        catalog: Catalog,
    ) -> Self {
        Assembler {
            file: start.file.clone(),
            outer_end: start.pos,
            in_tx: false,
            payload_at: None,
            in_payload: false,
            stream_checksums: false,
            pending: Chunk::default(),
            pending_bytes: 0,
            had_rows: false,
            chunk_rows: chunk_rows.max(1),
            chunk_bytes: usize::MAX,
            rules,
            tables: HashMap::new(),
            catalog,
            last_commit: start.clone(),
            last_time: 0,
            gtids: GtidTracker::default(),
            copies: Copies::default(),
            xa: None,
        }
    }

    /// Tracks GTIDs with `tracker` (holding the state at the start position, if known).
    pub fn track_gtids(&mut self, tracker: GtidTracker) {
        self.gtids = tracker;
    }

    /// The GTIDs after the last complete transaction, when tracked.
    pub fn gtids(&self) -> Option<String> {
        if self.gtids.in_transaction() {
            return None;
        }
        self.gtids.current()
    }

    fn gtid_after_commit(&mut self) -> Option<String> {
        self.gtids.commit();
        self.gtids.current()
    }

    /// While the server is idle (its heartbeat), a commit that only moves the checkpoint
    /// past events that follow the last transaction (MariaDB's binlog checkpoint event,
    /// a new file's header after a rotation). Without it the checkpoint would trail the
    /// head by those bytes until the next write, and look stalled. `None` inside a
    /// transaction or when there is nothing to move past.
    pub fn idle_commit(&mut self) -> Option<Commit> {
        if self.in_tx || self.in_payload || !self.pending.is_empty() || self.gtids.in_transaction()
        {
            return None;
        }
        let position = self.position();
        if position == self.last_commit {
            return None;
        }
        self.last_commit = position.clone();
        Some(Commit {
            position,
            time: self.last_time,
            transaction: false,
            gtid: self.gtid_after_commit(),
        })
    }

    /// The position after the last complete outer event.
    pub fn position(&self) -> Position {
        Position::new(self.file.clone(), self.outer_end)
    }

    pub fn set_stream_checksums(&mut self, on: bool) {
        self.stream_checksums = on;
    }

    /// Ends chunks at this many bytes of rows events too (`source.chunk_bytes`).
    pub fn set_chunk_bytes(&mut self, bytes: usize) {
        self.chunk_bytes = bytes.max(1);
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    /// Handles one event, appending what it completes to `out`.
    pub async fn handle(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        let header = event.header();
        let inner = self.in_payload && !event.footer().get_checksum_enabled();
        if !inner {
            if let Some(at) = self.payload_at.take() {
                return Err(SourceError::Unsupported {
                    position: at,
                    message: "compressed transaction payload yielded no events (corrupt or \
                              unreadable zstd data)"
                        .into(),
                });
            }
            // A heartbeat's log_pos is where the server's dump thread is, not the end of
            // an event this replica has read: it must not become a resume position.
            if header.log_pos() > 0 && !matches!(header.event_type_raw(), 27 | 41) {
                self.outer_end = u64::from(header.log_pos());
            }
            self.verify_checksum(event)?;
        } else {
            self.payload_at = None;
        }
        let raw = header.event_type_raw();
        self.gtids
            .observe(raw, event)
            .map_err(|e| self.unsupported(&e))?;
        if let Some(plain) = compressed::plain_type(raw) {
            let expanded = compressed::expand(event, plain).map_err(|e| {
                self.unsupported(&format!("MariaDB compressed event (log_bin_compress): {e}"))
            })?;
            return self.handle_known(plain, &expanded, out).await;
        }
        match EventType::try_from(raw) {
            Ok(kind) => self.handle_known(kind, event, out).await,
            Err(_) => self.handle_other(raw, event, out),
        }
    }

    /// Called when the input ends (replay): a dangling payload or an open transaction
    /// means the file was cut short.
    pub fn finish(&mut self) -> Result<(), SourceError> {
        if let Some(at) = self.payload_at.take() {
            return Err(SourceError::Unsupported {
                position: at,
                message: "compressed transaction payload yielded no events".into(),
            });
        }
        if self.in_tx || self.in_payload {
            return Err(self.unsupported(
                "the file ends inside a transaction (truncated, or copied while being \
                 written): its changes are not committed in this file",
            ));
        }
        Ok(())
    }

    fn verify_checksum(&self, event: &Event) -> Result<(), SourceError> {
        match event.footer().get_checksum_alg() {
            Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => {}
            Ok(_) => return Ok(()),
            // An unknown algorithm is a corrupt format description: trusting it would turn
            // checksum verification off for the rest of the stream.
            Err(e) => {
                return Err(self.unsupported(&format!("unknown binlog checksum algorithm: {e}")))
            }
        }
        let Some(stored) = event.checksum() else {
            return Err(self.unsupported("event lacks its CRC32 checksum"));
        };
        let stored = u32::from_le_bytes(stored);
        let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        if stored != computed {
            return Err(SourceError::Checksum {
                position: self.position(),
                stored,
                computed,
            });
        }
        Ok(())
    }

    async fn handle_known(
        &mut self,
        kind: EventType,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        use EventType as E;
        match kind {
            E::ROTATE_EVENT => self.on_rotate(event),
            E::QUERY_EVENT => self.on_query(event, out).await,
            E::XID_EVENT => {
                self.commit(event, out);
                Ok(())
            }
            E::TABLE_MAP_EVENT => self.on_table_map(event).await,
            E::WRITE_ROWS_EVENT_V1
            | E::UPDATE_ROWS_EVENT_V1
            | E::DELETE_ROWS_EVENT_V1
            | E::WRITE_ROWS_EVENT
            | E::UPDATE_ROWS_EVENT
            | E::DELETE_ROWS_EVENT
            | E::PARTIAL_UPDATE_ROWS_EVENT => self.on_rows(event, out),
            E::TRANSACTION_PAYLOAD_EVENT => {
                self.payload_at = Some(self.position());
                self.in_payload = true;
                Ok(())
            }
            E::INCIDENT_EVENT => Err(self.unsupported(
                "the server logged an INCIDENT (changes may be missing from the binlog); \
                 re-sync with `cdc-cache reset --yes`",
            )),
            E::XA_PREPARE_LOG_EVENT => self.on_xa_prepare(event, out),
            E::PRE_GA_WRITE_ROWS_EVENT
            | E::PRE_GA_UPDATE_ROWS_EVENT
            | E::PRE_GA_DELETE_ROWS_EVENT
            | E::LOAD_EVENT
            | E::CREATE_FILE_EVENT
            | E::APPEND_BLOCK_EVENT
            | E::EXEC_LOAD_EVENT
            | E::DELETE_FILE_EVENT
            | E::NEW_LOAD_EVENT
            | E::BEGIN_LOAD_QUERY_EVENT
            | E::EXECUTE_LOAD_QUERY_EVENT => Err(self.unsupported(&format!(
                "{kind:?} changes rows in a form this replica cannot apply; use \
                 binlog_format=ROW"
            ))),
            // Context events (GTIDs, statement text, heartbeats, format descriptions): no
            // rows, nothing to apply.
            _ => Ok(()),
        }
    }

    fn handle_other(
        &mut self,
        raw: u8,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        match raw {
            MARIADB_GTID => {
                // The flags byte follows seq_no (8) and domain_id (4). FL_STANDALONE (1)
                // marks a DDL that is its own transaction; everything else opens one.
                let standalone = event.data().get(12).is_some_and(|f| f & 1 == 1);
                self.in_tx = !standalone;
                self.on_mariadb_gtid(event, out)
            }
            MARIADB_ANNOTATE_ROWS
            | MARIADB_BINLOG_CHECKPOINT
            | MARIADB_GTID_LIST
            | MARIADB_START_ENCRYPTION => Ok(()),
            _ if event.header().flags_raw() & LOG_EVENT_IGNORABLE_F != 0 => Ok(()),
            _ => Err(self.unsupported(&format!(
                "unknown binlog event type {raw}; it may carry row changes, so replication \
                 stops rather than skip it"
            ))),
        }
    }

    fn unsupported(&self, message: &str) -> SourceError {
        SourceError::Unsupported {
            position: self.position(),
            message: message.to_string(),
        }
    }

    fn on_rotate(&mut self, event: &Event) -> Result<(), SourceError> {
        let rotate: RotateEvent<'_> = event
            .read_event()
            .map_err(|e| self.unsupported(&format!("bad ROTATE event: {e}")))?;
        let name = rotated_file(event, &rotate, self.stream_checksums);
        // Only the stream's opening ROTATE comes before every format description. The
        // server sends the ROTATE into each later file with the checksum setting of the
        // file before it, whose format description parsed it: nothing is left to cut
        // (a cut here turned `binlog.000003` into `binlog.00` after `binlog_checksum`
        // was set to NONE).
        self.stream_checksums = false;
        self.file = String::from_utf8(name)
            .map_err(|_| self.unsupported("ROTATE names a binlog file that is not UTF-8"))?;
        self.outer_end = rotate.position();
        if !rotate.is_fake() {
            // Table ids are per-file; keep the map small.
            self.tables.clear();
        }
        Ok(())
    }

    fn commit(&mut self, event: &Event, out: &mut Vec<SourceItem>) {
        let commit = self.close(event, out);
        out.push(SourceItem::Commit(commit));
    }

    /// Ends the open transaction at `event`: hands out its last rows, and returns the
    /// commit that follows them.
    fn close(&mut self, event: &Event, out: &mut Vec<SourceItem>) -> Commit {
        if !self.pending.is_empty() {
            self.hand_out(out);
        } else {
            // Rows events without rows leave their entries: not for the next transaction.
            self.pending.clear_with(drop);
            self.pending_bytes = 0;
        }
        self.in_tx = false;
        self.had_rows = false;
        self.in_payload = false;
        self.last_commit = self.position();
        self.last_time = event.header().timestamp();
        let gtid = self.gtid_after_commit();
        Commit {
            position: self.last_commit.clone(),
            time: self.last_time,
            transaction: true,
            gtid,
        }
    }
}

/// The file name a ROTATE event carries. With checksums on the stream, the fake ROTATE
/// that opens it arrives before any format description, so it was parsed as if without
/// checksum and its name still ends with the 4 checksum bytes: they are cut off here
/// (`stream_checksums` is true for that first ROTATE only).
pub fn rotated_file(event: &Event, rotate: &RotateEvent<'_>, stream_checksums: bool) -> Vec<u8> {
    let mut name = rotate.name_raw().to_vec();
    let parsed_with_checksum = matches!(
        event.footer().get_checksum_alg(),
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
    );
    if stream_checksums && !parsed_with_checksum {
        name.truncate(name.len().saturating_sub(4));
    }
    name
}
