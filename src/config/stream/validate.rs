//! Semantic validation of a streaming pipeline file: turns a parsed file
//! (`raw.rs`) into a [`Pipeline`], applying defaults and checking every
//! rule, and collects *every* problem (with its path and the location of
//! the offending value) instead of stopping at the first. The reporting
//! and the checks shared with batch files are `config/validator.rs`'s
//! `Validator`; the streaming rules are added to it here.
//!
//! Cross-field messages name both fields and both values. Deliberately not
//! checked here: anything that needs a running broker or database (topic
//! or column existence, reachability of `source.brokers`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_saphyr::Location;

use super::raw::{
    DetectorType, RawDetector, RawFormat, RawHighAmount, RawPipeline, RawRows, RawSink, RawSource, RawState,
    RawVelocity,
};
use super::{
    DecimalHandling, DetectorConfig, DetectorKind, EventTime, FormatConfig, Guarantee, HighAmountRule, Pipeline,
    RowsConfig, SchemaMode, SinkConfig, SourceConfig, SpendAnomalyConfig, StateConfig, VelocityRule,
    VelocityScoreConfig,
};
use crate::config::interpolate::ColumnMap;
use crate::config::spanned::S;
use crate::config::validator::{key_path, Validator};
use crate::config::Problem;
use crate::config::{decimal, duration};
use crate::row::Op;

/// librdkafka properties vigil sets itself, with what to do instead.
const RESERVED_PROPERTIES: [(&str, &str); 7] = [
    ("bootstrap.servers", "set source.brokers instead"),
    ("group.id", "set source.group instead"),
    ("auto.offset.reset", "set source.start_from instead"),
    ("enable.auto.commit", "it commits an offset only once the alerts it caused are in Kafka"),
    ("enable.auto.offset.store", "it stores an offset only once the alerts it caused are in Kafka"),
    ("enable.partition.eof", "it reads partitions as endless streams"),
    (
        "partition.assignment.strategy",
        "it uses cooperative-sticky, so its partition actors can drain before a partition is revoked",
    ),
];

/// rust_decimal's largest scale.
const MAX_SCALE: u32 = 28;

/// Validates `raw`; `columns` maps locations back to the file.
pub(in crate::config) fn validate(
    raw: RawPipeline,
    file: PathBuf,
    columns: &ColumnMap,
) -> Result<Pipeline, Vec<Problem>> {
    let mut v = Validator { problems: Vec::new(), columns };
    let name = v.name("name", &raw.name);
    let source = v.source(raw.source);
    let rows = v.rows(raw.rows);
    let detectors = v.detectors(raw.detectors);
    let format = v.format(raw.format, &detectors);
    // Where the transaction settings were written: they mean something
    // only with exactly-once.
    let transaction_settings: Vec<(&str, Location)> = [
        ("sink.transaction_timeout", &raw.sink.value.transaction_timeout),
        ("sink.transaction_interval", &raw.sink.value.transaction_interval),
    ]
    .into_iter()
    .filter_map(|(path, text)| text.as_ref().map(|t| (path, t.referenced)))
    .collect();
    let sink = v.sink(raw.sink, &source.topics);
    let state = v.state(raw.state, &name, &source.topics, &sink);
    let guarantee = v.guarantee(raw.guarantee, &state, &transaction_settings);

    let mut problems = v.problems;
    if !problems.is_empty() {
        // File order; problems without a line (none today) last.
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(problems);
    }
    Ok(Pipeline { name, file, source, format, rows, detectors, sink, state, guarantee })
}

