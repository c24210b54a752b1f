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
    describe_counter!(REBALANCES, Unit::Count, "Consumer group rebalances, by kind (assign, revoke)");
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
