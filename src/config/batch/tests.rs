//! Batch pipeline files: kinds told apart, defaults, every rule, locations.

use std::time::Duration;

use super::*;
use crate::config::{load_any_str, ConfigError, PipelineDef, Problem};

/// A valid batch pipeline with only the required keys; tests edit it.
const BASE: &str = "\
name: temps
schedule:
  every: 10m
postgres:
  url: postgres://u:secret@db.example:5433/readings
readings:
  table: temperature_readings
  group_by: sensor_id
  value: temperature
  time: recorded_at
results:
  table: temperature_averages
";

fn load(text: &str) -> Result<PipelineDef, ConfigError> {
    load_any_str("b.yaml", text, |_| None)
}

fn ok(text: &str) -> BatchPipeline {
    match load(text) {
        Ok(PipelineDef::Batch(p)) => p,
        Ok(other) => panic!("not a batch pipeline: {other:?}"),
        Err(e) => panic!("refused:\n{e}\n--- file:\n{text}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match load(text) {
        Ok(p) => panic!("accepted: {p:#?}\n--- file:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The one problem at `path`, which must say `says`.
fn problem_at(text: &str, path: &str, says: &str) -> Problem {
    let all = problems(text);
    let found: Vec<&Problem> = all.iter().filter(|p| p.path == path).collect();
    assert_eq!(found.len(), 1, "problems at {path}: {all:#?}");
    assert!(found[0].message.contains(says), "{path}: {:?} does not say {says:?}", found[0].message);
    found[0].clone()
}

#[test]
fn defaults_fill_everything_optional() {
    let p = ok(BASE);
    assert_eq!(p.name, "temps");
    assert_eq!(
        p.schedule,
        ScheduleConfig {
            every: Duration::from_secs(600),
            grace: Duration::from_secs(30),
            catch_up_limit: Duration::from_secs(86_400),
            recompute_last: 1,
        }
    );
    assert_eq!(p.postgres.pool_size, 2);
    assert_eq!(p.postgres.statement_timeout, Duration::from_secs(30));
    assert_eq!(p.postgres.connect_timeout, Duration::from_secs(5));
    assert_eq!(p.readings.table, TableName { schema: None, name: "temperature_readings".into() });
    assert_eq!(p.readings.time_type, TimeType::Timestamp);
    assert_eq!(p.results.silent_groups_for, Duration::from_secs(3600));
    assert_eq!(p.results.kafka, None);
    // The password never shows.
    assert_eq!(p.postgres.target(), "db.example:5433/readings");
    let debug = format!("{p:?}");
    assert!(!debug.contains("secret") && debug.contains("db.example:5433/readings"), "{debug}");
}

#[test]
fn every_key_is_read() {
    let text = "\
name: temps
schedule: {every: 2s, grace: 500ms, catch_up_limit: 1h, recompute_last: 3}
postgres: {url: 'host=h port=1 dbname=d user=u', pool_size: 4, statement_timeout: 1m, connect_timeout: 2s}
readings: {table: iot.readings, group_by: device, value: celsius, time: at, time_type: timestamptz}
results:
  table: iot.averages
  silent_groups_for: 0s
  kafka: {brokers: 'k:9092', topic: temps.out, properties: {security.protocol: SSL}}
";
    let p = ok(text);
    assert_eq!(
        p.schedule,
        ScheduleConfig {
            every: Duration::from_secs(2),
            grace: Duration::from_millis(500),
            catch_up_limit: Duration::from_secs(3600),
            recompute_last: 3,
        }
    );
    assert_eq!(p.postgres.pool_size, 4);
    assert_eq!(p.postgres.statement_timeout, Duration::from_secs(60));
    assert_eq!(p.postgres.target(), "h:1/d");
    assert_eq!(p.readings.table.quoted(), "\"iot\".\"readings\"");
    assert_eq!(p.readings.table.to_string(), "iot.readings");
    assert_eq!((p.readings.group_by.as_str(), p.readings.value.as_str()), ("device", "celsius"));
    assert_eq!(p.readings.time_type, TimeType::Timestamptz);
    assert_eq!(p.results.silent_groups_for, Duration::ZERO);
    let kafka = p.results.kafka.expect("kafka output");
    assert_eq!((kafka.brokers.as_str(), kafka.topic.as_str()), ("k:9092", "temps.out"));
    assert_eq!(kafka.properties.get("security.protocol").map(String::as_str), Some("SSL"));
}

#[test]
fn the_shipped_pipeline_loads() {
    let text = include_str!("../../../pipelines/temperature-average.yaml");
    let p = match load_any_str("temperature-average.yaml", text, |_| None) {
        Ok(PipelineDef::Batch(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.name, "temperature-average");
    assert_eq!(p.schedule.every, Duration::from_secs(600));
    assert_eq!(p.schedule.grace, Duration::from_secs(30));
    assert_eq!(p.postgres.url, "postgres://postgres:postgrespw@127.0.0.1:5432/mydb");
    assert_eq!(p.readings.table.name, "temperature_readings");
    let env = |name: &str| (name == "DATABASE_URL").then(|| "postgres://a@b/c".to_owned());
    let Ok(PipelineDef::Batch(p)) = load_any_str("t.yaml", text, env) else { panic!() };
    assert_eq!(p.postgres.url, "postgres://a@b/c");
}

#[test]
fn kinds_are_told_apart_by_top_level_keys() {
    assert!(matches!(load(BASE), Ok(PipelineDef::Batch(_))));
    let stream = include_str!("../../../pipelines/fraud-detection.yaml");
    assert!(matches!(load_any_str("f.yaml", stream, |_| None), Ok(PipelineDef::Stream(_))));

    // Both: refused at `schedule`.
    let both = format!("{BASE}source: {{brokers: k, topics: [t], group: g}}\n");
    let p = problem_at(&both, "schedule", "not both");
    assert_eq!((p.line, p.column), (Some(3), Some(3)));

    // Neither schedule nor source, but batch keys: a batch file missing
    // `schedule`, said in batch terms.
    let p = &problems(&BASE.replace("schedule:\n  every: 10m\n", ""))[0];
    assert!(p.message.contains("missing required key `schedule`"), "{p:?}");

    // A stream key in a batch file is an unknown key of a batch file.
    let p = &problems(&format!("{BASE}sink: {{alerts: a, dead_letters: d}}\n"))[0];
    assert!(p.message.contains("unknown key `sink`"), "{p:?}");
    assert!(p.message.contains("schedule, postgres, readings"), "{p:?}");

    // An empty file: the streaming parser's message, as before.
    assert!(!problems("").is_empty());
}

#[test]
fn misspelled_keys_are_refused_with_a_suggestion() {
    let p = &problems(&BASE.replace("  every: 10m", "  every: 10m\n  grase: 5s"))[0];
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("unknown key `grase` (did you mean `grace`?)"), "{p:?}");
    let p = &problems(&BASE.replace("group_by:", "groupby:"))[0];
    assert!(p.message.contains("did you mean `group_by`?"), "{p:?}");
    let p = &problems(&BASE.replace("  time: recorded_at", "  time: recorded_at\n  time_type: datetime"))[0];
    assert!(p.message.contains("timestamp, timestamptz"), "{p:?}");
}

#[test]
fn schedule_rules() {
    let every = |e: &str| BASE.replace("every: 10m", &format!("every: {e}"));
    problem_at(&every("0s"), "schedule.every", "at least 1s");
    problem_at(&every("1500ms"), "schedule.every", "whole seconds");
    problem_at(&every("7m"), "schedule.every", "divide a day");
    problem_at(&every("2d"), "schedule.every", "divide a day");
    problem_at(&every("10"), "schedule.every", "add a unit");
    for good in ["1s", "2s", "1m", "5m", "15m", "1h"] {
        ok(&every(good));
    }

    let text = BASE.replace("every: 10m", "every: 1h\n  catch_up_limit: 30m");
    let p = problem_at(&text, "schedule.catch_up_limit", "at least every + grace");
    assert!(p.message.contains("schedule.every is 1h, schedule.grace is 30s, the default"), "{p:?}");
    assert_eq!(p.line, Some(4));
    // Exactly every + grace is enough.
    ok(&BASE.replace("every: 10m", "every: 1h\n  grace: 0s\n  catch_up_limit: 60m"));
    // A bad `every` is reported once, not again through the limit.
    let text = BASE.replace("every: 10m", "every: 7m\n  catch_up_limit: 1m");
    assert_eq!(problems(&text).len(), 1, "{:#?}", problems(&text));

    problem_at(&BASE.replace("every: 10m", "every: 10m\n  recompute_last: 1001"), "schedule.recompute_last", "≤ 1000");
    problem_at(&BASE.replace("every: 10m", "every: 10m\n  grace: soon"), "schedule.grace", "not a duration");
}

#[test]
fn postgres_rules() {
    let text =
        BASE.replace("url: postgres://u:secret@db.example:5433/readings", "url: 'postgres://u:secret@h:notaport/d'");
    let p = problem_at(&text, "postgres.url", "not a PostgreSQL connection URL");
    assert!(!p.message.contains("secret"), "the password leaks: {p:?}");
    problem_at(&BASE.replace("url: postgres://u:secret@db.example:5433/readings", "url: ''"), "postgres.url", "empty");
    let with = |extra: &str| BASE.replace("/readings\n", &format!("/readings\n  {extra}\n"));
    problem_at(&with("pool_size: 1"), "postgres.pool_size", "from 2 to 64");
    problem_at(&with("pool_size: 65"), "postgres.pool_size", "from 2 to 64");
    problem_at(&with("statement_timeout: 0s"), "postgres.statement_timeout", "must be > 0");
    problem_at(&with("connect_timeout: 0ms"), "postgres.connect_timeout", "must be > 0");
}

#[test]
fn names_that_go_into_sql_are_checked() {
    problem_at(
        &BASE.replace("table: temperature_readings", "table: 'x; DROP TABLE y'"),
        "readings.table",
        "plain SQL name",
    );
    problem_at(&BASE.replace("table: temperature_readings", "table: a.b.c"), "readings.table", "schema");
    problem_at(
        &BASE.replace("table: temperature_readings", "table: vigil_batch_windows"),
        "readings.table",
        "completed windows",
    );
    problem_at(&BASE.replace("value: temperature", "value: 'temp\"'"), "readings.value", "plain SQL name");
    problem_at(&BASE.replace("time: recorded_at", &format!("time: {}", "t".repeat(64))), "readings.time", "63 bytes");
    problem_at(
        &BASE.replace("value: temperature", "value: sensor_id"),
        "readings.value",
        "must differ from readings.group_by",
    );
    problem_at(
        &BASE.replace("table: temperature_averages", "table: public.temperature_readings"),
        "results.table",
        "must differ from readings.table",
    );
    problem_at(&BASE.replace("group_by: sensor_id", "group_by: average"), "results.table", "clashes");
    // Other schemas are other tables.
    ok(&BASE.replace("table: temperature_averages", "table: other.temperature_readings"));
}

#[test]
fn kafka_output_rules() {
    let with = |kafka: &str| format!("{BASE}  kafka: {kafka}\n");
    ok(&with("{brokers: 'k:9092', topic: out}"));
    problem_at(&with("{brokers: '', topic: out}"), "results.kafka.brokers", "empty");
    problem_at(&with("{brokers: k, topic: 'bad topic'}"), "results.kafka.topic", "not a valid Kafka topic");
    problem_at(
        &with("{brokers: k, topic: t, properties: {acks: '1'}}"),
        "results.kafka.properties.acks",
        "vigil sets acks",
    );
    let p = &problems(&with("{brokers: k}"))[0];
    assert!(p.message.contains("missing required key `topic`"), "{p:?}");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = "\
name: Temps
schedule: {every: 7m, grace: x}
postgres: {url: '', pool_size: 1}
readings: {table: 'a b', group_by: s, value: s, time: t}
results: {table: vigil_batch_windows, silent_groups_for: 5}
";
    let paths: Vec<String> = problems(text).into_iter().map(|p| p.path).collect();
    assert_eq!(
        paths,
        [
            "name",
            "schedule.every",
            "schedule.grace",
            "postgres.url",
            "postgres.pool_size",
            "readings.table",
            "readings.value",
            "results.table",
            "results.silent_groups_for",
        ]
    );
}

#[test]
fn variables_are_interpolated() {
    let text = BASE.replace("postgres://u:secret@db.example:5433/readings", "${DB:-postgres://x@y/z}");
    assert_eq!(ok(&text).postgres.url, "postgres://x@y/z");
    let p = load_any_str("b.yaml", &text, |n| (n == "DB").then(|| "postgres://a@b:1/c".into())).unwrap();
    let PipelineDef::Batch(p) = p else { panic!() };
    assert_eq!(p.postgres.target(), "b:1/c");
}

#[test]
fn secrets_are_masked_in_debug() {
    let text = BASE.replace(
        "  table: temperature_averages\n",
        "  table: temperature_averages\n  kafka: {brokers: 'k:9092', topic: t, \
         properties: {sasl.username: vigil, sasl.password: hunter2-kafka}}\n",
    );
    let shown = format!("{:?}", ok(&text));
    assert!(!shown.contains("secret"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("\"sasl.username\": \"vigil\""), "{shown}");
    assert!(shown.contains("db.example:5433/readings"), "{shown}");
}

#[test]
fn a_password_with_a_raw_at_sign_is_refused_without_repeating_it() {
    let text = BASE.replace("u:secret@", "u:sec@ret@");
    let p = problem_at(&text, "postgres.url", "write it as %40");
    assert!(!p.message.contains("sec"), "{}", p.message);
    assert_eq!(ok(&BASE.replace("u:secret@", "u:sec%40ret@")).postgres.target(), "db.example:5433/readings");
}

#[test]
fn credentials_in_the_brokers_are_refused_without_repeating_them() {
    let text = BASE.replace(
        "  table: temperature_averages\n",
        "  table: temperature_averages\n  kafka: {brokers: 'SASL_SSL://u:hunter2@k:9092', topic: t}\n",
    );
    let p = problem_at(&text, "results.kafka.brokers", "sasl.password");
    assert!(!p.message.contains("hunter2"), "{}", p.message);
}
