//! The actor of one assigned partition: decodes its batches, dead-letters
//! what cannot be decoded, hands rows downstream, and stores the offset
//! after the last batch whose effects are durable.
//!
//! The actor ends when its partition leaves: the source drains it and
//! drops its address, and a supervisor restarts only an actor someone
//! still addresses.
//!
//! A record that panics the decoder or a detector (a bug, never bad input:
//! that is a dead letter) is tried again a few times and then dead-lettered
//! as `internal_error` ([`RecordBatch::decode_each`], the detector shard):
//! no record stops the partition. Supervised: when the next stage is gone
//! for a while (its shard restarted), the actor stops and its supervisor
//! restarts it with a new epoch and a rewind to the last durable offset,
//! so nothing is skipped.
//!
//! With state kept downstream ([`Downstream::keeps_state`]) the actor first
//! has its partition's state restored, holding the batches that arrive
//! meanwhile (the poll thread pauses the partition once too many are
//! held), and then asks for a checkpoint every [`CHECKPOINT_INTERVAL`] and
//! when it drains; the offset it stores for the next commit is that of the
//! last durable checkpoint.
//!
//! With exactly-once the poll thread's transactions drive it instead: a
//! [`Seal`] holds new batches, checkpoints what was handed over and answers
//! once all of it is acknowledged; [`Unseal`] (the transaction committed)
//! hands the held batches over; [`Abort`] (the transaction aborted) sends
//! the actor back to its last committed offset, its state restored again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use tracing::{error, warn};

use super::batch::RecordBatch;
use super::offsets::{CompletionTracker, Work};
use super::series::SourceSeries;
use rdkafka::error::KafkaError;

use crate::decode::{DecodeError, DecodeOptions, DecodeReason, Decoded, Decoder, SkipReason};
use crate::row::{Op, Row};
use crate::sink::dead_letter::{DeadLetters, Origin};
use crate::stage::{BatchError, Checkpoint, Downstream, Output};
use crate::telemetry::{Health, Label};

/// How often a partition's state is checkpointed (when it changed): what a
/// crash makes vigil read again, at most, besides what was not committed.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// When in each interval a partition checkpoints: partitions assigned
/// together would otherwise capture together, and their shards would hold
/// rows back for all of the captures at once. Spread by the golden ratio,
/// so any number of partitions lands evenly.
fn checkpoint_phase(partition: i32) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    CHECKPOINT_INTERVAL.mul_f64((f64::from(partition) * GOLDEN).rem_euclid(1.0))
}

/// What partition actors ask of the poll thread, which owns the consumer.
pub(crate) enum Control {
    /// Everything before `next` is durable: store it for the next commit.
    Store { topic: Arc<str>, partition: i32, next: i64 },
    /// A restarted actor: read again from `offset`, in batches of `epoch`.
    Rewind { topic: Arc<str>, partition: i32, epoch: u64, offset: i64 },
}

/// Everything a partition actor is started with.
pub(crate) struct PartitionSetup {
    pub pipeline: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub decode: DecodeOptions,
    pub dead_letters: DeadLetters,
    pub downstream: Arc<dyn Downstream>,
    /// The pipeline's series, and the partition's own.
    pub series: Arc<SourceSeries>,
    pub records: metrics::Counter,
    pub bytes: metrics::Counter,
    pub in_flight: Arc<AtomicUsize>,
    /// To the poll thread: offsets to store, rewinds after a restart.
    pub control: mpsc::Sender<Control>,
    pub fatal: tokio::sync::mpsc::UnboundedSender<String>,
    pub health: Health,
    /// `rows.max_attempts`: tries of a record that panics the decoder.
    pub max_attempts: u32,
    /// `guarantee: exactly_once`: offsets are committed by transactions.
    pub exactly_once: bool,
}

