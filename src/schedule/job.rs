//! One batch pipeline's job: what a run does, given the time.
//!
//! A run takes the pipeline's advisory lock (`pg_try_advisory_lock`, on a
//! connection of its own, held for the whole run), so among several vigil
//! processes one runs at a time and the others skip; then, on a second
//! connection, it creates the tables it needs if missing, checks the
//! readings table once, reads which windows are completed, plans (see
//! `window.rs`) and computes each planned window in a transaction of its
//! own: aggregate and upsert the results, delete rows of groups no longer
//! there, publish to Kafka if configured, and record the window as
//! completed, all or nothing. A failure stops the run after the last
//! committed window; the next run starts from there.
//!
//! Deliberately not here: when to run, retries, backoff (the actor in
//! `actor.rs`); the time (given to [`Job::run`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::tokio_postgres::{self, NoTls};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tracing::{debug, info, warn};

use super::error::{RunError, StartError};
use super::output::KafkaOutput;
use super::series::BatchSeries;
use super::sql::{self, Statements};
use super::window::{micros, timestamp, Grid, Planned, Skipped, Window, WindowKind};
use crate::config::BatchPipeline;
use crate::telemetry::Label;

/// A group's result for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    /// The group (sensor), as text.
    pub group: String,
    /// Readings in the window; 0 for a silent group.
    pub readings: i64,
    /// `None` when there were no readings.
    pub average: Option<f64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

/// One computed window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowReport {
    pub window: Window,
    pub kind: WindowKind,
    /// Readings aggregated.
    pub rows_read: i64,
    /// One per group, ordered by group.
    pub results: Vec<GroupResult>,
    /// How often this window has been computed, this time included.
    pub computations: i32,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Another process holds the pipeline's lock: it runs the job.
    LockBusy,
    /// This process ran; possibly nothing was due.
    Ran { windows: Vec<WindowReport>, skipped: Option<Skipped> },
}

/// A batch pipeline ready to run: its pool, statements and output.
pub struct Job {
    pipeline: Arc<BatchPipeline>,
    grid: Grid,
    pool: Pool,
    sql: Statements,
    lock_key: i64,
    target: String,
    /// The URL's password, hidden from the errors of runs.
    password: Option<String>,
    output: Option<KafkaOutput>,
    series: Arc<BatchSeries>,
    /// Tables created (or found) since the last failure.
    tables_ready: bool,
    /// Readings table checked since the last failure.
    readings_checked: bool,
}

impl Job {
    /// Builds the pool and the Kafka producer; connects to nothing yet.
    pub fn new(pipeline: Arc<BatchPipeline>) -> Result<Job, StartError> {
        let pool = pool(&pipeline)?;
        let output = match &pipeline.results.kafka {
            Some(kafka) => Some(KafkaOutput::new(kafka, &pipeline.name)?),
            None => None,
        };
        Ok(Job {
            grid: Grid::new(&pipeline.schedule),
            sql: Statements::new(&pipeline),
            lock_key: sql::lock_key(&pipeline.name),
            target: pipeline.postgres.target(),
            password: pipeline.postgres.password(),
            pool,
            output,
            series: Arc::new(BatchSeries::register(&pipeline.name)),
            tables_ready: false,
            readings_checked: false,
            pipeline,
        })
    }

    pub fn pipeline(&self) -> &BatchPipeline {
        &self.pipeline
    }

    pub(super) fn series(&self) -> &Arc<BatchSeries> {
        &self.series
    }

    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// `host:port/database`, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Checks that the results topic exists, when there is one.
    pub async fn check_output(&self) -> Result<(), StartError> {
        match &self.output {
            Some(output) => output.check_topic().await,
            None => Ok(()),
        }
    }

    /// Runs the job as of `now` (µs since the epoch): every due window
    /// since the last completed one, plus recomputations; see the module
    /// doc and `window.rs`. An error never holds the URL's password (no
    /// driver message is known to quote it; this makes sure).
    pub async fn run(&mut self, now: i64) -> Result<RunOutcome, RunError> {
        let password = self.password.clone();
        self.run_windows(now).await.map_err(|e| match &password {
            Some(password) => e.hiding(password),
            None => e,
        })
    }

    async fn run_windows(&mut self, now: i64) -> Result<RunOutcome, RunError> {
        let lock_conn = self.pool.get().await.map_err(|e| RunError::pool(&self.target, e))?;
        let taken: bool = lock_conn
            .query_one(sql::TRY_LOCK, &[&self.lock_key])
            .await
            .map_err(|e| RunError::postgres(&self.target, "taking the pipeline's advisory lock", &e))?
            .get(0);
        if !taken {
            return Ok(RunOutcome::LockBusy);
        }
        let lock = Lock { conn: Some(lock_conn), key: self.lock_key };
        let result = self.run_locked(now).await;
        lock.release().await;
        if result.is_err() {
            // A table may have been dropped, or the database replaced.
            self.tables_ready = false;
            self.readings_checked = false;
        }
        result
    }

