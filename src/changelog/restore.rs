//! Reads a changelog partition from its start to its end, as it was when
//! asked, handing each record to a [`Reading`] (the detectors turn them
//! back into users' state).
//!
//! One thread and one consumer per pipeline, outside any group (partitions
//! are assigned by hand, nothing is committed): a partition requested while
//! others are read is read beside them at once.
//! A broker away is waited for; a record the reading refuses ends that
//! partition's restore with an error, and the pipeline stops rather than
//! judge on a state that is not the saved one.

use std::sync::mpsc;
use std::time::Duration;

use futures::channel::oneshot;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::config::Pipeline;
use crate::kafka::log::{ErrorLog, LoggedContext};
use crate::kafka::{base_config, create, Client, CreateError};

/// What a changelog partition's records are handed to, in offset order.
pub trait Reading: Send + 'static {
    /// One record; `value` is `None` for a tombstone. An error ends the
    /// restore of the partition.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;

    /// Before the first record: how many the partition holds at most.
    fn size_hint(&mut self, _records: u64) {}
}

/// What a restore read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the record at offset {offset}: {reason}")]
    Unreadable { offset: i64, reason: String },
    #[error("the changelog partition is gone: {0}")]
    Missing(KafkaError),
    #[error("the restorer has stopped")]
    Stopped,
    /// The partition was asked for again before its read ended (its
    /// partition actor restarted): the newer request reads it.
    #[error("asked for again before the read ended")]
    Superseded,
}

/// Reads changelog partitions on a thread of its own.
pub struct Restorer {
    requests: mpsc::Sender<Request>,
}

struct Request {
    topic: String,
    partition: i32,
    job: Box<dyn Job>,
}

/// A [`Reading`] and where its result goes, with its type erased.
trait Job: Send {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    fn size_hint(&mut self, records: u64);
    fn finish(self: Box<Self>, result: Result<ReadStats, RestoreError>);
}

struct Typed<R: Reading> {
    reading: R,
    reply: oneshot::Sender<Result<(R, ReadStats), RestoreError>>,
}

impl<R: Reading> Job for Typed<R> {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        self.reading.apply(key, value)
    }

    fn size_hint(&mut self, records: u64) {
        self.reading.size_hint(records);
    }

    fn finish(self: Box<Self>, result: Result<ReadStats, RestoreError>) {
        let Typed { reading, reply } = *self;
        let _ = reply.send(result.map(|stats| (reading, stats)));
    }
}

/// How long a poll waits before the thread looks at its requests again.
const POLL: Duration = Duration::from_millis(200);
/// How long a watermark request may take before it is asked again.
const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(10);

impl Restorer {
    /// Starts the thread of `pipeline`'s restorer.
    pub fn start(pipeline: &Pipeline) -> Result<Restorer, CreateError> {
        let mut config = base_config(&pipeline.source.brokers, &pipeline.source.properties);
        config
            .set("client.id", format!("vigil-{}-restorer", pipeline.name))
            // librdkafka assigns only with a group; this one never joins
            // (no subscription) and never commits.
            .set("group.id", format!("vigil-{}-restorer", pipeline.name))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // A fetch waiting at the end of a partition read to its end
            // holds back the partitions assigned meanwhile: wait briefly
            // (only while partitions are being read).
            .set("fetch.wait.max.ms", "20")
            // A restore reads as fast as it can decode: a partition whose
            // fetched records fill the local queue fetches again as soon
            // as there is room, not after the default second.
            .set("fetch.queue.backoff.ms", "10")
            // Only what was committed, should the changelog be written in
            // transactions.
            .set("isolation.level", "read_committed");
        let errors = ErrorLog::new(&pipeline.name, Client::Restorer);
        let consumer: BaseConsumer<LoggedContext> = create(&config, LoggedContext { errors })?;
        let (requests, incoming) = mpsc::channel();
        let name = pipeline.name.clone();
        std::thread::Builder::new()
            .name(format!("restore-{name}"))
            .spawn(move || serve(&consumer, &incoming))
            .map_err(|e| CreateError::Client(format!("starting the restorer's thread: {e}")))?;
        Ok(Restorer { requests })
    }

    /// Reads partition `partition` of `topic` into `reading`; resolves with
    /// it once the partition's end (as it was now) is reached.
    pub fn read<R: Reading>(
        &self,
        topic: String,
        partition: i32,
        reading: R,
    ) -> impl std::future::Future<Output = Result<(R, ReadStats), RestoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request { topic, partition, job: Box::new(Typed { reading, reply }) });
        async move {
            sent.map_err(|_| RestoreError::Stopped)?;
            answer.await.map_err(|_| RestoreError::Stopped)?
        }
    }
}

