//! The SQL of a batch pipeline, built once from its file.
//!
//! Table and column names come from the pipeline file, where validation
//! allows only plain identifiers; they are quoted here all the same. Every
//! value is a bound parameter. Times are bound as `SystemTime`, which
//! tokio-postgres sends as an absolute instant to both `timestamp` and
//! `timestamptz` parameters (a `timestamp` then holds UTC); connections
//! also run with `TimeZone=UTC`, so nothing depends on the server's zone.

use crate::config::batch::{quote_ident, WINDOWS_TABLE};
use crate::config::BatchPipeline;

/// PostgreSQL's identifier length limit, bytes.
const MAX_IDENT_BYTES: usize = 63;

/// Serialises table creation across pipelines and processes: concurrent
/// `CREATE TABLE IF NOT EXISTS` of one table can fail on PostgreSQL's
/// catalog constraints. (`vigil` in ASCII, then `ddl`.)
pub(super) const DDL_LOCK_KEY: i64 = 0x7669_6769_6c64_646c;

/// Takes the pipeline's advisory lock without waiting: true if taken.
pub(super) const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
/// Gives it back: true if it was held.
pub(super) const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";
/// Held until the end of the transaction creating tables.
pub(super) const DDL_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
/// Whether both tables `$1` and `$2` (quoted names) exist.
pub(super) const TABLES_EXIST: &str = "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL";

/// Every statement of one pipeline.
#[derive(Debug, Clone)]
pub(super) struct Statements {
    /// `"vigil_batch_windows"`, for [`TABLES_EXIST`].
    pub windows_table: String,
    /// The results table's quoted name, for [`TABLES_EXIST`].
    pub results_table: String,
    /// Creates `vigil_batch_windows` if missing.
    pub create_windows: String,
    /// Creates the results table and its index if missing.
    pub create_results: [String; 2],
    /// The readings table's columns and their types: `$1` is the quoted
    /// table name (NULL table: no rows).
    pub readings_columns: &'static str,
    /// Completed windows ending at or after `$2` of pipeline `$1`.
    pub completed: String,
    /// The end of the newest completed window of pipeline `$1`.
    pub last_completed: String,
    /// Aggregates one window and upserts its rows, returning them:
    /// `$1`, `$2` the window in the readings' time type; `$3`, `$4` the
    /// same as timestamptz; `$5` since when a silent group still gets a
    /// row.
    pub aggregate: String,
    /// Deletes rows of window `$1` whose group is not in `$2` (a
    /// recomputed window replaces its rows).
    pub delete_stale: String,
    /// Records window `$2`–`$3` of pipeline `$1` as completed with `$4`
    /// rows read and `$5` result rows; returns how often it was computed.
    pub complete: String,
}

