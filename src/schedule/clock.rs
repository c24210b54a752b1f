//! The scheduler's clock, injectable so tests run a schedule at any
//! instant (or advance time by hand) instead of waiting for it.
//!
//! Only "what time is it" is injected. How long the scheduler naps between
//! looks at the clock is real time ([`super::Options::nap`]), so a test
//! with a [`ManualClock`] sets a short nap.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::window::micros;

/// Now, in µs since the Unix epoch, UTC.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => micros(d),
            // A clock before 1970 is broken; windows before 1970 are not
            // supported anyway.
            Err(_) => 0,
        }
    }
}

/// A clock that moves only when told; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `micros` since the epoch.
    pub fn at(micros: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(micros)))
    }

    pub fn set(&self, micros: i64) {
        self.0.store(micros, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(micros(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::at(1_000);
        let other = clock.clone();
        assert_eq!(clock.now(), 1_000);
        clock.advance(Duration::from_millis(2));
        assert_eq!(other.now(), 3_000);
        other.set(7);
        assert_eq!(clock.now(), 7);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800_000_000);
    }
}
