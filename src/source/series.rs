//! The source's series of one pipeline, registered once when the source
//! starts (those that may never move, at 0) and shared by its consumer,
//! poll thread and partition actors.

use metrics::{Counter, Gauge, Histogram};

use crate::decode::{DecodeReason, SkipReason};
use crate::row::Op;
use crate::telemetry::{names, zeroed_counter, zeroed_gauge, ByLabel, Label, OnFirstUse};

crate::label_values! {
    /// The `kind` label of rebalances.
    pub enum Rebalance {
        Assign => "assign",
        Revoke => "revoke",
    }
}

/// The pipeline-level series of a source.
pub(crate) struct SourceSeries {
    pub rows: ByLabel<Op>,
    pub skipped: ByLabel<SkipReason>,
    pub decode_errors: ByLabel<DecodeReason>,
    pub dead_letters: ByLabel<DecodeReason>,
    pub restarts: Counter,
    pub assigned: Gauge,
    pub paused: Gauge,
    /// Not at 0: an empty histogram says nothing a first batch will not.
    pub batch_seconds: OnFirstUse<Histogram>,
    /// Not at 0: a `revoke` series would look like one happened.
    rebalances: [OnFirstUse<Counter>; 2],
}

impl SourceSeries {
    pub fn register(pipeline: &str) -> Self {
        let rebalance = |kind: Rebalance| {
            let pipeline = pipeline.to_owned();
            OnFirstUse::new(
                move || metrics::counter!(names::REBALANCES, "pipeline" => pipeline.clone(), "kind" => kind.as_label()),
            )
        };
        let owned = pipeline.to_owned();
        SourceSeries {
            rows: ByLabel::register(names::ROWS, pipeline, "op"),
            skipped: ByLabel::register(names::SKIPPED, pipeline, "reason"),
            decode_errors: ByLabel::register(names::DECODE_ERRORS, pipeline, "reason"),
            dead_letters: ByLabel::register(names::DEAD_LETTERS, pipeline, "reason"),
            restarts: zeroed_counter(names::ACTOR_RESTARTS, pipeline),
            assigned: zeroed_gauge(names::ASSIGNED_PARTITIONS, pipeline),
            paused: zeroed_gauge(names::PAUSED_PARTITIONS, pipeline),
            batch_seconds: OnFirstUse::new(
                move || metrics::histogram!(names::RECORD_BATCH_SECONDS, "pipeline" => owned.clone()),
            ),
            rebalances: [rebalance(Rebalance::Assign), rebalance(Rebalance::Revoke)],
        }
    }

    pub fn rebalanced(&self, kind: Rebalance) {
        self.rebalances[kind.index()].get().increment(1);
    }
}

/// The series of one assigned partition.
pub(crate) struct PartitionSeries {
    pub records: Counter,
    pub bytes: Counter,
    pub lag: Gauge,
}

impl PartitionSeries {
    pub fn register(pipeline: &str, topic: &str, partition: i32) -> Self {
        let labels =
            [("pipeline", pipeline.to_owned()), ("topic", topic.to_owned()), ("partition", partition.to_string())];
        PartitionSeries {
            records: metrics::counter!(names::RECORDS, &labels),
            bytes: metrics::counter!(names::RECORD_BYTES, &labels),
            lag: metrics::gauge!(names::CONSUMER_LAG, &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::testing::{at_zero, rendered, values};

    #[test]
    fn a_sources_series_that_may_never_move_start_at_zero() {
        let text = rendered(|| {
            SourceSeries::register("p-1");
        });
        for name in [names::ACTOR_RESTARTS, names::ASSIGNED_PARTITIONS, names::PAUSED_PARTITIONS] {
            assert!(at_zero(&text, &format!("{name}{{pipeline=\"p-1\"}}")), "{name} in:\n{text}");
        }
        for reason in ["bad_json", "bad_envelope", "bad_schema", "unknown_op", "missing_key"].into_iter().chain([
            "missing_event_time",
            "missing_value",
            "wrong_type",
            "bad_value",
            "implausible_event_time",
            "internal_error",
        ]) {
            for name in [names::DECODE_ERRORS, names::DEAD_LETTERS] {
                let series = format!("{name}{{pipeline=\"p-1\",reason=\"{reason}\"}}");
                assert!(at_zero(&text, &series), "{series} in:\n{text}");
            }
        }
        for reason in ["tombstone", "truncate", "message", "op_not_read"] {
            let series = format!("{}{{pipeline=\"p-1\",reason=\"{reason}\"}}", names::SKIPPED);
            assert!(at_zero(&text, &series), "{series} in:\n{text}");
        }
        for op in ["c", "u", "d", "r"] {
            assert!(at_zero(&text, &format!("{}{{pipeline=\"p-1\",op=\"{op}\"}}", names::ROWS)), "op {op}:\n{text}");
        }
        // Nothing that suggests a rebalance or a batch.
        assert!(!text.contains(names::REBALANCES) && !text.contains(names::RECORD_BATCH_SECONDS), "{text}");
        assert_eq!(values(&text).len(), 3 + 11 * 2 + 4 + 4, "{text}");
    }

    #[test]
    fn rebalances_appear_by_kind_as_they_happen() {
        let text = rendered(|| {
            let series = SourceSeries::register("p");
            series.rebalanced(Rebalance::Assign);
            series.rebalanced(Rebalance::Assign);
        });
        assert!(text.lines().any(|l| l == "vigil_rebalances_total{pipeline=\"p\",kind=\"assign\"} 2"), "{text}");
        assert!(!text.contains("kind=\"revoke\""), "{text}");
    }
}
