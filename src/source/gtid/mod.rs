//! GTIDs: the server-independent name of each transaction, which is what lets a
//! checkpoint be resumed on another server of the topology after a failover.
//!
//! The two flavours differ in kind, not only in syntax: MariaDB keeps the *last* GTID of
//! each replication domain (`0-1-100`, see [`mariadb`]); MySQL keeps the *set* of every
//! transaction applied (`uuid:1-100`, see [`mysql`]). [`Gtids`] holds either, and
//! [`GtidTracker`] follows the stream so that each commit carries the state after it.

pub mod mariadb;
pub mod mysql;

use std::fmt;

use mysql_common::binlog::events::{Event, GtidEvent, PreviousGtidsEvent};

pub use mariadb::{missing_from, GtidState};
pub use mysql::GtidSet;

/// A GTID checkpoint of either flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtids {
    MariaDb(GtidState),
    MySql(GtidSet),
}

impl Gtids {
    /// Parses checkpoint text: MySQL sets contain `:` (`uuid:1-5`), MariaDB states never do.
    pub fn parse(text: &str) -> Result<Gtids, String> {
        if text.contains(':') {
            GtidSet::parse(text).map(Gtids::MySql)
        } else {
            GtidState::parse(text).map(Gtids::MariaDb)
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Gtids::MariaDb(s) => s.is_empty(),
            Gtids::MySql(s) => s.is_empty(),
        }
    }

    /// Adds what a later file's start event knows (its previous GTIDs): transactions
    /// before that file were all streamed past (applied, or skipped as already applied).
    fn absorb(&mut self, other: &Gtids) {
        match (self, other) {
            (Gtids::MariaDb(a), Gtids::MariaDb(b)) => a.union(b),
            (Gtids::MySql(a), Gtids::MySql(b)) => a.union(b),
            _ => {}
        }
    }
}

impl fmt::Display for Gtids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtids::MariaDb(s) => s.fmt(f),
            Gtids::MySql(s) => s.fmt(f),
        }
    }
}

/// The GTID of the transaction being received; it joins the state at its commit.
#[derive(Debug, Clone)]
enum Pending {
    MariaDb(u32, u32, u64),
    MySql([u8; 16], String, u64),
}

/// Follows GTID events through a stream. Off unless enabled: a checkpoint must only carry
/// GTIDs when the configuration and the server agree to use them.
#[derive(Debug, Default)]
pub struct GtidTracker {
    enabled: bool,
    state: Option<Gtids>,
    pending: Option<Pending>,
}

/// Event types this tracker reads.
const GTID: u8 = 33;
const ANONYMOUS_GTID: u8 = 34;
const PREVIOUS_GTIDS: u8 = 35;
const GTID_TAGGED: u8 = 42;
/// MariaDB's GTID event and the GTID list at each file's start (mysql_common does not
/// know them; the assembler reads them too).
pub(crate) const MARIADB_GTID: u8 = 162;
pub(crate) const MARIADB_GTID_LIST: u8 = 163;

impl GtidTracker {
    /// Tracks from `state`, the GTIDs at the start position; with `None`, from the first
    /// file start event (PREVIOUS_GTIDS or GTID_LIST), which carries the whole state.
    pub fn enabled(state: Option<Gtids>) -> Self {
        GtidTracker {
            enabled: true,
            state,
            pending: None,
        }
    }

    /// A transaction's GTID has been seen and it is not complete yet.
    pub fn in_transaction(&self) -> bool {
        self.pending.is_some()
    }

    /// Reads a GTID-related event; other events are ignored. `Err` names what was wrong.
    pub fn observe(&mut self, raw: u8, event: &Event) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        match raw {
            MARIADB_GTID => {
                let (domain, seq) =
                    mariadb::parse_event(event.data()).ok_or("short MariaDB GTID event")?;
                self.begin(Pending::MariaDb(domain, event.header().server_id(), seq));
            }
            GTID | GTID_TAGGED => {
                let gtid: GtidEvent = event
                    .read_event()
                    .map_err(|e| format!("bad GTID event: {e}"))?;
                let tag = gtid.tag().map(|t| t.to_string()).unwrap_or_default();
                self.begin(Pending::MySql(gtid.sid(), tag, gtid.gno()));
            }
            ANONYMOUS_GTID => self.commit(),
            PREVIOUS_GTIDS => {
                let prev: PreviousGtidsEvent = event
                    .read_event()
                    .map_err(|e| format!("bad PREVIOUS_GTIDS event: {e}"))?;
                let mut set = GtidSet::default();
                for sid in prev.sids() {
                    let tag = sid.tag().map(|t| t.to_string()).unwrap_or_default();
                    for interval in sid.intervals() {
                        for_range(&mut set, sid.uuid(), &tag, interval);
                    }
                }
                self.file_start(Gtids::MySql(set));
            }
            MARIADB_GTID_LIST => {
                let list =
                    GtidState::from_gtid_list(event.data()).ok_or("short GTID_LIST event")?;
                self.file_start(Gtids::MariaDb(list));
            }
            _ => {}
        }
        Ok(())
    }

    /// The transaction of the last GTID event is complete.
    pub fn commit(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match (pending, &mut self.state) {
            (Pending::MariaDb(d, s, n), Some(Gtids::MariaDb(state))) => state.apply(d, s, n),
            (Pending::MySql(uuid, tag, gno), Some(Gtids::MySql(set))) => set.add(uuid, &tag, gno),
            // Not known yet (tracking waits for a file start event), or the flavour of
            // the stream changed: nothing sound to add to.
            _ => {}
        }
    }

    /// The state after everything committed so far, as checkpoint text.
    pub fn current(&self) -> Option<String> {
        self.state.as_ref().map(ToString::to_string)
    }

    fn begin(&mut self, pending: Pending) {
        // A standalone transaction (DDL) has no commit event: it is complete once the next
        // transaction starts.
        self.commit();
        self.pending = Some(pending);
    }

    fn file_start(&mut self, previous: Gtids) {
        match &mut self.state {
            Some(state) => state.absorb(&previous),
            None => self.state = Some(previous),
        }
    }
}

/// The GTIDs at a position of a binlog file (a transaction boundary), found by reading
/// the file from its start: MySQL has no `BINLOG_GTID_POS`. The file's PREVIOUS_GTIDS
/// event gives the set before the file; the GTID events up to the position add the rest.
pub struct GtidScan {
    tracker: GtidTracker,
    until: u64,
}

impl GtidScan {
    pub fn new(until: u64) -> GtidScan {
        GtidScan {
            tracker: GtidTracker::enabled(None),
            until,
        }
    }

    /// Reads the next event of the file; `Some` once the position is reached.
    pub fn feed(&mut self, event: &Event) -> Result<Option<Gtids>, String> {
        self.tracker
            .observe(event.header().event_type_raw(), event)?;
        let end = u64::from(event.header().log_pos());
        if end < self.until || self.tracker.state.is_none() {
            return Ok(None);
        }
        // A GTID seen before a transaction boundary belongs to a transaction that ended.
        self.tracker.commit();
        Ok(self.tracker.state.clone())
    }
}

/// Adds the end-exclusive wire interval `[start, end)` to `set`.
fn for_range(
    set: &mut GtidSet,
    uuid: [u8; 16],
    tag: &str,
    interval: &mysql_common::packets::GnoInterval,
) {
    if interval.end() > interval.start() {
        set.add_range(uuid, tag, interval.start(), interval.end() - 1);
    }
}
