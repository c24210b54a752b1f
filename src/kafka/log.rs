//! Kafka client errors in the log. While a broker is away, librdkafka
//! reports it many times a second (every connection attempt, from every
//! client, and again through the consumer's event queue); rdkafka would log
//! each at error level. Here each client says its first error at once and
//! then at most one line per [`SAY_EVERY`] with how many more came, so an
//! outage reads as a few lines. Fatal errors are always said. Every error
//! is counted (`vigil_kafka_client_errors_total`), said or not.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{error, warn};

use super::Client;
use crate::telemetry::{names, Label};

/// At most one line per client this often, while errors keep coming.
pub const SAY_EVERY: Duration = Duration::from_secs(10);

/// Which of a client's errors are said, and how many were held back.
pub struct ErrorLog {
    pipeline: String,
    /// The client's part in the pipeline, as labelled.
    client: &'static str,
    /// Its series of `vigil_kafka_client_errors_total`, registered once.
    counted: metrics::Counter,
    said: Mutex<Said>,
}

#[derive(Debug, Default)]
struct Said {
    last: Option<Instant>,
    held_back: u64,
}

impl ErrorLog {
    /// The log of `pipeline`'s `client`; its error series is registered
    /// at 0.
    pub fn new(pipeline: &str, client: Client) -> Self {
        let client = client.as_label();
        let counted =
            metrics::counter!(names::KAFKA_CLIENT_ERRORS, "pipeline" => pipeline.to_owned(), "client" => client);
        counted.increment(0);
        ErrorLog { pipeline: pipeline.to_owned(), client, counted, said: Mutex::default() }
    }

    /// An error came at `now`: `Some(n)` when it is to be said, `n` being
    /// how many came since the last one said and were not.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let Ok(mut said) = self.said.lock() else { return Some(0) };
        match said.last {
            Some(last) if now.saturating_duration_since(last) < SAY_EVERY => {
                said.held_back += 1;
                None
            }
            _ => {
                said.last = Some(now);
                Some(std::mem::take(&mut said.held_back))
            }
        }
    }

    /// Counts `error` and logs it if it is to be said now; `what` and
    /// `detail` say where it came from (`detail` is formatted only if the
    /// line is written).
    pub fn say(&self, what: &str, detail: &dyn Display, error: &KafkaError) {
        self.counted.increment(1);
        let (pipeline, client) = (&self.pipeline, self.client);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            error!(pipeline, client, %detail, error = %error, "{what}: fatal");
        } else if let Some(held_back) = self.admit(Instant::now()) {
            warn!(pipeline, client, %detail, error = %error, held_back, "{what}");
        }
    }

    /// An error librdkafka reports to the client context, with its reason.
    /// A partition's end is no error: the restorer asks to be told of it.
    pub fn client_error(&self, error: &KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_));
        if end || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.say("Kafka client error", &reason, error);
    }
}

/// A client context whose librdkafka errors go through an [`ErrorLog`].
pub struct LoggedContext {
    pub errors: ErrorLog,
}

impl ClientContext for LoggedContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.client_error(&error, reason);
    }
}

/// A consumer that only reads (assigned partitions, no group): its
/// errors said and counted like any client's.
impl rdkafka::consumer::ConsumerContext for LoggedContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_said_then_one_an_interval_with_the_count_held_back() {
        let log = ErrorLog::new("p", Client::Consumer);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(log.admit(at(0)), Some(0));
        // Ten a second for the rest of the interval: held back.
        for ms in (100..10_000).step_by(100) {
            assert_eq!(log.admit(at(ms)), None, "{ms} ms");
        }
        // The next interval's first says how many came meanwhile.
        assert_eq!(log.admit(at(10_000)), Some(99));
        assert_eq!(log.admit(at(10_500)), None);
        // After a quiet spell the next error is said at once.
        assert_eq!(log.admit(at(60_000)), Some(1));
        assert_eq!(log.admit(at(60_001)), None);
    }

    #[test]
    fn a_partition_end_is_no_error() {
        let log = ErrorLog::new("p", Client::Restorer);
        log.client_error(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF), "end of partition");
        log.client_error(&KafkaError::PartitionEOF(3), "end of partition");
        assert_eq!(log.admit(Instant::now()), Some(0), "nothing was said before");
    }
}
