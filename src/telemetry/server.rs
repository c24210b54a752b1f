//! The process's metrics and health endpoint.
//!
//! One address per process (`--metrics-addr`, default 127.0.0.1:9898):
//! `GET /metrics` is Prometheus text, `GET /health` answers 200 while every
//! pipeline is consuming and 503 (naming the ones that are not, and why)
//! otherwise. A deliberately tiny HTTP/1.1 responder: two GET routes, no
//! keep-alive, at most [`MAX_CONNECTIONS`] at once (more wait in the
//! listen backlog), each given [`REQUEST_TIMEOUT`] to send its request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::warn;

/// Connections served at once: scrapes and probes are a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send its request, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An actor restarted this many times within [`RESTART_LOOP_WINDOW`] is
/// restarting in a loop: `/health` says so until it settles.
pub const RESTART_LOOP_COUNT: usize = 3;
pub const RESTART_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// Whether each pipeline is healthy (a stream consuming, a schedule
/// running, no actor restarting in a loop), for `/health`.
#[derive(Clone, Default)]
pub struct Health {
    pipelines: Arc<Mutex<BTreeMap<String, PipelineHealth>>>,
}

#[derive(Default)]
struct PipelineHealth {
    /// Why the pipeline is not healthy; `None` when it is.
    trouble: Option<String>,
    /// Recent restarts, by actor.
    restarts: HashMap<String, VecDeque<Instant>>,
}

impl PipelineHealth {
    /// The actor restarting in a loop, if one is, and how many times it
    /// restarted lately.
    fn restart_loop(&self, now: Instant) -> Option<(&str, usize)> {
        self.restarts
            .iter()
            .map(|(actor, times)| (actor.as_str(), times.iter().filter(|t| now - **t <= RESTART_LOOP_WINDOW).count()))
            .filter(|(_, recent)| *recent >= RESTART_LOOP_COUNT)
            .max_by_key(|(_, recent)| *recent)
    }
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

    /// An actor of the pipeline was restarted by its supervisor; one that
    /// keeps restarting makes the pipeline unhealthy.
    pub fn restarted(&self, pipeline: &str, actor: &str) {
        let now = Instant::now();
        self.update(pipeline, |health| {
            health.restarts.retain(|_, times| times.back().is_some_and(|t| now - *t <= RESTART_LOOP_WINDOW));
            let times = health.restarts.entry(actor.to_owned()).or_default();
            times.push_back(now);
            if times.len() > RESTART_LOOP_COUNT {
                times.pop_front();
            }
        });
    }

    fn set(&self, pipeline: &str, trouble: Option<String>) {
        self.update(pipeline, |health| health.trouble = trouble);
    }

    fn update(&self, pipeline: &str, change: impl FnOnce(&mut PipelineHealth)) {
        let mut map = self.pipelines.lock().unwrap_or_else(PoisonError::into_inner);
        change(map.entry(pipeline.to_owned()).or_default());
    }

    /// `Ok` when every pipeline is healthy; otherwise the ones that are
    /// not, and why.
    pub fn check(&self) -> Result<String, String> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<String, String> {
        let map = self.pipelines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ok = String::new();
        let mut bad = String::new();
        for (name, health) in map.iter() {
            match (&health.trouble, health.restart_loop(now)) {
                (Some(reason), _) => bad.push_str(&format!("{name}: {reason}\n")),
                (None, Some((actor, times))) => bad.push_str(&format!(
                    "{name}: restarting in a loop: {actor} restarted {times} times in the last {} s\n",
                    RESTART_LOOP_WINDOW.as_secs()
                )),
                (None, None) => ok.push_str(&format!("{name}: ok\n")),
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
    serve_within(listener, handle, health, MAX_CONNECTIONS, REQUEST_TIMEOUT).await
}

async fn serve_within(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Health,
    max_connections: usize,
    request_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A slot first: past the cap, clients wait in the backlog rather
        // than each costing a task and a buffer.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: retrying at once would spin.
                warn!(%error, "metrics server: accepting a connection failed; pausing before the next");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, health) = (handle.clone(), health.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(request_timeout, answer(stream, &handle, &health)).await;
            drop(slot);
        });
    }
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle, health: &Health) {
    // The request line may arrive in pieces: read up to the end of the
    // headers (or 8 KiB).
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

    #[test]
    fn an_actor_restarting_in_a_loop_makes_its_pipeline_unhealthy_until_it_settles() {
        let h = Health::default();
        h.healthy("p");
        h.restarted("p", "detector shard 0");
        h.restarted("p", "partition t/1");
        h.restarted("p", "detector shard 0");
        assert!(h.check().is_ok(), "two restarts of one actor are no loop");
        h.restarted("p", "detector shard 0");
        let err = h.check().expect_err("three restarts within a minute");
        assert_eq!(err, "p: restarting in a loop: detector shard 0 restarted 3 times in the last 60 s\n");
        let later = Instant::now() + RESTART_LOOP_WINDOW + Duration::from_secs(1);
        assert_eq!(h.check_at(later), Ok("p: ok\n".into()), "a minute without restarts: settled");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_does_not_hold_the_server() {
        let listener = bind("127.0.0.1:0".parse().expect("address")).await.expect("binds");
        let addr = listener.local_addr().expect("bound");
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let health = Health::default();
        health.healthy("p");
        let timeout = Duration::from_millis(300);
        tokio::spawn(serve_within(listener, recorder.handle(), health, 2, timeout));
        // More silent clients than the server takes at once: the probe
        // waits behind them until they time out.
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(TcpStream::connect(addr).await.expect("connects"));
        }
        let mut probe = TcpStream::connect(addr).await.expect("connects");
        probe.write_all(b"GET /health HTTP/1.1\r\n\r\n").await.expect("sends");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), probe.read_to_string(&mut answer))
            .await
            .expect("answered once the silent clients timed out")
            .expect("reads");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("p: ok\n"), "{answer}");
        drop(silent);
    }
}
