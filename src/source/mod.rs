//! The Kafka source of a streaming pipeline: one consumer in the pipeline's
//! group, a poll thread, and one supervised [`PartitionActor`] per assigned
//! partition.
//!
//! The poll thread takes records a batch at a time from the
//! [`RecordsQueue`] every assigned partition's records are forwarded to,
//! and copies them into per-partition [`RecordBatch`]es, which it hands to
//! the partition actors (spread over the worker arbiters, so decoding uses
//! every core). Between batches it serves the consumer queue: rebalances,
//! errors and statistics. Rebalance callbacks run on the poll thread, so a
//! revocation drains the leaving partitions' actors and commits their
//! offsets before the partitions are given up, and an assignment forwards
//! the arriving partitions' records before librdkafka fetches any.
//!
//! Offsets: a partition actor reports the offset after the last batch whose
//! effects are durable ([`offsets::CompletionTracker`]); the poll thread
//! commits those every second, and on revocation and shutdown, always
//! synchronously and from that one thread, so no commit can overtake
//! another. Backpressure: a partition with too many batches in flight is
//! paused until its actor catches up, so memory stays bounded; records
//! librdkafka had already fetched are dropped meanwhile and read again
//! after a seek when the partition resumes.

pub mod batch;
pub mod offsets;
mod partition;
pub mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::config::Pipeline;
use crate::dead_letter::DeadLetters;
use crate::decode::DecodeOptions;
use crate::kafka_log::ErrorLog;
use crate::metrics::{names, Health};
use crate::row::Row;
use batch::{BufferPool, RecordBatch};
use partition::{Drain, PartitionActor, PartitionSetup};
use records::{Fetched, RecordsQueue};

/// Records per batch handed to a partition actor, at most.
const MAX_BATCH_RECORDS: usize = 2_000;
/// Bytes per batch, at most (one record may exceed it alone).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches a partition may have in flight before it is paused.
const MAX_IN_FLIGHT: usize = 16;
/// How often durable progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a revocation or shutdown waits for a partition to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a batch's effects could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Passing: the partition actor is restarted by its supervisor and
    /// reads the batch again from the last durable offset.
    #[error("{0}")]
    Retry(String),
    /// Final (e.g. a delivery that failed after all of librdkafka's
    /// retries): the pipeline stops without committing past the batch.
    #[error("{0}")]
    Fatal(String),
}

/// What happens to decoded rows: the detectors, in a full pipeline.
pub trait Downstream: Send + Sync + 'static {
    /// Processes one batch of a partition's rows, in order. The future
    /// resolves once every effect of the rows is durable.
    fn process(&self, topic: Arc<str>, partition: i32, rows: Vec<Row>) -> BoxFuture<'static, Result<(), BatchError>>;

    /// The partition left this process: state kept for it may go.
    fn revoked(&self, _topic: &str, _partition: i32) {}
}

/// A downstream that only counts: the source alone.
pub struct CountRows;

