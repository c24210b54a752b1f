//! `spend_anomaly`: an amount far above what the user usually spends.
//!
//! Per user, the last `history` amounts in arrival order. Once at least
//! `min_history` are known, an amount that is more than `factor` times
//! their mean and more than `min_amount` is an anomaly; every amount then
//! enters the history. Exact: "more than factor times the mean" is
//! `amount × n > factor × sum`, in decimals, never floats.

use std::collections::VecDeque;

use rust_decimal::Decimal;

use crate::config::SpendAnomalyConfig;

/// A user's recent amounts and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendHistory {
    amounts: VecDeque<Decimal>,
    sum: Decimal,
}

impl SpendHistory {
    pub fn len(&self) -> usize {
        self.amounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.amounts.is_empty()
    }
}

/// The evidence of an anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendFinding {
    pub amount: Decimal,
    /// Mean of the history before this amount (rounded to 4 places for
    /// display; the decision used the exact sum).
    pub mean: Decimal,
    pub history: usize,
    pub factor: Decimal,
    pub min_amount: Decimal,
}

impl SpendFinding {
    /// How many times the mean the amount is (4 places).
    pub fn ratio(&self) -> Decimal {
        if self.mean.is_zero() {
            return Decimal::ZERO;
        }
        (self.amount / self.mean).round_dp(4)
    }
}

/// Judges `amount` against `history`, then adds it to the history.
pub fn observe(config: &SpendAnomalyConfig, history: &mut SpendHistory, amount: Decimal) -> Option<SpendFinding> {
    let n = history.amounts.len();
    let finding = (n >= config.min_history
        && amount > config.min_amount
        && exceeds(amount, n, config.factor, history.sum))
    .then(|| SpendFinding {
        amount,
        mean: (history.sum / Decimal::from(n)).round_dp(4),
        history: n,
        factor: config.factor,
        min_amount: config.min_amount,
    });
    if n == config.history {
        if let Some(oldest) = history.amounts.pop_front() {
            history.sum -= oldest;
        }
    }
    history.amounts.push_back(amount);
    history.sum += amount;
    finding
}

/// `amount × n > factor × sum`; a product beyond 28 digits is beyond any
/// amount a NUMERIC column holds, and decides by itself.
fn exceeds(amount: Decimal, n: usize, factor: Decimal, sum: Decimal) -> bool {
    match (amount.checked_mul(Decimal::from(n)), factor.checked_mul(sum)) {
        (Some(left), Some(right)) => left > right,
        (None, Some(_)) => amount.is_sign_positive(),
        (Some(_), None) => sum.is_sign_negative(),
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn feed(config: &SpendAnomalyConfig, amounts: &[&str]) -> (SpendHistory, Vec<Option<SpendFinding>>) {
        let mut h = SpendHistory::default();
        let findings = amounts.iter().map(|a| observe(config, &mut h, d(a))).collect();
        (h, findings)
    }

    #[test]
    fn fewer_than_min_history_never_alerts() {
        let c = SpendAnomalyConfig::default();
        let (_, f) = feed(&c, &["10", "10", "100000"]);
        assert!(f.iter().all(Option::is_none), "only 2 amounts known at the third");
        let (_, f) = feed(&c, &["10", "10", "10", "100000"]);
        assert!(f[3].is_some(), "3 known: judged");
    }

    #[test]
    fn exactly_factor_times_the_mean_is_not_more() {
        let c = SpendAnomalyConfig::default();
        // mean 200, factor 3: 600 is exactly 3x, 600.01 is more.
        let (_, f) = feed(&c, &["100", "200", "300", "600"]);
        assert_eq!(f[3], None);
        let (_, f) = feed(&c, &["100", "200", "300", "600.01"]);
        let finding = f[3].clone().expect("alert");
        assert_eq!((finding.mean, finding.history, finding.factor), (d("200"), 3, d("3.0")));
        assert_eq!(finding.amount, d("600.01"));
        assert_eq!(finding.ratio(), d("3.0000"), "3.00005 shown to 4 places");
    }

    #[test]
    fn exactly_min_amount_is_not_above_it() {
        let c = SpendAnomalyConfig::default();
        // mean 1: 500 is 500x the mean but not above min_amount 500.
        let (_, f) = feed(&c, &["1", "1", "1", "500"]);
        assert_eq!(f[3], None);
        let (_, f) = feed(&c, &["1", "1", "1", "500.01"]);
        assert!(f[3].is_some());
    }

    #[test]
    fn a_mean_that_is_not_a_finite_decimal_is_compared_exactly() {
        let c = SpendAnomalyConfig { min_amount: d("0"), ..SpendAnomalyConfig::default() };
        // sum 100, n 3: mean 33.33..., 3x mean = 100 exactly: 100 is not more.
        let (_, f) = feed(&c, &["33", "33", "34", "100"]);
        assert_eq!(f[3], None);
        let (_, f) = feed(&c, &["33", "33", "34", "100.01"]);
        assert!(f[3].is_some());
    }

    #[test]
    fn every_amount_enters_the_history_and_the_oldest_leaves() {
        let c = SpendAnomalyConfig { history: 3, ..SpendAnomalyConfig::default() };
        let (h, f) = feed(&c, &["100", "100", "100", "1000", "100", "100"]);
        assert!(f[3].is_some(), "1000 against 100,100,100");
        assert_eq!(h.len(), 3);
        assert_eq!(h.sum, d("1200"), "history is 1000,100,100");
        // The alerting amount itself raised the mean: 2000 is not > 3 x 400.
        let mut h2 = h.clone();
        assert_eq!(observe(&c, &mut h2, d("1200")), None);
    }

    #[test]
    fn negative_amounts_refunds_are_history_too() {
        let c = SpendAnomalyConfig::default();
        let (_, f) = feed(&c, &["-100", "200", "200", "600"]);
        // sum 300, n 3: 600 x 3 = 1800 > 3 x 300 = 900, and 600 > 500.
        assert!(f[3].is_some());
    }
}