pub(crate) struct PartitionActor {
    setup: PartitionSetup,
    decoder: Decoder,
    tracker: CompletionTracker,
    epoch: u64,
    /// The first offset this actor was given: where a rewind goes when
    /// nothing is durable yet.
    first_offset: Option<i64>,
    /// A rewind is due on restart (the actor stopped on a failure).
    failed: bool,
    /// A batch failed for good: no further batches, drains answer at once.
    fatal: bool,
    drain_waiters: Vec<mpsc::Sender<Option<i64>>>,
    /// Downstream keeps state: checkpoints, and a restore at start.
    stateful: bool,
    /// The state is being restored: batches wait in `held`.
    restoring: bool,
    /// Exactly-once: a transaction is being committed; batches wait in
    /// `held` too.
    sealed: bool,
    held: Vec<RecordBatch>,
    /// Exactly-once: the offset the last committed transaction holds.
    committed: Option<i64>,
    /// The last offset of the batches handed downstream, and of those the
    /// last checkpoint holds.
    handed_through: Option<i64>,
    checkpointed_through: Option<i64>,
    /// Checkpoints captured, by sequence number, until they may be
    /// persisted (once everything before them is done).
    captured: HashMap<u64, Checkpoint>,
}

impl PartitionActor {
    pub fn new(setup: PartitionSetup) -> Self {
        let decoder = Decoder::new(setup.decode.clone(), &setup.topic);
        let stateful = setup.downstream.keeps_state();
        let commits_at = if stateful { Work::Checkpoint } else { Work::Batch };
        PartitionActor {
            setup,
            decoder,
            tracker: CompletionTracker::committing_at(commits_at),
            epoch: 0,
            first_offset: None,
            failed: false,
            fatal: false,
            drain_waiters: Vec::new(),
            stateful,
            restoring: false,
            sealed: false,
            held: Vec::new(),
            committed: None,
            handed_through: None,
            checkpointed_through: None,
            captured: HashMap::new(),
        }
    }

    fn decode_batch(&mut self, batch: &RecordBatch) -> DecodedBatch {
        let mut out = DecodedBatch::default();
        batch.decode_each(&mut self.decoder, self.setup.max_attempts, |record, decoded| match decoded {
            Ok(Decoded::Row(row)) => out.rows.push(row),
            Ok(Decoded::Skipped(skip)) => out.skipped[skip.reason().index()] += 1,
            Err(e) => out.failed.push((record.offset, e)),
        });
        out
    }

    fn count(&self, batch: &RecordBatch, decoded: &DecodedBatch) {
        let series = &self.setup.series;
        self.setup.records.increment(batch.len() as u64);
        self.setup.bytes.increment(batch.record_bytes() as u64);
        let mut by_op = [0u64; Op::ALL.len()];
        for row in &decoded.rows {
            by_op[row.op.index()] += 1;
        }
        for (&op, &n) in Op::ALL.iter().zip(&by_op) {
            if n > 0 {
                series.rows.add(op, n);
            }
        }
        for (&reason, &n) in SkipReason::ALL.iter().zip(&decoded.skipped) {
            if n > 0 {
                series.skipped.add(reason, n);
            }
        }
        for (_, e) in &decoded.failed {
            series.decode_errors.inc(e.reason());
        }
    }

    fn work_done(&mut self, seq: u64, work: Work, epoch: u64, ctx: &mut Context<Self>) {
        if epoch != self.epoch {
            return;
        }
        if work == Work::Batch {
            self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(next) = self.tracker.complete(seq).filter(|_| !self.setup.exactly_once) {
            let _ = self.setup.control.send(Control::Store {
                topic: Arc::clone(&self.setup.topic),
                partition: self.setup.partition,
                next,
            });
        }
        self.persist_ready(ctx);
        self.answer_drains();
    }

    /// Asks downstream for a checkpoint of what was handed over since the
    /// last one: sent now, so that it follows those batches.
    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if !self.stateful || self.restoring || self.fatal {
            return;
        }
        let Some(through) = self.handed_through else { return };
        if self.checkpointed_through >= Some(through) {
            return;
        }
        self.checkpointed_through = Some(through);
        let seq = self.tracker.start_checkpoint(through);
        let epoch = self.epoch;
        let capture = self.setup.downstream.checkpoint(Arc::clone(&self.setup.topic), self.setup.partition, through);
        ctx.spawn(capture.into_actor(self).map(move |result, actor, ctx| {
            if epoch != actor.epoch {
                return;
            }
            match result {
                Ok(checkpoint) => {
                    actor.captured.insert(seq, checkpoint);
                    actor.persist_ready(ctx);
                }
                Err(reason) => actor.fail(reason, epoch, ctx),
            }
        }));
    }

