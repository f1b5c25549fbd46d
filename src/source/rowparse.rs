//! Row images parsed straight from a rows event's bytes.
//!
//! Why not mysql_common's `BinlogRow`: for every row it re-reads the table map's optional
//! metadata (column names included) and builds a full `Column` per value, with seven
//! allocations each; on a busy stream that was most of the decode time. Here each value is
//! parsed with mysql_common's own value parser, in place, and converted only when a rule
//! reads its column. Partial JSON updates (which carry an extra shared image) keep the
//! `BinlogRow` path in `decode`.

use mysql_common::binlog::events::RowsEventData;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use super::decode::{convert, DecodeError, Wanted};
use crate::chunk::{Chunk, Side};
use crate::source::schema::{ColumnMeta, TextKind};
use crate::spare;
use crate::value::{ChangeKind, SqlValue};

/// Decodes every row of a write, update or delete rows event into `chunk` (whose current
/// event it is).
pub fn decode_plain(
    rows: &RowsEventData<'_>,
    kind: ChangeKind,
    columns: &[ColumnMeta],
    wanted: &Wanted,
    chunk: &mut Chunk,
) -> Result<(), DecodeError> {
    let present = |bits: Option<&bitvec::slice::BitSlice<u8>>| -> Vec<usize> {
        bits.map(|b| b.iter_ones().collect()).unwrap_or_default()
    };
    let before_cols = present(rows.columns_before_image());
    let after_cols = present(rows.columns_after_image());
    for cols in [&before_cols, &after_cols] {
        if let Some(&bad) = cols.iter().find(|&&i| i >= columns.len()) {
            return Err(DecodeError::ColumnCount {
                got: bad + 1,
                expected: columns.len(),
            });
        }
    }
    let (has_before, has_after) = match kind {
        ChangeKind::Insert => (false, true),
        ChangeKind::Delete => (true, false),
        ChangeKind::Update => (true, true),
    };
    let before_image = Image::new(columns, wanted.before.as_deref(), &before_cols);
    let after_image = Image::new(columns, wanted.after.as_deref(), &after_cols);
    let mut buf = ParseBuf(rows.rows_data());
    while !buf.is_empty() {
        chunk.push_row(has_before, has_after, |side, values| match side {
            Side::Before => before_image.read(&mut buf, values),
            Side::After => after_image.read(&mut buf, values),
        })?;
    }
    Ok(())
}

struct Image<'a> {
    columns: &'a [ColumnMeta],
    /// Slots in each image: up to the last column a rule reads. Columns past it are never
    /// read, so they get no slot at all.
    width: usize,
    /// How to read each present column, in image order: its slot and its [`Step`].
    plan: Vec<(usize, Step)>,
}

/// How one present column is read, worked out once per rows event from its type and from
/// whether a rule reads it. Why: deciding that per value (type dispatch, metadata bytes,
/// the rule's flags) was most of the ~550 instructions an image took (callgrind, delete
/// catch-up), while an event's rows all share one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// No rule reads it and its width is fixed: step over that many bytes.
    Skip(usize),
    /// No rule reads it; a length prefix of this many bytes says how long it is.
    SkipPrefixed(usize),
    /// An integer a rule reads, read straight from its bytes ([`read_int_bytes`]).
    Int { width: usize, unsigned: bool },
    /// Text a rule reads that [`read_text`] copies straight (UTF-8, or latin1 when all
    /// ASCII), after a length prefix of this many bytes; anything else it leaves to the
    /// general path.
    Text { prefix: usize },
    /// Every other case: by type, through [`read_utf8`] or mysql_common's parser, and
    /// converted only when `wanted`.
    Other { wanted: bool },
}

impl Step {
    fn new(col: &ColumnMeta, wanted: bool) -> Step {
        match (wanted, int_width(col), fixed_len(col), length_prefix(col)) {
            (true, Some(width), _, _) => Step::Int {
                width,
                unsigned: col.unsigned,
            },
            (false, _, Some(len), _) => Step::Skip(len),
            (false, _, None, Some(prefix)) => Step::SkipPrefixed(prefix),
            // A compressed value is expanded before anything reads it as text.
            _ if col.compressed => Step::Other { wanted },
            _ => match text_prefix(col).filter(|_| wanted) {
                Some(prefix) => Step::Text { prefix },
                None => Step::Other { wanted },
            },
        }
    }

    fn wanted(self) -> bool {
        matches!(
            self,
            Step::Int { .. } | Step::Text { .. } | Step::Other { wanted: true }
        )
    }
}

