//! Row images: binlog values (as mysql_common decodes them) → [`SqlValue`], using the
//! column knowledge of [`ColumnMeta`].

use mysql_common::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType as T;
use mysql_common::value::Value;

use crate::chunk::Chunk;
use crate::source::mariadb_types;
use crate::source::schema::{ColumnMeta, TextKind};
use crate::value::{ChangeKind, RowImage, SqlValue};

/// Why one value could not be decoded; the caller adds table and position.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("column `{column}`: {message}")]
    Value { column: String, message: String },
    #[error("row has {got} columns, the table map says {expected}")]
    ColumnCount { got: usize, expected: usize },
    #[error("{0}")]
    Rows(String),
}

/// Which columns to convert, per image (`None` = all); the others are skipped.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub before: Option<Vec<bool>>,
    pub after: Option<Vec<bool>>,
}

/// What a rows event's rows are.
pub fn kind(rows: &RowsEventData<'_>) -> ChangeKind {
    match rows {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => ChangeKind::Insert,
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
            ChangeKind::Delete
        }
        _ => ChangeKind::Update,
    }
}

/// Decodes every row of a rows event into `chunk`, whose current event it is (begun with
/// the event's [`kind`]).
pub fn decode_rows(
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    columns: &[ColumnMeta],
    wanted: &Wanted,
    chunk: &mut Chunk,
) -> Result<(), DecodeError> {
    let kind = kind(rows);
    if !matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
        return super::rowparse::decode_plain(rows, kind, columns, wanted, chunk);
    }
    // A partial update rebuilds a JSON document from the before image's: read the same
    // columns from both images.
    let needed = wanted.after.as_deref();
    // Partial JSON updates carry a shared image mysql_common knows how to read.
    let present = |bits: Option<&bitvec::slice::BitSlice<u8>>| -> Vec<usize> {
        bits.map(|b| b.iter_ones().collect()).unwrap_or_default()
    };
    let before_cols = present(rows.columns_before_image());
    let after_cols = present(rows.columns_after_image());
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| DecodeError::Rows(e.to_string()))?;
        let before = before
            .map(|r| image(r, &before_cols, columns, needed, None))
            .transpose()?;
        let after = after
            .map(|r| image(r, &after_cols, columns, needed, before.as_ref()))
            .transpose()?;
        let (has_before, has_after) = (before.is_some(), after.is_some());
        let mut images = [before, after];
        chunk.push_row::<DecodeError>(has_before, has_after, |side, v| {
            v.extend(images[side as usize].take().unwrap_or_default());
            Ok(())
        })?;
    }
    Ok(())
}

/// A BinlogRow holds only the columns the image carries (`present`, in table order).
/// `before` is given for after images, where partial JSON updates need the old document.
fn image(
    mut row: mysql_common::binlog::row::BinlogRow,
    present: &[usize],
    columns: &[ColumnMeta],
    needed: Option<&[bool]>,
    before: Option<&RowImage>,
) -> Result<RowImage, DecodeError> {
    if row.len() != present.len() || present.iter().any(|&i| i >= columns.len()) {
        return Err(DecodeError::ColumnCount {
            got: row.len(),
            expected: columns.len(),
        });
    }
    let mut out: RowImage = vec![None; columns.len()];
    for (pos, &idx) in present.iter().enumerate() {
        if needed.is_some_and(|n| !n.get(idx).copied().unwrap_or(true)) {
            continue; // no rule reads it: skip the conversion and its allocation
        }
        let value = row
            .take(pos)
            .ok_or_else(|| DecodeError::Rows("value already taken".into()))?;
        out[idx] = Some(match value {
            BinlogValue::JsonDiff(diffs) => {
                let old = before.and_then(|b| b.get(idx)).and_then(Option::as_ref);
                partial_json(&diffs, old, &columns[idx])?
            }
            value => convert(value, &columns[idx])?,
        });
    }
    Ok(out)
}

