//! What the temperature batch job's tests share: a PostgreSQL cluster of a
//! test's own (to stop and start without touching the shared stack),
//! readings tables with unique names, results computed by hand from the
//! inserted readings, and the job's own tables read back.
//!
//! Part of `support` (as `support::pg`), beside the stack's endpoints and
//! the `vigil run` process helper it builds on.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::database_url;

pub const MICROS: i64 = 1_000_000;

/// A name no other test or earlier run uses: `prefix_<time><pid>`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}_{}{}", nanos % 1_000_000_000_000, std::process::id())
}

/// Now, µs since the epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as i64
}

pub fn at(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros as u64)
}

pub fn micros_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as i64
}

/// A client for `url`; panics with the reason when the database is not
/// there, so a missing service can never pass for a green test.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required (scripts/stack up): {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The shared stack's database.
pub async fn shared() -> tokio_postgres::Client {
    connect(&database_url()).await
}

/// One reading, as a test inserts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: String,
    pub value: f64,
    /// µs since the epoch, UTC.
    pub at: i64,
}

/// Creates a readings table shaped like `temperature_readings`.
pub async fn create_readings(client: &tokio_postgres::Client, table: &str, timestamptz: bool) {
    let ty = if timestamptz { "TIMESTAMPTZ" } else { "TIMESTAMP" };
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, sensor_id TEXT NOT NULL, \
             temperature DOUBLE PRECISION NOT NULL, recorded_at {ty} NOT NULL)"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating {table}: {e}"));
}

/// Inserts readings, binding times as instants (UTC in a TIMESTAMP).
pub async fn insert(client: &tokio_postgres::Client, table: &str, readings: &[Reading]) {
    for chunk in readings.chunks(5_000) {
        let sensors: Vec<&str> = chunk.iter().map(|r| r.sensor.as_str()).collect();
        let values: Vec<f64> = chunk.iter().map(|r| r.value).collect();
        let times: Vec<SystemTime> = chunk.iter().map(|r| at(r.at)).collect();
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (sensor_id, temperature, recorded_at) \
                     SELECT * FROM UNNEST($1::text[], $2::float8[], $3::timestamp[])"
                ),
                &[&sensors, &values, &times],
            )
            .await
            .unwrap_or_else(|e| panic!("inserting into {table}: {e}"));
    }
}

/// Readings of `sensors` every `step` µs in `[from, to)`, with values that
/// differ per sensor and reading (two decimals).
pub fn readings_every(sensors: &[&str], from: i64, to: i64, step: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    for (i, sensor) in sensors.iter().enumerate() {
        let mut t = from + i as i64 * 1_000; // not all on one instant
        let mut k = 0i64;
        while t < to {
            let value = 18.0 + i as f64 + ((k * 37 + i as i64 * 11) % 500) as f64 / 100.0;
            out.push(Reading { sensor: (*sensor).to_owned(), value, at: t });
            t += step;
            k += 1;
        }
    }
    out
}

/// A group's result for one window, as the test expects or reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub readings: i64,
    pub average: Option<f64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

impl Agg {
    pub const SILENT: Agg = Agg { readings: 0, average: None, minimum: None, maximum: None };
}

/// By hand: per sensor, the readings with `start <= at < end`, as count,
/// mean, min and max computed here in Rust.
pub fn expected(readings: &[Reading], start: i64, end: i64) -> BTreeMap<String, Agg> {
    let mut by_sensor: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in readings.iter().filter(|r| start <= r.at && r.at < end) {
        by_sensor.entry(r.sensor.clone()).or_default().push(r.value);
    }
    by_sensor
        .into_iter()
        .map(|(sensor, values)| {
            let n = values.len() as f64;
            let agg = Agg {
                readings: values.len() as i64,
                average: Some(values.iter().sum::<f64>() / n),
                minimum: values.iter().copied().reduce(f64::min),
                maximum: values.iter().copied().reduce(f64::max),
            };
            (sensor, agg)
        })
        .collect()
}

/// Equal, with averages compared to 1e-9 (summation order differs).
pub fn same(a: &BTreeMap<String, Agg>, b: &BTreeMap<String, Agg>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, x), (kb, y))| {
            ka == kb
                && x.readings == y.readings
                && x.minimum == y.minimum
                && x.maximum == y.maximum
                && match (x.average, y.average) {
                    (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                }
        })
}

/// A row of `vigil_batch_windows`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub start: i64,
    pub end: i64,
    pub first_completed_at: i64,
    pub rows_read: i64,
    pub result_rows: i32,
    pub computations: i32,
}

