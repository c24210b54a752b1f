//! Telemetry: metric names and descriptions, the Prometheus recorder, the
//! `/metrics` and `/health` endpoint, and the typed handles the rest of
//! vigil counts with.
//!
//! A leaf: it imports nothing of vigil's own. Each owner declares the label
//! values of its own enums ([`label_values!`], or [`Label`] by hand) next
//! to the enum, and registers its series once, as handles ([`ByLabel`],
//! [`zeroed_counter`], [`zeroed_gauge`]) it increments without looking
//! anything up by name. Registering at 0 is what lets dashboards and alert
//! rules see `0` rather than no data for events that have not happened.
//! Every series carries a `pipeline` label; none carries a user id.

mod server;

pub use server::{bind, serve, Health};

use std::marker::PhantomData;
use std::sync::OnceLock;

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names, in one place so the dashboard and tests can rely on them.
pub mod names {
    pub const RECORDS: &str = "vigil_records_total";
    pub const RECORD_BYTES: &str = "vigil_record_bytes_total";
    pub const ROWS: &str = "vigil_rows_total";
    pub const SKIPPED: &str = "vigil_skipped_records_total";
    pub const DECODE_ERRORS: &str = "vigil_decode_errors_total";
    pub const DEAD_LETTERS: &str = "vigil_dead_letters_total";
    pub const ASSIGNED_PARTITIONS: &str = "vigil_assigned_partitions";
    pub const RECORD_BATCH_SECONDS: &str = "vigil_record_batch_duration_seconds";
    pub const CONSUMER_LAG: &str = "vigil_consumer_lag_records";
    pub const ACTOR_RESTARTS: &str = "vigil_actor_restarts_total";
    pub const KEY_MISALIGNMENTS: &str = "vigil_key_misalignments_total";
    pub const PAUSED_PARTITIONS: &str = "vigil_paused_partitions";
    pub const REBALANCES: &str = "vigil_rebalances_total";
    pub const ALERTS: &str = "vigil_alerts_total";
    pub const TRACKED_USERS: &str = "vigil_tracked_users";
    // --- Durable state (src/changelog, src/detect), labelled `pipeline`.
    /// Counter: state records written to changelogs and acknowledged.
    pub const STATE_CHANGELOG_RECORDS: &str = "vigil_state_changelog_records_total";
    /// Counter: bytes of those records (keys and values).
    pub const STATE_CHANGELOG_BYTES: &str = "vigil_state_changelog_bytes_total";
    /// Gauge: bytes the detectors' state takes in memory (estimated from
    /// the structures' capacities), beside `vigil_tracked_users`.
    pub const STATE_BYTES: &str = "vigil_state_bytes";
    /// Gauge: how long the last restore of a partition took, also labelled
    /// `topic` and `partition`.
    pub const STATE_RESTORE_SECONDS: &str = "vigil_state_restore_seconds";
    /// Counter: users restored from changelogs.
    pub const STATE_USERS_RESTORED: &str = "vigil_state_users_restored_total";
    /// Counter: rows read again that the restored state already held,
    /// skipped.
    pub const STATE_ROWS_SKIPPED: &str = "vigil_state_rows_skipped_total";
    // --- Exactly-once (src/source/transaction.rs), labelled `pipeline`.
    /// Counter: transactions committed.
    pub const TRANSACTIONS_COMMITTED: &str = "vigil_transactions_committed_total";
    /// Counter: transactions aborted (each rewinds the process's partitions).
    pub const TRANSACTIONS_ABORTED: &str = "vigil_transactions_aborted_total";
    /// Histogram: from sealing the partitions to the transaction committed.
    pub const TRANSACTION_COMMIT_SECONDS: &str = "vigil_transaction_commit_seconds";
    /// Counter: errors librdkafka reported, also labelled `client`
    /// (consumer, producer, results); see `crate::kafka::log`.
    pub const KAFKA_CLIENT_ERRORS: &str = "vigil_kafka_client_errors_total";

    // --- Batch pipelines (src/schedule), labelled `pipeline`.
    /// Gauge: end of the newest completed window, Unix seconds.
    pub const BATCH_LAST_COMPLETED_WINDOW: &str = "vigil_batch_last_completed_window_seconds";
    /// Histogram: duration of a run that held the pipeline's lock.
    pub const BATCH_RUN_SECONDS: &str = "vigil_batch_run_duration_seconds";
    /// Counter: readings aggregated.
    pub const BATCH_ROWS_READ: &str = "vigil_batch_rows_read_total";
    /// Counter: failed runs, also labelled `reason`.
    pub const BATCH_FAILURES: &str = "vigil_batch_failures_total";
    /// Counter: windows computed, also labelled `kind` (first, recompute).
    pub const BATCH_WINDOWS: &str = "vigil_batch_windows_total";
    /// Counter: runs skipped because another process held the lock.
    pub const BATCH_LOCK_BUSY: &str = "vigil_batch_lock_busy_total";
}