    /// Persists the oldest checkpoint once everything before it is done
    /// (and it was captured).
    fn persist_ready(&mut self, ctx: &mut Context<Self>) {
        let Some(seq) = self.tracker.ready_checkpoint() else { return };
        let Some(checkpoint) = self.captured.remove(&seq) else { return };
        let epoch = self.epoch;
        let persist = self.setup.downstream.persist(Arc::clone(&self.setup.topic), self.setup.partition, checkpoint);
        ctx.spawn(persist.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(()) => actor.work_done(seq, Work::Checkpoint, epoch, ctx),
            Err(reason) => actor.fail(reason, epoch, ctx),
        }));
    }

    /// Restores the partition's state, then hands over the batches held
    /// meanwhile.
    fn restore(&mut self, ctx: &mut Context<Self>) {
        self.restoring = true;
        let epoch = self.epoch;
        let restore = self.setup.downstream.restore(Arc::clone(&self.setup.topic), self.setup.partition);
        ctx.spawn(restore.into_actor(self).map(move |result, actor, ctx| {
            if epoch != actor.epoch {
                return;
            }
            match result {
                Ok(()) => {
                    actor.restoring = false;
                    actor.release_held(ctx);
                }
                Err(reason) => actor.fail(reason, epoch, ctx),
            }
        }));
    }

    /// A batch, checkpoint or restore failed: a passing failure restarts
    /// the actor (which reads again from the last durable offset); a final
    /// one stops the pipeline.
    fn fail(&mut self, reason: BatchError, epoch: u64, ctx: &mut Context<Self>) {
        if reason.is_passing() {
            if epoch == self.epoch {
                warn!(pipeline = %self.setup.pipeline, topic = %self.setup.topic,
                    partition = self.setup.partition, %reason,
                    "batch failed; restarting the partition actor to read it again");
                self.failed = true;
                ctx.stop();
            }
            return;
        }
        // Never commit past a batch whose effects were lost: the pipeline
        // stops loudly and the batch is read again by whoever consumes
        // next. This partition takes no further batches.
        error!(pipeline = %self.setup.pipeline, topic = %self.setup.topic,
            partition = self.setup.partition, %reason, "pipeline failed");
        self.setup.health.failed(&self.setup.pipeline, reason.to_string());
        let _ = self.setup.fatal.send(format!("{}: {reason}", self.setup.pipeline));
        self.fatal = true;
        self.answer_drains();
    }

    /// Hands over the batches held, unless still restoring or sealed.
    fn release_held(&mut self, ctx: &mut Context<Self>) {
        if self.restoring || self.sealed {
            return;
        }
        for batch in std::mem::take(&mut self.held) {
            self.hand_over(batch, ctx);
        }
    }

    /// Where a restarted actor reads again from: the last durable offset
    /// (exactly-once: the last committed), else where it started.
    fn rewind_offset(&self) -> Option<i64> {
        let durable = if self.setup.exactly_once { self.committed } else { self.tracker.committable() };
        durable.or(self.first_offset)
    }

    fn answer_drains(&mut self) {
        if self.tracker.in_flight() == 0 || self.fatal {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(self.tracker.committable());
            }
        }
    }
}

