//! What the decoder must know about each column, merged from two places:
//!
//! 1. the TABLE_MAP event: types and type metadata always; names, signedness, charsets and
//!    ENUM/SET labels only when the server logs row metadata (`binlog_row_metadata=FULL`);
//! 2. `information_schema` (the [`DbTable`] lookup), for whatever the event lacks, and for
//!    MariaDB JSON columns, which the binlog shows as LONGTEXT.
//!
//! When names must come from `information_schema` and its column count differs from the
//! event's, the table changed since the event was written: the decoder cannot know which
//! value belongs to which column, so it fails closed instead of guessing.

use mysql_common::binlog::events::{
    BadColumnType, OptionalMetaExtractor, OptionalMetadataField, TableMapEvent,
};
use mysql_common::constants::{ColumnType, UnknownColumnType};

use crate::checkpoint::Position;
use crate::mapper::rules::RuleSet;
use crate::mapper::KeyShapes;
use crate::source::column_compression;
use crate::source::SourceError;

use super::charsets::charset_name_kind;
pub use super::charsets::{charset_kind, Charsets};

/// How the bytes of a string-typed column are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// BINARY, VARBINARY, BLOB: shown as base64.
    Binary,
    Utf8,
    /// MySQL's latin1 is Windows-1252.
    Latin1,
    /// A charset this build does not decode (ucs2, utf16, …): values fail closed.
    Unsupported(u16),
    /// No charset information at all (offline replay without row metadata): valid UTF-8 is
    /// shown as text, anything else as base64.
    Unknown,
    /// MariaDB's UUID, INET4 and INET6 (`BINARY(16)`/`BINARY(4)` in the binlog): shown in
    /// their text form (`source::mariadb_types`).
    Uuid,
    Inet4,
    Inet6,
}

/// One column, as the decoder sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    pub column_type: ColumnType,
    /// Fraction digits for TIME/DATETIME/TIMESTAMP.
    pub precision: u8,
    pub unsigned: bool,
    pub text: TextKind,
    pub enum_labels: Option<Vec<String>>,
    pub set_labels: Option<Vec<String>>,
    /// A MariaDB JSON column (LONGTEXT with a `json_valid` check): parsed into JSON.
    pub json_text: bool,
    /// BINARY(n): the length n, to restore the zero padding the binlog strips.
    pub binary_len: Option<usize>,
    /// The column's type metadata from the TABLE_MAP, kept so that reading a value does
    /// not walk the table map's metadata from its start (quadratic in the column count).
    pub type_meta: Vec<u8>,
    /// A MariaDB compressed column: `column_type` is the type its values are framed as,
    /// and each value is expanded before use (`column_compression`).
    pub compressed: bool,
}

/// A table's columns as `information_schema` describes them now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DbTable {
    pub columns: Vec<DbColumn>,
    /// When the table's definition last changed (`CREATE_TIME`, unix seconds): the
    /// description is known to fit only events written since.
    pub changed_at: Option<u64>,
    /// A MariaDB system-versioned table (`WITH SYSTEM VERSIONING`): its binlog also
    /// carries history rows, told apart by their row end (see [`versioning`]).
    pub versioned: bool,
    /// A MariaDB SEQUENCE: its one row is the generator's state, logged each time a
    /// block of values is reserved. Not data, so no rule covers it.
    pub sequence: bool,
}

/// The rules' key shapes (`mapper::shapes`) from described tables, by qualified name.
pub fn key_shapes<'a>(
    rules: &RuleSet,
    tables: impl IntoIterator<Item = (&'a str, &'a DbTable)>,
) -> KeyShapes {
    KeyShapes::from_tables(
        rules,
        tables.into_iter().map(|(qualified, table)| {
            let columns = table.columns.iter();
            (
                qualified,
                columns.map(|c| (c.name.as_str(), c.column_type.as_str())),
            )
        }),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct DbColumn {
    pub name: String,
    /// COLUMN_TYPE, e.g. `int(10) unsigned` or `enum('a','b')`.
    pub column_type: String,
    /// CHARACTER_SET_NAME; `None` for non-text and binary columns.
    pub charset: Option<String>,
    pub json: bool,
    /// `INVISIBLE`: left out of `SELECT *`, so out of the values of a rule that stores
    /// every column.
    pub hidden: bool,
    /// The row end of a system-versioned table's period (`GENERATED ALWAYS AS ROW END`).
    pub row_end: bool,
}

/// The columns a table versioned without naming its period has beyond those
/// `information_schema` lists: MariaDB keeps them last, also after later `ADD COLUMN`s.
fn implicit_period(db: &DbTable) -> &'static [&'static str] {
    if db.versioned && !db.columns.iter().any(|c| c.row_end) {
        &["row_start", "row_end"]
    } else {
        &[]
    }
}

/// What system versioning and invisible columns mean for a table's binlog columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioning {
    /// Per binlog column: hidden from `SELECT *`.
    pub hidden: Vec<bool>,
    /// The binlog column holding a row's end of validity, for a system-versioned table.
    pub row_end: Option<usize>,
}

