//! [`Validator`]: collects the problems of a parsed pipeline file, each
//! with its path and its location mapped back to the file, plus the checks
//! both kinds of file make (names that label metrics, non-empty text, Kafka
//! topic names, durations, property paths).
//!
//! Each kind's `validate.rs` (`stream/`, `batch/`) adds its own rules on
//! top; this module is shared so neither kind imports the other.

use std::time::Duration;

use serde_saphyr::Location;

use super::duration;
use super::interpolate::ColumnMap;
use super::spanned::S;
use super::Problem;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

/// Collects problems; shared by the stream and batch validators.
pub(super) struct Validator<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) columns: &'a ColumnMap,
}

impl Validator<'_> {
    pub(super) fn report(&mut self, at: &Location, path: impl Into<String>, message: impl Into<String>) {
        let (line, column) = if at.line() == 0 {
            (None, None)
        } else {
            (Some(at.line()), Some(self.columns.original(at.line(), at.column())))
        };
        self.problems.push(Problem { path: path.into(), line, column, message: message.into() });
    }

    /// A name that labels metrics: `[a-z0-9][a-z0-9._-]*`.
    pub(super) fn name(&mut self, path: &str, name: &S<String>) -> String {
        if !is_label(&name.value) {
            self.report(
                &name.referenced,
                path,
                format!("must match [a-z0-9][a-z0-9._-]* (it labels metrics; got {:?})", name.value),
            );
        }
        name.value.clone()
    }

    pub(super) fn non_empty(&mut self, path: &str, value: &S<String>) -> String {
        if value.value.trim().is_empty() {
            self.report(&value.referenced, path, "must not be empty");
        }
        value.value.clone()
    }

    /// Kafka bootstrap servers: not empty, and without credentials, which
    /// librdkafka would take for part of a host name (and log). The value
    /// is not repeated: it may hold a password.
    pub(super) fn brokers(&mut self, path: &str, brokers: &S<String>) -> String {
        if brokers.value.contains('@') {
            self.report(
                &brokers.referenced,
                path,
                "holds a user or password (an `@`): Kafka takes credentials from the properties \
                 (sasl.username, sasl.password), not from the broker address",
            );
        }
        self.non_empty(path, brokers)
    }

    pub(super) fn topic(&mut self, path: &str, topic: &S<String>) -> String {
        if let Some(message) = topic_problem(&topic.value) {
            self.report(&topic.referenced, path, message);
        }
        topic.value.clone()
    }

    pub(super) fn duration(&mut self, path: &str, text: &S<String>) -> Option<Duration> {
        match duration::parse_duration(&text.value) {
            Ok(d) => Some(d),
            Err(err) => {
                self.report(&text.referenced, path, err.to_string());
                None
            }
        }
    }
}

/// `[a-z0-9][a-z0-9._-]*`
fn is_label(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Why Kafka would refuse `topic` as a topic name, if it would.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("must not be empty".into());
    }
    if topic == "." || topic == ".." {
        return Some(format!("Kafka refuses the topic name {topic:?}"));
    }
    let len = topic.chars().count();
    if len > MAX_TOPIC_LEN {
        return Some(format!("must be at most {MAX_TOPIC_LEN} characters, Kafka's limit (got {len})"));
    }
    if !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Some(format!("not a valid Kafka topic name (got {topic:?}): use letters, digits, '.', '_' and '-'"));
    }
    None
}

/// `base.key`, or `base["key"]` when the key has characters other than
/// letters, digits and `_` (such as the dots of librdkafka properties).
pub(super) fn key_path(base: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{base}.{key}")
    } else {
        format!("{base}[{key:?}]")
    }
}
