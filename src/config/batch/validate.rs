//! Semantic validation of a batch pipeline file: defaults, ranges and
//! cross-field rules, every problem collected with its path and location
//! (the shared `Validator` of `validator.rs` does the reporting).
//!
//! Deliberately not checked: whether the database answers, or whether the
//! tables and columns exist (the scheduler checks those when it connects).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Location;

use super::raw::{RawBatchPipeline, RawKafkaOutput, RawPostgres, RawReadings, RawResults, RawSchedule};
use super::{
    BatchPipeline, KafkaOutputConfig, PostgresConfig, ReadingsConfig, ResultsConfig, ScheduleConfig, TableName,
    RESULT_COLUMNS, WINDOWS_TABLE,
};
use crate::config::interpolate::ColumnMap;
use crate::config::spanned::S;
use crate::config::validator::{key_path, Validator};
use crate::config::Problem;

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1), in bytes.
const MAX_IDENT_BYTES: usize = 63;
const DAY: Duration = Duration::from_secs(86_400);
const MAX_RECOMPUTE: u32 = 1000;
const MAX_POOL: usize = 64;

/// librdkafka properties vigil sets itself on the results producer.
const RESERVED_PROPERTIES: [(&str, &str); 3] = [
    ("bootstrap.servers", "set results.kafka.brokers instead"),
    ("enable.idempotence", "it publishes idempotently"),
    ("acks", "it waits for acks=all before a window counts as completed"),
];

/// Validates `raw`; `columns` maps locations back to the file.
pub(in crate::config) fn validate(
    raw: RawBatchPipeline,
    file: PathBuf,
    columns: &ColumnMap,
) -> Result<BatchPipeline, Vec<Problem>> {
    let mut v = Validator { problems: Vec::new(), columns };
    let name = v.name("name", &raw.name);
    let schedule = schedule(&mut v, raw.schedule);
    let postgres = postgres(&mut v, raw.postgres);
    let readings = readings(&mut v, raw.readings);
    let results = results(&mut v, raw.results, &readings);

    let mut problems = v.problems;
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(problems);
    }
    Ok(BatchPipeline { name, file, schedule, postgres, readings, results })
}

/// A duration, or `default` when the key is absent (or the value is bad,
/// which is reported).
fn duration_or(v: &mut Validator<'_>, path: &str, text: &Option<S<String>>, default: Duration) -> Duration {
    text.as_ref().and_then(|t| v.duration(path, t)).unwrap_or(default)
}

fn positive(v: &mut Validator<'_>, path: &str, text: &Option<S<String>>, value: Duration) {
    if let Some(t) = text {
        if value.is_zero() {
            v.report(&t.referenced, path, format!("must be > 0 (got {})", t.value));
        }
    }
}

