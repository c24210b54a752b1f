//! When the next record may go out: at a steady rate or as fast as
//! possible, until a count, a duration or Ctrl-C ends the run. Both
//! producers (Kafka, PostgreSQL) follow the same pace and say what they
//! sent as a [`Produced`], which lives here so that neither producer
//! imports the other for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pace {
    rate: Option<u64>,
    records: Option<u64>,
    duration: Option<Duration>,
    started: Instant,
    stopped: Arc<AtomicBool>,
}

/// What to do about record `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Go,
    /// Not due yet: wait at most this long and ask again.
    Wait(Duration),
    Stop,
}

/// The longest single wait, so a stop is noticed soon.
const MAX_WAIT: Duration = Duration::from_millis(100);

impl Pace {
    pub fn new(rate: Option<u64>, records: Option<u64>, duration: Option<Duration>) -> Self {
        Pace { rate, records, duration, started: Instant::now(), stopped: Arc::default() }
    }

    /// Time zero: the rate counts from here (after a producer's setup).
    pub fn start(&mut self) {
        self.started = Instant::now();
    }

    /// Ends the run at Ctrl-C: what went out until then is kept.
    pub fn stop_on_ctrl_c(&self) {
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("loadtest: stopping (Ctrl-C)");
                stopped.store(true, Ordering::Relaxed);
            }
        });
    }

    /// Record `i` (from 0) goes now, later, or not at all.
    pub fn step(&self, i: u64) -> Step {
        let elapsed = self.started.elapsed();
        if self.stopped.load(Ordering::Relaxed)
            || self.records.is_some_and(|n| i >= n)
            || self.duration.is_some_and(|d| elapsed >= d)
        {
            return Step::Stop;
        }
        let Some(rate) = self.rate else { return Step::Go };
        let due = Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
        match due.checked_sub(elapsed) {
            Some(wait) if !wait.is_zero() => Step::Wait(wait.min(MAX_WAIT)),
            _ => Step::Go,
        }
    }

    /// How many records the run will send at most, when that is known.
    pub fn expected(&self) -> Option<u64> {
        let by_time = match (self.rate, self.duration) {
            (Some(r), Some(d)) => Some((r as f64 * d.as_secs_f64()).ceil() as u64 + 1),
            _ => None,
        };
        match (self.records, by_time) {
            (Some(n), Some(t)) => Some(n.min(t)),
            (n, t) => n.or(t),
        }
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What a producer sent.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub count: u64,
    pub seconds: f64,
}

impl Produced {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_stops_the_run() {
        let pace = Pace::new(None, Some(3), None);
        assert_eq!(pace.step(2), Step::Go);
        assert_eq!(pace.step(3), Step::Stop);
        assert_eq!(pace.expected(), Some(3));
    }

    #[test]
    fn a_rate_spaces_records() {
        let pace = Pace::new(Some(10), None, Some(Duration::from_secs(60)));
        assert_eq!(pace.step(0), Step::Go);
        assert!(matches!(pace.step(5), Step::Wait(w) if w <= MAX_WAIT), "due in 0.5 s");
        assert_eq!(pace.expected(), Some(601));
    }

    #[test]
    fn a_duration_or_a_stop_ends_the_run() {
        let pace = Pace::new(None, None, Some(Duration::ZERO));
        assert_eq!(pace.step(0), Step::Stop);
        let pace = Pace::new(None, None, None);
        assert_eq!(pace.step(1_000_000), Step::Go);
        assert_eq!(pace.expected(), None);
        pace.stopped.store(true, Ordering::Relaxed);
        assert_eq!(pace.step(0), Step::Stop);
    }
}
