//! Two-phase XA transactions: their identifiers, and the stash that holds a prepared
//! transaction's cache operations in Redis until its `XA COMMIT`.
//!
//! Why a stash: `XA PREPARE` logs a transaction's rows, and its `XA COMMIT` (or `XA
//! ROLLBACK`) comes later, as its own event group, with any number of other transactions
//! in between, maybe after a restart of the server or of the daemon. The rows must not
//! reach the cache before the commit (readers would see uncommitted data, and a rollback
//! could not take it back), and the checkpoint must still move past the PREPARE, or every
//! later transaction would wait. So at the PREPARE the daemon maps the rows and appends the
//! operations to a list under the checkpoint key, in the same atomic step that moves the
//! checkpoint past the PREPARE; at the COMMIT it applies them and deletes the list in the
//! step that moves the checkpoint past the COMMIT. A crash at any point repeats a step
//! whose effect is the same the second time: memory holds one step's operations, however
//! large the prepared transaction.
//!
//! The list's first entry is a header ([`header`]): a prepared transaction that changed
//! no covered row still has one, so an `XA COMMIT` whose PREPARE the daemon never saw (it
//! started after it) is told from one that had nothing to apply. The header also holds
//! the checkpoint before the PREPARE group: a daemon started later learns from it where
//! to read the PREPARE again should Redis lose the stash (`applier::Pending`).

use std::fmt;

use crate::checkpoint::Checkpoint;
use crate::mapper::CacheOp;

/// The header of the stashes of earlier versions, which holds no checkpoint.
pub const HEADER_V1: &str = "cdc-cache xa stash v1";

/// What comes before the checkpoint in a header.
const HEADER_V2: &str = "cdc-cache xa stash v2 ";

/// The first entry of a stash: its format version and, when the daemon had one, the
/// checkpoint before its PREPARE group.
pub fn header(before: Option<&Checkpoint>) -> String {
    match before {
        Some(checkpoint) => format!("{HEADER_V2}{}", checkpoint.encode()),
        None => HEADER_V1.to_string(),
    }
}

/// A stash's first entry read back: `None` when it is not a header this version knows,
/// `Some(None)` for one without a checkpoint.
pub fn parse_header(entry: &str) -> Option<Option<Checkpoint>> {
    if entry == HEADER_V1 {
        return Some(None);
    }
    let checkpoint = Checkpoint::decode(entry.strip_prefix(HEADER_V2)?).ok()?;
    Some(Some(checkpoint))
}

/// An XA transaction identifier: format id, global transaction id, branch qualifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid {
    pub format_id: u64,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

/// Written as the server writes it in the binlog (`X'7831',X'',1`), lower-case hex.
impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format_id
        )
    }
}

impl Xid {
    /// Reads the identifier at the start of `text`, in the binlog's form
    /// (`X'<hex>',X'<hex>',<format id>`); `None` when it is not one.
    pub fn parse(text: &str) -> Option<Xid> {
        let (gtrid, rest) = hex_literal(text.trim_start())?;
        let (bqual, rest) = hex_literal(rest.strip_prefix(',')?)?;
        let rest = rest.strip_prefix(',')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let format_id = rest[..digits].parse().ok()?;
        Some(Xid {
            format_id,
            gtrid,
            bqual,
        })
    }

    /// The Redis key of this transaction's stash, under the checkpoint key.
    pub fn stash_key(&self, checkpoint_key: &str) -> String {
        format!(
            "{checkpoint_key}:xa:{}:{}:{}",
            self.format_id,
            hex(&self.gtrid),
            hex(&self.bqual)
        )
    }