/// The hidden columns and the row end among a table's binlog column `names`. A table
/// versioned without naming its period has `row_start` and `row_end` columns the binlog
/// shows (with row metadata) and `information_schema` does not.
pub fn versioning(names: &[String], db: Option<&DbTable>) -> Versioning {
    let Some(db) = db else {
        return Versioning::default();
    };
    let described = |name: &str| db.columns.iter().find(|c| c.name == name);
    let implicit = |name: &str| {
        db.versioned && described(name).is_none() && matches!(name, "row_start" | "row_end")
    };
    let hidden = names
        .iter()
        .map(|n| described(n).is_some_and(|c| c.hidden) || implicit(n))
        .collect();
    let row_end = names.iter().position(|n| {
        db.versioned && (described(n).is_some_and(|c| c.row_end) || (implicit(n) && n == "row_end"))
    });
    Versioning { hidden, row_end }
}

/// Everything optional metadata may carry, indexed per column.
#[derive(Default)]
struct EventMeta {
    names: Option<Vec<String>>,
    unsigned: Option<Vec<bool>>,
    /// Per character column, from its collation id.
    charsets: Option<Vec<TextKind>>,
    /// Written by MariaDB, whose charset lists count GEOMETRY columns too.
    mariadb: bool,
    enum_labels: Option<Vec<Vec<String>>>,
    set_labels: Option<Vec<Vec<String>>>,
}

/// Builds the column list of a table from its TABLE_MAP event and, when given, the
/// database's description.
pub fn build_columns(
    tme: &TableMapEvent<'_>,
    db: Option<&DbTable>,
    charsets: &Charsets,
    mariadb: bool,
    position: &Position,
    event_time: u32,
) -> Result<Vec<ColumnMeta>, SourceError> {
    let table = format!("{}.{}", tme.database_name(), tme.table_name());
    let bad = |message: String| SourceError::Schema {
        table: table.clone(),
        position: position.clone(),
        message,
    };
    let mut meta = read_event_meta(tme, charsets, mariadb)
        .map_err(|e| bad(format!("bad TABLE_MAP metadata: {e}")))?;
    let count = tme.columns_count() as usize;
    if meta.names.is_none() {
        if let Some(db) = db {
            let described = db.columns.len() + implicit_period(db).len();
            if described != count {
                return Err(bad(format!(
                    "the binlog row has {count} columns but the table now has {described}; \
                     without binlog_row_metadata=FULL the columns cannot be matched (set it, \
                     or re-sync with `cdc-cache reset`)"
                )));
            }
            // Same count is not enough: a RENAME COLUMN keeps it. A definition newer than
            // the event may not be the one the event was written with.
            if db.changed_at.is_some_and(|t| t > u64::from(event_time)) {
                return Err(bad(format!(
                    "the table was altered after this event was written (definition from \
                     unix time {}, event from {event_time}); without \
                     binlog_row_metadata=FULL its columns cannot be known for certain (set \
                     it, or re-sync with `cdc-cache reset`)",
                    db.changed_at.unwrap_or_default()
                )));
            }
            if !implicit_period(db).is_empty() {
                let names = db.columns.iter().map(|c| c.name.clone());
                let period = implicit_period(db).iter().map(|n| n.to_string());
                meta.names = Some(names.chain(period).collect());
            }
        }
    }
    // mysql_common's metadata walk stops at a MariaDB compressed column: walk it here.
    let walked = has_compressed(tme)
        .then(|| column_compression::column_metadata(tme))
        .transpose()
        .map_err(|e| bad(format!("bad TABLE_MAP metadata: {e}")))?;
    let mut counters = Counters::default();
    (0..count)
        .map(|i| {
            let (column_type, compressed) = column_type(tme, i)
                .map_err(|e| bad(format!("column `{}`: {e}", column_name(i, &meta, db))))?
                .ok_or_else(|| bad(format!("column {i} has no type")))?;
            let raw = match &walked {
                Some(metas) => metas[i].as_slice(),
                None => tme.get_column_metadata(i).unwrap_or(&[]),
            };
            let mut column = column_meta(i, column_type, raw, &meta, db, &mut counters);
            column.compressed = compressed;
            Ok(column)
        })
        .collect()
}

