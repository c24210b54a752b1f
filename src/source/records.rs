//! One queue that every assigned partition's records go to, read a batch
//! at a time.
//!
//! The rdkafka crate reads the consumer queue an event at a time, and each
//! event costs its lock, clock reads and an allocation, per record; taken
//! in batches, the poll thread needs about 30% less CPU. librdkafka hands
//! out records in batches (`rd_kafka_consume_batch_queue`), but not from
//! the consumer queue: there it would serve a rebalance itself, unassigning
//! without telling vigil, and nothing would drain or commit. So the records
//! go elsewhere: each partition's fetch queue is forwarded to a
//! [`RecordsQueue`] before the partition is assigned. librdkafka keeps a
//! forward the application set when it starts fetching, so every record of
//! the partition arrives here, in order, and none on the consumer queue,
//! which keeps rebalances, errors and statistics. Records queued before a
//! revocation, seek or reassignment are dropped by librdkafka's version
//! barrier, here as there.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The queue; it lives as long as the poll thread reads it, which is
/// less than the consumer's life.
pub struct RecordsQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are locked inside; any thread may use one.
unsafe impl Send for RecordsQueue {}
// SAFETY: as above; forwarding and reading take the queue's own lock.
unsafe impl Sync for RecordsQueue {}

impl RecordsQueue {
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` is.
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        NonNull::new(queue).map(|queue| RecordsQueue { queue })
    }

    /// Sends the partition's records here; call it before the partition is
    /// assigned. False if librdkafka has no queue for it (then its records
    /// come on the consumer queue).
    pub fn forward<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else { return false };
        // SAFETY: valid client and C string; the partition queue handle is
        // released right after the forward, which outlives the handle.
        unsafe {
            let partition_queue =
                rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic.as_ptr(), partition);
            if partition_queue.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Waits up to `timeout` for a record, then takes every record queued,
    /// up to `max`, into `into` (emptied first).
    pub fn fill(&self, timeout: Duration, max: usize, into: &mut Fetched) {
        into.clear();
        into.messages.resize(max.max(1), std::ptr::null_mut());
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // The first record alone, so the wait ends as soon as one arrives
        // (a call waits until its whole array is filled), then the rest
        // without waiting.
        let first = self.consume(timeout_ms, &mut into.messages[..1]);
        let rest = if first == 1 { self.consume(0, &mut into.messages[1..]) } else { 0 };
        into.messages.truncate(first + rest);
    }

    fn consume(&self, timeout_ms: i32, into: &mut [*mut rd::rd_kafka_message_t]) -> usize {
        if into.is_empty() {
            return 0;
        }
        // SAFETY: `into` has room for `into.len()` pointers; librdkafka
        // writes at most that many and returns how many, or -1.
        let n =
            unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), timeout_ms, into.as_mut_ptr(), into.len()) };
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for RecordsQueue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new and destroyed once. Queues
        // still forwarded here hold their own reference; librdkafka drops
        // what they enqueue from now on.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Records taken from the queue; each goes back to librdkafka when the
/// next batch is taken or this is dropped.
#[derive(Default)]
pub struct Fetched {
    messages: Vec<*mut rd::rd_kafka_message_t>,
}

impl Fetched {
    /// The records in the order read, in runs of one partition.
    pub fn runs(&self) -> impl Iterator<Item = &[FetchedRecord]> {
        // SAFETY: every pointer kept is a live message (see `clear`), and
        // `FetchedRecord` is a transparent wrapper around its pointer.
        let records: &[FetchedRecord] =
            unsafe { std::slice::from_raw_parts(self.messages.as_ptr().cast(), self.messages.len()) };
        records.chunk_by(|a, b| a.same_partition(b))
    }

    fn clear(&mut self) {
        for message in self.messages.drain(..) {
            if !message.is_null() {
                // SAFETY: returned by rd_kafka_consume_batch_queue, destroyed once.
                unsafe { rd::rd_kafka_message_destroy(message) }
            }
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One record (or a partition's consumer error) as librdkafka gave it.
#[repr(transparent)]
pub struct FetchedRecord(*mut rd::rd_kafka_message_t);

impl FetchedRecord {
    fn message(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: non-null and live while the `Fetched` holding it is.
        unsafe { &*self.0 }
    }

    fn same_partition(&self, other: &FetchedRecord) -> bool {
        let (a, b) = (self.message(), other.message());
        a.rkt == b.rkt && a.partition == b.partition
    }

    /// The topic's name; empty for an error that names none.
    pub fn topic(&self) -> &str {
        let rkt = self.message().rkt;
        if rkt.is_null() {
            return "";
        }
        // SAFETY: a live topic handle's name is a NUL-terminated string
        // that lives as long as the handle, which the message holds.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) };
        name.to_str().unwrap_or("")
    }

    pub fn partition(&self) -> i32 {
        self.message().partition
    }

    pub fn offset(&self) -> i64 {
        self.message().offset
    }

    /// The error librdkafka reports for the partition instead of a record.
    pub fn error(&self) -> Option<KafkaError> {
        let err = self.message().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(RDKafkaErrorCode::from(err)))
    }

    pub fn key(&self) -> Option<&[u8]> {
        let m = self.message();
        bytes(m.key, m.key_len)
    }

    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.message();
        bytes(m.payload, m.len)
    }
}

fn bytes<'a>(data: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka's pointer and length of a live message's bytes.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}
