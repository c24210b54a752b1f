//! The process's metrics and health endpoint.
//!
//! One address per process (`--metrics-addr`, default 127.0.0.1:9898):
//! `GET /metrics` is Prometheus text, `GET /health` answers 200 while every
//! pipeline is consuming and 503 (naming the ones that are not) otherwise.
//! Every series carries a `pipeline` label; none carries a user id.
//! A deliberately tiny HTTP/1.1 responder: two GET routes, no keep-alive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    /// Counter: errors librdkafka reported, also labelled `client`
    /// (consumer, producer, results); see `kafka_log`.
    pub const KAFKA_CLIENT_ERRORS: &str = "vigil_kafka_client_errors_total";

    // --- Batch pipelines (src/schedule), labelled `pipeline`; described
    // by `schedule::start`.
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
    describe_counter!(ACTOR_RESTARTS, Unit::Count, "Partition actors restarted by their supervisor");
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
}

/// Registers, with value 0, the series of streaming pipeline `pipeline`
/// that exist before anything happened (restarts, misalignments, decode
/// errors and dead letters of every reason, skips of every reason, rows of
/// every op, the partition and user gauges), so dashboards and alert rules
/// see `0` rather than no data. Existing values are left as they are
/// (counters and gauges are incremented by 0). Call once per pipeline at
/// start. Left out: what needs a topic and partition (records, bytes,
/// lag), alerts (by detector name, from the file), rebalances (the first
/// assignment counts one; a zero `revoke` series would look like one
/// happened to tests that check for the label) and histograms.
pub fn zero_series(pipeline: &str) {
    use names::*;
    let p = || pipeline.to_owned();
    metrics::counter!(ACTOR_RESTARTS, "pipeline" => p()).increment(0);
    metrics::counter!(KEY_MISALIGNMENTS, "pipeline" => p()).increment(0);
    for op in [crate::row::Op::Create, crate::row::Op::Update, crate::row::Op::Delete, crate::row::Op::Read] {
        metrics::counter!(ROWS, "pipeline" => p(), "op" => op.code()).increment(0);
    }
    for reason in skip_reasons() {
        metrics::counter!(SKIPPED, "pipeline" => p(), "reason" => reason).increment(0);
    }
    for reason in decode_reasons() {
        metrics::counter!(DECODE_ERRORS, "pipeline" => p(), "reason" => reason).increment(0);
        metrics::counter!(DEAD_LETTERS, "pipeline" => p(), "reason" => reason).increment(0);
    }
    for client in ["consumer", "producer"] {
        metrics::counter!(KAFKA_CLIENT_ERRORS, "pipeline" => p(), "client" => client).increment(0);
    }
    for gauge in [ASSIGNED_PARTITIONS, PAUSED_PARTITIONS, TRACKED_USERS] {
        metrics::gauge!(gauge, "pipeline" => p()).increment(0.0);
    }
}

/// As [`zero_series`], for batch pipeline `pipeline`: failures of every
/// reason, windows of both kinds, lock-busy runs and rows read. The last
/// completed window is left out (0 would read as 1970: it appears with
/// the first completed window, or at start when one is recorded) and so
/// is the run duration histogram.
pub fn zero_batch_series(pipeline: &str) {
    use names::*;
    let p = || pipeline.to_owned();
    for reason in batch_failure_reasons() {
        metrics::counter!(BATCH_FAILURES, "pipeline" => p(), "reason" => reason).increment(0);
    }
    for kind in [crate::schedule::Kind::First, crate::schedule::Kind::Recompute] {
        metrics::counter!(BATCH_WINDOWS, "pipeline" => p(), "kind" => kind.as_str()).increment(0);
    }
    metrics::counter!(BATCH_LOCK_BUSY, "pipeline" => p()).increment(0);
    metrics::counter!(BATCH_ROWS_READ, "pipeline" => p()).increment(0);
}

/// Every `reason` label of skipped records ([`crate::decode::Skip::reason`]).
fn skip_reasons() -> [&'static str; 4] {
    use crate::decode::Skip;
    [Skip::Tombstone, Skip::Truncate, Skip::Message, Skip::OpNotRead(crate::row::Op::Read)].map(Skip::reason)
}

/// Every `reason` label of decode errors and dead letters
/// ([`crate::decode::DecodeError::reason`]).
fn decode_reasons() -> [&'static str; 9] {
    use crate::decode::DecodeError as E;
    let s = String::new;
    [
        E::BadJson(s()),
        E::BadEnvelope(s()),
        E::BadSchema(s()),
        E::UnknownOp(s()),
        E::MissingKey(s()),
        E::MissingEventTime(s()),
        E::MissingValue(s()),
        E::WrongType { column: s(), expected: "", got: s() },
        E::BadValue { column: s(), reason: s() },
    ]
    .map(|e| e.reason())
}

