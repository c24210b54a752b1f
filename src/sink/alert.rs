//! Alerts: the JSON vigil writes to a pipeline's alert topic, keyed by the
//! user key, one per (pipeline, detector, row) that fires.
//!
//! The `id` is derived from the pipeline, the detector and the row's
//! identity in the database (table, primary key and Debezium's
//! `source.lsn`; the Kafka topic/partition/offset when there is no LSN), so
//! a change delivered twice, after a crash or a rebalance, gives the same
//! id and a consumer can drop the copy.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use rust_decimal::Decimal;

use crate::kafka::DurableProducer;
use crate::row::{Row, Value};
use crate::time::EventTime;

/// Where the row was read.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

/// What an alert needs besides the row and the finding.
pub struct AlertContext<'a> {
    pub pipeline: &'a str,
    pub detector: &'a str,
    /// The primary key columns: (name, position in the row's values).
    pub primary_key: &'a [(String, usize)],
    pub source: SourcePosition<'a>,
}

/// An alert ready to send: its key (the user key) and JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub key: String,
    pub json: Json,
}

/// The row's identity in the database, as the id's input and the alert's
/// `row` field: table, primary key, LSN (or the Kafka position).
fn identity(ctx: &AlertContext<'_>, row: &Row) -> String {
    let mut text = format!("{}\u{0}{}\u{0}{}\u{0}", ctx.pipeline, ctx.detector, row.table);
    for (name, i) in ctx.primary_key {
        text.push_str(name);
        text.push('=');
        text.push_str(&value_text(row.values.get(*i).unwrap_or(&Value::Null)));
        text.push('\u{0}');
    }
    match row.lsn {
        Some(lsn) => text.push_str(&format!("lsn={lsn}")),
        None => text.push_str(&format!("kafka={}/{}/{}", ctx.source.topic, ctx.source.partition, row.offset)),
    }
    text
}

/// 128 bits of SHA-256 of the row's identity, hex.
pub fn alert_id(ctx: &AlertContext<'_>, row: &Row) -> String {
    let digest = Sha256::digest(identity(ctx, row).as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) => s.to_string(),
        Value::Time(t) => t.to_string(),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// A column value in an alert: numbers as numbers, decimals as exact
/// strings, times as RFC 3339.
fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        other => json!(value_text(other)),
    }
}

/// The longest table name or primary-key value an alert carries, bytes:
/// what the row holds is the source's to choose, and an alert must fit its
/// topic whatever a record holds (the key is bounded already, by
/// `rows.max_key_bytes`).
pub const MAX_ALERT_VALUE_BYTES: usize = 256;

/// `text` cut to [`MAX_ALERT_VALUE_BYTES`] at a character boundary, and
/// its length when it was cut.
fn capped(text: &str) -> (&str, Option<usize>) {
    if text.len() <= MAX_ALERT_VALUE_BYTES {
        return (text, None);
    }
    let mut end = MAX_ALERT_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], Some(text.len()))
}

/// What a detector found, as an alert shows it.
pub trait Evidence {
    /// The alert's score.
    fn score(&self) -> Decimal;
    /// Why it fired: one JSON object per rule that took part.
    fn reasons(&self) -> Json;
}

/// Builds the alert for `finding` on `row`.
pub fn build(ctx: &AlertContext<'_>, row: &Row, amount: &Value, finding: &impl Evidence) -> Alert {
    let id = alert_id(ctx, row);
    let key = row.key.to_string();
    // Long values go cut, their full lengths under `truncated`; the id
    // still derives from the whole values.
    let mut truncated = Map::new();
    let mut primary_key = Map::new();
    for (name, i) in ctx.primary_key {
        let value = value_json(row.values.get(*i).unwrap_or(&Value::Null));
        let value = match value.as_str().map(capped) {
            Some((cut, Some(length))) => {
                truncated.insert(format!("row.primary_key.{name}"), json!(length));
                json!(cut)
            }
            _ => value,
        };
        primary_key.insert(name.clone(), value);
    }
    let (table, table_length) = capped(&row.table);
    if let Some(length) = table_length {
        truncated.insert("row.table".into(), json!(length));
    }
    let mut json = json!({
        "id": id,
        "pipeline": ctx.pipeline,
        "detector": ctx.detector,
        "key": key,
        "score": finding.score().to_string().parse::<f64>().unwrap_or(0.0),
        "reasons": finding.reasons(),
        "row": {
            "table": table,
            "primary_key": primary_key,
            "op": row.op.code(),
            "lsn": row.lsn,
        },
        "amount": value_text(amount),
        "event_time": row.event_time.to_string(),
        "source": {
            "topic": ctx.source.topic,
            "partition": ctx.source.partition,
            "offset": row.offset,
        },
        "detected_at": EventTime::now().to_string(),
    });
    if !truncated.is_empty() {
        json["truncated"] = Json::Object(truncated);
    }
    Alert { id, key, json }
}

/// Sends alerts to one topic with the durable producer.
#[derive(Clone)]
pub struct AlertSink {
    producer: DurableProducer,
    topic: String,
}

