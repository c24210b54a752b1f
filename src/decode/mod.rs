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

mod reader;
pub mod schema;
mod shape;
pub mod value;

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{DetectorConfig, EventTime as TimeConfig, Pipeline};
use crate::row::{Key, Op, Projection, Row, Value};
use crate::stage::Panicked;
use crate::time::EventTime;
use reader::Reader;
use schema::{SchemaCache, SchemaPlan, Shape};
use shape::PayloadShape;
use value::{convert, Json, Role, Schemaless};

pub use crate::config::{DecimalHandling, SchemaMode};
pub use value::{quoted, TimeUnit};

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
    /// A text key longer than this (bytes) is a bad value.
    pub max_key_bytes: usize,
    /// How far ahead of the wall clock an event time may be (µs).
    pub max_future_us: i64,
}

impl DecodeOptions {
    /// Resolves a pipeline's columns to positions and roles: each column
    /// the pipeline reads is its key, its event time, an amount (an exact
    /// decimal), or plain, in that order of precedence.
    pub fn for_pipeline(pipeline: &Pipeline) -> DecodeOptions {
        let projection = Projection::new(pipeline.columns());
        let time_column = match &pipeline.rows.event_time {
            TimeConfig::Column(column) => Some(column.as_str()),
            TimeConfig::SourceTsMs => None,
        };
        let role = |column: &String| {
            if *column == pipeline.rows.key {
                Role::Key
            } else if Some(column.as_str()) == time_column {
                Role::Time
            } else if pipeline.detectors.iter().map(DetectorConfig::amount).any(|amount| amount == column) {
                Role::Decimal { schemaless_scale: pipeline.format.decimal_scales.get(column).copied() }
            } else {
                Role::Plain
            }
        };
        let roles: Vec<Role> = projection.columns().iter().map(role).collect();
        // `columns()` holds the key and the event-time column, each once.
        let position = |wanted: &Role| roles.iter().position(|r| r == wanted).unwrap_or(0);
        let key = position(&Role::Key);
        let time = match time_column {
            Some(_) => TimeSource::Column(position(&Role::Time)),
            None => TimeSource::SourceTsMs,
        };
        let ops = pipeline.rows.ops.iter().chain(&pipeline.rows.warm_ops).copied().collect();
        DecodeOptions {
            key,
            time,
            roles: roles.into(),
            schemas: pipeline.format.schemas,
            schemaless: Schemaless { decimals: pipeline.format.decimals, time_unit: TimeUnit::Micros },
            ops,
            projection,
            max_key_bytes: pipeline.rows.max_key_bytes,
            max_future_us: i64::try_from(pipeline.rows.max_future.as_micros()).unwrap_or(i64::MAX),
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
    pub fn reason(self) -> SkipReason {
        match self {
            Skip::Tombstone => SkipReason::Tombstone,
            Skip::Truncate => SkipReason::Truncate,
            Skip::Message => SkipReason::Message,
            Skip::OpNotRead(_) => SkipReason::OpNotRead,
        }
    }
}

crate::label_values! {
    /// The `reason` label of skipped records, one per [`Skip`].
    pub enum SkipReason {
        Tombstone => "tombstone",
        Truncate => "truncate",
        Message => "message",
        OpNotRead => "op_not_read",
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
    /// The op as read, quoted ([`quoted`]).
    #[error("unknown op {0} (expected c, u, d, r, t or m)")]
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
    #[error("event time {time} ({column}) is more than {max_future} ahead of the wall clock (rows.max_future)")]
    ImplausibleEventTime { column: String, time: EventTime, max_future: String },
    /// Not the record's fault: decoding or judging it panicked on every
    /// attempt. It goes to the dead-letter topic like the others.
    #[error(transparent)]
    Internal(#[from] Panicked),
}

impl DecodeError {
    /// A short, bounded label for metrics and the dead-letter header.
    pub fn reason(&self) -> DecodeReason {
        match self {
            DecodeError::BadJson(_) => DecodeReason::BadJson,
            DecodeError::BadEnvelope(_) => DecodeReason::BadEnvelope,
            DecodeError::BadSchema(_) => DecodeReason::BadSchema,
            DecodeError::UnknownOp(_) => DecodeReason::UnknownOp,
            DecodeError::MissingKey(_) => DecodeReason::MissingKey,
            DecodeError::MissingEventTime(_) => DecodeReason::MissingEventTime,
            DecodeError::MissingValue(_) => DecodeReason::MissingValue,
            DecodeError::WrongType { .. } => DecodeReason::WrongType,
            DecodeError::BadValue { .. } => DecodeReason::BadValue,
            DecodeError::ImplausibleEventTime { .. } => DecodeReason::ImplausibleEventTime,
            DecodeError::Internal(_) => DecodeReason::InternalError,
        }
    }
}

crate::label_values! {
    /// The `reason` label of decode errors and dead letters, one per
    /// [`DecodeError`] variant.
    pub enum DecodeReason {
        BadJson => "bad_json",
        BadEnvelope => "bad_envelope",
        BadSchema => "bad_schema",
        UnknownOp => "unknown_op",
        MissingKey => "missing_key",
        MissingEventTime => "missing_event_time",
        MissingValue => "missing_value",
        WrongType => "wrong_type",
        BadValue => "bad_value",
        ImplausibleEventTime => "implausible_event_time",
        InternalError => "internal_error",
    }
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
    /// Payload layouts learned from records, the last one fitting first.
    shapes: Vec<PayloadShape>,
    /// The latest plausible event time (µs): the wall clock, as last told
    /// ([`Decoder::observe_clock`]), plus `max_future`.
    latest_plausible: i64,
}

/// Payload layouts kept at once: a topic carrying a few tables (or table
/// versions) reads each by its shape.
const MAX_SHAPES: usize = 4;

const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_INFIX: &[u8] = b",\"payload\":";

/// How deep a payload stands in its record, in containers (the reader
/// counts nesting from the record's top): the record itself, or the
/// `payload` beside a schema block.
const BARE: u32 = 0;
const UNDER_SCHEMA: u32 = 1;

impl Decoder {
    pub fn new(options: DecodeOptions, topic: &str) -> Decoder {
        let inferred_envelope = Arc::new(SchemaPlan::inferred(Shape::Envelope, &options.projection));
        let inferred_flat = Arc::new(SchemaPlan::inferred(Shape::Flat, &options.projection));
        let topic_table: Arc<str> = topic.into();
        let mut decoder = Decoder {
            options,
            cache: SchemaCache::default(),
            inferred_envelope,
            inferred_flat,
            last_table: Arc::clone(&topic_table),
            topic_table,
            shapes: Vec::new(),
            latest_plausible: i64::MAX,
        };
        decoder.observe_clock(EventTime::now());
        decoder
    }

    /// Forgets everything learned from records (schemas, layouts): after a
    /// panic, what was being learned may be half done.
    pub fn reset(&mut self) {
        let topic = Arc::clone(&self.topic_table);
        *self = Decoder::new(self.options.clone(), &topic);
    }

    /// Tells the decoder the wall clock, against which event times are
    /// judged plausible; once a batch is enough.
    pub fn observe_clock(&mut self, now: EventTime) {
        self.latest_plausible = now.micros().saturating_add(self.options.max_future_us);
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
            let decoded = self.read_known(&plan, payload, offset);
            if decoded.is_ok() {
                return decoded;
            }
        }
        self.decode_whole(bytes, offset)
    }

    /// A payload read by the plan of the schema block before it; when it is
    /// refused, the caller reads the record whole ([`Self::decode_whole`]).
    fn read_known(&mut self, plan: &SchemaPlan, payload: &[u8], offset: i64) -> Result<Decoded, DecodeError> {
        utf8(payload).and_then(|payload| self.decode_payload(plan, payload, UNDER_SCHEMA, offset))
    }

    /// Reads a record from its first byte, as a decoder meeting it first
    /// would. The fast paths read a payload alone and stop at its first
    /// fault; a record they refuse is read again here, so it is refused for
    /// the same reason whichever path met it (broken JSON anywhere in it,
    /// say, rather than the wrong shape at the fault).
    fn decode_whole(&mut self, bytes: &[u8], offset: i64) -> Result<Decoded, DecodeError> {
        // UTF-8 is checked once here; the reader then borrows strings
        // instead of validating each of them again.
        let text = utf8(bytes)?;
        if let Some(decoded) = self.decode_shaped_schemaless(text, offset) {
            return decoded;
        }
        let top = TopLevel::read(text, BARE)?;
        if self.options.schemas == SchemaMode::Disabled {
            return self.decode_schemaless(&top, text, BARE, offset);
        }
        match (top.schema, top.payload) {
            (Some(schema), Some(payload)) => {
                if payload == "null" {
                    return Ok(Decoded::Skipped(Skip::Tombstone));
                }
                if schema == "null" {
                    let top = TopLevel::read(payload, UNDER_SCHEMA)?;
                    return self.decode_schemaless(&top, payload, UNDER_SCHEMA, offset);
                }
                let plan = self.cache.get_or_parse(schema, &self.options.projection)?;
                self.decode_payload(&plan, payload, UNDER_SCHEMA, offset)
            }
            _ if self.options.schemas == SchemaMode::Enabled => Err(DecodeError::BadEnvelope(
                "no {\"schema\":…,\"payload\":…} envelope, but format.schemas is enabled".into(),
            )),
            _ => self.decode_schemaless(&top, text, BARE, offset),
        }
    }

    /// The schema of records that start with `prefix`, a batch's
    /// `{"schema":…,"payload":` ([`envelope_prefix_len`]): looked up (or
    /// parsed) once for all of them. A block the decoder does not read
    /// (`null`, one it cannot parse, any with schemas disabled) gives a plan
    /// that reads each record whole, so each gets what [`Self::decode`]
    /// gives it: a null payload is still a tombstone, say, not an error.
    pub fn envelope_plan(&mut self, prefix: &[u8]) -> Result<EnvelopePlan, DecodeError> {
        let block = prefix
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.strip_suffix(PAYLOAD_INFIX))
            .ok_or_else(|| DecodeError::BadEnvelope("not a {\"schema\":…,\"payload\": prefix".into()))?;
        if self.options.schemas == SchemaMode::Disabled {
            return Ok(EnvelopePlan(None));
        }
        if let Some((_, plan)) = self.cache.blocks().find(|(cached, _)| *cached == block) {
            return Ok(EnvelopePlan(Some(Arc::clone(plan))));
        }
        let plan = utf8(block).and_then(|block| self.cache.get_or_parse(block, &self.options.projection));
        Ok(EnvelopePlan(plan.ok()))
    }

    /// Decodes a record held without its envelope prefix: `rest` is what
    /// follows `prefix`, whose plan is `plan`.
    pub fn decode_enveloped(
        &mut self,
        plan: &EnvelopePlan,
        prefix: &[u8],
        rest: &[u8],
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        // No schema read, not as JsonConverter ends a record, or refused:
        // read it whole.
        if let (Some(plan), Some(payload)) = (&plan.0, rest.strip_suffix(b"}")) {
            let decoded = self.read_known(plan, payload, offset);
            if decoded.is_ok() {
                return decoded;
            }
        }
        self.decode_whole(&[prefix, rest].concat(), offset)
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

    /// A schemaless record laid out as an envelope read before: read by its
    /// shape, skipping the walk that tells an envelope from a flattened
    /// row. The shape's keys are the envelope's (never both `schema` and
    /// `payload`), so only an `op` that is not null is left to check.
    fn decode_shaped_schemaless(&mut self, text: &str, offset: i64) -> Option<Result<Decoded, DecodeError>> {
        if self.options.schemas == SchemaMode::Enabled {
            return None;
        }
        let plan = Arc::clone(&self.inferred_envelope);
        let envelope = self.read_shaped(&plan, text, BARE).filter(|e| e.op.is_some())?;
        Some(self.finish_envelope(&plan, envelope, offset))
    }

    /// A payload without a schema: its keys tell an envelope from a
    /// flattened row.
    fn decode_schemaless(
        &mut self,
        top: &TopLevel<'_>,
        payload: &str,
        depth: u32,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        let plan =
            if top.is_envelope() { Arc::clone(&self.inferred_envelope) } else { Arc::clone(&self.inferred_flat) };
        self.decode_payload(&plan, payload, depth, offset)
    }

    /// A payload standing `depth` containers down in its record.
    fn decode_payload(
        &mut self,
        plan: &SchemaPlan,
        payload: &str,
        depth: u32,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        if payload == "null" {
            return Ok(Decoded::Skipped(Skip::Tombstone));
        }
        match plan.shape {
            Shape::Envelope => self.decode_envelope(plan, payload, depth, offset),
            Shape::Flat => self.decode_flat(plan, payload, depth, offset),
        }
    }

    /// One pass over the payload: `after` is read into a row where it
    /// stands (creates, updates and reads use it); `before` is only kept
    /// as text, read for deletes. A payload laid out as one read before is
    /// read by its [`PayloadShape`], value by value.
    fn decode_envelope(
        &mut self,
        plan: &SchemaPlan,
        payload: &str,
        depth: u32,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        let envelope = match self.read_shaped(plan, payload, depth) {
            Some(envelope) => envelope,
            None => {
                let envelope = self.read_envelope(plan, payload, depth)?;
                // Only a payload with an `after` object has a shape (not a
                // delete's): the others are not walked a second time.
                if envelope.after.is_some() {
                    self.learn_shape(payload);
                }
                envelope
            }
        };
        self.finish_envelope(plan, envelope, offset)
    }

    /// The envelope's fields, key by key.
    fn read_envelope<'a>(&self, plan: &SchemaPlan, payload: &'a str, depth: u32) -> Result<Envelope<'a>, DecodeError> {
        let mut r = Reader::nested(payload, depth);
        let mut object = r.begin_object("a Debezium payload object")?;
        let mut envelope = Envelope::default();
        let mut seen = Fields::default();
        while let Some(key) = r.next_key(&mut object)? {
            match PayloadKey::of(&key) {
                PayloadKey::Op => {
                    seen.first(1, "op", &r)?;
                    envelope.op = r.str_or_null("op")?;
                }
                PayloadKey::Before => {
                    seen.first(2, "before", &r)?;
                    envelope.before = if r.null()? { None } else { Some(r.raw()?) };
                }
                PayloadKey::After => {
                    seen.first(4, "after", &r)?;
                    envelope.after = if r.null()? { None } else { Some(self.read_row(&mut r, plan, false)?) };
                }
                PayloadKey::Source => {
                    seen.first(8, "source", &r)?;
                    envelope.source = if r.null()? { Source::default() } else { Source::read(&mut r)? };
                }
                PayloadKey::Other => r.skip()?,
            }
        }
        r.end()?;
        Ok(envelope)
    }

    /// The envelope's fields by a shape learned before (the last one to
    /// fit first), or `None` when no shape fits the payload.
    fn read_shaped<'a>(&mut self, plan: &SchemaPlan, payload: &'a str, depth: u32) -> Option<Envelope<'a>> {
        if self.shapes.is_empty() {
            return None;
        }
        let columns = self.options.projection.columns().len();
        // Filled in place, not handed from try to try (an envelope is a
        // few hundred bytes); what a shape that did not fit left is reset.
        let mut envelope = Envelope::default();
        let mut row = ReadRow::new(columns);
        for i in 0..self.shapes.len() {
            if i > 0 {
                (envelope, row) = (Envelope::default(), ReadRow::new(columns));
            }
            let read = |field, r: &mut Reader<'a>| self.read_field(field, r, plan, &mut envelope, &mut row);
            if self.shapes[i].read(payload, depth, read).is_some() {
                // The shape that fits goes first: a topic's records mostly share one.
                self.shapes[..=i].rotate_right(1);
                envelope.after = Some(row);
                return Some(envelope);
            }
        }
        None
    }

    /// Reads one value of a shaped payload where it belongs; `None` when it
    /// does not read (the key-by-key path then gives the error).
    fn read_field<'a>(
        &self,
        field: shape::Field,
        r: &mut Reader<'a>,
        plan: &SchemaPlan,
        envelope: &mut Envelope<'a>,
        row: &mut ReadRow<'a>,
    ) -> Option<()> {
        use shape::Field;
        match field {
            Field::Skip => r.skip().ok()?,
            Field::Op => envelope.op = r.str_or_null("op").ok()?,
            Field::Before => envelope.before = if r.null().ok()? { None } else { Some(r.raw().ok()?) },
            Field::Column(i) => {
                let json = r.value().ok()?;
                self.read_column(row, plan, i, json);
            }
            Field::Source(key) => envelope.source.read_field(key, r).ok()?,
        }
        Some(())
    }

    /// Learns the shape of a payload just read key by key, so the records
    /// laid out like it are read by their values alone.
    fn learn_shape(&mut self, payload: &str) {
        let projection = &self.options.projection;
        if let Some(shape) = PayloadShape::learn(payload, |key| projection.index(key)) {
            self.shapes.insert(0, shape);
            self.shapes.truncate(MAX_SHAPES);
        }
    }

    fn finish_envelope(
        &mut self,
        plan: &SchemaPlan,
        envelope: Envelope<'_>,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        let Envelope { op, before, after, source } = envelope;
        let op = match op.as_deref() {
            None => return Err(DecodeError::BadEnvelope("no op".into())),
            Some(code) => match parse_op(code)? {
                Ok(op) => op,
                Err(skip) => return Ok(Decoded::Skipped(skip)),
            },
        };
        if !self.options.ops.contains(&op) {
            return Ok(Decoded::Skipped(Skip::OpNotRead(op)));
        }
        let image = if op == Op::Delete {
            match before {
                Some(text) => {
                    // Checked whole where it stands already: its depth
                    // in the record does not matter any more.
                    let mut r = Reader::new(text);
                    Some(self.read_row(&mut r, plan, false)?)
                }
                None => None,
            }
        } else {
            after
        };
        let mut row = image
            .ok_or_else(|| DecodeError::BadEnvelope(format!("op {op} without its {} image", image_name(op))))?
            .checked()?;
        row.extras.lsn = source.lsn;
        row.extras.ts_ms = source.ts_ms;
        let table = self.table(source.schema.as_deref(), source.table.as_deref());
        self.finish(op, row, table, offset)
    }

    fn decode_flat(
        &mut self,
        plan: &SchemaPlan,
        payload: &str,
        depth: u32,
        offset: i64,
    ) -> Result<Decoded, DecodeError> {
        let mut r = Reader::nested(payload, depth);
        let row = self.read_row(&mut r, plan, true)?;
        r.end()?;
        let row = row.checked()?;
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

    /// Reads a row object, converting only the projected columns and
    /// skipping the rest. A column that cannot be converted is kept in
    /// [`ReadRow::error`]: the row is read to its end, so the JSON is
    /// checked whole, and refused only if it is used.
    fn read_row<'a>(&self, r: &mut Reader<'a>, plan: &SchemaPlan, flat: bool) -> Result<ReadRow<'a>, DecodeError> {
        let mut row = ReadRow::new(self.options.projection.columns().len());
        let mut object = r.begin_object("a row object")?;
        while let Some(name) = r.next_key(&mut object)? {
            if let Some(i) = self.options.projection.index(&name) {
                let json = r.value()?;
                self.read_column(&mut row, plan, i, json);
                continue;
            }
            let extras = &mut row.extras;
            match &*name {
                "__op" if flat => extras.op = r.str_or_null("__op")?,
                "__deleted" if flat => extras.deleted = deleted_flag(r.value()?),
                "__lsn" if flat => extras.lsn = r.int_or_null("__lsn")?,
                "__source_ts_ms" if flat => extras.ts_ms = r.int_or_null("__source_ts_ms")?,
                "__table" if flat => extras.table = r.str_or_null("__table")?,
                "__schema" if flat => extras.schema = r.str_or_null("__schema")?,
                _ => r.skip()?,
            }
        }
        Ok(row)
    }

    /// Converts projected column `i`'s value; a value that does not
    /// convert is kept as the row's error.
    fn read_column(&self, row: &mut ReadRow<'_>, plan: &SchemaPlan, i: usize, json: Json<'_>) {
        let options = &self.options;
        let columns = options.projection.columns();
        match convert(&columns[i], plan.types[i], options.roles[i], json, &options.schemaless) {
            Ok(value) => row.values[i] = value,
            Err(e) => {
                row.error.get_or_insert(e);
            }
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
            Value::Text(s) if s.len() > options.max_key_bytes => {
                let reason =
                    format!("a key of {} bytes, more than rows.max_key_bytes ({})", s.len(), options.max_key_bytes);
                return Err(DecodeError::BadValue { column: name(options.key), reason });
            }
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
        if event_time.micros() > self.latest_plausible {
            let column = match options.time {
                TimeSource::Column(i) => name(i),
                TimeSource::SourceTsMs => "source.ts_ms".into(),
            };
            let max_future = format!("{:?}", std::time::Duration::from_micros(options.max_future_us.max(0) as u64));
            return Err(DecodeError::ImplausibleEventTime { column, time: event_time, max_future });
        }
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
        other => other.parse::<Op>().map(Ok).map_err(|_| DecodeError::UnknownOp(quoted(other))),
    }
}

