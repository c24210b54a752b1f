//! Column values: from their JSON form to typed [`Value`]s, by the column's
//! Connect type (or, without a schema, by the JSON form and the pipeline's
//! format settings), exactly: decimals never pass through floating point
//! unless the connector already sent a double.

use std::borrow::Cow;
use std::str::FromStr;

use base64::Engine as _;
use rust_decimal::Decimal;

use super::schema::ColumnType;
use super::DecodeError;
use crate::config::DecimalHandling;
use crate::row::Value;
use crate::time::EventTime;

/// A column's JSON value, borrowed where it can be.
#[derive(Debug, PartialEq)]
pub enum Json<'de> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64 (u64 range).
    BigInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    /// `{"scale": s, "value": "<base64>"}` (VariableScaleDecimal).
    Scaled {
        scale: i64,
        value: Cow<'de, str>,
    },
    /// Any other object, or an array: never a column vigil decodes.
    Other(&'static str),
}

impl Json<'_> {
    fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => format!("boolean {b}"),
            Json::Int(i) => format!("integer {i}"),
            Json::BigInt(i) => format!("integer {i}"),
            Json::Float(f) => format!("number {f}"),
            Json::Str(s) => format!("string {}", quoted(s)),
            Json::Scaled { .. } => "a scaled decimal object".into(),
            Json::Other(what) => (*what).into(),
        }
    }
}

/// What the pipeline needs a column as: this decides the conversion where
/// the schema alone does not (no schema, or decimals sent as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read as its type says (or, inferred, as its JSON form says).
    Plain,
    /// The routing key: an integer or a string.
    Key,
    /// The event time.
    Time,
    /// An amount: always an exact decimal.
    Decimal { schemaless_scale: Option<u32> },
}

/// The unit of integer timestamps in records without a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

/// Settings for records without a schema block.
#[derive(Debug, Clone, Copy)]
pub struct Schemaless {
    /// How the connector encodes NUMERIC (Debezium's decimal.handling.mode).
    pub decimals: DecimalHandling,
    pub time_unit: TimeUnit,
}

/// Text from a record as an error quotes it: in full when short, else its
/// first 40 bytes and its length, so an error (and the dead letter's
/// header that carries it) stays small whatever the record holds.
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.len() <= SHOWN {
        format!("{text:?}")
    } else {
        format!("{:?}... ({} bytes)", &text[..text.floor_char_boundary(SHOWN)], text.len())
    }
}

fn wrong_type(column: &str, expected: &'static str, got: &Json<'_>) -> DecodeError {
    DecodeError::WrongType { column: column.to_owned(), expected, got: got.describe() }
}

fn bad_value(column: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::BadValue { column: column.to_owned(), reason: reason.into() }
}

/// Converts one column's JSON value to a [`Value`].
pub fn convert(
    column: &str,
    ty: ColumnType,
    role: Role,
    json: Json<'_>,
    schemaless: &Schemaless,
) -> Result<Value, DecodeError> {
    if json == Json::Null {
        return Ok(Value::Null);
    }
    match role {
        Role::Decimal { schemaless_scale } => {
            to_decimal(column, ty, json, schemaless_scale, schemaless).map(Value::Decimal)
        }
        Role::Time => to_time(column, ty, json, schemaless).map(Value::Time),
        // As its schema type says, when it says integer or string (as
        // JsonConverter would refuse a contradicting record).
        Role::Key => match (ty, json) {
            (ColumnType::Int, Json::Int(i)) => Ok(Value::Int(i)),
            (ColumnType::Text, Json::Str(s)) => Ok(Value::Text(s.into())),
            (ColumnType::Int | ColumnType::Text, other) => Err(wrong_type(column, ty.describe(), &other)),
            (_, Json::Int(i)) => Ok(Value::Int(i)),
            (_, Json::Str(s)) => Ok(Value::Text(s.into())),
            (_, other) => Err(wrong_type(column, "an integer or a string key", &other)),
        },
        Role::Plain => plain(column, ty, json),
    }
}