impl Downstream for CountRows {
    fn process(&self, _: Arc<str>, _: i32, _: Vec<Row>) -> BoxFuture<'static, Result<(), BatchError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Which of `n` workers a partition's actor (and its detector shard) runs
/// on: by partition, with the topic spreading topics over the workers.
pub fn placement(topic: &str, partition: i32, n: usize) -> usize {
    let topic_hash = topic.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    topic_hash.wrapping_add(partition.unsigned_abs() as usize) % n.max(1)
}

/// The consumer settings of a pipeline: tuning defaults, then the
/// pipeline's own properties, then what vigil's correctness depends on.
pub fn consumer_config(pipeline: &Pipeline) -> ClientConfig {
    let source = &pipeline.source;
    let mut config = ClientConfig::new();
    config
        .set("client.id", format!("vigil-{}", pipeline.name))
        // Kafka's default. A consumer whose session lapses loses its
        // partitions, and with them its users' detector state; 45 s
        // outlasts a broker restart (a single broker here: about 25 s). A
        // crashed process's partitions move after as long.
        .set("session.timeout.ms", "45000")
        .set("statistics.interval.ms", "5000");
    for (k, v) in &source.properties {
        config.set(k, v);
    }
    config
        .set("bootstrap.servers", &source.brokers)
        .set("group.id", &source.group)
        .set("auto.offset.reset", source.start_from.as_str())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // Offsets are committed by the poll thread, synchronously, once a
        // batch's effects are durable: never by librdkafka when a record is
        // handed out, and never by a background commit that could land
        // after a revocation's commit and move the group's offset back.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "false");
    config
}

/// A running source. Dropping it does not stop it: call [`Source::stop`].
pub struct Source {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a source needs besides its pipeline.
pub struct SourceParts {
    pub pipeline: Arc<Pipeline>,
    pub decode: DecodeOptions,
    pub downstream: Arc<dyn Downstream>,
    pub dead_letters: DeadLetters,
    pub arbiters: Vec<ArbiterHandle>,
    pub health: Health,
    /// Told when the pipeline fails for good (a delivery that finally
    /// failed); the process stops.
    pub fatal: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Source {
    /// Subscribes and starts the poll thread.
    pub fn start(parts: SourceParts) -> KafkaResult<Source> {
        let pipeline = Arc::clone(&parts.pipeline);
        let shutdown = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = mpsc::channel();
        let context = SourceContext {
            name: pipeline.name.clone(),
            errors: ErrorLog::new(&pipeline.name, "consumer"),
            state: Mutex::new(State::default()),
            parts,
            control: control_tx,
            arenas: Arc::new(BufferPool::default()),
        };
        let consumer: BaseConsumer<SourceContext> = consumer_config(&pipeline).create_with_context(context)?;
        let records = RecordsQueue::new(&consumer)
            .map(Arc::new)
            .ok_or_else(|| rdkafka::error::KafkaError::ClientCreation("librdkafka gave no queue".into()))?;
        if let Ok(mut state) = consumer.context().state.lock() {
            state.records = Some(Arc::clone(&records));
        }
        let topics: Vec<&str> = pipeline.source.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            release_records(&consumer);
            return Err(e);
        }
        let consumer = Arc::new(consumer);
        let flag = Arc::clone(&shutdown);
        let thread = std::thread::Builder::new()
            .name(format!("poll-{}", pipeline.name))
            .spawn(move || poll_loop(consumer, records, flag, control_rx))
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
        Ok(Source { shutdown, thread: Some(thread) })
    }

    /// Stops consuming, drains every partition, commits, and leaves the
    /// group. Blocks until done.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A partition as the poll thread tracks it.
struct PartitionSlot {
    topic: Arc<str>,
    actor: Addr<PartitionActor>,
    in_flight: Arc<AtomicUsize>,
    epoch: u64,
    paused: bool,
    pending: Option<RecordBatch>,
    /// Durable progress not committed yet: the next offset to read.
    uncommitted: Option<i64>,
    /// librdkafka has been told to stop fetching the partition.
    fetch_paused: bool,
    /// The first record dropped while paused (librdkafka still hands out
    /// what it fetched before the pause): the partition resumes from here.
    skipped_from: Option<i64>,
}

#[derive(Default)]
struct State {
    partitions: HashMap<(Arc<str>, i32), PartitionSlot>,
    /// Where assigned partitions' records go; set while the poll thread
    /// reads it.
    records: Option<Arc<RecordsQueue>>,
}

/// What partition actors ask of the poll thread, which owns the consumer.
pub(crate) enum Control {
    /// Everything before `next` is durable: store it for the next commit.
    Store { topic: Arc<str>, partition: i32, next: i64 },
    /// A restarted actor: read again from `offset`, in batches of `epoch`.
    Rewind { topic: Arc<str>, partition: i32, epoch: u64, offset: i64 },
}

pub(crate) struct SourceContext {
    name: String,
    /// librdkafka's errors and the consumer's error events: said once,
    /// then counted (see [`crate::kafka_log`]).
    errors: ErrorLog,
    state: Mutex<State>,
    parts: SourceParts,
    control: mpsc::Sender<Control>,
    arenas: Arc<BufferPool>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(names::CONSUMER_LAG, "pipeline" => self.name.clone(),
                    "topic" => topic.clone(), "partition" => partition.to_string())
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.forward_records(consumer, tpl),
            Rebalance::Revoke(tpl) => {
                let leaving: Vec<(Arc<str>, i32)> =
                    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
                metrics::counter!(names::REBALANCES, "pipeline" => self.name.clone(), "kind" => "revoke").increment(1);
                info!(pipeline = %self.name, partitions = ?partition_list(&leaving), "partitions revoked: draining");
                self.retire(consumer, &leaving);
            }
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let arriving: Vec<(Arc<str>, i32)> =
                    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
                metrics::counter!(names::REBALANCES, "pipeline" => self.name.clone(), "kind" => "assign").increment(1);
                info!(pipeline = %self.name, partitions = ?partition_list(&arriving), "partitions assigned");
                for (topic, partition) in arriving {
                    self.adopt(topic, partition);
                }
                self.parts.health.healthy(&self.name);
                self.report_assigned();
            }
            Rebalance::Revoke(_) => self.report_assigned(),
            Rebalance::Error(e) => warn!(pipeline = %self.name, error = %e, "rebalance error"),
        }
    }
}