/// The length of the `{"schema":…,"payload":` that `value` starts with,
/// as JsonConverter writes it; `None` for any other record. Records of one
/// table version share these bytes, so a batch keeps them once.
pub fn envelope_prefix_len(value: &[u8]) -> Option<usize> {
    let rest = value.strip_prefix(SCHEMA_PREFIX)?;
    // The schema block ends where its own JSON says.
    let text = match std::str::from_utf8(rest) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).ok()?,
    };
    let mut reader = Reader::nested(text, UNDER_SCHEMA);
    reader.skip().ok()?;
    let end = reader.position();
    rest[end..].starts_with(PAYLOAD_INFIX).then_some(SCHEMA_PREFIX.len() + end + PAYLOAD_INFIX.len())
}

/// The schema of the records sharing a batch's envelope prefix; none when
/// they are read whole.
pub struct EnvelopePlan(Option<Arc<SchemaPlan>>);

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::BadJson(format!("not UTF-8: {e}")))
}

/// What a record's top level holds: a schema and a payload (JsonConverter
/// with schemas), or the keys that tell a Debezium envelope from a
/// flattened row (without).
#[derive(Default)]
struct TopLevel<'a> {
    schema: Option<&'a str>,
    payload: Option<&'a str>,
    has_op: bool,
    has_image: bool,
}