fn plain(column: &str, ty: ColumnType, json: Json<'_>) -> Result<Value, DecodeError> {
    Ok(match (ty, json) {
        (ColumnType::Int | ColumnType::Inferred, Json::Int(i)) => Value::Int(i),
        (ColumnType::Float | ColumnType::Inferred, Json::Float(f)) => Value::Float(f),
        (ColumnType::Float, Json::Int(i)) => Value::Float(i as f64),
        (ColumnType::Bool | ColumnType::Inferred, Json::Bool(b)) => Value::Bool(b),
        (ColumnType::Text | ColumnType::Inferred, Json::Str(s)) => Value::Text(s.into()),
        (ColumnType::Inferred, Json::Scaled { scale, value }) => Value::Decimal(scaled_decimal(column, scale, &value)?),
        (ColumnType::Bytes, Json::Str(s)) => Value::Bytes(base64_bytes(column, &s)?.into()),
        (ty @ (ColumnType::Decimal { .. } | ColumnType::VariableScaleDecimal), json) => {
            Value::Decimal(to_decimal(column, ty, json, None, &DEFAULT_SCHEMALESS)?)
        }
        (
            ty @ (ColumnType::MicroTimestamp
            | ColumnType::MilliTimestamp
            | ColumnType::NanoTimestamp
            | ColumnType::ZonedTimestamp
            | ColumnType::Date),
            json,
        ) => Value::Time(to_time(column, ty, json, &DEFAULT_SCHEMALESS)?),
        (ty, json) => return Err(wrong_type(column, ty.describe(), &json)),
    })
}

const DEFAULT_SCHEMALESS: Schemaless = Schemaless { decimals: DecimalHandling::Precise, time_unit: TimeUnit::Micros };

fn to_decimal(
    column: &str,
    ty: ColumnType,
    json: Json<'_>,
    schemaless_scale: Option<u32>,
    schemaless: &Schemaless,
) -> Result<Decimal, DecodeError> {
    match (ty, json) {
        (ColumnType::Decimal { scale }, Json::Str(s)) => bytes_decimal(column, &s, scale),
        (ColumnType::VariableScaleDecimal | ColumnType::Inferred, Json::Scaled { scale, value }) => {
            scaled_decimal(column, scale, &value)
        }
        // decimal.handling.mode=string, with or without a schema.
        (ColumnType::Text, Json::Str(s)) => text_decimal(column, &s),
        (ColumnType::Inferred, Json::Str(s)) => match (schemaless.decimals, schemaless_scale) {
            (DecimalHandling::Precise, Some(scale)) => bytes_decimal(column, &s, scale),
            (DecimalHandling::Precise, None) => Err(bad_value(
                column,
                "a precise decimal without a schema has no scale: declare it in format.decimal_scales",
            )),
            _ => text_decimal(column, &s),
        },
        (ColumnType::Int | ColumnType::Inferred, Json::Int(i)) => Ok(Decimal::from(i)),
        // decimal.handling.mode=double: already approximate; take the
        // shortest decimal that reads back as the same double.
        (ColumnType::Float | ColumnType::Inferred, Json::Float(f)) => Decimal::from_str(&f.to_string())
            .or_else(|_| Decimal::from_scientific(&format!("{f:e}")))
            .map_err(|e| bad_value(column, format!("{f} is not a representable decimal: {e}"))),
        (ty, json) => Err(wrong_type(column, decimal_expectation(ty), &json)),
    }
}

fn decimal_expectation(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Decimal { .. } | ColumnType::VariableScaleDecimal => ty.describe(),
        _ => "a decimal (Decimal, VariableScaleDecimal, string, integer or double)",
    }
}

fn text_decimal(column: &str, s: &str) -> Result<Decimal, DecodeError> {
    Decimal::from_str_exact(s).map_err(|e| bad_value(column, format!("{} is not a decimal: {e}", quoted(s))))
}

fn base64_bytes(column: &str, s: &str) -> Result<Vec<u8>, DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad_value(column, format!("{} is not base64: {e}", quoted(s))))
}

/// Connect's Decimal: the unscaled value as big-endian two's complement.
fn bytes_decimal(column: &str, s: &str, scale: u32) -> Result<Decimal, DecodeError> {
    let mut buf = [0u8; 16];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(s, &mut buf)
        .map_err(|e| bad_value(column, format!("{} is not a base64 decimal of at most 16 bytes: {e}", quoted(s))))?;
    if n == 0 {
        return Err(bad_value(column, "an empty decimal"));
    }
    let negative = buf[0] & 0x80 != 0;
    let mut wide = if negative { [0xffu8; 16] } else { [0u8; 16] };
    wide[16 - n..].copy_from_slice(&buf[..n]);
    let unscaled = i128::from_be_bytes(wide);
    Decimal::try_from_i128_with_scale(unscaled, scale)
        .map_err(|_| bad_value(column, format!("{unscaled}e-{scale} is beyond 28 significant digits")))
}

fn scaled_decimal(column: &str, scale: i64, value: &str) -> Result<Decimal, DecodeError> {
    let scale = u32::try_from(scale)
        .ok()
        .filter(|s| *s <= 28)
        .ok_or_else(|| bad_value(column, format!("decimal scale {scale} is not 0..=28")))?;
    bytes_decimal(column, value, scale)
}

