//! The Grafana dashboard `scripts/grafana/vigil-dashboard.json` shows only
//! what vigil exports: every metric its PromQL expressions (panels and
//! template variables) select is one of `src/telemetry/mod.rs`'s `names`, and
//! exists on `/metrics` of a `vigil run` process running a streaming
//! pipeline (records, an alert, a dead letter, a skipped tombstone) and a
//! batch job (2-second windows) side by side against the real stack.
//! Metrics of events a test cannot cause (actor restarts, misalignments,
//! batch failures) exist too: vigil registers them at 0 when a pipeline
//! starts (each owner's series, e.g. the source's and the batch job's).

mod support;

use std::collections::BTreeSet;

use std::time::Duration;

use serde_json::Value;
use support::pg::*;
use support::*;

const DASHBOARD: &str = include_str!("../scripts/grafana/vigil-dashboard.json");
const METRICS_RS: &str = include_str!("../src/telemetry/mod.rs");

// ---------------------------------------------------------------------------
// The extractor: metric names out of PromQL and Grafana template queries.

/// PromQL words that are never metric names: aggregation operators (they
/// may be followed by `by (...)` rather than `(`), set operators and
/// modifiers. Functions are recognised by the `(` that follows them.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names `expr` selects, as written (histogram suffixes kept).
/// Label matchers, strings, ranges, numbers, Grafana variables (`$x`,
/// `${x}`, `[[x]]`), function names and the label names of `by`,
/// `without`, `on`, `ignoring`, `group_left` and `group_right` are not
/// names. A `__name__` matcher is refused: its name could not be checked.
fn promql_metrics(expr: &str) -> Result<BTreeSet<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i)?,
            '{' => {
                let end = skip_group(&chars, i, '{', '}')?;
                let inside: String = chars[i..end].iter().collect();
                if inside.contains("__name__") {
                    return Err(format!("a __name__ matcher cannot be checked: {expr}"));
                }
                i = end;
            }
            '[' => i = skip_group(&chars, i, '[', ']')?,
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '{', '}')?;
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                // 0.99, 1e6, 0x1f, 5m (offset): whatever follows belongs to it.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(&chars, i);
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if let Some(open) = next.filter(|&n| chars[n] == '(') {
                        i = skip_group(&chars, open, '(', ')')?;
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || next.is_some_and(|n| chars[n] == '(') {
                    // An operator or a function call.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

/// The metric names a Grafana query variable's query selects:
/// `label_values(selector, label)` (the selector's), `label_values(label)`,
/// `label_names()` and `metrics(regex)` (none), `query_result(expr)` (the
/// expression's). Anything else is refused.
fn template_metrics(query: &str) -> Result<BTreeSet<String>, String> {
    let query = query.trim();
    let call =
        |name: &str| -> Option<&str> { query.strip_prefix(name)?.trim_start().strip_prefix('(')?.strip_suffix(')') };
    if let Some(args) = call("label_values") {
        // The label is the last argument; the selector, if any, comes before.
        let chars: Vec<char> = args.chars().collect();
        let mut depth = 0i32;
        let mut last_comma = None;
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(&chars, i)?;
                    continue;
                }
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 0 => last_comma = Some(i),
                _ => {}
            }
            i += 1;
        }
        return match last_comma {
            Some(at) => promql_metrics(&chars[..at].iter().collect::<String>()),
            None => Ok(BTreeSet::new()),
        };
    }
    if let Some(expr) = call("query_result") {
        return promql_metrics(expr);
    }
    if call("label_names").is_some() || call("metrics").is_some() {
        return Ok(BTreeSet::new());
    }
    Err(format!("unknown template query {query:?}"))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_non_space(chars: &[char], mut i: usize) -> Option<usize> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    (i < chars.len()).then_some(i)
}

/// The index after the string starting at `start` (its quote).
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unterminated string in {:?}", chars.iter().collect::<String>()))
}

/// The index after the group opened at `start`, strings inside skipped.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unbalanced {open}{close} in {:?}", chars.iter().collect::<String>()))
}

