//! The Kafka side of a load test: topics, producing at a rate, the
//! baseline consumer, and reading back alerts and committed offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use loadtest::envelope::{partition, Envelopes};
use loadtest::workload::Txn;

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates topics (name, partitions) whose record timestamps the broker
/// sets (LogAppendTime), so latency is measured on one clock.
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

/// Produces every transaction to `topic`, keyed and partitioned as the
/// connector would, at `rate` records/s (None: as fast as possible).
/// Returns the seconds it took.
pub fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    envelopes: &Envelopes,
    txns: impl Iterator<Item = Txn>,
    total: u64,
    rate: Option<u64>,
) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = config(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (i, t) in txns.enumerate() {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let key = envelopes.key(t.user);
        let value = envelopes.value(&t);
        let mut record = BaseRecord::to(topic).key(&key).payload(&value).partition(partition(&key, partitions));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("producing: {e}"),
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "loadtest: produced {} of {total} ({:.0}/s)",
                i + 1,
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    producer.flush(Duration::from_secs(120)).context("flushing the producer")?;
    Ok(started.elapsed().as_secs_f64())
}

/// End offsets of every partition of `topic`.
pub fn end_offsets(brokers: &str, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = config(brokers).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            ends.insert(p.id(), high);
        }
    }
    if ends.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    Ok(ends)
}

/// What a plain consumer reading `topic` from the start to `ends` saw.
pub struct Scan {
    pub records: u64,
    pub seconds: f64,
    /// Broker timestamp (ms) of every record, by partition and offset.
    pub timestamps: HashMap<i32, Vec<i64>>,
    /// Values, when asked for.
    pub values: Vec<(i32, i64, i64, Vec<u8>)>,
}

/// Reads `topic` from the beginning to `ends` with a plain consumer that
/// decodes nothing: the baseline (the ceiling of this machine and broker).
pub fn scan(brokers: &str, topic: &str, ends: &HashMap<i32, i64>, keep_values: bool) -> anyhow::Result<Scan> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "vigil-loadtest-scan")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for &p in ends.keys() {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let want: u64 = ends.values().map(|&e| e.max(0) as u64).sum();
    let mut timestamps: HashMap<i32, Vec<i64>> = ends.iter().map(|(&p, &e)| (p, vec![0; e.max(0) as usize])).collect();
    let mut values = Vec::new();
    let started = Instant::now();
    let mut records = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while records < want {
        if Instant::now() > deadline {
            bail!("scanning {topic}: {records} of {want} records after 600 s");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                if m.offset() >= *ends.get(&m.partition()).unwrap_or(&0) {
                    continue;
                }
                records += 1;
                let ts = match m.timestamp() {
                    Timestamp::LogAppendTime(t) | Timestamp::CreateTime(t) => t,
                    Timestamp::NotAvailable => 0,
                };
                if let Some(slot) = timestamps.get_mut(&m.partition()).and_then(|v| v.get_mut(m.offset() as usize)) {
                    *slot = ts;
                }
                if keep_values {
                    values.push((m.partition(), m.offset(), ts, m.payload().unwrap_or_default().to_vec()));
                }
            }
            Some(Err(e)) => bail!("scanning {topic}: {e}"),
            None => {}
        }
    }
    Ok(Scan { records, seconds: started.elapsed().as_secs_f64(), timestamps, values })
}

/// The offsets `group` has committed on `topic`.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: &[i32]) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = config(brokers).set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
