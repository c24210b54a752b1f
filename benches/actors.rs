//! One batch of 2,000 records through the actors: a real actix System,
//! one worker Arbiter running a `DetectorShard` (as `vigil run` starts
//! it: the fraud pipeline's detectors, an `AlertSink` on a durable
//! producer, the Prometheus recorder installed), timed from
//! `Addr::send` to the reply, on the bench thread.
//!
//! - `shard/detect`: decoded rows handed to the shard through
//!   `DetectorRouter` (the production `Downstream`): the message hop, the
//!   per-user state lookups, the state saved before each row (to put back
//!   should a detector panic) and both detectors.
//! - `partition/decode_detect`: a `RecordBatch` sent to a partition actor
//!   on the same arbiter, which decodes it and hands the rows on through
//!   the same router: decode + detect, two hops, as a batch goes in
//!   `vigil run`. vigil's `PartitionActor` is crate-private, so a
//!   stand-in here repeats its hot path (`RecordBatch::decode_each`,
//!   `downstream.process`); its metrics and offset tracking are left out.
//!
//! No alert fires (ordinary amounts, checked against the pipeline), so
//! the producer, created for a closed loopback port, never sends: a batch
//! answers as soon as it is processed.

mod support;

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use support::{
    assert_no_alert_can_fire, bench, fraud_pipeline, topic, warm_up_batches, Connect, Routine, RowFeed, Transactions,
    BATCH,
};
use vigil::config::RowsConfig;
use vigil::decode::{DecodeOptions, Decoded, Decoder};
use vigil::detect::router::DetectorRouter;
use vigil::detect::shard::ShardSetup;
use vigil::kafka::{create_producer, durable_producer_config, Client};
use vigil::row::Row;
use vigil::sink::alert::AlertSink;
use vigil::source::batch::RecordBatch;
use vigil::stage::{BatchError, Downstream, Panicked};
use vigil::telemetry::Health;

/// Nothing listens there: the producer is created, never used.
const NO_BROKER: &str = "127.0.0.1:1";
const MAX_ATTEMPTS: u32 = RowsConfig::DEFAULT_MAX_ATTEMPTS;

/// The System, its worker and the shard's router, shared by both
/// benchmarks.
struct Actors {
    system: SystemRunner,
    arbiter: Arbiter,
    router: Arc<DetectorRouter>,
    options: DecodeOptions,
}

impl Actors {
    /// As `vigil run` starts a pipeline's shards (`run::start_shards`).
    fn start() -> Rc<Actors> {
        let mut pipeline = fraud_pipeline();
        // No broker: state kept in memory only (the changelog's cost is the
        // load test's to measure).
        pipeline.state.enabled = false;
        assert_no_alert_can_fire(&pipeline);
        let options = DecodeOptions::for_pipeline(&pipeline);
        let system = System::new();
        vigil::telemetry::install().expect("the Prometheus recorder");
        let mut config =
            durable_producer_config(NO_BROKER, &pipeline.source.properties, pipeline.sink.delivery_timeout);
        let producer = create_producer(config.set("client.id", "vigil-bench"), "bench", Client::Producer)
            .expect("a producer needs no broker to be created");
        let alerts = AlertSink::new(producer, pipeline.sink.alerts.clone());
        let setup = Arc::new(
            ShardSetup::for_pipeline(&pipeline, &options.projection, alerts).expect("the bench pipeline compiles"),
        );
        let arbiter = Arbiter::new();
        let router = Arc::new(DetectorRouter::start(setup, &[arbiter.handle()], Health::default(), None));
        Rc::new(Actors { system, arbiter, router, options })
    }

    fn detect(&self, partition: i32, rows: Vec<Row>) {
        let given_up = self.system.block_on(self.router.process(topic(), partition, rows));
        assert_eq!(given_up, Ok(Vec::new()), "the batch is processed, every row judged");
    }
}

impl Drop for Actors {
    fn drop(&mut self) {
        self.arbiter.stop();
    }
}

/// Decoded rows to the shard.
struct ShardDetect {
    actors: Rc<Actors>,
    feed: RowFeed,
    rows: Option<Vec<Row>>,
}

