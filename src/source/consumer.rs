//! The source's consumer context: what librdkafka calls back on the poll
//! thread. Rebalances: an assignment forwards the arriving partitions'
//! records to the records queue before librdkafka fetches any and starts a
//! supervised [`PartitionActor`] for each; a revocation drains the leaving
//! partitions' actors and commits their offsets before the partitions are
//! given up. Also errors (through the client's [`ErrorLog`]) and
//! statistics (consumer lag).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use metrics::Gauge;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance as Change};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::batch::{BufferPool, RecordBatch};
use super::partition::{Control, Drain, PartitionActor, PartitionSetup};
use super::records::RecordsQueue;
use super::series::{PartitionSeries, Rebalance, SourceSeries};
use super::transaction::{Assigned, Transactions};
use super::SourceParts;
use crate::kafka::commit_list;
use crate::kafka::log::ErrorLog;
use crate::stage::placement;

/// How long a revocation or shutdown waits for a partition to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A partition as the poll thread tracks it.
pub(super) struct PartitionSlot {
    pub topic: Arc<str>,
    pub actor: Addr<PartitionActor>,
    pub in_flight: Arc<AtomicUsize>,
    pub epoch: u64,
    pub paused: bool,
    pub pending: Option<RecordBatch>,
    /// Durable progress not committed yet: the next offset to read.
    pub uncommitted: Option<i64>,
    /// librdkafka has been told to stop fetching the partition.
    pub fetch_paused: bool,
    /// The first record dropped while paused (librdkafka still hands out
    /// what it fetched before the pause): the partition resumes from here.
    pub skipped_from: Option<i64>,
    /// Its `vigil_consumer_lag_records`, set from librdkafka's statistics.
    lag: Gauge,
}

#[derive(Default)]
pub(super) struct State {
    pub partitions: HashMap<(Arc<str>, i32), PartitionSlot>,
    /// Where assigned partitions' records go; set while the poll thread
    /// reads it.
    pub records: Option<Arc<RecordsQueue>>,
}

