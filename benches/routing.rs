//! Routing: where a partition's batches go, and the batch they travel in.
//!
//! - `placement`: `vigil::stage::placement`, the worker (arbiter) of a
//!   topic-partition, for the partition actor on assignment and for the
//!   detector shard on every batch (`DetectorRouter`); 2,000 calls over 8
//!   partitions of the transactions topic and two workers.
//! - `record_batch/push`: the poll thread copying 2,000 schema-enabled
//!   records (key 183 B, value 3.5 KB) into a new batch arena, dropped at
//!   the end as a finished batch is: the schema block is held once, so
//!   each record costs a comparison with it and a copy of the rest.

mod support;

use std::hint::black_box;
use std::sync::Arc;

use support::{bench, topic, Connect, Routine, Transactions, BATCH};
use vigil::source::batch::RecordBatch;
use vigil::stage::placement;

/// Workers: one per core on the reference machine.
const WORKERS: usize = 2;

struct Placement {
    targets: Vec<(Arc<str>, i32)>,
}

impl Routine for Placement {
    fn run(&mut self) {
        for (topic, partition) in &self.targets {
            black_box(placement(black_box(topic), black_box(*partition), black_box(WORKERS)));
        }
    }
}

struct Push {
    topic: Arc<str>,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Routine for Push {
    fn run(&mut self) {
        let mut batch = RecordBatch::new(Arc::clone(&self.topic), 3, 0);
        for (offset, (key, value)) in self.records.iter().enumerate() {
            batch.push(offset as i64, Some(key), Some(value));
        }
        black_box(&batch);
    }
}

fn main() {
    let n = BATCH as u64;
    support::main(
        "routing",
        vec![
            bench("placement", n, || {
                let topic = topic();
                Placement { targets: (0..BATCH).map(|i| (Arc::clone(&topic), (i % 8) as i32)).collect() }
            }),
            bench("record_batch/push", n, || {
                let records = Connect::new().records(&Transactions::new(4).take(BATCH), true);
                let mut check = RecordBatch::new(topic(), 3, 0);
                for (offset, (key, value)) in records.iter().enumerate() {
                    check.push(offset as i64, Some(key), Some(value));
                }
                let held = check.records().map(|r| r.original_value().map(|v| v.into_owned()));
                assert!(held.eq(records.iter().map(|(_, v)| Some(v.clone()))), "records come back as pushed");
                assert!(check.byte_len() < check.record_bytes() / 4, "the schema block is held once");
                Push { topic: topic(), records }
            }),
        ],
    );
}
