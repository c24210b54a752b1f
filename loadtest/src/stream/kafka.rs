//! The Kafka side of a load test: topics, the envelope producer, and the
//! offsets (watermarks, a group's commits) the other pieces read.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use loadtest::envelope::{partition, Envelopes};
use loadtest::workload::Txn;

pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates topics (name, partitions) whose record timestamps the broker
/// sets (LogAppendTime), so latency is measured on one clock. Topics that
/// exist already are left as they are.
pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, p)| {
            NewTopic::new(name, *p, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await.context("creating topics")? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

pub async fn delete_topics(brokers: &str, topics: &[&str]) {
    if let Ok(admin) = config(brokers).create::<AdminClient<DefaultClientContext>>() {
        let _ = admin.delete_topics(topics, &AdminOptions::new()).await;
    }
}

/// Sends transactions to a topic as the connector would: keyed by user,
/// on the partition Connect's producer picks.
pub struct EnvelopeSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    partitions: i32,
    envelopes: Envelopes,
}

impl EnvelopeSink {
    pub fn new(brokers: &str, topic: &str, partitions: i32, schemaless: bool) -> anyhow::Result<Self> {
        let producer = config(brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .context("creating the producer")?;
        Ok(EnvelopeSink { producer, topic: topic.to_owned(), partitions, envelopes: Envelopes::new(schemaless) })
    }

    /// Queues one transaction (waiting while librdkafka's queue is full).
    pub fn send(&self, t: &Txn) -> anyhow::Result<()> {
        let key = self.envelopes.key(t.user);
        let value = self.envelopes.value(t);
        let mut record =
            BaseRecord::to(&self.topic).key(&key).payload(&value).partition(partition(&key, self.partitions));
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("producing to {}: {e}", self.topic),
            }
        }
    }

    /// Waits until the broker has acknowledged everything queued.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(120))
            .with_context(|| format!("flushing the producer to {}", self.topic))
    }
}

/// Reads offsets: a partition's first and next offset, and what a group
/// has committed. One client, reused by every call (the watch asks
/// several times a second).
pub struct Offsets {
    consumer: BaseConsumer,
}

/// The first offset of a partition and the offset after its last record.
pub type Watermarks = HashMap<i32, (i64, i64)>;

impl Offsets {
    /// `group`: the group whose commits [`Offsets::committed`] reads.
    pub fn new(brokers: &str, group: &str) -> anyhow::Result<Self> {
        let consumer = config(brokers).set("group.id", group).create().context("creating a Kafka client")?;
        Ok(Offsets { consumer })
    }

    /// For watermarks only.
    pub fn plain(brokers: &str) -> anyhow::Result<Self> {
        Offsets::new(brokers, "vigil-loadtest-offsets")
    }

    pub fn watermarks(&self, topic: &str) -> anyhow::Result<Watermarks> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        let mut marks = HashMap::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let pair = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .with_context(|| format!("offsets of {topic}/{}", p.id()))?;
                marks.insert(p.id(), pair);
            }
        }
        if marks.is_empty() {
            bail!("topic {topic} does not exist or has no partitions");
        }
        Ok(marks)
    }

    /// The offsets the group has committed on `topic` (partitions with no
    /// commit are left out).
    pub fn committed(&self, topic: &str, partitions: &[i32]) -> anyhow::Result<HashMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(topic, p);
        }
        let got = self.consumer.committed_offsets(tpl, Duration::from_secs(10)).context("reading committed offsets")?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// Records between the watermarks, all partitions together.
pub fn records(marks: &Watermarks) -> u64 {
    marks.values().map(|&(low, high)| (high - low).max(0) as u64).sum()
}

/// The next offsets of all partitions together (the records ever written).
pub fn ends(marks: &Watermarks) -> i64 {
    marks.values().map(|&(_, high)| high).sum()
}
