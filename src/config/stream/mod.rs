//! Streaming pipeline files: the typed, validated description of one
//! pipeline that reads Debezium change events from Kafka, runs detectors
//! over them and writes alerts back to Kafka.
//!
//! A streaming file is told apart from a batch one by its top-level keys
//! (`source:` instead of `schedule:`; see [`super::load_any`]). It goes
//! through the loading steps of [`super`]: strict parsing into the file's
//! shape (`raw.rs`) and validation (`validate.rs`, every problem collected
//! with its path); the result holds plain values only, so the rest of
//! vigil never re-checks a pipeline.

pub(super) mod raw;
pub(super) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::config::secret;
use crate::row::Op;

/// One pipeline, validated: Kafka topics in, detectors, alerts out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// `name`: `[a-z0-9][a-z0-9._-]*`. Labels metrics and logs. Required.
    pub name: String,
    /// The file it was loaded from (the label given to
    /// [`load_str`](super::load_str)).
    pub file: PathBuf,
    /// `source`: where the change events come from.
    pub source: SourceConfig,
    /// `format`: how the change events are encoded.
    pub format: FormatConfig,
    /// `rows`: which columns and ops of a row the detectors use.
    pub rows: RowsConfig,
    /// `detectors`: at least one; names unique within the pipeline.
    pub detectors: Vec<DetectorConfig>,
    /// `sink`: where alerts and unreadable records go.
    pub sink: SinkConfig,
    /// `state`: where the detectors' state is kept, and for how long.
    pub state: StateConfig,
    /// `guarantee`: what a failure may do to the alerts. Default
    /// `at_least_once`.
    pub guarantee: Guarantee,
}

impl Pipeline {
    /// Every row column the pipeline reads: the key, the event-time column
    /// (unless it is `source.ts_ms`), the primary key columns, then each
    /// detector's amount column; each once, in that order.
    pub fn columns(&self) -> Vec<String> {
        let rows = &self.rows;
        let event_time = match &rows.event_time {
            EventTime::Column(column) => Some(column.as_str()),
            EventTime::SourceTsMs => None,
        };
        let all = std::iter::once(rows.key.as_str())
            .chain(event_time)
            .chain(rows.primary_key.iter().map(String::as_str))
            .chain(self.detectors.iter().map(DetectorConfig::amount));
        let mut columns: Vec<String> = Vec::new();
        for column in all {
            if !columns.iter().any(|c| c == column) {
                columns.push(column.to_owned());
            }
        }
        columns
    }
}

/// `source:`: the Kafka topics Debezium writes to, and how to consume them.
/// `Debug` masks secret properties (see [`crate::config::secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// `brokers`: bootstrap servers, `host:port[,host:port...]`
    /// (librdkafka `bootstrap.servers`). Required, non-empty.
    pub brokers: String,
    /// `topics`: topics to read, at least one, no duplicates; valid Kafka
    /// names (`[a-zA-Z0-9._-]`, at most 249 characters). Required.
    pub topics: Vec<String>,
    /// `group`: the consumer group id; processes sharing it share the
    /// partitions. Required, non-empty.
    pub group: String,
    /// `start_from`: where a group with no committed offset starts.
    /// Default [`StartFrom::Earliest`].
    pub start_from: StartFrom,
    /// `properties`: extra librdkafka properties, passed as they are
    /// (numbers and booleans as written). Default none. Properties vigil
    /// sets itself are refused (see `validate.rs`).
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("brokers", &secret::without_url_passwords(&self.brokers))
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("start_from", &self.start_from)
            .field("properties", &secret::DebugProperties(&self.properties))
            .finish()
    }
}

/// What a failure (a crash, a rebalance, a broker away) may do to a
/// pipeline's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// `at_least_once`: every due alert is sent; after a failure some are
    /// sent again, with the same `id`.
    #[default]
    AtLeastOnce,
    /// `exactly_once`: alerts, dead letters, state and source offsets are
    /// written in Kafka transactions; a `read_committed` reader sees each
    /// due alert once.
    ExactlyOnce,
}

impl Guarantee {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

/// Where a consumer group without a committed offset starts reading
/// (librdkafka `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// `earliest`: from the oldest retained record (the default: replaying
    /// the topic gives the same alerts).
    #[default]
    Earliest,
    /// `latest`: only records produced after the group first joins.
    Latest,
}

impl StartFrom {
    /// As written in the file, which is also librdkafka's
    /// `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// `format:` (`type: debezium-json`, the only type): Debezium's envelope
/// as Kafka Connect's JsonConverter writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormatConfig {
    /// `schemas`: whether records carry JsonConverter's `schema` block.
    /// Default [`SchemaMode::Auto`].
    pub schemas: SchemaMode,
    /// `decimals`: how the connector encodes NUMERIC/DECIMAL columns
    /// (Debezium's `decimal.handling.mode`); used for records without a
    /// schema block. Default [`DecimalHandling::Precise`].
    pub decimals: DecimalHandling,
    /// `decimal_scales`: column -> scale (0..=28) of precise decimals, for
    /// records without a schema block (which do not carry the scale).
    /// Default none.
    pub decimal_scales: BTreeMap<String, u32>,
}

