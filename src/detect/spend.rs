//! `spend_anomaly`: an amount far above what the user usually spends.
//!
//! Per user, the last `history` amounts in arrival order. Once at least
//! `min_history` are known, an amount that is more than `factor` times
//! their mean and more than `min_amount` is an anomaly; every amount then
//! enters the history. Exact: "more than factor times the mean" is
//! `amount × n > factor × sum`, in decimals, never floats.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use serde_json::{json, Value as Json};

use super::exact;
use crate::config::SpendAnomalyConfig;

/// A user's recent amounts, oldest first.
///
/// Stored compactly and exactly: an amount of a NUMERIC(p, s) column is an
/// integer number of 10^-s units, so a history keeps units at one scale
/// (the finest it has seen) in the narrowest integer that holds them all,
/// and their sum beside them. A finer amount rescales the history; one
/// that fits no integer at that scale moves it on to a wider form, the
/// last being the decimals themselves (summed when judged). The ring
/// grows up to `history` amounts and no further.
#[derive(Debug, Default, PartialEq)]
pub struct SpendHistory {
    amounts: Amounts,
}

/// `clone_from` reuses the allocation: the shard saves a user's state
/// before every row, to put it back should judging the row panic.
impl Clone for SpendHistory {
    fn clone(&self) -> Self {
        SpendHistory { amounts: self.amounts.clone() }
    }

    fn clone_from(&mut self, source: &Self) {
        self.amounts.clone_from(&source.amounts);
    }
}

#[derive(Debug, PartialEq)]
enum Amounts {
    /// Units in an i32: NUMERIC(p, 2) amounts up to ±21,474,836.47.
    Narrow(Units<i32>),
    /// Units in an i64: amounts of up to 18 digits.
    Wide(Units<i64>),
    /// Amounts with no common scale at which they and their sum fit an
    /// i64; `scale` is still the finest seen (the sum's, as a decimal).
    Decimals { ring: VecDeque<Decimal>, scale: u8 },
}

impl Clone for Amounts {
    fn clone(&self) -> Self {
        match self {
            Amounts::Narrow(u) => Amounts::Narrow(u.clone()),
            Amounts::Wide(u) => Amounts::Wide(u.clone()),
            Amounts::Decimals { ring, scale } => Amounts::Decimals { ring: ring.clone(), scale: *scale },
        }
    }

    /// Into the allocation `self` already has, when of the same form.
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (Amounts::Narrow(to), Amounts::Narrow(from)) => to.clone_from(from),
            (Amounts::Wide(to), Amounts::Wide(from)) => to.clone_from(from),
            (Amounts::Decimals { ring, scale }, Amounts::Decimals { ring: from, scale: from_scale }) => {
                super::copy_ring(ring, from);
                *scale = *from_scale;
            }
            (to, from) => *to = from.clone(),
        }
    }
}

impl Default for Amounts {
    fn default() -> Self {
        Amounts::Narrow(Units { ring: VecDeque::new(), sum: 0, scale: 0 })
    }
}

/// Amounts as integers of 10^-scale units, and their sum.
#[derive(Debug, PartialEq)]
struct Units<T> {
    ring: VecDeque<T>,
    sum: i64,
    /// At most 28: a decimal's scale.
    scale: u8,
}

impl<T: Copy> Clone for Units<T> {
    fn clone(&self) -> Self {
        Units { ring: self.ring.clone(), sum: self.sum, scale: self.scale }
    }

    fn clone_from(&mut self, source: &Self) {
        super::copy_ring(&mut self.ring, &source.ring);
        self.sum = source.sum;
        self.scale = source.scale;
    }
}

impl SpendHistory {
    /// An empty history with room for `amounts` (a restore knows how many
    /// come: no growing, one allocation).
    pub(crate) fn with_capacity(amounts: usize) -> Self {
        SpendHistory { amounts: Amounts::Narrow(Units { ring: VecDeque::with_capacity(amounts), sum: 0, scale: 0 }) }
    }

