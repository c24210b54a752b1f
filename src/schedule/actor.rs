//! The scheduler actor: one per batch pipeline, deciding *when* its
//! [`Job`] runs.
//!
//! It naps until the next window is due (looking at its [`Clock`] at least
//! every `nap`, so an injected clock that jumps is noticed), then runs the
//! job as a future of its own context. Runs never overlap: while one is in
//! flight, nothing else starts, and the next attempt is planned only when
//! it ends. After a success (or when another process holds the pipeline's
//! lock) the next attempt is the next window's due time; after a failure
//! it is a backoff (1 s, doubling, capped at the smaller of a minute and
//! the window length), and the failure is logged, counted and shown on
//! `/health` until a run succeeds again. Missed windows need no
//! bookkeeping here: each run plans from what PostgreSQL says is
//! completed.
//!
//! A panic inside a run is caught and treated as a failed run: the actor
//! runs on the system arbiter beside the metrics endpoint and must not take
//! it down.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt as _;
use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::clock::Clock;
use super::error::RunError;
use super::job::{Job, RunOutcome};
use super::series::BatchSeries;
use super::window::Grid;
use super::window::{micros, timestamp};
use crate::telemetry::Health;

/// The first retry after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff, unless the window is shorter.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before attempt `failures + 1` after `failures` failed runs in a
/// row: 1 s, 2 s, 4 s, ... capped at `min(60 s, every)`.
pub(super) fn backoff(failures: u32, every: Duration) -> Duration {
    let cap = MAX_BACKOFF.min(every).max(FIRST_BACKOFF);
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(cap)
}

/// Stops the actor after the run in flight, if any; answers on the channel
/// once stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Stop(pub oneshot::Sender<()>);

pub(super) struct Scheduler {
    name: String,
    series: Arc<BatchSeries>,
    /// Home between runs; inside the run's future during one.
    job: Option<Job>,
    clock: Arc<dyn Clock>,
    nap: Duration,
    health: Health,
    every: Duration,
    /// When to attempt the next run (µs, clock time).
    next_attempt: i64,
    /// Failed runs in a row.
    failures: u32,
    running: bool,
    stopping: Vec<oneshot::Sender<()>>,
}

impl Scheduler {
    pub fn new(job: Job, clock: Arc<dyn Clock>, nap: Duration, health: Health) -> Self {
        Scheduler {
            name: job.pipeline().name.clone(),
            series: Arc::clone(job.series()),
            every: job.pipeline().schedule.every,
            job: Some(job),
            next_attempt: clock.now(),
            clock,
            nap,
            health,
            failures: 0,
            running: false,
            stopping: Vec::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.running || !self.stopping.is_empty() {
            return;
        }
        let now = self.clock.now();
        if now < self.next_attempt {
            let wait = Duration::from_micros((self.next_attempt - now) as u64).min(self.nap);
            ctx.run_later(wait, |act, ctx| act.tick(ctx));
            return;
        }
        let Some(mut job) = self.job.take() else { return };
        self.running = true;
        let started = Instant::now();
        let run = async move {
            let result = AssertUnwindSafe(job.run(now)).catch_unwind().await.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Err(RunError::Panicked(message))
            });
            (job, result)
        };
        ctx.spawn(run.into_actor(self).map(move |(job, result), act, ctx| {
            let grid = *job.grid();
            act.job = Some(job);
            act.running = false;
            act.finished(result, grid, started.elapsed(), ctx);
        }));
    }

    fn finished(&mut self, result: Result<RunOutcome, RunError>, grid: Grid, took: Duration, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        match result {
            Ok(outcome) => {
                if self.failures > 0 {
                    info!(pipeline = %self.name, failed_runs = self.failures, "batch job runs again; missed windows are filled");
                }
                self.failures = 0;
                self.health.healthy(&self.name);
                match outcome {
                    RunOutcome::Ran { windows, .. } => {
                        self.series.run_seconds.get().record(took.as_secs_f64());
                        debug!(pipeline = %self.name, windows = windows.len(), took = ?took, "run done");
                    }
                    RunOutcome::LockBusy => {
                        self.series.lock_busy.increment(1);
                        debug!(pipeline = %self.name, "another process holds the pipeline's lock and runs it");
                    }
                }
                self.next_attempt = grid.next_due(now);
            }
            Err(e) => {
                self.failures += 1;
                let wait = backoff(self.failures, self.every);
                self.series.failures.inc(e.class());
                error!(
                    pipeline = %self.name,
                    error = %e,
                    failed_runs = self.failures,
                    retry_in = ?wait,
                    "batch run failed; windows it missed are filled once a run succeeds"
                );
                self.health.failed(
                    &self.name,
                    format!("batch run failed {} time(s) in a row, retrying in {wait:?}: {e}", self.failures),
                );
                self.next_attempt = now + micros(wait);
            }
        }
        if !self.stopping.is_empty() {
            ctx.stop();
            return;
        }
        debug!(pipeline = %self.name, next = %timestamp(self.next_attempt), "next attempt");
        self.tick(ctx);
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(job) = &self.job {
            let schedule = &job.pipeline().schedule;
            info!(
                pipeline = %self.name,
                every = ?schedule.every,
                grace = ?schedule.grace,
                catch_up_limit = ?schedule.catch_up_limit,
                recompute_last = schedule.recompute_last,
                postgres = %job.target(),
                "batch job scheduled: windows aligned to the clock in UTC"
            );
        }
        self.tick(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        info!(pipeline = %self.name, "batch job stopped");
        for waiter in self.stopping.drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Handler<Stop> for Scheduler {
    type Result = ();

    fn handle(&mut self, Stop(done): Stop, ctx: &mut Context<Self>) {
        self.stopping.push(done);
        if !self.running {
            ctx.stop();
        }
        // Otherwise `finished` stops the actor when the run ends.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute_or_the_window() {
        let ten_minutes = Duration::from_secs(600);
        let waits: Vec<u64> = (1..=9).map(|f| backoff(f, ten_minutes).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(1_000, ten_minutes), Duration::from_secs(60));
        // Short windows retry at least once per window.
        let two_seconds = Duration::from_secs(2);
        let waits: Vec<u64> = (1..=4).map(|f| backoff(f, two_seconds).as_secs()).collect();
        assert_eq!(waits, [1, 2, 2, 2]);
        assert_eq!(backoff(1, Duration::from_millis(10)), FIRST_BACKOFF);
    }
}
