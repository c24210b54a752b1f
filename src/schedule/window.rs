//! Windows on the clock and the plan of a run: pure functions of the time,
//! tested without a database or a clock.
//!
//! Times are microseconds since the Unix epoch, UTC (PostgreSQL's own
//! resolution). Windows are half-open, `[start, end)`, and aligned to
//! multiples of their length since the epoch; since a valid length divides
//! a day, that is also aligned to UTC midnight (a `10m` window starts at
//! :00, :10, ...). A window is *due* `grace` after it ends.
//!
//! A run's plan: every due window after the newest completed one that
//! ended within `catch_up_limit` is computed for the first time, oldest
//! first (a pipeline that never completed a window starts with the limit's
//! worth of history); each of those also brings the `recompute_last`
//! windows before it, if they are completed, to be computed again (late
//! readings). Windows older than the limit are skipped, and the plan says
//! how many. Gaps before the newest completed window are left alone: they
//! are windows skipped on purpose, or of another length (`every` changed).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::config::ScheduleConfig;
use crate::time::EventTime;

/// A window `[start, end)` in µs since the epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// `2026-11-25T10:00:00Z/2026-11-25T10:10:00Z` (an ISO 8601 interval).
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", timestamp(self.start), timestamp(self.end))
    }
}

/// RFC 3339 in UTC, without the fraction when it is zero.
pub fn timestamp(micros: i64) -> String {
    let text = EventTime(micros).to_string();
    match text.strip_suffix(".000000Z") {
        Some(whole) => format!("{whole}Z"),
        None => text,
    }
}

/// Whole microseconds of a duration (saturating; config durations are far
/// below the limit).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

crate::label_values! {
    /// Why a window is in a plan; its label in logs and metrics.
    #[derive(PartialOrd, Ord)]
    pub enum WindowKind {
        /// Not completed before: computed for the first time.
        First => "first",
        /// Completed before; computed again to take in late readings.
        Recompute => "recompute",
    }
}

/// One window of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub window: Window,
    pub kind: WindowKind,
}

/// Windows that were never completed and are older than `catch_up_limit`:
/// not computed, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// End of the last completed window.
    pub from: i64,
    /// Start of the oldest window the plan computes.
    pub to: i64,
    /// How many windows of the current length fit between (rounded up).
    pub windows: i64,
}

/// What one run computes, oldest window first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub windows: Vec<Planned>,
    pub skipped: Option<Skipped>,
}

/// The schedule of one pipeline, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    every: i64,
    grace: i64,
    catch_up_limit: i64,
    recompute_last: i64,
}

impl Grid {
    pub fn new(schedule: &ScheduleConfig) -> Self {
        Grid {
            every: micros(schedule.every).max(1),
            grace: micros(schedule.grace),
            catch_up_limit: micros(schedule.catch_up_limit),
            recompute_last: i64::from(schedule.recompute_last),
        }
    }

    /// The window length, µs.
    pub fn every(&self) -> i64 {
        self.every
    }

    fn align_down(&self, t: i64) -> i64 {
        t.div_euclid(self.every) * self.every
    }

    fn align_up(&self, t: i64) -> i64 {
        let down = self.align_down(t);
        if down == t {
            t
        } else {
            down + self.every
        }
    }

    /// The window that ends at `end`.
    pub fn ending_at(&self, end: i64) -> Window {
        Window { start: end - self.every, end }
    }

    /// The window holding the instant `t`.
    pub fn containing(&self, t: i64) -> Window {
        let start = self.align_down(t);
        Window { start, end: start + self.every }
    }

    /// The end of the newest window due at `now` (ended at least `grace`
    /// ago).
    pub fn last_due_end(&self, now: i64) -> i64 {
        self.align_down(now - self.grace)
    }

    /// When the next window becomes due: strictly after `now`.
    pub fn next_due(&self, now: i64) -> i64 {
        self.last_due_end(now) + self.every + self.grace
    }

