//! Row changes as the source hands them to the mapper.
//!
//! Values are already resolved to their SQL meaning (an ENUM is its label, a TIMESTAMP is
//! seconds since the epoch, text is decoded from its charset), but not yet formatted: the
//! text form is the mapper's business (`mapper::encode`), so it stays pure and testable.

use std::sync::Arc;

use crate::checkpoint::Position;

/// One column value of a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Decimal text exactly as the server formats it (scale preserved).
    Decimal(String),
    Year(u16),
    Bit(u64),
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
        /// Fraction digits of the column (DATETIME(6) → 6).
        precision: u8,
    },
    Time {
        negative: bool,
        hours: u32,
        minute: u8,
        second: u8,
        micros: u32,
        precision: u8,
    },
    /// TIMESTAMP: an instant, shown in UTC.
    Timestamp {
        seconds: i64,
        micros: u32,
        precision: u8,
    },
    Text(String),
    Bytes(Vec<u8>),
    Enum(String),
    /// SET labels, comma-joined in definition order.
    Set(String),
    Json(serde_json::Value),
    /// A MySQL partial JSON update whose before document was not logged: only the list of
    /// changes (`[{"op", "path", "value"}]`) is known. `replay` can show it; a rule that
    /// needs the full value fails closed on it (see `MapError::PartialJson`).
    PartialJson(serde_json::Value),
}

/// The kind of a row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// A table as known when its row event was decoded: shared by all rows of the event.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub database: String,
    pub table: String,
    /// Column names in table order; `@1`, `@2`… when the server sent no names and none
    /// could be looked up (offline replay only).
    pub columns: Vec<String>,
    /// `database.table`, made once: rules are matched against it for every row.
    qualified: String,
    /// Columns `SELECT *` leaves out (`INVISIBLE`, a versioned table's implicit period):
    /// out of the values of a rule that stores every column. Empty when there are none.
    pub hidden: Vec<bool>,
    /// A system-versioned table's row end column: a row whose row end is not the
    /// greatest value is history, not a current row.
    pub row_end: Option<usize>,
}

impl TableInfo {
    pub fn new(database: String, table: String, columns: Vec<String>) -> TableInfo {
        let qualified = format!("{database}.{table}");
        TableInfo {
            database,
            table,
            columns,
            qualified,
            hidden: Vec::new(),
            row_end: None,
        }
    }

    /// With the hidden columns and row end of a versioned table.
    pub fn with_versioning(mut self, hidden: Vec<bool>, row_end: Option<usize>) -> TableInfo {
        self.hidden = if hidden.contains(&true) {
            hidden
        } else {
            Vec::new()
        };
        self.row_end = row_end;
        self
    }

    pub fn is_hidden(&self, index: usize) -> bool {
        self.hidden.get(index).copied().unwrap_or(false)
    }

    pub fn qualified(&self) -> &str {
        &self.qualified
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// A row image: values aligned with `TableInfo::columns`; `None` for a column the image does
/// not carry (only with `binlog_row_image` other than FULL).
pub type RowImage = Vec<Option<SqlValue>>;

/// One committed row change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: Arc<TableInfo>,
    pub kind: ChangeKind,
    pub before: Option<RowImage>,
    pub after: Option<RowImage>,
    /// Position of the rows event that carried this change (for error messages), shared
    /// by the rows of one event.
    pub event_position: Arc<Position>,
}

/// In `Emptied::Columns`, a change of every column (`CONVERT TO CHARACTER SET binary`).
pub const EVERY_COLUMN: &str = "*";

/// Tables a statement emptied or changed without logging their rows (`TRUNCATE`, `DROP
/// TABLE`, `ALTER TABLE … ADD COLUMN`, …; see `source::ddl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emptied {
    Table {
        database: String,
        table: String,
    },
    /// Every table of the database (`DROP DATABASE`).
    Database(String),
    /// The rows stay but these columns were added, dropped, renamed or retyped in every
    /// row (`ALTER TABLE`): the values of rules that store them no longer match the rows.
    Columns {
        database: String,
        table: String,
        columns: Vec<String>,
    },
    /// An online schema change tool's copy was swapped in, and whether its columns differ
    /// is not known: the daemon did not see the copy created (it started since).
    CopySwappedIn {
        database: String,
        table: String,
    },
}

impl std::fmt::Display for Emptied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Emptied::Table { database, table } => write!(f, "table {database}.{table}"),
            Emptied::Database(db) => write!(f, "database {db}"),
            Emptied::Columns {
                database,
                table,
                columns,
            } if columns.iter().any(|c| c == EVERY_COLUMN) => {
                write!(f, "every column of table {database}.{table}")
            }
            Emptied::Columns {
                database,
                table,
                columns,
            } => write!(
                f,
                "columns {} of table {database}.{table}",
                columns.join(", ")
            ),
            Emptied::CopySwappedIn { database, table } => write!(
                f,
                "table {database}.{table}, swapped in from a copy altered before the start"
            ),
        }
    }
}