fn has_compressed(tme: &TableMapEvent<'_>) -> bool {
    (0..tme.columns_count() as usize).any(|i| {
        matches!(
            tme.get_raw_column_type(i),
            Err(UnknownColumnType(raw)) if column_compression::framed_as(raw).is_some()
        )
    })
}

/// A column's type, and whether it is a MariaDB compressed column (then the plain type
/// its values are framed as).
fn column_type(
    tme: &TableMapEvent<'_>,
    i: usize,
) -> Result<Option<(ColumnType, bool)>, BadColumnType> {
    match tme.get_column_type(i) {
        Err(BadColumnType::Unknown(UnknownColumnType(raw))) => {
            match column_compression::framed_as(raw) {
                Some(framed) => Ok(Some((framed, true))),
                None => Err(BadColumnType::Unknown(UnknownColumnType(raw))),
            }
        }
        other => other.map(|t| t.map(|t| (t, false))),
    }
}

/// A column's name for messages: from the event, the database, or its position.
fn column_name(i: usize, meta: &EventMeta, db: Option<&DbTable>) -> String {
    meta.names
        .as_ref()
        .and_then(|names| names.get(i).cloned())
        .or_else(|| db.and_then(|d| d.columns.get(i)).map(|c| c.name.clone()))
        .unwrap_or_else(|| format!("@{}", i + 1))
}

/// Optional metadata lists only some columns (numeric ones for signedness, character ones
/// for charsets…): these count how far into each list we are.
#[derive(Default)]
struct Counters {
    numeric: usize,
    character: usize,
    enums: usize,
    sets: usize,
}

fn column_meta(
    i: usize,
    column_type: ColumnType,
    raw_meta: &[u8],
    meta: &EventMeta,
    db: Option<&DbTable>,
    n: &mut Counters,
) -> ColumnMeta {
    let name = column_name(i, meta, db);
    // Match the database's view by name, so a JSON flag never lands on the wrong column.
    let db_col = db.and_then(|d| d.columns.iter().find(|c| c.name == name));
    let mut unsigned = false;
    if column_type.is_numeric_type() {
        unsigned = match &meta.unsigned {
            Some(list) => list.get(n.numeric).copied().unwrap_or(false),
            None => db_col.is_some_and(|c| c.column_type.contains("unsigned")),
        };
        n.numeric += 1;
    }
    let mut text = TextKind::Unknown;
    let listed = has_charset(column_type, meta.mariadb);
    if listed || column_type.is_enum_or_set_type() {
        text = match &meta.charsets {
            Some(list) if listed => list.get(n.character).copied().unwrap_or(TextKind::Unknown),
            _ => db_col.map_or(TextKind::Unknown, |c| {
                charset_name_kind(c.charset.as_deref())
            }),
        };
        if listed {
            n.character += 1;
        }
    }
    text = db_col.map_or(text, |c| declared_kind(&c.column_type, text));
    let mut enum_labels = None;
    let mut set_labels = None;
    if column_type.is_enum_type() {
        enum_labels = labels(&meta.enum_labels, n.enums, db_col);
        n.enums += 1;
    } else if column_type.is_set_type() {
        set_labels = labels(&meta.set_labels, n.sets, db_col);
        n.sets += 1;
    }
    let precision = match column_type {
        ColumnType::MYSQL_TYPE_TIME2
        | ColumnType::MYSQL_TYPE_DATETIME2
        | ColumnType::MYSQL_TYPE_TIMESTAMP2 => raw_meta.first().copied().unwrap_or(0),
        _ => 0,
    };
    ColumnMeta {
        name,
        column_type,
        precision,
        unsigned,
        text,
        enum_labels,
        set_labels,
        json_text: db_col.is_some_and(|c| c.json),
        binary_len: (column_type == ColumnType::MYSQL_TYPE_STRING && text == TextKind::Binary)
            .then(|| string_length(raw_meta))
            .flatten(),
        type_meta: raw_meta.to_vec(),
        compressed: false,
    }
}

