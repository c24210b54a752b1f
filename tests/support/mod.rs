//! What the integration tests share: the stack's endpoints (from the
//! environment, loopback defaults), clients that fail loudly when a service
//! is missing, and Kafka helpers that read only what a test itself caused.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const TRANSACTIONS_TOPIC: &str = "dbserver1.public.transactions";
pub const ACTIVITY_TOPIC: &str = "dbserver1.public.activity";

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgrespw@127.0.0.1:5432/mydb".into())
}

/// A number no earlier run is likely to have used, so rows a test inserts
/// through the shared connector are told apart from everyone else's.
pub fn unique_base() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    // Fits an INT column with room for 100,000 ids above it.
    100_000_000 + (nanos % 1_900_000) as i64 * 1_000
}

/// A PostgreSQL client for `mydb`; panics with the reason when the database
/// is not there, so a missing stack can never pass for a green test.
pub async fn postgres() -> tokio_postgres::Client {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required (scripts/stack up): {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    client
}

fn consumer() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", "vigil-tests-unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer config is valid")
}

/// The partitions of `topic`, waiting up to `wait` for it to exist (Connect
/// creates a table's topic with its first change). Panics when the broker is
/// unreachable.
pub fn partitions(topic: &str, wait: Duration) -> Result<Vec<i32>> {
    let consumer = consumer();
    let deadline = Instant::now() + wait;
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "Kafka at {} is required (scripts/stack up): {e}",
                    kafka_brokers()
                )
            });
        if let Some(t) = metadata.topics().first() {
            if t.error().is_none() && !t.partitions().is_empty() {
                let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ids.sort_unstable();
                return Ok(ids);
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} does not exist after {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The end offset of every partition of `topic` now: a test reads from here
/// so that it sees only records produced after it started.
pub fn end_offsets(topic: &str) -> Result<HashMap<i32, i64>> {
    let consumer = consumer();
    let mut ends = HashMap::new();
    for p in partitions(topic, Duration::from_secs(0))? {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// A record as read from Kafka, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        }
    }

    pub fn key_json(&self) -> serde_json::Value {
        let key = self.key.as_deref().expect("record has a key");
        serde_json::from_slice(key).expect("key is JSON")
    }

    pub fn value_json(&self) -> Option<serde_json::Value> {
        self.value
            .as_deref()
            .map(|v| serde_json::from_slice(v).expect("value is JSON"))
    }
}

/// Reads `topic` from the given start offsets (partitions not named start at
/// the beginning) until `done` says the collected records suffice, or fails
/// after `wait`.
pub fn read_until(
    topic: &str,
    start: &HashMap<i32, i64>,
    wait: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Result<Vec<Record>> {
    let consumer = consumer();
    let mut assignment = TopicPartitionList::new();
    for p in partitions(topic, wait)? {
        let offset = start
            .get(&p)
            .map_or(Offset::Beginning, |&o| Offset::Offset(o));
        assignment.add_partition_offset(topic, p, offset)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + wait;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                records.push(Record::from_message(&m));
                if done(&records) {
                    return Ok(records);
                }
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    bail!(
        "gave up on {topic} after {wait:?} with {} records read",
        records.len()
    )
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): the hash
/// by which Connect's producer picks a record's partition.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn kafka_partition(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}
