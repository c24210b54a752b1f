//! Debezium decoding: a Kafka record's value to a typed [`Row`], exactly.
//!
//! Handles Kafka Connect's JsonConverter output with a schema block
//! (`{"schema":…,"payload":…}`) or without, told apart per record; Debezium's
//! envelope (`op`, `before`, `after`, `source`) or a row flattened by
//! ExtractNewRecordState. Column values follow their Connect types
//! ([`value`]); the schema block is parsed once per table version
//! ([`schema::SchemaCache`]) and, on the fast path, not even scanned again:
//! a record whose schema bytes equal a cached block's is only compared.
//!
//! A record that cannot be decoded is a [`DecodeError`] with a reason
//! (the caller dead-letters it); tombstones, truncates, logical messages
//! and ops the pipeline does not read are [`Decoded::Skipped`].
//! Not handled here: Avro or Protobuf (refused when the pipeline loads).

pub mod schema;
pub mod value;

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{DetectorKind, EventTime as TimeConfig, Pipeline};
use crate::row::{Key, Op, Projection, Row, Value};
use crate::time::EventTime;
use schema::{ColumnType, SchemaCache, SchemaPlan, Shape};
use value::{convert, Json, JsonSeed, Role, Schemaless};

pub use crate::config::{DecimalHandling, SchemaMode};
pub use value::TimeUnit;

/// Where a row's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// A column of the pipeline's projection (by index).
    Column(usize),
    /// Debezium's `source.ts_ms` (or `__source_ts_ms` when flattened).
    SourceTsMs,
}

/// Everything the decoder needs from a pipeline, resolved to positions.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub projection: Projection,
    /// Index of the routing key column in the projection.
    pub key: usize,
    pub time: TimeSource,
    /// Per projected column: how the pipeline reads it.
    pub roles: Box<[Role]>,
    pub schemas: SchemaMode,
    pub schemaless: Schemaless,
    /// Ops decoded into rows; the others are skipped unread.
    pub ops: Box<[Op]>,
}

impl DecodeOptions {
    /// Resolves a pipeline's columns to positions and roles.
    pub fn for_pipeline(pipeline: &Pipeline) -> DecodeOptions {
        let projection = Projection::new(pipeline.columns());
        let position = |column: &str| projection.index(column).unwrap_or(0);
        let mut roles = vec![Role::Plain; projection.columns().len()];
        for detector in &pipeline.detectors {
            let amount = match &detector.kind {
                DetectorKind::SpendAnomaly(c) => &c.amount,
                DetectorKind::VelocityScore(c) => &c.amount,
            };
            let scale = pipeline.format.decimal_scales.get(amount).copied();
            roles[position(amount)] = Role::Decimal { schemaless_scale: scale };
        }
        let time = match &pipeline.rows.event_time {
            TimeConfig::Column(column) => {
                roles[position(column)] = Role::Time;
                TimeSource::Column(position(column))
            }
            TimeConfig::SourceTsMs => TimeSource::SourceTsMs,
        };
        let key = position(&pipeline.rows.key);
        roles[key] = Role::Key;
        let ops = pipeline.rows.ops.iter().chain(&pipeline.rows.warm_ops).copied().collect();
        DecodeOptions {
            key,
            time,
            roles: roles.into(),
            schemas: pipeline.format.schemas,
            schemaless: Schemaless { decimals: pipeline.format.decimals, time_unit: TimeUnit::Micros },
            ops,
            projection,
        }
    }
}

/// Why a record was not turned into a row, though nothing is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A null value (Debezium writes one after each delete).
    Tombstone,
    /// `op: t`.
    Truncate,
    /// `op: m`, a logical decoding message.
    Message,
    /// An op the pipeline does not read (not in `ops` or `warm_ops`).
    OpNotRead(Op),
}

impl Skip {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Tombstone => "tombstone",
            Skip::Truncate => "truncate",
            Skip::Message => "message",
            Skip::OpNotRead(_) => "op_not_read",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Row(Row),
    Skipped(Skip),
}

/// Why a record cannot be decoded. Its text goes into the dead letter's
/// headers; [`DecodeError::reason`] labels the metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    BadJson(String),
    #[error("not a Debezium record: {0}")]
    BadEnvelope(String),
    #[error("unreadable schema block: {0}")]
    BadSchema(String),
    #[error("unknown op {0:?} (expected c, u, d, r, t or m)")]
    UnknownOp(String),
    #[error("key column {0} is missing or null")]
    MissingKey(String),
    #[error("event time {0} is missing or null")]
    MissingEventTime(String),
    #[error("column {0} is missing or null")]
    MissingValue(String),
    #[error("column {column}: expected {expected}, got {got}")]
    WrongType { column: String, expected: &'static str, got: String },
    #[error("column {column}: {reason}")]
    BadValue { column: String, reason: String },
}

