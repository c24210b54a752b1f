//! A plain consumer reading a topic from its first record to the
//! watermarks taken before, decoding nothing: the baseline (this machine's
//! ceiling), and the reader of alert and input topics for verification.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::{self, Watermarks};
use super::progress::Progress;

/// A record kept whole.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    /// Broker timestamp, ms.
    pub ms: i64,
    pub value: Vec<u8>,
}

/// Broker timestamps (ms) of every record read, by partition and offset.
#[derive(Debug, Default)]
pub struct Timestamps {
    by_partition: HashMap<i32, (i64, Vec<i64>)>,
}

impl Timestamps {
    pub(super) fn new(marks: &Watermarks) -> Self {
        let by_partition =
            marks.iter().map(|(&p, &(low, high))| (p, (low, vec![0; (high - low).max(0) as usize]))).collect();
        Timestamps { by_partition }
    }

    pub(super) fn set(&mut self, partition: i32, offset: i64, ms: i64) {
        if let Some((low, v)) = self.by_partition.get_mut(&partition) {
            if let Some(slot) = usize::try_from(offset - *low).ok().and_then(|i| v.get_mut(i)) {
                *slot = ms;
            }
        }
    }

    pub fn at(&self, partition: i32, offset: i64) -> Option<i64> {
        let (low, v) = self.by_partition.get(&partition)?;
        usize::try_from(offset - low).ok().and_then(|i| v.get(i)).copied()
    }

    pub fn all(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_partition.values().flat_map(|(_, v)| v.iter().copied())
    }
}

/// What the consumer saw.
#[derive(Debug)]
pub struct Scan {
    pub records: u64,
    pub seconds: f64,
    pub timestamps: Timestamps,
    /// Every record whole, when asked for.
    pub values: Vec<Read>,
}

impl Scan {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-6)
    }
}

/// Reads `topic` up to its end offsets as they are now.
pub fn to_end(brokers: &str, topic: &str, keep_values: bool, label: &str) -> anyhow::Result<Scan> {
    let marks = kafka::Offsets::plain(brokers)?.watermarks(topic)?;
    scan(brokers, topic, &marks, keep_values, label)
}

/// Reads `topic` up to `marks` (from [`kafka::Offsets::watermarks`]);
/// `label` names the phase on the progress line.
pub fn scan(brokers: &str, topic: &str, marks: &Watermarks, keep_values: bool, label: &str) -> anyhow::Result<Scan> {
    let consumer: BaseConsumer = kafka::config(brokers)
        .set("group.id", "vigil-loadtest-scan")
        .set("enable.auto.commit", "false")
        // What transactions committed, as a reader of exactly-once alerts
        // must read; a partition's last offset may then be a transaction
        // marker, never handed out, so its end is told by the EOF.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    // Partitions still to read, with the offset after their last record.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for (&p, &(low, high)) in marks {
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            pending.insert(p, high);
        }
    }
    consumer.assign(&tpl)?;
    let want = kafka::records(marks);
    let mut progress = Progress::new(label, Some(want));
    let mut timestamps = Timestamps::new(marks);
    let mut values = Vec::new();
    let started = Instant::now();
    let mut records = 0u64;
    let mut last_record = Instant::now();
    while !pending.is_empty() {
        if last_record.elapsed() > Duration::from_secs(60) {
            bail!("reading {topic}: no record for 60 s, {records} of {want} read");
        }
        let m = match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => m,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
                continue;
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => continue,
        };
        last_record = Instant::now();
        let Some(&high) = pending.get(&m.partition()) else { continue };
        if m.offset() >= high {
            continue;
        }
        if m.offset() + 1 >= high {
            pending.remove(&m.partition());
        }
        records += 1;
        let ms = match m.timestamp() {
            Timestamp::LogAppendTime(t) | Timestamp::CreateTime(t) => t,
            Timestamp::NotAvailable => 0,
        };
        timestamps.set(m.partition(), m.offset(), ms);
        if keep_values {
            let value = m.payload().unwrap_or_default().to_vec();
            values.push(Read { partition: m.partition(), offset: m.offset(), ms, value });
        }
        if records.is_multiple_of(1024) {
            progress.update(records, String::new);
        }
    }
    progress.update(records, String::new);
    progress.finish();
    Ok(Scan { records, seconds: started.elapsed().as_secs_f64(), timestamps, values })
}