/// Sends the record at `offset` of `batch` to the dead-letter topic, with
/// why; answers with the reason once Kafka has it.
async fn dead_letter(
    dead_letters: &DeadLetters,
    batch: &RecordBatch,
    offset: i64,
    error: DecodeError,
) -> Result<DecodeReason, KafkaError> {
    let record = batch.records().find(|r| r.offset == offset);
    let value = record.as_ref().and_then(|r| r.original_value());
    let key = record.and_then(|r| r.key);
    let origin = Origin { topic: &batch.topic, partition: batch.partition, offset };
    dead_letters.send(origin, key, value.as_deref(), &error).await.map(|()| error.reason())
}

#[derive(Default)]
struct DecodedBatch {
    rows: Vec<Row>,
    /// By [`SkipReason`].
    skipped: [u64; SkipReason::ALL.len()],
    failed: Vec<(i64, DecodeError)>,
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    /// Also after every restart, with a new context.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.stateful {
            self.restore(ctx);
            // Exactly-once checkpoints with every transaction instead.
            if !self.setup.exactly_once {
                ctx.run_later(checkpoint_phase(self.setup.partition), |_, ctx| {
                    ctx.run_interval(CHECKPOINT_INTERVAL, |actor, ctx| actor.checkpoint(ctx));
                });
            }
        }
    }
}

impl Supervised for PartitionActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.setup.series.restarts.increment(1);
        if !self.failed {
            return;
        }
        self.failed = false;
        let actor = format!("partition actor {}/{}", self.setup.topic, self.setup.partition);
        self.setup.health.restarted(&self.setup.pipeline, &actor);
        self.epoch += 1;
        self.decoder = Decoder::new(self.setup.decode.clone(), &self.setup.topic);
        // Batches in flight were cancelled with the old context; batches
        // still queued for the old epoch are dropped as they arrive.
        let abandoned = self.tracker.batches_in_flight() + self.held.len();
        self.setup.in_flight.fetch_sub(abandoned, Ordering::SeqCst);
        // Exactly-once: what an aborted transaction held is undone.
        let rewind = self.rewind_offset();
        self.tracker.rewind(rewind);
        self.held.clear();
        self.sealed = false;
        self.captured.clear();
        (self.handed_through, self.checkpointed_through) = (None, None);
        if let Some(offset) = rewind {
            let _ = self.setup.control.send(Control::Rewind {
                topic: Arc::clone(&self.setup.topic),
                partition: self.setup.partition,
                epoch: self.epoch,
                offset,
            });
        }
    }
}

/// A batch of records to decode.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Batch(pub RecordBatch);

/// Finish what is in flight, then reply with the offset to commit.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain {
    pub reply: mpsc::Sender<Option<i64>>,
    /// Checkpoint what was handed over first (not when the partition was
    /// lost to another process, whose state it now is).
    pub checkpoint: bool,
}

impl Handler<Batch> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Batch(batch): Batch, ctx: &mut Context<Self>) {
        if batch.epoch != self.epoch || self.fatal {
            // Read before a rewind: it will be read again (or, after a
            // fatal error, by the partition's next owner).
            self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        // Where a rewind goes while nothing is durable: the first record
        // the actor was given, held or handed over.
        if let Some(first) = batch.first_offset() {
            self.first_offset.get_or_insert(first);
        }
        if self.restoring || self.sealed {
            self.held.push(batch);
            return;
        }
        self.hand_over(batch, ctx);
    }
}

/// Exactly-once, before a commit: hold new batches, checkpoint what was
/// handed over, and answer with the next offset to read once all of it is
/// acknowledged.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Seal {
    pub reply: mpsc::Sender<Option<i64>>,
}

/// Exactly-once: the transaction committed (`committed`: this partition's
/// offset in it, if it had one); hand over the held batches.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unseal {
    pub committed: Option<i64>,
}

/// Exactly-once: the transaction aborted; read again from the last
/// committed offset (`committed`, or where the actor started), the state
/// restored as that commit left it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abort {
    pub committed: Option<i64>,
}

impl Handler<Seal> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Seal { reply }: Seal, ctx: &mut Context<Self>) {
        self.sealed = true;
        self.checkpoint(ctx);
        self.drain_waiters.push(reply);
        self.answer_drains();
    }
}

