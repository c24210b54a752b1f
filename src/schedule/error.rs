//! Why a batch job could not start, or why one run failed.
//!
//! Classes, for the supervisor's decision: a [`StartError`] refuses the
//! start of `vigil run` (the user must fix something: a Kafka topic that
//! does not exist). A [`RunError`] never stops vigil: the run is logged,
//! counted and retried with backoff, whatever its class, because
//! PostgreSQL coming back, or a person fixing a table, both heal it; the
//! class only says which of the two to expect in the log.

use std::error::Error as StdError;

use deadpool_postgres::tokio_postgres;

use crate::config::secret;

/// The job cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The connection pool could not be built from the file's settings.
    #[error("{pipeline}: building the PostgreSQL pool: {reason}")]
    Pool { pipeline: String, reason: String },
    /// The results producer could not be created.
    #[error("{pipeline}: creating the Kafka producer for results: {reason}")]
    Producer { pipeline: String, reason: String },
    /// The results topic is missing, or Kafka did not answer.
    #[error("{pipeline}: {reason}")]
    Topic { pipeline: String, reason: String },
}

/// One run failed; the next attempt comes after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// PostgreSQL could not be reached, refused connections, or went away
    /// (shut down, restarted, network): heals by itself when it is back.
    #[error("PostgreSQL at {target} is unavailable: {reason}")]
    Unavailable { target: String, reason: String },
    /// PostgreSQL answered a statement with an error (SQLSTATE in the
    /// reason): usually needs a person (permissions, a table of another
    /// shape, a statement timeout).
    #[error("PostgreSQL at {target}: {what} failed: {reason}")]
    Statement { target: String, what: &'static str, reason: String },
    /// The readings table does not match the pipeline file.
    #[error("readings table {table} at {target}: {reason}")]
    Readings { table: String, target: String, reason: String },
    /// Results could not be published to Kafka (the window is not marked
    /// completed, so it is computed and published again).
    #[error("publishing results to Kafka topic {topic}: {reason}")]
    Kafka { topic: String, reason: String },
    /// A bug: the run panicked. Counted and retried like the others.
    #[error("the run panicked: {0}")]
    Panicked(String),
}

crate::label_values! {
    /// The `reason` label of failed runs, one per [`RunError`] variant.
    pub enum FailureReason {
        Unavailable => "unavailable",
        Statement => "statement",
        Readings => "readings_table",
        Kafka => "kafka",
        Panicked => "panic",
    }
}

impl RunError {
    /// The `reason` label of the failure metric.
    pub fn class(&self) -> FailureReason {
        match self {
            RunError::Unavailable { .. } => FailureReason::Unavailable,
            RunError::Statement { .. } => FailureReason::Statement,
            RunError::Readings { .. } => FailureReason::Readings,
            RunError::Kafka { .. } => FailureReason::Kafka,
            RunError::Panicked(_) => FailureReason::Panicked,
        }
    }

    /// Classifies a tokio-postgres error from `what` (e.g. "aggregating a
    /// window").
    pub(super) fn postgres(target: &str, what: &'static str, err: &tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No answer from the server: an I/O error or a closed connection.
            return RunError::Unavailable { target: target.to_owned(), reason: chain(err) };
        };
        let code = db.code().code();
        // 08: connection exception; 57P01..57P05: shutdown, restart, crash,
        // cannot connect now; 53: too many connections, out of resources.
        // 57014 is a statement cancelled (e.g. statement_timeout): a
        // statement problem, not an outage.
        let outage = code.starts_with("08") || code.starts_with("57P") || code.starts_with("53");
        let reason = format!("{} (SQLSTATE {code})", db.message());
        if outage {
            RunError::Unavailable { target: target.to_owned(), reason }
        } else {
            RunError::Statement { target: target.to_owned(), what, reason }
        }
    }

    /// The error with every occurrence of `secret` hidden from its text.
    pub(super) fn hiding(self, secret: &str) -> Self {
        let hide = |text: String| secret::hide(&text, [secret]);
        match self {
            RunError::Unavailable { target, reason } => RunError::Unavailable { target, reason: hide(reason) },
            RunError::Statement { target, what, reason } => RunError::Statement { target, what, reason: hide(reason) },
            RunError::Readings { table, target, reason } => RunError::Readings { table, target, reason: hide(reason) },
            RunError::Kafka { topic, reason } => RunError::Kafka { topic, reason: hide(reason) },
            RunError::Panicked(message) => RunError::Panicked(hide(message)),
        }
    }

    /// Classifies an error of the pool (connecting, or recycling).
    pub(super) fn pool(target: &str, err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError as P;
        match err {
            P::Backend(e) => RunError::postgres(target, "connecting", &e),
            P::Timeout(kind) => RunError::Unavailable {
                target: target.to_owned(),
                reason: format!("timed out ({kind:?}) waiting for a connection"),
            },
            other => RunError::Unavailable { target: target.to_owned(), reason: chain(&other) },
        }
    }
}

/// An error and its sources, `outer: inner: ...`, without repeats.
pub(super) fn chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Label;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chains_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&Outer(io)), "outer: refused");
    }

    #[test]
    fn hiding_removes_a_secret_from_every_reason() {
        let e = RunError::Statement { target: "h:5432/d".into(), what: "x", reason: "no hunter2 here: hunter2".into() };
        assert_eq!(e.hiding("hunter2").to_string(), "PostgreSQL at h:5432/d: x failed: no *** here: ***");
    }

    #[test]
    fn classes_label_the_failure_metric() {
        let e = RunError::Unavailable { target: "h:5432/d".into(), reason: "refused".into() };
        assert_eq!(e.class().as_label(), "unavailable");
        assert_eq!(e.to_string(), "PostgreSQL at h:5432/d is unavailable: refused");
        assert_eq!(RunError::Panicked("x".into()).class().as_label(), "panic");
    }
}
