//! Batch pipeline files: the typed, validated description of one periodic
//! job against PostgreSQL (today the one kind: per-group average, minimum,
//! maximum and count of a value over clock-aligned windows).
//!
//! A batch file is told apart from a streaming one by its top-level keys
//! (`schedule:` instead of `source:`; see [`super::load_any`]). It goes
//! through the same three steps as a streaming file (interpolation, strict
//! parsing in `raw.rs`, validation in `validate.rs` collecting every
//! problem with its path), and the result holds plain values only.
//!
//! Deliberately not here: connecting to PostgreSQL, or checking that the
//! tables and columns exist and have the right types. The scheduler
//! (`crate::schedule`) does that when it first reaches the database,
//! because a database that is away at start must not stop vigil.

pub(super) mod raw;
pub(super) mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret;

/// The table where vigil remembers which windows of each batch pipeline
/// it has completed. Not configurable; no pipeline may use it as its
/// readings or results table.
pub const WINDOWS_TABLE: &str = "vigil_batch_windows";

/// The columns vigil creates in a results table, besides the group column.
pub const RESULT_COLUMNS: [&str; 7] =
    ["window_start", "window_end", "readings", "average", "minimum", "maximum", "computed_at"];

/// One batch pipeline, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPipeline {
    /// `name`: `[a-z0-9][a-z0-9._-]*`. Labels metrics and logs, keys the
    /// completed windows and the advisory lock. Required.
    pub name: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// `schedule:`: when windows are computed.
    pub schedule: ScheduleConfig,
    /// `postgres:`: the database the readings are in and results go to.
    pub postgres: PostgresConfig,
    /// `readings:`: the table read, and which of its columns mean what.
    pub readings: ReadingsConfig,
    /// `results:`: where each window's results go.
    pub results: ResultsConfig,
}

/// `schedule:`: windows of `every`, aligned to the clock in UTC
/// (`10m`: 10:00–10:10, 10:10–10:20, ...), each computed `grace` after
/// it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// `every`: the window length; whole seconds, at least `1s`, dividing a
    /// day (`24h`) evenly so windows line up with UTC midnight. Required.
    pub every: Duration,
    /// `grace`: how long after a window ends it is computed, so readings
    /// written a little late still count. Default `30s`.
    pub grace: Duration,
    /// `catch_up_limit`: on start (and after an outage), windows that
    /// ended within this span and are not completed are computed; older
    /// ones are skipped with a warning. Default `24h`; at least
    /// `every + grace` (so the latest window always counts).
    pub catch_up_limit: Duration,
    /// `recompute_last`: when a window is computed for the first time, the
    /// N windows before it are computed again (late readings). Default 1;
    /// 0 turns it off; at most 1000.
    pub recompute_last: u32,
}

impl ScheduleConfig {
    /// Defaults of the optional keys.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
    pub const DEFAULT_CATCH_UP_LIMIT: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_RECOMPUTE_LAST: u32 = 1;
}

/// `postgres:`: connection settings. `Debug` shows the URL's target, not
/// the URL, which may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `url`: `postgres://user:password@host:port/database[?options]`
    /// (libpq's URL or key=value form). Required. Never printed: logs show
    /// [`PostgresConfig::target`].
    pub url: String,
    /// `pool_size`: connections at most. A run uses two: one holds the
    /// pipeline's advisory lock, one does the work. Default 2; 2..=64.
    pub pool_size: usize,
    /// `statement_timeout`: PostgreSQL's `statement_timeout` for every
    /// statement of the job. Default `30s`; > 0.
    pub statement_timeout: Duration,
    /// `connect_timeout`: how long connecting may take before the run
    /// counts as failed. Default `5s`; > 0.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &format_args!("(hidden; {})", self.target()))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PostgresConfig {
    pub const DEFAULT_POOL_SIZE: usize = 2;
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The URL's password (percent-decoded), if it has one: to keep out of
    /// errors.
    pub fn password(&self) -> Option<String> {
        let config = self.url.parse::<deadpool_postgres::tokio_postgres::Config>().ok()?;
        config.get_password().map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }

    /// `host:port/database` of the URL, without user or password, for logs
    /// and errors. The URL was checked when the file was loaded.
    pub fn target(&self) -> String {
        use deadpool_postgres::tokio_postgres::config::Host;
        let Ok(config) = self.url.parse::<deadpool_postgres::tokio_postgres::Config>() else {
            return "(unparsable URL)".into();
        };
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
        format!("{host}:{port}/{db}")
    }
}

/// `readings:`: the table the job reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingsConfig {
    /// `table`: `name` or `schema.name`, used exactly as written (quoted).
    /// Required.
    pub table: TableName,
    /// `group_by`: one result per value of this column and window (the
    /// sensor). Required.
    pub group_by: String,
    /// `value`: the numeric column averaged (with minimum, maximum and
    /// count). Required.
    pub value: String,
    /// `time`: the column a reading's time is in; a window holds the
    /// readings with `start <= time < end`. Required.
    pub time: String,
    /// `time_type`: the time column's type. Default [`TimeType::Timestamp`].
    pub time_type: TimeType,
}

/// The type of the readings' time column; checked against the table when
/// the job first reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeType {
    /// `timestamp`: `TIMESTAMP` (without time zone), read as UTC.
    #[default]
    Timestamp,
    /// `timestamptz`: `TIMESTAMP WITH TIME ZONE`.
    Timestamptz,
}

impl TimeType {
    /// PostgreSQL's name of the type (`pg_type.typname`).
    pub fn type_name(self) -> &'static str {
        match self {
            TimeType::Timestamp => "timestamp",
            TimeType::Timestamptz => "timestamptz",
        }
    }
}

/// `results:`: where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsConfig {
    /// `table`: created if missing, with the group column (named as
    /// `readings.group_by`, as text) and [`RESULT_COLUMNS`]; one row per
    /// group and window, upserted on (group, window_start). Required;
    /// differs from the readings table.
    pub table: TableName,
    /// `silent_groups_for`: a group (sensor) that had readings within this
    /// span before a window, but none in it, gets a row with `readings = 0`
    /// and no average for that window, so a silent sensor shows. Default
    /// `1h`; `0s` writes rows only for groups with readings.
    pub silent_groups_for: Duration,
    /// `kafka:`: also publish each result row to a topic. Default none.
    pub kafka: Option<KafkaOutputConfig>,
}

impl ResultsConfig {
    pub const DEFAULT_SILENT_GROUPS_FOR: Duration = Duration::from_secs(3600);
}

/// `results.kafka:`: each result row as JSON, keyed by group, published
/// idempotently with `acks=all` before the window counts as completed.
/// `Debug` masks secret properties (see [`crate::config::secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOutputConfig {
    /// `brokers`: bootstrap servers. Required, non-empty.
    pub brokers: String,
    /// `topic`: must exist (checked when vigil starts). Required.
    pub topic: String,
    /// `properties`: extra librdkafka properties (TLS, SASL). Default none;
    /// the ones vigil sets itself are refused.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutputConfig")
            .field("brokers", &secret::without_url_passwords(&self.brokers))
            .field("topic", &self.topic)
            .field("properties", &secret::DebugProperties(&self.properties))
            .finish()
    }
}

/// A table name, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// The name quoted for SQL: `"schema"."name"` or `"name"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `"ident"`, with any `"` doubled. Validation allows only
/// `[A-Za-z_][A-Za-z0-9_$]*`, so this is belt and braces.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
