//! Writes a checkpoint's records to the changelog partition of the same
//! number as their source partition, chosen explicitly: the source is
//! partitioned by the connector's key bytes, which the changelog's keys
//! are not, so the producer's own partitioner would scatter a partition's
//! users.
//!
//! Records of one checkpoint are sent in order by an idempotent producer,
//! so the changelog never holds a later record of a checkpoint without
//! the earlier ones.

use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use metrics::Counter;
use rdkafka::producer::FutureRecord;

use crate::config::{Pipeline, StateConfig};
use crate::kafka::DurableProducer;
use crate::stage::{BatchError, Output};
use crate::telemetry::{names, zeroed_counter};

/// A record of a checkpoint: key and value bytes (no value: a tombstone).
pub type StateRecord = (Vec<u8>, Option<Vec<u8>>);

/// How long a send may wait for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The changelog side of a pipeline's producer.
#[derive(Clone)]
pub struct ChangelogWriter {
    producer: DurableProducer,
    /// Names each source topic's changelog.
    state: StateConfig,
    records: Counter,
    bytes: Counter,
}

impl ChangelogWriter {
    pub fn new(producer: DurableProducer, pipeline: &Pipeline) -> Self {
        ChangelogWriter {
            producer,
            state: pipeline.state.clone(),
            records: zeroed_counter(names::STATE_CHANGELOG_RECORDS, &pipeline.name),
            bytes: zeroed_counter(names::STATE_CHANGELOG_BYTES, &pipeline.name),
        }
    }

    /// The changelog of `source`.
    pub fn changelog(&self, source: &str) -> String {
        self.state.changelog_topic(source)
    }

    /// Sends `records` to partition `partition` of `source`'s changelog, in
    /// order; resolves once Kafka has acknowledged all of them.
    pub fn write(
        &self,
        source: &str,
        partition: i32,
        records: Vec<StateRecord>,
    ) -> BoxFuture<'static, Result<(), BatchError>> {
        let writer = self.clone();
        let topic = self.changelog(source);
        Box::pin(async move {
            let bytes: usize = records.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
            let count = records.len();
            let sends = records.iter().map(|(key, value)| {
                let mut record = FutureRecord::<[u8], [u8]>::to(&topic).partition(partition).key(key.as_slice());
                if let Some(value) = value {
                    record = record.payload(value.as_slice());
                }
                writer.producer.send(record, QUEUE_TIMEOUT)
            });
            for result in join_all(sends).await {
                if let Err((error, _)) = result {
                    let error = crate::kafka::undelivered(&writer.producer, error);
                    return Err(BatchError::NotDelivered { what: Output::StateRecord, topic, error });
                }
            }
            writer.records.increment(count as u64);
            writer.bytes.increment(bytes as u64);
            Ok(())
        })
    }
}
