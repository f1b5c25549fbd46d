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

use super::decode::{convert, DecodeError};
use crate::source::schema::ColumnMeta;
use crate::value::{ChangeKind, RowImage, SqlValue};

/// Decodes every row of a write, update or delete rows event.
pub fn decode_plain(
    rows: &RowsEventData<'_>,
    kind: ChangeKind,
    columns: &[ColumnMeta],
    needed: Option<&[bool]>,
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
    let image = Image { columns, needed };
    let mut buf = ParseBuf(rows.rows_data());
    while !buf.is_empty() {
        let before = has_before
            .then(|| image.read(&mut buf, &before_cols))
            .transpose()?;
        let after = has_after
            .then(|| image.read(&mut buf, &after_cols))
            .transpose()?;
        emit(kind, before, after);
    }
    Ok(())
}

struct Image<'a> {
    columns: &'a [ColumnMeta],
    needed: Option<&'a [bool]>,
}

impl<'a> Image<'a> {
    /// One image: a null bitmap over the present columns, then their non-null values.
    fn read<'d>(&self, buf: &mut ParseBuf<'d>, present: &[usize]) -> Result<RowImage, DecodeError>
    where
        'a: 'd,
    {
        let rows_err = |e: std::io::Error| DecodeError::Rows(e.to_string());
        let bitmap: &[u8] = buf.parse(present.len().div_ceil(8)).map_err(rows_err)?;
        let mut out: RowImage = vec![None; self.columns.len()];
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
