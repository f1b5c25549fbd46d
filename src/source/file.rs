//! Reading recorded binlog files (for `replay`).
//!
//! Events are framed here, not by mysql_common's file iterator, because that iterator ends
//! silently on a truncated file and panics on some malformed lengths. Every frame is
//! length-checked before it is parsed, and a file that ends inside an event is an error that
//! names the offset.

use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;

use crate::source::SourceError;

const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const HEADER_LEN: usize = 19;
/// A decompressed transaction larger than this is refused rather than allocated.
const MAX_PAYLOAD: u64 = 1 << 30;

/// Iterates over the events of one binlog file, expanding compressed transactions.
pub struct BinlogFileReader {
    name: String,
    input: BufReader<std::fs::File>,
    offset: u64,
    esr: EventStreamReader,
    /// Events of the compressed payload being expanded.
    inner: Option<Cursor<Vec<u8>>>,
}

impl BinlogFileReader {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let err = |message: String| SourceError::File {
            file: path.display().to_string(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let mut input = BufReader::new(file);
        let mut magic = [0u8; 4];
        input
            .read_exact(&mut magic)
            .map_err(|_| err("shorter than the 4-byte binlog header".into()))?;
        if magic != MAGIC {
            return Err(err("not a binlog file (bad magic number)".into()));
        }
        Ok(BinlogFileReader {
            name,
            input,
            offset: 4,
            esr: EventStreamReader::new(BinlogVersion::Version4),
            inner: None,
        })
    }

    /// The file's name, used as the `file` part of positions.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, message: String) -> SourceError {
        SourceError::File {
            file: format!("{} at offset {}", self.name, self.offset),
            message,
        }
    }

    /// The next event, or `None` at a clean end of file.
    pub fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        if let Some(inner) = self.inner.as_mut() {
            match self.esr.read_decompressed(&mut *inner) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => self.inner = None,
                Err(e) => return Err(self.err(format!("bad compressed transaction: {e}"))),
            }
        }
        let Some(frame) = self.read_frame()? else {
            return Ok(None);
        };
        let event = self
            .esr
            .read(&frame[..])
            .map_err(|e| self.err(format!("malformed event: {e}")))?
            .ok_or_else(|| self.err("empty event".into()))?;
        if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            self.inner = Some(Cursor::new(self.expand(&event)?));
        }
        self.offset += frame.len() as u64;
        Ok(Some(event))
    }

    /// Reads one whole event frame, checking that its length is plausible and complete.
    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.input, &mut header).map_err(|e| self.err(e.to_string()))?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(self.err(format!(
                "truncated: the file ends {got} bytes into an event header"
            )));
        }
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as usize;
        let checksum_len = match self.esr.get_fde().footer().get_checksum_alg() {
            Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => 4,
            _ => 0,
        };
        // An FDE carries its checksum algorithm byte and checksum regardless.
        let min = HEADER_LEN
            + if header[4] == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
                5
            } else {
                checksum_len
            };
        if size < min || size > (1 << 30) {
            return Err(self.err(format!(
                "corrupt event header: impossible event size {size}"
            )));
        }
        let mut frame = vec![0u8; size];
        frame[..HEADER_LEN].copy_from_slice(&header);
        let body = read_full(&mut self.input, &mut frame[HEADER_LEN..])
            .map_err(|e| self.err(e.to_string()))?;
        if body < size - HEADER_LEN {
            return Err(self.err(format!(
                "truncated: the event needs {size} bytes, the file has {} left",
                body + HEADER_LEN
            )));
        }
        Ok(Some(frame))
    }

    fn expand(&self, event: &Event) -> Result<Vec<u8>, SourceError> {
        let payload: TransactionPayloadEvent<'_> = event
            .read_event()
            .map_err(|e| self.err(format!("bad TRANSACTION_PAYLOAD event: {e}")))?;
        if payload.uncompressed_size() > MAX_PAYLOAD {
            return Err(self.err("compressed transaction too large to expand".into()));
        }
        let mut out = Vec::with_capacity(payload.uncompressed_size() as usize);
        payload
            .decompressed()
            .and_then(|mut r| r.read_to_end(&mut out))
            .map_err(|e| self.err(format!("cannot decompress transaction: {e}")))?;
        if out.is_empty() {
            return Err(self.err("compressed transaction is empty".into()));
        }
        Ok(out)
    }
}

/// Like `read_exact`, but reports how much was read instead of failing at end of file.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match input.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}
