//! A streaming pipeline file as written: serde structs that mirror the
//! YAML keys, strict (`deny_unknown_fields`), with each value's location
//! kept (`Spanned`) so validation can point at it.
//!
//! Deliberately no rules here beyond the shape of the file: defaults,
//! ranges and cross-field checks live in `validate.rs`, which turns these
//! into the typed structs of `config::stream`. Numbers that must be exact
//! (decimals) and durations are kept as their source text and parsed there,
//! so every bad value in a file is reported at once.
//!
//! Detectors are one struct holding the fields of every detector type
//! instead of an enum tagged on `type`: serde buffers internally tagged
//! enums, which (with serde-saphyr 2.2) loses every location inside a
//! detector, and errors then point at the detector's first line instead of
//! the misspelled key. Which fields belong to which type is checked in
//! `validate.rs`, with the location of the offending key.
//!
//! No `Debug` on [`RawSource`] (nor on the file around it): its properties
//! are as written, secrets included; the validated `SourceConfig` masks them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{DecimalHandling, Guarantee, SchemaMode, StartFrom};
use crate::config::spanned::S;
use crate::row::Op;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawPipeline {
    /// Pipeline name, labels metrics. Required.
    pub name: S<String>,
    /// Where rows come from. Required.
    pub source: S<RawSource>,
    /// How records are encoded. Required (`type`).
    pub format: S<RawFormat>,
    /// Which columns and ops the detectors read. Required.
    pub rows: S<RawRows>,
    /// The detectors, at least one. Required.
    pub detectors: S<Vec<S<RawDetector>>>,
    /// Where alerts and bad records go. Required.
    pub sink: S<RawSink>,
    /// Durable detector state. Default: on, with the default changelog.
    pub state: Option<S<RawState>>,
    /// `at_least_once` | `exactly_once`. Default `at_least_once`.
    pub guarantee: Option<S<Guarantee>>,
}

/// `source:`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawSource {
    /// Kafka bootstrap servers, comma-separated. Required.
    pub brokers: S<String>,
    /// Topics to read, at least one. Required.
    pub topics: S<Vec<S<String>>>,
    /// Consumer group id. Required.
    pub group: S<String>,
    /// `earliest` | `latest`. Default `earliest`.
    pub start_from: Option<S<StartFrom>>,
    /// librdkafka properties; scalars kept as their text. Default none.
    pub properties: Option<BTreeMap<String, S<String>>>,
}

/// `format:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawFormat {
    /// Only `debezium-json`. Required. A string, so other values get a
    /// message explaining what vigil reads.
    #[serde(rename = "type")]
    pub kind: S<String>,
    /// `auto` | `enabled` | `disabled`. Default `auto`.
    pub schemas: Option<S<SchemaMode>>,
    /// `precise` | `string` | `double`. Default `precise`.
    pub decimals: Option<S<DecimalHandling>>,
    /// Column -> scale, for precise decimals without a schema. Default none.
    pub decimal_scales: Option<S<BTreeMap<String, S<u32>>>>,
}

/// `rows:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawRows {
    /// Routing key column. Required.
    pub key: S<String>,
    /// A column, or `source.ts_ms`. Required.
    pub event_time: S<String>,
    /// Default `[id]`.
    pub primary_key: Option<S<Vec<S<String>>>>,
    /// Default `[c]`.
    pub ops: Option<S<Vec<S<Op>>>>,
    /// Default `[r]`.
    pub warm_ops: Option<S<Vec<S<Op>>>>,
    /// Longest key, bytes. Default 256.
    pub max_key_bytes: Option<S<usize>>,
    /// How far ahead of the wall clock an event time may be. Default `1h`.
    pub max_future: Option<S<String>>,
    /// Tries of a record that panics. Default 3.
    pub max_attempts: Option<S<u32>>,
}

/// The closed set of detector types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(in crate::config) enum DetectorType {
    SpendAnomaly,
    VelocityScore,
}

impl DetectorType {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorType::SpendAnomaly => "spend_anomaly",
            DetectorType::VelocityScore => "velocity_score",
        }
    }

    /// The keys a detector of this type accepts (besides `type`).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            DetectorType::SpendAnomaly => &["name", "amount", "history", "min_history", "factor", "min_amount"],
            DetectorType::VelocityScore => {
                &["name", "amount", "velocity", "high_amount", "alert_above", "allowed_lateness"]
            }
        }
    }
}

/// One entry of `detectors:`; the union of every type's fields (see the
/// module doc for why).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawDetector {
    /// `spend_anomaly` | `velocity_score`. Required.
    #[serde(rename = "type")]
    pub kind: S<DetectorType>,
    /// Default: the type with `_` -> `-`.
    pub name: Option<S<String>>,
    /// Amount column. Default `amount`.
    pub amount: Option<S<String>>,
    // spend_anomaly
    /// Amounts remembered per user. Default 50.
    pub history: Option<S<usize>>,
    /// Amounts needed before judging. Default 3.
    pub min_history: Option<S<usize>>,
    /// Decimal text. Default 3.0.
    pub factor: Option<S<String>>,
    /// Decimal text. Default 500.
    pub min_amount: Option<S<String>>,
    // velocity_score
    /// Count rule. See `validate.rs` for the section defaults.
    pub velocity: Option<S<RawVelocity>>,
    /// Amount rule.
    pub high_amount: Option<S<RawHighAmount>>,
    /// Score threshold. Default 70.
    pub alert_above: Option<S<u32>>,
    /// Duration text. Default `0s`.
    pub allowed_lateness: Option<S<String>>,
    /// Moved to `state.idle_timeout`: kept here only to say so.
    pub idle_timeout: Option<S<String>>,
}

/// `velocity:` of a velocity_score detector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawVelocity {
    /// Duration text. Default `60s`.
    pub window: Option<S<String>>,
    /// Default 5.
    pub max_count: Option<S<u32>>,
    /// Default 40.
    pub points: Option<S<u32>>,
}

/// `high_amount:` of a velocity_score detector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawHighAmount {
    /// Decimal text. Default 4000.
    pub threshold: Option<S<String>>,
    /// Default 50.
    pub points: Option<S<u32>>,
}

/// `sink:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawSink {
    /// Alerts topic. Required.
    pub alerts: S<String>,
    /// Dead-letter topic. Required.
    pub dead_letters: S<String>,
    /// How long a delivery may be retried before the pipeline stops.
    /// Default `2m`.
    pub delivery_timeout: Option<S<String>>,
    /// How long a transaction may stay open (exactly-once). Default: the
    /// delivery timeout.
    pub transaction_timeout: Option<S<String>>,
    /// How often a transaction is committed (exactly-once). Default
    /// `100ms`.
    pub transaction_interval: Option<S<String>>,
}

/// `state:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawState {
    /// Default true.
    pub enabled: Option<S<bool>>,
    /// Changelog topic name, `{topic}` standing for the source topic.
    /// Default `<name>.{topic}.changelog`.
    pub changelog: Option<S<String>>,
    /// Duration text. Default `30d`.
    pub idle_timeout: Option<S<String>>,
}
