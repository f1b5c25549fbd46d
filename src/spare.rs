//! Spare buffers: row images and their text values, the key and value strings of cache
//! operations, and the vectors that carry changes and operations, handed back once they
//! have been used and taken again for the next row, chunk or step.
//!
//! Why: a catch-up decodes and maps about a million rows a second, and allocating and
//! freeing an image, a key and (for upserts) a value per row was about a fifth of the
//! daemon's instructions (callgrind). The allocator's own per-thread cache holds only a
//! few blocks per size, while a step frees a thousand of each at once. Decoder, mapper and
//! applier run on one thread (the runtime is single-threaded), so thread-local lists serve
//! them without a lock; on any other thread a buffer is simply allocated as before.
//!
//! The vectors of changes (one per chunk) and of operations (one per step) grew from empty
//! each time, copying themselves a dozen times on the way to a thousand entries: with
//! the growth of each one's key vector that was 5 % of a catch-up's instructions.
//!
//! What the spares can hold is bounded: [`BUDGET`] bytes of each kind (images, texts,
//! keys, values, change vectors, operation vectors), so 6 MiB in all; a buffer that does
//! not fit is freed. That is enough for the operations of a few steps in flight.

use std::cell::RefCell;
use std::mem::size_of;

use crate::mapper::CacheOp;
use crate::value::{RowChange, RowImage, SqlValue};

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
    static IMAGES: RefCell<Spares<RowImage>> = const { RefCell::new(Spares::new()) };
    static KEYS: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static VALUES: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static TEXTS: RefCell<Spares<String>> = const { RefCell::new(Spares::new()) };
    static CHANGES: RefCell<Spares<Vec<RowChange>>> = const { RefCell::new(Spares::new()) };
    static OPS: RefCell<Spares<Vec<CacheOp>>> = const { RefCell::new(Spares::new()) };
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// An empty vector for a chunk of row changes.
pub fn changes() -> Vec<RowChange> {
    CHANGES
        .with_borrow_mut(|s| s.pop(vec_bytes))
        .unwrap_or_default()
}

/// Gives back a chunk of changes that have been mapped: their images and text values,
/// then the vector. One borrow of each list for the whole chunk, not one per change
/// (callgrind: 7 % of a delete catch-up's instructions went to recycling change by
/// change).
pub fn recycle_changes(mut changes: Vec<RowChange>) {
    IMAGES.with_borrow_mut(|images| {
        TEXTS.with_borrow_mut(|texts| {
            for change in changes.drain(..) {
                for image in change.before.into_iter().chain(change.after) {
                    give_back_image(image, images, texts);
                }
            }
        })
    });
    let bytes = vec_bytes(&changes);
    CHANGES.with_borrow_mut(|s| s.push(changes, bytes));
}

fn give_back_image(mut image: RowImage, images: &mut Spares<RowImage>, texts: &mut Spares<String>) {
    for slot in &mut image {
        if let Some(SqlValue::Text(text)) = slot {
            let mut text = std::mem::take(text);
            text.clear();
            let bytes = text.capacity();
            texts.push(text, bytes);
        }
    }
    image.clear();
    let bytes = image_bytes(&image);
    images.push(image, bytes);
}

/// An empty vector for a step's operations.
pub fn ops() -> Vec<CacheOp> {
    OPS.with_borrow_mut(|s| s.pop(vec_bytes))
        .unwrap_or_default()
}

/// Gives back the operations of an applied step, and their vector.
pub fn recycle_ops(mut ops: Vec<CacheOp>) {
    ops.drain(..).for_each(recycle_op);
    let bytes = vec_bytes(&ops);
    OPS.with_borrow_mut(|s| s.push(ops, bytes));
}

fn image_bytes(image: &RowImage) -> usize {
    image.capacity() * size_of::<Option<crate::value::SqlValue>>()
}

/// An image of `columns` values, all `None`.
pub fn image(columns: usize) -> RowImage {
    let mut image = IMAGES
        .with_borrow_mut(|s| s.pop(image_bytes))
        .unwrap_or_else(|| Vec::with_capacity(columns));
    // Spares are empty, so every slot is a fresh `None`. A plain loop: `resize_with` was
    // an out-of-line call of ~40 instructions for the one or two slots an image mostly has.
    image.reserve(columns);
    for _ in 0..columns {
        image.push(None);
    }
    image
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

/// Gives back the strings of an operation that has been applied.
pub fn recycle_op(op: CacheOp) {
    match op {
        CacheOp::Set { key, value, .. } => {
            recycle_key(key);
            recycle(&VALUES, value);
        }
        CacheOp::Hash { key, .. } | CacheOp::Del { key } => recycle_key(key),
    }
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

fn recycle(spares: &'static Local<String>, mut s: String) {
    s.clear();
    let bytes = s.capacity();
    spares.with_borrow_mut(|spares| spares.push(s, bytes));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::Position;
    use crate::value::{ChangeKind, TableInfo};

    fn change(before: RowImage) -> RowChange {
        RowChange {
            table: Arc::new(TableInfo::new("d".into(), "t".into(), vec![])),
            kind: ChangeKind::Delete,
            before: Some(before),
            after: None,
            event_position: Arc::new(Position::new("b.000001", 4)),
        }
    }

    #[test]
    fn a_recycled_image_comes_back_empty_and_sized() {
        let mut first = image(3);
        first[1] = Some(SqlValue::Text("x".into()));
        let slots = first.as_ptr();
        recycle_changes(vec![change(first)]);
        let again = image(3);
        assert_eq!(again.as_ptr(), slots, "the spare was reused");
        assert_eq!(again, vec![None; 3]);
        assert_eq!(IMAGES.with_borrow(|s| s.bytes), 0);
        assert_eq!(text().capacity(), 1, "the text value came back too");
    }

    #[test]
    fn strings_come_back_empty_with_their_capacity() {
        recycle_op(CacheOp::Set {
            key: "k".repeat(40),
            value: "v".repeat(300),
            ttl_ms: 0,
        });
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
        let mut chunk = changes();
        chunk.push(change(vec![None; 2]));
        let slots = chunk.as_ptr();
        recycle_changes(chunk);
        let again = changes();
        assert_eq!(again.as_ptr(), slots, "the chunk vector was reused");
        assert!(again.is_empty());
        let held = IMAGES.with_borrow(|s| s.items.len());
        assert_eq!(held, 1, "its change's image came back too");
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
        recycle_changes(vec![change(vec![None; BUDGET])]);
        assert_eq!(IMAGES.with_borrow(|s| s.items.len()), 0);
    }
}
