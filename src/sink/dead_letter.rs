//! Dead letters: a record that cannot be decoded goes to the pipeline's
//! dead-letter topic unchanged (same key and value), with why and where
//! from in headers, so nothing is lost and it can be replayed. A record
//! too large for the dead-letter topic goes cut to fit, saying so, so that
//! no record can stop the pipeline.
//!
//! The producer is the durable one ([`crate::kafka::durable_producer_config`]):
//! a dead letter counts only once Kafka has it, and only then may the
//! source offset be committed.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
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
    /// Present when the key was cut to fit the topic: its original size,
    /// bytes.
    pub const KEY_TRUNCATED: &str = "vigil.key.truncated_from";
    /// Present when the value was cut to fit the topic: its original
    /// size, bytes.
    pub const VALUE_TRUNCATED: &str = "vigil.value.truncated_from";
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
    /// The largest record the topic and the producer accept
    /// ([`crate::kafka::record_limit`]).
    max_record_bytes: usize,
}

/// Bytes a record takes besides its key, value and headers' own bytes
/// (batch and record framing, varints), rounded well up.
const RECORD_OVERHEAD: usize = 512;
/// The longest error text a dead letter carries in its header.
const MAX_ERROR_BYTES: usize = 1024;

impl DeadLetters {
    pub fn new(producer: DurableProducer, topic: String, pipeline: String, max_record_bytes: usize) -> Self {
        DeadLetters { producer, topic, pipeline, max_record_bytes }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one dead letter and waits until Kafka acknowledges it. A
    /// record too large for the topic goes with its key and value cut to
    /// fit and their original sizes in headers; the source coordinates in
    /// the other headers lead to the whole record.
    pub async fn send(
        &self,
        origin: Origin<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error: &DecodeError,
    ) -> Result<(), KafkaError> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let mut message = error.to_string();
        message.truncate(message.floor_char_boundary(MAX_ERROR_BYTES));
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: headers::REASON, value: Some(error.reason().as_label()) })
            .insert(Header { key: headers::ERROR, value: Some(&message) })
            .insert(Header { key: headers::PIPELINE, value: Some(&self.pipeline) })
            .insert(Header { key: headers::TOPIC, value: Some(origin.topic) })
            .insert(Header { key: headers::PARTITION, value: Some(&partition) })
            .insert(Header { key: headers::OFFSET, value: Some(&offset) });
        let fitted = fit(self.max_record_bytes, header_bytes(&headers), key, value);
        for (name, original) in
            [(headers::KEY_TRUNCATED, fitted.key_from), (headers::VALUE_TRUNCATED, fitted.value_from)]
        {
            if let Some(bytes) = original {
                headers = headers.insert(Header { key: name, value: Some(&bytes.to_string()) });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = fitted.key {
            record = record.key(k);
        }
        if let Some(v) = fitted.value {
            record = record.payload(v);
        }
        // Waits for queue space rather than failing when the queue is full.
        let sent = self.producer.send(record, Duration::from_secs(60)).await;
        sent.map(|_| ()).map_err(|(e, _)| crate::kafka::undelivered(&self.producer, e))
    }
}

fn header_bytes(headers: &OwnedHeaders) -> usize {
    headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum()
}

/// A dead letter's key and value, cut to fit a record limit.
#[derive(Debug, PartialEq)]
struct Fitted<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The original sizes of what was cut.
    key_from: Option<usize>,
    value_from: Option<usize>,
}

/// Cuts the value, then the key if the key alone is too large, so the
/// record (with `headers` bytes of headers, and room for the truncation
/// headers) fits `limit`.
fn fit<'a>(limit: usize, headers: usize, key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Fitted<'a> {
    let room = limit.saturating_sub(RECORD_OVERHEAD + headers + 2 * 64);
    let key_room = room / 2;
    let (key, key_from) = match key {
        Some(k) if k.len() + value.map_or(0, <[u8]>::len) > room && k.len() > key_room => {
            (Some(&k[..key_room]), Some(k.len()))
        }
        other => (other, None),
    };
    let value_room = room.saturating_sub(key.map_or(0, <[u8]>::len));
    let (value, value_from) = match value {
        Some(v) if v.len() > value_room => (Some(&v[..value_room]), Some(v.len())),
        other => (other, None),
    };
    Fitted { key, value, key_from, value_from }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fits_is_sent_whole() {
        let (k, v) = (vec![1u8; 10], vec![2u8; 1000]);
        let fitted = fit(1_000_000, 200, Some(&k), Some(&v));
        assert_eq!(fitted, Fitted { key: Some(&k[..]), value: Some(&v[..]), key_from: None, value_from: None });
        assert_eq!(
            fit(1_000_000, 200, None, None),
            Fitted { key: None, value: None, key_from: None, value_from: None }
        );
    }

    #[test]
    fn a_value_too_large_is_cut_to_fit_with_its_size_said() {
        let (k, v) = (vec![1u8; 10], vec![2u8; 2_000_000]);
        let fitted = fit(1_000_000, 200, Some(&k), Some(&v));
        assert_eq!((fitted.key.map(<[u8]>::len), fitted.key_from), (Some(10), None));
        assert_eq!(fitted.value_from, Some(2_000_000));
        let sent = 10 + fitted.value.map_or(0, <[u8]>::len) + 200 + RECORD_OVERHEAD + 2 * 64;
        assert!(sent <= 1_000_000 && sent > 990_000, "{sent}");
    }

    #[test]
    fn a_key_too_large_is_cut_too() {
        let (k, v) = (vec![1u8; 3_000_000], vec![2u8; 3_000_000]);
        let fitted = fit(1_000_000, 200, Some(&k), Some(&v));
        assert_eq!((fitted.key_from, fitted.value_from), (Some(3_000_000), Some(3_000_000)));
        let sent = fitted.key.map_or(0, <[u8]>::len) + fitted.value.map_or(0, <[u8]>::len);
        assert!(sent + 200 + RECORD_OVERHEAD + 2 * 64 <= 1_000_000, "{sent}");
    }
}