impl<'a> Image<'a> {
    /// `present`: the image's columns, in order (all checked to be within `columns`).
    fn new(columns: &'a [ColumnMeta], needed: Option<&'a [bool]>, present: &[usize]) -> Self {
        let plan = present
            .iter()
            .map(|&idx| {
                let wanted = needed.is_none_or(|n| n.get(idx).copied().unwrap_or(true));
                (idx, Step::new(&columns[idx], wanted))
            })
            .collect();
        Image {
            columns,
            width: image_width(columns.len(), needed),
            plan,
        }
    }

    /// One image: a null bitmap over the present columns, then their non-null values.
    /// Appended to `values` as `width` slots.
    fn read<'d>(
        &self,
        buf: &mut ParseBuf<'d>,
        values: &mut Vec<Option<SqlValue>>,
    ) -> Result<(), DecodeError>
    where
        'a: 'd,
    {
        let bitmap: &[u8] = buf.parse(self.plan.len().div_ceil(8)).map_err(rows_err)?;
        let base = values.len();
        // A plain loop: `resize_with` was an out-of-line call of ~40 instructions for the
        // one or two slots an image mostly has.
        values.reserve(self.width);
        for _ in 0..self.width {
            values.push(None);
        }
        let out = &mut values[base..];
        for (j, &(idx, step)) in self.plan.iter().enumerate() {
            if bitmap[j / 8] & (1 << (j % 8)) != 0 {
                if step.wanted() {
                    out[idx] = Some(SqlValue::Null);
                }
                continue;
            }
            let data = buf.0;
            let len = match step {
                Step::Skip(len) => Some(len),
                Step::SkipPrefixed(prefix) => prefixed(data, prefix).map(|(_, end)| end),
                Step::Int { width, unsigned } => {
                    read_int_bytes(data, width, unsigned).map(|(value, len)| {
                        out[idx] = Some(value);
                        len
                    })
                }
                Step::Text { prefix } => match read_text(&self.columns[idx], data, prefix) {
                    Some((value, len)) => {
                        out[idx] = Some(value?);
                        Some(len)
                    }
                    None => {
                        out[idx] = read_other(buf, &self.columns[idx], true)?;
                        continue;
                    }
                },
                Step::Other { wanted } => {
                    if let Some(value) = read_other(buf, &self.columns[idx], wanted)? {
                        out[idx] = Some(value);
                    }
                    continue;
                }
            };
            match len.filter(|&len| len <= data.len()) {
                Some(len) => buf.0 = &data[len..],
                None => {
                    return Err(DecodeError::Rows(format!(
                        "the row image ends inside column {}",
                        self.columns[idx].name
                    )))
                }
            }
        }
        Ok(())
    }
}

/// A value the plan could not step over or read directly; `None` when not `wanted`.
fn read_other<'d, 'c: 'd>(
    buf: &mut ParseBuf<'d>,
    col: &'c ColumnMeta,
    wanted: bool,
) -> Result<Option<SqlValue>, DecodeError> {
    // UTF-8 text is copied straight, without a trip through mysql_common's `Value` (not a
    // compressed value: `convert` expands it first).
    let direct = wanted && !col.compressed;
    if let Some((value, len)) = direct.then(|| read_utf8(col, buf.0)).flatten() {
        buf.0 = &buf.0[len..];
        return value.map(Some);
    }
    if col.column_type == ColumnType::MYSQL_TYPE_TIME2 && matches!(col.precision, 1 | 2) {
        let (value, rest) = time_in_hundredths(buf.0, col.precision)
            .ok_or_else(|| DecodeError::Rows("TIME value cut short".into()))?;
        buf.0 = rest;
        return Ok(wanted.then_some(value));
    }
    let value: BinlogValue<'_> = buf
        .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
        .map_err(rows_err)?;
    wanted.then(|| convert(value, col)).transpose()
}