/// Whether records carry the JsonConverter `schema` block
/// (`value.converter.schemas.enable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// `auto`: told apart per record (the default).
    #[default]
    Auto,
    /// `enabled`: every record has `{"schema": ..., "payload": ...}`.
    Enabled,
    /// `disabled`: records are the bare payload.
    Disabled,
}

/// How Debezium encodes NUMERIC/DECIMAL values (`decimal.handling.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalHandling {
    /// `precise`: the unscaled integer as base64 big-endian bytes; the scale
    /// is in the schema block (the default, and Debezium's).
    #[default]
    Precise,
    /// `string`: the decimal as text, e.g. `"1234.50"`.
    String,
    /// `double`: a JSON number (inexact in the database's eyes; vigil reads
    /// it through its shortest text).
    Double,
}

/// `rows:`: which parts of a row change the detectors see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsConfig {
    /// `key`: the column that routes a row to its user's state (must match
    /// the Kafka message key, so a user's rows share a partition). Required.
    pub key: String,
    /// `event_time`: the row's time for windows. Required.
    pub event_time: EventTime,
    /// `primary_key`: columns identifying the row (alert ids derive from
    /// them). Default `[id]`; at least one, no duplicates.
    pub primary_key: Vec<String>,
    /// `ops`: ops that feed the detectors and may alert. Default `[c]`;
    /// non-empty, no duplicates.
    pub ops: Vec<Op>,
    /// `warm_ops`: ops that update the detectors' state without alerting
    /// (e.g. `r`, the initial snapshot). Default `[r]`; disjoint from `ops`.
    pub warm_ops: Vec<Op>,
    /// `max_key_bytes`: a text key longer than this (bytes) is a bad
    /// record (dead letter, reason `bad_value`). Default 256; ≥ 1.
    pub max_key_bytes: usize,
    /// `max_future`: a row whose event time is further than this ahead of
    /// the wall clock is a bad record (dead letter, reason
    /// `implausible_event_time`). Default `1h`; > 0.
    pub max_future: Duration,
    /// `max_attempts`: how many times a record is tried when decoding or
    /// judging it panics (a bug, never bad input) before it is a dead
    /// letter (reason `internal_error`). Default 3; ≥ 1.
    pub max_attempts: u32,
}

impl RowsConfig {
    /// The default `max_key_bytes`.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 256;
    /// The default `max_future`.
    pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(3600);
    /// The default `max_attempts`.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
}

/// Where a row's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    /// A timestamp column of the row.
    Column(String),
    /// `source.ts_ms`: when the change was committed in the database, from
    /// Debezium's `source` block.
    SourceTsMs,
}

impl EventTime {
    /// The literal that selects [`EventTime::SourceTsMs`] in a file.
    pub const SOURCE_TS_MS: &'static str = "source.ts_ms";
}

/// One entry of `detectors:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorConfig {
    /// `name`: labels its alerts and metrics; unique within the pipeline,
    /// `[a-z0-9][a-z0-9._-]*`. Default: the type with `_` -> `-`
    /// (`spend-anomaly`, `velocity-score`).
    pub name: String,
    /// `type` and the type's own fields.
    pub kind: DetectorKind,
}

impl DetectorConfig {
    /// The amount column this detector reads.
    pub fn amount(&self) -> &str {
        match &self.kind {
            DetectorKind::SpendAnomaly(c) => &c.amount,
            DetectorKind::VelocityScore(c) => &c.amount,
        }
    }
}

/// The closed set of detectors, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorKind {
    /// `type: spend_anomaly`.
    SpendAnomaly(SpendAnomalyConfig),
    /// `type: velocity_score`.
    VelocityScore(VelocityScoreConfig),
}

impl DetectorKind {
    /// The `type` as written in a file.
    pub fn type_name(&self) -> &'static str {
        match self {
            DetectorKind::SpendAnomaly(_) => "spend_anomaly",
            DetectorKind::VelocityScore(_) => "velocity_score",
        }
    }
}

/// `type: spend_anomaly`: per user, the last `history` amounts; once there
/// are at least `min_history`, an amount above `factor` x their mean and
/// above `min_amount` is an anomaly. [`Default`] is the reference agent
/// (and the file's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendAnomalyConfig {
    /// `amount`: the amount column. Default `amount`.
    pub amount: String,
    /// `history`: amounts remembered per user (rows). Default 50; ≥ 1.
    pub history: usize,
    /// `min_history`: amounts needed before judging (rows). Default 3;
    /// 1..=history.
    pub min_history: usize,
    /// `factor`: multiple of the mean above which an amount is anomalous
    /// (exact decimal). Default 3.0; > 0.
    pub factor: Decimal,
    /// `min_amount`: amounts at or below this never alert (same unit as the
    /// column, exact decimal). Default 500; ≥ 0.
    pub min_amount: Decimal,
}

impl Default for SpendAnomalyConfig {
    fn default() -> Self {
        Self {
            amount: "amount".into(),
            history: 50,
            min_history: 3,
            factor: Decimal::new(30, 1),
            min_amount: Decimal::new(500, 0),
        }
    }
}