    pub fn len(&self) -> usize {
        match &self.amounts {
            Amounts::Narrow(u) => u.ring.len(),
            Amounts::Wide(u) => u.ring.len(),
            Amounts::Decimals { ring, .. } => ring.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the ring's allocation.
    pub fn heap_bytes(&self) -> usize {
        match &self.amounts {
            Amounts::Narrow(u) => u.ring.capacity() * size_of::<i32>(),
            Amounts::Wide(u) => u.ring.capacity() * size_of::<i64>(),
            Amounts::Decimals { ring, .. } => ring.capacity() * size_of::<Decimal>(),
        }
    }

    /// The amounts, oldest first, exactly.
    pub(crate) fn amounts(&self) -> impl Iterator<Item = Decimal> + '_ {
        let (narrow, wide, decimals) = match &self.amounts {
            Amounts::Narrow(u) => (Some(u), None, None),
            Amounts::Wide(u) => (None, Some(u), None),
            Amounts::Decimals { ring, .. } => (None, None, Some(ring)),
        };
        let scale = |s: u8| u32::from(s);
        let narrow =
            narrow.into_iter().flat_map(move |u| u.ring.iter().map(move |&x| Decimal::new(x.into(), scale(u.scale))));
        let wide = wide.into_iter().flat_map(move |u| u.ring.iter().map(move |&x| Decimal::new(x, scale(u.scale))));
        narrow.chain(wide).chain(decimals.into_iter().flatten().copied())
    }

    /// A history read back from a changelog: `amounts` (mantissa, scale;
    /// valid decimals, oldest first) as their rows would have built it.
    /// Amounts of one scale whose units fit the narrow form (the common
    /// case) are laid down at once; others go amount by amount.
    pub(crate) fn restored(amounts: &[(i128, u8)]) -> Self {
        if let Some(&(_, scale)) = amounts.first() {
            let units: Option<VecDeque<i32>> =
                amounts.iter().map(|&(m, s)| if s == scale { i32::try_from(m).ok() } else { None }).collect();
            let sum = i64::try_from(amounts.iter().map(|&(m, _)| m).sum::<i128>());
            if let (Some(ring), Ok(sum)) = (units, sum) {
                return SpendHistory { amounts: Amounts::Narrow(Units { ring, sum, scale }) };
            }
        }
        let mut history = SpendHistory::with_capacity(amounts.len());
        for &(mantissa, scale) in amounts {
            history.push(Decimal::from_i128_with_scale(mantissa, scale.into()), amounts.len());
        }
        history
    }

    /// Where the next update reads first: the oldest amount.
    pub(super) fn oldest(&self) -> *const u8 {
        match &self.amounts {
            Amounts::Narrow(u) => super::oldest(&u.ring),
            Amounts::Wide(u) => super::oldest(&u.ring),
            Amounts::Decimals { ring, .. } => super::oldest(ring),
        }
    }

    /// `amount × n > factor × sum` (n the history's length), exactly.
    fn exceeded_by(&self, amount: Decimal, factor: &exact::Factor) -> bool {
        let n = self.len();
        match &self.amounts {
            Amounts::Narrow(u) => factor.exceeded(amount, n, u.parts()),
            Amounts::Wide(u) => factor.exceeded(amount, n, u.parts()),
            Amounts::Decimals { ring, .. } => {
                exact::exceeds_sum_of(amount, n, factor.value(), ring.iter().map(|a| (a.mantissa(), a.scale())))
            }
        }
    }

    /// The sum, at the finest scale seen; None beyond a decimal's range.
    fn sum(&self) -> Option<Decimal> {
        match &self.amounts {
            Amounts::Narrow(u) => Some(u.total()),
            Amounts::Wide(u) => Some(u.total()),
            Amounts::Decimals { ring, scale } => {
                let mut sum = ring.iter().try_fold(Decimal::ZERO, |s, &a| s.checked_add(a))?;
                sum.rescale((*scale).into());
                Some(sum)
            }
        }
    }

    /// The mean, for display: to 4 places.
    fn mean(&self) -> Decimal {
        let n = Decimal::from(self.len().max(1));
        if let Some(sum) = self.sum() {
            return (sum / n).round_dp(4);
        }
        // Decimals whose sum is beyond a decimal's range: their mean is
        // not, and is summed from the parts.
        match &self.amounts {
            Amounts::Decimals { ring, .. } => {
                ring.iter().fold(Decimal::ZERO, |m, &a| m.saturating_add(a / n)).round_dp(4)
            }
            _ => Decimal::ZERO,
        }
    }

    /// Appends `amount`, dropping the oldest once `limit` are kept.
    fn push(&mut self, amount: Decimal, limit: usize) {
        loop {
            let wider = match &mut self.amounts {
                Amounts::Narrow(u) => {
                    if u.push(amount, limit) {
                        return;
                    }
                    u.convert(|x| Some(i64::from(x))).map_or_else(|| u.decimals(), Amounts::Wide)
                }
                Amounts::Wide(u) => {
                    if u.push(amount, limit) {
                        return;
                    }
                    u.decimals()
                }
                Amounts::Decimals { ring, scale } => {
                    if ring.len() >= limit {
                        ring.pop_front();
                    }
                    push_within(ring, amount, limit);
                    *scale = (*scale).max(decimal_scale(amount));
                    return;
                }
            };
            self.amounts = wider;
        }
    }
}

/// A decimal's scale, at most 28.
fn decimal_scale(d: Decimal) -> u8 {
    d.scale() as u8
}

impl<T> Units<T>
where
    T: Copy + Into<i64> + TryFrom<i64>,
{
    fn total(&self) -> Decimal {
        Decimal::new(self.sum, self.scale.into())
    }

    fn parts(&self) -> exact::Parts {
        (self.sum.into(), self.scale.into())
    }

    /// Appends `amount` (rescaling the history first if it is finer);
    /// false when it, or the sum, does not fit here, the values kept exact
    /// either way.
    fn push(&mut self, amount: Decimal, limit: usize) -> bool {
        let scale = decimal_scale(amount);
        if scale > self.scale {
            let Some(rescaled) = self.rescaled(scale) else { return false };
            *self = rescaled;
        }
        let units = if scale == self.scale {
            i64::try_from(amount.mantissa()).ok()
        } else {
            exact::pow10((self.scale - scale).into())
                .and_then(|by| amount.mantissa().checked_mul(by))
                .and_then(|u| i64::try_from(u).ok())
        };
        let Some((units, unit)) = units.and_then(|u| Some((u, T::try_from(u).ok()?))) else { return false };
        let full = self.ring.len() >= limit;
        let oldest = if full { self.ring.front().map_or(0, |&x| x.into()) } else { 0 };
        let Ok(sum) = i64::try_from(i128::from(self.sum) + i128::from(units) - i128::from(oldest)) else {
            return false;
        };
        if full {
            self.ring.pop_front();
        }
        push_within(&mut self.ring, unit, limit);
        self.sum = sum;
        true
    }

    /// The same amounts in units of 10^-scale (a finer scale).
    fn rescaled(&self, scale: u8) -> Option<Units<T>> {
        let by = exact::pow10((scale - self.scale).into())?;
        let times = |x: i64| i64::try_from(i128::from(x).checked_mul(by)?).ok();
        let mut rescaled = self.convert(|x| T::try_from(times(x.into())?).ok())?;
        rescaled.sum = times(self.sum)?;
        rescaled.scale = scale;
        Some(rescaled)
    }

    /// The same history with every unit mapped (None if one does not
    /// map), keeping the ring's capacity.
    fn convert<U>(&self, f: impl Fn(T) -> Option<U>) -> Option<Units<U>> {
        let mut ring = VecDeque::with_capacity(self.ring.capacity());
        for &x in &self.ring {
            ring.push_back(f(x)?);
        }
        Some(Units { ring, sum: self.sum, scale: self.scale })
    }

    fn decimals(&self) -> Amounts {
        let ring = self.ring.iter().map(|&x| Decimal::new(x.into(), self.scale.into())).collect();
        Amounts::Decimals { ring, scale: self.scale }
    }
}

/// Appends `x`, growing the capacity four times over (4, 16, 64 ...) but
/// never past `limit`: `VecDeque`'s own doubling would hold 64 amounts for
/// a history of 50, and leave more freed blocks behind on the way.
fn push_within<T>(ring: &mut VecDeque<T>, x: T, limit: usize) {
    if ring.len() == ring.capacity() {
        let grown = ring.capacity().max(1).saturating_mul(4).min(limit).max(ring.len() + 1);
        ring.reserve_exact(grown - ring.len());
    }
    ring.push_back(x);
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
    /// The alert's `reasons`: this rule's evidence.
    pub fn reasons(&self) -> Json {
        json!([{
            "rule": "spend_anomaly",
            "amount": self.amount.to_string(),
            "mean": self.mean.to_string(),
            "factor": self.factor.to_string(),
            "history": self.history,
            "min_amount": self.min_amount.to_string(),
        }])
    }

    /// How many times the mean the amount is (4 places); beyond a
    /// decimal's range (a huge amount over a tiny mean) it saturates.
    pub fn ratio(&self) -> Decimal {
        if self.mean.is_zero() {
            return Decimal::ZERO;
        }
        match self.amount.checked_div(self.mean) {
            Some(ratio) => ratio.round_dp(4),
            None if self.amount.is_sign_negative() == self.mean.is_sign_negative() => Decimal::MAX,
            None => Decimal::MIN,
        }
    }
}

/// `spend_anomaly`, compiled: the file's parameters, checked and ready
/// for every row. Its per-user state is a [`SpendHistory`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpendAnomaly {
    history: usize,
    min_history: usize,
    factor: exact::Factor,
    min_amount: Decimal,
}

