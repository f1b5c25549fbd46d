//! Rows events: their rows decoded into the pending chunk, which is handed to the apply
//! stage once it holds `chunk_rows` rows or `chunk_bytes` bytes of events.

use mysql_common::binlog::events::{Event, EventData};

use super::{Assembler, SourceItem};
use crate::source::decode::decode_rows;
use crate::source::SourceError;
use crate::spare;

impl Assembler {
    pub(super) fn on_rows(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        self.in_tx = true;
        self.had_rows = true;
        let position = self.position();
        let data = event
            .read_data()
            .map_err(|e| self.unsupported(&format!("bad rows event: {e}")))?;
        let Some(EventData::RowsEvent(rows)) = data else {
            return Err(self.unsupported("rows event without rows"));
        };
        let table = match self.tables.get(&rows.table_id()) {
            Some(Some(t)) => t,
            Some(None) => return Ok(()),
            None => {
                return Err(self.unsupported(&format!(
                    "rows event for table id {} without its TABLE_MAP (did replication start \
                     inside a transaction?)",
                    rows.table_id()
                )))
            }
        };
        let kind = crate::source::decode::kind(&rows);
        self.pending
            .begin_event(table.info.clone(), kind, position.clone());
        decode_rows(
            &rows,
            &table.tme,
            &table.columns,
            &table.needed,
            &mut self.pending,
        )
        .map_err(|source| SourceError::Decode {
            table: table.info.qualified().to_owned(),
            position: position.clone(),
            source,
        })?;
        // Decoded values take about the room their event did, or less (unread columns).
        self.pending_bytes += event.header().event_size() as usize;
        if self.pending.len() >= self.chunk_rows || self.pending_bytes >= self.chunk_bytes {
            self.hand_out(out);
        }
        Ok(())
    }

    /// Hands the rows gathered so far to the apply stage.
    pub(super) fn hand_out(&mut self, out: &mut Vec<SourceItem>) {
        self.pending_bytes = 0;
        let chunk = std::mem::replace(&mut self.pending, spare::chunk());
        out.push(SourceItem::Changes(chunk));
    }
}
