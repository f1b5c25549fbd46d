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
use mysql_common::io::ParseBuf;

use super::decode::{convert, DecodeError, Wanted};
use crate::source::schema::{ColumnMeta, TextKind};
use crate::spare;
use crate::value::{ChangeKind, RowImage, SqlValue};

/// Decodes every row of a write, update or delete rows event.
pub fn decode_plain(
    rows: &RowsEventData<'_>,
    kind: ChangeKind,
    columns: &[ColumnMeta],
    wanted: &Wanted,
    emit: &mut impl FnMut(ChangeKind, Option<RowImage>, Option<RowImage>),
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
    let before_image = Image::new(columns, wanted.before.as_deref());
    let after_image = Image::new(columns, wanted.after.as_deref());
    let mut buf = ParseBuf(rows.rows_data());
    while !buf.is_empty() {
        let before = has_before
            .then(|| before_image.read(&mut buf, &before_cols))
            .transpose()?;
        let after = has_after
            .then(|| after_image.read(&mut buf, &after_cols))
            .transpose()?;
        emit(kind, before, after);
    }
    Ok(())
}

struct Image<'a> {
    columns: &'a [ColumnMeta],
    needed: Option<&'a [bool]>,
    /// Slots in each image: up to the last column a rule reads. Columns past it are never
    /// read, so they get no slot at all.
    width: usize,
}

impl<'a> Image<'a> {
    fn new(columns: &'a [ColumnMeta], needed: Option<&'a [bool]>) -> Self {
        Image {
            columns,
            needed,
            width: image_width(columns.len(), needed),
        }
    }

    /// One image: a null bitmap over the present columns, then their non-null values.
    fn read<'d>(&self, buf: &mut ParseBuf<'d>, present: &[usize]) -> Result<RowImage, DecodeError>
    where
        'a: 'd,
    {
        let rows_err = |e: std::io::Error| DecodeError::Rows(e.to_string());
        let bitmap: &[u8] = buf.parse(present.len().div_ceil(8)).map_err(rows_err)?;
        let mut out: RowImage = spare::image(self.width);
        for (j, &idx) in present.iter().enumerate() {
            let col = &self.columns[idx];
            let wanted = self
                .needed
                .is_none_or(|n| n.get(idx).copied().unwrap_or(true));
            if bitmap[j / 8] & (1 << (j % 8)) != 0 {
                if wanted {
                    out[idx] = Some(SqlValue::Null);
                }
                continue;
            }
            if !wanted {
                if let Some(len) = encoded_len(col, buf.0) {
                    // A column no rule reads: step over its bytes without building it.
                    if !buf.checked_skip(len) {
                        return Err(DecodeError::Rows(format!(
                            "the row image ends inside column {}",
                            col.name
                        )));
                    }
                    continue;
                }
            }
            // The commonest types (integer keys, UTF-8 text) are read here, without a trip
            // through mysql_common's `Value`.
            if let Some((value, len)) = wanted.then(|| read_int(col, buf.0)).flatten() {
                out[idx] = Some(value);
                buf.0 = &buf.0[len..];
                continue;
            }
            if let Some((value, len)) = wanted.then(|| read_utf8(col, buf.0)).flatten() {
                out[idx] = Some(value?);
                buf.0 = &buf.0[len..];
                continue;
            }
            let value: BinlogValue<'_> = buf
                .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
                .map_err(rows_err)?;
            if wanted {
                out[idx] = Some(convert(value, col)?);
            }
        }
        Ok(out)
    }
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

/// An integer column's value read straight from its little-endian bytes, and its length;
/// `None` for other types or when `data` is too short. Gives what mysql_common's parser
/// followed by `convert` gives (a proptest below checks it), at a tenth of the
/// instructions (callgrind: ~180 per value that way, most of it moving `Value`s around).
fn read_int(col: &ColumnMeta, data: &[u8]) -> Option<(SqlValue, usize)> {
    use mysql_common::constants::ColumnType as T;
    let width = match col.column_type {
        T::MYSQL_TYPE_TINY => 1,
        T::MYSQL_TYPE_SHORT => 2,
        T::MYSQL_TYPE_INT24 => 3,
        T::MYSQL_TYPE_LONG => 4,
        T::MYSQL_TYPE_LONGLONG => 8,
        _ => return None,
    };
    let mut raw = 0u64;
    for (i, b) in data.get(..width)?.iter().enumerate() {
        raw |= u64::from(*b) << (8 * i);
    }
    let value = if col.unsigned {
        SqlValue::UInt(raw)
    } else {
        // Sign-extend from the column's width.
        let shift = 64 - 8 * width as u32;
        SqlValue::Int(((raw << shift) as i64) >> shift)
    };
    Some((value, width))
}