fn schedule(v: &mut Validator<'_>, raw: S<RawSchedule>) -> ScheduleConfig {
    let raw = raw.value;
    let every = v.duration("schedule.every", &raw.every).and_then(|e| {
        let at = &raw.every.referenced;
        let problem = if e < Duration::from_secs(1) {
            Some(format!("must be at least 1s (got {})", raw.every.value))
        } else if e.subsec_nanos() != 0 {
            Some(format!("must be whole seconds (got {})", raw.every.value))
        } else if e > DAY || !DAY.as_secs().is_multiple_of(e.as_secs()) {
            Some(format!(
                "must divide a day (24h) evenly so windows line up with UTC midnight, e.g. 1m, 5m, 10m, 15m, 1h \
                 (got {})",
                raw.every.value
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                v.report(at, "schedule.every", message);
                None
            }
            None => Some(e),
        }
    });
    // `None` when written but refused (already reported).
    let grace = match &raw.grace {
        Some(t) => v.duration("schedule.grace", t),
        None => Some(ScheduleConfig::DEFAULT_GRACE),
    };
    let catch_up_limit = match &raw.catch_up_limit {
        Some(t) => v.duration("schedule.catch_up_limit", t),
        None => Some(ScheduleConfig::DEFAULT_CATCH_UP_LIMIT),
    };
    if let (Some(every), Some(grace), Some(limit)) = (every, grace, catch_up_limit) {
        if limit < every + grace {
            let at = raw.catch_up_limit.as_ref().map_or(raw.every.referenced, |c| c.referenced);
            let shown = raw.catch_up_limit.as_ref().map_or("24h, the default".to_owned(), |c| c.value.clone());
            let grace_shown = raw.grace.as_ref().map_or("30s, the default".to_owned(), |g| g.value.clone());
            v.report(
                &at,
                "schedule.catch_up_limit",
                format!(
                    "must be at least every + grace, or the latest window would never be computed \
                     (got {shown}; schedule.every is {}, schedule.grace is {grace_shown})",
                    raw.every.value
                ),
            );
        }
    }
    let recompute_last = match &raw.recompute_last {
        Some(r) if r.value > MAX_RECOMPUTE => {
            v.report(&r.referenced, "schedule.recompute_last", format!("must be ≤ {MAX_RECOMPUTE} (got {})", r.value));
            0
        }
        Some(r) => r.value,
        None => ScheduleConfig::DEFAULT_RECOMPUTE_LAST,
    };
    ScheduleConfig {
        every: every.unwrap_or(Duration::from_secs(600)),
        grace: grace.unwrap_or(ScheduleConfig::DEFAULT_GRACE),
        catch_up_limit: catch_up_limit.unwrap_or(ScheduleConfig::DEFAULT_CATCH_UP_LIMIT),
        recompute_last,
    }
}

fn postgres(v: &mut Validator<'_>, raw: S<RawPostgres>) -> PostgresConfig {
    let raw = raw.value;
    let url = v.non_empty("postgres.url", &raw.url);
    // The URL itself is never repeated: it may hold a password.
    if !url.trim().is_empty() {
        use deadpool_postgres::tokio_postgres::config::{Config, Host};
        match url.parse::<Config>() {
            Err(e) => v.report(
                &raw.url.referenced,
                "postgres.url",
                format!("not a PostgreSQL connection URL ({e}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
            ),
            // The user part ends at the first `@`: the rest of a password
            // holding one would be taken for the host, and printed as it.
            Ok(config) if config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(h) if h.contains('@'))) => v.report(
                &raw.url.referenced,
                "postgres.url",
                "the password holds an `@`: write it as %40 (the user part of the URL ends at its first `@`)",
            ),
            Ok(_) => {}
        }
    }
    let pool_size = match &raw.pool_size {
        Some(p) if !(2..=MAX_POOL).contains(&p.value) => {
            v.report(
                &p.referenced,
                "postgres.pool_size",
                format!(
                    "must be from 2 to {MAX_POOL} (got {}): a run holds the pipeline's lock on one connection \
                     and works on another",
                    p.value
                ),
            );
            PostgresConfig::DEFAULT_POOL_SIZE
        }
        Some(p) => p.value,
        None => PostgresConfig::DEFAULT_POOL_SIZE,
    };
    let statement_timeout =
        duration_or(v, "postgres.statement_timeout", &raw.statement_timeout, PostgresConfig::DEFAULT_STATEMENT_TIMEOUT);
    positive(v, "postgres.statement_timeout", &raw.statement_timeout, statement_timeout);
    let connect_timeout =
        duration_or(v, "postgres.connect_timeout", &raw.connect_timeout, PostgresConfig::DEFAULT_CONNECT_TIMEOUT);
    positive(v, "postgres.connect_timeout", &raw.connect_timeout, connect_timeout);
    PostgresConfig { url, pool_size, statement_timeout, connect_timeout }
}

/// Why `ident` is not an identifier vigil quotes into SQL, if it is not.
fn ident_problem(ident: &str) -> Option<String> {
    let mut chars = ident.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !valid {
        Some(format!(
            "not a plain SQL name (got {ident:?}): use letters, digits, _ and $, starting with a letter or _; \
             it is used exactly as written (quoted), so write it as PostgreSQL stores it, usually lowercase"
        ))
    } else if ident.len() > MAX_IDENT_BYTES {
        Some(format!("must be at most {MAX_IDENT_BYTES} bytes, PostgreSQL's limit (got {})", ident.len()))
    } else {
        None
    }
}