fn to_time(column: &str, ty: ColumnType, json: Json<'_>, schemaless: &Schemaless) -> Result<EventTime, DecodeError> {
    let out_of_range = || bad_value(column, "timestamp out of range");
    match (ty, json) {
        (ColumnType::MicroTimestamp, Json::Int(i)) => Ok(EventTime(i)),
        (ColumnType::MilliTimestamp, Json::Int(i)) => EventTime::from_millis(i).ok_or_else(out_of_range),
        (ColumnType::NanoTimestamp, Json::Int(i)) => Ok(EventTime::from_nanos(i)),
        (ColumnType::Date, Json::Int(i)) => EventTime::from_days(i).ok_or_else(out_of_range),
        (ColumnType::Inferred, Json::Int(i)) => match schemaless.time_unit {
            TimeUnit::Millis => EventTime::from_millis(i).ok_or_else(out_of_range),
            TimeUnit::Micros => Ok(EventTime(i)),
            TimeUnit::Nanos => Ok(EventTime::from_nanos(i)),
        },
        (ColumnType::ZonedTimestamp | ColumnType::Text | ColumnType::Inferred, Json::Str(s)) => {
            EventTime::parse_iso8601(&s)
                .ok_or_else(|| bad_value(column, format!("{} is not an ISO-8601 timestamp with offset", quoted(&s))))
        }
        (ty, json) => Err(wrong_type(column, time_expectation(ty), &json)),
    }
}

