//! A chunk of row changes as the source hands it to the applier: the rows of one
//! transaction, stored flat.
//!
//! Every value of every row image sits in one vector; a row is where its images start in
//! it and how long they are; the table, kind and position are kept once per rows event.
//!
//! Why: a chunk used to be a vector of changes, each with its own image vectors and its own
//! references to the table and the event position. Taking an image from the spare list,
//! giving it back and counting those references up and down cost a delete catch-up about
//! as much as decoding the rows (perf: `spare::image`, `give_back_image` and the
//! thread-local lists were over a tenth of its samples, stalled on images grown cold in
//! the channel). Flat, a chunk's images are written in order into memory that was just
//! used, and the whole chunk is recycled as three vectors.
//!
//! The mapper reads a row through [`RowRef`], which an owned [`RowChange`] (read back over
//! SQL, or built by a test) gives too.

use std::sync::Arc;

use crate::checkpoint::Position;
use crate::value::{ChangeKind, RowChange, SqlValue, TableInfo};

/// A row image's values, aligned with `TableInfo::columns` (possibly fewer: a decoder
/// leaves out the columns past the last one a rule reads).
pub type Values = [Option<SqlValue>];

/// One row change, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRef<'a> {
    pub table: &'a Arc<TableInfo>,
    pub kind: ChangeKind,
    pub before: Option<&'a Values>,
    pub after: Option<&'a Values>,
    /// Position of the rows event that carried this change (for error messages).
    pub event_position: &'a Position,
}

impl RowChange {
    pub fn as_row(&self) -> RowRef<'_> {
        RowRef {
            table: &self.table,
            kind: self.kind,
            before: self.before.as_deref(),
            after: self.after.as_deref(),
            event_position: &self.event_position,
        }
    }
}

/// Marks an image the row does not have (`Row::before` / `Row::after`).
const ABSENT: u32 = u32::MAX;

/// The rows of one rows event in a chunk.
#[derive(Debug, Clone, PartialEq)]
struct EventRows {
    table: Arc<TableInfo>,
    kind: ChangeKind,
    position: Position,
    /// Its first row in `Chunk::rows`; its rows run up to the next event's first.
    start: usize,
}

/// One row: its before image at `start` in `Chunk::values`, then its after image. A row
/// image has at most 4,096 columns (the server's limit), so a `u32` holds a length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    start: usize,
    before: u32,
    after: u32,
}

/// Which image of a row a reader is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Before,
    After,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    events: Vec<EventRows>,
    rows: Vec<Row>,
    values: Vec<Option<SqlValue>>,
}

impl Chunk {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Starts the rows of a new rows event: rows pushed after this belong to it.
    pub fn begin_event(&mut self, table: Arc<TableInfo>, kind: ChangeKind, position: Position) {
        let start = self.rows.len();
        self.events.push(EventRows {
            table,
            kind,
            position,
            start,
        });
    }

    /// Appends a row of the current event. `read` appends an image to the values it is
    /// given: first the before image (when `before`), then the after image (when `after`).
    /// On an error the chunk is left as it was.
    #[inline]
    pub fn push_row<E>(
        &mut self,
        before: bool,
        after: bool,
        mut read: impl FnMut(Side, &mut Vec<Option<SqlValue>>) -> Result<(), E>,
    ) -> Result<(), E> {
        debug_assert!(!self.events.is_empty(), "a row before its event");
        let values = &mut self.values;
        let start = values.len();
        let mut both = || {
            if before {
                read(Side::Before, values)?;
            }
            let middle = values.len();
            if after {
                read(Side::After, values)?;
            }
            Ok(middle)
        };
        let middle = match both() {
            Ok(middle) => middle,
            Err(e) => {
                self.values.truncate(start);
                return Err(e);
            }
        };
        let len = |present: bool, len: usize| match present {
            true => u32::try_from(len).expect("an image has at most 4,096 columns"),
            false => ABSENT,
        };
        self.rows.push(Row {
            start,
            before: len(before, middle - start),
            after: len(after, self.values.len() - middle),
        });
        Ok(())
    }

    /// Appends an owned change as an event of its own.
    #[cfg(test)]
    fn push_change(&mut self, change: &RowChange) {
        self.begin_event(
            change.table.clone(),
            change.kind,
            (*change.event_position).clone(),
        );
        let images = [&change.before, &change.after];
        let _ = self.push_row::<()>(
            change.before.is_some(),
            change.after.is_some(),
            |side, v| {
                let image = images[side as usize].as_deref().unwrap_or_default();
                v.extend_from_slice(image);
                Ok(())
            },
        );
    }