fn ident(v: &mut Validator<'_>, path: &str, value: &S<String>) -> String {
    if let Some(message) = ident_problem(&value.value) {
        v.report(&value.referenced, path, message);
    }
    value.value.clone()
}

fn table(v: &mut Validator<'_>, path: &str, value: &S<String>) -> TableName {
    let (schema, name) = match value.value.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, value.value.as_str()),
    };
    let problem = schema
        .and_then(|s| ident_problem(s).map(|m| format!("schema: {m}")))
        .or_else(|| ident_problem(name).map(|m| format!("{m}; a table is `name` or `schema.name`")));
    if let Some(message) = problem {
        v.report(&value.referenced, path, message);
    } else if name == WINDOWS_TABLE {
        v.report(
            &value.referenced,
            path,
            format!("{WINDOWS_TABLE} is where vigil remembers completed windows; use another table"),
        );
    }
    TableName { schema: schema.map(str::to_owned), name: name.to_owned() }
}

fn readings(v: &mut Validator<'_>, raw: S<RawReadings>) -> ReadingsConfig {
    let raw = raw.value;
    let table = table(v, "readings.table", &raw.table);
    let group_by = ident(v, "readings.group_by", &raw.group_by);
    let value = ident(v, "readings.value", &raw.value);
    let time = ident(v, "readings.time", &raw.time);
    let named = [("group_by", &raw.group_by), ("value", &raw.value), ("time", &raw.time)];
    for (i, (field, column)) in named.iter().enumerate() {
        if let Some((other, _)) = named[..i].iter().find(|(_, c)| c.value == column.value) {
            v.report(
                &column.referenced,
                format!("readings.{field}"),
                format!("must differ from readings.{other} (both {})", column.value),
            );
        }
    }
    let time_type = raw.time_type.map(|t| t.value).unwrap_or_default();
    ReadingsConfig { table, group_by, value, time, time_type }
}

/// Whether two names are the same table, taking an unqualified name to
/// be in `public` (the default search path).
fn same_table(a: &TableName, b: &TableName) -> bool {
    let schema = |t: &TableName| t.schema.clone().unwrap_or_else(|| "public".into());
    a.name == b.name && schema(a) == schema(b)
}

fn results(v: &mut Validator<'_>, raw: S<RawResults>, readings: &ReadingsConfig) -> ResultsConfig {
    let raw = raw.value;
    let table = table(v, "results.table", &raw.table);
    if same_table(&table, &readings.table) {
        v.report(
            &raw.table.referenced,
            "results.table",
            format!("must differ from readings.table (both {table}): vigil would read what it writes"),
        );
    }
    if RESULT_COLUMNS.contains(&readings.group_by.as_str()) {
        v.report(
            &raw.table.referenced,
            "results.table",
            format!(
                "the results table names its group column after readings.group_by ({}), which clashes with \
                 its own columns ({}); rename the column or use a view",
                readings.group_by,
                RESULT_COLUMNS.join(", ")
            ),
        );
    }
    let silent_groups_for =
        duration_or(v, "results.silent_groups_for", &raw.silent_groups_for, ResultsConfig::DEFAULT_SILENT_GROUPS_FOR);
    let kafka = raw.kafka.map(|k| kafka(v, k.value));
    ResultsConfig { table, silent_groups_for, kafka }
}

fn kafka(v: &mut Validator<'_>, raw: RawKafkaOutput) -> KafkaOutputConfig {
    let brokers = v.brokers("results.kafka.brokers", &raw.brokers);
    let topic = v.topic("results.kafka.topic", &raw.topic);
    let mut properties = BTreeMap::new();
    for (key, value) in raw.properties.unwrap_or_default() {
        let path = key_path("results.kafka.properties", &key);
        let at: Location = value.referenced;
        if key.trim().is_empty() {
            v.report(&at, &path, "empty property name");
        } else if let Some((_, instead)) = RESERVED_PROPERTIES.iter().find(|(k, _)| *k == key) {
            v.report(&at, &path, format!("vigil sets {key} itself; {instead}"));
        }
        properties.insert(key, value.value);
    }
    KafkaOutputConfig { brokers, topic, properties }
}