/// A histogram's series carry `_bucket`, `_sum` and `_count`; the metric
/// is the name without them.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Every metric the dashboard uses (histogram suffixes stripped), from the
/// `expr` of every target, nested rows included, and the template
/// variables' queries. Refuses a dashboard without expressions, or a
/// panel without one, so the check cannot pass by reading nothing.
fn dashboard_metrics(json: &str) -> Result<BTreeSet<String>, String> {
    let dashboard: Value = serde_json::from_str(json).map_err(|e| format!("the dashboard is not JSON: {e}"))?;
    let mut names = BTreeSet::new();
    let mut exprs = 0;
    walk_panels(&dashboard, &mut |panel| {
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        let found: Vec<&str> = targets.iter().filter_map(|t| t["expr"].as_str()).collect();
        if found.is_empty() {
            return Err(format!("panel {:?} has no PromQL expression", panel["title"]));
        }
        for expr in found {
            exprs += 1;
            names.extend(promql_metrics(expr)?.iter().map(|n| base_name(n).to_owned()));
        }
        Ok(())
    })?;
    if exprs == 0 {
        return Err("the dashboard has no PromQL expression".into());
    }
    for variable in dashboard["templating"]["list"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
        names.extend(template_metrics(query)?.iter().map(|n| base_name(n).to_owned()));
    }
    Ok(names)
}

/// Calls `f` with every panel that is not a row, rows' own panels included.
fn walk_panels(node: &Value, f: &mut dyn FnMut(&Value) -> Result<(), String>) -> Result<(), String> {
    for panel in node["panels"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if panel["type"] == "row" {
            walk_panels(panel, f)?;
        } else {
            f(panel)?;
        }
    }
    Ok(())
}

/// The metric names `src/telemetry/mod.rs` declares in `mod names`.
fn declared_names(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
        .map(str::to_owned)
        .collect()
}

/// The series names in Prometheus text (labels dropped).
fn series_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metrics of `used` without a series in `exposition`; a histogram
/// counts as present by its `_bucket`, `_sum` or `_count` series.
fn missing(used: &BTreeSet<String>, exposition: &str) -> Vec<String> {
    let series = series_names(exposition);
    used.iter()
        .filter(|name| !["", "_bucket", "_sum", "_count"].iter().any(|s| series.contains(&format!("{name}{s}"))))
        .cloned()
        .collect()
}

/// The dashboard with one more panel using `metric`: what a typo or a
/// renamed metric would look like.
fn dashboard_with(metric: &str) -> String {
    let mut dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panel = serde_json::json!({
        "type": "timeseries",
        "title": "bogus",
        "targets": [{"refId": "A", "expr": format!("sum by (pipeline) (rate({metric}{{pipeline=~\"$pipeline\"}}[5m]))")}],
    });
    dashboard["panels"].as_array_mut().expect("panels").push(panel);
    dashboard.to_string()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[test]
fn the_extractor_finds_metric_names_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        ("vigil_records_total", &["vigil_records_total"]),
        ("up{job=\"vigil\"}", &["up"]),
        (
            "sum by (pipeline, topic) (rate(vigil_records_total{pipeline=~\"$pipeline\", topic!=\"x\"}[$__rate_interval]))",
            &["vigil_records_total"],
        ),
        (
            "sum(rate(a_total[5m])) by (pipeline) / on (pipeline) group_left(op) sum without (le) (b_total offset 5m)",
            &["a_total", "b_total"],
        ),
        (
            "histogram_quantile(0.99, sum by (pipeline, le) (rate(vigil_record_batch_duration_seconds_bucket{pipeline=~\"${pipeline}\"}[1m:10s])))",
            &["vigil_record_batch_duration_seconds_bucket"],
        ),
        ("time() - max by (pipeline) (x_seconds) * 1e3 > bool 0.5", &["x_seconds"]),
        ("label_replace(a, \"dst\", \"$1 {b}\", \"src\", \"(.*)\") or vector(0) unless c @ start()", &["a", "c"]),
        ("count_values(\"v\", g) and topk(3, h) # a comment naming not_a_metric", &["g", "h"]),
        ("job:rate5m:sum + [[var]] * $__range_s", &["job:rate5m:sum"]),
        ("sum by(pipeline)(vigil_tracked_users)", &["vigil_tracked_users"]),
        ("Sum By (pipeline) (rate(x[1m]))", &["x"]),
    ];
    for (expr, want) in cases {
        assert_eq!(promql_metrics(expr), Ok(set(want)), "{expr}");
    }
    assert!(promql_metrics("{__name__=~\"vigil_.*\"}").is_err(), "a __name__ matcher is refused");
    assert!(promql_metrics("rate(x{a=\"b}[5m])").is_err(), "an unterminated string is refused");
    assert!(promql_metrics("sum(rate(x[5m])").is_ok(), "unbalanced parentheses are Prometheus' business");
}