/// Installs the global Prometheus recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        // Batches take from tens of microseconds to seconds.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(RECORDS, Unit::Count, "Kafka records read, per partition");
    describe_counter!(RECORD_BYTES, Unit::Bytes, "Bytes of keys and values read, per partition");
    describe_counter!(ROWS, Unit::Count, "Rows decoded, by op");
    describe_counter!(
        SKIPPED,
        Unit::Count,
        "Records skipped on purpose, by reason (tombstone, truncate, message, op_not_read)"
    );
    describe_counter!(DECODE_ERRORS, Unit::Count, "Records that could not be decoded, by reason");
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Records written to the dead-letter topic and acknowledged, by reason"
    );
    describe_gauge!(ASSIGNED_PARTITIONS, Unit::Count, "Partitions assigned to this process");
    describe_histogram!(RECORD_BATCH_SECONDS, Unit::Seconds, "Time to decode a batch and make its effects durable");
    describe_gauge!(CONSUMER_LAG, Unit::Count, "Records behind the partition's end, per partition");
    describe_counter!(
        ACTOR_RESTARTS,
        Unit::Count,
        "Actors (partition actors, detector shards) restarted by their supervisor"
    );
    describe_counter!(KEY_MISALIGNMENTS, Unit::Count, "Rows whose key was seen on another partition before");
    describe_gauge!(PAUSED_PARTITIONS, Unit::Count, "Partitions paused because their batches are not done yet");
    describe_counter!(ALERTS, Unit::Count, "Alerts acknowledged by Kafka, by detector");
    describe_gauge!(TRACKED_USERS, Unit::Count, "Users whose state the detectors keep");
    describe_counter!(REBALANCES, Unit::Count, "Consumer group rebalances, by kind (assign, revoke)");
    describe_counter!(
        KAFKA_CLIENT_ERRORS,
        Unit::Count,
        "Errors the Kafka clients reported (a broker unreachable, a request failed), by client"
    );
    describe_counter!(STATE_CHANGELOG_RECORDS, Unit::Count, "State records written to changelogs and acknowledged");
    describe_counter!(STATE_CHANGELOG_BYTES, Unit::Bytes, "Bytes of the state records written to changelogs");
    describe_gauge!(STATE_BYTES, Unit::Bytes, "Memory the detectors' state takes, estimated from capacities");
    describe_gauge!(STATE_RESTORE_SECONDS, Unit::Seconds, "Duration of the last restore of a partition's state");
    describe_counter!(STATE_USERS_RESTORED, Unit::Count, "Users whose state was restored from a changelog");
    describe_counter!(
        STATE_ROWS_SKIPPED,
        Unit::Count,
        "Rows read again after a restore that the restored state already held"
    );
    describe_counter!(TRANSACTIONS_COMMITTED, Unit::Count, "Transactions committed (exactly-once)");
    describe_counter!(
        TRANSACTIONS_ABORTED,
        Unit::Count,
        "Transactions aborted (exactly-once); each sends the process's partitions back to their last commit"
    );
    describe_histogram!(
        TRANSACTION_COMMIT_SECONDS,
        Unit::Seconds,
        "Time from sealing the partitions to the transaction committed (exactly-once)"
    );
    describe_gauge!(
        BATCH_LAST_COMPLETED_WINDOW,
        Unit::Seconds,
        "End of the newest completed window of a batch pipeline, Unix seconds"
    );
    describe_histogram!(
        BATCH_RUN_SECONDS,
        Unit::Seconds,
        "Time of a batch run that held the pipeline's lock, all its windows included"
    );
    describe_counter!(BATCH_ROWS_READ, Unit::Count, "Readings aggregated by batch runs");
    describe_counter!(BATCH_FAILURES, Unit::Count, "Failed batch runs, by reason (unavailable, statement, ...)");
    describe_counter!(BATCH_WINDOWS, Unit::Count, "Windows computed, by kind (first, recompute)");
    describe_counter!(
        BATCH_LOCK_BUSY,
        Unit::Count,
        "Batch runs skipped because another process held the pipeline's lock"
    );
}

/// A closed set of label values, declared by the module that owns the
/// enum (most with [`label_values!`]).
pub trait Label: Copy + 'static {
    /// Every value, each at its own [`Label::index`].
    const ALL: &'static [Self];
    /// The value as it appears in a series.
    fn as_label(self) -> &'static str;
    /// The value's position in [`Label::ALL`].
    fn index(self) -> usize;
}