impl Statements {
    pub fn new(pipeline: &BatchPipeline) -> Self {
        let readings = pipeline.readings.table.quoted();
        let results = pipeline.results.table.quoted();
        let group = quote_ident(&pipeline.readings.group_by);
        let value = quote_ident(&pipeline.readings.value);
        let time = quote_ident(&pipeline.readings.time);
        let windows = quote_ident(WINDOWS_TABLE);
        let index = quote_ident(&index_name(&pipeline.results.table.name));

        let create_windows = format!(
            "CREATE TABLE IF NOT EXISTS {windows} (
    pipeline           TEXT NOT NULL,
    window_start       TIMESTAMPTZ NOT NULL,
    window_end         TIMESTAMPTZ NOT NULL,
    first_completed_at TIMESTAMPTZ NOT NULL,
    completed_at       TIMESTAMPTZ NOT NULL,
    rows_read          BIGINT NOT NULL,
    result_rows        INTEGER NOT NULL,
    computations       INTEGER NOT NULL,
    PRIMARY KEY (pipeline, window_start)
)"
        );
        let create_results = [
            format!(
                "CREATE TABLE IF NOT EXISTS {results} (
    {group}      TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end   TIMESTAMPTZ NOT NULL,
    readings     BIGINT NOT NULL,
    average      DOUBLE PRECISION,
    minimum      DOUBLE PRECISION,
    maximum      DOUBLE PRECISION,
    computed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ({group}, window_start)
)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {results} (window_start)"),
        ];
        let readings_columns = "SELECT a.attname::text, t.typname::text, t.typcategory::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";
        let completed = format!(
            "SELECT window_start, window_end FROM {windows} WHERE pipeline = $1 AND window_end >= $2::timestamptz"
        );
        let last_completed = format!("SELECT max(window_end) FROM {windows} WHERE pipeline = $1");
        // FULL JOIN: groups with readings, and groups that had readings
        // shortly before but are silent now (readings 0, no average).
        let aggregate = format!(
            "INSERT INTO {results} AS r ({group}, window_start, window_end, readings, average, minimum, maximum, computed_at)
SELECT g, $3::timestamptz, $4::timestamptz, coalesce(n, 0), a, lo, hi, now()
FROM (
    SELECT {group}::text AS g, count(*) AS n, avg({value}::float8) AS a,
           min({value}::float8) AS lo, max({value}::float8) AS hi
    FROM {readings}
    WHERE {time} >= $1 AND {time} < $2 AND {group} IS NOT NULL AND {value} IS NOT NULL
    GROUP BY 1
) AS agg
FULL JOIN (
    SELECT DISTINCT {group} AS g FROM {results}
    WHERE window_start >= $5::timestamptz AND window_start < $3::timestamptz AND readings > 0
) AS known USING (g)
ON CONFLICT ({group}, window_start) DO UPDATE SET
    window_end = EXCLUDED.window_end, readings = EXCLUDED.readings, average = EXCLUDED.average,
    minimum = EXCLUDED.minimum, maximum = EXCLUDED.maximum, computed_at = EXCLUDED.computed_at
RETURNING {group}, readings, average, minimum, maximum"
        );
        let delete_stale =
            format!("DELETE FROM {results} WHERE window_start = $1::timestamptz AND NOT ({group} = ANY($2::text[]))");
        let complete = format!(
            "INSERT INTO {windows} AS w
    (pipeline, window_start, window_end, first_completed_at, completed_at, rows_read, result_rows, computations)
VALUES ($1, $2::timestamptz, $3::timestamptz, now(), now(), $4, $5, 1)
ON CONFLICT (pipeline, window_start) DO UPDATE SET
    window_end = EXCLUDED.window_end, completed_at = now(), rows_read = EXCLUDED.rows_read,
    result_rows = EXCLUDED.result_rows, computations = w.computations + 1
RETURNING computations"
        );
        Statements {
            windows_table: windows.clone(),
            results_table: results.clone(),
            create_windows,
            create_results,
            readings_columns,
            completed,
            last_completed,
            aggregate,
            delete_stale,
            complete,
        }
    }
}

/// `<table>_window_start`, cut to PostgreSQL's 63 bytes (names are ASCII).
fn index_name(table: &str) -> String {
    let suffix = "_window_start";
    let keep = MAX_IDENT_BYTES - suffix.len();
    let base = if table.len() > keep { &table[..keep] } else { table };
    format!("{base}{suffix}")
}

/// The advisory lock key of a pipeline: FNV-1a (64 bits) of
/// `vigil.batch:<name>`, stable across builds and processes, so every vigil
/// running the pipeline contends for the same lock.
pub(super) fn lock_key(pipeline: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "vigil.batch:".bytes().chain(pipeline.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_any_str, PipelineDef};

    fn pipeline(extra: &str) -> BatchPipeline {
        let text = format!(
            "name: t\nschedule: {{every: 10m}}\npostgres: {{url: 'postgres://u@h/d'}}\n\
             readings: {{table: Sensors.readings, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
             results: {{table: averages}}\n{extra}"
        );
        match load_any_str("t.yaml", &text, |_| None) {
            Ok(PipelineDef::Batch(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_quoted_exactly_as_written() {
        let s = Statements::new(&pipeline(""));
        assert!(s.aggregate.contains("FROM \"Sensors\".\"readings\""), "{}", s.aggregate);
        assert!(s.aggregate.contains("INSERT INTO \"averages\" AS r (\"sensor_id\", window_start"), "{}", s.aggregate);
        assert!(s.aggregate.contains("\"recorded_at\" >= $1 AND \"recorded_at\" < $2"), "half-open: {}", s.aggregate);
        assert!(s.create_results[0].contains("PRIMARY KEY (\"sensor_id\", window_start)"));
        assert_eq!(
            s.create_results[1],
            "CREATE INDEX IF NOT EXISTS \"averages_window_start\" ON \"averages\" (window_start)"
        );
        assert!(s.create_windows.starts_with("CREATE TABLE IF NOT EXISTS \"vigil_batch_windows\""));
        assert!(s.complete.contains("computations = w.computations + 1"));
    }

    #[test]
    fn long_index_names_are_cut_to_63_bytes() {
        let name = index_name(&"x".repeat(63));
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_window_start"));
        assert_eq!(index_name("t"), "t_window_start");
    }

    #[test]
    fn lock_keys_are_stable_and_differ_by_name() {
        assert_eq!(lock_key("temperature-average"), lock_key("temperature-average"));
        assert_ne!(lock_key("temperature-average"), lock_key("temperature-averages"));
        // Pinned: a change would let an old and a new build run a window
        // each.
        assert_eq!(lock_key(""), 0x9479_d3ea_ce78_a1bc_u64 as i64);
    }
}