/// `type: velocity_score`: per user, each active rule that fires adds its
/// points; a score above `alert_above` alerts.
///
/// In a file, when both `velocity` and `high_amount` are omitted both are
/// active with their defaults (the reference agent, [`Default`]); when at
/// least one is given, only the given ones are active (`~`/null counts as
/// omitted). Fields inside a given section default individually.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityScoreConfig {
    /// `amount`: the amount column. Default `amount`.
    pub amount: String,
    /// `velocity`: the count rule, if active.
    pub velocity: Option<VelocityRule>,
    /// `high_amount`: the amount rule, if active.
    pub high_amount: Option<HighAmountRule>,
    /// `alert_above`: a score strictly above this alerts (points).
    /// Default 70; must be below the sum of the active rules' points.
    pub alert_above: u32,
    /// `allowed_lateness`: how far (event time) a row may arrive behind the
    /// newest row of its user and still count. Default `0s`.
    pub allowed_lateness: Duration,
}

impl Default for VelocityScoreConfig {
    fn default() -> Self {
        Self {
            amount: "amount".into(),
            velocity: Some(VelocityRule::default()),
            high_amount: Some(HighAmountRule::default()),
            alert_above: 70,
            allowed_lateness: Duration::ZERO,
        }
    }
}

/// `velocity:`: more than `max_count` rows in `window` scores `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityRule {
    /// `window`: event-time window ending at the row, both ends included.
    /// Default `60s`; > 0.
    pub window: Duration,
    /// `max_count`: rows allowed in the window before the rule fires.
    /// Default 5.
    pub max_count: u32,
    /// `points`: score added when it fires. Default 40.
    pub points: u32,
}

impl Default for VelocityRule {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), max_count: 5, points: 40 }
    }
}

/// `high_amount:`: an amount above `threshold` scores `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighAmountRule {
    /// `threshold`: amounts strictly above this fire the rule (exact
    /// decimal, the column's unit). Default 4000; ≥ 0.
    pub threshold: Decimal,
    /// `points`: score added when it fires. Default 50.
    pub points: u32,
}

impl Default for HighAmountRule {
    fn default() -> Self {
        Self { threshold: Decimal::new(4000, 0), points: 50 }
    }
}

/// `sink:`: output topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// `alerts`: topic for alerts, keyed by user. Required; not a source
    /// topic.
    pub alerts: String,
    /// `dead_letters`: topic for records vigil cannot read, with the reason
    /// in headers. Required; differs from `alerts` and every source topic.
    pub dead_letters: String,
    /// `delivery_timeout`: how long an alert or dead letter may be retried
    /// (broker away) before the pipeline stops rather than commit past it.
    /// Default `2m`; ≥ 1s.
    pub delivery_timeout: Duration,
    /// `transaction_timeout` (exactly-once): how long a transaction may stay
    /// open before the broker aborts it; what a crashed process that does
    /// not come back holds `read_committed` readers up for. Default: the
    /// delivery timeout; at least the delivery timeout (librdkafka refuses
    /// a delivery that may outlast its transaction).
    pub transaction_timeout: Duration,
    /// `transaction_interval` (exactly-once): how often the open
    /// transaction is committed, and so how long a `read_committed`
    /// reader may wait for an alert beyond its sending. Default `100ms`;
    /// ≥ 10ms and below the transaction timeout.
    pub transaction_interval: Duration,
}

impl SinkConfig {
    /// The default `delivery_timeout`.
    pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
    /// The default `transaction_interval`.
    pub const DEFAULT_TRANSACTION_INTERVAL: Duration = Duration::from_millis(100);
}

/// `state:`: the detectors' per-user state, kept in Kafka so that it
/// moves with its partition (restarts, crashes, rebalances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// `enabled`: write every change of a user's state to a changelog
    /// topic and restore it when a partition is assigned. Default true;
    /// false keeps state in memory only (a restart or rebalance loses it).
    pub enabled: bool,
    /// `changelog`: the changelog topic of each source topic, `{topic}`
    /// standing for the source topic's name. Default
    /// `<name>.{topic}.changelog`; must hold `{topic}` when the pipeline
    /// reads several topics; no changelog may be another topic of the
    /// pipeline.
    pub changelog: String,
    /// `idle_timeout`: a user without rows for this long (event time,
    /// against the newest row of its partition) is forgotten by every
    /// detector. Default `30d`; > 0.
    pub idle_timeout: Duration,
}

impl StateConfig {
    /// What `changelog` stands for in place of a source topic.
    pub const TOPIC_PLACEHOLDER: &'static str = "{topic}";
    /// The default `idle_timeout`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

    /// The default `changelog` of the pipeline `name`.
    pub fn default_changelog(name: &str) -> String {
        format!("{name}.{}.changelog", Self::TOPIC_PLACEHOLDER)
    }

    /// The changelog topic of `source_topic`.
    pub fn changelog_topic(&self, source_topic: &str) -> String {
        self.changelog.replace(Self::TOPIC_PLACEHOLDER, source_topic)
    }
}

#[cfg(test)]
mod tests;