impl DecodeError {
    /// A short, bounded label for metrics and the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::BadJson(_) => "bad_json",
            DecodeError::BadEnvelope(_) => "bad_envelope",
            DecodeError::BadSchema(_) => "bad_schema",
            DecodeError::UnknownOp(_) => "unknown_op",
            DecodeError::MissingKey(_) => "missing_key",
            DecodeError::MissingEventTime(_) => "missing_event_time",
            DecodeError::MissingValue(_) => "missing_value",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::BadValue { .. } => "bad_value",
        }
    }
}

fn bad_json(e: serde_json::Error) -> DecodeError {
    DecodeError::BadJson(e.to_string())
}

/// Decodes the records of one topic. Keeps the schema blocks it has seen,
/// so it lives as long as its partition is assigned.
pub struct Decoder {
    options: DecodeOptions,
    cache: SchemaCache,
    inferred_envelope: Arc<SchemaPlan>,
    inferred_flat: Arc<SchemaPlan>,
    /// The table name rows get when the record does not say (flattened
    /// without `__table`): the topic.
    topic_table: Arc<str>,
    last_table: Arc<str>,
}

const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_INFIX: &[u8] = b",\"payload\":";

impl Decoder {
    pub fn new(options: DecodeOptions, topic: &str) -> Decoder {
        let inferred_envelope = Arc::new(SchemaPlan::inferred(Shape::Envelope, &options.projection));
        let inferred_flat = Arc::new(SchemaPlan::inferred(Shape::Flat, &options.projection));
        let topic_table: Arc<str> = topic.into();
        Decoder {
            options,
            cache: SchemaCache::default(),
            inferred_envelope,
            inferred_flat,
            last_table: Arc::clone(&topic_table),
            topic_table,
        }
    }

    /// How many distinct schema blocks are cached (table versions seen).
    pub fn cached_schemas(&self) -> usize {
        self.cache.len()
    }

    /// Decodes one record value (`None`: a tombstone) read at `offset`.
    pub fn decode(&mut self, value: Option<&[u8]>, offset: i64) -> Result<Decoded, DecodeError> {
        let Some(bytes) = value else {
            return Ok(Decoded::Skipped(Skip::Tombstone));
        };
        if let Some((plan, payload)) = self.known_schema(bytes) {
            return self.decode_payload(&plan, payload, offset);
        }
        ensure_object(bytes)?;
        if self.options.schemas == SchemaMode::Disabled {
            return self.decode_schemaless(bytes, offset);
        }
        let envelope: SchemaEnvelope<'_> = serde_json::from_slice(bytes).map_err(not_a_record)?;
        match (envelope.schema.0, envelope.payload.0) {
            (Some(schema), Some(payload)) => {
                if payload.get() == "null" {
                    return Ok(Decoded::Skipped(Skip::Tombstone));
                }
                if schema.get() == "null" {
                    return self.decode_schemaless(payload.get().as_bytes(), offset);
                }
                let plan = self.cache.get_or_parse(schema.get(), &self.options.projection)?;
                self.decode_payload(&plan, payload.get().as_bytes(), offset)
            }
            _ if self.options.schemas == SchemaMode::Enabled => Err(DecodeError::BadEnvelope(
                "no {\"schema\":…,\"payload\":…} envelope, but format.schemas is enabled".into(),
            )),
            _ => self.decode_schemaless(bytes, offset),
        }
    }

