//! MariaDB column compression (`TEXT COMPRESSED`, `VARCHAR(n) COMPRESSED`). The binlog
//! logs such a column with a type of its own (141 for VARCHAR, 140 for the BLOB/TEXT
//! family) and its value as the server stores it, compressed. mysql_common knows neither
//! type, so its TABLE_MAP metadata walk stops at the first such column; the walk is done
//! here instead, and values are framed as their plain type and expanded before use.
//!
//! A stored value (MariaDB's `sql/field_comp.cc`) is empty, or one header byte and then:
//! with bit 7 clear, the value itself (too short to gain from compression); with bit 7
//! set, the expanded length in as many bytes as bits 0–2 say (high byte first) and a
//! deflate stream, raw when bit 3 is set and zlib-wrapped otherwise. Bits 4–6 name the
//! algorithm: 0, zlib, is the only one.

use mysql_common::binlog::events::TableMapEvent;
use mysql_common::constants::ColumnType;
use mysql_common::proto::MySerialize;

pub const VARCHAR_COMPRESSED: u8 = 141;
pub const BLOB_COMPRESSED: u8 = 140;

/// A column value is at most 4 GiB (LONGBLOB); a header claiming more is corrupt.
const MAX_EXPANDED: u64 = 1 << 32;

/// The plain type a compressed column's values are framed as in a row image.
pub fn framed_as(raw_type: u8) -> Option<ColumnType> {
    match raw_type {
        VARCHAR_COMPRESSED => Some(ColumnType::MYSQL_TYPE_VARCHAR),
        BLOB_COMPRESSED => Some(ColumnType::MYSQL_TYPE_BLOB),
        _ => None,
    }
}

/// Every column's TABLE_MAP type metadata, in column order.
pub fn column_metadata(tme: &TableMapEvent<'_>) -> Result<Vec<Vec<u8>>, String> {
    let mut event = Vec::new();
    tme.serialize(&mut event);
    let mut block = metadata_block(&event, tme.columns_count())
        .ok_or("the TABLE_MAP event ends before its metadata")?;
    (0..tme.columns_count() as usize)
        .map(|i| {
            let raw = match tme.get_raw_column_type(i) {
                Ok(Some(t)) => t as u8,
                Ok(None) => return Err(format!("column {i} has no type")),
                Err(unknown) => unknown.0,
            };
            let len = metadata_len(raw, block)
                .ok_or_else(|| format!("column {i} has type {raw}, whose metadata is unknown"))?;
            let (meta, rest) = block
                .split_at_checked(len)
                .ok_or_else(|| format!("the metadata ends inside column {i}"))?;
            block = rest;
            Ok(meta.to_vec())
        })
        .collect()
}

/// The metadata block of a TABLE_MAP event as mysql_common writes it back: table id (6
/// bytes), flags (2), schema and table names (length byte, bytes, NUL), the column count
/// (length-encoded), one type byte per column, then the block, length-encoded.
fn metadata_block(event: &[u8], columns: u64) -> Option<&[u8]> {
    let mut at = 8;
    for _ in 0..2 {
        at += 1 + usize::from(*event.get(at)?) + 1;
    }
    let (count, width) = lenenc(event.get(at..)?)?;
    if count != columns {
        return None;
    }
    at += width + usize::try_from(count).ok()?;
    let (len, width) = lenenc(event.get(at..)?)?;
    at += width;
    event.get(at..at.checked_add(usize::try_from(len).ok()?)?)
}

/// A length-encoded integer: its value and how many bytes it took.
fn lenenc(bytes: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let b = bytes.get(1..=n)?;
        Some(b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
    };
    match *bytes.first()? {
        n @ 0..=250 => Some((u64::from(n), 1)),
        0xfc => Some((le(2)?, 3)),
        0xfd => Some((le(3)?, 4)),
        0xfe => Some((le(8)?, 9)),
        _ => None,
    }
}

