//! A batch of Kafka records of one partition, copied out of librdkafka
//! into one byte arena: batches, not records, cross actor boundaries, and
//! a batch of a thousand records costs a handful of allocations. Arenas
//! go back to a [`BufferPool`] when their batch is done, so the poll
//! thread fills warm memory of the right size instead of growing fresh
//! allocations (growing a batch of megabytes copies it several times).
//!
//! Records of one table version start with the same schema block, most of
//! their bytes: a batch keeps the first record's `{"schema":…,"payload":`
//! once, and of each later record that starts with exactly those bytes
//! only the rest. Copying shrinks sixfold, and the decoder recognises the
//! schema once per batch instead of once per record.

use std::borrow::Cow;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use tracing::error;

use crate::decode::{DecodeError, Decoded, Decoder, EnvelopePlan};
use crate::stage::{panic_message, Panicked};
use crate::time::EventTime;

type DecodeResult = Result<Decoded, DecodeError>;

/// One record's place in its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    offset: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// The value is held without the batch's envelope prefix.
    enveloped: bool,
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
    /// The first record's `{"schema":…,"payload":`, in `bytes`; `None`
    /// when the batch's first value had none.
    envelope: Option<Range<usize>>,
    /// Whether the first value was looked at: only it can set `envelope`,
    /// so a topic of other records is not searched record after record.
    envelope_looked: bool,
    /// Bytes of keys and values as read (before prefixes are shared).
    record_bytes: usize,
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
    /// When the value is held without it: the batch's envelope prefix,
    /// which the record's bytes start with.
    pub envelope: Option<&'a [u8]>,
}

impl<'a> RecordRef<'a> {
    /// The value as it was read (for dead letters: rebuilt when its
    /// prefix is shared).
    pub fn original_value(&self) -> Option<Cow<'a, [u8]>> {
        let value = self.value?;
        Some(match self.envelope {
            Some(prefix) => Cow::Owned([prefix, value].concat()),
            None => Cow::Borrowed(value),
        })
    }
}

impl RecordBatch {
    pub fn new(topic: Arc<str>, partition: i32, epoch: u64) -> Self {
        Self::with_arena(topic, partition, epoch, Arena::default(), None)
    }

    /// A batch whose arena comes from `pool` and returns to it.
    pub fn pooled(topic: Arc<str>, partition: i32, epoch: u64, pool: &Arc<BufferPool>) -> Self {
        Self::with_arena(topic, partition, epoch, pool.take(), Some(Arc::clone(pool)))
    }

