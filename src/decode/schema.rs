//! Kafka Connect schemas: which type each column has, read once per table
//! version and reused while the schema block does not change.
//!
//! Only what decoding a row needs is kept: the envelope's shape and the
//! type of each projected column. Nested structs other than
//! VariableScaleDecimal, arrays and maps are not decoded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::DecodeError;
use crate::row::Projection;

/// How a column's value is written, from its Connect type and logical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Float,
    Bool,
    Text,
    Bytes,
    /// `org.apache.kafka.connect.data.Decimal`: base64 two's complement.
    Decimal {
        scale: u32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: `{"scale":..,"value":..}`.
    VariableScaleDecimal,
    /// `io.debezium.time.MicroTimestamp`: µs since the epoch.
    MicroTimestamp,
    /// `io.debezium.time.Timestamp` or Connect's `Timestamp`: ms.
    MilliTimestamp,
    /// `io.debezium.time.NanoTimestamp`: ns.
    NanoTimestamp,
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text with offset.
    ZonedTimestamp,
    /// `io.debezium.time.Date` or Connect's `Date`: days since the epoch.
    Date,
    /// No schema: the type follows from the JSON value and the pipeline's
    /// format settings.
    Inferred,
    /// A type vigil does not decode (struct, array, map, other logical
    /// types); an error only if the pipeline reads the column.
    Unsupported,
    /// The record's schema has no such column.
    Missing,
}

impl ColumnType {
    pub fn describe(self) -> &'static str {
        match self {
            ColumnType::Int => "an integer",
            ColumnType::Float => "a float",
            ColumnType::Bool => "a boolean",
            ColumnType::Text => "a string",
            ColumnType::Bytes => "bytes",
            ColumnType::Decimal { .. } => "a Decimal (base64 bytes)",
            ColumnType::VariableScaleDecimal => "a VariableScaleDecimal",
            ColumnType::MicroTimestamp => "a MicroTimestamp",
            ColumnType::MilliTimestamp => "a Timestamp",
            ColumnType::NanoTimestamp => "a NanoTimestamp",
            ColumnType::ZonedTimestamp => "a ZonedTimestamp",
            ColumnType::Date => "a Date",
            ColumnType::Inferred => "a value",
            ColumnType::Unsupported => "a supported type",
            ColumnType::Missing => "a column of the schema",
        }
    }
}

/// Where the row sits in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Debezium's envelope: `op`, `before`, `after`, `source`.
    Envelope,
    /// Flattened by ExtractNewRecordState: the row itself, with optional
    /// `__op`, `__deleted`, `__lsn`, `__table`, ... fields.
    Flat,
}

/// What a schema block says about the projected columns.
#[derive(Debug, PartialEq)]
pub struct SchemaPlan {
    pub shape: Shape,
    /// One type per projected column, in projection order.
    pub types: Box<[ColumnType]>,
}

#[derive(Deserialize)]
struct SchemaJson<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    field: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    parameters: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(default, borrow)]
    fields: Vec<SchemaJson<'a>>,
}

impl<'a> SchemaJson<'a> {
    fn field(&self, name: &str) -> Option<&SchemaJson<'a>> {
        self.fields.iter().find(|f| f.field.as_deref() == Some(name))
    }

    fn column_type(&self) -> Result<ColumnType, DecodeError> {
        let logical = self.name.as_deref().unwrap_or("");
        Ok(match (self.ty.as_ref(), logical) {
            ("bytes", "org.apache.kafka.connect.data.Decimal") => {
                let scale = self
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("scale"))
                    .ok_or_else(|| DecodeError::BadSchema("Decimal without parameters.scale".into()))?;
                let scale = scale
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s <= 28)
                    .ok_or_else(|| DecodeError::BadSchema(format!("Decimal scale {scale:?} is not 0..=28")))?;
                ColumnType::Decimal { scale }
            }
            ("struct", "io.debezium.data.VariableScaleDecimal") => ColumnType::VariableScaleDecimal,
            ("int64", "io.debezium.time.MicroTimestamp") => ColumnType::MicroTimestamp,
            ("int64", "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
                ColumnType::MilliTimestamp
            }
            ("int64", "io.debezium.time.NanoTimestamp") => ColumnType::NanoTimestamp,
            ("string", "io.debezium.time.ZonedTimestamp") => ColumnType::ZonedTimestamp,
            ("int32", "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => ColumnType::Date,
            ("int8" | "int16" | "int32" | "int64", _) => ColumnType::Int,
            ("float32" | "float64", _) => ColumnType::Float,
            ("boolean", _) => ColumnType::Bool,
            ("string", _) => ColumnType::Text,
            ("bytes", _) => ColumnType::Bytes,
            _ => ColumnType::Unsupported,
        })
    }
}

impl SchemaPlan {
    /// Reads a value schema block (the JSON under `"schema"`).
    pub fn parse(schema: &str, projection: &Projection) -> Result<SchemaPlan, DecodeError> {
        let top: SchemaJson<'_> = serde_json::from_str(schema).map_err(|e| DecodeError::BadSchema(e.to_string()))?;
        if top.ty != "struct" {
            return Err(DecodeError::BadSchema(format!("expected a struct, got {}", super::quoted(&top.ty))));
        }
        let row_struct = top
            .field("after")
            .or_else(|| top.field("before"))
            .filter(|f| f.ty == "struct" && top.field("op").is_some());
        let (shape, row) = match row_struct {
            Some(row) => (Shape::Envelope, row),
            None => (Shape::Flat, &top),
        };
        let types = projection
            .columns()
            .iter()
            .map(|column| row.field(column).map_or(Ok(ColumnType::Missing), SchemaJson::column_type))
            .collect::<Result<_, _>>()?;
        Ok(SchemaPlan { shape, types })
    }

    /// For records without a schema block: every column's type is inferred.
    pub fn inferred(shape: Shape, projection: &Projection) -> SchemaPlan {
        SchemaPlan { shape, types: vec![ColumnType::Inferred; projection.columns().len()].into() }
    }
}

/// The last few schema blocks seen, by their exact bytes. A topic carries
/// one schema per table version, so a hit is the rule and a miss means a
/// new table version (a column added): it is parsed and takes the front.
#[derive(Default)]
pub struct SchemaCache {
    entries: Vec<(Box<[u8]>, Arc<SchemaPlan>)>,
}

const SCHEMA_CACHE_SIZE: usize = 8;

impl SchemaCache {
    /// The cached schema blocks, most recent first.
    pub fn blocks(&self) -> impl Iterator<Item = (&[u8], &Arc<SchemaPlan>)> {
        self.entries.iter().map(|(bytes, plan)| (&bytes[..], plan))
    }

    pub fn get_or_parse(&mut self, schema: &str, projection: &Projection) -> Result<Arc<SchemaPlan>, DecodeError> {
        if let Some(i) = self.entries.iter().position(|(b, _)| &b[..] == schema.as_bytes()) {
            if i > 0 {
                self.entries[..=i].rotate_right(1);
            }
            return Ok(Arc::clone(&self.entries[0].1));
        }
        let plan = Arc::new(SchemaPlan::parse(schema, projection)?);
        self.entries.insert(0, (schema.as_bytes().into(), Arc::clone(&plan)));
        self.entries.truncate(SCHEMA_CACHE_SIZE);
        Ok(plan)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
