//! A small load test in CI: 200,000 schema-enabled envelopes (and 50,000
//! without a schema block) with planted fraud through the real broker and
//! the vigil binary; every due alert
//! must arrive, once, and nothing else. Speed is not asserted here (the
//! report gives it); correctness is, and that the report holds vigil's lag
//! and throughput over time and the chart is drawn.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `loadtest run ARGS [--plot PLOT] --report FILE`; the report, once
/// it succeeded.
fn run(args: &[&str], plot: Option<&Path>, report: &Path) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command.arg("run").args(args).arg("--report").arg(report);
    if let Some(plot) = plot {
        command.arg("--plot").arg(plot);
    }
    let out = command.output().expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest run {args:?} failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let text = std::fs::read_to_string(report).expect("report written");
    let _ = std::fs::remove_file(report);
    serde_json::from_str(&text).expect("report is JSON")
}

#[test]
fn two_hundred_thousand_records_verify_with_no_missing_unexpected_or_duplicate_alert() {
    let report = std::env::temp_dir().join(format!("vigil-loadtest-ci-{}.json", std::process::id()));
    let chart = report.with_extension("png");
    let r = run(&["--records", "200000", "--fraud-rate", "0.002"], Some(&chart), &report);
    assert_eq!(r["records"], 200_000);
    let alerts = &r["alerts"];
    assert!(alerts["due"].as_u64().is_some_and(|d| d >= 100), "enough planted fraud: {alerts}");
    assert_eq!(alerts["missing"], 0);
    assert_eq!(alerts["unexpected"], 0);
    assert_eq!(alerts["duplicates"], 0);
    assert_eq!(alerts["received"], alerts["due"]);
    let lag = r["lag_over_time"].as_array().expect("lag over time");
    assert_eq!(lag.last().map(|l| &l[1]), Some(&0.into()), "nothing behind at the end: {lag:?}");
    assert!(r["throughput_over_time"].as_array().is_some_and(|t| !t.is_empty()), "{}", r["throughput_over_time"]);
    // The baseline reads the topic before vigil and again after it; vigil
    // is held to the faster read.
    assert_eq!((&r["baseline"]["records"], &r["baseline_after"]["records"]), (&200_000.into(), &200_000.into()));
    let rate = |b: &serde_json::Value| b["records_per_second"].as_f64().expect("a baseline rate");
    // serde_json reads a float back to within an ulp, not always exactly.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    let ceiling = r["baseline_ceiling_per_second"].as_f64().expect("the ceiling");
    let faster = rate(&r["baseline"]).max(rate(&r["baseline_after"]));
    assert!(close(ceiling, faster), "ceiling {ceiling}, faster read {faster}");
    let sustained = r["vigil"]["records_per_second_sustained"].as_f64().expect("vigil's rate");
    let ratio = r["ratio_to_baseline"].as_f64().expect("the ratio");
    assert!(close(ratio, sustained / ceiling), "ratio {ratio}, sustained {sustained}, ceiling {ceiling}");
    // State is kept by default: the changelog's counts are reported.
    let state = &r["vigil"]["state"];
    assert!(state["changelog_records"].as_f64().is_some_and(|n| n > 0.0), "{state}");
    assert!(state["changelog_bytes_per_user_record"].as_f64().is_some_and(|b| b > 10.0), "{state}");
    let png = std::fs::read(&chart).expect("chart written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a PNG chart of {} bytes", png.len());
    let _ = std::fs::remove_file(&chart);
}

/// Envelopes without a schema block, as JsonConverter writes them with
/// `schemas.enable=false`: the same alerts, none missing.
#[test]
fn schemaless_envelopes_verify_too() {
    let report = std::env::temp_dir().join(format!("vigil-loadtest-ci-schemaless-{}.json", std::process::id()));
    let r = run(&["--records", "50000", "--fraud-rate", "0.004", "--schemaless"], None, &report);
    assert_eq!(r["schemaless"], true);
    let alerts = &r["alerts"];
    assert!(alerts["due"].as_u64().is_some_and(|d| d >= 50), "enough planted fraud: {alerts}");
    assert_eq!((&alerts["missing"], &alerts["unexpected"], &alerts["duplicates"]), (&0.into(), &0.into(), &0.into()));
}

/// Two processes, 300,000 records at 20,000/s, disrupted by a kill, a join
/// and a leave.
const CHAOS: [&str; 10] =
    ["--records", "300000", "--rate", "20000", "--instances", "2", "--chaos", "kill,join,leave", "--disruptions", "3"];

/// Chaos: two processes of one group, a kill (and restart), a join and a
/// leave at seeded moments while records come at a steady rate. Every due
/// alert arrives and nothing else; a repeat (at-least-once, after the
/// kill) carries the alert's own id.
#[test]
fn a_group_disrupted_mid_run_by_a_kill_a_join_and_a_leave_misses_no_alert() {
    let report = std::env::temp_dir().join(format!("vigil-loadtest-ci-chaos-{}.json", std::process::id()));
    let r = run(&CHAOS, None, &report);
    let processes = &r["vigil"]["processes"];
    let events = processes["chaos"]["events"].as_array().expect("the disruptions");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 3, "{events:?}");
    for kind in ["kill", "join", "leave"] {
        assert!(kinds.contains(&kind), "a {kind} among {kinds:?}");
    }
    // Two at the start, one in place of the killed one, one joining.
    assert_eq!(processes["processes_started"], 4, "{processes}");
    let alerts = &r["alerts"];
    assert!(alerts["due"].as_u64().is_some_and(|d| d >= 500), "enough planted fraud: {alerts}");
    assert_eq!((&alerts["missing"], &alerts["unexpected"]), (&0.into(), &0.into()), "{alerts}");
    assert_eq!(alerts["duplicates_with_another_id"], 0, "{alerts}");
    let lag = r["lag_over_time"].as_array().expect("lag over time");
    assert_eq!(lag.last().map(|l| &l[1]), Some(&0.into()), "nothing behind at the end: {lag:?}");
}

/// The same disruptions with `guarantee: exactly_once`: a `read_committed`
/// reader sees each due alert once, not even a repeat with the same id.
#[test]
fn an_exactly_once_group_disrupted_mid_run_sends_each_alert_once() {
    let report = std::env::temp_dir().join(format!("vigil-loadtest-ci-eos-{}.json", std::process::id()));
    let r = run(&[&CHAOS[..], &["--exactly-once"]].concat(), None, &report);
    assert_eq!(r["vigil"]["guarantee"], "exactly_once", "{}", r["vigil"]);
    let events = r["vigil"]["processes"]["chaos"]["events"].as_array().expect("the disruptions");
    assert_eq!(events.len(), 3, "{events:?}");
    let alerts = &r["alerts"];
    assert!(alerts["due"].as_u64().is_some_and(|d| d >= 500), "enough planted fraud: {alerts}");
    let counts = (&alerts["missing"], &alerts["unexpected"], &alerts["duplicates"]);
    assert_eq!(counts, (&0.into(), &0.into(), &0.into()), "{alerts}");
}
