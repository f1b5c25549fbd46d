//! XA transactions in the binlog (see `crate::xa` for what the applier does with them).
//!
//! Both servers log a two-phase XA transaction as two event groups:
//! - the PREPARE group: `XA START <xid>` (MySQL: a statement; MariaDB: its GTID event,
//!   flagged `FL_PREPARED_XA`, carries the xid), the rows, `XA END <xid>`, and an
//!   `XA_PREPARE` event;
//! - later, the COMMIT group: the statement `XA COMMIT <xid>` or `XA ROLLBACK <xid>`.
//!
//! MySQL logs `XA COMMIT … ONE PHASE` as one group ending in an `XA_PREPARE` event flagged
//! one-phase; MariaDB logs it as an ordinary transaction. A read-only XA transaction, and
//! one rolled back before its PREPARE, is not logged at all.

use mysql_common::binlog::events::Event;

use super::{Assembler, SourceItem};
use crate::source::SourceError;
use crate::xa::Xid;

/// MariaDB GTID event flags: the group is an XA PREPARE, or an XA COMMIT / ROLLBACK.
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

impl Assembler {
    /// A MariaDB GTID event: opens the PREPARE group of an XA transaction when flagged so.
    pub(super) fn on_mariadb_gtid(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        let data = event.data();
        let flags = data.get(12).copied().unwrap_or(0);
        if flags & FL_PREPARED_XA == 0 {
            return Ok(());
        }
        let xid = mariadb_gtid_xid(data, flags).ok_or_else(|| {
            self.unsupported("MariaDB GTID event of an XA PREPARE without its xid")
        })?;
        self.start_xa(xid, out);
        Ok(())
    }

    pub(super) fn start_xa(&mut self, xid: Xid, out: &mut Vec<SourceItem>) {
        self.in_tx = true;
        self.xa = Some(xid.clone());
        out.push(SourceItem::XaStart(xid));
    }

    /// `XA START`, `XA END`, `XA COMMIT`, `XA ROLLBACK` (the statement text after `XA `).
    pub(super) fn on_xa_statement(
        &mut self,
        statement: &str,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        let upper = statement.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or_default();
        if verb == "END" {
            return Ok(());
        }
        let xid = statement
            .trim_start()
            .get(verb.len()..)
            .and_then(Xid::parse)
            .ok_or_else(|| {
                self.unsupported(&format!("unreadable XA statement `XA {statement}`"))
            })?;
        match verb {
            "START" | "BEGIN" => self.start_xa(xid, out),
            "COMMIT" => self.end_xa(xid, true, event, out)?,
            "ROLLBACK" => self.end_xa(xid, false, event, out)?,
            _ => {
                return Err(self.unsupported(&format!(
                    "unknown XA statement `XA {statement}`; it may change rows, so \
                     replication stops rather than skip it"
                )))
            }
        }
        Ok(())
    }

    /// The `XA_PREPARE` event that ends a PREPARE group: the transaction is prepared (its
    /// commit moves the checkpoint past it), or, flagged one-phase, committed.
    pub(super) fn on_xa_prepare(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        let (one_phase, xid) = xa_prepare(event.data())
            .ok_or_else(|| self.unsupported("XA_PREPARE event too short for its xid"))?;
        if self.xa.as_ref() != Some(&xid) {
            return Err(self.unsupported(&format!(
                "XA PREPARE of {xid} without its XA START in the same event group"
            )));
        }
        if one_phase {
            return self.end_xa(xid, true, event, out);
        }
        self.xa = None;
        self.commit(event, out);
        Ok(())
    }

    fn end_xa(
        &mut self,
        xid: Xid,
        committed: bool,
        event: &Event,
        out: &mut Vec<SourceItem>,
    ) -> Result<(), SourceError> {
        if self.xa.as_ref().is_some_and(|open| *open != xid) {
            return Err(self.unsupported(&format!(
                "XA COMMIT of {xid} inside the PREPARE group of another XA transaction"
            )));
        }
        self.xa = None;
        let commit = self.close(event, out);
        out.push(SourceItem::XaEnd {
            xid,
            committed,
            commit,
        });
        Ok(())
    }
}

/// The xid a MariaDB GTID event carries after its flags (and commit id, when flagged).
fn mariadb_gtid_xid(data: &[u8], flags: u8) -> Option<Xid> {
    if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) == 0 {
        return None;
    }
    let mut at = 13;
    if flags & FL_GROUP_COMMIT_ID != 0 {
        at += 8;
    }
    let format_id = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
    let gtrid_len = usize::from(*data.get(at + 4)?);
    let bqual_len = usize::from(*data.get(at + 5)?);
    let xid = data.get(at + 6..at + 6 + gtrid_len + bqual_len)?;
    Some(Xid {
        format_id: u64::from(format_id),
        gtrid: xid[..gtrid_len].to_vec(),
        bqual: xid[gtrid_len..].to_vec(),
    })
}

/// An `XA_PREPARE` event's body (the same on both servers): one-phase flag (1 byte), format
/// id (4), gtrid and bqual lengths (4 each), then the two ids.
fn xa_prepare(data: &[u8]) -> Option<(bool, Xid)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let one_phase = *data.first()? != 0;
    let format_id = word(1)?;
    let gtrid_len = usize::try_from(word(5)?).ok()?;
    let bqual_len = usize::try_from(word(9)?).ok()?;
    let ids = data.get(13..13 + gtrid_len.checked_add(bqual_len)?)?;
    Some((
        one_phase,
        Xid {
            format_id: u64::from(format_id),
            gtrid: ids[..gtrid_len].to_vec(),
            bqual: ids[gtrid_len..].to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xa_prepare_bodies_give_their_xid_and_phase() {
        let mut body = vec![0u8];
        body.extend(7u32.to_le_bytes());
        body.extend(2u32.to_le_bytes());
        body.extend(1u32.to_le_bytes());
        body.extend(b"x6b");
        let (one_phase, xid) = xa_prepare(&body).unwrap();
        assert!(!one_phase);
        assert_eq!(xid.to_string(), "X'7836',X'62',7");
        body[0] = 1;
        assert!(xa_prepare(&body).unwrap().0);
        assert_eq!(xa_prepare(&body[..body.len() - 1]), None, "cut short");
    }

    #[test]
    fn mariadb_gtid_events_give_their_xid_after_the_commit_id() {
        let mut data = vec![0u8; 12];
        data.push(FL_PREPARED_XA | FL_GROUP_COMMIT_ID);
        data.extend([9u8; 8]); // commit id
        data.extend(1u32.to_le_bytes());
        data.extend([2, 0]);
        data.extend(b"x1");
        let xid = mariadb_gtid_xid(&data, data[12]).unwrap();
        assert_eq!(xid.to_string(), "X'7831',X'',1");
        assert_eq!(mariadb_gtid_xid(&data, 0), None, "not an XA group");
    }
}