fn partition_list(parts: &[(Arc<str>, i32)]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

impl SourceContext {
    /// Sends arriving partitions' records to the records queue, before
    /// librdkafka starts fetching them.
    fn forward_records(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let records = self.state.lock().ok().and_then(|state| state.records.clone());
        let Some(records) = records else { return };
        for e in tpl.elements() {
            if !records.forward(consumer, e.topic(), e.partition()) {
                warn!(pipeline = %self.name, topic = e.topic(), partition = e.partition(),
                    "no queue for the partition; its records are read one at a time");
            }
        }
    }

    /// Starts a supervised actor for a newly assigned partition.
    fn adopt(&self, topic: Arc<str>, partition: i32) {
        let arbiters = &self.parts.arbiters;
        let arbiter = &arbiters[placement(&topic, partition, arbiters.len())];
        let in_flight = Arc::new(AtomicUsize::new(0));
        let setup = PartitionSetup {
            pipeline: Arc::from(self.name.as_str()),
            topic: Arc::clone(&topic),
            partition,
            decode: self.parts.decode.clone(),
            dead_letters: self.parts.dead_letters.clone(),
            downstream: Arc::clone(&self.parts.downstream),
            in_flight: Arc::clone(&in_flight),
            control: self.control.clone(),
            fatal: self.parts.fatal.clone(),
            health: self.parts.health.clone(),
        };
        let actor = Supervisor::start_in_arbiter(arbiter, move |_| PartitionActor::new(setup));
        if let Ok(mut state) = self.state.lock() {
            state.partitions.insert(
                (Arc::clone(&topic), partition),
                PartitionSlot {
                    topic,
                    actor,
                    in_flight,
                    epoch: 0,
                    paused: false,
                    fetch_paused: false,
                    pending: None,
                    uncommitted: None,
                    skipped_from: None,
                },
            );
        }
    }

    /// Drains the actors of leaving partitions, commits what they finished,
    /// and stops them. Records read but not yet handed over are dropped:
    /// they lie past the committed offset, so the next owner reads them.
    fn retire(&self, consumer: &BaseConsumer<Self>, leaving: &[(Arc<str>, i32)]) {
        let slots: Vec<((Arc<str>, i32), PartitionSlot)> = match self.state.lock() {
            Ok(mut state) => {
                leaving.iter().filter_map(|k| state.partitions.remove_entry(&(Arc::clone(&k.0), k.1))).collect()
            }
            Err(_) => return,
        };
        let mut replies = Vec::new();
        for ((topic, partition), slot) in &slots {
            let (tx, rx) = mpsc::channel();
            slot.actor.do_send(Drain { reply: tx });
            replies.push((Arc::clone(topic), *partition, rx));
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut commit = TopicPartitionList::new();
        for (topic, partition, rx) in replies {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Some(next)) => {
                    let _ = commit.add_partition_offset(&topic, partition, Offset::Offset(next));
                }
                Ok(None) => {}
                Err(_) => warn!(pipeline = %self.name, topic = %topic, partition,
                    "partition did not drain in time; its unfinished batches will be read again"),
            }
            self.parts.downstream.revoked(&topic, partition);
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    info!(pipeline = %self.name, offsets = ?commit_list(&commit), "drained and committed")
                }
                Err(e) => {
                    warn!(pipeline = %self.name, error = %e, "commit on revocation failed; the next owner re-reads from the last commit")
                }
            }
        }
        // Dropping the slots drops the last addresses: the actors end, and
        // their supervisors do not restart what nobody addresses.
        drop(slots);
    }

    fn report_assigned(&self) {
        if let Ok(state) = self.state.lock() {
            metrics::gauge!(names::ASSIGNED_PARTITIONS, "pipeline" => self.name.clone())
                .set(state.partitions.len() as f64);
        }
    }
}

