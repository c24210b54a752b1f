//! `velocity_score`: many transactions in a short time, or one very large.
//!
//! Points add up per row: `velocity` scores when more than `max_count` of
//! the user's rows seen so far lie in the `window` ending at this row's
//! event time (both ends included, the row itself counted); `high_amount`
//! scores when the amount is above `threshold`. A total above
//! `alert_above` alerts. Event time only, never the wall clock: a late row
//! counts by its own time. Times older than the user's newest minus the
//! window minus `allowed_lateness` are forgotten.

use std::collections::VecDeque;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value as Json};

use super::exact;
use crate::config::{HighAmountRule, VelocityScoreConfig};
use crate::time::EventTime;

/// A user's recent event times, ascending (microseconds).
#[derive(Debug, Default, PartialEq)]
pub struct VelocityWindow {
    times: VecDeque<i64>,
}

/// `clone_from` reuses the allocation (see [`super::UserState`]).
impl Clone for VelocityWindow {
    fn clone(&self) -> Self {
        VelocityWindow { times: self.times.clone() }
    }

    fn clone_from(&mut self, source: &Self) {
        super::copy_ring(&mut self.times, &source.times);
    }
}

impl VelocityWindow {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Bytes of the times' allocation.
    pub fn heap_bytes(&self) -> usize {
        self.times.capacity() * size_of::<i64>()
    }

    /// The times, ascending (µs).
    pub(crate) fn times(&self) -> impl ExactSizeIterator<Item = i64> + '_ {
        self.times.iter().copied()
    }

    /// A window of `times` read back from a changelog (kept ascending).
    pub(crate) fn from_times(times: impl IntoIterator<Item = i64>) -> Self {
        let mut times: VecDeque<i64> = times.into_iter().collect();
        times.make_contiguous().sort_unstable();
        VelocityWindow { times }
    }

    /// Where the next update reads first: the oldest time.
    pub(super) fn oldest(&self) -> *const u8 {
        super::oldest(&self.times)
    }
}

/// The evidence of a score above `alert_above`.
#[derive(Debug, Clone, PartialEq)]
pub struct VelocityFinding {
    pub score: u32,
    /// Rows in the window (when the velocity rule is active) and whether it
    /// scored.
    pub velocity: Option<VelocityEvidence>,
    /// The amount rule's part, when active.
    pub high_amount: Option<HighAmountEvidence>,
    pub alert_above: u32,
}