impl SpendAnomaly {
    /// Amounts kept per user.
    pub fn history(&self) -> usize {
        self.history
    }

    pub fn new(config: &SpendAnomalyConfig) -> Self {
        SpendAnomaly {
            history: config.history,
            min_history: config.min_history,
            factor: exact::Factor::new(config.factor),
            min_amount: config.min_amount,
        }
    }

    /// Judges `amount` against `history`, then adds it to the history.
    pub fn observe(&self, history: &mut SpendHistory, amount: Decimal) -> Option<SpendFinding> {
        let n = history.len();
        let finding = (n >= self.min_history
            && exact::greater(amount, self.min_amount)
            && history.exceeded_by(amount, &self.factor))
        .then(|| SpendFinding {
            amount,
            mean: history.mean(),
            history: n,
            factor: self.factor.value(),
            min_amount: self.min_amount,
        });
        history.push(amount, self.history);
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn a_restored_history_is_the_one_its_rows_built() {
        let cases: [&[&str]; 5] = [
            &["12.50", "300.00", "7.25"],
            &["12.5", "300.00", "7"],
            &["99999999999.99", "1.00"],
            &["79228162514264337593543950335", "1", "0.5"],
            &[],
        ];
        for amounts in cases {
            let mut pushed = SpendHistory::default();
            for a in amounts {
                pushed.push(d(a), amounts.len());
            }
            let parts: Vec<(i128, u8)> = amounts.iter().map(|a| (d(a).mantissa(), d(a).scale() as u8)).collect();
            let restored = SpendHistory::restored(&parts);
            assert_eq!(restored.amounts().collect::<Vec<_>>(), pushed.amounts().collect::<Vec<_>>(), "{amounts:?}");
            assert_eq!(restored.len(), pushed.len());
            let factor = exact::Factor::new(d("3"));
            assert_eq!(restored.exceeded_by(d("1000"), &factor), pushed.exceeded_by(d("1000"), &factor), "{amounts:?}");
        }
        // The common case lies in the narrow form, as pushing builds it.
        let parts = [(1250, 2), (30000, 2)];
        assert_eq!(SpendHistory::restored(&parts), {
            let mut h = SpendHistory::default();
            h.push(d("12.50"), 2);
            h.push(d("300.00"), 2);
            h
        });
    }

    fn observe(config: &SpendAnomalyConfig, history: &mut SpendHistory, amount: Decimal) -> Option<SpendFinding> {
        SpendAnomaly::new(config).observe(history, amount)
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
    fn a_ratio_beyond_a_decimals_range_saturates() {
        let c = SpendAnomalyConfig { min_history: 1, ..SpendAnomalyConfig::default() };
        let (_, f) = feed(&c, &["0.0001", "70000000000000000000000000"]);
        assert_eq!(f[1].as_ref().expect("alert").ratio(), Decimal::MAX, "7e25 / 1e-4 is past 7.9e28");
        let (_, f) = feed(&c, &["0.0001", "-70000000000000000000000000"]);
        assert_eq!(f[1].as_ref().map(SpendFinding::ratio), None, "a negative amount is no anomaly");
    }

    #[test]
    fn the_evidence_names_the_rule_and_its_exact_values() {
        let c = SpendAnomalyConfig::default();
        let (_, f) = feed(&c, &["100", "100", "100", "4000.00"]);
        let reasons = f[3].as_ref().expect("alert").reasons();
        assert_eq!(
            reasons,
            json!([{"rule": "spend_anomaly", "amount": "4000.00", "mean": "100", "factor": "3.0",
                    "history": 3, "min_amount": "500"}])
        );
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
        assert_eq!(h.sum(), Some(d("1200")), "history is 1000,100,100");
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

    /// The form a history is kept in.
    fn form(h: &SpendHistory) -> &'static str {
        match h.amounts {
            Amounts::Narrow(_) => "i32",
            Amounts::Wide(_) => "i64",
            Amounts::Decimals { .. } => "decimals",
        }
    }

    #[test]
    fn a_full_history_holds_exactly_its_amounts() {
        let c = SpendAnomalyConfig::default();
        let (h, _) = feed(&c, &["12.34"; 80]);
        assert_eq!((h.len(), h.heap_bytes(), form(&h)), (50, 50 * 4, "i32"));
        let c = SpendAnomalyConfig { history: 1, min_history: 1, ..c };
        let (h, _) = feed(&c, &["1", "2", "3"]);
        assert_eq!((h.len(), h.sum()), (1, Some(d("3"))));
    }

    #[test]
    fn wider_and_finer_amounts_move_the_history_on_and_stay_exact() {
        let c = SpendAnomalyConfig { min_amount: d("0"), ..SpendAnomalyConfig::default() };
        // Beyond an i32 of cents.
        let (h, f) = feed(&c, &["0.01", "21474836.47", "21474836.48", "0.01"]);
        assert_eq!((form(&h), h.sum(), f[3].is_none()), ("i64", Some(d("42949672.97")), true));
        // A finer scale rescales what is kept; the sum keeps the finest.
        let (h, _) = feed(&c, &["1.5", "2.25", "3.125"]);
        assert_eq!((form(&h), h.sum().map(|s| s.to_string())), ("i32", Some("6.875".into())));
        // 10^19 fits no i64: decimals, compared exactly all the same
        // (factor 3: more than the mean × 3 is more than the sum).
        let history = ["10000000000000000000", "0.00001", "1"];
        let (_, f) = feed(&c, &[&history[..], &["10000000000000000001.00001"]].concat());
        assert!(f[3].is_none(), "exactly 3 × the mean");
        let (h, f) = feed(&c, &[&history[..], &["10000000000000000001.00002"]].concat());
        assert_eq!(form(&h), "decimals");
        assert_eq!(f[3].as_ref().map(|f| f.mean), Some(d("3333333333333333333.6667")));
    }

    #[test]
    fn amounts_beyond_a_decimal_sum_do_not_panic() {
        let c = SpendAnomalyConfig { min_amount: d("0"), ..SpendAnomalyConfig::default() };
        let max = Decimal::MAX.to_string();
        let (h, f) = feed(&c, &[&max, &max, &max, &max, "0.5"]);
        assert_eq!((form(&h), h.sum()), ("decimals", None));
        assert!(f[3].is_none(), "max × 3 is not more than 3 × 3 max");
        let c = SpendAnomalyConfig { factor: d("1"), ..c };
        let (_, f) = feed(&c, &[&max, &max, &format!("-{max}"), &max]);
        assert_eq!(f[3].as_ref().map(|f| f.mean), Some(Decimal::MAX / Decimal::from(3)).map(|m| m.round_dp(4)));
    }

    /// The history as it was kept before it was compact: decimals and a
    /// running decimal sum. Exact while products fit 28 digits.
    #[derive(Default)]
    struct Decimals {
        amounts: VecDeque<Decimal>,
        sum: Decimal,
    }

    impl Decimals {
        fn observe(&mut self, config: &SpendAnomalyConfig, amount: Decimal) -> Option<SpendFinding> {
            let n = self.amounts.len();
            let exceeds = || amount * Decimal::from(n) > config.factor * self.sum;
            let finding = (n >= config.min_history && amount > config.min_amount && exceeds()).then(|| SpendFinding {
                amount,
                mean: (self.sum / Decimal::from(n)).round_dp(4),
                history: n,
                factor: config.factor,
                min_amount: config.min_amount,
            });
            if n == config.history {
                if let Some(oldest) = self.amounts.pop_front() {
                    self.sum -= oldest;
                }
            }
            self.amounts.push_back(amount);
            self.sum += amount;
            finding
        }
    }

    #[test]
    fn findings_are_those_of_a_decimal_history() {
        // splitmix64: amounts of 1 to 12 digits at scales 0 to 6, some
        // negative, against factors 0.5 to 10 at scales 0 to 3.
        let mut state = 7u64;
        let mut random = move |below: u64| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        };
        let mut findings = 0;
        for round in 0..400 {
            let history = 1 + random(60) as usize;
            let config = SpendAnomalyConfig {
                history,
                min_history: 1 + random(history as u64) as usize,
                factor: Decimal::new(5 + random(96) as i64 * 10_i64.pow(random(3) as u32), 1 + random(3) as u32),
                min_amount: Decimal::new(random(1000) as i64, random(3) as u32),
                ..SpendAnomalyConfig::default()
            };
            let (mut compact, mut reference) = (SpendHistory::default(), Decimals::default());
            for _ in 0..200 {
                let digits = 1 + random(12) as u32;
                let mut mantissa = 1 + random(10_u64.pow(digits)) as i64;
                if random(8) == 0 {
                    mantissa = -mantissa;
                }
                // Half the rounds are a column's: one scale, no zero.
                let column = round % 2 == 0;
                let scale = if column || random(4) > 0 { (round % 3) as u32 } else { random(7) as u32 };
                if !column && random(20) == 0 {
                    mantissa = 0;
                }
                let amount = Decimal::new(mantissa, scale);
                let got = observe(&config, &mut compact, amount);
                let want = reference.observe(&config, amount);
                assert_eq!(got, want, "{config:?} after {:?}", reference.amounts);
                findings += usize::from(want.is_some());
                // A running decimal sum's scale also depends on whether it
                // met zero on the way; a column's is the column's.
                if column {
                    let shown = |f: Option<SpendFinding>| f.map(|f| f.mean.to_string());
                    assert_eq!(shown(got), shown(want), "the mean as shown");
                }
            }
            assert_eq!(compact.sum(), Some(reference.sum));
        }
        assert!(findings > 1_000, "the comparison is exercised: {findings} findings");
    }
}