pub(crate) struct SourceContext {
    pub name: String,
    /// librdkafka's errors and the consumer's error events: said once,
    /// then counted (see [`crate::kafka::log`]).
    pub errors: ErrorLog,
    pub state: Mutex<State>,
    pub parts: SourceParts,
    pub series: Arc<SourceSeries>,
    pub control: mpsc::Sender<Control>,
    pub arenas: Arc<BufferPool>,
    /// Exactly-once: the transactions offsets are committed in.
    pub transactions: Option<Mutex<Transactions>>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let Ok(state) = self.state.lock() else { return };
        for (topic, t) in &statistics.topics {
            let topic: Arc<str> = Arc::from(topic.as_str());
            for (partition, p) in &t.partitions {
                if p.consumer_lag < 0 {
                    continue;
                }
                if let Some(slot) = state.partitions.get(&(Arc::clone(&topic), *partition)) {
                    slot.lag.set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Change<'_>) {
        match rebalance {
            Change::Assign(tpl) => self.forward_records(consumer, tpl),
            Change::Revoke(tpl) => {
                let leaving: Vec<(Arc<str>, i32)> =
                    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
                self.series.rebalanced(Rebalance::Revoke);
                // Lost (the session lapsed): another process owns them
                // already, so nothing is checkpointed or committed for them.
                let lost = consumer.assignment_lost();
                info!(pipeline = %self.name, partitions = ?partition_list(&leaving), lost, "partitions revoked: draining");
                self.retire(consumer, &leaving, lost);
            }
            Change::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Change<'_>) {
        match rebalance {
            Change::Assign(tpl) => {
                let arriving: Vec<(Arc<str>, i32)> =
                    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
                self.series.rebalanced(Rebalance::Assign);
                info!(pipeline = %self.name, partitions = ?partition_list(&arriving), "partitions assigned");
                // librdkafka keeps a partition paused across its revocation
                // and a later assignment; it arrives here as new, unpaused.
                if let Err(e) = consumer.resume(tpl) {
                    warn!(pipeline = %self.name, error = %e, "resuming the assigned partitions failed");
                }
                for (topic, partition) in arriving {
                    self.adopt(topic, partition);
                }
                self.parts.health.healthy(&self.name);
                self.report_assigned();
            }
            Change::Revoke(_) => self.report_assigned(),
            Change::Error(e) => warn!(pipeline = %self.name, error = %e, "rebalance error"),
        }
    }
}

fn partition_list(parts: &[(Arc<str>, i32)]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

impl SourceContext {
    /// Sends arriving partitions' records to the records queue, before
    /// librdkafka starts fetching them.
    pub(super) fn forward_records(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let records = self.state.lock().ok().and_then(|state| state.records.clone());
        let Some(records) = records else { return };
        for e in tpl.elements() {
            if !records.forward(consumer, e.topic(), e.partition()) {
                warn!(pipeline = %self.name, topic = e.topic(), partition = e.partition(),
                    "no queue for the partition; its records are read one at a time");
            }
        }
    }

    /// Starts a supervised actor for a newly assigned partition, once
    /// downstream is ready for it.
    fn adopt(&self, topic: Arc<str>, partition: i32) {
        self.parts.downstream.assigned(&topic, partition);
        let arbiters = &self.parts.arbiters;
        let arbiter = &arbiters[placement(&topic, partition, arbiters.len())];
        let in_flight = Arc::new(AtomicUsize::new(0));
        let PartitionSeries { records, bytes, lag } = PartitionSeries::register(&self.name, &topic, partition);
        let setup = PartitionSetup {
            pipeline: Arc::from(self.name.as_str()),
            topic: Arc::clone(&topic),
            partition,
            decode: self.parts.decode.clone(),
            dead_letters: self.parts.dead_letters.clone(),
            downstream: Arc::clone(&self.parts.downstream),
            series: Arc::clone(&self.series),
            records,
            bytes,
            in_flight: Arc::clone(&in_flight),
            control: self.control.clone(),
            fatal: self.parts.fatal.clone(),
            health: self.parts.health.clone(),
            max_attempts: self.parts.pipeline.rows.max_attempts,
            exactly_once: self.transactions.is_some(),
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
                    lag,
                },
            );
        }
    }

    /// Drains the actors of leaving partitions, commits what they finished,
    /// and stops them. Records read but not yet handed over are dropped:
    /// they lie past the committed offset, so the next owner reads them.
    /// With `lost`, the partitions already belong to another process:
    /// their state is neither checkpointed nor their offsets committed.
    pub(super) fn retire(&self, consumer: &BaseConsumer<Self>, leaving: &[(Arc<str>, i32)], lost: bool) {
        let slots: Vec<((Arc<str>, i32), PartitionSlot)> = match self.state.lock() {
            Ok(mut state) => {
                leaving.iter().filter_map(|k| state.partitions.remove_entry(&(Arc::clone(&k.0), k.1))).collect()
            }
            Err(_) => return,
        };
        let mut replies = Vec::new();
        for ((topic, partition), slot) in &slots {
            let (tx, rx) = mpsc::channel();
            slot.actor.do_send(Drain { reply: tx, checkpoint: !lost });
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
        if let Some(transactions) = &self.transactions {
            let Ok(mut transactions) = transactions.lock() else { return };
            let staying = self.assigned();
            let done = if lost {
                transactions.lost(&staying, leaving).map(|()| false)
            } else {
                transactions.commit(consumer, &staying, commit)
            };
            transactions.forget(leaving);
            match done {
                Ok(true) => info!(pipeline = %self.name, "drained; the transaction committed"),
                Ok(false) => {
                    warn!(pipeline = %self.name, "the transaction aborted: the next owners read again from the last commit")
                }
                Err(e) => self.failed(&e.to_string()),
            }
        } else if commit.count() > 0 && !lost {
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

    /// The pipeline cannot go on: said, and the process stops.
    pub(super) fn failed(&self, reason: &str) {
        error!(pipeline = %self.name, reason, "pipeline failed");
        self.parts.health.failed(&self.name, reason.to_owned());
        let _ = self.parts.fatal.send(format!("{}: {reason}", self.name));
    }

    /// The partitions assigned and their actors.
    pub(super) fn assigned(&self) -> Vec<Assigned> {
        match self.state.lock() {
            Ok(state) => state.partitions.iter().map(|(key, slot)| (key.clone(), slot.actor.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn report_assigned(&self) {
        if let Ok(state) = self.state.lock() {
            self.series.assigned.set(state.partitions.len() as f64);
        }
    }
}
