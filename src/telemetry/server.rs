//! The process's metrics and health endpoint.
//!
//! One address per process (`--metrics-addr`, default 127.0.0.1:9898):
//! `GET /metrics` is Prometheus text, `GET /health` answers 200 while every
//! pipeline is consuming and 503 (naming the ones that are not) otherwise.
//! A deliberately tiny HTTP/1.1 responder: two GET routes, no keep-alive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
