//! The vigil process under test: found beside loadtest, started on a
//! pipeline file with its output in a log, stopped with SIGTERM (killed if
//! the run ends otherwise, or by chaos).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use super::usage::{self, Usage};

/// `explicit`, or the vigil binary beside this one.
pub fn binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe().context("locating loadtest")?;
    let dir = me.parent().context("loadtest's folder")?;
    // Beside loadtest, or one folder up when run from target/*/deps.
    for candidate in [dir.join("vigil"), dir.join("../vigil")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("no vigil binary beside {}: build it (cargo build --release) or pass --vigil", me.display())
}

/// What vigil's log holds unless `VIGIL_LOG` says otherwise: warnings,
/// its start and stop, rebalances and restores.
const DEFAULT_LOG: &str = "warn,vigil::run=info,vigil::source::consumer=info,vigil::detect::router=info";

pub struct Vigil {
    child: Child,
    /// Where its metrics are served.
    metrics: String,
}

impl Vigil {
    /// Starts `vigil run PIPELINE` as the instance `instance` (what names
    /// its exactly-once transactions), its output into `log`.
    pub fn start(binary: &Path, pipeline: &Path, log: &Path, instance: &str) -> anyhow::Result<Vigil> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics = format!("127.0.0.1:{port}");
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("run")
            .arg(pipeline)
            .args(["--metrics-addr", &metrics, "--instance", instance])
            .env("RUST_LOG", std::env::var("VIGIL_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_owned()))
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Vigil { child, metrics })
    }

    /// The sum of a metric's series on the process's `/metrics` (0 when it
    /// cannot be read).
    pub fn metric(&self, name: &str) -> f64 {
        let Ok(mut stream) = std::net::TcpStream::connect(&self.metrics) else { return 0.0 };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics);
        let mut text = String::new();
        if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut text).is_err() {
            return 0.0;
        }
        sum_of(&text, name)
    }

    /// Fails when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!("vigil exited early: {status}"),
            Ok(None) => Ok(()),
            Err(e) => bail!("waiting on vigil: {e}"),
        }
    }

    pub fn usage(&self) -> Usage {
        usage::of(&self.child.id().to_string())
    }

    /// Stops it cleanly (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.signal("TERM");
        let _ = self.child.wait();
    }

    /// Kills it (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -SIG` to the process.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -{sig} {}: {status}", self.child.id());
        }
        Ok(())
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of the series of `name` in a Prometheus text exposition.
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_is_summed_over_its_series() {
        let text = "# TYPE a counter\na_total{p=\"1\"} 2\na_total{p=\"2\"} 3.5\na_total_other 9\nb 1\n";
        assert_eq!(super::sum_of(text, "a_total"), 5.5);
        assert_eq!(super::sum_of(text, "b"), 1.0);
        assert_eq!(super::sum_of(text, "c"), 0.0);
    }
}