    fn with_arena(
        topic: Arc<str>,
        partition: i32,
        epoch: u64,
        (entries, bytes): Arena,
        pool: Option<Arc<BufferPool>>,
    ) -> Self {
        RecordBatch {
            topic,
            partition,
            epoch,
            entries,
            bytes,
            envelope: None,
            envelope_looked: false,
            record_bytes: 0,
            pool,
        }
    }

    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.record_bytes += key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        let key = key.map(|k| self.append(k));
        let (value, enveloped) = match value {
            Some(v) => match self.shared_prefix(v) {
                Some(len) => (Some(self.append(&v[len..])), true),
                None => (Some(self.append(v)), false),
            },
            None => (None, false),
        };
        self.entries.push(Entry { offset, key, value, enveloped });
    }

    /// How much of `value` is the batch's envelope prefix (taking it from
    /// `value` when it is the batch's first).
    fn shared_prefix(&mut self, value: &[u8]) -> Option<usize> {
        match &self.envelope {
            Some(prefix) => {
                let prefix = &self.bytes[prefix.clone()];
                value.starts_with(prefix).then_some(prefix.len())
            }
            None if self.envelope_looked => None,
            None => {
                self.envelope_looked = true;
                let len = crate::decode::envelope_prefix_len(value)?;
                self.envelope = Some(self.append(&value[..len]));
                Some(len)
            }
        }
    }

    /// The envelope prefix that enveloped records start with.
    pub fn envelope(&self) -> Option<&[u8]> {
        self.envelope.clone().map(|r| &self.bytes[r])
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

    /// Bytes held: keys, values and the shared prefix.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of keys and values as read.
    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.entries.first().map(|e| e.offset)
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.entries.last().map(|e| e.offset)
    }

    /// Decodes every record in order; the shared envelope prefix's schema
    /// is recognised once for all the records that start with it.
    ///
    /// A record that panics the decoder (a bug, never bad input) is tried
    /// again with a fresh decoder, `max_attempts` times in all, and then
    /// handed on as [`DecodeError::Internal`]: no record stops the stream.
    pub fn decode_each(
        &self,
        decoder: &mut Decoder,
        max_attempts: u32,
        mut each: impl FnMut(RecordRef<'_>, DecodeResult),
    ) {
        decoder.observe_clock(EventTime::now());
        let mut plan = self.envelope_plan(decoder);
        for record in self.records() {
            let mut attempts = 0;
            let decoded = loop {
                attempts += 1;
                let tried = catch_unwind(AssertUnwindSafe(|| Self::decode_one(decoder, &plan, &record)));
                let panic = match tried {
                    Ok(decoded) => break decoded,
                    Err(panic) => panic_message(&*panic),
                };
                error!(topic = %self.topic, partition = self.partition, offset = record.offset, attempts,
                    max_attempts, panic = %panic, "the decoder panicked on a record; trying it with a fresh decoder");
                decoder.reset();
                plan = self.envelope_plan(decoder);
                if attempts >= max_attempts {
                    let stage = "decoder";
                    break Err(DecodeError::Internal(Panicked {
                        offset: record.offset,
                        stage,
                        attempts,
                        message: panic,
                    }));
                }
            };
            each(record, decoded);
        }
    }

    fn envelope_plan(&self, decoder: &mut Decoder) -> Option<Result<EnvelopePlan, DecodeError>> {
        self.envelope().map(|prefix| decoder.envelope_plan(prefix))
    }

    fn decode_one(
        decoder: &mut Decoder,
        plan: &Option<Result<EnvelopePlan, DecodeError>>,
        record: &RecordRef<'_>,
    ) -> DecodeResult {
        #[cfg(test)]
        crate::stage::faults::strike("decoder", record.offset);
        match (record.envelope, record.value, plan) {
            (Some(prefix), Some(rest), Some(Ok(plan))) => decoder.decode_enveloped(plan, prefix, rest, record.offset),
            (Some(_), _, Some(Err(e))) => Err(e.clone()),
            _ => decoder.decode(record.value, record.offset),
        }
    }

    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let envelope = self.envelope();
        self.entries.iter().map(move |e| RecordRef {
            offset: e.offset,
            key: e.key.clone().map(|r| &self.bytes[r]),
            value: e.value.clone().map(|r| &self.bytes[r]),
            envelope: envelope.filter(|_| e.enveloped),
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
                RecordRef { offset: 10, key: Some(b"k1"), value: Some(b"v1"), envelope: None },
                RecordRef { offset: 11, key: None, value: Some(b""), envelope: None },
                RecordRef { offset: 12, key: Some(b"k3"), value: None, envelope: None },
            ]
        );
        assert_eq!((b.first_offset(), b.last_offset(), b.len(), b.byte_len()), (Some(10), Some(12), 3, 6));
    }

    #[test]
    fn records_of_one_schema_share_its_bytes() {
        let first = br#"{"schema":{"type":"struct","fields":[]},"payload":{"op":"c"}}"#;
        let second = br#"{"schema":{"type":"struct","fields":[]},"payload":{"op":"u","n":1}}"#;
        let other = br#"{"schema":{"type":"struct"},"payload":{"op":"d"}}"#;
        let plain = br#"{"op":"r"}"#;
        let mut b = RecordBatch::new("t".into(), 0, 0);
        for (offset, value) in [first.as_slice(), second, other, plain].into_iter().enumerate() {
            b.push(offset as i64, None, Some(value));
        }
        let prefix = br#"{"schema":{"type":"struct","fields":[]},"payload":"#;
        assert_eq!(b.envelope(), Some(prefix.as_slice()));
        let got: Vec<RecordRef<'_>> = b.records().collect();
        assert_eq!((got[0].value, got[0].envelope), (Some(br#"{"op":"c"}}"#.as_slice()), Some(prefix.as_slice())));
        assert_eq!(got[1].value, Some(br#"{"op":"u","n":1}}"#.as_slice()));
        assert_eq!((got[2].envelope, got[3].envelope), (None, None), "another schema and none are held whole");
        for (record, value) in got.iter().zip([first.as_slice(), second, other, plain]) {
            assert_eq!(record.original_value().as_deref(), Some(value));
        }
        assert_eq!(b.record_bytes(), first.len() + second.len() + other.len() + plain.len());
        assert!(b.byte_len() < b.record_bytes());
    }

    #[test]
    fn a_record_that_panics_the_decoder_is_tried_again_then_given_up() {
        use crate::decode::DecodeOptions;
        use crate::stage::faults;
        let text = "name: t\nsource: {brokers: b, topics: [t], group: g}\nformat: {type: debezium-json}\n\
                    rows: {key: user_id, event_time: created_at}\ndetectors: [{type: spend_anomaly}]\n\
                    sink: {alerts: a, dead_letters: d}\n";
        let pipeline = crate::config::load_str("t.yaml", text, |_| None).expect("valid");
        let mut decoder = Decoder::new(DecodeOptions::for_pipeline(&pipeline), "t");
        let create = include_bytes!("../../tests/fixtures/debezium/transactions-create.value.json");
        let mut b = RecordBatch::new("t".into(), 0, 0);
        for offset in 10..14 {
            b.push(offset, None, Some(create));
        }
        faults::plan("decoder", 11, 2);
        faults::plan("decoder", 12, 3);
        let mut verdicts = Vec::new();
        b.decode_each(&mut decoder, 3, |record, decoded| {
            verdicts.push(match decoded {
                Ok(Decoded::Row(row)) => format!("{}: row {}", record.offset, row.offset),
                Ok(Decoded::Skipped(skip)) => format!("{}: skipped {skip:?}", record.offset),
                Err(e) => format!("{}: {e}", record.offset),
            })
        });
        assert_eq!(
            verdicts,
            [
                "10: row 10",
                "11: row 11",
                "12: decoder panicked on this record 3 times (rows.max_attempts): planned panic in the decoder at offset 12",
                "13: row 13",
            ]
        );
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
