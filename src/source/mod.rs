//! The Kafka source of a streaming pipeline: one consumer in the pipeline's
//! group, a poll thread, and one supervised partition actor per assigned
//! partition, spread over the worker arbiters so decoding uses every core.
//!
//! Layout: `consumer.rs` (the consumer's context: rebalances, errors,
//! statistics), `poll.rs` (the poll thread: batching, dispatch,
//! pause/resume, commits), `transaction.rs` (exactly-once: the
//! transactions offsets are committed in), `partition.rs` (the actor that decodes a
//! partition's batches, dead-letters what it cannot read and hands rows
//! downstream), `batch.rs` and `records.rs` (records as the poll thread
//! reads and copies them), `offsets.rs` (the offset after the last durable
//! batch), `series.rs` (its metrics).
//!
//! Offsets: a record's offset is committed only once its effects (alerts,
//! dead letters) are durable, from the poll thread alone, so no commit can
//! overtake another. What happens to rows is the [`Downstream`]'s affair
//! (see [`crate::stage`]); the source never imports the detectors.

pub mod batch;
mod consumer;
pub mod offsets;
mod partition;
mod poll;
pub mod records;
mod series;
mod transaction;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use actix::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::config::Pipeline;
use crate::decode::DecodeOptions;
use crate::kafka::log::ErrorLog;
use crate::kafka::{consumer_config, create, Client, CreateError};
use crate::sink::dead_letter::DeadLetters;
use crate::stage::Downstream;
use crate::telemetry::Health;
use batch::BufferPool;
use consumer::{SourceContext, State};
use records::RecordsQueue;
pub use transaction::{TransactionError, Transactions};

/// A running source. Dropping it does not stop it: call [`Source::stop`].
pub struct Source {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating the consumer: {0}")]
    Consumer(#[from] CreateError),
    #[error("librdkafka gave the consumer no queue")]
    NoQueue,
    #[error("subscribing: {0}")]
    Subscribe(KafkaError),
    #[error("starting the poll thread: {0}")]
    Thread(std::io::Error),
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
    /// Exactly-once: the transactions that commit the offsets.
    pub transactions: Option<Transactions>,
}

impl Source {
    /// Subscribes and starts the poll thread.
    pub fn start(mut parts: SourceParts) -> Result<Source, StartError> {
        let pipeline = Arc::clone(&parts.pipeline);
        let transactions = parts.transactions.take().map(Mutex::new);
        let shutdown = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = mpsc::channel();
        let context = SourceContext {
            name: pipeline.name.clone(),
            errors: ErrorLog::new(&pipeline.name, Client::Consumer),
            state: Mutex::new(State::default()),
            parts,
            series: Arc::new(series::SourceSeries::register(&pipeline.name)),
            control: control_tx,
            arenas: Arc::new(BufferPool::default()),
            transactions,
        };
        let consumer: BaseConsumer<SourceContext> = create(&consumer_config(&pipeline), context)?;
        let records = RecordsQueue::new(&consumer).map(Arc::new).ok_or(StartError::NoQueue)?;
        if let Ok(mut state) = consumer.context().state.lock() {
            state.records = Some(Arc::clone(&records));
        }
        let topics: Vec<&str> = pipeline.source.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            poll::release_records(&consumer);
            return Err(StartError::Subscribe(e));
        }
        let consumer = Arc::new(consumer);
        let flag = Arc::clone(&shutdown);
        let thread = std::thread::Builder::new()
            .name(format!("poll-{}", pipeline.name))
            .spawn(move || poll::poll_loop(consumer, records, flag, control_rx))
            .map_err(StartError::Thread)?;
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
