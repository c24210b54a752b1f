//! The contract between the stages of a streaming pipeline: what the
//! source hands downstream ([`Downstream`]), how downstream answers
//! ([`BatchError`], and [`Panicked`] for a row it could not get past),
//! and which worker a partition's work runs on ([`placement`]).
//!
//! It sits below both sides so that neither imports the other: the source
//! knows a `Downstream`, the detectors implement one.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::row::Row;

/// What a pipeline writes to Kafka for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Alert,
    DeadLetter,
    /// A record of a user's state, to the changelog.
    StateRecord,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Output::Alert => "alert",
            Output::DeadLetter => "dead letter",
            Output::StateRecord => "state record",
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
    #[error("{what} not delivered to topic {topic}: {error}{}", fix(.error))]
    NotDelivered { what: Output, topic: String, error: KafkaError },
    /// Final: a partition's saved state could not be read back; nothing
    /// is processed rather than judged on a state that is not the saved
    /// one.
    #[error("restoring state from {changelog}: {reason}")]
    StateUnreadable { changelog: String, reason: String },
}

/// What to change when a delivery fails for good because of a setting:
/// only a misconfigured topic can refuse what vigil sends, and only a
/// second process of the same name can fence its transactions.
pub(crate) fn fix(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced) => {
            " (another running process has the same transactional id: give each process its own --instance)"
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            " (the record is larger than the topic's max.message.bytes or the producer's message.max.bytes: \
             raise the topic's max.message.bytes)"
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => " (grant the pipeline's principal Write on the topic)",
        _ => "",
    }
}

impl BatchError {
    /// Whether reading the batch again may succeed (else the pipeline
    /// stops).
    pub fn is_passing(&self) -> bool {
        match self {
            BatchError::Unavailable { .. } => true,
            BatchError::NotDelivered { .. } | BatchError::StateUnreadable { .. } => false,
        }
    }
}

/// A record that panicked a stage (a bug in vigil, never bad input) on
/// every one of its attempts: it is dead-lettered as `internal_error` and
/// the stream goes on, the state it touched put back as it was before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} panicked on this record {attempts} times (rows.max_attempts): {message}")]
pub struct Panicked {
    /// The record's offset in its partition.
    pub offset: i64,
    pub stage: &'static str,
    pub attempts: u32,
    /// The panic's message, cut to [`MAX_PANIC_MESSAGE`] bytes.
    pub message: String,
}

/// The longest panic message kept: a panic may quote the data it met.
pub const MAX_PANIC_MESSAGE: usize = 200;

/// The message a panic carries (`panic!` with a literal or a format),
/// cut to [`MAX_PANIC_MESSAGE`] bytes.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    let mut end = text.len().min(MAX_PANIC_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}… ({} bytes)", &text[..end], text.len())
    } else {
        text.to_owned()
    }
}

/// A partition's state as it was after the batches handed downstream up
/// to offset `through`: the records that make it durable (keys and values
/// as the stateful stage encodes them; no value: the key is gone).
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub through: i64,
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What happens to decoded rows: the detectors, in a full pipeline.
///
/// A stage that keeps state ([`Downstream::keeps_state`]) makes it durable
/// in checkpoints, and the source commits an offset only once a checkpoint
/// at or past it is durable: the source asks for a [`Checkpoint`] between
/// batches, in order, and has it persisted once every batch before it is
/// done (their alerts acknowledged), so a checkpoint never holds a row
/// whose alerts could still be lost. When a partition is assigned (or its
/// actor restarts), its state is restored before its first batch.
pub trait Downstream: Send + Sync + 'static {
    /// Processes one batch of a partition's rows, in order. The future
    /// resolves once every effect of the rows is durable, with the rows
    /// that were given up on (usually none), for the dead-letter topic.
    fn process(
        &self,
        topic: Arc<str>,
        partition: i32,
        rows: Vec<Row>,
    ) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>>;

    /// Whether the stage keeps state that checkpoints make durable; then
    /// offsets are committed at checkpoints, not after every batch.
    fn keeps_state(&self) -> bool {
        false
    }

    /// Captures the partition's state after the batches handed over so
    /// far, the last of which ends at offset `through`.
    fn checkpoint(
        &self,
        _topic: Arc<str>,
        _partition: i32,
        through: i64,
    ) -> BoxFuture<'static, Result<Checkpoint, BatchError>> {
        Box::pin(async move { Ok(Checkpoint { through, records: Vec::new() }) })
    }

    /// Makes a captured checkpoint durable.
    fn persist(
        &self,
        _topic: Arc<str>,
        _partition: i32,
        _checkpoint: Checkpoint,
    ) -> BoxFuture<'static, Result<(), BatchError>> {
        Box::pin(async { Ok(()) })
    }

    /// Makes the partition's state what its last durable checkpoint holds,
    /// before its first batch is handed over (an assignment, or its actor
    /// restarted). Rows read again that the state holds already are
    /// recognised by their offsets and skipped.
    fn restore(&self, _topic: Arc<str>, _partition: i32) -> BoxFuture<'static, Result<(), BatchError>> {
        Box::pin(async { Ok(()) })
    }

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
    fn process(&self, _: Arc<str>, _: i32, _: Vec<Row>) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Which of `n` workers a partition's actor (and its detector shard) runs
/// on: by partition, with the topic spreading topics over the workers.
pub fn placement(topic: &str, partition: i32, n: usize) -> usize {
    let topic_hash = topic.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    topic_hash.wrapping_add(partition.unsigned_abs() as usize) % n.max(1)
}

/// Test-only: makes a stage panic on chosen records, to show that a panic
/// is survived. Planned per thread, so tests do not meet each other's.
#[cfg(test)]
pub(crate) mod faults {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static PLANNED: RefCell<HashMap<(&'static str, i64), u32>> = RefCell::new(HashMap::new());
    }

    /// `stage` panics on the record at `offset` the next `times` times.
    pub fn plan(stage: &'static str, offset: i64, times: u32) {
        PLANNED.with(|p| p.borrow_mut().insert((stage, offset), times));
    }

    /// Panics if a panic is planned for `stage` at `offset`.
    pub fn strike(stage: &'static str, offset: i64) {
        let due = PLANNED.with(|p| match p.borrow_mut().get_mut(&(stage, offset)) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        });
        if due {
            panic!("planned panic in the {stage} at offset {offset}");
        }
    }
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
            topic: "dlq".into(),
            error: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert!(!lost.is_passing());
        assert_eq!(lost.to_string(), "dead letter not delivered to topic dlq: Message production error: MessageTimedOut (Local: Message timed out)");
        let refused = BatchError::NotDelivered {
            what: Output::Alert,
            topic: "alerts".into(),
            error: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        };
        assert!(refused.to_string().ends_with("raise the topic's max.message.bytes)"), "{refused}");
    }

    #[test]
    fn a_panic_message_is_read_and_cut_short() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).expect_err("panics");
        assert_eq!(panic_message(&*literal), "plain");
        let long = "é".repeat(150);
        let formatted = std::panic::catch_unwind(|| panic!("{long}")).expect_err("panics");
        let message = panic_message(&*formatted);
        assert!(message.starts_with(&"é".repeat(100)), "{message}");
        assert!(message.ends_with("… (300 bytes)"), "{message}");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).expect_err("panics");
        assert_eq!(panic_message(&*other), "a panic without a message");
    }
}