    /// The end of the oldest window a run at `now` computes for the first
    /// time: windows that ended within `catch_up_limit`.
    pub fn first_end(&self, now: i64) -> i64 {
        self.align_up(now - self.catch_up_limit)
    }

    /// The oldest window end whose completion a run at `now` needs to
    /// know (the catch-up range and the windows it may recompute).
    pub fn state_from(&self, now: i64) -> i64 {
        self.first_end(now) - self.recompute_last * self.every
    }

    /// The plan of a run at `now`. `completed` holds the completed windows
    /// ending at or after [`Grid::state_from`] (others are ignored);
    /// `last_completed_end` is the end of the newest completed window of
    /// any age, or `None` if the pipeline never completed one.
    pub fn plan(&self, now: i64, completed: &BTreeSet<Window>, last_completed_end: Option<i64>) -> Plan {
        let mut first_end = self.first_end(now);
        if let Some(last) = last_completed_end {
            // The first window starting at or after the last completed end.
            first_end = first_end.max(self.align_up(last) + self.every);
        }
        let last_end = self.last_due_end(now);
        let mut first: BTreeSet<Window> = BTreeSet::new();
        let mut end = first_end;
        while end <= last_end {
            let window = self.ending_at(end);
            if !completed.contains(&window) {
                first.insert(window);
            }
            end += self.every;
        }
        let mut again: BTreeSet<Window> = BTreeSet::new();
        for window in &first {
            for k in 1..=self.recompute_last {
                let before = Window { start: window.start - k * self.every, end: window.end - k * self.every };
                if completed.contains(&before) && !first.contains(&before) {
                    again.insert(before);
                }
            }
        }
        let skipped = match (first.first(), last_completed_end) {
            (Some(oldest), Some(last)) if last < oldest.start => Some(Skipped {
                from: last,
                to: oldest.start,
                windows: (oldest.start - last + self.every - 1) / self.every,
            }),
            _ => None,
        };
        let mut windows: Vec<Planned> = first
            .into_iter()
            .map(|window| Planned { window, kind: WindowKind::First })
            .chain(again.into_iter().map(|window| Planned { window, kind: WindowKind::Recompute }))
            .collect();
        windows.sort_by_key(|p| (p.window.start, p.kind));
        Plan { windows, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const MIN: i64 = 60 * S;
    /// 2026-11-25T10:00:00Z.
    const T10: i64 = 1_795_600_800 * S;

    fn grid(every: u64, grace: u64, limit: u64, recompute: u32) -> Grid {
        Grid::new(&ScheduleConfig {
            every: Duration::from_secs(every),
            grace: Duration::from_secs(grace),
            catch_up_limit: Duration::from_secs(limit),
            recompute_last: recompute,
        })
    }

    /// The 10-minute window starting at 10:00 + `k` x 10m.
    fn w(k: i64) -> Window {
        Window { start: T10 + k * 10 * MIN, end: T10 + (k + 1) * 10 * MIN }
    }

    fn firsts(plan: &Plan) -> Vec<Window> {
        plan.windows.iter().filter(|p| p.kind == WindowKind::First).map(|p| p.window).collect()
    }

    fn agains(plan: &Plan) -> Vec<Window> {
        plan.windows.iter().filter(|p| p.kind == WindowKind::Recompute).map(|p| p.window).collect()
    }

    #[test]
    fn windows_are_aligned_to_the_clock_in_utc() {
        assert_eq!(timestamp(T10), "2026-11-25T10:00:00Z");
        let g = grid(600, 30, 86_400, 1);
        // 10:07:12.5 is in 10:00-10:10.
        assert_eq!(g.containing(T10 + 7 * MIN + 12 * S + S / 2), w(0));
        assert_eq!(w(0).to_string(), "2026-11-25T10:00:00Z/2026-11-25T10:10:00Z");
        // Midnight starts a window, whatever the length that divides a day.
        let midnight = T10 - 10 * 60 * MIN;
        for every in [1, 60, 300, 900, 3600, 86_400] {
            let g = grid(every, 0, 2 * 86_400, 0);
            assert_eq!(g.containing(midnight).start, midnight, "every {every}s");
            assert_eq!(g.containing(midnight - 1).end, midnight, "every {every}s");
        }
    }

    #[test]
    fn boundaries_are_half_open() {
        let g = grid(600, 30, 86_400, 1);
        // Exactly on 10:10 belongs to 10:10-10:20; a microsecond before, to
        // 10:00-10:10.
        assert_eq!(g.containing(w(1).start), w(1));
        assert_eq!(g.containing(w(1).start - 1), w(0));
        assert_eq!(timestamp(w(1).start - 1), "2026-11-25T10:09:59.999999Z");
    }

    #[test]
    fn a_window_is_due_grace_after_it_ends() {
        let g = grid(600, 30, 86_400, 1);
        // At 10:10:29.999999 the newest due window ends at 10:00.
        assert_eq!(g.last_due_end(w(1).start + 30 * S - 1), w(0).start);
        assert_eq!(g.next_due(w(1).start + 30 * S - 1), w(1).start + 30 * S);
        // At 10:10:30 exactly, 10:00-10:10 is due; the next at 10:20:30.
        assert_eq!(g.last_due_end(w(1).start + 30 * S), w(0).end);
        assert_eq!(g.next_due(w(1).start + 30 * S), w(2).start + 30 * S);
        // next_due is always strictly in the future.
        for offset in [0, 1, 29 * S, 30 * S, 31 * S, 9 * MIN] {
            let now = w(3).start + offset;
            assert!(g.next_due(now) > now, "{offset}");
        }
    }

    #[test]
    fn steady_state_computes_the_new_window_and_recomputes_the_one_before() {
        let g = grid(600, 30, 86_400, 1);
        let now = w(3).start + 30 * S; // 10:30:30: 10:20-10:30 is due
        let completed: BTreeSet<Window> = [w(0), w(1)].into();
        let plan = g.plan(now, &completed, Some(w(1).end));
        assert_eq!(
            plan.windows,
            [Planned { window: w(1), kind: WindowKind::Recompute }, Planned { window: w(2), kind: WindowKind::First }]
        );
        assert_eq!(plan.skipped, None);
        // Once it is completed, a second run at the same time has nothing to do.
        let completed: BTreeSet<Window> = [w(0), w(1), w(2)].into();
        assert_eq!(g.plan(now, &completed, Some(w(2).end)), Plan::default());
    }

    #[test]
    fn recompute_last_zero_and_more() {
        let completed: BTreeSet<Window> = [w(0), w(1), w(2)].into();
        let now = w(4).start + 30 * S;
        let plan = grid(600, 30, 86_400, 0).plan(now, &completed, Some(w(2).end));
        assert_eq!(firsts(&plan), [w(3)]);
        assert!(agains(&plan).is_empty());
        let plan = grid(600, 30, 86_400, 2).plan(now, &completed, Some(w(2).end));
        assert_eq!(agains(&plan), [w(1), w(2)]);
        // A window never completed is not "recomputed".
        let completed: BTreeSet<Window> = [w(2)].into();
        let plan = grid(600, 30, 86_400, 2).plan(now, &completed, Some(w(2).end));
        assert_eq!(agains(&plan), [w(2)]);
    }

    #[test]
    fn a_restart_across_two_boundaries_fills_both_windows_once() {
        let g = grid(600, 30, 86_400, 1);
        // Completed up to 10:10; stopped; started again at 10:35.
        let completed: BTreeSet<Window> = [w(0)].into();
        let now = w(3).start + 5 * MIN;
        let plan = g.plan(now, &completed, Some(w(0).end));
        assert_eq!(firsts(&plan), [w(1), w(2)]);
        // The window before the gap takes in late readings; the caught-up
        // windows are fresh, so they are not recomputed in the same run.
        assert_eq!(agains(&plan), [w(0)]);
        assert_eq!(plan.windows[0].window, w(0), "oldest first");
        assert_eq!(plan.skipped, None);
    }

    #[test]
    fn catch_up_is_bounded_and_says_what_it_skips() {
        // 1h limit, 10-minute windows, last completed 3 hours before.
        let g = grid(600, 30, 3600, 1);
        let now = w(20).start + 45 * S; // 13:20:45
        let completed: BTreeSet<Window> = [w(0)].into();
        let plan = g.plan(now, &completed, Some(w(0).end));
        // Windows ending at or after 12:20:45, i.e. from 12:30 to 13:20.
        let f = firsts(&plan);
        assert_eq!(f.first(), Some(&w(14)));
        assert_eq!(f.last(), Some(&w(19)));
        assert_eq!(f.len(), 6);
        assert!(agains(&plan).is_empty(), "w(0) is long gone from the recompute range");
        assert_eq!(plan.skipped, Some(Skipped { from: w(0).end, to: w(14).start, windows: 13 }));
    }

    #[test]
    fn a_new_pipeline_starts_with_the_limit_of_history() {
        let g = grid(600, 30, 3600, 1);
        let now = w(6).start + 31 * S;
        let plan = g.plan(now, &BTreeSet::new(), None);
        assert_eq!(firsts(&plan), [w(0), w(1), w(2), w(3), w(4), w(5)]);
        assert_eq!(plan.skipped, None);
    }

    #[test]
    fn gaps_before_the_newest_completed_window_are_left_alone() {
        let g = grid(600, 30, 86_400, 0);
        let completed: BTreeSet<Window> = [w(0), w(2), w(4)].into();
        assert_eq!(g.plan(w(5).start + 30 * S, &completed, Some(w(4).end)), Plan::default());
        let plan = g.plan(w(6).start + 30 * S, &completed, Some(w(4).end));
        assert_eq!(firsts(&plan), [w(5)]);
    }

    #[test]
    fn after_a_change_of_length_windows_go_on_from_the_last_completed_end() {
        // `every` changed from 10m to 5m after 10:00-10:10 completed: the
        // next window is 10:10-10:15, and 10:00-10:05 is not computed.
        let g = grid(300, 0, 3600, 0);
        let completed: BTreeSet<Window> = [w(0)].into();
        let plan = g.plan(T10 + 20 * MIN, &completed, Some(w(0).end));
        let five = |k: i64| Window { start: T10 + k * 5 * MIN, end: T10 + (k + 1) * 5 * MIN };
        assert_eq!(firsts(&plan), [five(2), five(3)]);
        // And from 10m to 15m: the first 15m window starting at or after
        // 10:10 is 10:15-10:30.
        let g = grid(900, 0, 7200, 0);
        let plan = g.plan(T10 + 60 * MIN, &completed, Some(w(0).end));
        let fifteen = |k: i64| Window { start: T10 + k * 15 * MIN, end: T10 + (k + 1) * 15 * MIN };
        assert_eq!(firsts(&plan), [fifteen(1), fifteen(2), fifteen(3)]);
    }

    #[test]
    fn the_limit_always_covers_the_newest_due_window() {
        // Validation insists on catch_up_limit >= every + grace; at that
        // minimum the newest due window is still planned, at any instant.
        let g = grid(600, 30, 630, 0);
        for offset in (0..600 * S).step_by(7 * S as usize + 1) {
            let now = T10 + offset;
            let plan = g.plan(now, &BTreeSet::new(), None);
            assert_eq!(firsts(&plan).last().map(|w| w.end), Some(g.last_due_end(now)), "at +{offset}µs");
        }
    }

    #[test]
    fn state_from_covers_what_may_be_recomputed() {
        let g = grid(600, 30, 3600, 2);
        let now = w(6).start + 31 * S;
        assert_eq!(g.first_end(now), w(0).end);
        assert_eq!(g.state_from(now), w(0).end - 2 * 10 * MIN);
    }
}