fn time_expectation(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::MicroTimestamp
        | ColumnType::MilliTimestamp
        | ColumnType::NanoTimestamp
        | ColumnType::ZonedTimestamp
        | ColumnType::Date => ty.describe(),
        _ => "a timestamp (MicroTimestamp, Timestamp, NanoTimestamp, ZonedTimestamp or Date)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schemaless = DEFAULT_SCHEMALESS;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal literal")
    }

    fn money(json: Json<'_>, ty: ColumnType) -> Result<Decimal, DecodeError> {
        to_decimal("amount", ty, json, None, &S)
    }

    fn s(text: &str) -> Json<'_> {
        Json::Str(Cow::Borrowed(text))
    }

    #[test]
    fn connect_decimals_exactly() {
        let two = ColumnType::Decimal { scale: 2 };
        assert_eq!(money(s("MDk="), two), Ok(dec("123.45")));
        assert_eq!(money(s("z8c="), two), Ok(dec("-123.45")), "negative");
        assert_eq!(money(s("/w=="), two), Ok(dec("-0.01")));
        assert_eq!(money(s("AIA="), two), Ok(dec("1.28")), "leading zero byte keeps it positive");
        assert_eq!(money(s("AA=="), two), Ok(dec("0.00")));
        assert_eq!(money(s("MDk="), ColumnType::Decimal { scale: 0 }), Ok(dec("12345")));
        assert_eq!(money(s("MDk="), ColumnType::Decimal { scale: 5 }), Ok(dec("0.12345")));
        // -1234.56 as captured from the connector (tests/fixtures/debezium).
        assert_eq!(money(s("/h3A"), two), Ok(dec("-1234.56")));
        // 99999999.99, the largest NUMERIC(10,2).
        assert_eq!(money(s("AlQL4/8="), two), Ok(dec("99999999.99")));
    }

    #[test]
    fn variable_scale_and_text_and_double_decimals() {
        let scaled = Json::Scaled { scale: 3, value: Cow::Borrowed("MDk=") };
        assert_eq!(money(scaled, ColumnType::VariableScaleDecimal), Ok(dec("12.345")));
        assert_eq!(money(s("-4000.10"), ColumnType::Text), Ok(dec("-4000.10")));
        assert_eq!(money(Json::Float(4000.1), ColumnType::Float), Ok(dec("4000.1")));
        assert_eq!(money(Json::Float(0.1), ColumnType::Float), Ok(dec("0.1")));
        assert_eq!(money(Json::Int(500), ColumnType::Int), Ok(dec("500")));
    }

    #[test]
    fn bad_decimals_are_errors_not_panics() {
        let two = ColumnType::Decimal { scale: 2 };
        assert!(matches!(money(s("not base64!"), two), Err(DecodeError::BadValue { .. })));
        assert!(matches!(money(s(""), two), Err(DecodeError::BadValue { .. })));
        // 17 bytes: more than any i128.
        assert!(matches!(money(s("AQIDBAUGBwgJCgsMDQ4PEBE="), two), Err(DecodeError::BadValue { .. })));
        // 16 bytes beyond 96 bits.
        assert!(matches!(money(s("f////////////////////w=="), two), Err(DecodeError::BadValue { .. })));
        assert!(matches!(money(Json::Int(5), two), Err(DecodeError::WrongType { .. })));
        assert!(matches!(money(s("12,5"), ColumnType::Text), Err(DecodeError::BadValue { .. })));
        let huge_scale = Json::Scaled { scale: 40, value: Cow::Borrowed("MDk=") };
        assert!(matches!(money(huge_scale, ColumnType::VariableScaleDecimal), Err(DecodeError::BadValue { .. })));
    }

    #[test]
    fn schemaless_decimals_follow_the_format_settings() {
        let inferred = ColumnType::Inferred;
        let precise = Schemaless { decimals: DecimalHandling::Precise, time_unit: TimeUnit::Micros };
        let string = Schemaless { decimals: DecimalHandling::String, ..precise };
        let double = Schemaless { decimals: DecimalHandling::Double, ..precise };
        assert_eq!(to_decimal("amount", inferred, s("MDk="), Some(2), &precise), Ok(dec("123.45")));
        let no_scale = to_decimal("amount", inferred, s("MDk="), None, &precise);
        assert!(matches!(no_scale, Err(DecodeError::BadValue { ref reason, .. }) if reason.contains("decimal_scales")));
        assert_eq!(to_decimal("amount", inferred, s("123.45"), None, &string), Ok(dec("123.45")));
        assert_eq!(to_decimal("amount", inferred, Json::Float(123.45), None, &double), Ok(dec("123.45")));
    }

    #[test]
    fn timestamps_by_type() {
        let t = 1_795_601_472_345_678;
        let time = |ty, json| to_time("created_at", ty, json, &S);
        assert_eq!(time(ColumnType::MicroTimestamp, Json::Int(t)), Ok(EventTime(t)));
        assert_eq!(time(ColumnType::MilliTimestamp, Json::Int(t / 1000)), Ok(EventTime(t - 678)));
        assert_eq!(time(ColumnType::NanoTimestamp, Json::Int(t * 1000)), Ok(EventTime(t)));
        assert_eq!(time(ColumnType::ZonedTimestamp, s("2026-11-25T10:11:12.345678Z")), Ok(EventTime(t)));
        assert_eq!(time(ColumnType::Date, Json::Int(1)), Ok(EventTime(86_400_000_000)));
        let millis = Schemaless { time_unit: TimeUnit::Millis, ..S };
        assert_eq!(to_time("c", ColumnType::Inferred, Json::Int(1), &millis), Ok(EventTime(1000)));
        assert!(matches!(time(ColumnType::MicroTimestamp, s("x")), Err(DecodeError::WrongType { .. })));
        assert!(matches!(time(ColumnType::ZonedTimestamp, s("yesterday")), Err(DecodeError::BadValue { .. })));
        assert!(matches!(time(ColumnType::MilliTimestamp, Json::Int(i64::MAX)), Err(DecodeError::BadValue { .. })));
    }

    #[test]
    fn plain_values_by_type() {
        let p = |ty, json| convert("c", ty, Role::Plain, json, &S);
        assert_eq!(p(ColumnType::Int, Json::Int(7)), Ok(Value::Int(7)));
        assert_eq!(p(ColumnType::Text, s("x")), Ok(Value::Text("x".into())));
        assert_eq!(p(ColumnType::Bool, Json::Bool(true)), Ok(Value::Bool(true)));
        assert_eq!(p(ColumnType::Float, Json::Float(1.5)), Ok(Value::Float(1.5)));
        assert_eq!(p(ColumnType::Bytes, s("AQI=")), Ok(Value::Bytes(vec![1, 2].into())));
        assert_eq!(p(ColumnType::Decimal { scale: 2 }, s("MDk=")), Ok(Value::Decimal(dec("123.45"))));
        assert_eq!(p(ColumnType::Int, Json::Null), Ok(Value::Null));
        assert!(matches!(p(ColumnType::Int, s("7")), Err(DecodeError::WrongType { .. })));
        assert!(matches!(p(ColumnType::Unsupported, Json::Other("an object")), Err(DecodeError::WrongType { .. })));
        let key = |json| convert("user_id", ColumnType::Int, Role::Key, json, &S);
        assert_eq!(key(Json::Int(42)), Ok(Value::Int(42)));
        assert!(matches!(key(Json::Float(4.2)), Err(DecodeError::WrongType { .. })));
    }
}
