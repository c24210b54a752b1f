//! The contract between the stages of a streaming pipeline: what the
//! source hands downstream ([`Downstream`]), how downstream answers
//! ([`BatchError`]), and which worker a partition's work runs on
//! ([`placement`]).
//!
//! It sits below both sides so that neither imports the other: the source
//! knows a `Downstream`, the detectors implement one.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;

use crate::row::Row;

/// What a pipeline writes to Kafka for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Alert,
    DeadLetter,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Output::Alert => "alert",
            Output::DeadLetter => "dead letter",
        })
    }
}

/// Why a batch's effects could not be made durable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Passing: the next stage is gone for now (its worker stopped). The
    /// partition actor is restarted by its supervisor and reads the batch
    /// again from the last durable offset.
    #[error("{stage} unavailable: {reason}")]
    Unavailable { stage: &'static str, reason: actix::MailboxError },
    /// Final: a delivery failed after all of librdkafka's retries. The
    /// pipeline stops without committing past the batch.
    #[error("{what} not delivered: {error}")]
    NotDelivered { what: Output, error: KafkaError },
}

impl BatchError {
    /// Whether reading the batch again may succeed (else the pipeline
    /// stops).
    pub fn is_passing(&self) -> bool {
        match self {
            BatchError::Unavailable { .. } => true,
            BatchError::NotDelivered { .. } => false,
        }
    }
}

/// What happens to decoded rows: the detectors, in a full pipeline.
pub trait Downstream: Send + Sync + 'static {
    /// Processes one batch of a partition's rows, in order. The future
    /// resolves once every effect of the rows is durable.
    fn process(&self, topic: Arc<str>, partition: i32, rows: Vec<Row>) -> BoxFuture<'static, Result<(), BatchError>>;

    /// The partition came to this process; called before any of its
    /// batches, so state kept for it can be made ready.
    fn assigned(&self, _topic: &str, _partition: i32) {}

    /// The partition left this process, after its last batch: state kept
    /// for it may go.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed_and_whether_to_read_again() {
        let gone = BatchError::Unavailable { stage: "detector shard", reason: actix::MailboxError::Closed };
        assert!(gone.is_passing());
        assert_eq!(gone.to_string(), "detector shard unavailable: Mailbox has closed");
        let lost = BatchError::NotDelivered {
            what: Output::DeadLetter,
            error: KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::MessageTimedOut),
        };
        assert!(!lost.is_passing());
        assert!(lost.to_string().starts_with("dead letter not delivered: "), "{lost}");
    }
}