fn commit_list(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements().iter().map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset())).collect()
}

/// The poll thread: read, batch, hand over, pause and resume, rewind; on
/// shutdown drain everything and leave the group.
fn poll_loop(
    consumer: Arc<BaseConsumer<SourceContext>>,
    records: Arc<RecordsQueue>,
    shutdown: Arc<AtomicBool>,
    control: mpsc::Receiver<Control>,
) {
    let ctx = consumer.context();
    let name = ctx.name.clone();
    let mut last_commit = Instant::now();
    let mut fetched = Fetched::default();
    while !shutdown.load(Ordering::SeqCst) {
        while let Ok(request) = control.try_recv() {
            apply_control(&consumer, request);
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            commit_progress(&consumer);
            last_commit = Instant::now();
        }
        // Rebalances, errors and statistics; a record here belongs to a
        // partition whose records could not be forwarded.
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                let Ok(mut state) = ctx.state.lock() else { break };
                let record = (message.offset(), message.key(), message.payload());
                accept(ctx, &mut state, message.topic(), message.partition(), [record].into_iter());
            }
            Some(Err(e)) => ctx.errors.say("consumer error", &"the consumer queue", &e),
            None => {}
        }
        records.fill(Duration::from_millis(100), MAX_BATCH_RECORDS, &mut fetched);
        let Ok(mut state) = ctx.state.lock() else { break };
        for run in fetched.runs() {
            let records = run.iter().filter_map(|r| match r.error() {
                Some(e) => {
                    ctx.errors.say("consumer error", &format_args!("{}/{}", r.topic(), r.partition()), &e);
                    None
                }
                None => Some((r.offset(), r.key(), r.payload())),
            });
            accept(ctx, &mut state, run[0].topic(), run[0].partition(), records);
        }
        for slot in state.partitions.values_mut() {
            dispatch(slot);
        }
        pause_or_resume(&consumer, &name, &mut state);
    }
    info!(pipeline = %name, "stopping: draining partitions");
    let all: Vec<(Arc<str>, i32)> = match ctx.state.lock() {
        Ok(state) => state.partitions.keys().cloned().collect(),
        Err(_) => Vec::new(),
    };
    ctx.retire(&consumer, &all);
    consumer.unsubscribe();
    drop(fetched);
    drop(records);
    release_records(&consumer);
    info!(pipeline = %name, "left the consumer group");
}

/// Drops the context's hold on the records queue: librdkafka wants its
/// queues destroyed before the client, and the context outlives it.
fn release_records(consumer: &BaseConsumer<SourceContext>) {
    let mut state = consumer.context().state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    state.records = None;
}

/// Adds a run of one partition's records (offset, key, value) to its
/// pending batch, handing batches over as they fill.
fn accept<'a>(
    ctx: &SourceContext,
    state: &mut State,
    topic: &str,
    partition: i32,
    records: impl Iterator<Item = (i64, Option<&'a [u8]>, Option<&'a [u8]>)>,
) {
    // A record of a partition already revoked: its next owner reads it.
    let Some(slot) = state.partitions.get_mut(&(Arc::<str>::from(topic), partition)) else {
        return;
    };
    for (offset, key, value) in records {
        if slot.paused {
            skip_from(slot, Some(offset));
            continue;
        }
        let batch = slot
            .pending
            .get_or_insert_with(|| RecordBatch::pooled(Arc::clone(&slot.topic), partition, slot.epoch, &ctx.arenas));
        batch.push(offset, key, value);
        if batch.len() >= MAX_BATCH_RECORDS || batch.byte_len() >= MAX_BATCH_BYTES {
            dispatch(slot);
        }
    }
}

