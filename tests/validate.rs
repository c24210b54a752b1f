//! `vigil validate`, run as a user runs it: the built binary on real files.
//!
//! Every pipeline under `pipelines/` must validate (new files are picked up
//! by the directory scan); the fixtures under `tests/fixtures/pipelines/`
//! must be refused with the file, line and paths named. Needs no Kafka.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/pipelines").join(name)
}

/// Runs `vigil ARGS...` from the crate root with the given variables unset.
fn vigil(args: &[&str], unset: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(args).current_dir(root());
    for name in unset {
        command.env_remove(name);
    }
    command.output().expect("the vigil binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_pipeline_file_validates() {
    let dir = root().join("pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("pipelines/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no pipeline files in {}", dir.display());

    for file in &files {
        let relative = file.strip_prefix(root()).expect("under the crate root");
        let relative = relative.to_str().expect("a UTF-8 path");
        let out = vigil(&["validate", relative], &[]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{relative} was refused:\n{stderr}");
        assert!(stdout.starts_with(&format!("ok   {relative} (pipeline ")), "{relative}: stdout {stdout:?}");
    }
    eprintln!("validated {} pipeline file(s)", files.len());
}

#[test]
fn misspelled_key_is_refused_with_file_line_and_key() {
    let file = "tests/fixtures/pipelines/misspelled-key.yaml";
    let source = std::fs::read_to_string(root().join(file)).expect("fixture");
    let line = source
        .lines()
        .position(|l| l.trim_start().starts_with("min_histroy:"))
        .expect("the fixture has the misspelled key")
        + 1;

    let out = vigil(&["validate", file], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(stderr.starts_with(&format!("{file}:{line}:5: unknown key `min_histroy`")), "{stderr}");
    assert!(stderr.contains("did you mean `min_history`?"), "{stderr}");
}

#[test]
fn broken_file_lists_every_problem() {
    let file = "tests/fixtures/pipelines/broken.yaml";
    let out = vigil(&["validate", file], &["VIGIL_TEST_BROKERS"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    // Each path, with a piece of its message (one path can have several).
    let expected = [
        ("name", "must match"),
        ("source.brokers", "must not be empty"),
        ("source.topics[1]", "duplicate topic transactions"),
        ("source.properties[\"enable.auto.commit\"]", "vigil sets enable.auto.commit"),
        ("format.type", "JsonConverter"),
        ("format.decimal_scales", "declare a scale for column amount"),
        ("rows.ops[1]", "r is in both rows.ops"),
        ("detectors[0].min_history", "must be ≤ history (got 60 > 50)"),
        ("detectors[0].factor", "must be > 0 (got 0)"),
        ("detectors[1].velocity.window", "must be > 0 (got 0s)"),
        ("detectors[1].alert_above", "no row can score above 40"),
        ("detectors[1].idle_timeout", "add a unit: 30s"),
        ("detectors[2].name", "duplicate detector name velocity-score"),
        ("detectors[2].history", "not a field of type velocity_score"),
        ("sink.alerts", "must differ from source.topics[0] (both transactions)"),
        ("sink.dead_letters", "must differ from sink.alerts (both transactions)"),
        ("sink.dead_letters", "must differ from source.topics[0] (both transactions)"),
    ];
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&format!("{file}:"))).collect();
    for (path, message) in expected {
        let wanted = format!(": {path}: ");
        assert!(
            problems.iter().any(|l| l.contains(&wanted) && l.contains(message)),
            "no problem at {path} saying {message:?} in:\n{stderr}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{stderr}");
    // Each problem names its line: file:LINE:COL: path: message.
    for problem in &problems {
        let rest = &problem[file.len() + 1..];
        let mut parts = rest.splitn(3, ':');
        let line: u32 = parts.next().unwrap_or("").parse().unwrap_or(0);
        let column: u32 = parts.next().unwrap_or("").parse().unwrap_or(0);
        assert!(line > 0 && column > 0, "no line:col in {problem:?}");
    }
    assert!(
        stderr.contains(&format!("{file}:21:18: detectors[0].min_history: must be ≤ history (got 60 > 50)")),
        "{stderr}"
    );
}

#[test]
fn mixed_files_report_each_and_fail() {
    let good = "pipelines/fraud-detection.yaml";
    let bad = "tests/fixtures/pipelines/misspelled-key.yaml";
    let out = vigil(&["validate", good, bad], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), format!("ok   {good} (pipeline fraud-detection)\n"));
    assert!(text(&out.stderr).contains(bad));
}

#[test]
fn unset_variable_is_refused_naming_it() {
    let file = fixture("misspelled-key.yaml");
    let source = std::fs::read_to_string(&file).expect("fixture");
    let dir = std::env::temp_dir().join(format!("vigil-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("unset.yaml");
    let edited =
        source.replace("min_histroy", "min_history").replace("${KAFKA_BROKERS:-127.0.0.1:9092}", "${VIGIL_TEST_UNSET}");
    let (line, column) = edited
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("${VIGIL_TEST_UNSET}").map(|c| (i + 1, c + 1)))
        .expect("the edited file uses the variable");
    std::fs::write(&path, edited).expect("temp file");
    let path_text = path.to_str().expect("a UTF-8 path");

    let out = vigil(&["validate", path_text], &["VIGIL_TEST_UNSET"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("{path_text}:{line}:{column}: ")), "{stderr}");
    assert!(stderr.contains("VIGIL_TEST_UNSET is not set"), "{stderr}");

    // Set, the same file is fine.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["validate", path_text])
        .env("VIGIL_TEST_UNSET", "k1:9092")
        .output()
        .expect("the vigil binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_and_usage() {
    let out = vigil(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), format!("vigil {}\n", env!("CARGO_PKG_VERSION")));
    // No file: a usage error, not a pass.
    let out = vigil(&["validate"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