/// A TIME(1) or TIME(2) value, read as the server's `my_time_packed_from_binary` does:
/// three bytes of `hh:mm:ss` offset by 0x800000, then hundredths. A negative time with a
/// fraction stores the fraction reversed (`-00:00:00.50` is `-1 s` and `+0x80`).
/// mysql_common 0.37 subtracts that with an unsigned type: a panic in debug builds, a
/// wrong value in release ones.
fn time_in_hundredths(data: &[u8], precision: u8) -> Option<(SqlValue, &[u8])> {
    let (bytes, rest) = (data.get(..4)?, &data[4..]);
    let mut whole =
        (i64::from(bytes[0]) << 16 | i64::from(bytes[1]) << 8 | i64::from(bytes[2])) - 0x80_0000;
    let mut hundredths = i64::from(bytes[3]);
    if whole < 0 && hundredths > 0 {
        whole += 1;
        hundredths -= 0x100;
    }
    // The packed form, `whole << 24` plus microseconds, then its sign and magnitude.
    let packed = whole * (1 << 24) + hundredths * 10_000;
    let (negative, magnitude) = (packed < 0, packed.unsigned_abs());
    let hms = magnitude >> 24;
    let value = SqlValue::Time {
        negative,
        hours: ((hms >> 12) % (1 << 10)) as u32,
        minute: ((hms >> 6) % (1 << 6)) as u8,
        second: (hms % (1 << 6)) as u8,
        micros: (magnitude % (1 << 24)) as u32,
        precision,
    };
    Some((value, rest))
}

fn rows_err(e: std::io::Error) -> DecodeError {
    DecodeError::Rows(e.to_string())
}

/// How many slots an image needs: every column when all are read, else up to the last one
/// read. Why: a slot costs memory traffic twice, when it is filled with `None` and when the
/// image is given back, and a chunk's images are cold by then (they waited in the channel).
/// On a delete rule over `sbtest`, the key reads `id` only: one slot instead of four.
/// A column past the flags (a table wider than the rules knew) counts as read, as in
/// `Image::read`.
fn image_width(columns: usize, needed: Option<&[bool]>) -> usize {
    match needed {
        Some(flags) if flags.len() >= columns => flags[..columns]
            .iter()
            .rposition(|&read| read)
            .map_or(0, |i| i + 1),
        _ => columns,
    }
}

/// The width of an integer column's values; `None` for other types.
fn int_width(col: &ColumnMeta) -> Option<usize> {
    use mysql_common::constants::ColumnType as T;
    match col.column_type {
        T::MYSQL_TYPE_TINY => Some(1),
        T::MYSQL_TYPE_SHORT => Some(2),
        T::MYSQL_TYPE_INT24 => Some(3),
        T::MYSQL_TYPE_LONG => Some(4),
        T::MYSQL_TYPE_LONGLONG => Some(8),
        _ => None,
    }
}

/// An integer of `width` little-endian bytes at the start of `data`, and its length;
/// `None` when `data` is too short. Gives what mysql_common's parser followed by `convert`
/// gives (a proptest below checks it), at a tenth of the instructions (callgrind: ~180
/// per value that way, most of it moving `Value`s around).
fn read_int_bytes(data: &[u8], width: usize, unsigned: bool) -> Option<(SqlValue, usize)> {
    let mut raw = 0u64;
    for (i, b) in data.get(..width)?.iter().enumerate() {
        raw |= u64::from(*b) << (8 * i);
    }
    let value = if unsigned {
        SqlValue::UInt(raw)
    } else {
        // Sign-extend from the column's width.
        let shift = 64 - 8 * width as u32;
        SqlValue::Int(((raw << shift) as i64) >> shift)
    };
    Some((value, width))
}

/// The byte length of every non-null value of `col`, when its type fixes it (the binlog's
/// row format, as documented for each type's TABLE_MAP metadata); `None` for the
/// length-prefixed types and for those read in full by mysql_common.
fn fixed_len(col: &ColumnMeta) -> Option<usize> {
    use mysql_common::constants::ColumnType as T;
    let meta = &col.type_meta;
    let fraction = |fsp: u8| usize::from(fsp).div_ceil(2);
    match col.column_type {
        T::MYSQL_TYPE_TINY | T::MYSQL_TYPE_YEAR => Some(1),
        T::MYSQL_TYPE_SHORT => Some(2),
        T::MYSQL_TYPE_INT24 | T::MYSQL_TYPE_DATE => Some(3),
        T::MYSQL_TYPE_LONG | T::MYSQL_TYPE_FLOAT => Some(4),
        T::MYSQL_TYPE_LONGLONG | T::MYSQL_TYPE_DOUBLE => Some(8),
        T::MYSQL_TYPE_TIMESTAMP2 => Some(4 + fraction(*meta.first()?)),
        T::MYSQL_TYPE_DATETIME2 => Some(5 + fraction(*meta.first()?)),
        T::MYSQL_TYPE_TIME2 => Some(3 + fraction(*meta.first()?)),
        // ENUM and SET are logged as STRING with their real type in the metadata, and
        // take the value's size in bytes.
        T::MYSQL_TYPE_STRING if length_prefix(col).is_none() => Some(usize::from(*meta.get(1)?)),
        _ => None,
    }
}