    /// The fast path: JsonConverter writes the schema first and compactly,
    /// so a record that starts with a cached schema block's exact bytes has
    /// that schema, and its payload is what follows. A JSON object ends
    /// where its own text says, so equal bytes mean an equal block.
    fn known_schema<'a>(&self, bytes: &'a [u8]) -> Option<(Arc<SchemaPlan>, &'a [u8])> {
        let rest = bytes.strip_prefix(SCHEMA_PREFIX)?;
        self.cache.blocks().find_map(|(block, plan)| {
            let payload = rest.strip_prefix(block)?.strip_prefix(PAYLOAD_INFIX)?.strip_suffix(b"}")?;
            Some((Arc::clone(plan), payload))
        })
    }

    fn decode_schemaless(&mut self, bytes: &[u8], offset: i64) -> Result<Decoded, DecodeError> {
        let probe: Payload<'_> = serde_json::from_slice(bytes).map_err(not_a_record)?;
        let plan =
            if probe.is_envelope() { Arc::clone(&self.inferred_envelope) } else { Arc::clone(&self.inferred_flat) };
        self.decode_payload(&plan, bytes, offset)
    }

    fn decode_payload(&mut self, plan: &SchemaPlan, payload: &[u8], offset: i64) -> Result<Decoded, DecodeError> {
        // UTF-8 is checked once here; the parsers below then read `str`
        // and borrow strings instead of validating each of them again.
        let payload = std::str::from_utf8(payload).map_err(|e| DecodeError::BadJson(format!("not UTF-8: {e}")))?;
        match plan.shape {
            Shape::Envelope => self.decode_envelope(plan, payload, offset),
            Shape::Flat => self.decode_flat(plan, payload, offset),
        }
    }

    fn decode_envelope(&mut self, plan: &SchemaPlan, payload: &str, offset: i64) -> Result<Decoded, DecodeError> {
        let p: Payload<'_> = serde_json::from_str(payload).map_err(not_a_record)?;
        let op = match p.op.as_deref() {
            None => return Err(DecodeError::BadEnvelope("no op".into())),
            Some(code) => match parse_op(code)? {
                Ok(op) => op,
                Err(skip) => return Ok(Decoded::Skipped(skip)),
            },
        };
        if !self.options.ops.contains(&op) {
            return Ok(Decoded::Skipped(Skip::OpNotRead(op)));
        }
        let image = if op == Op::Delete { &p.before } else { &p.after };
        let image = image
            .non_null()
            .ok_or_else(|| DecodeError::BadEnvelope(format!("op {op} without its {} image", image_name(op))))?;
        let mut row = self.read_row(plan, image.get(), false)?;
        let source = p.source.unwrap_or_default();
        row.extras.lsn = source.lsn;
        row.extras.ts_ms = source.ts_ms;
        let table = self.table(source.schema.as_deref(), source.table.as_deref());
        self.finish(op, row, table, offset)
    }

    fn decode_flat(&mut self, plan: &SchemaPlan, payload: &str, offset: i64) -> Result<Decoded, DecodeError> {
        let row = self.read_row(plan, payload, true)?;
        let op = match row.extras.op.as_deref() {
            Some(code) => match parse_op(code)? {
                Ok(op) => op,
                Err(skip) => return Ok(Decoded::Skipped(skip)),
            },
            None if row.extras.deleted => Op::Delete,
            None => Op::Create,
        };
        if !self.options.ops.contains(&op) {
            return Ok(Decoded::Skipped(Skip::OpNotRead(op)));
        }
        let table = self.table(row.extras.schema.as_deref(), row.extras.table.as_deref());
        self.finish(op, row, table, offset)
    }

    fn read_row<'a>(&self, plan: &SchemaPlan, image: &'a str, flat: bool) -> Result<ReadRow<'a>, DecodeError> {
        let seed = RowSeed { options: &self.options, types: &plan.types, flat };
        let mut de = serde_json::Deserializer::from_str(image);
        let mut row = seed.deserialize(&mut de).map_err(not_a_record)?;
        de.end().map_err(bad_json)?;
        match row.error.take() {
            Some(e) => Err(e),
            None => Ok(row),
        }
    }

    /// The schema-qualified table, reusing the last one's allocation.
    fn table(&mut self, schema: Option<&str>, table: Option<&str>) -> Arc<str> {
        let Some(table) = table else {
            return Arc::clone(&self.topic_table);
        };
        let same = match schema {
            Some(schema) => self
                .last_table
                .strip_prefix(schema)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| rest == table),
            None => &*self.last_table == table,
        };
        if !same {
            self.last_table = match schema {
                Some(schema) => format!("{schema}.{table}").into(),
                None => table.into(),
            };
        }
        Arc::clone(&self.last_table)
    }

    fn finish(&self, op: Op, row: ReadRow<'_>, table: Arc<str>, offset: i64) -> Result<Decoded, DecodeError> {
        let options = &self.options;
        let name = |i: usize| options.projection.columns()[i].clone();
        let key = match &row.values[options.key] {
            Value::Int(i) => Key::Int(*i),
            Value::Text(s) => Key::Text(s.clone()),
            _ => return Err(DecodeError::MissingKey(name(options.key))),
        };
        let event_time = match options.time {
            TimeSource::Column(i) => match row.values[i] {
                Value::Time(t) => t,
                _ => return Err(DecodeError::MissingEventTime(name(i))),
            },
            TimeSource::SourceTsMs => row
                .extras
                .ts_ms
                .and_then(EventTime::from_millis)
                .ok_or_else(|| DecodeError::MissingEventTime("source.ts_ms".into()))?,
        };
        for (i, role) in options.roles.iter().enumerate() {
            if matches!(role, Role::Decimal { .. }) && row.values[i] == Value::Null {
                return Err(DecodeError::MissingValue(name(i)));
            }
        }
        Ok(Decoded::Row(Row { op, key, event_time, values: row.values, table, lsn: row.extras.lsn, offset }))
    }
}

fn image_name(op: Op) -> &'static str {
    if op == Op::Delete {
        "before"
    } else {
        "after"
    }
}

