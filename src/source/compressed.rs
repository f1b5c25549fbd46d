//! MariaDB's `log_bin_compress`: a statement or a rows event longer than
//! `log_bin_compress_min_len` is logged with its query text, or its rows, zlib-compressed
//! (event types 165–171; the rest of the event stays as it was). Each such event is
//! expanded here into the event the server would have logged without compression, so the
//! rest of the source reads it as any other.
//!
//! The compressed part starts with one byte: `0x80`, the algorithm in bits 4–6 (0, zlib,
//! is the only one), and in bits 0–2 how many bytes the uncompressed length takes (1–4,
//! high byte first); the zlib stream follows (MariaDB's `binlog_buf_uncompress`).

use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::Event;

/// The largest expanded event accepted: the server's own limit for a packet is 1 GiB.
const MAX_EXPANDED: usize = 1 << 30;
const HEADER_LEN: usize = 19;

/// The uncompressed event type for a MariaDB compressed one, `None` for any other type.
pub fn plain_type(raw: u8) -> Option<EventType> {
    Some(match raw {
        165 => EventType::QUERY_EVENT,
        166 => EventType::WRITE_ROWS_EVENT_V1,
        167 => EventType::UPDATE_ROWS_EVENT_V1,
        168 => EventType::DELETE_ROWS_EVENT_V1,
        169 => EventType::WRITE_ROWS_EVENT,
        170 => EventType::UPDATE_ROWS_EVENT,
        171 => EventType::DELETE_ROWS_EVENT,
        _ => return None,
    })
}

/// The event `event` (of a type `plain_type` knows) stands for, with its compressed part
/// expanded and the header's type and size changed to match. Its checksum is not
/// recomputed: the compressed event's was verified, and the expanded one is not checked
/// again. The error says what was wrong with the event.
pub fn expand(event: &Event, plain: EventType) -> Result<Event, String> {
    let data = event.data();
    let start = match plain {
        EventType::QUERY_EVENT => query_text_start(event, data)?,
        _ => rows_start(event, plain, data)?,
    };
    let mut out = event_bytes(event)?;
    out.truncate(HEADER_LEN + start);
    inflate(&data[start..], &mut out)?;
    let size = out.len() + if has_checksum(event) { 4 } else { 0 };
    let size = u32::try_from(size).map_err(|_| "expanded event too large".to_string())?;
    out[4] = plain as u8;
    out[9..13].copy_from_slice(&size.to_le_bytes());
    if has_checksum(event) {
        out.extend_from_slice(&[0; 4]);
    }
    Event::read(event.fde(), &out[..]).map_err(|e| format!("expanded event unreadable: {e}"))
}

/// Where a query event's text starts: after the post-header, the status variables and the
/// database name with its terminating NUL.
fn query_text_start(event: &Event, data: &[u8]) -> Result<usize, String> {
    let post = usize::from(
        event
            .fde()
            .get_event_type_header_length(EventType::QUERY_EVENT),
    );
    let (Some(&db_len), Some(vars)) = (data.get(8), data.get(11..13)) else {
        return Err("query event shorter than its header".into());
    };
    let vars = usize::from(u16::from_le_bytes([vars[0], vars[1]]));
    let start = post + vars + usize::from(db_len) + 1;
    if start > data.len() {
        return Err("query event shorter than its status variables and database".into());
    }
    Ok(start)
}

/// Where a rows event's rows start: after the post-header (with v2's extra data), the
/// column count and the column bitmaps (two for an update).
fn rows_start(event: &Event, plain: EventType, data: &[u8]) -> Result<usize, String> {
    use EventType as E;
    let short = || "rows event shorter than its header".to_string();
    let mut at = usize::from(event.fde().get_event_type_header_length(plain));
    if matches!(
        plain,
        E::WRITE_ROWS_EVENT | E::UPDATE_ROWS_EVENT | E::DELETE_ROWS_EVENT
    ) {
        // v2: a 2-byte length that counts itself, then the extra data.
        let extra = data.get(at..at + 2).ok_or_else(short)?;
        at += usize::from(u16::from_le_bytes([extra[0], extra[1]]));
    }
    let (columns, width) = lenenc(data.get(at..).ok_or_else(short)?).ok_or_else(short)?;
    let bitmap = usize::try_from(columns.div_ceil(8)).map_err(|_| short())?;
    let bitmaps = if matches!(plain, E::UPDATE_ROWS_EVENT_V1 | E::UPDATE_ROWS_EVENT) {
        2
    } else {
        1
    };
    at += width + bitmaps * bitmap;
    if at > data.len() {
        return Err(short());
    }
    Ok(at)
}