impl<'a> TopLevel<'a> {
    /// The top level of `text`, standing `depth` containers down in its
    /// record.
    fn read(text: &'a str, depth: u32) -> Result<TopLevel<'a>, DecodeError> {
        let mut r = Reader::nested(text, depth);
        let mut top = TopLevel::default();
        let mut object = r.begin_object("a JSON object")?;
        while let Some(key) = r.next_key(&mut object)? {
            match &*key {
                "schema" => top.schema = Some(r.raw()?),
                "payload" => top.payload = Some(r.raw()?),
                "op" => top.has_op = r.str_or_null("op")?.is_some(),
                "before" | "after" => {
                    top.has_image = true;
                    r.skip()?;
                }
                _ => r.skip()?,
            }
        }
        r.end()?;
        Ok(top)
    }

    /// Debezium's envelope has `op` beside `before`/`after` (null for
    /// truncates and messages); a flattened row has `__op` if anything.
    fn is_envelope(&self) -> bool {
        self.has_op && self.has_image
    }
}

/// The envelope fields read once each (a bit each): a second one is
/// refused.
#[derive(Default)]
struct Fields(u8);

impl Fields {
    fn first(&mut self, bit: u8, field: &str, r: &Reader<'_>) -> Result<(), DecodeError> {
        if self.0 & bit != 0 {
            return Err(r.shape(&format!("duplicate field {field}")));
        }
        self.0 |= bit;
        Ok(())
    }
}

/// The parts of Debezium's `source` block vigil reads.
#[derive(Default)]
struct Source<'a> {
    schema: Option<Cow<'a, str>>,
    table: Option<Cow<'a, str>>,
    lsn: Option<i64>,
    ts_ms: Option<i64>,
}

