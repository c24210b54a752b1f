//! `vigil validate`, run as a user runs it: the built binary on real files.
//!
//! Every pipeline under `pipelines/` must validate (new files are picked up
//! by the directory scan); the fixtures under `tests/fixtures/pipelines/`
//! must be refused with the file, line and paths named; no secret of a file
//! or of the environment is ever printed, by `vigil validate` or by a
//! `vigil run` that librdkafka refuses to start. Needs no Kafka.

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
        ("detectors[1].idle_timeout", "moved to state.idle_timeout"),
        ("detectors[2].name", "duplicate detector name velocity-score"),
        ("detectors[2].history", "not a field of type velocity_score"),
        ("sink.alerts", "must differ from source.topics[0] (both transactions)"),
        ("sink.dead_letters", "must differ from sink.alerts (both transactions)"),
        ("sink.dead_letters", "must differ from source.topics[0] (both transactions)"),
        ("state.idle_timeout", "add a unit: 30s"),
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

// ---------------------------------------------------------------- secrets

/// A streaming pipeline whose broker nothing listens on, with `extra`
/// lines under `source:`.
fn stream_pipeline(extra: &str) -> String {
    format!(
        "name: secrets\nsource:\n  brokers: 127.0.0.1:1\n  topics: [in]\n  group: g\n{extra}\
         format:\n  type: debezium-json\nrows:\n  key: user_id\n  event_time: created_at\n\
         detectors:\n  - type: spend_anomaly\nsink:\n  alerts: out\n  dead_letters: dlq\n"
    )
}

/// Writes `files` (name, text) into a fresh directory; returns its path.
fn write_files(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("temp file");
    }
    dir
}

/// Runs `vigil ARGS...` with `envs`, killed after `limit`; returns its
/// output and how long it took.
fn vigil_within(args: &[&str], envs: &[(&str, &str)], limit: std::time::Duration) -> (Output, std::time::Duration) {
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vigil binary runs");
    while child.try_wait().expect("waiting for vigil").is_none() && started.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    (child.wait_with_output().expect("vigil's output"), started.elapsed())
}

/// What no output may hold: every secret the files and environment give.
const SECRETS: [&str; 4] = ["hunter2-secret", "hunter2-env", "hunter2-url", "hunter2-brokers"];

fn assert_no_secret(out: &Output) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for secret in SECRETS {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
}

#[test]
fn secrets_are_never_printed() {
    let typo = stream_pipeline(
        "  properties:\n    sasl.username: vigil\n    sasl.pasword: hunter2-secret\n    \
         sasl.password: ${VIGIL_TEST_PASSWORD}\n",
    );
    let bad_brokers = stream_pipeline("").replace("127.0.0.1:1", "'SASL_SSL://vigil:hunter2-brokers@k:9092'");
    let bad_url = "name: t\nschedule: {every: 10m}\n\
                   postgres: {url: 'postgres://vigil:hunter2-url@db:notaport/d', pool_size: 1}\n\
                   readings: {table: r, group_by: g, value: v, time: t}\nresults: {table: out}\n";
    let dir = write_files(
        "secrets",
        &[("typo.yaml", typo.as_str()), ("bad-brokers.yaml", bad_brokers.as_str()), ("bad-url.yaml", bad_url)],
    );
    let path = |name: &str| dir.join(name).to_str().expect("a UTF-8 path").to_owned();
    let (typo, bad_brokers, bad_url) = (path("typo.yaml"), path("bad-brokers.yaml"), path("bad-url.yaml"));
    // A hostile value from the environment: a comment, a key, a list.
    let env = [("VIGIL_TEST_PASSWORD", "hunter2-env #x: [y")];
    let limit = std::time::Duration::from_secs(20);

    // The misspelled property is librdkafka's to know: the file validates.
    let (out, _) = vigil_within(&["validate", &typo], &env, limit);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_secret(&out);

    // The files with a bad value are refused, naming the file and the key.
    let (out, _) = vigil_within(&["validate", &bad_url, &bad_brokers], &env, limit);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{bad_url}:3:")) && stderr.contains(": postgres.url: "), "{stderr}");
    assert!(stderr.contains(&format!("{bad_brokers}:3:")) && stderr.contains(": source.brokers: "), "{stderr}");
    assert_no_secret(&out);
    let (out, _) = vigil_within(&["run", "--metrics-addr", "127.0.0.1:0", &bad_url], &env, limit);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(": postgres.url: "), "{}", text(&out.stderr));
    assert_no_secret(&out);

    // `vigil run` creates its first Kafka client before contacting any
    // broker, and librdkafka refuses the property there: it stops at once
    // (a metadata request would wait 15 s), naming the property.
    let (out, took) = vigil_within(&["run", "--metrics-addr", "127.0.0.1:0", &typo], &env, limit);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}:\n{stderr}");
    assert!(
        stderr.contains("secrets: creating a metadata client: librdkafka refused the property sasl.pasword"),
        "{stderr}"
    );
    assert!(stderr.contains("(value of sasl.pasword hidden)"), "{stderr}");
    assert_no_secret(&out);
    let _ = std::fs::remove_dir_all(&dir);
}