/// The byte length of a non-null value of `col` at the start of `data`, for the common
/// types (the binlog's row format, as documented for each type's TABLE_MAP metadata);
/// `None` for the others, which are then parsed in full, or when `data` is too short.
fn encoded_len(col: &ColumnMeta, data: &[u8]) -> Option<usize> {
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
        t => match length_prefix(col) {
            Some(prefix) => prefixed(data, prefix).map(|(_, end)| end),
            // ENUM and SET are logged as STRING with their real type in the metadata,
            // and take the value's size in bytes.
            None if t == T::MYSQL_TYPE_STRING => Some(usize::from(*meta.get(1)?)),
            None => None,
        },
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
    use mysql_common::constants::ColumnType as T;
    let text_type = matches!(
        col.column_type,
        T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_BLOB
    );
    if !text_type || col.json_text {
        return None;
    }
    let (start, end) = prefixed(data, length_prefix(col)?)?;
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
mod tests {
    use mysql_common::constants::ColumnType as T;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_image_has_slots_up_to_the_last_column_read() {
        assert_eq!(image_width(4, None), 4, "all columns read");
        assert_eq!(image_width(4, Some(&[true, false, false, false])), 1);
        assert_eq!(image_width(4, Some(&[false, true, false, true])), 4);
        assert_eq!(image_width(4, Some(&[false; 4])), 0);
        // Flags for fewer columns than the event has: the rest count as read.
        assert_eq!(image_width(4, Some(&[true, false])), 4);
        // Flags for more columns (the table lost one): only the event's columns count.
        assert_eq!(image_width(2, Some(&[true, false, true])), 1);
    }

    fn int_column(column_type: T, unsigned: bool) -> ColumnMeta {
        ColumnMeta {
            name: "n".into(),
            column_type,
            precision: 0,
            unsigned,
            text: TextKind::Binary,
            enum_labels: None,
            set_labels: None,
            json_text: false,
            binary_len: None,
            type_meta: Vec::new(),
        }
    }

    proptest! {
        #[test]
        fn integers_read_directly_match_mysql_common_and_convert(
            bytes in proptest::array::uniform8(any::<u8>()),
            type_index in 0usize..5,
            unsigned: bool,
        ) {
            let types = [
                T::MYSQL_TYPE_TINY,
                T::MYSQL_TYPE_SHORT,
                T::MYSQL_TYPE_INT24,
                T::MYSQL_TYPE_LONG,
                T::MYSQL_TYPE_LONGLONG,
            ];
            let col = int_column(types[type_index], unsigned);
            let (fast, len) = read_int(&col, &bytes).expect("an integer type");
            let mut buf = ParseBuf(&bytes);
            let parsed: BinlogValue<'_> = buf
                .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
                .expect("mysql_common parses it");
            prop_assert_eq!(len, bytes.len() - buf.0.len(), "same length consumed");
            prop_assert_eq!(fast, convert(parsed, &col).expect("converts"));
        }
    }

    #[test]
    fn other_types_and_short_data_are_left_to_mysql_common() {
        assert!(read_int(&int_column(T::MYSQL_TYPE_VARCHAR, false), &[1, 2]).is_none());
        assert!(read_int(&int_column(T::MYSQL_TYPE_LONG, false), &[1, 2, 3]).is_none());
    }

    fn text_column(column_type: T, type_meta: Vec<u8>) -> ColumnMeta {
        ColumnMeta {
            text: TextKind::Utf8,
            type_meta,
            ..int_column(column_type, false)
        }
    }

    proptest! {
        #[test]
        fn utf8_text_read_directly_matches_mysql_common_and_convert(
            payload in prop_oneof![
                any::<String>().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            shape in 0usize..5,
            latin1: bool,
        ) {
            // VARCHAR(100), VARCHAR(1000), CHAR(120), CHAR(300), TEXT.
            let (col, prefix) = match shape {
                0 => (text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]), 1),
                1 => (text_column(T::MYSQL_TYPE_VARCHAR, vec![0xe8, 3]), 2),
                2 => (text_column(T::MYSQL_TYPE_STRING, vec![0xfe, 120]), 1),
                3 => (text_column(T::MYSQL_TYPE_STRING, vec![0xee, 300u16 as u8]), 2),
                _ => (text_column(T::MYSQL_TYPE_BLOB, vec![2]), 2),
            };
            let mut col = col;
            if latin1 {
                col.text = TextKind::Latin1;
            }
            let mut data = payload.len().to_le_bytes()[..prefix].to_vec();
            data.extend_from_slice(&payload);
            data.extend_from_slice(b"next");
            let Some((fast, len)) = read_utf8(&col, &data) else {
                prop_assert!(latin1 && !payload.is_ascii(), "only latin1 beyond ASCII is left");
                return Ok(());
            };
            let mut buf = ParseBuf(&data);
            let parsed: BinlogValue<'_> = buf
                .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
                .expect("mysql_common parses it");
            prop_assert_eq!(buf.0, b"next", "mysql_common read up to the next value");
            prop_assert_eq!(len, data.len() - 4, "same length consumed");
            prop_assert_eq!(fast, convert(parsed, &col));
        }
    }

    proptest! {
        #[test]
        fn all_ascii_agrees_with_core(
            text in "[ -~]{0,70}",
            high in proptest::option::of((any::<proptest::sample::Index>(), 0x80u8..)),
        ) {
            let mut bytes = text.into_bytes();
            if let (Some((at, b)), false) = (high, bytes.is_empty()) {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            prop_assert_eq!(all_ascii(&bytes), bytes.is_ascii());
        }
    }

    #[test]
    fn other_charsets_enums_and_json_text_are_left_to_the_general_path() {
        let data = [3, b'a', b'b', b'c'];
        let mut ucs2 = text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]);
        ucs2.text = TextKind::Unsupported(35);
        assert!(read_utf8(&ucs2, &data).is_none());
        let mut json = text_column(T::MYSQL_TYPE_BLOB, vec![1]);
        json.json_text = true;
        assert!(read_utf8(&json, &data).is_none());
        let enumeration = text_column(T::MYSQL_TYPE_STRING, vec![0xf7, 1]);
        assert!(read_utf8(&enumeration, &data).is_none());
        assert_eq!(encoded_len(&enumeration, &data), Some(1));
    }
}
