//! Batch pipelines: a scheduler actor per pipeline file with `schedule:`,
//! running a periodic job against PostgreSQL beside the streams.
//!
//! The one job today aggregates readings per group (sensor) over windows
//! aligned to the clock in UTC: average, minimum, maximum and count over
//! `time >= window_start AND time < window_end`, upserted into a results
//! table keyed by (group, window_start), optionally published to Kafka.
//! What makes it dependable:
//! - completed windows (empty ones included) are remembered in
//!   `vigil_batch_windows`, so a restart computes exactly the windows it
//!   missed (within `catch_up_limit`), once each;
//! - a PostgreSQL advisory lock per pipeline, held for a whole run, lets
//!   several vigil processes run the same file while each window is
//!   computed once;
//! - a failed run (PostgreSQL away) is logged, counted, shown on `/health`
//!   and retried with backoff; the windows it missed are filled by the
//!   first run that succeeds;
//! - each window is one transaction: results, Kafka acknowledgements and
//!   the completion record all happen, or none.
//!
//! Layout: `window.rs` (alignment and the plan of a run: pure), `clock.rs`
//! (injectable time), `sql.rs` (statements), `job.rs` (one run),
//! `output.rs` (Kafka), `actor.rs` (when to run, retries), `error.rs`,
//! `series.rs` (its metrics).
//!
//! Deliberately not here: TLS to PostgreSQL (connections are plain TCP,
//! as on the stack), other aggregations than avg/min/max/count, and time
//! zones other than UTC for window alignment.

mod actor;
mod clock;
mod error;
mod job;
mod output;
mod series;
mod sql;
mod window;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use tokio::sync::oneshot;
use tracing::warn;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{FailureReason, RunError, StartError};
pub use job::{GroupResult, Job, RunOutcome, WindowReport};
pub use window::{timestamp, Grid, Plan, Planned, Skipped, Window, WindowKind};

use crate::config::BatchPipeline;
use crate::telemetry::Health;

/// How long [`Schedules::stop`] waits for runs in flight to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the schedulers tell time; tests change both.
#[derive(Clone)]
pub struct Options {
    /// What time it is. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// The longest real-time nap between looks at the clock. Default 1 s.
    pub nap: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { clock: Arc::new(SystemClock), nap: Duration::from_secs(1) }
    }
}

/// The running schedulers of one process.
pub struct Schedules {
    actors: Vec<(String, Addr<actor::Scheduler>)>,
}

impl Schedules {
    /// Stops every scheduler, after the run each has in flight (at most
    /// 30 s; a run cut short rolls its window back, and the window is
    /// computed by the next vigil to run).
    pub async fn stop(self) {
        let mut waiting = Vec::new();
        for (name, addr) in self.actors {
            let (done, stopped) = oneshot::channel();
            addr.do_send(actor::Stop(done));
            waiting.push((name, stopped));
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for (name, stopped) in waiting {
            if tokio::time::timeout_at(deadline, stopped).await.is_err() {
                warn!(pipeline = %name, "a batch run was still going at shutdown; its window is rolled back");
            }
        }
    }

    /// The number of schedulers.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}

/// Starts one scheduler per batch pipeline, on the current actix system,
/// with the system clock. Refuses to start when a results topic is
/// missing; PostgreSQL being away is not a reason to refuse (the job
/// retries until it is back). No pipelines: nothing starts.
pub async fn start(pipelines: Vec<BatchPipeline>, health: &Health) -> Result<Schedules, StartError> {
    start_with(pipelines, health, Options::default()).await
}

/// [`start`] with a clock and nap of the caller's choosing.
pub async fn start_with(
    pipelines: Vec<BatchPipeline>,
    health: &Health,
    options: Options,
) -> Result<Schedules, StartError> {
    let mut jobs = Vec::new();
    for pipeline in pipelines {
        let job = Job::new(Arc::new(pipeline))?;
        job.check_output().await?;
        jobs.push(job);
    }
    let actors = jobs
        .into_iter()
        .map(|job| {
            let name = job.pipeline().name.clone();
            health.register(&name);
            let addr = actor::Scheduler::new(job, Arc::clone(&options.clock), options.nap, health.clone()).start();
            (name, addr)
        })
        .collect();
    Ok(Schedules { actors })
}
