//! The actor of one assigned partition: decodes its batches, dead-letters
//! what cannot be decoded, hands rows downstream, and stores the offset
//! after the last batch whose effects are durable.
//!
//! The actor ends when its partition leaves: the source drains it and
//! drops its address, and a supervisor restarts only an actor someone
//! still addresses.
//!
//! Supervised: a panic while decoding (a bug, never bad input: that is a
//! dead letter) stops the actor, and its supervisor restarts it with a new
//! epoch and a rewind to the last durable offset, so nothing is skipped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use actix::prelude::*;
use futures::future::join_all;
use tracing::{error, warn};

use super::batch::RecordBatch;
use super::offsets::CompletionTracker;
use super::{BatchError, Control, Downstream};
use crate::dead_letter::{DeadLetters, Origin};
use crate::decode::{DecodeError, DecodeOptions, Decoded, Decoder};
use crate::metrics::{names, Health};
use crate::row::Row;

/// Everything a partition actor is started with.
pub(crate) struct PartitionSetup {
    pub pipeline: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub decode: DecodeOptions,
    pub dead_letters: DeadLetters,
    pub downstream: Arc<dyn Downstream>,
    pub in_flight: Arc<AtomicUsize>,
    /// To the poll thread: offsets to store, rewinds after a restart.
    pub control: mpsc::Sender<Control>,
    pub fatal: tokio::sync::mpsc::UnboundedSender<String>,
    pub health: Health,
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
    labels: Labels,
}

/// Metric labels of this partition, built once.
struct Labels {
    pipeline: String,
    topic: String,
    partition: String,
}

impl PartitionActor {
    pub fn new(setup: PartitionSetup) -> Self {
        let decoder = Decoder::new(setup.decode.clone(), &setup.topic);
        let labels = Labels {
            pipeline: setup.pipeline.to_string(),
            topic: setup.topic.to_string(),
            partition: setup.partition.to_string(),
        };
        PartitionActor {
            setup,
            decoder,
            tracker: CompletionTracker::default(),
            epoch: 0,
            first_offset: None,
            failed: false,
            fatal: false,
            drain_waiters: Vec::new(),
            labels,
        }
    }