impl Handler<Unseal> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Unseal { committed }: Unseal, ctx: &mut Context<Self>) {
        self.committed = committed.or(self.committed);
        self.sealed = false;
        self.release_held(ctx);
    }
}

impl Handler<Abort> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Abort { committed }: Abort, ctx: &mut Context<Self>) {
        self.committed = committed;
        warn!(pipeline = %self.setup.pipeline, topic = %self.setup.topic, partition = self.setup.partition,
            offset = ?self.rewind_offset(), "transaction aborted: reading again from the last commit");
        self.failed = true;
        ctx.stop();
    }
}

impl PartitionActor {
    /// Decodes a batch, hands its rows downstream and dead-letters what
    /// could not be read or judged; the batch is done once all of that is
    /// durable.
    fn hand_over(&mut self, batch: RecordBatch, ctx: &mut Context<Self>) {
        let Some(last_offset) = batch.last_offset() else {
            self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let started = Instant::now();
        let decoded = self.decode_batch(&batch);
        self.count(&batch, &decoded);
        let seq = self.tracker.start(last_offset);
        self.handed_through = Some(last_offset);
        let epoch = self.epoch;
        let dead_letters = self.setup.dead_letters.clone();
        let series = Arc::clone(&self.setup.series);
        let DecodedBatch { rows, failed, .. } = decoded;
        // Handed downstream now, in the handler: batches of a partition must
        // reach the detectors in offset order, and futures spawned on an
        // actor's context are not polled in the order they were spawned.
        let detected = self.setup.downstream.process(Arc::clone(&self.setup.topic), self.setup.partition, rows);
        let work = async move {
            let undecoded = failed.into_iter().map(|(offset, error)| dead_letter(&dead_letters, &batch, offset, error));
            let (mut letters, detected) = futures::join!(join_all(undecoded), detected);
            // Rows the detectors could not get past follow, once known.
            let unjudged = detected?.into_iter().map(|p| dead_letter(&dead_letters, &batch, p.offset, p.into()));
            letters.extend(join_all(unjudged).await);
            for result in letters {
                match result {
                    Ok(reason) => series.dead_letters.inc(reason),
                    Err(error) => {
                        let topic = dead_letters.topic().to_owned();
                        return Err(BatchError::NotDelivered { what: Output::DeadLetter, topic, error });
                    }
                }
            }
            Ok(())
        };
        ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(()) => {
                actor.setup.series.batch_seconds.get().record(started.elapsed().as_secs_f64());
                actor.work_done(seq, Work::Batch, epoch, ctx);
            }
            Err(reason) => actor.fail(reason, epoch, ctx),
        }));
    }
}

impl Handler<Drain> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Drain { reply, checkpoint }: Drain, ctx: &mut Context<Self>) {
        // What was handed over is checkpointed before the partition goes,
        // so its next owner starts from it.
        if checkpoint {
            self.checkpoint(ctx);
        } else if self.setup.exactly_once {
            // Lost: what is in flight finishes into the transaction about
            // to be aborted, so none of it can reach the next one.
            self.stateful = false;
        } else {
            // Nothing more is written for it: what is in flight is
            // abandoned, and its next owner reads it again.
            self.stateful = false;
            self.captured.clear();
            self.tracker.abandon_in_flight();
        }
        self.drain_waiters.push(reply);
        self.answer_drains();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_of_any_number_of_partitions_are_spread_over_the_interval() {
        for count in 1..=64 {
            let mut phases: Vec<Duration> = (0..count).map(checkpoint_phase).collect();
            phases.sort();
            assert!(phases.iter().all(|phase| *phase < CHECKPOINT_INTERVAL));
            // Three-gap theorem: no two of n points closer than 1/(n·φ²).
            let closest = phases.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(CHECKPOINT_INTERVAL);
            assert!(closest >= CHECKPOINT_INTERVAL.mul_f64(0.38 / f64::from(count)), "{count} partitions: {closest:?}");
        }
    }
}