#[test]
fn template_queries_give_their_selector_not_their_label() {
    assert_eq!(template_metrics("label_values(vigil_records_total, pipeline)"), Ok(set(&["vigil_records_total"])));
    assert_eq!(template_metrics("label_values(a_total{x=\"1,2\"}, op)"), Ok(set(&["a_total"])));
    assert_eq!(template_metrics("label_values(pipeline)"), Ok(set(&[])));
    assert_eq!(template_metrics("query_result(topk(5, b_total))"), Ok(set(&["b_total"])));
    assert_eq!(template_metrics("metrics(vigil_.*)"), Ok(set(&[])));
    assert!(template_metrics("something_else").is_err());
}

#[test]
fn histogram_suffixes_are_stripped() {
    assert_eq!(base_name("vigil_record_batch_duration_seconds_bucket"), "vigil_record_batch_duration_seconds");
    assert_eq!(base_name("vigil_batch_run_duration_seconds_sum"), "vigil_batch_run_duration_seconds");
    assert_eq!(base_name("vigil_batch_run_duration_seconds_count"), "vigil_batch_run_duration_seconds");
    assert_eq!(base_name("vigil_records_total"), "vigil_records_total");
}

#[test]
fn the_dashboard_uses_only_declared_metric_names() {
    let declared = declared_names(METRICS_RS);
    assert!(
        declared.contains("vigil_records_total") && declared.len() >= 20,
        "parsed src/telemetry/mod.rs: {declared:?}"
    );
    let used = dashboard_metrics(DASHBOARD).expect("the dashboard's queries are understood");
    let undeclared: Vec<&String> = used.difference(&declared).collect();
    assert!(undeclared.is_empty(), "not in src/telemetry/mod.rs names: {undeclared:?}");
    // The template variables select pipelines from metrics the dashboard uses.
    assert!(used.contains("vigil_records_total"), "{used:?}");
}

/// The check can fail: a panel with a metric vigil does not have is
/// reported, by both the declared-names and the /metrics checks.
#[test]
fn a_bogus_metric_on_the_dashboard_is_caught() {
    let used = dashboard_metrics(DASHBOARD).expect("the dashboard's queries are understood");
    // An exposition with every metric the dashboard uses, histograms as
    // Prometheus writes them.
    let exposition: String = used
        .iter()
        .map(|n| {
            if n.ends_with("_seconds") && n.contains("duration") {
                format!("{n}_bucket{{pipeline=\"p\",le=\"+Inf\"}} 1\n{n}_sum{{pipeline=\"p\"}} 1\n{n}_count{{pipeline=\"p\"}} 1\n")
            } else {
                format!("# TYPE {n} counter\n{n}{{pipeline=\"p\"}} 0\n")
            }
        })
        .collect();
    assert_eq!(missing(&used, &exposition), Vec::<String>::new());

    let bogus = dashboard_metrics(&dashboard_with("vigil_recods_total")).expect("understood");
    assert_eq!(missing(&bogus, &exposition), vec!["vigil_recods_total".to_owned()]);
    assert!(!declared_names(METRICS_RS).contains("vigil_recods_total"));
    // A histogram counts by its series, not by a bare name.
    let hist = dashboard_metrics(&dashboard_with("vigil_nope_seconds_bucket")).expect("understood");
    assert_eq!(missing(&hist, &exposition), vec!["vigil_nope_seconds".to_owned()]);
    // A panel without a query would make the check vacuous.
    let mut empty: Value = serde_json::from_str(DASHBOARD).expect("JSON");
    empty["panels"].as_array_mut().expect("panels").push(serde_json::json!({"type": "stat", "title": "x"}));
    assert!(dashboard_metrics(&empty.to_string()).is_err());
}

