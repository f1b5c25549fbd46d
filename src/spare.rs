//! Spare buffers: chunks of row changes and the text values in them, the key and value
//! strings of cache operations, and the vectors of operations, handed back once they have
//! been used and taken again for the next chunk, row or step.
//!
//! Why: a catch-up decodes and maps about a million rows a second, and allocating and
//! freeing a key and (for upserts) a value per row was a large share of the daemon's
//! instructions (callgrind). The allocator's own per-thread cache holds only a few blocks
//! per size, while a step frees a thousand of each at once. Decoder, mapper and applier
//! run on one thread (the runtime is single-threaded), so thread-local lists serve them
//! without a lock; on any other thread a buffer is simply allocated as before.
//!
//! Chunks (`crate::chunk`) and the vectors of operations (one per step) grew from empty
//! each time, copying themselves a dozen times on the way to a thousand entries.
//!
//! What the spares can hold is bounded: `BUDGET` bytes of each kind (chunks, texts,
//! keys, values, operation vectors), so 5 MiB in all; a buffer that does not fit is
//! freed. That is enough for the operations of a few steps in flight.

use std::cell::RefCell;
use std::mem::size_of;

use crate::chunk::Chunk;
use crate::mapper::CacheOp;
use crate::value::SqlValue;

const BUDGET: usize = 1 << 20;

/// Empty buffers of one kind, and the bytes they hold.
struct Spares<T> {
    items: Vec<T>,
    bytes: usize,
}

impl<T> Spares<T> {
    const fn new() -> Self {
        Spares {
            items: Vec::new(),
            bytes: 0,
        }
    }

    fn pop(&mut self, bytes: impl Fn(&T) -> usize) -> Option<T> {
        let item = self.items.pop()?;
        self.bytes -= bytes(&item);
        Some(item)
    }

    fn push(&mut self, item: T, bytes: usize) {
        if self.bytes + bytes <= BUDGET {
            self.bytes += bytes;
            self.items.push(item);
        }
    }
}

type Local<T> = std::thread::LocalKey<RefCell<Spares<T>>>;