    /// The rows, event by event.
    pub fn events(&self) -> impl Iterator<Item = EventView<'_>> {
        let ends = self.events.iter().skip(1).map(|e| e.start);
        let ends = ends.chain(std::iter::once(self.rows.len()));
        self.events.iter().zip(ends).map(|(event, end)| EventView {
            event,
            rows: &self.rows[event.start..end],
            values: &self.values,
        })
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.events().flat_map(|e| e.rows())
    }

    /// Empties the chunk, keeping its vectors' room; `value` receives each value.
    pub fn clear_with(&mut self, value: impl FnMut(Option<SqlValue>)) {
        self.events.clear();
        self.rows.clear();
        self.values.drain(..).for_each(value);
    }

    /// Bytes its vectors hold room for (the spare list's budget).
    pub fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        self.events.capacity() * size_of::<EventRows>()
            + self.rows.capacity() * size_of::<Row>()
            + self.values.capacity() * size_of::<Option<SqlValue>>()
    }
}

/// The rows of one rows event.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    event: &'a EventRows,
    rows: &'a [Row],
    values: &'a [Option<SqlValue>],
}

impl<'a> EventView<'a> {
    pub fn table(&self) -> &'a Arc<TableInfo> {
        &self.event.table
    }

    pub fn kind(&self) -> ChangeKind {
        self.event.kind
    }

    /// Where the rows event starts in the binlog.
    pub fn position(&self) -> &'a Position {
        &self.event.position
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(self) -> impl Iterator<Item = RowRef<'a>> {
        self.rows.iter().map(move |row| self.row(row))
    }

    fn row(&self, row: &Row) -> RowRef<'a> {
        let before_len = if row.before == ABSENT {
            0
        } else {
            row.before as usize
        };
        let image = |start: usize, len: u32| {
            (len != ABSENT).then(|| &self.values[start..start + len as usize])
        };
        RowRef {
            table: &self.event.table,
            kind: self.event.kind,
            before: image(row.start, row.before),
            after: image(row.start + before_len, row.after),
            event_position: &self.event.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Arc<TableInfo> {
        Arc::new(TableInfo::new("d".into(), name.into(), vec!["id".into()]))
    }

    fn int(v: i64) -> Option<SqlValue> {
        Some(SqlValue::Int(v))
    }

    #[test]
    fn rows_come_back_with_their_event_and_images() {
        let (t1, t2) = (table("a"), table("b"));
        let mut chunk = Chunk::default();
        chunk.begin_event(
            t1.clone(),
            ChangeKind::Update,
            Position::new("b.000001", 100),
        );
        for id in [1, 2] {
            chunk
                .push_row::<()>(true, true, |side, v| {
                    v.push(int(if side == Side::Before { id } else { id * 10 }));
                    Ok(())
                })
                .unwrap();
        }
        chunk.begin_event(
            t2.clone(),
            ChangeKind::Delete,
            Position::new("b.000001", 200),
        );
        chunk
            .push_row::<()>(true, false, |_, v| {
                v.extend([int(3), None]);
                Ok(())
            })
            .unwrap();
        assert_eq!(chunk.len(), 3);
        let rows: Vec<_> = chunk.iter().collect();
        assert_eq!(rows[1].before, Some(&[int(2)][..]));
        assert_eq!(rows[1].after, Some(&[int(20)][..]));
        assert_eq!(rows[1].event_position.pos, 100);
        assert!(Arc::ptr_eq(rows[1].table, &t1));
        assert_eq!(rows[2].before, Some(&[int(3), None][..]));
        assert_eq!(rows[2].after, None);
        assert_eq!(rows[2].kind, ChangeKind::Delete);
        assert!(Arc::ptr_eq(rows[2].table, &t2));
        let sizes: Vec<_> = chunk.events().map(|e| e.len()).collect();
        assert_eq!(sizes, [2, 1]);
    }

    #[test]
    fn a_failed_read_leaves_no_row_and_no_values() {
        let mut chunk = Chunk::default();
        chunk.begin_event(table("a"), ChangeKind::Update, Position::new("b.000001", 4));
        let failed = chunk.push_row(true, true, |side, v| {
            v.push(int(1));
            if side == Side::After {
                return Err("truncated");
            }
            Ok(())
        });
        assert_eq!(failed, Err("truncated"));
        assert!(chunk.is_empty());
        assert_eq!(chunk.values.len(), 0);
        assert_eq!(chunk.events().map(|e| e.len()).sum::<usize>(), 0);
    }

    #[test]
    fn an_owned_change_reads_the_same_from_a_chunk() {
        let change = RowChange {
            table: table("a"),
            kind: ChangeKind::Insert,
            before: None,
            after: Some(vec![int(7)]),
            event_position: Arc::new(Position::new("b.000001", 9)),
        };
        let mut chunk = Chunk::default();
        chunk.push_change(&change);
        assert_eq!(chunk.iter().next(), Some(change.as_row()));
        let mut seen = 0;
        chunk.clear_with(|_| seen += 1);
        assert_eq!((seen, chunk.len(), chunk.iter().count()), (1, 0, 0));
    }
}
