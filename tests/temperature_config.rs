//! Batch pipeline files through the built binary: `vigil validate` names
//! every problem of a broken file with its line, column and path, and the
//! likely key for a misspelled one; `vigil run` refuses to start on them.
//! (`tests/validate.rs` validates every file in `pipelines/`, the
//! temperature job's included.) Needs no service.

use std::path::Path;
use std::process::{Command, Output};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env_remove("VIGIL_TEST_UNSET_DB")
        .output()
        .expect("the vigil binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_broken_batch_file_lists_every_problem_with_its_place() {
    let file = "tests/fixtures/pipelines/temperature-broken.yaml";
    let out = vigil(&["validate", file]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let expected = [
        (4, "name", "must match"),
        (6, "schedule.every", "must divide a day (24h) evenly"),
        (7, "schedule.grace", "add a unit: 30s"),
        (9, "schedule.recompute_last", "must be ≤ 1000 (got 5000)"),
        (11, "postgres.url", "not a PostgreSQL connection URL"),
        (12, "postgres.pool_size", "must be from 2 to 64 (got 1)"),
        (13, "postgres.statement_timeout", "must be > 0 (got 0s)"),
        (15, "readings.table", "not a plain SQL name"),
        (17, "readings.value", "must differ from readings.group_by (both sensor_id)"),
        (21, "results.table", "vigil_batch_windows is where vigil remembers completed windows"),
        (23, "results.kafka.brokers", "must not be empty"),
        (24, "results.kafka.topic", "not a valid Kafka topic name"),
        (26, "results.kafka.properties.acks", "vigil sets acks itself"),
    ];
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(file)).collect();
    for (line, path, message) in expected {
        let at = format!("{file}:{line}:");
        assert!(
            lines.iter().any(|l| l.starts_with(&at) && l.contains(&format!(": {path}: ")) && l.contains(message)),
            "no problem at line {line}, {path}, saying {message:?}, in:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    assert!(!stderr.contains("secret"), "the URL's password is never printed:\n{stderr}");
}

#[test]
fn a_misspelled_key_is_named_with_line_column_and_a_suggestion() {
    let file = "tests/fixtures/pipelines/temperature-misspelled.yaml";
    let out = vigil(&["validate", file]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("{file}:7:3: unknown key `grase` (did you mean `grace`?)")), "{stderr}");
}

#[test]
fn run_refuses_to_start_on_a_broken_batch_file() {
    let out = vigil(&[
        "run",
        "pipelines/temperature-average.yaml",
        "tests/fixtures/pipelines/temperature-broken.yaml",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("temperature-broken.yaml:6:10: schedule.every"), "{stderr}");
    assert!(stderr.contains("not started"), "{stderr}");
    assert!(!stderr.contains("batch job scheduled"), "{stderr}");
}