/// Every `reason` label of failed batch runs
/// ([`crate::schedule::RunError::class`]).
fn batch_failure_reasons() -> [&'static str; 5] {
    use crate::schedule::RunError as E;
    let s = String::new;
    [
        E::Unavailable { target: s(), reason: s() },
        E::Statement { target: s(), what: "", reason: s() },
        E::Readings { table: s(), target: s(), reason: s() },
        E::Kafka { topic: s(), reason: s() },
        E::Panicked(s()),
    ]
    .map(|e| e.class())
}

/// Whether each pipeline is healthy (a stream consuming, a schedule
/// running), for `/health`.
#[derive(Clone, Default)]
pub struct Health {
    pipelines: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Health {
    /// Registers a pipeline as not consuming yet.
    pub fn register(&self, pipeline: &str) {
        self.set(pipeline, Some("starting".into()));
    }

    /// Marks a pipeline healthy: a stream consuming, a schedule running.
    pub fn healthy(&self, pipeline: &str) {
        self.set(pipeline, None);
    }

    /// Marks a pipeline unhealthy with the reason.
    pub fn failed(&self, pipeline: &str, reason: String) {
        self.set(pipeline, Some(reason));
    }

    fn set(&self, pipeline: &str, state: Option<String>) {
        if let Ok(mut map) = self.pipelines.lock() {
            map.insert(pipeline.to_owned(), state);
        }
    }

    /// `Ok` when every pipeline consumes; otherwise the ones that do not.
    pub fn check(&self) -> Result<String, String> {
        let map = self.pipelines.lock().map_err(|_| "health state poisoned".to_owned())?;
        let mut ok = String::new();
        let mut bad = String::new();
        for (name, state) in map.iter() {
            match state {
                None => ok.push_str(&format!("{name}: ok\n")),
                Some(reason) => bad.push_str(&format!("{name}: {reason}\n")),
            }
        }
        if bad.is_empty() {
            Ok(ok)
        } else {
            Err(bad + &ok)
        }
    }
}

/// Binds the metrics and health address. Binding happens before the
/// pipelines start, so a taken port is refused at start.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/health` until the listener is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, health: Health) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        let health = health.clone();
        tokio::spawn(async move {
            // The request line may arrive in pieces: read up to the end of
            // the headers (or 8 KiB).
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => n += read,
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
                "/health" => match health.check() {
                    Ok(text) => ("200 OK", "text/plain", text),
                    Err(text) => ("503 Service Unavailable", "text/plain", text),
                },
                _ => ("404 Not Found", "text/plain", "try /metrics or /health\n".into()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series `f` registers on a recorder of its own, as Prometheus
    /// text.
    fn rendered(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, f);
        recorder.handle().render()
    }

    fn has(text: &str, series: &str) -> bool {
        text.lines().any(|l| l == format!("{series} 0"))
    }

    #[test]
    fn zero_series_registers_every_pipeline_level_series_of_a_stream_at_zero() {
        let text = rendered(|| zero_series("p-1"));
        for name in [names::ACTOR_RESTARTS, names::KEY_MISALIGNMENTS, names::ASSIGNED_PARTITIONS] {
            assert!(has(&text, &format!("{name}{{pipeline=\"p-1\"}}")), "{name} in:\n{text}");
        }
        for name in [names::PAUSED_PARTITIONS, names::TRACKED_USERS] {
            assert!(has(&text, &format!("{name}{{pipeline=\"p-1\"}}")), "{name} in:\n{text}");
        }
        for reason in ["bad_json", "bad_envelope", "bad_schema", "unknown_op", "missing_key"].into_iter().chain([
            "missing_event_time",
            "missing_value",
            "wrong_type",
            "bad_value",
        ]) {
            for name in [names::DECODE_ERRORS, names::DEAD_LETTERS] {
                let series = format!("{name}{{pipeline=\"p-1\",reason=\"{reason}\"}}");
                assert!(has(&text, &series), "{series} in:\n{text}");
            }
        }
        for reason in ["tombstone", "truncate", "message", "op_not_read"] {
            let series = format!("{}{{pipeline=\"p-1\",reason=\"{reason}\"}}", names::SKIPPED);
            assert!(has(&text, &series), "{series} in:\n{text}");
        }
        for op in ["c", "u", "d", "r"] {
            assert!(has(&text, &format!("{}{{pipeline=\"p-1\",op=\"{op}\"}}", names::ROWS)), "op {op}:\n{text}");
        }
        for client in ["consumer", "producer"] {
            let series = format!("{}{{pipeline=\"p-1\",client=\"{client}\"}}", names::KAFKA_CLIENT_ERRORS);
            assert!(has(&text, &series), "{series} in:\n{text}");
        }
        // Nothing of batch pipelines, nothing that suggests a rebalance.
        assert!(!text.contains("vigil_batch_") && !text.contains(names::REBALANCES), "{text}");
        let values: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert!(values.iter().all(|l| l.ends_with(" 0")), "{values:#?}");
        assert_eq!(values.len(), 2 + 4 + 4 + 9 * 2 + 2 + 3, "{values:#?}");
    }

    #[test]
    fn zero_batch_series_registers_failures_of_every_reason_windows_of_both_kinds() {
        let text = rendered(|| zero_batch_series("t-1"));
        for reason in ["unavailable", "statement", "readings_table", "kafka", "panic"] {
            let series = format!("{}{{pipeline=\"t-1\",reason=\"{reason}\"}}", names::BATCH_FAILURES);
            assert!(has(&text, &series), "{series} in:\n{text}");
        }
        for kind in ["first", "recompute"] {
            let series = format!("{}{{pipeline=\"t-1\",kind=\"{kind}\"}}", names::BATCH_WINDOWS);
            assert!(has(&text, &series), "{series} in:\n{text}");
        }
        assert!(has(&text, &format!("{}{{pipeline=\"t-1\"}}", names::BATCH_LOCK_BUSY)), "{text}");
        assert!(has(&text, &format!("{}{{pipeline=\"t-1\"}}", names::BATCH_ROWS_READ)), "{text}");
        // 0 would read as a window that ended in 1970.
        assert!(!text.contains(names::BATCH_LAST_COMPLETED_WINDOW), "{text}");
        assert!(!text.contains("vigil_assigned_partitions"), "{text}");
    }

    #[test]
    fn zero_series_keeps_values_already_there() {
        let text = rendered(|| {
            metrics::counter!(names::ACTOR_RESTARTS, "pipeline" => "p").increment(3);
            metrics::gauge!(names::ASSIGNED_PARTITIONS, "pipeline" => "p").set(4.0);
            metrics::counter!(names::BATCH_ROWS_READ, "pipeline" => "p").increment(7);
            zero_series("p");
            zero_batch_series("p");
        });
        assert!(text.lines().any(|l| l == "vigil_actor_restarts_total{pipeline=\"p\"} 3"), "{text}");
        assert!(text.lines().any(|l| l == "vigil_assigned_partitions{pipeline=\"p\"} 4"), "{text}");
        assert!(text.lines().any(|l| l == "vigil_batch_rows_read_total{pipeline=\"p\"} 7"), "{text}");
    }

    /// Fails to compile when a reason is added to one of these enums: list
    /// its variant in `decode_reasons`, `skip_reasons` or
    /// `batch_failure_reasons` too.
    #[allow(dead_code)]
    fn every_variant_is_listed(d: &crate::decode::DecodeError, s: crate::decode::Skip, r: &crate::schedule::RunError) {
        use crate::decode::{DecodeError as D, Skip as S};
        use crate::schedule::RunError as R;
        match d {
            D::BadJson(_) | D::BadEnvelope(_) | D::BadSchema(_) | D::UnknownOp(_) | D::MissingKey(_) => {}
            D::MissingEventTime(_) | D::MissingValue(_) | D::WrongType { .. } | D::BadValue { .. } => {}
        }
        match s {
            S::Tombstone | S::Truncate | S::Message | S::OpNotRead(_) => {}
        }
        match r {
            R::Unavailable { .. } | R::Statement { .. } | R::Readings { .. } | R::Kafka { .. } | R::Panicked(_) => {}
        }
    }

    #[test]
    fn the_reason_lists_have_no_duplicates() {
        use std::collections::BTreeSet;
        assert_eq!(decode_reasons().iter().collect::<BTreeSet<_>>().len(), decode_reasons().len());
        assert_eq!(skip_reasons().iter().collect::<BTreeSet<_>>().len(), skip_reasons().len());
        assert_eq!(batch_failure_reasons().iter().collect::<BTreeSet<_>>().len(), batch_failure_reasons().len());
    }

    #[test]
    fn health_is_ok_only_when_every_pipeline_consumes() {
        let h = Health::default();
        h.register("a");
        h.register("b");
        assert!(h.check().is_err());
        h.healthy("a");
        let err = h.check().expect_err("b still starting");
        assert!(err.contains("b: starting"), "{err}");
        h.healthy("b");
        assert_eq!(h.check(), Ok("a: ok\nb: ok\n".into()));
        h.failed("a", "alert delivery failed".into());
        assert!(h.check().expect_err("a failed").contains("a: alert delivery failed"));
    }
}