impl AlertSink {
    pub fn new(producer: DurableProducer, topic: String) -> Self {
        AlertSink { producer, topic }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one alert and waits until Kafka acknowledges it.
    pub async fn send(&self, alert: Alert) -> Result<(), KafkaError> {
        let payload = alert.json.to_string();
        let record = FutureRecord::to(&self.topic).key(&alert.key).payload(&payload);
        let sent = self.producer.send(record, Duration::from_secs(60)).await;
        sent.map(|_| ()).map_err(|(e, _)| crate::kafka::undelivered(&self.producer, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Key, Op};
    use std::sync::Arc;

    fn row(lsn: Option<i64>, offset: i64) -> Row {
        Row {
            op: Op::Create,
            key: Key::Int(42),
            event_time: EventTime(1_795_601_472_345_678),
            values: vec![Value::Int(17), Value::Decimal("4000.00".parse().expect("decimal"))].into(),
            table: Arc::from("public.transactions"),
            lsn,
            offset,
        }
    }

    fn ctx<'a>(detector: &'a str, pk: &'a [(String, usize)], partition: i32) -> AlertContext<'a> {
        AlertContext { pipeline: "fraud", detector, primary_key: pk, source: SourcePosition { topic: "t", partition } }
    }

    #[test]
    fn ids_follow_the_row_not_the_delivery() {
        let pk = [("id".to_owned(), 0)];
        let a = alert_id(&ctx("spend", &pk, 3), &row(Some(99), 10));
        // Re-delivered at another offset (after a crash): same id.
        assert_eq!(a, alert_id(&ctx("spend", &pk, 3), &row(Some(99), 500)));
        assert_eq!(a.len(), 32);
        // Another detector, another change of the row: other ids.
        assert_ne!(a, alert_id(&ctx("velocity", &pk, 3), &row(Some(99), 10)));
        assert_ne!(a, alert_id(&ctx("spend", &pk, 3), &row(Some(100), 10)));
        // Without an LSN the Kafka position identifies the row.
        let b = alert_id(&ctx("spend", &pk, 3), &row(None, 10));
        assert_ne!(b, alert_id(&ctx("spend", &pk, 3), &row(None, 11)));
        assert_ne!(b, alert_id(&ctx("spend", &pk, 4), &row(None, 10)));
    }

    /// A finding of 40 points, as a rule of its own would report it.
    struct Found;

    impl Evidence for Found {
        fn score(&self) -> Decimal {
            Decimal::from(40)
        }
        fn reasons(&self) -> Json {
            json!([{"rule": "test", "mean": "100"}])
        }
    }

    #[test]
    fn alert_json_carries_the_evidence() {
        let pk = [("id".to_owned(), 0)];
        let r = row(Some(99), 10);
        let alert = build(&ctx("spend-anomaly", &pk, 3), &r, &r.values[1], &Found);
        let j = &alert.json;
        assert_eq!(alert.key, "42");
        assert_eq!(j["id"], alert.id.as_str());
        assert_eq!(j["pipeline"], "fraud");
        assert_eq!(j["detector"], "spend-anomaly");
        assert_eq!(j["key"], "42");
        assert_eq!(j["score"], 40.0);
        assert_eq!(j["reasons"], json!([{"rule": "test", "mean": "100"}]));
        assert_eq!(j["row"]["primary_key"]["id"], 17);
        assert_eq!(j["row"]["table"], "public.transactions");
        assert_eq!(j["row"]["lsn"], 99);
        assert_eq!(j["amount"], "4000.00");
        assert_eq!(j["event_time"], "2026-11-25T10:11:12.345678Z");
        assert_eq!(j["source"], json!({"topic": "t", "partition": 3, "offset": 10}));
        assert!(j["detected_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert_eq!(j.get("truncated"), None, "nothing was cut");
    }

    #[test]
    fn long_table_names_and_primary_key_values_are_cut_and_say_so() {
        let pk = [("id".to_owned(), 0), ("note".to_owned(), 1)];
        let mut r = row(Some(99), 10);
        r.values = vec![Value::Text("é".repeat(100_000).into()), Value::Text("short".into())].into();
        r.table = Arc::from(format!("public.{}", "t".repeat(1_000)));
        let alert = build(&ctx("spend", &pk, 3), &r, &Value::Null, &Found);
        let j = &alert.json;
        let id = j["row"]["primary_key"]["id"].as_str().expect("text");
        assert_eq!((id.len(), id.chars().all(|c| c == 'é')), (256, true), "cut at a character boundary");
        assert_eq!(j["row"]["primary_key"]["note"], "short");
        assert_eq!(j["row"]["table"].as_str().map(str::len), Some(256));
        assert_eq!(j["truncated"], json!({"row.primary_key.id": 200_000, "row.table": 1_007}));
        assert!(serde_json::to_vec(j).expect("json").len() < 2_048, "{j}");
        let other = Value::Text(format!("{}x", "é".repeat(100_000)).into());
        r.values = vec![other, Value::Text("short".into())].into();
        assert_ne!(build(&ctx("spend", &pk, 3), &r, &Value::Null, &Found).id, alert.id, "ids see whole values");
    }
}
