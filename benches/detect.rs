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
//!   of 1,250 users, state in a `HashMap<Key, UserState>` as the shard
//!   keeps it, at steady state (histories full, windows sliding).
//!
//! No row alerts (ordinary amounts): this is the path of every row.
//! Building an alert is the shard's, and is not measured here.

mod support;

use std::collections::HashMap;
use std::hint::black_box;

use rust_decimal::Decimal;
use support::{
    bench, fraud_pipeline, spend_config, velocity_config, warm_up_batches, Routine, RowFeed, Transactions, BATCH,
};
use vigil::config::{SpendAnomalyConfig, VelocityScoreConfig};
use vigil::decode::DecodeOptions;
use vigil::detect::spend::{self, SpendHistory};
use vigil::detect::velocity::{self, VelocityWindow};
use vigil::detect::{Detectors, UserState};
use vigil::row::{Key, Op, Row};
use vigil::time::EventTime;

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
    let mut h = SpendHistory::default();
    for amount in history.into_iter().cycle().take(config.history) {
        spend::observe(&config, &mut h, amount);
    }
    assert_eq!(h.len(), 50, "the reference history");
    let mut s = Spend { config, history: h, amounts };
    let findings = s.amounts.iter().filter(|&&a| spend::observe(&s.config, &mut s.history, a).is_some()).count();
    assert_eq!(findings, 0, "no amount of the bench is an anomaly");
    s
}

struct Spend {
    config: SpendAnomalyConfig,
    history: SpendHistory,
    amounts: Vec<Decimal>,
}

impl Routine for Spend {
    fn run(&mut self) {
        for &amount in &self.amounts {
            black_box(spend::observe(&self.config, &mut self.history, black_box(amount)));
        }
    }
}

struct Velocity {
    config: VelocityScoreConfig,
    window: VelocityWindow,
    now_us: i64,
    amounts: Vec<Decimal>,
}

impl Routine for Velocity {
    fn run(&mut self) {
        for &amount in &self.amounts {
            self.now_us += 1_000_000;
            black_box(velocity::observe(&self.config, &mut self.window, EventTime(self.now_us), black_box(amount)));
        }
    }
}

/// What a shard does per row, without the actor: find or create the
/// user's state, run every detector over the row.
struct Batch {
    detectors: Detectors,
    alerting_ops: Vec<Op>,
    users: HashMap<Key, UserState>,
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

fn main() {
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
                let mut v = Velocity { config, window: VelocityWindow::default(), now_us: 0, amounts: amounts(BATCH) };
                v.run();
                assert_eq!(v.window.len() as i64, window_s + 1, "a row a second, both ends of the window included");
                v
            }),
            bench("detectors/batch", n, || {
                let pipeline = fraud_pipeline();
                let options = DecodeOptions::for_pipeline(&pipeline);
                let detectors = Detectors::for_pipeline(&pipeline, &options.projection);
                assert_eq!(detectors.list().len(), 2, "both reference detectors");
                let mut b = Batch {
                    detectors,
                    alerting_ops: pipeline.rows.ops.clone(),
                    users: HashMap::new(),
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
