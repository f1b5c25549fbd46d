//! TABLE_MAP events: which tables the rows events that follow belong to, with their
//! columns as the rules need them decoded.

use mysql_common::binlog::events::{Event, TableMapEvent};

use super::{Assembler, MappedTable};
use crate::source::decode::Wanted;
use crate::source::schema::{build_columns, versioning};
use crate::source::SourceError;
use crate::value::TableInfo;
use std::sync::Arc;

impl Assembler {
    pub(super) async fn on_table_map(&mut self, event: &Event) -> Result<(), SourceError> {
        let tme: TableMapEvent<'_> = event
            .read_event()
            .map_err(|e| self.unsupported(&format!("bad TABLE_MAP event: {e}")))?;
        let id = tme.table_id();
        if let Some(Some(known)) = self.tables.get(&id) {
            if known.tme == tme {
                return Ok(());
            }
        }
        let (db, table) = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        let covered = self
            .rules
            .as_ref()
            .is_none_or(|r| r.covers(&format!("{db}.{table}")));
        if !covered {
            self.tables.insert(id, None);
            return Ok(());
        }
        let desc = self.catalog.table(&db, &table).await?;
        if desc.as_ref().is_some_and(|d| d.sequence) {
            // `NEXTVAL` logs the sequence's state as a row; a glob such as `shop.*` must
            // not take it for a row of data (it has none of the rule's columns).
            self.tables.insert(id, None);
            return Ok(());
        }
        let event_time = event.header().timestamp();
        let charsets = self.catalog.charsets().await?;
        let mariadb = event.fde().server_version().contains("MariaDB");
        let columns = build_columns(
            &tme,
            desc.as_deref(),
            &charsets,
            mariadb,
            &self.position(),
            event_time,
        )?;
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let qualified = format!("{db}.{table}");
        let rules = self.rules.as_ref();
        let versioning = versioning(&names, desc.as_deref());
        let mut needed = Wanted {
            after: rules.and_then(|r| r.needed_columns(&qualified, &names)),
            before: rules.map(|r| r.key_columns(&qualified, &names)),
        };
        // Whether a row is current or history is read from its row end, in both images.
        if let Some(i) = versioning.row_end {
            for flags in [&mut needed.after, &mut needed.before]
                .into_iter()
                .flatten()
            {
                flags[i] = true;
            }
        }
        let info = Arc::new(
            TableInfo::new(db, table, names).with_versioning(versioning.hidden, versioning.row_end),
        );
        self.tables.insert(
            id,
            Some(MappedTable {
                tme: tme.into_owned(),
                info,
                columns: columns.into(),
                needed,
            }),
        );
        Ok(())
    }
}
