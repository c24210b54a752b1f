//! Exactly-once commits (`guarantee: exactly_once`): one transactional
//! producer per pipeline and process writes the alerts, dead letters and
//! changelog records, and the source offsets join its transaction
//! (KIP-447: the consumer's group metadata fences a process that lost its
//! partitions, so one producer serves them all).
//!
//! The poll thread commits every `sink.transaction_interval`: it seals
//! every partition actor (each holds new batches, checkpoints what it
//! handed over, and answers once all of it is acknowledged, with the next
//! offset to read), sends those offsets into the transaction, commits it,
//! begins the next, and unseals them. So a transaction holds the offsets of
//! exactly the records whose effects it holds. librdkafka refuses records
//! from the moment a commit begins, which sealing also guarantees.
//!
//! A failure is handled as librdkafka documents it: one that requires an
//! abort aborts, and every partition of the process goes back to its last
//! committed offset with its users' state restored from the changelog
//! (`read_committed`); a fatal one (the producer fenced by another process
//! of the same instance name) stops the pipeline loudly. A commit waits as
//! long as it takes: one that times out is tried again, never taken for an
//! abort.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix::Addr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaError};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::partition::{Abort, PartitionActor, Seal, Unseal};
use crate::kafka::commit_list;
use crate::kafka::DurableProducer;

/// A partition assigned to this process, and its actor.
pub(super) type Assigned = ((Arc<str>, i32), Addr<PartitionActor>);

/// How long one call into the transaction API may block before it is
/// tried again (a timeout is retriable: the call resumes where it was).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction of a pipeline's process, driven by its poll thread.
pub struct Transactions {
    pipeline: String,
    producer: DurableProducer,
    interval: Duration,
    /// How long sealed partitions may take to have their work acknowledged.
    seal_timeout: Duration,
    last_commit: Instant,
    /// The last committed offset of each partition, for the rewind after
    /// an abort.
    committed: HashMap<(Arc<str>, i32), i64>,
    series: TransactionSeries,
}

/// Why the transactions of a pipeline cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The producer cannot be used again: fenced by another process with
    /// the same transactional id, or another fatal error.
    #[error("the transactional producer failed for good: {0}{hint}", hint = crate::stage::fix(.0))]
    Fatal(KafkaError),
    /// A partition's work was not acknowledged within the delivery
    /// timeout: neither committing nor aborting is safe while its records
    /// may still be sent.
    #[error("partition {0} did not finish its work within sink.delivery_timeout")]
    Unsealed(String),
}

/// What a failed call calls for.
enum Failure {
    /// Try the same call again.
    Retry,
    /// Abort the transaction and rewind.
    Abort,
    Fatal,
}

fn classify(error: &KafkaError) -> Failure {
    match error {
        KafkaError::Transaction(e) => classify_rd(e),
        _ => Failure::Abort,
    }
}

fn classify_rd(e: &RDKafkaError) -> Failure {
    if e.is_fatal() {
        Failure::Fatal
    } else if e.txn_requires_abort() {
        Failure::Abort
    } else if e.is_retriable() {
        Failure::Retry
    } else {
        Failure::Abort
    }
}

/// Calls `call` until it succeeds or fails for a reason other than a
/// passing one.
fn persist<T>(what: &str, pipeline: &str, mut call: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(e) if matches!(classify(&e), Failure::Retry) => {
                warn!(pipeline, error = %e, "{what} did not finish yet; trying again");
            }
            Err(e) => return Err(e),
        }
    }
}

impl Transactions {
    /// Fences whatever the previous process of this transactional id left
    /// open (aborting it) and begins the first transaction.
    pub fn start(
        producer: DurableProducer,
        pipeline: &str,
        interval: Duration,
        seal_timeout: Duration,
    ) -> Result<Self, TransactionError> {
        persist("initialising transactions", pipeline, || producer.init_transactions(CALL_TIMEOUT))
            .map_err(TransactionError::Fatal)?;
        producer.begin_transaction().map_err(TransactionError::Fatal)?;
        info!(pipeline, "transactions initialised");
        Ok(Transactions {
            pipeline: pipeline.to_owned(),
            producer,
            interval,
            seal_timeout,
            last_commit: Instant::now(),
            committed: HashMap::new(),
            series: TransactionSeries::register(pipeline),
        })
    }