    /// Decodes a batch; a panic in the decoder is caught and reported.
    fn decode_batch(&mut self, batch: &RecordBatch) -> Result<DecodedBatch, String> {
        let decoder = &mut self.decoder;
        catch_unwind(AssertUnwindSafe(|| {
            let mut out = DecodedBatch::default();
            batch.decode_each(decoder, |record, decoded| match decoded {
                Ok(Decoded::Row(row)) => out.rows.push(row),
                Ok(Decoded::Skipped(skip)) => *out.skipped.entry(skip.reason()).or_default() += 1,
                Err(e) => out.failed.push((record.offset, e)),
            });
            out
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    }

    fn count(&self, batch: &RecordBatch, decoded: &DecodedBatch) {
        let l = &self.labels;
        metrics::counter!(names::RECORDS, "pipeline" => l.pipeline.clone(), "topic" => l.topic.clone(), "partition" => l.partition.clone())
            .increment(batch.len() as u64);
        metrics::counter!(names::RECORD_BYTES, "pipeline" => l.pipeline.clone(), "topic" => l.topic.clone(), "partition" => l.partition.clone())
            .increment(batch.record_bytes() as u64);
        let mut by_op = [0u64; 4];
        for row in &decoded.rows {
            by_op[row.op as usize] += 1;
        }
        for (op, n) in [("c", by_op[0]), ("u", by_op[1]), ("d", by_op[2]), ("r", by_op[3])] {
            if n > 0 {
                metrics::counter!(names::ROWS, "pipeline" => l.pipeline.clone(), "op" => op).increment(n);
            }
        }
        for (reason, n) in &decoded.skipped {
            metrics::counter!(names::SKIPPED, "pipeline" => l.pipeline.clone(), "reason" => *reason).increment(*n);
        }
        for (_, e) in &decoded.failed {
            metrics::counter!(names::DECODE_ERRORS, "pipeline" => l.pipeline.clone(), "reason" => e.reason())
                .increment(1);
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

#[derive(Default)]
struct DecodedBatch {
    rows: Vec<Row>,
    skipped: std::collections::BTreeMap<&'static str, u64>,
    failed: Vec<(i64, DecodeError)>,
}

impl Actor for PartitionActor {
    type Context = Context<Self>;
}

impl Supervised for PartitionActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        metrics::counter!(names::ACTOR_RESTARTS, "pipeline" => self.labels.pipeline.clone()).increment(1);
        if !self.failed {
            return;
        }
        self.failed = false;
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
        let decoded = match self.decode_batch(&batch) {
            Ok(decoded) => decoded,
            Err(panic) => {
                error!(pipeline = %self.labels.pipeline, topic = %self.labels.topic, partition = self.setup.partition,
                    first_offset = ?batch.first_offset(), panic = %panic,
                    "decoder panicked; restarting the partition actor and reading the batch again");
                self.failed = true;
                self.setup.in_flight.fetch_sub(1, Ordering::SeqCst);
                ctx.stop();
                return;
            }
        };
        self.count(&batch, &decoded);
        let seq = self.tracker.start(last_offset);
        let epoch = self.epoch;
        let dead_letters = self.setup.dead_letters.clone();
        let pipeline = self.labels.pipeline.clone();
        let DecodedBatch { rows, failed, .. } = decoded;
        // Handed downstream now, in the handler: batches of a partition must
        // reach the detectors in offset order, and futures spawned on an
        // actor's context are not polled in the order they were spawned.
        let detected = self.setup.downstream.process(Arc::clone(&self.setup.topic), self.setup.partition, rows);
        let work = async move {
            let letters = failed.iter().map(|(offset, error)| {
                let record = batch.records().find(|r| r.offset == *offset);
                let value = record.as_ref().and_then(|r| r.original_value());
                let key = record.and_then(|r| r.key);
                let dead_letters = &dead_letters;
                let origin = Origin { topic: &batch.topic, partition: batch.partition, offset: *offset };
                async move { dead_letters.send(origin, key, value.as_deref(), error).await.map(|()| error.reason()) }
            });
            let (letters, detected) = futures::join!(join_all(letters), detected);
            for result in letters {
                match result {
                    Ok(reason) => {
                        metrics::counter!(names::DEAD_LETTERS, "pipeline" => pipeline.clone(), "reason" => reason)
                            .increment(1)
                    }
                    Err(e) => return Err(BatchError::Fatal(format!("dead letter not delivered: {e}"))),
                }
            }
            detected
        };
        ctx.spawn(work.into_actor(self).map(move |result, actor, ctx| {
            match result {
                Ok(()) => {
                    metrics::histogram!(names::RECORD_BATCH_SECONDS, "pipeline" => actor.labels.pipeline.clone())
                        .record(started.elapsed().as_secs_f64());
                    actor.batch_done(seq, epoch);
                }
                Err(BatchError::Retry(reason)) if epoch == actor.epoch => {
                    warn!(pipeline = %actor.labels.pipeline, topic = %actor.labels.topic,
                        partition = actor.setup.partition, %reason,
                        "batch failed; restarting the partition actor to read it again");
                    actor.failed = true;
                    ctx.stop();
                }
                Err(BatchError::Retry(_)) => {}
                Err(BatchError::Fatal(reason)) => {
                    // Never commit past a batch whose effects were lost:
                    // the pipeline stops loudly and the batch is read again
                    // by whoever consumes next. This partition takes no
                    // further batches.
                    error!(pipeline = %actor.labels.pipeline, topic = %actor.labels.topic,
                        partition = actor.setup.partition, %reason, "pipeline failed");
                    actor.setup.health.failed(&actor.labels.pipeline, reason.clone());
                    let _ = actor.setup.fatal.send(format!("{}: {reason}", actor.labels.pipeline));
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