// ---------------------------------------------------------------------------
// Against the real stack.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_uses_exists_on_metrics() {
    let used = dashboard_metrics(DASHBOARD).expect("the dashboard's queries are understood");

    // The stream: a topic of its own, a user with three ordinary amounts and
    // one far above them (a spend anomaly), a record that is not JSON (a
    // decode error and a dead letter) and a tombstone (skipped).
    let base = unique_base();
    let stream_name = format!("dash-{base}");
    let topic = format!("vigil-test-dash-{base}");
    let (alerts, dlq) = (format!("{topic}-alerts"), format!("{topic}-dlq"));
    for (t, p) in [(&topic, 2), (&alerts, 1), (&dlq, 1)] {
        create_topic(t, p).await;
    }
    let producer = producer();
    for (id, cents) in [(1, 10_000), (2, 10_000), (3, 10_000), (4, 1_000_000)] {
        let (key, value) = transaction_envelope(base, base + id, cents);
        send(&producer, &topic, None, Some(&key), Some(&value)).await;
    }
    let (key, _) = transaction_envelope(base, base + 5, 0);
    send(&producer, &topic, None, Some(&key), Some(b"not json {")).await;
    send(&producer, &topic, None, Some(&key), None).await;
    let stream = pipeline_file(&stream_name, &topic, &stream_name, &alerts, &dlq);

    // The batch job: readings of its own around now, 2-second windows.
    let pg = shared().await;
    let batch_name = unique("dash-batch").replace('_', "-");
    let (readings_table, results_table) = (unique("dash_readings"), unique("dash_averages"));
    create_readings(&pg, &readings_table, false).await;
    let t0 = now_micros();
    insert(&pg, &readings_table, &readings_every(&["s-1", "s-2"], t0 - 10 * MICROS, t0 + 120 * MICROS, 500_000)).await;
    let batch = batch_file(
        &batch_name,
        &format!(
            "name: {batch_name}\n\
             schedule: {{every: 2s, grace: 300ms, catch_up_limit: 6s, recompute_last: 1}}\n\
             postgres: {{url: '{url}', connect_timeout: 2s}}\n\
             readings: {{table: {readings_table}, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
             results: {{table: {results_table}, silent_groups_for: 0s}}\n",
            url = database_url()
        ),
    );

    let mut vigil = Vigil::start_files(&[&stream, &batch], stream.with_extension("dashboard.log"));
    // Processed: every record read and acknowledged, a window computed.
    let processed = eventually(Duration::from_secs(60), || {
        let text = vigil.metrics();
        let m = |name| metric_sum(&text, name);
        m("vigil_rows_total") >= 4.0
            && m("vigil_dead_letters_total") >= 1.0
            && m("vigil_skipped_records_total") >= 1.0
            && m("vigil_alerts_total") >= 1.0
            && m("vigil_batch_windows_total") >= 1.0
    });
    // Then every metric (the lag comes with librdkafka's statistics, every 5 s).
    let mut text = String::new();
    let complete = eventually(Duration::from_secs(30), || {
        text = vigil.metrics();
        missing(&used, &text).is_empty()
    });
    let absent = missing(&used, &text);
    // The check is not vacuous against this very exposition.
    let bogus = missing(&dashboard_metrics(&dashboard_with("vigil_recods_total")).expect("understood"), &text);
    let status = vigil.stop();
    let log = vigil.log();

    delete_topics(&[&topic, &alerts, &dlq]).await;
    clean_up(&pg, &batch_name, &[&readings_table, &results_table]).await;
    for dir in [stream.parent(), batch.parent()].into_iter().flatten() {
        let _ = std::fs::remove_dir_all(dir);
    }

    assert!(processed, "vigil processed the records and a window:\n{text}\n--- log:\n{log}");
    assert!(
        complete && absent.is_empty(),
        "dashboard metrics missing from /metrics: {absent:?}\n{text}\n--- log:\n{log}"
    );
    assert_eq!(bogus, vec!["vigil_recods_total".to_owned()]);
    // Counted as they happened, not only registered.
    let line = |name: &str, reason: &str| format!("{name}{{pipeline=\"{stream_name}\",reason=\"{reason}\"}} 1");
    let lines: BTreeSet<&str> = text.lines().collect();
    for expected in [
        line("vigil_decode_errors_total", "bad_json"),
        line("vigil_dead_letters_total", "bad_json"),
        line("vigil_skipped_records_total", "tombstone"),
    ] {
        assert!(lines.contains(expected.as_str()), "{expected} in:\n{text}");
    }
    assert!(metric_sum(&text, "vigil_alerts_total") >= 1.0, "{text}");
    // A window of this run (caught up within 6 s of the start), not 1970.
    let completed = metric_sum(&text, "vigil_batch_last_completed_window_seconds") * 1e6;
    assert!(completed >= (t0 - 10 * MICROS) as f64, "last completed window {completed}:\n{text}");
    // Registered at 0 at start, never counted here.
    for zero in ["vigil_actor_restarts_total", "vigil_key_misalignments_total", "vigil_batch_failures_total"] {
        assert_eq!(metric_sum(&text, zero), 0.0, "{zero}:\n{text}");
    }
    assert!(status.is_some_and(|s| s.success()), "vigil stopped cleanly ({status:?}):\n{log}");
}
