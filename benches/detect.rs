//! The detectors' updates, without actors, with the reference pipeline's
//! settings (`pipelines/fraud-detection.yaml`).
//!
//! - `spend_anomaly/full_history`: one user's history at its full 50
//!   amounts: every observation drops the oldest and adds the new; the
//!   ordinary amounts (at most 500) are not judged against the mean.
//! - `spend_anomaly/full_history_judged`: amounts above 500, each judged
//!   against the mean (`amount × n > factor × sum`, exact), none anomalous.
//! - `velocity_score/full_window`: one user with a row every second, so
//!   the 60 s window holds 61 times: insert, count, slide.
//! - `detectors/batch`: both detectors over a batch of 2,000 decoded rows
//!   of 1,250 users, state in a `UserMap` as the shard keeps it, at
//!   steady state (histories full, windows sliding).
//!
//! No row alerts (ordinary amounts): this is the path of every row.
//! Building an alert is the shard's, and is not measured here.
//!
//! `cargo bench --bench detect -- --state-bytes` measures memory instead:
//! users' state as the shard keeps it, filled through `Detectors::observe`,
//! for 100,000 users of 50 rows each (full histories) and 1,000,000 users
//! of 10 rows each, each in a process of its own. Printed per user: the
//! bytes allocated (a counting global allocator over the system's), the
//! growth of the resident set, and the estimate from capacities
//! (`UserState::bytes_in_map`).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rust_decimal::Decimal;
use support::{
    bench, fraud_pipeline, spend_config, velocity_config, warm_up_batches, Routine, RowFeed, Transactions, BATCH,
};
use vigil::decode::DecodeOptions;
use vigil::detect::spend::{SpendAnomaly, SpendHistory};
use vigil::detect::velocity::{VelocityScore, VelocityWindow};
use vigil::detect::{Detectors, UserMap};
use vigil::row::{Key, Op, Row, Value};
use vigil::time::EventTime;

/// The system allocator, counting the bytes live: what the state costs
/// before the allocator's own overhead (the resident set shows that). An
/// atomic add per allocation; the updates benched allocate nothing at
/// steady state.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The workload's amounts, as the decoder produces them.
fn amounts(n: usize) -> Vec<Decimal> {
    decimals(Transactions::new(2), n)
}

fn decimals(mut txns: Transactions, n: usize) -> Vec<Decimal> {
    txns.take(n).iter().map(|t| Decimal::new(t.cents, 2)).collect()
}

/// A full history, then `amounts` to observe; none may be an anomaly.
fn spend(history: Vec<Decimal>, amounts: Vec<Decimal>) -> Spend {
    let config = spend_config(&fraud_pipeline());
    let rule = SpendAnomaly::new(&config);
    let mut h = SpendHistory::default();
    for amount in history.into_iter().cycle().take(config.history) {
        rule.observe(&mut h, amount);
    }
    assert_eq!(h.len(), 50, "the reference history");
    let mut s = Spend { rule, history: h, amounts };
    let findings = s.amounts.iter().filter(|&&a| s.rule.observe(&mut s.history, a).is_some()).count();
    assert_eq!(findings, 0, "no amount of the bench is an anomaly");
    s
}

struct Spend {
    rule: SpendAnomaly,
    history: SpendHistory,
    amounts: Vec<Decimal>,
}

impl Routine for Spend {
    fn run(&mut self) {
        for &amount in &self.amounts {
            black_box(self.rule.observe(&mut self.history, black_box(amount)));
        }
    }
}

struct Velocity {
    rule: VelocityScore,
    window: VelocityWindow,
    now_us: i64,
    amounts: Vec<Decimal>,
}

impl Routine for Velocity {
    fn run(&mut self) {
        for &amount in &self.amounts {
            self.now_us += 1_000_000;
            black_box(self.rule.observe(&mut self.window, EventTime(self.now_us), black_box(amount)));
        }
    }
}

/// What a shard does per row, without the actor: find or create the
/// user's state, run every detector over the row.
struct Batch {
    detectors: Detectors,
    alerting_ops: Vec<Op>,
    users: UserMap,
    feed: RowFeed,
    rows: Vec<Row>,
}

impl Batch {
    fn observe(&mut self) {
        let Batch { detectors, alerting_ops, users, rows, .. } = self;
        for row in rows.iter() {
            let alerting = alerting_ops.contains(&row.op);
            let user = users.entry(row.key.clone()).or_insert_with(|| detectors.new_user());
            detectors.observe(user, row, alerting, |i, finding| {
                black_box((i, finding));
            });
        }
    }
}

impl Routine for Batch {
    fn prepares(&self) -> bool {
        true
    }
    fn prepare(&mut self) {
        self.rows = self.feed.next_batch();
    }
    fn run(&mut self) {
        self.observe();
    }
}

/// Event time between a user's rows: the load test's 10,000 users at
/// 1,000 rows a second, so about 7 rows in the reference 60 s window.
const USER_SPACING_US: i64 = 10_000_000;

/// The process's resident set (bytes), from /proc.
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<usize>().ok().map(|k| k * 1024)
}

