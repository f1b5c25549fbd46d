//! MariaDB's system-versioned tables (`WITH SYSTEM VERSIONING`) keep their history in the
//! table itself, and the binlog shows it: an `UPDATE` is logged as the update of the
//! current row plus the insert of a history row holding the old values, a `DELETE` as an
//! update that closes the row's period. Mapped as they are, the history row would
//! overwrite the new value and a deleted row would stay cached. What counts for the cache
//! is the current rows only: those whose row end is still open.

use crate::chunk::{RowRef, Values};
use crate::value::{ChangeKind, SqlValue};

/// The change as it affects the table's current rows; `None` when it touches history
/// only. Changes of tables that are not versioned are returned as they are.
pub fn current_change(change: RowRef<'_>) -> Option<RowRef<'_>> {
    let Some(end) = change.table.row_end else {
        return Some(change);
    };
    // A row end the image does not carry cannot be judged: taken as current, as for a
    // table that is not versioned.
    let current = |image: Option<&Values>| {
        image
            .and_then(|row| row.get(end))
            .and_then(Option::as_ref)
            .is_none_or(is_open)
    };
    let (before, after) = (current(change.before), current(change.after));
    match change.kind {
        ChangeKind::Insert if after => Some(change),
        ChangeKind::Delete if before => Some(change),
        ChangeKind::Update => match (before, after) {
            (true, true) => Some(change),
            // The period was closed: the row left the current rows.
            (true, false) => Some(RowRef {
                kind: ChangeKind::Delete,
                after: None,
                ..change
            }),
            (false, true) => Some(RowRef {
                kind: ChangeKind::Insert,
                before: None,
                ..change
            }),
            (false, false) => None,
        },
        _ => None,
    }
}

/// A current row's row end: the greatest TIMESTAMP(6) (2038-01-19 03:14:07.999999 UTC,
/// or 2106-02-07 06:28:15.999999 where MariaDB 11.5 extended the range), or the greatest
/// BIGINT UNSIGNED for a period of transaction ids.
fn is_open(value: &SqlValue) -> bool {
    matches!(
        value,
        SqlValue::Timestamp {
            seconds: 2_147_483_647 | 4_294_967_295,
            micros: 999_999,
            ..
        } | SqlValue::UInt(u64::MAX)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::Position;
    use crate::value::TableInfo;

    fn end(seconds: i64) -> Option<SqlValue> {
        Some(SqlValue::Timestamp {
            seconds,
            micros: 999_999,
            precision: 6,
        })
    }

    #[test]
    fn history_rows_are_left_out_and_a_closed_period_is_a_delete() {
        let names = vec!["id".to_string(), "row_end".to_string()];
        let versioned = Arc::new(
            TableInfo::new("s".into(), "t".into(), names.clone())
                .with_versioning(vec![false, true], Some(1)),
        );
        let position = Position::new("binlog.000001", 4);
        let open = [Some(SqlValue::Int(1)), end(2_147_483_647)];
        let closed = [Some(SqlValue::Int(1)), end(1_800_000_000)];
        fn change<'a>(
            table: &'a Arc<TableInfo>,
            position: &'a Position,
            kind: ChangeKind,
            before: Option<&'a Values>,
            after: Option<&'a Values>,
        ) -> RowRef<'a> {
            RowRef {
                table,
                kind,
                before,
                after,
                event_position: position,
            }
        }
        let row = |kind, before, after| change(&versioned, &position, kind, before, after);
        let kind_of = |c: RowRef<'_>| current_change(c).map(|c| c.kind);
        use ChangeKind::*;
        assert_eq!(kind_of(row(Insert, None, Some(&open))), Some(Insert));
        assert_eq!(kind_of(row(Insert, None, Some(&closed))), None, "history");
        assert_eq!(kind_of(row(Update, Some(&open), Some(&open))), Some(Update));
        let deleted = current_change(row(Update, Some(&open), Some(&closed))).expect("a delete");
        assert_eq!((deleted.kind, deleted.after), (Delete, None));
        assert_eq!(
            kind_of(row(Update, Some(&closed), Some(&open))),
            Some(Insert)
        );
        assert_eq!(kind_of(row(Update, Some(&closed), Some(&closed))), None);
        assert_eq!(
            kind_of(row(Delete, Some(&closed), None)),
            None,
            "history deleted"
        );
        assert_eq!(kind_of(row(Delete, Some(&open), None)), Some(Delete));

        let plain = Arc::new(TableInfo::new("s".into(), "t".into(), names));
        let history = RowRef {
            table: &plain,
            ..row(Insert, None, Some(&closed))
        };
        assert_eq!(kind_of(history), Some(Insert), "not versioned: as it is");
    }
}
