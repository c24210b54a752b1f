//! A decoded row change: what the decoder produces and the detectors read.
//!
//! Deliberately small and owned: a row crosses actor boundaries in batches,
//! so it carries only the columns the pipeline asked for.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::time::EventTime;

/// One decoded row change, projected onto the columns its pipeline reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub op: Op,
    /// The routing key (the pipeline's `rows.key` column): all state of one
    /// key lives in one place.
    pub key: Key,
    pub event_time: EventTime,
    /// Values of the pipeline's columns, in the order of
    /// [`Projection::columns`]; `Value::Null` where the row has none.
    pub values: Box<[Value]>,
    /// Where the row comes from in the database: schema-qualified table,
    /// and Debezium's `source.lsn` when the connector reports one.
    pub table: Arc<str>,
    pub lsn: Option<i64>,
    /// The Kafka offset of the record the row was decoded from.
    pub offset: i64,
}

/// The columns a pipeline reads from every row, by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    columns: Arc<[String]>,
}

impl Projection {
    pub fn new(columns: Vec<String>) -> Self {
        Projection { columns: columns.into() }
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The position of `column` in every row's `values`.
    pub fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }
}

/// A routing key: the value of the key column, integer or text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Text(Box<str>),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// A column value, typed by its Kafka Connect schema (or, without a schema,
/// by its JSON form and the pipeline's format settings).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact: NUMERIC/DECIMAL columns.
    Decimal(Decimal),
    Text(Box<str>),
    /// TIMESTAMP / TIMESTAMPTZ / DATE, as event time (UTC).
    Time(EventTime),
    Bytes(Box<[u8]>),
}

impl Value {
    /// The value as an exact decimal, where that makes sense.
    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::Decimal(d) => Some(*d),
            Value::Int(i) => Some(Decimal::from(*i)),
            _ => None,
        }
    }
}

/// The kind of change Debezium reports in `payload.op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted (the row is the `before` image).
    Delete,
    /// `r`: a row read by the connector's initial snapshot.
    Read,
}

impl Op {
    /// The letter Debezium uses for this op.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// The `op` label of rows decoded.
impl crate::telemetry::Label for Op {
    const ALL: &'static [Op] = &[Op::Create, Op::Update, Op::Delete, Op::Read];

    fn as_label(self) -> &'static str {
        self.code()
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Not one of `c`, `u`, `d`, `r`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown op {0:?} (expected c, u, d or r)")]
pub struct UnknownOp(pub String);

impl FromStr for Op {
    type Err = UnknownOp;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "c" => Ok(Op::Create),
            "u" => Ok(Op::Update),
            "d" => Ok(Op::Delete),
            "r" => Ok(Op::Read),
            other => Err(UnknownOp(other.to_owned())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_letters_round_trip() {
        for op in [Op::Create, Op::Update, Op::Delete, Op::Read] {
            assert_eq!(op.code().parse::<Op>(), Ok(op));
        }
        assert_eq!("t".parse::<Op>(), Err(UnknownOp("t".into())));
    }
}
