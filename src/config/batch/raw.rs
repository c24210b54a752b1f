//! A batch pipeline file as written: serde structs mirroring the YAML
//! keys, strict (`deny_unknown_fields`), every value with its location.
//!
//! Shape only: durations, names and cross-field rules are checked in
//! `validate.rs`, so every bad value is reported at once.
//!
//! No `Debug` on the structs holding the PostgreSQL URL or Kafka
//! properties (nor on those around them): their values are as written,
//! secrets included; the validated types mask them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::TimeType;
use crate::config::spanned::S;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawBatchPipeline {
    /// Pipeline name. Required.
    pub name: S<String>,
    /// When windows are computed. Required (`every`).
    pub schedule: S<RawSchedule>,
    /// Connection settings. Required (`url`).
    pub postgres: S<RawPostgres>,
    /// The table read. Required.
    pub readings: S<RawReadings>,
    /// Where results go. Required (`table`).
    pub results: S<RawResults>,
}

/// `schedule:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawSchedule {
    /// Duration text. Required.
    pub every: S<String>,
    /// Duration text. Default `30s`.
    pub grace: Option<S<String>>,
    /// Duration text. Default `24h`.
    pub catch_up_limit: Option<S<String>>,
    /// Windows. Default 1.
    pub recompute_last: Option<S<u32>>,
}

/// `postgres:`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawPostgres {
    /// Connection URL. Required.
    pub url: S<String>,
    /// Default 2.
    pub pool_size: Option<S<usize>>,
    /// Duration text. Default `30s`.
    pub statement_timeout: Option<S<String>>,
    /// Duration text. Default `5s`.
    pub connect_timeout: Option<S<String>>,
}

/// `readings:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawReadings {
    /// `name` or `schema.name`. Required.
    pub table: S<String>,
    /// Group column. Required.
    pub group_by: S<String>,
    /// Value column. Required.
    pub value: S<String>,
    /// Time column. Required.
    pub time: S<String>,
    /// `timestamp` | `timestamptz`. Default `timestamp`.
    pub time_type: Option<S<TimeType>>,
}

/// `results:`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawResults {
    /// `name` or `schema.name`. Required.
    pub table: S<String>,
    /// Duration text. Default `1h`.
    pub silent_groups_for: Option<S<String>>,
    /// Optional Kafka output.
    pub kafka: Option<S<RawKafkaOutput>>,
}

/// `results.kafka:`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawKafkaOutput {
    /// Bootstrap servers. Required.
    pub brokers: S<String>,
    /// Topic. Required.
    pub topic: S<String>,
    /// librdkafka properties; scalars kept as their text. Default none.
    pub properties: Option<BTreeMap<String, S<String>>>,
}