/// Declares a field-less enum and its [`Label`] values in one place, so
/// a variant cannot be added without its label and the list of every
/// value cannot miss one:
///
/// ```
/// vigil::label_values! {
///     /// Which way a door went.
///     pub enum Door { Opened => "opened", Closed => "closed" }
/// }
/// use vigil::telemetry::Label;
/// assert_eq!(Door::ALL.iter().map(|d| d.as_label()).collect::<Vec<_>>(), ["opened", "closed"]);
/// ```
#[macro_export]
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::telemetry::Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_label(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// One counter of a pipeline per value of `L` (the label `key`),
/// registered at 0 when made; counting indexes, it looks nothing up.
pub struct ByLabel<L> {
    counters: Box<[Counter]>,
    label: PhantomData<fn(L)>,
}

impl<L: Label> ByLabel<L> {
    /// Registers `name{pipeline, key=…}` for every value of `L`, at 0.
    pub fn register(name: &'static str, pipeline: &str, key: &'static str) -> Self {
        let counters = L::ALL
            .iter()
            .map(|value| {
                let counter = metrics::counter!(name, "pipeline" => pipeline.to_owned(), key => value.as_label());
                counter.increment(0);
                counter
            })
            .collect();
        ByLabel { counters, label: PhantomData }
    }

    /// Adds `n` to the series of `value`.
    pub fn add(&self, value: L, n: u64) {
        self.counters[value.index()].increment(n);
    }

    /// Adds one to the series of `value`.
    pub fn inc(&self, value: L) {
        self.add(value, 1);
    }
}

/// A series registered at its first use, for those whose 0 would mislead
/// (a rebalance that never happened, a window that ended in 1970) or
/// whose labels come from a file (alerts by detector).
pub struct OnFirstUse<T> {
    series: OnceLock<T>,
    register: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> OnFirstUse<T> {
    /// `register` makes the handle, once, when it is first needed.
    pub fn new(register: impl Fn() -> T + Send + Sync + 'static) -> Self {
        OnFirstUse { series: OnceLock::new(), register: Box::new(register) }
    }

    /// The handle, registered now if it was not yet.
    pub fn get(&self) -> &T {
        self.series.get_or_init(&self.register)
    }
}

/// `name{pipeline}`, registered at 0.
pub fn zeroed_counter(name: &'static str, pipeline: &str) -> Counter {
    let counter = metrics::counter!(name, "pipeline" => pipeline.to_owned());
    counter.increment(0);
    counter
}

/// `name{pipeline}`, registered at 0 (a value already there is kept).
pub fn zeroed_gauge(name: &'static str, pipeline: &str) -> Gauge {
    let gauge = metrics::gauge!(name, "pipeline" => pipeline.to_owned());
    gauge.increment(0.0);
    gauge
}

#[cfg(test)]
pub(crate) mod testing {
    //! Series rendered from a recorder of a test's own.
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// The series `f` registers, as Prometheus text.
    pub fn rendered(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, f);
        recorder.handle().render()
    }

    /// Whether `text` holds `series` at 0.
    pub fn at_zero(text: &str, series: &str) -> bool {
        text.lines().any(|l| l == format!("{series} 0"))
    }

    /// The value lines of `text`.
    pub fn values(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    label_values! {
        enum Door { Opened => "opened", Closed => "closed" }
    }

    #[test]
    fn by_label_registers_every_value_at_zero_and_counts_each_apart() {
        let text = rendered(|| {
            let doors = ByLabel::<Door>::register("doors_total", "p", "way");
            doors.add(Door::Closed, 3);
            doors.inc(Door::Closed);
        });
        assert!(at_zero(&text, "doors_total{pipeline=\"p\",way=\"opened\"}"), "{text}");
        assert!(text.lines().any(|l| l == "doors_total{pipeline=\"p\",way=\"closed\"} 4"), "{text}");
        assert_eq!(values(&text).len(), 2, "{text}");
    }

    #[test]
    fn zeroed_series_keep_values_already_there() {
        let text = rendered(|| {
            metrics::counter!(names::ACTOR_RESTARTS, "pipeline" => "p").increment(3);
            metrics::gauge!(names::ASSIGNED_PARTITIONS, "pipeline" => "p").set(4.0);
            let _ = zeroed_counter(names::ACTOR_RESTARTS, "p");
            let _ = zeroed_gauge(names::ASSIGNED_PARTITIONS, "p");
            let _ = zeroed_gauge(names::PAUSED_PARTITIONS, "p");
        });
        assert!(text.lines().any(|l| l == "vigil_actor_restarts_total{pipeline=\"p\"} 3"), "{text}");
        assert!(text.lines().any(|l| l == "vigil_assigned_partitions{pipeline=\"p\"} 4"), "{text}");
        assert!(at_zero(&text, "vigil_paused_partitions{pipeline=\"p\"}"), "{text}");
    }

    #[test]
    fn a_series_on_first_use_appears_only_when_used() {
        let text = rendered(|| {
            let used = OnFirstUse::new(|| metrics::counter!("used_total", "pipeline" => "p"));
            let _unused = OnFirstUse::new(|| metrics::counter!("unused_total", "pipeline" => "p"));
            used.get().increment(2);
            used.get().increment(1);
        });
        assert_eq!(values(&text), ["used_total{pipeline=\"p\"} 3"], "{text}");
    }
}