/// Converts one binlog value.
pub fn convert(value: BinlogValue<'_>, col: &ColumnMeta) -> Result<SqlValue, DecodeError> {
    let err = |message: String| DecodeError::Value {
        column: col.name.clone(),
        message,
    };
    match value {
        BinlogValue::Value(Value::NULL) => Ok(SqlValue::Null),
        BinlogValue::Value(v) => convert_plain(v, col).map_err(err),
        BinlogValue::Jsonb(j) => {
            let dom = j.parse().map_err(|e| err(format!("bad JSON value: {e}")))?;
            Ok(SqlValue::Json(super::jsonb::to_value(dom)))
        }
        BinlogValue::JsonDiff(_) => Err(err(
            "partial JSON update without a before image; set binlog_row_image=FULL or \
             binlog_row_value_options='' on the server"
                .into(),
        )),
    }
}

/// Rebuilds a partially updated JSON document from the before image.
fn partial_json(
    diffs: &[mysql_common::binlog::jsondiff::JsonDiff<'_>],
    before: Option<&SqlValue>,
    col: &ColumnMeta,
) -> Result<SqlValue, DecodeError> {
    let err = |message: String| DecodeError::Value {
        column: col.name.clone(),
        message,
    };
    match before {
        Some(SqlValue::Json(old)) => super::jsondiff::apply(old, diffs)
            .map(SqlValue::Json)
            .map_err(|e| {
                err(format!(
                    "{e}; set binlog_row_value_options='' on the server"
                ))
            }),
        Some(SqlValue::Null) => Err(err("partial JSON update of a NULL document".into())),
        // Not logged (binlog_row_image=MINIMAL): keep the change list; the mapper refuses
        // it wherever the full document is needed.
        _ => super::jsondiff::describe(diffs)
            .map(SqlValue::PartialJson)
            .map_err(err),
    }
}

fn convert_plain(v: Value, col: &ColumnMeta) -> Result<SqlValue, String> {
    let t = col.column_type;
    Ok(match (t, v) {
        (T::MYSQL_TYPE_FLOAT, Value::Float(f)) => SqlValue::Float(f),
        (T::MYSQL_TYPE_DOUBLE, Value::Double(f)) => SqlValue::Double(f),
        (T::MYSQL_TYPE_TIMESTAMP, Value::Int(s)) => timestamp(s, 0, 0),
        (_, Value::Int(i)) if t.is_enum_type() => enum_label(i, col)?,
        (_, Value::Int(i)) if col.unsigned => SqlValue::UInt(unsigned(i, t)),
        // mysql_common may read a signed MEDIUMINT without sign extension: redo it from the
        // low 24 bits.
        (T::MYSQL_TYPE_INT24, Value::Int(i)) => SqlValue::Int(i64::from(((i as i32) << 8) >> 8)),
        (_, Value::Int(i)) => SqlValue::Int(i),
        (_, Value::UInt(u)) => SqlValue::UInt(u),
        (T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE, Value::Date(year, month, day, ..)) => {
            SqlValue::Date { year, month, day }
        }
        (_, Value::Date(year, month, day, hour, minute, second, micros)) => SqlValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            precision: col.precision,
        },
        (_, Value::Time(negative, days, h, minute, second, micros)) => SqlValue::Time {
            negative,
            hours: days * 24 + u32::from(h),
            minute,
            second,
            micros,
            precision: col.precision,
        },
        (_, Value::Bytes(b)) if col.compressed => {
            bytes_value(super::column_compression::inflate(&b)?, col)?
        }
        (_, Value::Bytes(b)) => bytes_value(b, col)?,
        (_, other) => return Err(format!("unexpected value {other:?} for type {t:?}")),
    })
}