/// The keys of `source` vigil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKey {
    Schema,
    Table,
    Lsn,
    TsMs,
}

impl SourceKey {
    fn of(key: &str) -> Option<SourceKey> {
        Some(match key {
            "schema" => SourceKey::Schema,
            "table" => SourceKey::Table,
            "lsn" => SourceKey::Lsn,
            "ts_ms" => SourceKey::TsMs,
            _ => return None,
        })
    }
}

impl<'a> Source<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Source<'a>, DecodeError> {
        let mut source = Source::default();
        let mut object = r.begin_object("source: an object")?;
        while let Some(key) = r.next_key(&mut object)? {
            match SourceKey::of(&key) {
                Some(key) => source.read_field(key, r)?,
                None => r.skip()?,
            }
        }
        Ok(source)
    }

    fn read_field(&mut self, key: SourceKey, r: &mut Reader<'a>) -> Result<(), DecodeError> {
        match key {
            SourceKey::Schema => self.schema = r.str_or_null("source.schema")?,
            SourceKey::Table => self.table = r.str_or_null("source.table")?,
            SourceKey::Lsn => self.lsn = r.int_or_null("source.lsn")?,
            SourceKey::TsMs => self.ts_ms = r.int_or_null("source.ts_ms")?,
        }
        Ok(())
    }
}

