//! What the benches share: realistic input and one runner.
//!
//! Input: transactions of one partition's users, written the way Kafka
//! Connect's JsonConverter writes Debezium's records. The schema block is
//! the captured connector record's (`tests/fixtures/debezium/`), byte for
//! byte and first; the payload is compact, with the captured record's
//! fields in the captured order, and a new id, user, amount, event time,
//! LSN and commit times per record. So the decoder's fast path (a record
//! starting with a cached schema block's exact bytes) is taken exactly as
//! in production. Schemaless records are the payload alone. The pipeline
//! is `pipelines/fraud-detection.yaml` itself.
//!
//! Amounts are ordinary (3.00 to 299.99, the load test's range), so no
//! detector of the reference pipeline fires: benches measure the path
//! every row takes, and the actor bench never sends an alert.
//!
//! Runner: [`main`] runs a bench file's benches with criterion
//! (`Throughput::Elements`), or, with `VIGIL_CALLGRIND` set, once each
//! between two marker calls that `scripts/callgrind` turns into one
//! callgrind dump per benchmark (instruction counts, free of timing noise).
#![allow(dead_code)] // each bench binary uses a different part of this module

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use loadtest::envelope::Envelopes;
use vigil::config::{load_str, DetectorKind, Pipeline, SpendAnomalyConfig, VelocityScoreConfig};
use vigil::decode::{DecodeOptions, Decoded, Decoder};
use vigil::row::{Key, Row, Value};
use vigil::time::EventTime;

pub const TOPIC: &str = "dbserver1.public.transactions";
/// Records per batch: the source's `MAX_BATCH_RECORDS`.
pub const BATCH: usize = 2_000;
/// Users of one partition: the load test's 10,000 users over 8 partitions.
pub const USERS: u64 = 1_250;
/// Event time between a partition's consecutive rows (the load test's
/// 1 ms over 8 partitions): about 6 rows of a user in a 60 s window.
pub const SPACING_US: i64 = 8_000;
/// Amounts in cents, the load test's ordinary range (300..30_000).
pub const MIN_CENTS: i64 = 300;
pub const MAX_CENTS: i64 = 29_999;

const FIXTURE_VALUE: &str = include_str!("../../tests/fixtures/debezium/transactions-create.value.json");
const FIXTURE_KEY: &str = include_str!("../../tests/fixtures/debezium/transactions-create.key.json");
const FRAUD_PIPELINE: &str = include_str!("../../pipelines/fraud-detection.yaml");

// ---------------------------------------------------------------- pipeline

/// `pipelines/fraud-detection.yaml` with its defaults (schemas told apart
/// per record); `brokers` from the file's default.
pub fn fraud_pipeline() -> Pipeline {
    load(FRAUD_PIPELINE.to_owned())
}

/// The fraud pipeline for records without a schema block: precise
/// decimals need the amount's scale (`format.decimal_scales`), and
/// `schemas` is `auto` (the file's default) or `disabled`.
pub fn schemaless_pipeline(schemas: &str) -> Pipeline {
    let format = "  type: debezium-json\n";
    assert!(FRAUD_PIPELINE.contains(format), "the fraud pipeline's format block changed");
    let text = FRAUD_PIPELINE.replacen(
        format,
        &format!("{format}  schemas: {schemas}\n  decimal_scales:\n    amount: 2\n"),
        1,
    );
    load(text)
}

fn load(text: String) -> Pipeline {
    match load_str("pipelines/fraud-detection.yaml", &text, |_| None) {
        Ok(p) => p,
        Err(e) => panic!("the bench pipeline is invalid: {e}"),
    }
}