fn bytes_value(b: Vec<u8>, col: &ColumnMeta) -> Result<SqlValue, String> {
    let t = col.column_type;
    Ok(match t {
        T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL => SqlValue::Decimal(utf8(b)?),
        T::MYSQL_TYPE_YEAR => {
            let y: u16 = utf8(b)?.parse().map_err(|e| format!("bad YEAR: {e}"))?;
            // The binlog stores YEAR as an offset from 1900; the offset 0 is the zero year.
            SqlValue::Year(if y == 1900 { 0 } else { y })
        }
        T::MYSQL_TYPE_BIT => SqlValue::Bit(b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x))),
        T::MYSQL_TYPE_TIMESTAMP2 => {
            let text = utf8(b)?;
            let (s, us) = text.split_once('.').unwrap_or((&text, "0"));
            let seconds = s.parse().map_err(|e| format!("bad TIMESTAMP: {e}"))?;
            let micros = us.parse().map_err(|e| format!("bad TIMESTAMP: {e}"))?;
            timestamp(seconds, micros, col.precision)
        }
        T::MYSQL_TYPE_SET => set_labels(&b, col)?,
        T::MYSQL_TYPE_GEOMETRY | T::MYSQL_TYPE_VECTOR => SqlValue::Bytes(b),
        _ if col.json_text => {
            let text = text(b, col.text)?;
            match text {
                SqlValue::Text(s) => SqlValue::Json(
                    serde_json::from_str(&s).map_err(|e| format!("invalid JSON text: {e}"))?,
                ),
                other => other,
            }
        }
        T::MYSQL_TYPE_STRING if col.text == TextKind::Binary => {
            // The binlog drops BINARY(n)'s trailing zero bytes; SELECT shows all n.
            let mut b = b;
            if let Some(n) = col.binary_len {
                if b.len() < n {
                    b.resize(n, 0);
                }
            }
            SqlValue::Bytes(b)
        }
        _ => text(b, col.text)?,
    })
}

fn text(b: Vec<u8>, kind: TextKind) -> Result<SqlValue, String> {
    Ok(match kind {
        TextKind::Binary => SqlValue::Bytes(b),
        TextKind::Utf8 => SqlValue::Text(utf8(b)?),
        // ASCII is the same in cp1252 and UTF-8: keep the bytes (no copy, no per-char push).
        TextKind::Latin1 if b.is_ascii() => SqlValue::Text(utf8(b)?),
        TextKind::Latin1 => SqlValue::Text(b.iter().map(|&c| cp1252(c)).collect()),
        TextKind::Unsupported(id) => {
            return Err(format!(
                "character set (collation id {id}) is not supported; use utf8mb4, latin1 or \
                 ascii for columns a rule reads"
            ))
        }
        TextKind::Unknown => match String::from_utf8(b) {
            Ok(s) => SqlValue::Text(s),
            Err(e) => SqlValue::Bytes(e.into_bytes()),
        },
        TextKind::Uuid => {
            SqlValue::Text(mariadb_types::uuid(&b).ok_or("UUID longer than 16 bytes")?)
        }
        TextKind::Inet4 => {
            SqlValue::Text(mariadb_types::inet4(&b).ok_or("INET4 longer than 4 bytes")?)
        }
        TextKind::Inet6 => {
            SqlValue::Text(mariadb_types::inet6(&b).ok_or("INET6 longer than 16 bytes")?)
        }
    })
}

fn utf8(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|e| format!("invalid UTF-8: {e}"))
}

/// mysql_common reads integers as signed when the event carries no signedness; the column
/// width says how to reinterpret them.
fn unsigned(i: i64, t: T) -> u64 {
    match t {
        T::MYSQL_TYPE_TINY => u64::from(i as u8),
        T::MYSQL_TYPE_SHORT => u64::from(i as u16),
        T::MYSQL_TYPE_INT24 => (i as u64) & 0xFF_FFFF,
        T::MYSQL_TYPE_LONG => u64::from(i as u32),
        _ => i as u64,
    }
}

