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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use actix::prelude::*;
use futures::future::join_all;
use tracing::{error, warn};

use super::batch::RecordBatch;
use super::offsets::CompletionTracker;
use super::series::SourceSeries;
use rdkafka::error::KafkaError;

use crate::decode::{DecodeError, DecodeOptions, DecodeReason, Decoded, Decoder, SkipReason};
use crate::row::{Op, Row};
use crate::sink::dead_letter::{DeadLetters, Origin};
use crate::stage::{BatchError, Downstream, Output};
use crate::telemetry::{Health, Label};

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
}

pub(crate) struct PartitionActor {
    setup: PartitionSetup,
    decoder: Decoder,
    tracker: CompletionTracker,
    epoch: u64,
    /// The first offset this actor was handed: where a rewind goes when
    /// nothing is durable yet.
    first_offset: Option<i64>,
    /// A rewind is due on restart (the actor stopped on a failure).
    failed: bool,
    /// A batch failed for good: no further batches, drains answer at once.
    fatal: bool,
    drain_waiters: Vec<mpsc::Sender<Option<i64>>>,
}

impl PartitionActor {
    pub fn new(setup: PartitionSetup) -> Self {
        let decoder = Decoder::new(setup.decode.clone(), &setup.topic);
        PartitionActor {
            setup,
            decoder,
            tracker: CompletionTracker::default(),
            epoch: 0,
            first_offset: None,
            failed: false,
            fatal: false,
            drain_waiters: Vec::new(),
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

    fn batch_done(&mut self, seq: u64, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(next) = self.tracker.complete(seq) {
            let _ = self.setup.control.send(Control::Store {
                topic: Arc::clone(&self.setup.topic),
                partition: self.setup.partition,
                next,
            });
        }
        self.answer_drains();
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
        self.setup.in_flight.fetch_sub(self.tracker.in_flight(), Ordering::SeqCst);
        self.tracker.abandon_in_flight();
        if let Some(offset) = self.tracker.committable().or(self.first_offset) {
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
        let Some(last_offset) = batch.last_offset() else {
            self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        self.first_offset.get_or_insert(batch.first_offset().unwrap_or(last_offset));
        let started = Instant::now();
        let decoded = self.decode_batch(&batch);
        self.count(&batch, &decoded);
        let seq = self.tracker.start(last_offset);
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
        ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| {
            match result {
                Ok(()) => {
                    actor.setup.series.batch_seconds.get().record(started.elapsed().as_secs_f64());
                    actor.batch_done(seq, epoch);
                }
                Err(reason) if reason.is_passing() && epoch == actor.epoch => {
                    warn!(pipeline = %actor.setup.pipeline, topic = %actor.setup.topic,
                        partition = actor.setup.partition, %reason,
                        "batch failed; restarting the partition actor to read it again");
                    actor.failed = true;
                    ctx.stop();
                }
                Err(reason) if reason.is_passing() => {}
                Err(reason) => {
                    // Never commit past a batch whose effects were lost:
                    // the pipeline stops loudly and the batch is read again
                    // by whoever consumes next. This partition takes no
                    // further batches.
                    error!(pipeline = %actor.setup.pipeline, topic = %actor.setup.topic,
                        partition = actor.setup.partition, %reason, "pipeline failed");
                    actor.setup.health.failed(&actor.setup.pipeline, reason.to_string());
                    let _ = actor.setup.fatal.send(format!("{}: {reason}", actor.setup.pipeline));
                    actor.fatal = true;
                    actor.answer_drains();
                }
            }
        }));
    }
}

impl Handler<Drain> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Drain { reply }: Drain, _ctx: &mut Context<Self>) {
        self.drain_waiters.push(reply);
        self.answer_drains();
    }
}