/// A length-encoded integer and how many bytes it took.
fn lenenc(buf: &[u8]) -> Option<(u64, usize)> {
    let width = match *buf.first()? {
        b @ 0..=250 => return Some((u64::from(b), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = buf.get(1..=width)?;
    let mut value = [0u8; 8];
    value[..width].copy_from_slice(bytes);
    Some((u64::from_le_bytes(value), 1 + width))
}

/// Appends the expansion of one compressed part to `out`.
fn inflate(part: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let Some(&head) = part.first() else {
        return Err("compressed part is empty".into());
    };
    let width = usize::from(head & 0x07);
    if head & 0x80 == 0 || head & 0x70 != 0 || !(1..=4).contains(&width) {
        return Err(format!(
            "compressed part has an unknown header byte {head:#04x}"
        ));
    }
    let length = part
        .get(1..=width)
        .ok_or("compressed part shorter than its length")?
        .iter()
        .fold(0usize, |n, &b| n << 8 | usize::from(b));
    if length > MAX_EXPANDED {
        return Err(format!("compressed part claims {length} bytes expanded"));
    }
    let before = out.len();
    out.reserve(length);
    let mut z = flate2::Decompress::new(true);
    let status = z
        .decompress_vec(&part[1 + width..], out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("bad zlib data: {e}"))?;
    if status != flate2::Status::StreamEnd || out.len() - before != length {
        return Err(format!(
            "zlib data expanded to {} bytes, not the {length} announced",
            out.len() - before
        ));
    }
    Ok(())
}

/// The event as the server sent it: header and data (the checksum is left off).
fn event_bytes(event: &Event) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(HEADER_LEN + event.data().len() + 4);
    event
        .write(event.fde().binlog_version(), &mut out)
        .map_err(|e| format!("cannot copy the event: {e}"))?;
    out.truncate(HEADER_LEN + event.data().len());
    Ok(out)
}

/// Whether the event came with a checksum, which `Event::read` expects to find again.
fn has_checksum(event: &Event) -> bool {
    event.checksum().is_some() && event.footer().get_checksum_enabled()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(bytes).expect("compress");
        let packed = z.finish().expect("compress");
        let mut part = vec![0x81, bytes.len() as u8];
        part.extend(packed);
        part
    }

    #[test]
    fn a_compressed_part_expands_to_the_announced_length_only() {
        let text = b"TRUNCATE TABLE shop.users";
        let mut out = b"prefix".to_vec();
        inflate(&compress(text), &mut out).expect("expands");
        assert_eq!(out, [&b"prefix"[..], text].concat());

        let mut wrong = compress(text);
        wrong[1] += 1;
        let err = inflate(&wrong, &mut Vec::new()).expect_err("length differs");
        assert!(err.contains("not the 26 announced"), "{err}");
        let mut lz4 = compress(text);
        lz4[0] = 0x91;
        assert!(inflate(&lz4, &mut Vec::new()).is_err(), "unknown algorithm");
        let mut cut = compress(text);
        cut.truncate(cut.len() - 3);
        assert!(inflate(&cut, &mut Vec::new()).is_err(), "truncated stream");
        assert!(inflate(&[], &mut Vec::new()).is_err());
    }

    #[test]
    fn length_encoded_integers() {
        assert_eq!(lenenc(&[7]), Some((7, 1)));
        assert_eq!(lenenc(&[0xfc, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(lenenc(&[0xfd, 1, 0, 0]), Some((1, 4)));
        assert_eq!(lenenc(&[0xfc, 1]), None);
        assert_eq!(lenenc(&[0xff]), None);
    }

    #[test]
    fn only_mariadbs_compressed_types_have_a_plain_type() {
        assert_eq!(plain_type(165), Some(EventType::QUERY_EVENT));
        assert_eq!(plain_type(167), Some(EventType::UPDATE_ROWS_EVENT_V1));
        assert_eq!(plain_type(171), Some(EventType::DELETE_ROWS_EVENT));
        assert_eq!(plain_type(164), None);
        assert_eq!(plain_type(172), None);
        assert_eq!(plain_type(2), None);
    }
}