fn timestamp(seconds: i64, micros: u32, precision: u8) -> SqlValue {
    SqlValue::Timestamp {
        seconds,
        micros,
        precision,
    }
}

fn enum_label(index: i64, col: &ColumnMeta) -> Result<SqlValue, String> {
    if index == 0 {
        // The "error" member, stored for invalid values in non-strict mode.
        return Ok(SqlValue::Enum(String::new()));
    }
    let labels = col.enum_labels.as_ref().ok_or_else(|| {
        "ENUM labels unknown: enable binlog_row_metadata=FULL or allow SELECT on \
         information_schema"
            .to_string()
    })?;
    labels
        .get(index as usize - 1)
        .cloned()
        .map(SqlValue::Enum)
        .ok_or_else(|| format!("ENUM index {index} beyond its {} labels", labels.len()))
}

fn set_labels(bits: &[u8], col: &ColumnMeta) -> Result<SqlValue, String> {
    let labels = col.set_labels.as_ref().ok_or_else(|| {
        "SET labels unknown: enable binlog_row_metadata=FULL or allow SELECT on \
         information_schema"
            .to_string()
    })?;
    let mask = bits
        .iter()
        .rev()
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let chosen: Vec<&str> = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| mask >> i & 1 == 1)
        .map(|(_, l)| l.as_str())
        .collect();
    Ok(SqlValue::Set(chosen.join(",")))
}

/// Windows-1252, which MySQL calls latin1.
fn cp1252(c: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match c {
        0x80..=0x9f => HIGH[usize::from(c - 0x80)],
        _ => char::from(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: T) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            column_type: t,
            precision: 0,
            unsigned: false,
            text: TextKind::Utf8,
            enum_labels: Some(vec!["a".into(), "b".into()]),
            set_labels: Some(vec!["x".into(), "y".into(), "z".into()]),
            json_text: false,
            binary_len: None,
            type_meta: Vec::new(),
            compressed: false,
        }
    }

    fn conv(v: Value, c: &ColumnMeta) -> SqlValue {
        convert(BinlogValue::Value(v), c).unwrap()
    }

    #[test]
    fn reinterprets_unsigned_integers() {
        let mut c = col(T::MYSQL_TYPE_LONGLONG);
        c.unsigned = true;
        assert_eq!(conv(Value::Int(-1), &c), SqlValue::UInt(u64::MAX));
        let mut c = col(T::MYSQL_TYPE_TINY);
        c.unsigned = true;
        assert_eq!(conv(Value::Int(-1), &c), SqlValue::UInt(255));
    }

    #[test]
    fn enum_set_bit_year() {
        assert_eq!(
            conv(Value::Int(2), &col(T::MYSQL_TYPE_ENUM)),
            SqlValue::Enum("b".into())
        );
        assert_eq!(
            conv(Value::Bytes(vec![0b101]), &col(T::MYSQL_TYPE_SET)),
            SqlValue::Set("x,z".into())
        );
        assert_eq!(
            conv(Value::Bytes(vec![0]), &col(T::MYSQL_TYPE_SET)),
            SqlValue::Set(String::new())
        );
        assert_eq!(
            conv(Value::Bytes(vec![1, 2]), &col(T::MYSQL_TYPE_BIT)),
            SqlValue::Bit(258)
        );
        assert_eq!(
            conv(Value::Bytes(b"1900".to_vec()), &col(T::MYSQL_TYPE_YEAR)),
            SqlValue::Year(0)
        );
    }

    #[test]
    fn latin1_and_bad_utf8() {
        let mut c = col(T::MYSQL_TYPE_VARCHAR);
        c.text = TextKind::Latin1;
        assert_eq!(
            conv(Value::Bytes(vec![0x80, 0xe9]), &c),
            SqlValue::Text("€é".into())
        );
        let c = col(T::MYSQL_TYPE_VARCHAR);
        assert!(convert(BinlogValue::Value(Value::Bytes(vec![0xff])), &c).is_err());
    }
}