impl VelocityFinding {
    /// The alert's `reasons`: one entry per active rule.
    pub fn reasons(&self) -> Json {
        let mut rules = Vec::new();
        if let Some(v) = &self.velocity {
            rules.push(json!({
                "rule": "velocity",
                "count": v.count,
                "window_seconds": v.window.as_secs_f64(),
                "max_count": v.max_count,
                "points": v.points,
            }));
        }
        if let Some(h) = &self.high_amount {
            rules.push(json!({
                "rule": "high_amount",
                "amount": h.amount.to_string(),
                "threshold": h.threshold.to_string(),
                "points": h.points,
            }));
        }
        Json::Array(rules)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VelocityEvidence {
    pub count: usize,
    pub window: Duration,
    pub max_count: u32,
    pub points: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HighAmountEvidence {
    pub amount: Decimal,
    pub threshold: Decimal,
    pub points: u32,
}

/// A window this small is not shrunk: the allocator would not gain.
const MIN_SHRINK_CAPACITY: usize = 16;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `velocity_score`, compiled: the file's parameters with durations in
/// event-time microseconds. Its per-user state is a [`VelocityWindow`].
#[derive(Debug, Clone, PartialEq)]
pub struct VelocityScore {
    velocity: Option<CountRule>,
    high_amount: Option<HighAmountRule>,
    alert_above: u32,
    /// `allowed_lateness`, µs.
    lateness: i64,
}

/// The `velocity:` rule, its window in µs.
#[derive(Debug, Clone, PartialEq)]
struct CountRule {
    window: Duration,
    window_us: i64,
    max_count: u32,
    points: u32,
}

impl VelocityScore {
    pub fn new(config: &VelocityScoreConfig) -> Self {
        VelocityScore {
            velocity: config.velocity.as_ref().map(|rule| CountRule {
                window: rule.window,
                window_us: micros(rule.window),
                max_count: rule.max_count,
                points: rule.points,
            }),
            high_amount: config.high_amount.clone(),
            alert_above: config.alert_above,
            lateness: micros(config.allowed_lateness),
        }
    }

    /// Scores a row of the user at `time` with `amount`, then remembers it.
    pub fn observe(&self, window: &mut VelocityWindow, time: EventTime, amount: Decimal) -> Option<VelocityFinding> {
        let t = time.micros();
        let mut score: u32 = 0;
        let velocity = self.velocity.as_ref().map(|rule| {
            let times = &mut window.times;
            // Where the row goes: at the back when it is in order.
            let in_order = times.back().is_none_or(|&s| s <= t);
            let at = if in_order { times.len() } else { times.partition_point(|&s| s <= t) };
            let start = t.saturating_sub(rule.window_us);
            let count = at + 1 - times.partition_point(|&s| s < start);
            let points = if count > rule.max_count as usize { rule.points } else { 0 };
            score = score.saturating_add(points);
            // Forget what no row within the allowed lateness can count again
            // (this row too, when it is that late).
            let newest = times.back().map_or(t, |&s| s.max(t));
            let horizon = newest.saturating_sub(rule.window_us).saturating_sub(self.lateness);
            if in_order {
                times.push_back(t);
            } else if t >= horizon {
                times.insert(at, t);
            }
            while times.front().is_some_and(|&s| s < horizon) {
                times.pop_front();
            }
            // Give back what a burst left behind (growth doubles: no thrash).
            if times.capacity() > MIN_SHRINK_CAPACITY && times.len() * 4 <= times.capacity() {
                times.shrink_to(times.capacity() / 2);
            }
            VelocityEvidence { count, window: rule.window, max_count: rule.max_count, points }
        });
        let high_amount = self.high_amount.as_ref().map(|rule| {
            let points = if exact::greater(amount, rule.threshold) { rule.points } else { 0 };
            score = score.saturating_add(points);
            HighAmountEvidence { amount, threshold: rule.threshold, points }
        });
        (score > self.alert_above).then_some(VelocityFinding {
            score,
            velocity,
            high_amount,
            alert_above: self.alert_above,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VelocityRule;

    const S: i64 = 1_000_000;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn observe(
        config: &VelocityScoreConfig,
        window: &mut VelocityWindow,
        time: EventTime,
        amount: Decimal,
    ) -> Option<VelocityFinding> {
        VelocityScore::new(config).observe(window, time, amount)
    }

    /// Velocity alone, alerting on the count rule only.
    fn count_only() -> VelocityScoreConfig {
        VelocityScoreConfig { high_amount: None, alert_above: 39, ..VelocityScoreConfig::default() }
    }

    fn feed(config: &VelocityScoreConfig, w: &mut VelocityWindow, times: &[i64]) -> Vec<Option<VelocityFinding>> {
        times.iter().map(|&t| observe(config, w, EventTime(t), d("1"))).collect()
    }

    #[test]
    fn exactly_max_count_in_the_window_does_not_score() {
        let c = count_only();
        let mut w = VelocityWindow::default();
        let f = feed(&c, &mut w, &[0, S, 2 * S, 3 * S, 4 * S]);
        assert!(f.iter().all(Option::is_none), "5 rows is not more than 5");
        let sixth = observe(&c, &mut w, EventTime(5 * S), d("1")).expect("6 > 5");
        let v = sixth.velocity.expect("velocity evidence");
        assert_eq!((v.count, v.points, sixth.score), (6, 40, 40));
    }

    #[test]
    fn a_row_exactly_window_old_counts_and_a_microsecond_older_does_not() {
        let c = count_only();
        // Five rows at t0, then a row exactly 60 s later: both ends included.
        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[0, 0, 0, 0, 0]);
        let at_edge = observe(&c, &mut w, EventTime(60 * S), d("1"));
        assert_eq!(at_edge.and_then(|f| f.velocity).map(|v| v.count), Some(6));

        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[0, 0, 0, 0, 0]);
        let past_edge = observe(&c, &mut w, EventTime(60 * S + 1), d("1"));
        assert_eq!(past_edge, None, "the five are 60 s + 1 µs old");
    }

    #[test]
    fn the_evidence_has_an_entry_per_active_rule() {
        let c = VelocityScoreConfig::default();
        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[0, S, 2 * S, 3 * S, 4 * S]);
        let f = observe(&c, &mut w, EventTime(5 * S), d("4500.00")).expect("90 > 70");
        assert_eq!(
            f.reasons(),
            json!([
                {"rule": "velocity", "count": 6, "window_seconds": 60.0, "max_count": 5, "points": 40},
                {"rule": "high_amount", "amount": "4500.00", "threshold": "4000", "points": 50},
            ])
        );
    }

    #[test]
    fn exactly_threshold_is_not_above_it() {
        let c = VelocityScoreConfig { velocity: None, alert_above: 40, ..VelocityScoreConfig::default() };
        let mut w = VelocityWindow::default();
        assert_eq!(observe(&c, &mut w, EventTime(0), d("4000")), None);
        let f = observe(&c, &mut w, EventTime(0), d("4000.01")).expect("above threshold");
        assert_eq!(f.score, 50);
        assert_eq!(f.high_amount.map(|h| h.points), Some(50));
        assert!(w.is_empty(), "no times kept without the velocity rule");
    }

    #[test]
    fn points_beyond_u32_saturate_rather_than_overflow() {
        let c = VelocityScoreConfig {
            velocity: Some(VelocityRule { window: Duration::from_secs(60), max_count: 0, points: u32::MAX }),
            high_amount: Some(HighAmountRule { threshold: d("1"), points: u32::MAX }),
            alert_above: u32::MAX - 1,
            ..VelocityScoreConfig::default()
        };
        let f = observe(&c, &mut VelocityWindow::default(), EventTime(0), d("2")).expect("above");
        assert_eq!(f.score, u32::MAX);
    }

    #[test]
    fn the_reference_agent_needs_both_rules() {
        let c = VelocityScoreConfig::default();
        let mut w = VelocityWindow::default();
        for i in 0..5 {
            assert_eq!(observe(&c, &mut w, EventTime(i * S), d("5000")), None, "50 points alone");
        }
        let f = observe(&c, &mut w, EventTime(5 * S), d("10")).map(|f| f.score);
        assert_eq!(f, None, "40 points alone");
        let f = observe(&c, &mut w, EventTime(6 * S), d("4000.01")).expect("90 > 70");
        assert_eq!(f.score, 90);
        assert_eq!(f.alert_above, 70);
    }

    #[test]
    fn late_rows_count_by_their_own_time() {
        let c = VelocityScoreConfig { allowed_lateness: Duration::from_secs(120), ..count_only() };
        let mut w = VelocityWindow::default();
        // Rows at 100..105 s, then a late row at 30 s: its window [-30, 30]
        // holds only itself.
        feed(&c, &mut w, &[100 * S, 101 * S, 102 * S, 103 * S, 104 * S, 105 * S]);
        let late = observe(&c, &mut w, EventTime(30 * S), d("1"));
        assert_eq!(late, None);
        // A late row at 99 s sees 99..105? No: its window ends at 99 s, so
        // it sees itself and the late row at 30 s is outside [39, 99].
        let late = observe(&c, &mut w, EventTime(99 * S), d("1"));
        assert_eq!(late, None);
        // A row at 105 s now counts 100..105 (6), 99 (late), and itself: 8.
        let f = observe(&c, &mut w, EventTime(105 * S), d("1")).expect("8 > 5");
        assert_eq!(f.velocity.map(|v| v.count), Some(8));
    }

    #[test]
    fn old_times_are_forgotten_beyond_window_and_lateness() {
        let c = VelocityScoreConfig { allowed_lateness: Duration::from_secs(10), ..count_only() };
        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[0, S, 2 * S]);
        assert_eq!(w.len(), 3);
        observe(&c, &mut w, EventTime(71 * S + 1), d("1"));
        // Horizon: 71 s + 1 µs - 60 s - 10 s = 1 s + 1 µs: 0 and 1 s go.
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn custom_rules() {
        let c = VelocityScoreConfig {
            velocity: Some(VelocityRule { window: Duration::from_secs(1), max_count: 1, points: 10 }),
            high_amount: Some(HighAmountRule { threshold: d("1"), points: 5 }),
            alert_above: 14,
            ..VelocityScoreConfig::default()
        };
        let mut w = VelocityWindow::default();
        assert_eq!(observe(&c, &mut w, EventTime(0), d("2")), None, "5 points");
        assert_eq!(observe(&c, &mut w, EventTime(S), d("2")).map(|f| f.score), Some(15));
    }

    #[test]
    fn a_burst_gives_its_memory_back() {
        let c = count_only();
        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[0; 1000]);
        assert_eq!(w.len(), 1000);
        // A row every 10 s from 100 s on: 7 in the window, the burst gone.
        let calm: Vec<i64> = (0..20).map(|i| (100 + 10 * i) * S).collect();
        feed(&c, &mut w, &calm);
        assert_eq!((w.len(), w.heap_bytes()), (7, MIN_SHRINK_CAPACITY * 8));
    }

    #[test]
    fn a_row_older_than_the_horizon_counts_and_is_not_kept() {
        let c = count_only();
        let mut w = VelocityWindow::default();
        feed(&c, &mut w, &[100 * S, 100 * S, 100 * S, 100 * S, 100 * S]);
        let late = observe(&c, &mut w, EventTime(39 * S), d("1"));
        assert_eq!(late, None, "its window [-21 s, 39 s] holds only itself");
        assert_eq!(w.len(), 5);
    }
}
