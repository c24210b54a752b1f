//! The poll thread of a source: it takes records a batch at a time from
//! the [`RecordsQueue`] every assigned partition's records are forwarded
//! to, copies them into per-partition [`RecordBatch`]es and hands those to
//! the partition actors; between batches it serves the consumer queue
//! (rebalances, errors, statistics), the actors' requests (offsets to
//! store, rewinds), pauses and resumes partitions, and commits.
//!
//! Offsets are committed every second, and on revocation and shutdown,
//! always synchronously and from this one thread, so no commit can
//! overtake another. A partition with too many batches in flight is
//! paused until its actor catches up, so memory stays bounded; records
//! librdkafka had already fetched are dropped meanwhile and read again
//! after a seek when the partition resumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::batch::RecordBatch;
use super::consumer::{PartitionSlot, SourceContext, State};
use super::partition::{self, Control};
use super::records::{Fetched, RecordsQueue};
use crate::kafka::commit_list;

/// Records per batch handed to a partition actor, at most.
const MAX_BATCH_RECORDS: usize = 2_000;
/// Bytes per batch, at most (one record may exceed it alone).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches a partition may have in flight before it is paused.
const MAX_IN_FLIGHT: usize = 16;
/// How often durable progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The poll thread: read, batch, hand over, pause and resume, rewind; on
/// shutdown drain everything and leave the group.
pub(super) fn poll_loop(
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
        if let Some(transactions) = &ctx.transactions {
            let ticked = transactions.lock().map(|mut t| t.tick(&*consumer, || ctx.assigned()));
            if let Ok(Err(e)) = ticked {
                ctx.failed(&e.to_string());
                break;
            }
        } else if last_commit.elapsed() >= COMMIT_INTERVAL {
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
    ctx.retire(&consumer, &all, false);
    consumer.unsubscribe();
    drop(fetched);
    drop(records);
    release_records(&consumer);
    info!(pipeline = %name, "left the consumer group");
}

/// Drops the context's hold on the records queue: librdkafka wants its
/// queues destroyed before the client, and the context outlives it.
pub(super) fn release_records(consumer: &BaseConsumer<SourceContext>) {
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
        consumer.context().series.paused.set(paused as f64);
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
            // Tried again with the next commit, even when the partition
            // makes no further progress (an idle stream would otherwise
            // keep its lag for ever).
            if let Ok(mut state) = ctx.state.lock() {
                retry_later(&mut state, &tpl);
            }
            warn!(pipeline = %ctx.name, error = %e, "offset commit failed; the next one includes it")
        }
    }
}

/// Puts the offsets of a failed commit back, where no newer one was
/// stored meanwhile and the partition is still assigned.
fn retry_later(state: &mut State, failed: &TopicPartitionList) {
    for e in failed.elements() {
        let Offset::Offset(next) = e.offset() else { continue };
        if let Some(slot) = state.partitions.get_mut(&(Arc::from(e.topic()), e.partition())) {
            slot.uncommitted.get_or_insert(next);
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