/// Hands a partition's pending batch to its actor, unless the actor has
/// as many batches in flight as allowed: then the partition pauses, and
/// the batch is dropped, to be read again when it resumes.
fn dispatch(slot: &mut PartitionSlot) {
    let Some(batch) = slot.pending.take() else { return };
    if slot.in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
        slot.paused = true;
        skip_from(slot, batch.first_offset());
        return;
    }
    slot.in_flight.fetch_add(1, Ordering::SeqCst);
    slot.actor.do_send(partition::Batch(batch));
}

/// Remembers the earliest record dropped while paused.
fn skip_from(slot: &mut PartitionSlot, offset: Option<i64>) {
    if let Some(offset) = offset {
        slot.skipped_from = Some(slot.skipped_from.map_or(offset, |o| o.min(offset)));
    }
}

/// Pauses partitions whose actors lag behind; resumes them at half.
fn pause_or_resume(consumer: &BaseConsumer<SourceContext>, name: &str, state: &mut State) {
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for ((topic, partition), slot) in state.partitions.iter_mut() {
        let in_flight = slot.in_flight.load(Ordering::SeqCst);
        if in_flight >= MAX_IN_FLIGHT {
            slot.paused = true;
        }
        if slot.paused && !slot.fetch_paused {
            slot.fetch_paused = true;
            pause.add_partition(topic, *partition);
        } else if slot.paused && in_flight <= MAX_IN_FLIGHT / 2 {
            // Read again what was dropped while paused, then resume.
            if let Some(offset) = slot.skipped_from {
                if let Err(e) = consumer.seek(topic, *partition, Offset::Offset(offset), Duration::from_secs(10)) {
                    warn!(pipeline = %name, topic = %topic, partition, error = %e, "seek before resuming failed; retrying");
                    continue;
                }
                slot.skipped_from = None;
            }
            (slot.paused, slot.fetch_paused) = (false, false);
            resume.add_partition(topic, *partition);
        }
    }
    if pause.count() > 0 {
        if let Err(e) = consumer.pause(&pause) {
            warn!(pipeline = %name, error = %e, "pause failed");
        }
    }
    if resume.count() > 0 {
        if let Err(e) = consumer.resume(&resume) {
            warn!(pipeline = %name, error = %e, "resume failed");
        }
    }
    if pause.count() + resume.count() > 0 {
        let paused = state.partitions.values().filter(|s| s.paused).count();
        metrics::gauge!(names::PAUSED_PARTITIONS, "pipeline" => name.to_owned()).set(paused as f64);
    }
}

/// Commits the durable progress of every partition that made some.
fn commit_progress(consumer: &BaseConsumer<SourceContext>) {
    let ctx = consumer.context();
    let mut tpl = TopicPartitionList::new();
    if let Ok(mut state) = ctx.state.lock() {
        for ((topic, partition), slot) in state.partitions.iter_mut() {
            if let Some(next) = slot.uncommitted.take() {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(next));
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => debug!(pipeline = %ctx.name, offsets = ?commit_list(&tpl), "committed"),
        Err(e) => {
            warn!(pipeline = %ctx.name, error = %e, "offset commit failed; the next one includes it")
        }
    }
}

fn apply_control(consumer: &BaseConsumer<SourceContext>, request: Control) {
    let ctx = consumer.context();
    match request {
        Control::Store { topic, partition, next } => {
            // A partition revoked meanwhile has no slot: its drain committed.
            if let Ok(mut state) = ctx.state.lock() {
                if let Some(slot) = state.partitions.get_mut(&(topic, partition)) {
                    slot.uncommitted = Some(next);
                }
            }
        }
        Control::Rewind { topic, partition, epoch, offset } => {
            let Ok(mut state) = ctx.state.lock() else {
                return;
            };
            let Some(slot) = state.partitions.get_mut(&(Arc::clone(&topic), partition)) else {
                return;
            };
            slot.epoch = epoch;
            slot.pending = None;
            slot.skipped_from = None;
            match consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(10)) {
                Ok(()) => info!(pipeline = %ctx.name, topic = %topic, partition, offset,
                    "partition rewound after its actor restarted"),
                Err(e) => error!(pipeline = %ctx.name, topic = %topic, partition, error = %e,
                    "could not rewind the partition after its actor restarted"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