/// How many bytes the length prefix of a length-prefixed value takes: VARCHAR, CHAR,
/// BLOB/TEXT, JSON and GEOMETRY. `None` for every other type, ENUM and SET included.
fn length_prefix(col: &ColumnMeta) -> Option<usize> {
    use mysql_common::constants::ColumnType as T;
    let meta = &col.type_meta;
    match col.column_type {
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
            let max = u16::from_le_bytes([*meta.first()?, *meta.get(1)?]);
            Some(if max < 256 { 1 } else { 2 })
        }
        T::MYSQL_TYPE_BLOB | T::MYSQL_TYPE_JSON | T::MYSQL_TYPE_GEOMETRY => {
            Some(usize::from(*meta.first()?))
        }
        T::MYSQL_TYPE_STRING => {
            let (real, low) = (*meta.first()?, *meta.get(1)?);
            // ENUM and SET are logged as STRING with their real type here (0x30 set).
            if real | 0x30 == T::MYSQL_TYPE_ENUM as u8 || real | 0x30 == T::MYSQL_TYPE_SET as u8 {
                return None;
            }
            // CHAR(n): the high bits of n are folded into the real-type byte.
            let max = (((usize::from(real) & 0x30) ^ 0x30) << 4) | usize::from(low);
            Some(if max < 256 { 1 } else { 2 })
        }
        _ => None,
    }
}

/// A length prefix of `n` bytes (little endian) then that many bytes: where the value
/// starts and ends in `data`; `None` when `data` is too short for the prefix.
fn prefixed(data: &[u8], n: usize) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, b) in data.get(..n)?.iter().enumerate() {
        len |= usize::from(*b) << (8 * i);
    }
    Some((n, n + len))
}

/// A text value (VARCHAR, CHAR, TEXT) in UTF-8, or latin1 that is all ASCII, copied
/// straight from the row image into a spare string, and the bytes it took; `None` when
/// the general path must read it (other types and charsets, latin1 beyond ASCII, JSON
/// text, or `data` too short). Gives what mysql_common's parser
/// followed by `convert` gives (a proptest below checks it), without the `Vec` that path
/// allocates per value and the moves of `Value`s.
fn read_utf8(col: &ColumnMeta, data: &[u8]) -> Option<(Result<SqlValue, DecodeError>, usize)> {
    read_text(col, data, text_prefix(col)?)
}

/// The length prefix of a column [`read_utf8`] may read (text types, not JSON text, in
/// UTF-8 or latin1); `None` for the others.
fn text_prefix(col: &ColumnMeta) -> Option<usize> {
    use mysql_common::constants::ColumnType as T;
    let text_type = matches!(
        col.column_type,
        T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_BLOB
    );
    let charset = matches!(col.text, TextKind::Utf8 | TextKind::Latin1);
    if !text_type || col.json_text || !charset {
        return None;
    }
    length_prefix(col)
}

/// [`read_utf8`] for a column whose [`text_prefix`] is `prefix`.
fn read_text(
    col: &ColumnMeta,
    data: &[u8],
    prefix: usize,
) -> Option<(Result<SqlValue, DecodeError>, usize)> {
    let (start, end) = prefixed(data, prefix)?;
    let bytes = data.get(start..end)?;
    let text = match col.text {
        TextKind::Utf8 => std::str::from_utf8(bytes).map_err(|e| DecodeError::Value {
            column: col.name.clone(),
            message: format!("invalid UTF-8: {e}"),
        }),
        // ASCII reads the same in cp1252 and UTF-8; other latin1 text goes the general way.
        TextKind::Latin1 if all_ascii(bytes) => Ok(std::str::from_utf8(bytes).ok()?),
        _ => return None,
    };
    let value = text.map(|text| {
        let mut s = spare::text();
        s.push_str(text);
        SqlValue::Text(s)
    });
    Some((value, end))
}

/// `bytes.is_ascii()`, sixteen bytes per step without a branch: core's version took
/// 1.5 instructions a byte here (callgrind), most text columns are ASCII, and they are
/// scanned in full either way.
fn all_ascii(bytes: &[u8]) -> bool {
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let mut blocks = bytes.chunks_exact(16);
    let high = blocks
        .by_ref()
        .fold(0, |acc, block| acc | word(&block[..8]) | word(&block[8..]));
    high & HIGHS == 0 && blocks.remainder().is_ascii()
}

#[cfg(test)]
mod tests;