    /// Commits when the interval has passed, over the partitions
    /// `assigned` gives.
    pub(super) fn tick<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: impl FnOnce() -> Vec<Assigned>,
    ) -> Result<(), TransactionError> {
        if self.last_commit.elapsed() < self.interval {
            return Ok(());
        }
        self.commit(consumer, &assigned(), TopicPartitionList::new()).map(|_| ())
    }

    /// Seals every assigned partition, commits the transaction with their
    /// offsets and `drained`'s (partitions already drained, leaving), and
    /// unseals them; on an abort, rewinds them all. Whether it committed.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[Assigned],
        mut drained: TopicPartitionList,
    ) -> Result<bool, TransactionError> {
        self.last_commit = Instant::now();
        let started = Instant::now();
        let offsets = self.seal(partitions)?;
        for (topic, partition, next) in &offsets {
            let _ = drained.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        match self.commit_offsets(consumer, &drained) {
            Ok(()) => {
                for e in drained.elements() {
                    if let Offset::Offset(next) = e.offset() {
                        self.committed.insert((Arc::from(e.topic()), e.partition()), next);
                    }
                }
                self.series.committed(started.elapsed());
                if drained.count() > 0 {
                    debug!(pipeline = %self.pipeline, offsets = ?commit_list(&drained), "transaction committed");
                }
                self.unseal(partitions);
                Ok(true)
            }
            Err(e) => match classify(&e) {
                Failure::Fatal => Err(TransactionError::Fatal(e)),
                _ => {
                    self.abort(partitions, &e.to_string());
                    Ok(false)
                }
            },
        }
    }

    /// Asks every partition actor to seal; their next offsets (where they
    /// moved since the last commit) once all answered.
    fn seal(&self, partitions: &[Assigned]) -> Result<Vec<(Arc<str>, i32, i64)>, TransactionError> {
        let waiting: Vec<_> = partitions
            .iter()
            .map(|((topic, partition), actor)| {
                let (reply, answer) = mpsc::channel();
                actor.do_send(Seal { reply });
                (Arc::clone(topic), *partition, answer)
            })
            .collect();
        let deadline = Instant::now() + self.seal_timeout;
        let mut offsets = Vec::new();
        for (topic, partition, answer) in waiting {
            match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(next)) if self.committed.get(&(Arc::clone(&topic), partition)) != Some(&next) => {
                    offsets.push((topic, partition, next));
                }
                Ok(_) => {}
                Err(_) => return Err(TransactionError::Unsealed(format!("{topic}/{partition}"))),
            }
        }
        Ok(offsets)
    }

    fn commit_offsets<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), KafkaError> {
        let pipeline = &self.pipeline;
        if offsets.count() > 0 {
            // None only outside a group: no offsets to send then.
            let group =
                consumer.group_metadata().ok_or(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::State))?;
            persist("sending offsets to the transaction", pipeline, || {
                self.producer.send_offsets_to_transaction(offsets, &group, CALL_TIMEOUT)
            })?;
        }
        persist("committing the transaction", pipeline, || self.producer.commit_transaction(CALL_TIMEOUT))?;
        self.producer.begin_transaction()
    }

    fn unseal(&self, partitions: &[Assigned]) {
        for (key, actor) in partitions {
            actor.do_send(Unseal { committed: self.committed.get(key).copied() });
        }
    }

    /// Aborts the transaction and sends every partition back to its last
    /// committed offset, its state restored from the changelog.
    fn abort(&mut self, partitions: &[Assigned], reason: &str) {
        self.series.aborted();
        warn!(pipeline = %self.pipeline, reason, "aborting the transaction: every partition goes back to its last commit");
        let aborted =
            persist("aborting the transaction", &self.pipeline, || self.producer.abort_transaction(CALL_TIMEOUT))
                .and_then(|()| self.producer.begin_transaction());
        if let Err(e) = aborted {
            error!(pipeline = %self.pipeline, error = %e, "the transaction could not be aborted");
        }
        for (key, actor) in partitions {
            actor.do_send(Abort { committed: self.committed.get(key).copied() });
        }
    }

    /// The partitions were lost to another process (and drained): what
    /// the transaction holds for them may not commit, so it is aborted,
    /// once the others are sealed and nothing more can be sent into it.
    pub(super) fn lost(&mut self, partitions: &[Assigned], lost: &[(Arc<str>, i32)]) -> Result<(), TransactionError> {
        for key in lost {
            self.committed.remove(key);
        }
        self.seal(partitions)?;
        self.abort(partitions, "partitions were lost to another process");
        Ok(())
    }

    /// A partition left after a commit: its offset is no longer ours.
    pub(super) fn forget(&mut self, partitions: &[(Arc<str>, i32)]) {
        for key in partitions {
            self.committed.remove(key);
        }
    }
}

/// Transactions committed and aborted, and how long a commit takes.
struct TransactionSeries {
    committed: metrics::Counter,
    aborted: metrics::Counter,
    commit_seconds: metrics::Histogram,
}

impl TransactionSeries {
    fn register(pipeline: &str) -> Self {
        use crate::telemetry::names;
        let label = pipeline.to_owned();
        TransactionSeries {
            committed: crate::telemetry::zeroed_counter(names::TRANSACTIONS_COMMITTED, pipeline),
            aborted: crate::telemetry::zeroed_counter(names::TRANSACTIONS_ABORTED, pipeline),
            commit_seconds: metrics::histogram!(names::TRANSACTION_COMMIT_SECONDS, "pipeline" => label),
        }
    }

    fn committed(&self, took: Duration) {
        self.committed.increment(1);
        self.commit_seconds.record(took.as_secs_f64());
    }

    fn aborted(&self) {
        self.aborted.increment(1);
    }
}