impl Validator<'_> {
    /// A non-empty list of non-empty, distinct column names.
    fn columns_list(&mut self, path: &str, list: &S<Vec<S<String>>>) -> Vec<String> {
        if list.value.is_empty() {
            self.report(&list.referenced, path, "list at least one column");
        }
        for (i, column) in list.value.iter().enumerate() {
            let item = format!("{path}[{i}]");
            self.non_empty(&item, column);
            if let Some(first) = list.value[..i].iter().position(|c| c.value == column.value) {
                self.report(
                    &column.referenced,
                    item,
                    format!("duplicate column {} (also {path}[{first}])", column.value),
                );
            }
        }
        list.value.iter().map(|c| c.value.clone()).collect()
    }

    fn ops(&mut self, path: &str, list: &S<Vec<S<Op>>>) -> Vec<Op> {
        for (i, op) in list.value.iter().enumerate() {
            if let Some(first) = list.value[..i].iter().position(|o| o.value == op.value) {
                self.report(
                    &op.referenced,
                    format!("{path}[{i}]"),
                    format!("duplicate op {} (also {path}[{first}])", op.value),
                );
            }
        }
        list.value.iter().map(|o| o.value).collect()
    }

    /// A count that bounds something, so 0 is refused; `default` when
    /// absent (or refused).
    fn at_least_one<T: Copy + PartialEq + From<u8>>(&mut self, raw: &Option<S<T>>, path: &str, default: T) -> T {
        match raw {
            Some(n) if n.value == T::from(0) => {
                self.report(&n.referenced, path, "must be ≥ 1 (got 0)");
                default
            }
            Some(n) => n.value,
            None => default,
        }
    }

    fn decimal(&mut self, path: &str, text: &S<String>) -> Option<Decimal> {
        match decimal::parse_decimal(&text.value) {
            Ok(d) => Some(d),
            Err(message) => {
                self.report(&text.referenced, path, message);
                None
            }
        }
    }

    fn source(&mut self, raw: S<RawSource>) -> SourceConfig {
        let raw = raw.value;
        let brokers = self.brokers("source.brokers", &raw.brokers);
        let group = self.non_empty("source.group", &raw.group);

        if raw.topics.value.is_empty() {
            self.report(&raw.topics.referenced, "source.topics", "list at least one topic");
        }
        let mut topics = Vec::new();
        for (i, topic) in raw.topics.value.iter().enumerate() {
            let path = format!("source.topics[{i}]");
            topics.push(self.topic(&path, topic));
            if let Some(first) = raw.topics.value[..i].iter().position(|t| t.value == topic.value) {
                self.report(
                    &topic.referenced,
                    path,
                    format!("duplicate topic {} (also source.topics[{first}])", topic.value),
                );
            }
        }

        let mut properties = BTreeMap::new();
        for (key, value) in raw.properties.unwrap_or_default() {
            let path = key_path("source.properties", &key);
            if key.trim().is_empty() {
                self.report(&value.referenced, &path, "empty property name");
            } else if let Some((_, instead)) = RESERVED_PROPERTIES.iter().find(|(k, _)| *k == key) {
                self.report(&value.referenced, &path, format!("vigil sets {key} itself; {instead}"));
            }
            properties.insert(key, value.value);
        }

        SourceConfig {
            brokers,
            topics,
            group,
            start_from: raw.start_from.map(|s| s.value).unwrap_or_default(),
            properties,
        }
    }

    /// `detectors` is validated first: the format rule needs the amount
    /// columns.
    fn format(&mut self, raw: S<RawFormat>, detectors: &[DetectorConfig]) -> FormatConfig {
        let section = raw.referenced;
        let raw = raw.value;
        if raw.kind.value != "debezium-json" {
            self.report(
                &raw.kind.referenced,
                "format.type",
                format!(
                    "vigil reads only debezium-json (got {:?}): Debezium's change events as Kafka Connect's JsonConverter writes them \
                     (key.converter and value.converter = org.apache.kafka.connect.json.JsonConverter), with or without schemas; \
                     configure the connector that way",
                    raw.kind.value
                ),
            );
        }
        let schemas = raw.schemas.as_ref().map(|s| s.value).unwrap_or_default();
        let decimals = raw.decimals.as_ref().map(|d| d.value).unwrap_or_default();

        let mut decimal_scales = BTreeMap::new();
        if let Some(scales) = &raw.decimal_scales {
            for (column, scale) in &scales.value {
                let path = key_path("format.decimal_scales", column);
                if column.trim().is_empty() {
                    self.report(&scale.referenced, &path, "empty column name");
                }
                if scale.value > MAX_SCALE {
                    self.report(&scale.referenced, &path, format!("must be ≤ {MAX_SCALE} (got {})", scale.value));
                }
                decimal_scales.insert(column.clone(), scale.value);
            }
        }

        if schemas == SchemaMode::Disabled && decimals == DecimalHandling::Precise {
            let at = raw
                .decimal_scales
                .as_ref()
                .map(|s| s.referenced)
                .or(raw.decimals.as_ref().map(|d| d.referenced))
                .or(raw.schemas.as_ref().map(|s| s.referenced))
                .unwrap_or(section);
            let mut missing: Vec<&str> = Vec::new();
            for column in detectors.iter().map(DetectorConfig::amount) {
                if !decimal_scales.contains_key(column) && !missing.contains(&column) {
                    missing.push(column);
                }
            }
            for column in missing {
                self.report(
                    &at,
                    "format.decimal_scales",
                    format!(
                        "records without a schema carry precise decimals without their scale; \
                         declare a scale for column {column} (e.g. decimal_scales: {{{column}: 2}}) \
                         or set format.decimals to string or double \
                         (format.schemas is disabled, format.decimals is precise)"
                    ),
                );
            }
        }

        FormatConfig { schemas, decimals, decimal_scales }
    }

    fn rows(&mut self, raw: S<RawRows>) -> RowsConfig {
        let raw = raw.value;
        let key = self.non_empty("rows.key", &raw.key);
        let event_time = if raw.event_time.value == EventTime::SOURCE_TS_MS {
            EventTime::SourceTsMs
        } else {
            EventTime::Column(self.non_empty("rows.event_time", &raw.event_time))
        };
        let primary_key = match &raw.primary_key {
            Some(list) => self.columns_list("rows.primary_key", list),
            None => vec!["id".to_owned()],
        };

        let ops = match &raw.ops {
            Some(list) => {
                if list.value.is_empty() {
                    self.report(&list.referenced, "rows.ops", "list at least one op (c, u, d or r)");
                }
                self.ops("rows.ops", list)
            }
            None => vec![Op::Create],
        };
        let warm_ops = match &raw.warm_ops {
            Some(list) => self.ops("rows.warm_ops", list),
            None => vec![Op::Read],
        };

        // Overlap: point at the warm op if written, else at the op.
        for (i, op) in warm_ops.iter().enumerate() {
            if !ops.contains(op) {
                continue;
            }
            let (at, path) = match (&raw.warm_ops, &raw.ops) {
                (Some(w), _) => (w.value[i].referenced, format!("rows.warm_ops[{i}]")),
                (None, Some(o)) => {
                    let j = o.value.iter().position(|x| x.value == *op).unwrap_or(0);
                    (o.value[j].referenced, format!("rows.ops[{j}]"))
                }
                (None, None) => continue, // the defaults do not overlap
            };
            self.report(
                &at,
                path,
                format!(
                    "{op} is in both rows.ops ({}) and rows.warm_ops ({}): an op either feeds the detectors \
                     and may alert (ops) or only warms their state (warm_ops)",
                    op_list(&ops),
                    op_list(&warm_ops)
                ),
            );
        }

        let max_key_bytes =
            self.at_least_one(&raw.max_key_bytes, "rows.max_key_bytes", RowsConfig::DEFAULT_MAX_KEY_BYTES);
        let max_future = match &raw.max_future {
            Some(text) => match self.duration("rows.max_future", text) {
                Some(d) if d.is_zero() => {
                    self.report(&text.referenced, "rows.max_future", format!("must be > 0 (got {})", text.value));
                    RowsConfig::DEFAULT_MAX_FUTURE
                }
                Some(d) => d,
                None => RowsConfig::DEFAULT_MAX_FUTURE,
            },
            None => RowsConfig::DEFAULT_MAX_FUTURE,
        };
        let max_attempts = self.at_least_one(&raw.max_attempts, "rows.max_attempts", RowsConfig::DEFAULT_MAX_ATTEMPTS);
        RowsConfig { key, event_time, primary_key, ops, warm_ops, max_key_bytes, max_future, max_attempts }
    }

    fn detectors(&mut self, raw: S<Vec<S<RawDetector>>>) -> Vec<DetectorConfig> {
        if raw.value.is_empty() {
            self.report(&raw.referenced, "detectors", "list at least one detector (spend_anomaly or velocity_score)");
        }
        let mut detectors: Vec<DetectorConfig> = Vec::new();
        // For duplicate names: where each name was set, and whether by default.
        let mut names: Vec<(String, bool)> = Vec::new();
        for (i, d) in raw.value.into_iter().enumerate() {
            let path = format!("detectors[{i}]");
            let at_type = d.value.kind.referenced;
            let d = d.value;
            let kind = d.kind.value;
            self.foreign_fields(&path, &d);

            let (name, defaulted) = match &d.name {
                Some(n) => (self.name(&format!("{path}.name"), n), false),
                None => (kind.as_str().replace('_', "-"), true),
            };
            if let Some(first) = names.iter().position(|(n, _)| *n == name) {
                let at = d.name.as_ref().map_or(at_type, |n| n.referenced);
                let how = match (names[first].1, defaulted) {
                    (false, false) => String::new(),
                    _ => format!(
                        "; an unnamed detector is named after its type, so give each {} its own name",
                        kind.as_str()
                    ),
                };
                self.report(
                    &at,
                    format!("{path}.name"),
                    format!("duplicate detector name {name} (also detectors[{first}].name){how}"),
                );
            }
            names.push((name.clone(), defaulted));

            let amount = match &d.amount {
                Some(a) => self.non_empty(&format!("{path}.amount"), a),
                None => "amount".to_owned(),
            };
            let kind = match kind {
                DetectorType::SpendAnomaly => DetectorKind::SpendAnomaly(self.spend_anomaly(&path, &d, amount)),
                DetectorType::VelocityScore => {
                    DetectorKind::VelocityScore(self.velocity_score(&path, &d, amount, at_type))
                }
            };
            detectors.push(DetectorConfig { name, kind });
        }
        detectors
    }

    /// Refuses fields that belong to another detector type.
    fn foreign_fields(&mut self, path: &str, d: &RawDetector) {
        let kind = d.kind.value;
        let present: [(&str, Option<&Location>); 11] = [
            ("name", d.name.as_ref().map(|s| &s.referenced)),
            ("amount", d.amount.as_ref().map(|s| &s.referenced)),
            ("history", d.history.as_ref().map(|s| &s.referenced)),
            ("min_history", d.min_history.as_ref().map(|s| &s.referenced)),
            ("factor", d.factor.as_ref().map(|s| &s.referenced)),
            ("min_amount", d.min_amount.as_ref().map(|s| &s.referenced)),
            ("velocity", d.velocity.as_ref().map(|s| &s.referenced)),
            ("high_amount", d.high_amount.as_ref().map(|s| &s.referenced)),
            ("alert_above", d.alert_above.as_ref().map(|s| &s.referenced)),
            ("allowed_lateness", d.allowed_lateness.as_ref().map(|s| &s.referenced)),
            ("idle_timeout", d.idle_timeout.as_ref().map(|s| &s.referenced)),
        ];
        for (field, at) in present {
            let Some(at) = at else { continue };
            if kind.fields().contains(&field) {
                continue;
            }
            if field == "idle_timeout" {
                self.report(
                    at,
                    format!("{path}.idle_timeout"),
                    "moved to state.idle_timeout, which forgets an idle user for every detector at once",
                );
                continue;
            }
            let owner = [DetectorType::SpendAnomaly, DetectorType::VelocityScore]
                .into_iter()
                .find(|t| t.fields().contains(&field))
                .map_or(String::new(), |t| format!(" (it belongs to {})", t.as_str()));
            self.report(
                at,
                format!("{path}.{field}"),
                format!(
                    "not a field of type {}{owner}; {} takes type, {}",
                    kind.as_str(),
                    kind.as_str(),
                    kind.fields().join(", ")
                ),
            );
        }
    }

    fn spend_anomaly(&mut self, path: &str, d: &RawDetector, amount: String) -> SpendAnomalyConfig {
        let defaults = SpendAnomalyConfig::default();
        let history = d.history.as_ref().map_or(defaults.history, |h| h.value);
        let min_history = d.min_history.as_ref().map_or(defaults.min_history, |m| m.value);
        if let Some(h) = &d.history {
            if h.value < 1 {
                self.report(&h.referenced, format!("{path}.history"), format!("must be ≥ 1 (got {})", h.value));
            }
        }
        if let Some(m) = &d.min_history {
            if m.value < 1 {
                self.report(&m.referenced, format!("{path}.min_history"), format!("must be ≥ 1 (got {})", m.value));
            } else if history >= 1 && m.value > history {
                let default = if d.history.is_none() { ", the default history" } else { "" };
                self.report(
                    &m.referenced,
                    format!("{path}.min_history"),
                    format!("must be ≤ history (got {} > {history}{default})", m.value),
                );
            }
        } else if history < defaults.min_history && history >= 1 {
            // Only reachable with a small explicit history.
            if let Some(h) = &d.history {
                self.report(
                    &h.referenced,
                    format!("{path}.history"),
                    format!(
                        "must be ≥ min_history (got {history} < {}, the default min_history); set min_history too",
                        defaults.min_history
                    ),
                );
            }
        }

        let mut factor = defaults.factor;
        if let Some(text) = &d.factor {
            if let Some(f) = self.decimal(&format!("{path}.factor"), text) {
                if f <= Decimal::ZERO {
                    self.report(
                        &text.referenced,
                        format!("{path}.factor"),
                        format!("must be > 0 (got {})", text.value),
                    );
                }
                factor = f;
            }
        }
        let mut min_amount = defaults.min_amount;
        if let Some(text) = &d.min_amount {
            if let Some(m) = self.decimal(&format!("{path}.min_amount"), text) {
                if m < Decimal::ZERO {
                    self.report(
                        &text.referenced,
                        format!("{path}.min_amount"),
                        format!("must be ≥ 0 (got {})", text.value),
                    );
                }
                min_amount = m;
            }
        }
        SpendAnomalyConfig { amount, history, min_history, factor, min_amount }
    }

    fn velocity_score(
        &mut self,
        path: &str,
        d: &RawDetector,
        amount: String,
        at_type: Location,
    ) -> VelocityScoreConfig {
        let defaults = VelocityScoreConfig::default();
        // Both sections omitted: the reference agent, both rules with their
        // defaults. Otherwise only the given sections are active.
        let (velocity, high_amount) = match (&d.velocity, &d.high_amount) {
            (None, None) => (defaults.velocity, defaults.high_amount),
            (v, h) => (
                v.as_ref().map(|v| self.velocity_rule(path, &v.value)),
                h.as_ref().map(|h| self.high_amount_rule(path, &h.value)),
            ),
        };
        let alert_above = d.alert_above.as_ref().map_or(defaults.alert_above, |a| a.value);

        let velocity_points = velocity.as_ref().map(|v| v.points);
        let high_points = high_amount.as_ref().map(|h| h.points);
        let max_score = u64::from(velocity_points.unwrap_or(0)) + u64::from(high_points.unwrap_or(0));
        if max_score <= u64::from(alert_above) {
            let parts: Vec<String> = [
                velocity_points.map(|p| format!("velocity.points {p}")),
                high_points.map(|p| format!("high_amount.points {p}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            let default = if d.alert_above.is_none() { " (the default)" } else { "" };
            self.report(
                d.alert_above.as_ref().map_or(&at_type, |a| &a.referenced),
                format!("{path}.alert_above"),
                format!(
                    "no row can score above {alert_above}{default}: the highest score is {max_score} ({}); \
                     lower alert_above or raise the points",
                    parts.join(" + ")
                ),
            );
        }

        let allowed_lateness = match &d.allowed_lateness {
            Some(text) => self.duration(&format!("{path}.allowed_lateness"), text).unwrap_or(Duration::ZERO),
            None => defaults.allowed_lateness,
        };
        VelocityScoreConfig { amount, velocity, high_amount, alert_above, allowed_lateness }
    }

    fn velocity_rule(&mut self, path: &str, raw: &RawVelocity) -> VelocityRule {
        let defaults = VelocityRule::default();
        let mut window = defaults.window;
        if let Some(text) = &raw.window {
            let field = format!("{path}.velocity.window");
            if let Some(w) = self.duration(&field, text) {
                if w.is_zero() {
                    self.report(&text.referenced, field, format!("must be > 0 (got {})", text.value));
                }
                window = w;
            }
        }
        VelocityRule {
            window,
            max_count: raw.max_count.as_ref().map_or(defaults.max_count, |m| m.value),
            points: raw.points.as_ref().map_or(defaults.points, |p| p.value),
        }
    }

    fn high_amount_rule(&mut self, path: &str, raw: &RawHighAmount) -> HighAmountRule {
        let defaults = HighAmountRule::default();
        let mut threshold = defaults.threshold;
        if let Some(text) = &raw.threshold {
            let field = format!("{path}.high_amount.threshold");
            if let Some(t) = self.decimal(&field, text) {
                if t < Decimal::ZERO {
                    self.report(&text.referenced, field, format!("must be ≥ 0 (got {})", text.value));
                }
                threshold = t;
            }
        }
        HighAmountRule { threshold, points: raw.points.as_ref().map_or(defaults.points, |p| p.value) }
    }

    fn sink(&mut self, raw: S<RawSink>, source_topics: &[String]) -> SinkConfig {
        let raw = raw.value;
        let alerts = self.topic("sink.alerts", &raw.alerts);
        let dead_letters = self.topic("sink.dead_letters", &raw.dead_letters);
        if dead_letters == alerts {
            self.report(
                &raw.dead_letters.referenced,
                "sink.dead_letters",
                format!("must differ from sink.alerts (both {alerts})"),
            );
        }
        for (field, value) in [("alerts", &raw.alerts), ("dead_letters", &raw.dead_letters)] {
            if let Some(i) = source_topics.iter().position(|t| *t == value.value) {
                self.report(
                    &value.referenced,
                    format!("sink.{field}"),
                    format!(
                        "must differ from source.topics[{i}] (both {}): vigil would read what it writes",
                        value.value
                    ),
                );
            }
        }
        let default = SinkConfig::DEFAULT_DELIVERY_TIMEOUT;
        let delivery_timeout =
            self.at_least("sink.delivery_timeout", raw.delivery_timeout.as_ref(), Duration::from_secs(1), default);
        let transaction_timeout = match &raw.transaction_timeout {
            Some(text) => {
                let timeout =
                    self.at_least("sink.transaction_timeout", Some(text), Duration::from_secs(1), delivery_timeout);
                if timeout < delivery_timeout {
                    self.report(
                        &text.referenced,
                        "sink.transaction_timeout",
                        format!(
                            "must be ≥ sink.delivery_timeout ({}; got {}): a delivery may not outlast its transaction",
                            duration::display(delivery_timeout),
                            text.value
                        ),
                    );
                }
                timeout
            }
            None => delivery_timeout,
        };
        let transaction_interval = self.at_least(
            "sink.transaction_interval",
            raw.transaction_interval.as_ref(),
            Duration::from_millis(10),
            SinkConfig::DEFAULT_TRANSACTION_INTERVAL,
        );
        if let Some(text) = &raw.transaction_interval {
            if transaction_interval >= transaction_timeout {
                self.report(
                    &text.referenced,
                    "sink.transaction_interval",
                    format!(
                        "must be below sink.transaction_timeout ({}; got {})",
                        duration::display(transaction_timeout),
                        text.value
                    ),
                );
            }
        }
        SinkConfig { alerts, dead_letters, delivery_timeout, transaction_timeout, transaction_interval }
    }

    /// The duration at `path`, reported when below `min`; `default` when
    /// absent or bad.
    fn at_least(&mut self, path: &str, text: Option<&S<String>>, min: Duration, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match self.duration(path, text) {
            Some(d) if d < min => {
                self.report(
                    &text.referenced,
                    path,
                    format!("must be ≥ {} (got {})", duration::display(min), text.value),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// `guarantee`; exactly-once needs the state kept in the changelog,
    /// where a transaction can hold it with the alerts.
    fn guarantee(
        &mut self,
        raw: Option<S<Guarantee>>,
        state: &StateConfig,
        transaction_settings: &[(&str, Location)],
    ) -> Guarantee {
        let guarantee = raw.as_ref().map(|r| r.value).unwrap_or_default();
        if guarantee != Guarantee::ExactlyOnce {
            for (path, at) in transaction_settings {
                self.report(at, *path, "applies only with guarantee: exactly_once");
            }
        }
        let Some(raw) = raw else { return guarantee };
        if raw.value == Guarantee::ExactlyOnce && !state.enabled {
            self.report(
                &raw.referenced,
                "guarantee",
                "exactly_once needs the detectors' state in its changelog (state.enabled: true): \
                 state kept in memory only is lost on a restart, and the alerts after it would differ",
            );
        }
        raw.value
    }
}

impl Validator<'_> {
    fn state(
        &mut self,
        raw: Option<S<RawState>>,
        name: &str,
        source_topics: &[String],
        sink: &SinkConfig,
    ) -> StateConfig {
        let raw = raw.map(|r| r.value);
        let raw = raw.as_ref();
        let enabled = raw.and_then(|r| r.enabled.as_ref()).is_none_or(|e| e.value);
        let changelog = match raw.and_then(|r| r.changelog.as_ref()) {
            Some(template) => {
                self.changelog(template, source_topics, sink);
                template.value.clone()
            }
            None => StateConfig::default_changelog(name),
        };
        let default = StateConfig::DEFAULT_IDLE_TIMEOUT;
        let idle_timeout = match raw.and_then(|r| r.idle_timeout.as_ref()) {
            Some(text) => match self.duration("state.idle_timeout", text) {
                Some(d) if d.is_zero() => {
                    self.report(&text.referenced, "state.idle_timeout", format!("must be > 0 (got {})", text.value));
                    default
                }
                Some(d) => d,
                None => default,
            },
            None => default,
        };
        StateConfig { enabled, changelog, idle_timeout }
    }

    /// Every changelog the template names is a valid topic, one per source
    /// topic, and none is a topic the pipeline reads or writes.
    fn changelog(&mut self, template: &S<String>, source_topics: &[String], sink: &SinkConfig) {
        let path = "state.changelog";
        let placeholder = StateConfig::TOPIC_PLACEHOLDER;
        if source_topics.len() > 1 && !template.value.contains(placeholder) {
            self.report(
                &template.referenced,
                path,
                format!(
                    "must hold {placeholder} (the pipeline reads {} topics, and each needs a changelog of its own), \
                     e.g. {placeholder}.changelog",
                    source_topics.len()
                ),
            );
            return;
        }
        for source in source_topics {
            let topic = template.value.replace(placeholder, source);
            let named = S { value: topic.clone(), referenced: template.referenced, defined: template.defined };
            let before = self.problems.len();
            self.topic(path, &named);
            if self.problems.len() > before {
                return;
            }
            let others = source_topics
                .iter()
                .map(|t| ("source.topics", t))
                .chain([("sink.alerts", &sink.alerts), ("sink.dead_letters", &sink.dead_letters)]);
            for (field, other) in others {
                if *other == topic {
                    self.report(
                        &template.referenced,
                        path,
                        format!("names {topic}, which is also {field}: a changelog is a topic of its own"),
                    );
                }
            }
        }
    }
}

fn op_list(ops: &[Op]) -> String {
    let codes: Vec<&str> = ops.iter().map(|o| o.code()).collect();
    format!("[{}]", codes.join(", "))
}
