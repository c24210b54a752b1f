//! A batch of Kafka records of one partition, copied out of librdkafka
//! into one byte arena: batches, not records, cross actor boundaries, and
//! a batch of a thousand records costs a handful of allocations. Arenas
//! go back to a [`BufferPool`] when their batch is done, so the poll
//! thread fills warm memory of the right size instead of growing fresh
//! allocations (growing a batch of megabytes copies it several times).

use std::ops::Range;
use std::sync::{Arc, Mutex};

/// One record's place in its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    offset: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Records of one topic-partition, in offset order.
#[derive(Debug)]
pub struct RecordBatch {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The partition actor's epoch the batch was read for; a restarted
    /// actor rewinds and drops batches of an older epoch.
    pub epoch: u64,
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    /// Where the arena goes when the batch is dropped.
    pool: Option<Arc<BufferPool>>,
}

/// Arenas of finished batches, for the next ones.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Arena>>,
}

type Arena = (Vec<Entry>, Vec<u8>);

/// Arenas kept for reuse, at most: enough for the batches one poll round
/// hands out; the rest are freed.
const POOLED_ARENAS: usize = 16;

impl BufferPool {
    fn take(&self) -> Arena {
        self.free.lock().ok().and_then(|mut free| free.pop()).unwrap_or_default()
    }

    fn give(&self, (mut entries, mut bytes): Arena) {
        let Ok(mut free) = self.free.lock() else { return };
        if free.len() < POOLED_ARENAS {
            entries.clear();
            bytes.clear();
            free.push((entries, bytes));
        }
    }
}

impl Drop for RecordBatch {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give((std::mem::take(&mut self.entries), std::mem::take(&mut self.bytes)));
        }
    }
}

/// A record as the partition actor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl RecordBatch {
    pub fn new(topic: Arc<str>, partition: i32, epoch: u64) -> Self {
        RecordBatch { topic, partition, epoch, entries: Vec::new(), bytes: Vec::new(), pool: None }
    }

    /// A batch whose arena comes from `pool` and returns to it.
    pub fn pooled(topic: Arc<str>, partition: i32, epoch: u64, pool: &Arc<BufferPool>) -> Self {
        let (entries, bytes) = pool.take();
        RecordBatch { topic, partition, epoch, entries, bytes, pool: Some(Arc::clone(pool)) }
    }

    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let key = key.map(|k| self.append(k));
        let value = value.map(|v| self.append(v));
        self.entries.push(Entry { offset, key, value });
    }

    fn append(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.entries.first().map(|e| e.offset)
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.entries.last().map(|e| e.offset)
    }

    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.entries.iter().map(|e| RecordRef {
            offset: e.offset,
            key: e.key.clone().map(|r| &self.bytes[r]),
            value: e.value.clone().map(|r| &self.bytes[r]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_pushed() {
        let mut b = RecordBatch::new("t".into(), 3, 0);
        assert!(b.is_empty());
        b.push(10, Some(b"k1"), Some(b"v1"));
        b.push(11, None, Some(b""));
        b.push(12, Some(b"k3"), None);
        let got: Vec<RecordRef<'_>> = b.records().collect();
        assert_eq!(
            got,
            [
                RecordRef { offset: 10, key: Some(b"k1"), value: Some(b"v1") },
                RecordRef { offset: 11, key: None, value: Some(b"") },
                RecordRef { offset: 12, key: Some(b"k3"), value: None },
            ]
        );
        assert_eq!((b.first_offset(), b.last_offset(), b.len(), b.byte_len()), (Some(10), Some(12), 3, 6));
    }

    #[test]
    fn a_pooled_arena_is_reused_empty() {
        let pool = Arc::new(BufferPool::default());
        let mut b = RecordBatch::pooled("t".into(), 0, 0, &pool);
        b.push(1, None, Some(&[7; 1000]));
        drop(b);
        let b = RecordBatch::pooled("t".into(), 1, 0, &pool);
        assert!(b.is_empty() && b.byte_len() == 0);
        assert!(b.bytes.capacity() >= 1000, "the arena came back with its memory");
        assert!(pool.free.lock().expect("pool").is_empty());
    }
}