    async fn run_locked(&mut self, now: i64) -> Result<RunOutcome, RunError> {
        let mut conn = self.pool.get().await.map_err(|e| RunError::pool(&self.target, e))?;
        if !self.tables_ready {
            self.create_tables(&mut conn).await?;
            self.tables_ready = true;
        }
        if !self.readings_checked {
            self.check_readings(&conn).await?;
            self.readings_checked = true;
        }
        let name = self.pipeline.name.as_str();
        let pg = |what| {
            let target = self.target.clone();
            move |e: tokio_postgres::Error| RunError::postgres(&target, what, &e)
        };
        let rows = conn
            .query(&self.sql.completed, &[&name, &at(self.grid.state_from(now))])
            .await
            .map_err(pg("reading completed windows"))?;
        let completed: BTreeSet<Window> =
            rows.iter().map(|row| Window { start: from(row.get(0)), end: from(row.get(1)) }).collect();
        let last: Option<SystemTime> =
            conn.query_one(&self.sql.last_completed, &[&name]).await.map_err(pg("reading completed windows"))?.get(0);
        let last = last.map(from);
        if let Some(end) = last {
            self.series.last_completed.get().set(end as f64 / 1e6);
        }

        let plan = self.grid.plan(now, &completed, last);
        if let Some(skipped) = &plan.skipped {
            warn!(
                pipeline = %name,
                from = %timestamp(skipped.from),
                to = %timestamp(skipped.to),
                windows = skipped.windows,
                catch_up_limit = ?self.pipeline.schedule.catch_up_limit,
                "windows older than catch_up_limit are not computed"
            );
        }
        debug!(pipeline = %name, windows = plan.windows.len(), "run planned");
        let mut reports = Vec::with_capacity(plan.windows.len());
        for planned in plan.windows {
            reports.push(self.compute(&mut conn, planned).await?);
        }
        Ok(RunOutcome::Ran { windows: reports, skipped: plan.skipped })
    }