const SHARD_PARTITION: i32 = 0;
const DECODE_PARTITION: i32 = 1;

impl Routine for ShardDetect {
    fn prepares(&self) -> bool {
        true
    }
    fn prepare(&mut self) {
        self.rows = Some(self.feed.next_batch());
    }
    fn run(&mut self) {
        self.actors.detect(SHARD_PARTITION, self.rows.take().expect("prepared"));
    }
}

/// The partition actor's hot path (see the file's doc).
struct PartitionStandIn {
    topic: Arc<str>,
    partition: i32,
    decoder: Decoder,
    downstream: Arc<dyn Downstream>,
}

impl Actor for PartitionStandIn {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<Vec<Panicked>, BatchError>")]
struct Batch(RecordBatch);

impl Handler<Batch> for PartitionStandIn {
    type Result = ResponseFuture<Result<Vec<Panicked>, BatchError>>;

    fn handle(&mut self, Batch(batch): Batch, _ctx: &mut Context<Self>) -> Self::Result {
        let mut rows = Vec::new();
        batch.decode_each(&mut self.decoder, MAX_ATTEMPTS, |record, decoded| match decoded {
            Ok(Decoded::Row(row)) => rows.push(row),
            other => panic!("offset {}: expected a row, got {other:?}", record.offset),
        });
        self.downstream.process(Arc::clone(&self.topic), self.partition, rows)
    }
}

/// Records to the partition actor, rows on to the shard.
struct DecodeDetect {
    actors: Rc<Actors>,
    partition: Addr<PartitionStandIn>,
    connect: Connect,
    txns: Transactions,
    offset: i64,
    batch: Option<RecordBatch>,
}

impl DecodeDetect {
    fn next_batch(&mut self) -> RecordBatch {
        let mut batch = RecordBatch::new(topic(), DECODE_PARTITION, 0);
        for t in self.txns.take(BATCH) {
            batch.push(self.offset, Some(&self.connect.key(t.user, true)), Some(&self.connect.value(&t, true)));
            self.offset += 1;
        }
        batch
    }

    fn send(&self, batch: RecordBatch) {
        let reply = self.actors.system.block_on(self.partition.send(Batch(batch)));
        reply.expect("the partition actor answers").expect("the batch is processed");
    }
}

impl Routine for DecodeDetect {
    fn prepares(&self) -> bool {
        true
    }
    fn prepare(&mut self) {
        self.batch = Some(self.next_batch());
    }
    fn run(&mut self) {
        let batch = self.batch.take().expect("prepared");
        self.send(batch);
    }
}

fn main() {
    let actors = Actors::start();
    let n = BATCH as u64;
    let (a, b) = (Rc::clone(&actors), Rc::clone(&actors));
    support::main(
        "actors",
        vec![
            bench("shard/detect", n, move || {
                let mut feed = RowFeed::new(&a.options, 8, 5);
                for _ in 0..warm_up_batches() {
                    a.detect(SHARD_PARTITION, feed.next_batch());
                }
                ShardDetect { actors: a, feed, rows: None }
            }),
            bench("partition/decode_detect", n, move || {
                let router: Arc<dyn Downstream> = Arc::clone(&b.router) as Arc<dyn Downstream>;
                let options = b.options.clone();
                let partition = PartitionStandIn::start_in_arbiter(&b.arbiter.handle(), move |_| PartitionStandIn {
                    topic: topic(),
                    partition: DECODE_PARTITION,
                    decoder: Decoder::new(options, support::TOPIC),
                    downstream: router,
                });
                let mut d = DecodeDetect {
                    actors: b,
                    partition,
                    connect: Connect::new(),
                    txns: Transactions::new(6),
                    offset: 0,
                    batch: None,
                };
                // Warm the partition's users through the same path.
                for _ in 0..warm_up_batches() {
                    let batch = d.next_batch();
                    d.send(batch);
                }
                d
            }),
        ],
    );
    // Stops the worker arbiter once the benchmarks are done with it.
    drop(actors);
}