    /// The identifier a stash key names (`stash_key`'s inverse).
    pub fn from_stash_key(checkpoint_key: &str, key: &str) -> Option<Xid> {
        let rest = key.strip_prefix(checkpoint_key)?.strip_prefix(":xa:")?;
        let mut parts = rest.splitn(3, ':');
        let format_id: u64 = parts.next()?.parse().ok()?;
        let gtrid = parts.next()?;
        let bqual = parts.next()?;
        Xid::parse(&format!("X'{gtrid}',X'{bqual}',{format_id}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X'<hex>'` at the start of `text`: its bytes, and the text after it.
fn hex_literal(text: &str) -> Option<(Vec<u8>, &str)> {
    let rest = text
        .strip_prefix("X'")
        .or_else(|| text.strip_prefix("x'"))?;
    let end = rest.find('\'')?;
    let digits = &rest[..end];
    if digits.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((bytes, &rest[end + 1..]))
}

/// A cache operation as one stash entry.
pub fn encode(op: &CacheOp) -> String {
    // Serializing these plain structs of strings and numbers cannot fail.
    serde_json::to_string(op).unwrap_or_default()
}

/// A stash entry back into its operation; `None` for one this version did not write.
pub fn decode(entry: &str) -> Option<CacheOp> {
    let op: CacheOp = serde_json::from_str(entry).ok()?;
    op.is_cache_write().then_some(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_read_back_as_the_server_writes_them() {
        let xid = Xid::parse("X'7836',X'6272',7 ONE PHASE").unwrap();
        assert_eq!(xid.gtrid, b"x6");
        assert_eq!(xid.bqual, b"br");
        assert_eq!(xid.format_id, 7);
        assert_eq!(xid.to_string(), "X'7836',X'6272',7");
        assert_eq!(Xid::parse("x'0A',X'',1").unwrap().gtrid, [10]);
        for bad in [
            "'x1'",
            "X'7',X'',1",
            "X'78',X''",
            "X'zz',X'',1",
            "X'78',X'',",
        ] {
            assert_eq!(Xid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stash_keys_tell_identifiers_apart() {
        let a = Xid::parse("X'61',X'62',1").unwrap();
        let b = Xid::parse("X'6162',X'',1").unwrap();
        assert_eq!(a.stash_key("cp"), "cp:xa:1:61:62");
        assert_ne!(a.stash_key("cp"), b.stash_key("cp"));
        assert_eq!(Xid::from_stash_key("cp", &a.stash_key("cp")), Some(a));
        assert_eq!(Xid::from_stash_key("cp", "cp:fenced:1"), None);
    }

    #[test]
    fn entries_decode_to_the_operations_encoded() {
        let ops = [
            CacheOp::Set {
                key: "k\n:1".into(),
                value: "{\"v\":\"é\"}".into(),
                ttl_ms: 5,
            },
            CacheOp::Hash {
                key: "h".into(),
                fields: vec![("a".into(), "1".into())],
                ttl_ms: 0,
            },
            CacheOp::Del { key: "d".into() },
        ];
        for op in ops {
            assert_eq!(decode(&encode(&op)), Some(op));
        }
        let stash = CacheOp::Unstash { key: "s".into() };
        assert_eq!(
            decode(&encode(&stash)),
            None,
            "only cache writes are stashed"
        );
        assert_eq!(decode(HEADER_V1), None);
        assert_eq!(decode(&header(Some(&checkpoint()))), None);
    }

    fn checkpoint() -> Checkpoint {
        let server = crate::checkpoint::ServerIdentity {
            server_id: 1,
            uuid_or_host: "db".into(),
        };
        let at = crate::checkpoint::Position::new("b.000007", 4);
        Checkpoint::new(at, server, 9).with_gtid(Some("0-1-5".into()))
    }

    #[test]
    fn headers_read_back_with_the_checkpoint_they_hold() {
        assert_eq!(parse_header(&header(None)), Some(None));
        assert_eq!(parse_header(HEADER_V1), Some(None), "an earlier version's");
        let before = checkpoint();
        assert_eq!(parse_header(&header(Some(&before))), Some(Some(before)));
        for bad in [
            "",
            "cdc-cache xa stash v2 ",
            "cdc-cache xa stash v2 {}",
            "cdc-cache xa stash v3",
            r#"{"Del":{"key":"k"}}"#,
        ] {
            assert_eq!(parse_header(bad), None, "{bad}");
        }
    }
}