/// The kind a column's declared type (`COLUMN_TYPE`) imposes, `text` for most.
fn declared_kind(column_type: &str, text: TextKind) -> TextKind {
    match column_type.to_ascii_lowercase().as_str() {
        "uuid" => TextKind::Uuid,
        "inet4" => TextKind::Inet4,
        "inet6" => TextKind::Inet6,
        _ => text,
    }
}

/// The byte length a fixed-length string column declares in its TABLE_MAP metadata
/// (two bytes: real type with the high bits of the length folded in, then the low bits).
fn string_length(raw: &[u8]) -> Option<usize> {
    let [b0, b1] = raw else { return None };
    let (b0, b1) = (usize::from(*b0), usize::from(*b1));
    Some(if b0 & 0x30 != 0x30 {
        (((b0 & 0x30) ^ 0x30) << 4) | b1
    } else {
        b1
    })
}

fn labels(
    from_event: &Option<Vec<Vec<String>>>,
    idx: usize,
    db_col: Option<&DbColumn>,
) -> Option<Vec<String>> {
    match from_event {
        Some(list) => list.get(idx).cloned(),
        None => db_col.and_then(|c| parse_labels(&c.column_type)),
    }
}

/// `enum('a','b''c')` → `["a", "b'c"]`.
pub fn parse_labels(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type
        .strip_prefix("enum(")
        .or_else(|| column_type.strip_prefix("set("))?
        .strip_suffix(')')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue; // commas between labels
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => label.push(chars.next()?),
                c => label.push(c),
            }
        }
        labels.push(label);
    }
    Some(labels)
}

fn read_event_meta(
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
    mariadb: bool,
) -> std::io::Result<EventMeta> {
    let mut meta = EventMeta {
        mariadb,
        ..EventMeta::default()
    };
    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::ColumnName(names) => {
                meta.names = Some(
                    names
                        .iter_names()
                        .map(|n| n.map(|n| n.name().into_owned()))
                        .collect::<Result<_, _>>()?,
                );
            }
            OptionalMetadataField::EnumStrValue(values) => {
                let mut all = Vec::new();
                for v in values.iter_values() {
                    all.push(v?.values().iter().map(|s| s.value().into_owned()).collect());
                }
                meta.enum_labels = Some(all);
            }
            OptionalMetadataField::SetStrValue(values) => {
                let mut all = Vec::new();
                for v in values.iter_values() {
                    all.push(v?.values().iter().map(|s| s.value().into_owned()).collect());
                }
                meta.set_labels = Some(all);
            }
            _ => {}
        }
    }
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let unsigned: Vec<bool> = extractor.iter_signedness().collect();
    if !unsigned.is_empty() {
        meta.unsigned = Some(unsigned);
    }
    // With DEFAULT_CHARSET the iterator never ends: take one entry per character column.
    let character_columns = (0..tme.columns_count() as usize)
        .filter(|&i| matches!(column_type(tme, i), Ok(Some((t, _))) if has_charset(t, mariadb)))
        .count();
    let kinds: Vec<TextKind> = extractor
        .iter_charset()
        .take(character_columns)
        .map(|id| id.map(|id| charsets.kind(id)))
        .collect::<Result<_, _>>()?;
    if !kinds.is_empty() {
        meta.charsets = Some(kinds);
    }
    Ok(meta)
}

/// Whether a column has an entry in the row metadata's charset lists. MySQL 9 lists
/// VECTOR columns there too (with the binary collation), though mysql_common does not
/// count VECTOR as a character type: without it, every character column after a VECTOR
/// would take its neighbour's charset (a TEXT read as binary). MariaDB lists GEOMETRY
/// columns too (MySQL does not).
fn has_charset(column_type: ColumnType, mariadb: bool) -> bool {
    column_type.is_character_type()
        || column_type == ColumnType::MYSQL_TYPE_VECTOR
        || (mariadb && column_type == ColumnType::MYSQL_TYPE_GEOMETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enum_and_set_labels() {
        assert_eq!(
            parse_labels("enum('a','b''c','d,e')").unwrap(),
            ["a", "b'c", "d,e"]
        );
        assert_eq!(parse_labels("set('x')").unwrap(), ["x"]);
        assert_eq!(parse_labels("int(11)"), None);
    }
}
