//! The transactions of a load test and the alerts they are due: a
//! deterministic generator (seeded) and an oracle, an implementation of
//! the reference rules of its own, in integer cents, that shares no code
//! with the engine, so a bug in one is not hidden by the same bug in the
//! other.

use std::collections::{HashMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One generated transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txn {
    /// Row id (primary key) and LSN: 1, 2, 3, ...
    pub id: i64,
    pub user: i64,
    pub cents: i64,
    /// Event time, µs since the epoch.
    pub at_us: i64,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Workload {
    pub users: i64,
    /// 0: uniform; above 0, low user ids are hotter (r^(1+skew)).
    pub skew: f64,
    /// Share of transactions that are planted frauds (6500.00).
    pub fraud_rate: f64,
    pub seed: u64,
    /// Event time of the first transaction, µs.
    pub start_us: i64,
    /// Event time between consecutive transactions, µs.
    pub spacing_us: i64,
}

/// A planted fraud's amount: above 4000 and far above any ordinary mean.
pub const FRAUD_CENTS: i64 = 650_000;

impl Workload {
    pub fn transactions(&self, count: u64) -> impl Iterator<Item = Txn> + '_ {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        (0..count as i64).map(move |i| {
            let r: f64 = rng.random();
            let user = 1 + ((r.powf(1.0 + self.skew.max(0.0)) * self.users as f64) as i64).min(self.users - 1);
            let cents = if rng.random_bool(self.fraud_rate.clamp(0.0, 1.0)) {
                FRAUD_CENTS
            } else {
                rng.random_range(300..30_000)
            };
            Txn { id: i + 1, user, cents, at_us: self.start_us + i * self.spacing_us }
        })
    }
}

/// An alert the oracle says is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Due {
    Spend(i64),
    Velocity(i64),
}

impl Due {
    /// The same alert for the row `f(id)`: workload ids to the ids a
    /// database gave the rows.
    pub fn map_id(self, f: impl Fn(i64) -> i64) -> Due {
        match self {
            Due::Spend(id) => Due::Spend(f(id)),
            Due::Velocity(id) => Due::Velocity(f(id)),
        }
    }
}

/// The reference agents' rules, per user, exact in cents: spend anomaly
/// (last 50 amounts; from 3 on, amount × n > 3 × sum and amount > 500.00)
/// and velocity score (more than 5 rows in the 60 s ending at the row: 40;
/// amount above 4000.00: 50; alert above 70).
#[derive(Default)]
pub struct Oracle {
    history: HashMap<i64, (VecDeque<i64>, i64)>,
    recent: HashMap<i64, VecDeque<i64>>,
}

impl Oracle {
    /// The alerts `t` is due, given every earlier transaction.
    pub fn observe(&mut self, t: &Txn) -> Vec<Due> {
        let mut due = Vec::new();
        let (amounts, sum) = self.history.entry(t.user).or_default();
        let n = amounts.len() as i128;
        // factor 3.0 = 30/10: amount × n × 10 > 30 × sum.
        if n >= 3 && t.cents as i128 * n * 10 > 30 * *sum as i128 && t.cents > 50_000 {
            due.push(Due::Spend(t.id));
        }
        if amounts.len() == 50 {
            *sum -= amounts.pop_front().unwrap_or(0);
        }
        amounts.push_back(t.cents);
        *sum += t.cents;

        let times = self.recent.entry(t.user).or_default();
        while times.front().is_some_and(|&s| s < t.at_us - 60_000_000) {
            times.pop_front();
        }
        times.push_back(t.at_us);
        let score = if times.len() > 5 { 40 } else { 0 } + if t.cents > 400_000 { 50 } else { 0 };
        if score > 70 {
            due.push(Due::Velocity(t.id));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(id: i64, user: i64, cents: i64, seconds: i64) -> Txn {
        Txn { id, user, cents, at_us: seconds * 1_000_000 }
    }

    #[test]
    fn the_oracle_follows_the_reference_rules() {
        let mut o = Oracle::default();
        for (i, s) in [0, 1, 2, 3, 4].into_iter().enumerate() {
            assert!(o.observe(&txn(i as i64 + 1, 7, 1_000, s)).is_empty());
        }
        // Sixth in 60 s and above 4000: velocity; 6500 x 5 > 3 x 50.
        assert_eq!(o.observe(&txn(6, 7, FRAUD_CENTS, 5)), [Due::Spend(6), Due::Velocity(6)]);
        // Exactly 3x the mean is not more; exactly 60 s old still counts.
        let mut o = Oracle::default();
        for i in 1..=3 {
            o.observe(&txn(i, 1, 100_000, 0));
        }
        assert!(o.observe(&txn(4, 1, 300_000, 100)).is_empty());
        let mut o = Oracle::default();
        for i in 1..=5 {
            o.observe(&txn(i, 2, 450_000, 0));
        }
        assert_eq!(o.observe(&txn(6, 2, 450_000, 60)), [Due::Velocity(6)]);
        assert!(o.observe(&txn(7, 3, 450_000, 61)).is_empty(), "another user");
    }

    #[test]
    fn generation_is_reproducible_and_plants_fraud() {
        let w = Workload { users: 100, skew: 0.0, fraud_rate: 0.01, seed: 3, start_us: 0, spacing_us: 100 };
        let a: Vec<Txn> = w.transactions(10_000).collect();
        assert_eq!(a, w.transactions(10_000).collect::<Vec<_>>());
        let frauds = a.iter().filter(|t| t.cents == FRAUD_CENTS).count();
        assert!((50..200).contains(&frauds), "about 1%: {frauds}");
        assert!(a.iter().all(|t| (1..=100).contains(&t.user)));
    }
}