pub fn spend_config(p: &Pipeline) -> SpendAnomalyConfig {
    p.detectors
        .iter()
        .find_map(|d| match &d.kind {
            DetectorKind::SpendAnomaly(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the fraud pipeline has a spend_anomaly detector")
}

pub fn velocity_config(p: &Pipeline) -> VelocityScoreConfig {
    p.detectors
        .iter()
        .find_map(|d| match &d.kind {
            DetectorKind::VelocityScore(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the fraud pipeline has a velocity_score detector")
}

/// Proves that no row of the generated workload can alert under `p`:
/// spend_anomaly needs an amount above `min_amount`; velocity_score needs
/// more than the velocity rule's points alone, which only `high_amount`
/// (an amount above its threshold) adds.
pub fn assert_no_alert_can_fire(p: &Pipeline) {
    let max = rust_decimal::Decimal::new(MAX_CENTS, 2);
    let spend = spend_config(p);
    assert!(max <= spend.min_amount, "amounts up to {max} could be spend anomalies");
    let velocity = velocity_config(p);
    let count_points = velocity.velocity.as_ref().map_or(0, |r| r.points);
    let amount_points = velocity.high_amount.as_ref().filter(|r| max > r.threshold).map_or(0, |r| r.points);
    assert!(count_points + amount_points <= velocity.alert_above, "velocity_score could alert");
}

// ------------------------------------------------------------ transactions

/// One transaction of the workload: every field of a change that varies
/// from record to record (the load generator's, so there is one encoder).
pub type Txn = loadtest::envelope::Change;

/// The captured record's transaction (`transactions-create.value.json`).
const CAPTURED: Txn = Txn {
    id: 5,
    user: 103_070_000,
    cents: -123_456,
    at_us: 1_795_601_472_345_678,
    lsn: 26_707_688,
    tx_id: 760,
    commit_us: 1_795_628_996_826_221,
    emitted_ns: 1_795_628_997_323_235_345,
};

/// A deterministic stream of one partition's transactions: uniform users,
/// uniform ordinary amounts, event time advancing [`SPACING_US`] a row.
pub struct Transactions {
    next: i64,
    rng: u64,
    cents: (i64, i64),
}

impl Transactions {
    pub fn new(seed: u64) -> Self {
        Transactions { next: 0, rng: seed, cents: (MIN_CENTS, MAX_CENTS) }
    }

    /// Amounts from `min` to `max` cents instead of the ordinary range
    /// (then nothing guarantees that no detector fires).
    pub fn with_cents(seed: u64, min: i64, max: i64) -> Self {
        Transactions { cents: (min, max), ..Self::new(seed) }
    }

    /// splitmix64: enough randomness for a workload, no dependency.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_txn(&mut self) -> Txn {
        let i = self.next;
        self.next += 1;
        // The partition's share of user ids 1..=10_000.
        let user = 1 + 8 * (self.random() % USERS) as i64;
        let (min, max) = self.cents;
        let cents = min + (self.random() % (max - min + 1) as u64) as i64;
        let at_us = 1_795_600_000_000_000 + i * SPACING_US;
        Txn {
            id: 1 + i,
            user,
            cents,
            at_us,
            lsn: 26_707_688 + i * 312,
            tx_id: 760 + i,
            commit_us: at_us + 1_500,
            emitted_ns: (at_us + 2_100) * 1_000 + 345,
        }
    }

    pub fn take(&mut self, n: usize) -> Vec<Txn> {
        (0..n).map(|_| self.next_txn()).collect()
    }
}

// ---------------------------------------------------------------- records

/// Records as JsonConverter writes them for the `transactions` table,
/// with the schema block or without, built by the load generator's
/// encoder.
pub struct Connect {
    with_schema: Envelopes,
    schemaless: Envelopes,
}

impl Connect {
    /// Checks that the encoder gives back the captured record byte for
    /// byte, so the benches read what the connector writes.
    pub fn new() -> Self {
        let connect = Connect { with_schema: Envelopes::new(false), schemaless: Envelopes::new(true) };
        assert_eq!(
            String::from_utf8(connect.value(&CAPTURED, true)).expect("utf-8"),
            FIXTURE_VALUE,
            "the encoder no longer reproduces the captured record"
        );
        assert_eq!(
            String::from_utf8(connect.key(CAPTURED.user, true)).expect("utf-8"),
            FIXTURE_KEY,
            "the encoder no longer reproduces the captured key"
        );
        connect
    }

    fn envelopes(&self, with_schema: bool) -> &Envelopes {
        if with_schema {
            &self.with_schema
        } else {
            &self.schemaless
        }
    }

    /// The record value: `{"schema":…,"payload":…}`, or (JsonConverter
    /// with `schemas.enable=false`) the payload alone.
    pub fn value(&self, t: &Txn, with_schema: bool) -> Vec<u8> {
        self.envelopes(with_schema).change(t)
    }

    /// The record key (`message.key.columns` = user_id).
    pub fn key(&self, user: i64, with_schema: bool) -> Vec<u8> {
        self.envelopes(with_schema).key(user)
    }

    /// `(key, value)` of each transaction.
    pub fn records(&self, txns: &[Txn], with_schema: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        txns.iter().map(|t| (self.key(t.user, with_schema), self.value(t, with_schema))).collect()
    }
}

impl Default for Connect {
    fn default() -> Self {
        Self::new()
    }
}

/// The same JSON, pretty-printed (two-space indent, fields in place): what
/// a hand-written or re-serialised record looks like. Its schema block
/// does not start where the fast path looks for it.
pub fn pretty(compact: &[u8]) -> Vec<u8> {
    fn newline(out: &mut Vec<u8>, depth: usize) {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
    let mut out = Vec::with_capacity(compact.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in compact {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                depth += 1;
                out.push(b);
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth -= 1;
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
    out
}

// ------------------------------------------------------------------- rows

/// Decodes `values`, checking that each is the row of its transaction.
pub fn decode_checked(decoder: &mut Decoder, txns: &[Txn], values: &[Vec<u8>], first_offset: i64) -> Vec<Row> {
    txns.iter()
        .zip(values)
        .enumerate()
        .map(|(i, (t, v))| match decoder.decode(Some(v), first_offset + i as i64) {
            Ok(Decoded::Row(row)) => {
                assert_eq!(row.key, Key::Int(t.user));
                assert_eq!(row.event_time, EventTime(t.at_us));
                assert!(row.values.contains(&Value::Decimal(rust_decimal::Decimal::new(t.cents, 2))));
                row
            }
            other => panic!("transaction {} did not decode to a row: {other:?}", t.id),
        })
        .collect()
}

/// Endless batches of decoded rows: a cycle of real decoded batches,
/// shifted forward in event time (and id, LSN, offset) on every round, so
/// windows slide as in production and state stays at its steady size.
pub struct RowFeed {
    cycle: Vec<Vec<Row>>,
    next: usize,
    round: i64,
    time_column: usize,
    id_column: usize,
    rows_per_cycle: i64,
}

impl RowFeed {
    /// `batches` batches of [`BATCH`] rows, decoded from schema-enabled
    /// records of the fraud pipeline.
    pub fn new(options: &DecodeOptions, batches: usize, seed: u64) -> Self {
        let connect = Connect::new();
        let mut txns = Transactions::new(seed);
        let mut decoder = Decoder::new(options.clone(), TOPIC);
        let mut offset = 0;
        let cycle = (0..batches)
            .map(|_| {
                let batch = txns.take(BATCH);
                let values: Vec<Vec<u8>> = batch.iter().map(|t| connect.value(t, true)).collect();
                let rows = decode_checked(&mut decoder, &batch, &values, offset);
                offset += BATCH as i64;
                rows
            })
            .collect();
        let column = |name: &str| options.projection.index(name).unwrap_or_else(|| panic!("no column {name}"));
        RowFeed {
            cycle,
            next: 0,
            round: 0,
            time_column: column("created_at"),
            id_column: column("id"),
            rows_per_cycle: (batches * BATCH) as i64,
        }
    }

    pub fn next_batch(&mut self) -> Vec<Row> {
        let rows = self.round * self.rows_per_cycle;
        let (shift_us, shift_lsn) = (rows * SPACING_US, rows * 312);
        let mut batch = self.cycle[self.next].clone();
        if rows > 0 {
            for row in &mut batch {
                row.event_time = EventTime(row.event_time.micros() + shift_us);
                row.values[self.time_column] = Value::Time(row.event_time);
                if let Value::Int(id) = &mut row.values[self.id_column] {
                    *id += rows;
                }
                row.lsn = row.lsn.map(|l| l + shift_lsn);
                row.offset += rows;
            }
        }
        self.next += 1;
        if self.next == self.cycle.len() {
            self.next = 0;
            self.round += 1;
        }
        batch
    }
}

/// Batches run before measuring, so every user's spend history is full
/// (50 amounts: about 40 batches of 2,000 rows over 1,250 users) and its
/// velocity window has slid. Two when a bench only runs as a test
/// (`cargo test --benches`, unoptimised): the code path is the same.
pub fn warm_up_batches() -> usize {
    if benchmarking() {
        48
    } else {
        2
    }
}

/// `cargo bench` (criterion's `--bench`) or callgrind, not a test run.
pub fn benchmarking() -> bool {
    std::env::var_os(CALLGRIND_ENV).is_some() || std::env::args().any(|a| a == "--bench")
}

// ----------------------------------------------------------------- runner

/// One benchmark: `run` does one iteration over `elements` elements;
/// `prepare`, untimed, makes the next iteration's input.
pub trait Routine {
    fn prepare(&mut self) {}
    /// Whether `prepare` does anything (if not, iterations are timed as a
    /// whole, with no clock read between them).
    fn prepares(&self) -> bool {
        false
    }
    fn run(&mut self);
}

pub struct Bench {
    name: &'static str,
    elements: u64,
    setup: Box<dyn FnOnce() -> Box<dyn Routine>>,
}

/// A benchmark whose state `setup` builds only if it is selected.
pub fn bench<R: Routine + 'static>(name: &'static str, elements: u64, setup: impl FnOnce() -> R + 'static) -> Bench {
    Bench { name, elements, setup: Box::new(move || Box::new(setup()) as Box<dyn Routine>) }
}

const CALLGRIND_ENV: &str = "VIGIL_CALLGRIND";

/// Runs a bench file: criterion, or callgrind mode when `VIGIL_CALLGRIND`
/// is set (to a filter on `group/name`, empty for all).
pub fn main(group: &str, benches: Vec<Bench>) {
    match std::env::var(CALLGRIND_ENV) {
        Ok(filter) => callgrind(group, benches, &filter),
        Err(_) => with_criterion(group, benches),
    }
}

/// Two shared cores: short warm-up and measurement, few samples, each
/// sample the same number of iterations (every iteration is a batch, long
/// enough to time alone). `cargo bench` of all four files stays within
/// about three minutes; command-line options override these.
fn with_criterion(group_name: &str, benches: Vec<Bench>) {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .noise_threshold(0.05)
        .configure_from_args();
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    for b in benches {
        group.throughput(Throughput::Elements(b.elements));
        let mut setup = Some(b.setup);
        let mut routine: Option<Box<dyn Routine>> = None;
        group.bench_function(b.name, |bencher| {
            let r = routine.get_or_insert_with(|| (setup.take().expect("set up once"))());
            bencher.iter_custom(|iters| time(r.as_mut(), iters));
        });
    }
    group.finish();
    c.final_summary();
}

fn time(r: &mut dyn Routine, iters: u64) -> Duration {
    if !r.prepares() {
        let start = Instant::now();
        for _ in 0..iters {
            r.run();
        }
        return start.elapsed();
    }
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        r.prepare();
        let start = Instant::now();
        r.run();
        total += start.elapsed();
    }
    total
}

/// Iterations run before the counted ones (caches, lazy statics, maps at
/// their steady capacity), and counted iterations per benchmark.
const CALLGRIND_WARM_UP: usize = 2;
const CALLGRIND_REPEATS: usize = 3;

/// Each counted iteration runs between [`vigil_bench_zero`] and
/// [`vigil_bench_dump`]: `scripts/callgrind` has callgrind zero its
/// counters on entering the first and dump them on entering the second,
/// across all threads (actors run on an arbiter thread). A line on stdout
/// names each dump, in order.
fn callgrind(group: &str, benches: Vec<Bench>, filter: &str) {
    for b in benches {
        let id = format!("{group}/{}", b.name);
        if !id.contains(filter) {
            continue;
        }
        let mut r = (b.setup)();
        for _ in 0..CALLGRIND_WARM_UP {
            r.prepare();
            r.run();
        }
        for _ in 0..CALLGRIND_REPEATS {
            r.prepare();
            vigil_bench_zero();
            r.run();
            vigil_bench_dump();
            println!("callgrind-dump {id} elements={}", b.elements);
        }
    }
}

/// Calls of the markers below. Their bodies differ, so the linker cannot
/// fold them into one function (callgrind would see one name for both).
static MARKS: AtomicU64 = AtomicU64::new(0);

/// Callgrind zeroes its counters here (`--zero-before`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vigil_bench_zero() {
    MARKS.fetch_add(1, Ordering::SeqCst);
}

/// Callgrind dumps its counters here (`--dump-before`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vigil_bench_dump() {
    MARKS.fetch_add(1 << 32, Ordering::SeqCst);
}

/// The topic as the source hands it around.
pub fn topic() -> Arc<str> {
    Arc::from(TOPIC)
}