    /// Creates `vigil_batch_windows` and the results table if missing,
    /// under a transaction-level advisory lock shared by every pipeline.
    /// Tables that exist are left alone without a `CREATE` statement, so a
    /// role without the CREATE privilege works on tables made for it.
    async fn create_tables(&self, conn: &mut Object) -> Result<(), RunError> {
        let pg = |e: tokio_postgres::Error| RunError::postgres(&self.target, "creating tables", &e);
        let present: bool = conn
            .query_one(sql::TABLES_EXIST, &[&self.sql.windows_table, &self.sql.results_table])
            .await
            .map_err(pg)?
            .get(0);
        if present {
            return Ok(());
        }
        let tx = conn.transaction().await.map_err(pg)?;
        tx.execute(sql::DDL_LOCK, &[&sql::DDL_LOCK_KEY]).await.map_err(pg)?;
        tx.batch_execute(&self.sql.create_windows).await.map_err(pg)?;
        for statement in &self.sql.create_results {
            tx.batch_execute(statement).await.map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    /// The readings table must exist with the three columns, the time
    /// column of the declared type and a numeric value column.
    async fn check_readings(&self, conn: &Object) -> Result<(), RunError> {
        let readings = &self.pipeline.readings;
        let rows = conn
            .query(self.sql.readings_columns, &[&readings.table.quoted()])
            .await
            .map_err(|e| RunError::postgres(&self.target, "reading the readings table's columns", &e))?;
        let columns: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let problem = |reason: String| RunError::Readings {
            table: readings.table.to_string(),
            target: self.target.clone(),
            reason,
        };
        if columns.is_empty() {
            return Err(problem("the table does not exist (or has no columns)".into()));
        }
        let find = |name: &str| columns.iter().find(|(c, _, _)| c == name);
        let mut problems = Vec::new();
        for (field, column) in [("group_by", &readings.group_by), ("value", &readings.value), ("time", &readings.time)]
        {
            if find(column).is_none() {
                problems.push(format!("readings.{field}: no column {column}"));
            }
        }
        if let Some((_, ty, _)) = find(&readings.time) {
            if ty != readings.time_type.type_name() {
                problems.push(format!(
                    "readings.time: column {} is {ty}, not {} (set readings.time_type to match)",
                    readings.time,
                    readings.time_type.type_name()
                ));
            }
        }
        if let Some((_, ty, category)) = find(&readings.value) {
            if category != "N" {
                problems.push(format!("readings.value: column {} is {ty}, not a number", readings.value));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problem(problems.join("; ")))
        }
    }

    /// Computes one window in one transaction; see the module doc.
    async fn compute(&self, conn: &mut Object, planned: Planned) -> Result<WindowReport, RunError> {
        let Planned { window, kind } = planned;
        let name = self.pipeline.name.as_str();
        let pg = |what| {
            let target = self.target.clone();
            move |e: tokio_postgres::Error| RunError::postgres(&target, what, &e)
        };
        let silent_from = window.start - micros(self.pipeline.results.silent_groups_for);
        let (start, end) = (at(window.start), at(window.end));

        let tx = conn.transaction().await.map_err(pg("starting a transaction"))?;
        // Not a cached statement: a results table dropped and created again
        // would leave a cached plan that fails on every later run.
        let rows = tx
            .query(&self.sql.aggregate, &[&start, &end, &start, &end, &at(silent_from)])
            .await
            .map_err(pg("aggregating a window"))?;
        let mut results: Vec<GroupResult> = rows
            .iter()
            .map(|r| GroupResult {
                group: r.get(0),
                readings: r.get(1),
                average: r.get(2),
                minimum: r.get(3),
                maximum: r.get(4),
            })
            .collect();
        results.sort_by(|a, b| a.group.cmp(&b.group));
        let groups: Vec<String> = results.iter().map(|r| r.group.clone()).collect();
        tx.execute(&self.sql.delete_stale, &[&start, &groups]).await.map_err(pg("replacing a window's rows"))?;
        if let Some(output) = &self.output {
            output.publish(&self.pipeline.readings.group_by, window, &results).await?;
        }
        let rows_read: i64 = results.iter().map(|r| r.readings).sum();
        let result_rows = i32::try_from(results.len()).unwrap_or(i32::MAX);
        let computations: i32 = tx
            .query_one(&self.sql.complete, &[&name, &start, &end, &rows_read, &result_rows])
            .await
            .map_err(pg("recording a completed window"))?
            .get(0);
        tx.commit().await.map_err(pg("committing a window"))?;

        self.series.rows_read.increment(rows_read.max(0) as u64);
        self.series.windows.inc(kind);
        if kind == WindowKind::First {
            // Windows complete oldest first, so the newest is the last.
            self.series.last_completed.get().set(window.end as f64 / 1e6);
        }
        let silent = results.iter().filter(|r| r.readings == 0).count();
        if rows_read == 0 {
            info!(pipeline = %name, window = %window, kind = kind.as_label(), silent_groups = silent, "window empty: no readings");
        } else {
            info!(
                pipeline = %name,
                window = %window,
                kind = kind.as_label(),
                readings = rows_read,
                groups = results.len() - silent,
                silent_groups = silent,
                computations,
                "window computed"
            );
        }
        Ok(WindowReport { window, kind, rows_read, results, computations })
    }
}

/// The pipeline's advisory lock, held by a pooled connection. Released
/// explicitly at the end of a run; if the run is dropped halfway, or the
/// unlock fails, the connection is taken out of the pool and closed, which
/// releases the lock in PostgreSQL, so a lock can never outlive its run.
struct Lock {
    conn: Option<Object>,
    key: i64,
}

impl Lock {
    async fn release(mut self) {
        let Some(conn) = self.conn.take() else { return };
        match conn.query_one(sql::UNLOCK, &[&self.key]).await {
            Ok(row) if row.get::<_, bool>(0) => {} // back to the pool
            _ => drop(Object::take(conn)),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

/// The pool of one pipeline: `statement_timeout` and `TimeZone=UTC` on
/// every connection (after any `options` of the URL, so they win),
/// connections verified before reuse (a restarted PostgreSQL leaves dead
/// ones behind), and bounded waits so an outage fails a run quickly
/// instead of hanging it.
fn pool(pipeline: &BatchPipeline) -> Result<Pool, StartError> {
    let settings = &pipeline.postgres;
    let refused = |reason: String| StartError::Pool { pipeline: pipeline.name.clone(), reason };
    let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| refused(format!("the URL: {e}")))?;
    // client_min_messages: no NOTICE for each `CREATE ... IF NOT EXISTS`
    // of a table that exists.
    let ours = format!(
        "-c statement_timeout={} -c TimeZone=UTC -c client_min_messages=warning",
        settings.statement_timeout.as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(&options);
    config.connect_timeout(settings.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name(format!("vigil {}", pipeline.name));
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
    let wait = settings.connect_timeout + Duration::from_secs(1);
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| refused(e.to_string()))
}

/// µs since the epoch as a bindable time.
fn at(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// A time read from PostgreSQL as µs since the epoch.
fn from(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => micros(d),
        Err(e) => -micros(e.duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_system_time() {
        for t in [0, 1, 1_795_600_800_000_000, -1, -86_400_000_001] {
            assert_eq!(from(at(t)), t);
        }
    }

    /// Nothing listens on port 1: connecting fails at once, no PostgreSQL
    /// needed.
    #[tokio::test]
    async fn a_failed_connection_never_shows_the_password() {
        let text = "name: t\nschedule: {every: 10m}\n\
                    postgres: {url: 'postgres://vigil:hunter2-pg@127.0.0.1:1/db', connect_timeout: 2s}\n\
                    readings: {table: r, group_by: g, value: v, time: t}\nresults: {table: out}\n";
        let Ok(crate::config::PipelineDef::Batch(pipeline)) = crate::config::load_any_str("b.yaml", text, |_| None)
        else {
            panic!("not a batch pipeline")
        };
        let mut job = Job::new(Arc::new(pipeline)).expect("a pool, not connected yet");
        let Err(err) = job.run(0).await else { panic!("connected to port 1") };
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, RunError::Unavailable { .. }), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:1/db"), "{shown}");
    }
}