thread_local! {
    static KEYS: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static VALUES: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static TEXTS: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static CHUNKS: RefCell<Spares<Chunk>> = const { RefCell::new(Spares::new()) };
    static OPS: RefCell<Spares<Vec<CacheOp>>> = const { RefCell::new(Spares::new()) };
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// An empty chunk of row changes.
pub fn chunk() -> Chunk {
    CHUNKS
        .with_borrow_mut(|s| s.pop(Chunk::capacity_bytes))
        .unwrap_or_default()
}

/// Gives back a chunk whose changes have been mapped, with the text values in it. One
/// borrow of each list for the whole chunk, not one per value.
pub fn recycle_chunk(mut chunk: Chunk) {
    TEXTS.with_borrow_mut(|texts| {
        chunk.clear_with(|value| {
            if let Some(SqlValue::Text(mut text)) = value {
                text.clear();
                let bytes = text.capacity();
                texts.push(text, bytes);
            }
        })
    });
    let bytes = chunk.capacity_bytes();
    CHUNKS.with_borrow_mut(|s| s.push(chunk, bytes));
}

/// An empty vector for a step's operations.
pub fn ops() -> Vec<CacheOp> {
    OPS.with_borrow_mut(|s| s.pop(vec_bytes))
        .unwrap_or_default()
}

/// Gives back the operations of an applied step, and their vector.
pub fn recycle_ops(mut ops: Vec<CacheOp>) {
    // One borrow of each list for the whole step (callgrind: a borrow per operation was
    // half the cost of giving its strings back).
    KEYS.with_borrow_mut(|keys| {
        VALUES.with_borrow_mut(|values| {
            for op in ops.drain(..) {
                let (key, value) = match op {
                    CacheOp::Set { key, value, .. } => (key, Some(value)),
                    CacheOp::Hash { key, .. }
                    | CacheOp::Del { key }
                    | CacheOp::Stash { key, .. }
                    | CacheOp::Unstash { key }
                    | CacheOp::Expire { key, .. } => (key, None),
                };
                give_back(keys, key);
                if let Some(value) = value {
                    give_back(values, value);
                }
            }
        })
    });
    let bytes = vec_bytes(&ops);
    OPS.with_borrow_mut(|s| s.push(ops, bytes));
}

/// An empty string for a key.
pub fn key() -> String {
    take(&KEYS)
}

/// An empty string for a value.
pub fn value() -> String {
    take(&VALUES)
}

/// An empty string for a text column's value in a row image.
pub fn text() -> String {
    take(&TEXTS)
}

/// Gives back a key that was rendered but not used.
pub fn recycle_key(key: String) {
    recycle(&KEYS, key);
}

fn take(spares: &'static Local<String>) -> String {
    spares
        .with_borrow_mut(|s| s.pop(String::capacity))
        .unwrap_or_default()
}

fn recycle(spares: &'static Local<String>, s: String) {
    spares.with_borrow_mut(|spares| give_back(spares, s));
}

fn give_back(spares: &mut Spares<String>, mut s: String) {
    s.clear();
    let bytes = s.capacity();
    spares.push(s, bytes);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::Position;
    use crate::value::{ChangeKind, TableInfo};

    /// A chunk holding one delete whose before image is `image`.
    fn chunk_of(image: Vec<Option<SqlValue>>) -> Chunk {
        let mut chunk = chunk();
        let table = Arc::new(TableInfo::new("d".into(), "t".into(), vec![]));
        chunk.begin_event(table, ChangeKind::Delete, Position::new("b.000001", 4));
        chunk
            .push_row::<()>(true, false, |_, values| {
                values.extend(image.iter().cloned());
                Ok(())
            })
            .unwrap();
        chunk
    }

    #[test]
    fn a_recycled_chunk_comes_back_empty_with_its_room_and_its_texts() {
        let first = chunk_of(vec![None, Some(SqlValue::Text("x".into())), None]);
        let room = first.capacity_bytes();
        recycle_chunk(first);
        let again = chunk();
        assert!(again.is_empty() && again.iter().next().is_none());
        assert_eq!(again.capacity_bytes(), room, "the spare was reused");
        assert_eq!(CHUNKS.with_borrow(|s| s.bytes), 0);
        assert_eq!(text().capacity(), 1, "the text value came back too");
    }

    #[test]
    fn strings_come_back_empty_with_their_capacity() {
        recycle_ops(vec![CacheOp::Set {
            key: "k".repeat(40),
            value: "v".repeat(300),
            ttl_ms: 0,
        }]);
        let (key, value) = (key(), value());
        assert_eq!((key.as_str(), value.as_str()), ("", ""));
        assert!(key.capacity() >= 40 && value.capacity() >= 300);
    }

    #[test]
    fn a_step_vector_comes_back_empty_and_its_strings_with_it() {
        let mut step = ops();
        step.extend((0..100).map(|i| CacheOp::Del {
            key: format!("key:{i}"),
        }));
        let slots = step.as_ptr();
        recycle_ops(step);
        let again = ops();
        assert_eq!(again.as_ptr(), slots, "the vector was reused");
        assert!(again.is_empty() && again.capacity() >= 100);
        assert!(key().capacity() >= 5, "the keys came back too");
    }

    #[test]
    fn the_spares_stay_within_their_budget() {
        let big = BUDGET / 4 + 1;
        for _ in 0..10 {
            recycle_key(String::with_capacity(big));
        }
        let held = KEYS.with_borrow(|s| (s.items.len(), s.bytes));
        assert_eq!(held.0, 3, "a fourth buffer would pass the budget");
        assert!(held.1 <= BUDGET);
        let slots = BUDGET / std::mem::size_of::<Option<SqlValue>>();
        recycle_chunk(chunk_of(vec![None; slots]));
        assert_eq!(CHUNKS.with_borrow(|s| s.items.len()), 0);
    }
}
