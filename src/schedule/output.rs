//! The optional Kafka output of a batch pipeline: each result row as a
//! JSON record keyed by its group (sensor), with the window's end as the
//! record's timestamp and the pipeline in a `vigil.pipeline` header.
//!
//! The producer is the durable one (idempotent, `acks=all`),
//! and a window is marked completed only after every record of it is
//! acknowledged: a failure rolls the window back, and it is computed and
//! published again. Delivery is therefore at least once; a consumer keeps
//! the latest record per (group, window_start), as the results table does.
//! The record's time is the window's end, so a topic whose `retention.ms`
//! is shorter than `catch_up_limit` deletes caught-up records at once.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::{Map, Value};

use super::error::{RunError, StartError};
use super::window::{timestamp, Window};
use super::GroupResult;
use crate::config::KafkaOutputConfig;
use crate::kafka::{create_producer, durable_producer_config, ensure_topics, Client, DurableProducer, TopicsError};

/// How long one record may wait in the producer's queue.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes result rows.
pub(super) struct KafkaOutput {
    producer: DurableProducer,
    config: KafkaOutputConfig,
    pipeline: String,
}

impl KafkaOutput {
    pub fn new(config: &KafkaOutputConfig, pipeline: &str) -> Result<Self, StartError> {
        let mut producer_config = durable_producer_config(
            &config.brokers,
            &config.properties,
            crate::config::SinkConfig::DEFAULT_DELIVERY_TIMEOUT,
        );
        let producer = create_producer(
            producer_config.set("client.id", format!("vigil-{pipeline}-results")),
            pipeline,
            Client::Results,
        )
        .map_err(|e| StartError::Producer { pipeline: pipeline.to_owned(), reason: e.to_string() })?;
        Ok(KafkaOutput { producer, config: config.clone(), pipeline: pipeline.to_owned() })
    }

    /// The topic must exist: a typo should stop the start, not every run.
    pub async fn check_topic(&self) -> Result<(), StartError> {
        let (pipeline, topic) = (self.pipeline.clone(), self.config.topic.clone());
        let reason = match ensure_topics(&self.config.brokers, &self.config.properties, vec![topic.clone()]).await {
            Ok(()) => return Ok(()),
            Err(TopicsError::Missing(_)) => format!(
                "results.kafka.topic {topic} does not exist (create it, e.g. scripts/kafka topics --create \
                 --topic {topic} --partitions 1 --replication-factor 1)"
            ),
            Err(TopicsError::Client(e)) => format!("Kafka client: {e}"),
            Err(other) => other.to_string(),
        };
        Err(StartError::Topic { pipeline, reason })
    }

    /// Publishes every row of `window` and waits for Kafka to acknowledge
    /// all of them.
    pub async fn publish(&self, group_by: &str, window: Window, rows: &[GroupResult]) -> Result<(), RunError> {
        let records: Vec<(String, String)> =
            rows.iter().map(|row| (row.group.clone(), payload(group_by, window, row))).collect();
        let headers = OwnedHeaders::new().insert(Header { key: "vigil.pipeline", value: Some(&self.pipeline) });
        let millis = window.end.div_euclid(1000);
        let sends = records.iter().map(|(key, value)| {
            let record =
                FutureRecord::to(&self.config.topic).key(key).payload(value).timestamp(millis).headers(headers.clone());
            self.producer.send(record, ENQUEUE_TIMEOUT)
        });
        try_join_all(sends)
            .await
            .map(drop)
            .map_err(|(e, _)| RunError::Kafka { topic: self.config.topic.clone(), reason: e.to_string() })
    }
}

/// The record's value: the results table's row, as JSON.
fn payload(group_by: &str, window: Window, row: &GroupResult) -> String {
    let mut map = Map::new();
    map.insert(group_by.to_owned(), Value::from(row.group.clone()));
    map.insert("window_start".into(), Value::from(timestamp(window.start)));
    map.insert("window_end".into(), Value::from(timestamp(window.end)));
    map.insert("readings".into(), Value::from(row.readings));
    for (key, value) in [("average", row.average), ("minimum", row.minimum), ("maximum", row.maximum)] {
        map.insert(key.into(), value.map_or(Value::Null, Value::from));
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_the_results_row() {
        let window = Window { start: 1_795_600_800_000_000, end: 1_795_601_400_000_000 };
        let row = GroupResult {
            group: "s-1".into(),
            readings: 2,
            average: Some(20.5),
            minimum: Some(20.0),
            maximum: Some(21.0),
        };
        let v: Value = serde_json::from_str(&payload("sensor_id", window, &row)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "sensor_id": "s-1",
                "window_start": "2026-11-25T10:00:00Z",
                "window_end": "2026-11-25T10:10:00Z",
                "readings": 2,
                "average": 20.5,
                "minimum": 20.0,
                "maximum": 21.0,
            })
        );
        let silent = GroupResult { group: "s-2".into(), readings: 0, average: None, minimum: None, maximum: None };
        let v: Value = serde_json::from_str(&payload("sensor_id", window, &silent)).unwrap();
        assert_eq!(v["readings"], 0);
        assert_eq!(v["average"], Value::Null);
    }
}
