//! Kafka client errors in the log. While a broker is away, librdkafka
//! reports it many times a second (every connection attempt, from every
//! client, and again through the consumer's event queue); rdkafka would log
//! each at error level. Here each client says its first error at once and
//! then at most one line per [`SAY_EVERY`] with how many more came, so an
//! outage reads as a few lines. Fatal errors are always said.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use tracing::{error, warn};

/// At most one line per client this often, while errors keep coming.
pub const SAY_EVERY: Duration = Duration::from_secs(10);

/// Which of a client's errors are said, and how many were held back.
#[derive(Debug, Default)]
pub struct ErrorLog {
    said: Mutex<Said>,
}

#[derive(Debug, Default)]
struct Said {
    last: Option<Instant>,
    held_back: u64,
}

impl ErrorLog {
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

    /// Logs `error` (from client `client`, `what` it was doing) if it is
    /// to be said now.
    pub fn say(&self, client: &str, what: &str, error: &KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            error!(client, error = %error, "{what}: fatal Kafka client error");
        } else if let Some(held_back) = self.admit(Instant::now()) {
            warn!(client, error = %error, held_back, "{what}");
        }
    }
}

/// A client context whose librdkafka errors go through an [`ErrorLog`].
pub struct LoggedContext {
    client: String,
    errors: ErrorLog,
}

impl LoggedContext {
    pub fn new(client: impl Into<String>) -> Self {
        LoggedContext { client: client.into(), errors: ErrorLog::default() }
    }
}

impl ClientContext for LoggedContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.say(&self.client, &format!("Kafka client error: {reason}"), &error);
    }
}

/// The producer of alerts, dead letters and batch results.
pub type DurableProducer = FutureProducer<LoggedContext>;

/// A [`DurableProducer`] from `config`, its errors logged as `client`'s.
pub fn create_producer(config: &ClientConfig, client: &str) -> KafkaResult<DurableProducer> {
    FutureProducer::from_config_and_context(config, LoggedContext::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_said_then_one_an_interval_with_the_count_held_back() {
        let log = ErrorLog::default();
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
}