/// Fills the state of `users` users with `rows` rows each, in rounds (every
/// user one row a round, a round [`USER_SPACING_US`] of event time), and
/// prints what it costs per user.
fn state_bytes(users: u64, rows: u64) {
    let pipeline = fraud_pipeline();
    let options = DecodeOptions::for_pipeline(&pipeline);
    let detectors = Detectors::compile(&pipeline, &options.projection).expect("the bench pipeline compiles");
    let amount = options.projection.index("amount").expect("an amount column");
    let mut values = vec![Value::Null; options.projection.columns().len()];
    values[amount] = Value::Decimal(Decimal::ONE);
    let mut row = Row {
        op: Op::Create,
        key: Key::Int(0),
        event_time: EventTime(0),
        values: values.into(),
        table: Arc::from("public.transactions"),
        lsn: None,
        offset: 0,
    };
    let mut cents = Transactions::new(5);
    let (rss_before, live_before) = (resident_bytes(), LIVE_BYTES.load(Ordering::Relaxed));
    let mut map = UserMap::default();
    for round in 0..rows as i64 {
        for user in 0..users as i64 {
            row.key = Key::Int(user);
            row.event_time = EventTime(round * USER_SPACING_US + user * USER_SPACING_US / users as i64);
            row.values[amount] = Value::Decimal(Decimal::new(cents.next_txn().cents, 2));
            let state = map.entry(row.key.clone()).or_insert_with(|| detectors.new_user());
            detectors.observe(state, &row, true, |_, f| {
                black_box(f);
            });
        }
    }
    let live = LIVE_BYTES.load(Ordering::Relaxed) - live_before;
    let rss = resident_bytes().zip(rss_before).map(|(after, before)| after.saturating_sub(before));
    let estimate: usize = map.iter().map(|(k, s)| s.bytes_in_map(k)).sum();
    let per_user = |bytes: usize| bytes as f64 / users as f64;
    println!(
        "{users} users, {rows} rows each ({} s of event time between a user's rows):",
        USER_SPACING_US / 1_000_000
    );
    println!("  allocated          {:>12} bytes  {:>7.1} per user", live, per_user(live));
    match rss {
        Some(rss) => println!("  resident growth    {:>12} bytes  {:>7.1} per user", rss, per_user(rss)),
        None => println!("  resident growth    unknown (no /proc/self/status)"),
    }
    println!("  from capacities    {:>12} bytes  {:>7.1} per user", estimate, per_user(estimate));
    black_box(map);
}

/// `--state-bytes`: both workloads, each in a fresh process (so the
/// first's freed memory does not hide the second's growth);
/// `--state-bytes USERS ROWS`: one.
fn state_bytes_main(args: &[String]) {
    match args {
        [users, rows] => match (users.parse(), rows.parse()) {
            (Ok(users), Ok(rows)) => state_bytes(users, rows),
            _ => panic!("--state-bytes USERS ROWS: two numbers"),
        },
        [] => {
            let exe = std::env::current_exe().expect("the bench's own path");
            for (users, rows) in [("100000", "50"), ("1000000", "10")] {
                let status = std::process::Command::new(&exe)
                    .args(["--state-bytes", users, rows])
                    .status()
                    .expect("the bench runs itself");
                assert!(status.success(), "--state-bytes {users} {rows} failed");
            }
        }
        _ => panic!("--state-bytes [USERS ROWS]"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if let Some(rest) = args.strip_prefix(&["--state-bytes".to_owned()]) {
        return state_bytes_main(rest);
    }
    let n = BATCH as u64;
    support::main(
        "detect",
        vec![
            bench("spend_anomaly/full_history", n, || spend(amounts(50), amounts(BATCH))),
            // Amounts above min_amount (500.01 to 1,500.00) are judged
            // against the history's mean (exact products), and pass.
            bench("spend_anomaly/full_history_judged", n, || {
                let large = || Transactions::with_cents(7, 50_001, 150_000);
                spend(decimals(large(), 50), decimals(large(), BATCH))
            }),
            bench("velocity_score/full_window", n, || {
                let config = velocity_config(&fraud_pipeline());
                let window_s = config.velocity.as_ref().expect("the velocity rule").window.as_secs() as i64;
                let rule = VelocityScore::new(&config);
                let mut v = Velocity { rule, window: VelocityWindow::default(), now_us: 0, amounts: amounts(BATCH) };
                v.run();
                assert_eq!(v.window.len() as i64, window_s + 1, "a row a second, both ends of the window included");
                v
            }),
            bench("detectors/batch", n, || {
                let pipeline = fraud_pipeline();
                let options = DecodeOptions::for_pipeline(&pipeline);
                let detectors =
                    Detectors::compile(&pipeline, &options.projection).expect("the bench pipeline compiles");
                assert_eq!(detectors.list().len(), 2, "both reference detectors");
                let mut b = Batch {
                    detectors,
                    alerting_ops: pipeline.rows.ops.clone(),
                    users: UserMap::default(),
                    feed: RowFeed::new(&options, 8, 3),
                    rows: Vec::new(),
                };
                for _ in 0..warm_up_batches() {
                    b.prepare();
                    b.observe();
                }
                b
            }),
        ],
    );
}