/// How many metadata bytes a column of this raw type has (mysql_common's table, plus
/// MariaDB's compressed types); `rest` is the block from that column on.
fn metadata_len(raw: u8, rest: &[u8]) -> Option<usize> {
    use ColumnType as T;
    match raw {
        VARCHAR_COMPRESSED => return Some(2),
        BLOB_COMPRESSED => return Some(1),
        _ => {}
    }
    Some(match ColumnType::try_from(raw).ok()? {
        T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB
        | T::MYSQL_TYPE_DOUBLE
        | T::MYSQL_TYPE_FLOAT
        | T::MYSQL_TYPE_GEOMETRY
        | T::MYSQL_TYPE_TIME2
        | T::MYSQL_TYPE_DATETIME2
        | T::MYSQL_TYPE_TIMESTAMP2
        | T::MYSQL_TYPE_JSON
        | T::MYSQL_TYPE_VECTOR => 1,
        T::MYSQL_TYPE_VARCHAR
        | T::MYSQL_TYPE_NEWDECIMAL
        | T::MYSQL_TYPE_SET
        | T::MYSQL_TYPE_ENUM
        | T::MYSQL_TYPE_STRING
        | T::MYSQL_TYPE_BIT => 2,
        // MySQL's multi-valued index arrays: the element type, then its metadata (VARCHAR
        // elements carry a third byte).
        T::MYSQL_TYPE_TYPED_ARRAY => {
            let inner = *rest.first()?;
            if inner == T::MYSQL_TYPE_VARCHAR as u8 {
                4
            } else {
                1 + metadata_len(inner, rest.get(1..)?)?
            }
        }
        _ => 0,
    })
}

/// A compressed column's stored value, expanded.
pub fn inflate(stored: &[u8]) -> Result<Vec<u8>, String> {
    let Some((&head, rest)) = stored.split_first() else {
        return Ok(Vec::new());
    };
    if head & 0x80 == 0 {
        return Ok(rest.to_vec());
    }
    let width = usize::from(head & 0x07);
    if head & 0x70 != 0 || !(1..=4).contains(&width) {
        return Err(format!(
            "compressed value has an unknown header byte {head:#04x}"
        ));
    }
    let (length, stream) = rest
        .split_at_checked(width)
        .ok_or("compressed value shorter than its length")?;
    let length = length.iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
    if length > MAX_EXPANDED {
        return Err(format!("compressed value claims {length} bytes expanded"));
    }
    let mut out = Vec::with_capacity(length as usize);
    let zlib_wrapped = head & 0x08 == 0;
    let mut z = flate2::Decompress::new(zlib_wrapped);
    let status = z
        .decompress_vec(stream, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("bad compressed value: {e}"))?;
    if status != flate2::Status::StreamEnd || out.len() as u64 != length {
        return Err(format!(
            "compressed value expanded to {} bytes, not the {length} announced",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A value stored the way MariaDB's `compress_zlib` stores it.
    fn stored(value: &[u8], raw_deflate: bool) -> Vec<u8> {
        let width = 2u8;
        let mut out = vec![0x80 | width | if raw_deflate { 8 } else { 0 }];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        let level = flate2::Compression::default();
        let compressed = if raw_deflate {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(value).expect("deflate");
            e.finish().expect("deflate")
        } else {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(value).expect("zlib");
            e.finish().expect("zlib")
        };
        out.extend_from_slice(&compressed);
        out
    }

    #[test]
    fn stored_values_expand_in_every_form() {
        let text = "naïve ".repeat(50).into_bytes();
        assert_eq!(inflate(&stored(&text, false)).expect("zlib"), text);
        assert_eq!(inflate(&stored(&text, true)).expect("raw deflate"), text);
        // Short values are kept as they are, behind a zero header byte.
        assert_eq!(inflate(b"\x00ab").expect("plain"), b"ab");
        assert_eq!(inflate(b"").expect("empty"), b"");
    }

    #[test]
    fn corrupt_values_are_refused() {
        let text = b"abcdefabcdefabcdefabcdef".to_vec();
        let mut wrong_length = stored(&text, false);
        wrong_length[2] += 1;
        assert!(inflate(&wrong_length).is_err());
        let mut cut = stored(&text, false);
        cut.truncate(cut.len() - 3);
        assert!(inflate(&cut).is_err());
        assert!(inflate(&[0x90, 0, 1]).is_err(), "unknown algorithm");
        assert!(inflate(&[0x84, 0]).is_err(), "length cut short");
    }

    #[test]
    fn length_encoded_integers() {
        assert_eq!(lenenc(&[7]), Some((7, 1)));
        assert_eq!(lenenc(&[0xfc, 0x2c, 0x01]), Some((300, 3)));
        assert_eq!(lenenc(&[0xfc, 0x2c]), None);
        assert_eq!(lenenc(&[0xff]), None);
    }
}