/// The keys of a Debezium payload, as the decoder tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadKey {
    Op,
    Before,
    After,
    Source,
    Other,
}

impl PayloadKey {
    fn of(key: &str) -> PayloadKey {
        match key {
            "op" => PayloadKey::Op,
            "before" => PayloadKey::Before,
            "after" => PayloadKey::After,
            "source" => PayloadKey::Source,
            _ => PayloadKey::Other,
        }
    }
}

/// A payload's envelope fields, however they were read.
#[derive(Default)]
struct Envelope<'a> {
    op: Option<Cow<'a, str>>,
    before: Option<&'a str>,
    after: Option<ReadRow<'a>>,
    source: Source<'a>,
}

/// The projected values of one row image, plus the metadata fields a
/// flattened record carries beside its columns.
struct ReadRow<'a> {
    values: Box<[Value]>,
    extras: Extras<'a>,
    /// The first column that could not be converted.
    error: Option<DecodeError>,
}

impl ReadRow<'_> {
    fn new(columns: usize) -> Self {
        ReadRow { values: vec![Value::Null; columns].into_boxed_slice(), extras: Extras::default(), error: None }
    }

    /// The row, unless one of its columns could not be converted.
    fn checked(mut self) -> Result<Self, DecodeError> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

#[derive(Default)]
struct Extras<'a> {
    op: Option<Cow<'a, str>>,
    deleted: bool,
    lsn: Option<i64>,
    ts_ms: Option<i64>,
    table: Option<Cow<'a, str>>,
    schema: Option<Cow<'a, str>>,
}

/// ExtractNewRecordState writes `__deleted` as the string "true"/"false"
/// (or a boolean, in newer versions).
fn deleted_flag(json: Json<'_>) -> bool {
    matches!(json, Json::Bool(true)) || matches!(json, Json::Str(ref s) if s == "true")
}

#[cfg(test)]
mod tests;
