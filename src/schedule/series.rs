//! A batch pipeline's series, registered once when its job is built
//! (those that may never move, at 0).

use metrics::{Counter, Gauge, Histogram};

use super::error::FailureReason;
use super::window::WindowKind;
use crate::telemetry::{names, zeroed_counter, ByLabel, OnFirstUse};

pub(super) struct BatchSeries {
    pub failures: ByLabel<FailureReason>,
    pub windows: ByLabel<WindowKind>,
    pub lock_busy: Counter,
    pub rows_read: Counter,
    /// Not at 0: an empty histogram says nothing a first run will not.
    pub run_seconds: OnFirstUse<Histogram>,
    /// Not at 0, which would read as a window that ended in 1970: it
    /// appears with the first completed window, or at start when one is
    /// recorded.
    pub last_completed: OnFirstUse<Gauge>,
}

impl BatchSeries {
    pub fn register(pipeline: &str) -> Self {
        let (p1, p2) = (pipeline.to_owned(), pipeline.to_owned());
        BatchSeries {
            failures: ByLabel::register(names::BATCH_FAILURES, pipeline, "reason"),
            windows: ByLabel::register(names::BATCH_WINDOWS, pipeline, "kind"),
            lock_busy: zeroed_counter(names::BATCH_LOCK_BUSY, pipeline),
            rows_read: zeroed_counter(names::BATCH_ROWS_READ, pipeline),
            run_seconds: OnFirstUse::new(
                move || metrics::histogram!(names::BATCH_RUN_SECONDS, "pipeline" => p1.clone()),
            ),
            last_completed: OnFirstUse::new(
                move || metrics::gauge!(names::BATCH_LAST_COMPLETED_WINDOW, "pipeline" => p2.clone()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::testing::{at_zero, rendered, values};

    #[test]
    fn failures_of_every_reason_and_windows_of_both_kinds_start_at_zero() {
        let text = rendered(|| {
            BatchSeries::register("t-1");
        });
        for reason in ["unavailable", "statement", "readings_table", "kafka", "panic"] {
            let series = format!("{}{{pipeline=\"t-1\",reason=\"{reason}\"}}", names::BATCH_FAILURES);
            assert!(at_zero(&text, &series), "{series} in:\n{text}");
        }
        for kind in ["first", "recompute"] {
            let series = format!("{}{{pipeline=\"t-1\",kind=\"{kind}\"}}", names::BATCH_WINDOWS);
            assert!(at_zero(&text, &series), "{series} in:\n{text}");
        }
        assert!(at_zero(&text, &format!("{}{{pipeline=\"t-1\"}}", names::BATCH_LOCK_BUSY)), "{text}");
        assert!(at_zero(&text, &format!("{}{{pipeline=\"t-1\"}}", names::BATCH_ROWS_READ)), "{text}");
        // 0 would read as a window that ended in 1970.
        assert!(!text.contains(names::BATCH_LAST_COMPLETED_WINDOW), "{text}");
        assert!(!text.contains(names::BATCH_RUN_SECONDS), "{text}");
        assert_eq!(values(&text).len(), 5 + 2 + 2, "{text}");
    }
}