/// `Ok(Ok(op))` for a row op, `Ok(Err(skip))` for t and m.
fn parse_op(code: &str) -> Result<Result<Op, Skip>, DecodeError> {
    match code {
        "t" => Ok(Err(Skip::Truncate)),
        "m" => Ok(Err(Skip::Message)),
        other => other.parse::<Op>().map(Ok).map_err(|_| DecodeError::UnknownOp(other.to_owned())),
    }
}

/// Serde would read a struct from an array too: a record must be an object.
fn ensure_object(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(());
    }
    match serde_json::from_slice::<IgnoredAny>(bytes) {
        Ok(_) => Err(DecodeError::BadEnvelope("expected a JSON object".into())),
        Err(e) => Err(bad_json(e)),
    }
}

/// A JSON syntax error stays `BadJson`; valid JSON of the wrong shape (an
/// array, a number, a field of the wrong type) is not a Debezium record.
fn not_a_record(e: serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::BadEnvelope(e.to_string()),
        _ => bad_json(e),
    }
}

/// A string of the record, borrowed when it has no escapes (serde's own
/// `Cow<str>` always copies; this is per record, several times).
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Borrowing;
        impl<'de> Visitor<'de> for Borrowing {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(Borrowing).map(Text)
    }
}

/// `{"schema": …, "payload": …}`, any other fields ignored.
#[derive(Deserialize)]
struct SchemaEnvelope<'a> {
    #[serde(borrow, default)]
    schema: Field<'a>,
    #[serde(borrow, default)]
    payload: Field<'a>,
}

/// The parts of Debezium's payload vigil reads.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    op: Option<Text<'a>>,
    #[serde(borrow, default)]
    before: Field<'a>,
    #[serde(borrow, default)]
    after: Field<'a>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
}

impl Payload<'_> {
    /// Debezium's envelope has `op` beside `before`/`after` (null for
    /// truncates and messages); a flattened row has `__op` if anything.
    fn is_envelope(&self) -> bool {
        self.op.is_some() && (self.before.0.is_some() || self.after.0.is_some())
    }
}

/// A field that tells "absent" (`Field(None)`) from "null" (`Some("null")`).
#[derive(Default)]
struct Field<'a>(Option<&'a RawValue>);

impl<'a> Field<'a> {
    fn non_null(&self) -> Option<&'a RawValue> {
        self.0.filter(|raw| raw.get() != "null")
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Field(Some(raw)))
    }
}

#[derive(Deserialize, Default)]
struct Source<'a> {
    #[serde(borrow, default)]
    schema: Option<Text<'a>>,
    #[serde(borrow, default)]
    table: Option<Text<'a>>,
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

/// The projected values of one row image, plus the metadata fields a
/// flattened record carries beside its columns.
struct ReadRow<'a> {
    values: Box<[Value]>,
    extras: Extras<'a>,
    /// The first column that could not be converted: the row is kept
    /// reading to the end (so the JSON is checked whole), then refused.
    error: Option<DecodeError>,
}

#[derive(Default)]
struct Extras<'a> {
    op: Option<Text<'a>>,
    deleted: bool,
    lsn: Option<i64>,
    ts_ms: Option<i64>,
    table: Option<Text<'a>>,
    schema: Option<Text<'a>>,
}

/// Reads a row object, converting only the projected columns and skipping
/// the rest unparsed.
struct RowSeed<'o> {
    options: &'o DecodeOptions,
    types: &'o [ColumnType],
    flat: bool,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ReadRow<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ReadRow<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ReadRow<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadRow<'de>, A::Error> {
        let columns = self.options.projection.columns();
        let mut values = vec![Value::Null; columns.len()].into_boxed_slice();
        let mut extras = Extras::default();
        let mut error = None;
        while let Some(name) = map.next_key::<Text<'de>>()? {
            if let Some(i) = columns.iter().position(|c| **c == *name) {
                let json = map.next_value_seed(JsonSeed)?;
                match convert(&columns[i], self.types[i], self.options.roles[i], json, &self.options.schemaless) {
                    Ok(value) => values[i] = value,
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
                continue;
            }
            if self.flat {
                match &*name {
                    "__op" => extras.op = map.next_value()?,
                    "__deleted" => extras.deleted = deleted_flag(map.next_value_seed(JsonSeed)?),
                    "__lsn" => extras.lsn = map.next_value()?,
                    "__source_ts_ms" => extras.ts_ms = map.next_value()?,
                    "__table" => extras.table = map.next_value()?,
                    "__schema" => extras.schema = map.next_value()?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ReadRow { values, extras, error })
    }
}

/// ExtractNewRecordState writes `__deleted` as the string "true"/"false"
/// (or a boolean, in newer versions).
fn deleted_flag(json: Json<'_>) -> bool {
    matches!(json, Json::Bool(true)) || matches!(json, Json::Str(ref s) if s == "true")
}

#[cfg(test)]
mod tests;