/// The completed windows of `pipeline`, oldest first (none if the table
/// does not exist yet).
pub async fn windows(client: &tokio_postgres::Client, pipeline: &str) -> Vec<WindowRow> {
    let exists: Option<String> =
        client.query_one("SELECT to_regclass('vigil_batch_windows')::text", &[]).await.expect("to_regclass").get(0);
    if exists.is_none() {
        return Vec::new();
    }
    client
        .query(
            "SELECT window_start, window_end, first_completed_at, rows_read, result_rows, computations \
             FROM vigil_batch_windows WHERE pipeline = $1 ORDER BY window_start",
            &[&pipeline],
        )
        .await
        .expect("reading vigil_batch_windows")
        .iter()
        .map(|r| WindowRow {
            start: micros_of(r.get(0)),
            end: micros_of(r.get(1)),
            first_completed_at: micros_of(r.get(2)),
            rows_read: r.get(3),
            result_rows: r.get(4),
            computations: r.get(5),
        })
        .collect()
}

/// Waits up to `limit` until `done` holds for the pipeline's windows and
/// returns them; past the limit, fails with `what`, the windows and
/// `logs()` (the vigil processes' output).
pub async fn wait_windows(
    client: &tokio_postgres::Client,
    pipeline: &str,
    limit: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
    done: impl Fn(&[WindowRow]) -> bool,
) -> Vec<WindowRow> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let rows = windows(client, pipeline).await;
        if done(&rows) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: windows {rows:#?}\n--- logs:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The results table's rows of the window starting at `start`.
pub async fn results(client: &tokio_postgres::Client, table: &str, start: i64) -> BTreeMap<String, Agg> {
    client
        .query(
            &format!("SELECT sensor_id, readings, average, minimum, maximum FROM {table} WHERE window_start = $1"),
            &[&at(start)],
        )
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"))
        .iter()
        .map(|r| (r.get(0), Agg { readings: r.get(1), average: r.get(2), minimum: r.get(3), maximum: r.get(4) }))
        .collect()
}

/// Windows are contiguous: each starts where the one before ended.
pub fn assert_contiguous(rows: &[WindowRow]) {
    for pair in rows.windows(2) {
        assert_eq!(pair[1].start, pair[0].end, "a gap or overlap between windows: {rows:#?}");
    }
}

/// Every completed window's results equal the hand computation.
pub async fn assert_results(client: &tokio_postgres::Client, table: &str, rows: &[WindowRow], readings: &[Reading]) {
    for w in rows {
        let want = expected(readings, w.start, w.end);
        let got = results(client, table, w.start).await;
        assert!(same(&got, &want), "window {}..{}: got {got:#?}, want {want:#?}", w.start, w.end);
        let read: i64 = want.values().map(|a| a.readings).sum();
        assert_eq!(w.rows_read, read, "rows_read of window {}..{}", w.start, w.end);
    }
}

/// Drops the test's tables and forgets its pipeline (best effort).
pub async fn clean_up(client: &tokio_postgres::Client, pipeline: &str, tables: &[&str]) {
    for table in tables {
        let _ = client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await;
    }
    let _ = client.execute("DELETE FROM vigil_batch_windows WHERE pipeline = $1", &[&pipeline]).await;
}

/// A batch pipeline file in a fresh temporary folder.
pub fn batch_file(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-test-{name}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).expect("pipeline file written");
    path
}

/// A PostgreSQL cluster of the test's own, on a free loopback port, in a
/// temporary folder: stopped and started at will without touching the
/// shared stack (or Debezium's replication slot on it). Removed on drop.
///
/// As root (CI), initdb and postgres run as the `postgres` user through
/// `runuser`, since they refuse to run as root; the folder is handed to
/// that user. Authentication is `trust` on loopback: it is a throwaway.
pub struct OwnPostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl OwnPostgres {
    /// initdb and start; panics, saying why, if PostgreSQL's binaries are
    /// missing or the cluster does not come up.
    pub fn start() -> OwnPostgres {
        let bin = pg_bindir();
        let dir = std::env::temp_dir().join(unique("vigil-own-pg"));
        std::fs::create_dir_all(&dir).expect("temp dir for PostgreSQL");
        let pg = OwnPostgres { port: crate::support::free_port(), dir, bin };
        if is_root() {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pg.dir).status().expect("chown runs");
            assert!(status.success(), "chown of {} to postgres failed", pg.dir.display());
        }
        pg.run_checked(
            "initdb",
            &["-D", &pg.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.run_checked("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
    }

    /// Immediate shutdown: every session ends at once, nothing is rolled
    /// back or released first, as when the server crashes. (A fast shutdown
    /// ends sessions one by one: a session that holds a lock can abort and
    /// release it before a session waiting for that lock is ended, and the
    /// waiting transaction may then still commit.) The next start recovers
    /// from the write-ahead log.
    pub fn crash(&self) {
        self.run_checked("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "-t", "60", "stop"]);
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // postgres must be able to enter the working directory.
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    fn run_checked(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            panic!(
                "{tool} {args:?} failed ({}):\n{}{}\n--- postgres.log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // `id -u`: no libc binding for one check.
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/*/bin` holding `postgres` and `initdb`.
fn pg_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL's binaries are required under /usr/lib/postgresql/*/bin (scripts/stack up installs them)")
    })
}
