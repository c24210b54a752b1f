//! Dead letters: a record that cannot be decoded goes to the pipeline's
//! dead-letter topic unchanged (same key, value and timestamp), with why
//! and where from in headers, so nothing is lost and it can be replayed.
//!
//! The producer is the durable one ([`crate::kafka::durable_producer_config`]):
//! a dead letter counts only once Kafka has it, and only then may the
//! source offset be committed.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::decode::DecodeError;
use crate::kafka::DurableProducer;
use crate::telemetry::Label;

/// Header names on every dead letter.
pub mod headers {
    pub const REASON: &str = "vigil.reason";
    pub const ERROR: &str = "vigil.error";
    pub const PIPELINE: &str = "vigil.pipeline";
    pub const TOPIC: &str = "vigil.source.topic";
    pub const PARTITION: &str = "vigil.source.partition";
    pub const OFFSET: &str = "vigil.source.offset";
}

/// Where a failed record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Sends dead letters for one pipeline.
#[derive(Clone)]
pub struct DeadLetters {
    producer: DurableProducer,
    topic: String,
    pipeline: String,
}

impl DeadLetters {
    pub fn new(producer: DurableProducer, topic: String, pipeline: String) -> Self {
        DeadLetters { producer, topic, pipeline }
    }

    /// Sends one dead letter and waits until Kafka acknowledges it.
    pub async fn send(
        &self,
        origin: Origin<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error: &DecodeError,
    ) -> Result<(), KafkaError> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let message = error.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: headers::REASON, value: Some(error.reason().as_label()) })
            .insert(Header { key: headers::ERROR, value: Some(&message) })
            .insert(Header { key: headers::PIPELINE, value: Some(&self.pipeline) })
            .insert(Header { key: headers::TOPIC, value: Some(origin.topic) })
            .insert(Header { key: headers::PARTITION, value: Some(&partition) })
            .insert(Header { key: headers::OFFSET, value: Some(&offset) });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        // Waits for queue space rather than failing when the queue is full.
        self.producer.send(record, Duration::from_secs(60)).await.map(|_| ()).map_err(|(e, _)| e)
    }
}