/// Serves requests until every [`Restorer`] handle is dropped. A request
/// that comes while others are read joins them at once (a rebalance's
/// partitions arrive one after another, and none waits for the others).
fn serve(consumer: &BaseConsumer<LoggedContext>, incoming: &mpsc::Receiver<Request>) {
    while let Ok(first) = incoming.recv() {
        let mut active = Vec::new();
        begin(consumer, first, &mut active);
        loop {
            for request in incoming.try_iter() {
                begin(consumer, request, &mut active);
            }
            if active.is_empty() {
                break;
            }
            read_some(consumer, &mut active);
        }
    }
}

/// A partition being read.
struct Active {
    topic: String,
    partition: i32,
    /// The partition's end when the restore began.
    end: i64,
    stats: ReadStats,
    job: Box<dyn Job>,
}

impl Active {
    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }

    /// Stops reading the partition and answers its request.
    fn finish(self, consumer: &BaseConsumer<LoggedContext>, result: Result<ReadStats, RestoreError>) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let _ = consumer.incremental_unassign(&tpl);
        self.job.finish(result);
    }
}

/// Starts reading a requested partition from its start, or answers at
/// once when it is empty or gone.
fn begin(consumer: &BaseConsumer<LoggedContext>, request: Request, active: &mut Vec<Active>) {
    let Request { topic, partition, mut job } = request;
    if let Some(at) = active.iter().position(|a| a.is(&topic, partition)) {
        active.swap_remove(at).finish(consumer, Err(RestoreError::Superseded));
    }
    let (start, end) = match watermarks(consumer, &topic, partition) {
        Ok(marks) => marks,
        Err(e) => return job.finish(Err(RestoreError::Missing(e))),
    };
    if end <= start {
        return job.finish(Ok(ReadStats::default()));
    }
    let mut tpl = TopicPartitionList::new();
    let assigned = tpl
        .add_partition_offset(&topic, partition, Offset::Offset(start))
        .and_then(|()| consumer.incremental_assign(&tpl));
    match assigned {
        Ok(()) => {
            job.size_hint(u64::try_from(end - start).unwrap_or(0));
            active.push(Active { topic, partition, end, stats: ReadStats::default(), job });
        }
        Err(e) => {
            job.finish(Err(RestoreError::Unreadable { offset: start, reason: format!("cannot be assigned: {e}") }))
        }
    }
}

/// Reads what one poll gives, finishing the partitions that reach their end.
fn read_some(consumer: &BaseConsumer<LoggedContext>, active: &mut Vec<Active>) {
    match consumer.poll(POLL) {
        Some(Ok(record)) => {
            let Some(at) = active.iter().position(|a| a.is(record.topic(), record.partition())) else {
                return;
            };
            let a = &mut active[at];
            let (key, value) = (record.key().unwrap_or_default(), record.payload());
            a.stats.records += 1;
            a.stats.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
            if let Err(reason) = a.job.apply(key, value) {
                let offset = record.offset();
                drop(record);
                active.swap_remove(at).finish(consumer, Err(RestoreError::Unreadable { offset, reason }));
            } else if record.offset() + 1 >= a.end {
                drop(record);
                let a = active.swap_remove(at);
                let stats = a.stats;
                a.finish(consumer, Ok(stats));
            }
        }
        // The end of a partition, or past records that are never handed
        // out (transaction markers): done when past the end.
        Some(Err(KafkaError::PartitionEOF(_))) | None => finish_reached(consumer, active),
        Some(Err(e)) => consumer.context().errors.say("reading a changelog", &"the restorer", &e),
    }
}

/// Finishes the partitions whose position is at or past their end.
fn finish_reached(consumer: &BaseConsumer<LoggedContext>, active: &mut Vec<Active>) {
    let Ok(positions) = consumer.position() else { return };
    let mut i = 0;
    while i < active.len() {
        let a = &active[i];
        let position = positions.find_partition(&a.topic, a.partition).and_then(|p| match p.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        if position.is_some_and(|p| p >= a.end) {
            let a = active.swap_remove(i);
            let stats = a.stats;
            a.finish(consumer, Ok(stats));
        } else {
            i += 1;
        }
    }
}

/// The partition's first and next offsets, waiting out a broker away; an
/// error only when the partition does not exist.
fn watermarks(consumer: &BaseConsumer<LoggedContext>, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
    loop {
        match consumer.fetch_watermarks(topic, partition, WATERMARKS_TIMEOUT) {
            Ok(marks) => return Ok(marks),
            Err(e @ KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition))
            | Err(e @ KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => return Err(e),
            Err(e) => {
                consumer.context().errors.say("reading a changelog's end", &format_args!("{topic}/{partition}"), &e);
                warn!(topic, partition, error = %e, "waiting for the broker to restore the partition's state");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
