//! Tests of loading whole streaming pipeline files: defaults, every
//! semantic rule, locations. The pieces (interpolation, durations,
//! decimals, errors) are tested beside their code.

use std::path::Path;
use std::str::FromStr;

use super::*;
use crate::config::{closest, edit_distance, load, load_str, ConfigError, Problem};

/// A valid pipeline with only the required keys; tests edit it.
const BASE: &str = "\
name: test
source:
  brokers: k:9092
  topics: [in]
  group: g
format:
  type: debezium-json
rows:
  key: user_id
  event_time: created_at
detectors:
  - type: spend_anomaly
sink:
  alerts: out
  dead_letters: dlq
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_text(text: &str) -> Result<Pipeline, ConfigError> {
    load_str("t.yaml", text, no_env)
}

fn ok(text: &str) -> Pipeline {
    match load_text(text) {
        Ok(p) => p,
        Err(e) => panic!("refused:\n{e}\n--- file:\n{text}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match load_text(text) {
        Ok(p) => panic!("accepted: {p:#?}\n--- file:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The one problem at `path`; fails if there is none or several.
fn problem_at(text: &str, path: &str) -> Problem {
    let all = problems(text);
    let found: Vec<&Problem> = all.iter().filter(|p| p.path == path).collect();
    assert_eq!(found.len(), 1, "problems at {path}: {all:#?}");
    found[0].clone()
}

/// BASE with its detector list replaced.
fn with_detectors(detectors: &str) -> String {
    BASE.replace("  - type: spend_anomaly\n", detectors)
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_fill_everything_optional() {
    let p = ok(BASE);
    assert_eq!(p.name, "test");
    assert_eq!(p.file, PathBuf::from("t.yaml"));
    assert_eq!(p.source.start_from, StartFrom::Earliest);
    assert!(p.source.properties.is_empty());
    assert_eq!(p.format, FormatConfig::default());
    assert_eq!(p.format.schemas, SchemaMode::Auto);
    assert_eq!(p.format.decimals, DecimalHandling::Precise);
    assert_eq!(p.rows.primary_key, ["id"]);
    assert_eq!(p.rows.ops, [Op::Create]);
    assert_eq!(p.rows.warm_ops, [Op::Read]);
    assert_eq!(p.rows.max_key_bytes, 256);
    assert_eq!(p.rows.max_future, Duration::from_secs(3600));
    assert_eq!(
        p.detectors,
        [DetectorConfig {
            name: "spend-anomaly".into(),
            kind: DetectorKind::SpendAnomaly(SpendAnomalyConfig::default()),
        }]
    );
}

#[test]
fn defaults_are_the_reference_agents() {
    let s = SpendAnomalyConfig::default();
    assert_eq!((s.amount.as_str(), s.history, s.min_history), ("amount", 50, 3));
    assert_eq!((s.factor, s.min_amount), (dec("3.0"), dec("500")));
    let v = VelocityScoreConfig::default();
    assert_eq!(v.velocity, Some(VelocityRule { window: Duration::from_secs(60), max_count: 5, points: 40 }));
    assert_eq!(v.high_amount, Some(HighAmountRule { threshold: dec("4000"), points: 50 }));
    assert_eq!((v.alert_above, v.allowed_lateness), (70, Duration::ZERO));
}

#[test]
fn reference_pipeline_loads_as_the_reference_agents() {
    let text = include_str!("../../../pipelines/fraud-detection.yaml");
    let p = load_str("fraud-detection.yaml", text, no_env).unwrap();
    assert_eq!(p.name, "fraud-detection");
    assert_eq!(p.source.brokers, "127.0.0.1:9092");
    assert_eq!(p.source.topics, ["dbserver1.public.transactions"]);
    assert_eq!(p.rows.event_time, EventTime::Column("created_at".into()));
    assert_eq!(p.detectors.len(), 2);
    assert_eq!(p.detectors[0].name, "spend-anomaly");
    assert_eq!(p.detectors[0].kind, DetectorKind::SpendAnomaly(SpendAnomalyConfig::default()));
    assert_eq!(p.detectors[1].name, "velocity-score");
    assert_eq!(p.detectors[1].kind, DetectorKind::VelocityScore(VelocityScoreConfig::default()));
    assert_eq!(p.columns(), ["user_id", "created_at", "id", "amount"]);

    let env = |name: &str| (name == "KAFKA_BROKERS").then(|| "k1:9092,k2:9092".to_owned());
    let p = load_str("fraud-detection.yaml", text, env).unwrap();
    assert_eq!(p.source.brokers, "k1:9092,k2:9092");
}

#[test]
fn velocity_score_with_no_section_gets_both_rules() {
    let p = ok(&with_detectors("  - type: velocity_score\n"));
    assert_eq!(p.detectors[0].kind, DetectorKind::VelocityScore(VelocityScoreConfig::default()));
    assert_eq!(p.detectors[0].name, "velocity-score");
}

#[test]
fn velocity_score_with_one_section_gets_only_that_rule() {
    let p = ok(&with_detectors(
        "  - type: velocity_score\n    high_amount: {threshold: 4000, points: 50}\n    alert_above: 40\n",
    ));
    let DetectorKind::VelocityScore(v) = &p.detectors[0].kind else { panic!("{p:?}") };
    assert_eq!(v.velocity, None);
    assert_eq!(v.high_amount, Some(HighAmountRule::default()));
    assert_eq!(v.alert_above, 40);

    // Fields inside a given section default one by one.
    let p = ok(&with_detectors("  - type: velocity_score\n    velocity: {window: 30s}\n    alert_above: 39\n"));
    let DetectorKind::VelocityScore(v) = &p.detectors[0].kind else { panic!("{p:?}") };
    assert_eq!(v.velocity, Some(VelocityRule { window: Duration::from_secs(30), max_count: 5, points: 40 }));
    assert_eq!(v.high_amount, None);

    let p = ok(&with_detectors("  - type: velocity_score\n    high_amount: {points: 80}\n"));
    let DetectorKind::VelocityScore(v) = &p.detectors[0].kind else { panic!("{p:?}") };
    assert_eq!(v.high_amount, Some(HighAmountRule { threshold: dec("4000"), points: 80 }));
}

#[test]
fn every_field_is_read() {
    let p = ok("\
name: every.field_1
source:
  brokers: a:1,b:2
  topics: [t1, t2]
  group: g
  start_from: latest
  properties:
    security.protocol: SASL_SSL
    fetch.min.bytes: 1024
    check.crcs: true
    socket.timeout.ms: '60000'
format:
  type: debezium-json
  schemas: disabled
  decimals: precise
  decimal_scales: {amount: 2, total: 4}
rows:
  key: account
  event_time: source.ts_ms
  primary_key: [tenant, id]
  ops: [c, u]
  warm_ops: [r, d]
detectors:
  - type: spend_anomaly
    name: big-spend
    amount: total
    history: 10
    min_history: 10
    factor: 2.5
    min_amount: 0
  - type: velocity_score
    name: fast
    velocity: {window: 500ms, max_count: 2, points: 10}
    high_amount: {threshold: 99.99, points: 20}
    alert_above: 25
    allowed_lateness: 5m
sink:
  alerts: a
  dead_letters: d
state:
  enabled: false
  changelog: '{topic}.state'
  idle_timeout: 1d
");
    assert_eq!(p.source.start_from, StartFrom::Latest);
    let props: Vec<(&str, &str)> = p.source.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        props,
        [
            ("check.crcs", "true"),
            ("fetch.min.bytes", "1024"),
            ("security.protocol", "SASL_SSL"),
            ("socket.timeout.ms", "60000"),
        ]
    );
    assert_eq!(p.format.schemas, SchemaMode::Disabled);
    assert_eq!(p.format.decimal_scales, BTreeMap::from([("amount".into(), 2), ("total".into(), 4)]));
    assert_eq!(p.rows.event_time, EventTime::SourceTsMs);
    assert_eq!(p.rows.ops, [Op::Create, Op::Update]);
    assert_eq!(p.rows.warm_ops, [Op::Read, Op::Delete]);
    assert_eq!(
        p.detectors[0],
        DetectorConfig {
            name: "big-spend".into(),
            kind: DetectorKind::SpendAnomaly(SpendAnomalyConfig {
                amount: "total".into(),
                history: 10,
                min_history: 10,
                factor: dec("2.5"),
                min_amount: dec("0"),
            }),
        }
    );
    assert_eq!(
        p.detectors[1],
        DetectorConfig {
            name: "fast".into(),
            kind: DetectorKind::VelocityScore(VelocityScoreConfig {
                amount: "amount".into(),
                velocity: Some(VelocityRule { window: Duration::from_millis(500), max_count: 2, points: 10 }),
                high_amount: Some(HighAmountRule { threshold: dec("99.99"), points: 20 }),
                alert_above: 25,
                allowed_lateness: Duration::from_secs(300),
            }),
        }
    );
    assert_eq!(
        p.state,
        StateConfig { enabled: false, changelog: "{topic}.state".into(), idle_timeout: Duration::from_secs(86_400) }
    );
    assert_eq!((p.state.changelog_topic("t1"), p.state.changelog_topic("t2")), ("t1.state".into(), "t2.state".into()));
    // event_time is source.ts_ms, so no column for it.
    assert_eq!(p.columns(), ["account", "tenant", "id", "total", "amount"]);
}

#[test]
fn columns_are_deduplicated_in_order() {
    let p = ok(&BASE.replace("key: user_id", "key: id").replace(
        "  - type: spend_anomaly\n",
        "  - type: spend_anomaly\n    amount: created_at\n  - type: velocity_score\n",
    ));
    assert_eq!(p.columns(), ["id", "created_at", "amount"]);
}

// ---------------------------------------------------------------- decimals

#[test]
fn decimals_are_exact() {
    let p = ok(&with_detectors(
        "  - type: spend_anomaly\n    factor: 2.1\n    min_amount: 0.1\n  - type: velocity_score\n    high_amount: {threshold: \"2.1\", points: 80}\n",
    ));
    let DetectorKind::SpendAnomaly(s) = &p.detectors[0].kind else { panic!() };
    assert_eq!(s.factor, Decimal::new(21, 1));
    assert_eq!(s.min_amount, Decimal::new(1, 1));
    let DetectorKind::VelocityScore(v) = &p.detectors[1].kind else { panic!() };
    assert_eq!(v.high_amount.as_ref().unwrap().threshold, Decimal::new(21, 1));

    // 3.0 and 500 exactly, scale kept; more digits than an f64 holds.
    let p =
        ok(&with_detectors("  - type: spend_anomaly\n    factor: 3.0\n    min_amount: 500.000000000000000000001\n"));
    let DetectorKind::SpendAnomaly(s) = &p.detectors[0].kind else { panic!() };
    assert_eq!(s.factor.to_string(), "3.0");
    assert_eq!(s.min_amount.to_string(), "500.000000000000000000001");
}

#[test]
fn bad_decimals_are_refused() {
    let text = with_detectors("  - type: spend_anomaly\n    factor: lots\n");
    let p = problem_at(&text, "detectors[0].factor");
    assert!(p.message.contains("expected a decimal"), "{p:?}");
    assert_eq!((p.line, p.column), (Some(13), Some(13)));
}

// ---------------------------------------------------------------- syntax

#[test]
fn misspelled_key_inside_a_detector_names_line_column_and_key() {
    let text = with_detectors("  - type: spend_anomaly\n    history: 50\n    min_histroy: 3\n");
    let err = load_text(&text).unwrap_err();
    assert_eq!(err.problems().len(), 1, "{err}");
    let p = &err.problems()[0];
    assert_eq!((p.line, p.column), (Some(14), Some(5)), "{err}");
    assert!(p.path.is_empty());
    assert!(p.message.contains("min_histroy"), "{err}");
    assert!(p.message.contains("did you mean `min_history`"), "{err}");
    assert!(err.to_string().starts_with("t.yaml:14:5: unknown key `min_histroy`"), "{err}");
}

#[test]
fn misspelled_keys_are_refused_in_every_section() {
    for (from, to, line) in [
        ("name: test", "nmae: test", 1),
        ("  group: g", "  grup: g", 5),
        ("  type: debezium-json", "  type: debezium-json\n  schema: auto", 8),
        ("  key: user_id", "  keys: user_id", 9),
        ("  dead_letters: dlq", "  dead_letter: dlq", 15),
    ] {
        let text = BASE.replace(from, to);
        let p = &problems(&text)[0];
        assert_eq!(p.line, Some(line), "{from} -> {to}: {p:?}");
        assert!(p.message.contains("unknown key"), "{p:?}");
    }
    let text = with_detectors("  - type: velocity_score\n    velocity: {windw: 5s}\n");
    let p = &problems(&text)[0];
    assert_eq!(p.line, Some(13), "{p:?}");
    assert!(p.message.contains("windw"), "{p:?}");
}

#[test]
fn unknown_detector_type_and_enum_values_are_refused_at_their_line() {
    let p = &problems(&with_detectors("  - type: spend_anomalie\n"))[0];
    assert_eq!(p.line, Some(12));
    assert!(p.message.contains("spend_anomaly, velocity_score"), "{p:?}");

    let p = &problems(&BASE.replace("  group: g", "  group: g\n  start_from: oldest"))[0];
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("earliest, latest"), "{p:?}");

    let p = &problems(&BASE.replace("  key: user_id", "  key: user_id\n  ops: [c, x]"))[0];
    assert_eq!(p.line, Some(10));
    assert!(p.message.contains("unknown op"), "{p:?}");
}

#[test]
fn row_bounds_are_read_and_refused_when_they_bound_nothing() {
    let with = |extra: &str| BASE.replace("  event_time: created_at\n", &format!("  event_time: created_at\n{extra}"));
    let p = ok(&with("  max_key_bytes: 64\n  max_future: 10m\n  max_attempts: 1\n"));
    assert_eq!((p.rows.max_key_bytes, p.rows.max_future, p.rows.max_attempts), (64, Duration::from_secs(600), 1));
    assert_eq!(ok(BASE).rows.max_attempts, 3);
    let p = problem_at(&with("  max_attempts: 0\n"), "rows.max_attempts");
    assert_eq!((p.line, p.message.as_str()), (Some(11), "must be ≥ 1 (got 0)"));
    let p = problem_at(&with("  max_key_bytes: 0\n"), "rows.max_key_bytes");
    assert_eq!((p.line, p.message.as_str()), (Some(11), "must be ≥ 1 (got 0)"));
    let p = problem_at(&with("  max_future: 0s\n"), "rows.max_future");
    assert_eq!((p.line, p.message.as_str()), (Some(11), "must be > 0 (got 0s)"));
}

#[test]
fn missing_and_malformed_values_are_refused() {
    let p = &problems(&BASE.replace("  group: g\n", ""))[0];
    assert!(p.message.contains("missing required key `group`"), "{p:?}");
    assert!(p.line.is_some());

    let p = &problems(&BASE.replace("group: g", "group:"))[0];
    assert_eq!(p.line, Some(5));
    assert!(p.message.contains("value is required"), "{p:?}");

    let p = &problems(&with_detectors("  - type: spend_anomaly\n    history: -1\n"))[0];
    assert_eq!(p.line, Some(13));
    assert!(p.message.contains("whole number"), "{p:?}");

    let p = &problems(&BASE.replace("name: test", "name: test\nname: again"))[0];
    assert!(p.message.contains("duplicate key"), "{p:?}");

    let p = &problems("name: [unclosed\n")[0];
    assert_eq!(p.line, Some(1));

    let p = &problems("# nothing but a comment\n")[0];
    assert!(p.message.contains("a pipeline needs name"), "{p:?}");
    assert!(!problems(&format!("{BASE}---\n{BASE}")).is_empty());
}

#[test]
fn detector_fields_of_another_type_are_refused() {
    let text = with_detectors("  - type: velocity_score\n    history: 50\n    factor: 2\n");
    let all = problems(&text);
    let paths: Vec<&str> = all.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["detectors[0].history", "detectors[0].factor"]);
    assert_eq!(all[0].line, Some(13));
    assert!(all[0].message.contains("belongs to spend_anomaly"), "{:?}", all[0]);
}

// ---------------------------------------------------------------- env

#[test]
fn unset_variable_is_refused_with_file_line_column_and_name() {
    let text = BASE.replace("brokers: k:9092", "brokers: ${VIGIL_TEST_BROKERS}");
    let err = load_text(&text).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    let line = err.to_string();
    assert!(line.starts_with("t.yaml:3:12: "), "{line}");
    assert!(line.contains("VIGIL_TEST_BROKERS"), "{line}");
}

#[test]
fn variables_reach_numbers_durations_decimals_and_properties_as_written() {
    let text = with_detectors(
        "  - type: spend_anomaly\n    history: ${H:-50}\n    factor: ${F:-2.5}\n\
         \x20 - type: velocity_score\n    velocity: {window: ${W:-60s}, max_count: ${N:-5}}\n\
         \x20   high_amount: {threshold: ${T:-4000.00}}\n",
    )
    .replace("  group: g", "  group: g\n  properties: {sasl.password: ${PW}, fetch.min.bytes: ${MIN}}");
    let password = "a #b: [c, {d}] 'e\" &f *g !h |i";
    let env = |name: &str| match name {
        "PW" => Some(password.to_owned()),
        "MIN" => Some("1024".to_owned()),
        _ => None,
    };
    let p = load_str("t.yaml", &text, env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.source.properties.get("sasl.password").map(String::as_str), Some(password));
    assert_eq!(p.source.properties.get("fetch.min.bytes").map(String::as_str), Some("1024"));
    assert_eq!(p.source.properties.len(), 2);
    let DetectorKind::SpendAnomaly(s) = &p.detectors[0].kind else { panic!("{p:?}") };
    assert_eq!((s.history, s.factor), (50, dec("2.5")));
    let DetectorKind::VelocityScore(v) = &p.detectors[1].kind else { panic!("{p:?}") };
    assert_eq!(v.velocity, Some(VelocityRule { window: Duration::from_secs(60), max_count: 5, points: 40 }));
    assert_eq!(v.high_amount.as_ref().map(|h| h.threshold), Some(dec("4000.00")));
}

#[test]
fn secrets_are_masked_in_debug() {
    let text = BASE.replace(
        "  group: g",
        "  group: g\n  properties: {sasl.username: vigil, sasl.password: hunter2-a, SSL.Key.Password: hunter2-b, \
         sasl.oauthbearer.client.secret: hunter2-c, ssl.key.pem: hunter2-d}",
    );
    let shown = format!("{:?}", ok(&text));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("\"sasl.username\": \"vigil\""), "{shown}");
    assert!(shown.contains("\"sasl.password\": \"***\""), "{shown}");
}

#[test]
fn credentials_in_the_brokers_are_refused_without_repeating_them() {
    let text = BASE.replace("brokers: k:9092", "brokers: 'SASL_SSL://vigil:hunter2@k:9092'");
    let p = problem_at(&text, "source.brokers");
    assert!(p.message.contains("sasl.password"), "{}", p.message);
    assert!(!p.message.contains("hunter2"), "{}", p.message);
}

#[test]
fn locations_after_a_substitution_point_into_the_file() {
    // `${G:-x}` (7 chars) becomes `x`; the bad topic after it (its opening
    // quote) stays at the file's column, 21, not the interpolated 15.
    let text = BASE.replace("  topics: [in]", "  topics: [${G:-x}, 'bad topic']");
    let p = problem_at(&text, "source.topics[1]");
    assert_eq!((p.line, p.column), (Some(4), Some(21)));
}

// ---------------------------------------------------------------- rules

#[test]
fn several_problems_are_all_reported_with_their_paths() {
    let text = "\
name: Bad Name
source:
  brokers: ''
  topics: [in, in]
  group: g
  properties: {group.id: other}
format:
  type: avro
rows:
  key: user_id
  event_time: created_at
  ops: [c, r]
detectors:
  - type: spend_anomaly
    history: 50
    min_history: 60
  - type: velocity_score
    velocity: {window: 0s}
    high_amount: {threshold: -1}
sink:
  alerts: fraud.alerts
  dead_letters: fraud.alerts
";
    let err = load_text(text).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "name",
            "source.brokers",
            "source.topics[1]",
            "source.properties[\"group.id\"]",
            "format.type",
            "rows.ops[1]",
            "detectors[0].min_history",
            "detectors[1].velocity.window",
            "detectors[1].high_amount.threshold",
            "sink.dead_letters",
        ],
        "{err}"
    );
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), paths.len());
    assert!(shown.contains("t.yaml:16:18: detectors[0].min_history: must be ≤ history (got 60 > 50)"), "{shown}");
    assert!(shown.contains("t.yaml:18:24: detectors[1].velocity.window: must be > 0 (got 0s)"), "{shown}");
    assert!(
        shown.contains("t.yaml:22:17: sink.dead_letters: must differ from sink.alerts (both fraud.alerts)"),
        "{shown}"
    );
    assert!(shown.lines().all(|l| l.starts_with("t.yaml:")), "{shown}");
}

#[test]
fn name_must_be_a_label() {
    for good in ["a", "fraud-detection", "0.x_y-z"] {
        ok(&BASE.replace("name: test", &format!("name: {good}")));
    }
    for bad in ["Fraud", "-x", "a b", "'é'", "''", "_x"] {
        problem_at(&BASE.replace("name: test", &format!("name: {bad}")), "name");
    }
    let p = problem_at(&with_detectors("  - type: spend_anomaly\n    name: Big\n"), "detectors[0].name");
    assert!(p.message.contains("[a-z0-9]"), "{p:?}");
}

#[test]
fn source_rules() {
    problem_at(&BASE.replace("brokers: k:9092", "brokers: ' '"), "source.brokers");
    problem_at(&BASE.replace("group: g", "group: ''"), "source.group");
    let p = problem_at(&BASE.replace("topics: [in]", "topics: []"), "source.topics");
    assert!(p.message.contains("at least one"), "{p:?}");
    let p = problem_at(&BASE.replace("topics: [in]", "topics: [a, b, a]"), "source.topics[2]");
    assert!(p.message.contains("duplicate topic a (also source.topics[0])"), "{p:?}");
    for bad in ["'a b'", "'..'", "''", "'x/y'", &"t".repeat(250)] {
        problem_at(&BASE.replace("topics: [in]", &format!("topics: [{bad}]")), "source.topics[0]");
    }
    ok(&BASE.replace("topics: [in]", &format!("topics: [A.b_c-9, {}]", "t".repeat(249))));
}

#[test]
fn vigil_owned_properties_are_refused_naming_the_field_to_use() {
    for (key, hint) in [
        ("bootstrap.servers", "source.brokers"),
        ("group.id", "source.group"),
        ("auto.offset.reset", "source.start_from"),
        ("enable.auto.commit", "commits"),
        ("enable.auto.offset.store", "stores"),
        ("enable.partition.eof", "endless"),
        ("partition.assignment.strategy", "cooperative-sticky"),
    ] {
        let text = BASE.replace("  group: g", &format!("  group: g\n  properties:\n    {key}: x"));
        let p = problem_at(&text, &format!("source.properties[{key:?}]"));
        assert!(p.message.contains(hint), "{key}: {p:?}");
        assert_eq!(p.line, Some(7));
    }
}

#[test]
fn format_rules() {
    for other in ["avro", "protobuf", "json-schema", "json"] {
        let p = problem_at(&BASE.replace("type: debezium-json", &format!("type: {other}")), "format.type");
        assert!(p.message.contains("JsonConverter"), "{p:?}");
        assert!(p.message.contains(other), "{p:?}");
    }
    let text = BASE.replace("  type: debezium-json", "  type: debezium-json\n  decimal_scales: {amount: 29}");
    let p = problem_at(&text, "format.decimal_scales.amount");
    assert_eq!(p.message, "must be ≤ 28 (got 29)");
}

#[test]
fn schemaless_precise_decimals_need_a_scale_for_every_amount_column() {
    let base = with_detectors("  - type: spend_anomaly\n  - type: velocity_score\n    amount: total\n");
    let text = base.replace("  type: debezium-json", "  type: debezium-json\n  schemas: disabled");
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|p| p.path == "format.decimal_scales"));
    assert!(
        all[0].message.starts_with(
            "records without a schema carry precise decimals without their scale; \
         declare a scale for column amount (e.g. decimal_scales: {amount: 2}) \
         or set format.decimals to string or double"
        ),
        "{all:#?}"
    );
    assert!(all[1].message.contains("column total"), "{all:#?}");

    let text = base
        .replace("  type: debezium-json", "  type: debezium-json\n  schemas: disabled\n  decimal_scales: {amount: 2}");
    let p = problem_at(&text, "format.decimal_scales");
    assert!(p.message.contains("column total"), "{p:?}");
    assert_eq!(p.line, Some(9));

    ok(&base.replace(
        "  type: debezium-json",
        "  type: debezium-json\n  schemas: disabled\n  decimal_scales: {amount: 2, total: 2}",
    ));
    ok(&base.replace("  type: debezium-json", "  type: debezium-json\n  schemas: disabled\n  decimals: string"));
    ok(&base.replace("  type: debezium-json", "  type: debezium-json\n  schemas: enabled"));
}

#[test]
fn rows_rules() {
    problem_at(&BASE.replace("key: user_id", "key: ''"), "rows.key");
    problem_at(&BASE.replace("event_time: created_at", "event_time: ''"), "rows.event_time");
    let rows = |extra: &str| BASE.replace("  event_time: created_at", &format!("  event_time: created_at\n{extra}"));
    problem_at(&rows("  primary_key: []"), "rows.primary_key");
    let p = problem_at(&rows("  primary_key: [id, id]"), "rows.primary_key[1]");
    assert!(p.message.contains("duplicate column id (also rows.primary_key[0])"), "{p:?}");
    problem_at(&rows("  ops: []"), "rows.ops");
    problem_at(&rows("  ops: [c, u, c]"), "rows.ops[2]");
    problem_at(&rows("  warm_ops: [r, r]"), "rows.warm_ops[1]");
    ok(&rows("  warm_ops: []"));

    // Overlap names both fields and both lists.
    let p = problem_at(&rows("  ops: [c, u]\n  warm_ops: [r, u]"), "rows.warm_ops[1]");
    assert!(p.message.starts_with("u is in both rows.ops ([c, u]) and rows.warm_ops ([r, u])"), "{p:?}");
    // With warm_ops defaulted, the op is pointed at.
    let p = problem_at(&rows("  ops: [c, r]"), "rows.ops[1]");
    assert!(p.message.contains("rows.warm_ops ([r])"), "{p:?}");
}

#[test]
fn detectors_rules() {
    let p = problem_at(
        &BASE.replace("  - type: spend_anomaly\n", "  []\n").replace("detectors:\n  []", "detectors: []"),
        "detectors",
    );
    assert!(p.message.contains("at least one"), "{p:?}");

    // Unnamed detectors of one type collide on their default name.
    let p = problem_at(
        &with_detectors("  - type: spend_anomaly\n  - type: spend_anomaly\n    amount: total\n"),
        "detectors[1].name",
    );
    assert!(p.message.contains("duplicate detector name spend-anomaly (also detectors[0].name)"), "{p:?}");
    assert!(p.message.contains("give each spend_anomaly its own name"), "{p:?}");
    ok(&with_detectors("  - type: spend_anomaly\n  - type: spend_anomaly\n    name: other\n"));
    problem_at(
        &with_detectors("  - type: spend_anomaly\n    name: x\n  - type: velocity_score\n    name: x\n"),
        "detectors[1].name",
    );
    problem_at(&with_detectors("  - type: spend_anomaly\n    amount: ''\n"), "detectors[0].amount");
}

#[test]
fn spend_anomaly_rules() {
    let spend = |extra: &str| with_detectors(&format!("  - type: spend_anomaly\n{extra}"));
    assert_eq!(problem_at(&spend("    history: 0\n"), "detectors[0].history").message, "must be ≥ 1 (got 0)");
    assert_eq!(problem_at(&spend("    min_history: 0\n"), "detectors[0].min_history").message, "must be ≥ 1 (got 0)");
    assert_eq!(
        problem_at(&spend("    history: 50\n    min_history: 60\n"), "detectors[0].min_history").message,
        "must be ≤ history (got 60 > 50)"
    );
    assert_eq!(
        problem_at(&spend("    min_history: 60\n"), "detectors[0].min_history").message,
        "must be ≤ history (got 60 > 50, the default history)"
    );
    let p = problem_at(&spend("    history: 2\n"), "detectors[0].history");
    assert!(p.message.contains("must be ≥ min_history (got 2 < 3"), "{p:?}");
    ok(&spend("    history: 1\n    min_history: 1\n"));
    assert_eq!(problem_at(&spend("    factor: 0\n"), "detectors[0].factor").message, "must be > 0 (got 0)");
    assert_eq!(problem_at(&spend("    factor: -2.5\n"), "detectors[0].factor").message, "must be > 0 (got -2.5)");
    assert_eq!(
        problem_at(&spend("    min_amount: -0.01\n"), "detectors[0].min_amount").message,
        "must be ≥ 0 (got -0.01)"
    );
    ok(&spend("    factor: 0.1\n    min_amount: 0\n"));
}

#[test]
fn velocity_score_rules() {
    let velocity = |extra: &str| with_detectors(&format!("  - type: velocity_score\n{extra}"));
    let p = problem_at(&velocity("    velocity: {window: 0s}\n"), "detectors[0].velocity.window");
    assert_eq!(p.message, "must be > 0 (got 0s)");
    assert_eq!((p.line, p.column), (Some(13), Some(24)));
    let p = problem_at(&velocity("    velocity: {window: 60}\n"), "detectors[0].velocity.window");
    assert!(p.message.starts_with("add a unit: 60s"), "{p:?}");
    assert_eq!(
        problem_at(&velocity("    high_amount: {threshold: -1}\n"), "detectors[0].high_amount.threshold").message,
        "must be ≥ 0 (got -1)"
    );
    let p = problem_at(&velocity("    idle_timeout: 1h\n"), "detectors[0].idle_timeout");
    assert!(p.message.starts_with("moved to state.idle_timeout"), "{p:?}");
    let p = problem_at(&with_detectors("  - type: spend_anomaly\n    idle_timeout: 1h\n"), "detectors[0].idle_timeout");
    assert!(p.message.starts_with("moved to state.idle_timeout"), "{p:?}");
    ok(&velocity("    allowed_lateness: 0s\n"));
    problem_at(&velocity("    allowed_lateness: 5\n"), "detectors[0].allowed_lateness");

    // A threshold no score can pass names every field and value involved.
    let p = problem_at(
        &velocity("    velocity: {points: 10}\n    high_amount: {points: 50}\n"),
        "detectors[0].alert_above",
    );
    assert!(
        p.message.starts_with("no row can score above 70 (the default): the highest score is 60 (velocity.points 10 + high_amount.points 50)"),
        "{p:?}"
    );
    let p = problem_at(&velocity("    high_amount: {points: 50}\n    alert_above: 50\n"), "detectors[0].alert_above");
    assert!(
        p.message.starts_with("no row can score above 50: the highest score is 50 (high_amount.points 50)"),
        "{p:?}"
    );
    assert_eq!(p.line, Some(14));
}

#[test]
fn sink_rules() {
    problem_at(&BASE.replace("alerts: out", "alerts: 'a b'"), "sink.alerts");
    problem_at(&BASE.replace("dead_letters: dlq", "dead_letters: ''"), "sink.dead_letters");
    assert_eq!(
        problem_at(&BASE.replace("dead_letters: dlq", "dead_letters: out"), "sink.dead_letters").message,
        "must differ from sink.alerts (both out)"
    );
    let p = problem_at(&BASE.replace("alerts: out", "alerts: in"), "sink.alerts");
    assert!(p.message.starts_with("must differ from source.topics[0] (both in)"), "{p:?}");
    let p = problem_at(&BASE.replace("dead_letters: dlq", "dead_letters: in"), "sink.dead_letters");
    assert!(p.message.starts_with("must differ from source.topics[0] (both in)"), "{p:?}");
}

#[test]
fn load_reads_files_and_reports_unreadable_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = load(&root.join("pipelines/fraud-detection.yaml")).unwrap();
    assert_eq!(p.name, "fraud-detection");
    assert!(p.file.ends_with("pipelines/fraud-detection.yaml"));

    let missing = root.join("pipelines/does-not-exist.yaml");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    assert!(err.to_string().starts_with(&format!("{}: cannot read", missing.display())), "{err}");
}

#[test]
fn typo_suggestions_are_close_matches_only() {
    let keys = ["history", "min_history", "factor", "min_amount"];
    assert_eq!(closest("min_histroy", &keys), Some("min_history"));
    assert_eq!(closest("factr", &keys), Some("factor"));
    assert_eq!(closest("colour", &keys), None);
    assert_eq!(edit_distance("ab", "ba"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn state_is_kept_by_default_in_a_changelog_per_source_topic() {
    let p = ok(BASE);
    assert_eq!(
        p.state,
        StateConfig {
            enabled: true,
            changelog: "test.{topic}.changelog".into(),
            idle_timeout: Duration::from_secs(30 * 86_400)
        }
    );
    assert_eq!(p.state.changelog_topic("in"), "test.in.changelog");
}

#[test]
fn state_rules() {
    let state = |section: &str| format!("{BASE}state: {section}\n");
    let two_topics = |section: &str| state(section).replace("topics: [in]", "topics: [in, more]");
    let p = problem_at(&two_topics("{changelog: shared}"), "state.changelog");
    assert!(p.message.starts_with("must hold {topic} (the pipeline reads 2 topics"), "{p:?}");
    assert_eq!(ok(&two_topics("{changelog: 'x.{topic}'}")).state.changelog_topic("more"), "x.more");
    let p = problem_at(&state("{changelog: 'bad name {topic}'}"), "state.changelog");
    assert!(p.message.starts_with("not a valid Kafka topic name"), "{p:?}");
    for (template, other) in [("'{topic}'", "source.topics"), ("out", "sink.alerts"), ("dlq", "sink.dead_letters")] {
        let p = problem_at(&state(&format!("{{changelog: {template}}}")), "state.changelog");
        assert!(p.message.ends_with(&format!("which is also {other}: a changelog is a topic of its own")), "{p:?}");
    }
    assert_eq!(problem_at(&state("{idle_timeout: 0s}"), "state.idle_timeout").message, "must be > 0 (got 0s)");
    problem_at(&state("{idle_timeout: 7}"), "state.idle_timeout");
    // Wrong shapes are the parser's: located, on the state line.
    for (section, says) in [("{enabled: perhaps}", "invalid boolean"), ("{retention: 1d}", "retention")] {
        let all = problems(&state(section));
        assert!(all.iter().any(|p| p.line == Some(16) && p.message.contains(says)), "{all:#?}");
    }
}

#[test]
fn at_least_once_is_the_default_guarantee() {
    let p = ok(BASE);
    assert_eq!(p.guarantee, Guarantee::AtLeastOnce);
    assert_eq!(p.sink.transaction_timeout, p.sink.delivery_timeout, "the transaction timeout follows the delivery's");
    assert_eq!(p.sink.transaction_interval, Duration::from_millis(100));
}

#[test]
fn exactly_once_rules() {
    let eos = |sink: &str| format!("{BASE}{sink}guarantee: exactly_once\n");
    let p = ok(&eos("  delivery_timeout: 30s\n  transaction_timeout: 1m\n  transaction_interval: 250ms\n"));
    assert_eq!(p.guarantee, Guarantee::ExactlyOnce);
    assert_eq!(
        (p.sink.delivery_timeout, p.sink.transaction_timeout, p.sink.transaction_interval),
        (Duration::from_secs(30), Duration::from_secs(60), Duration::from_millis(250))
    );
    assert_eq!(ok(&eos("  delivery_timeout: 45s\n")).sink.transaction_timeout, Duration::from_secs(45));

    let p = problem_at(&eos("  transaction_timeout: 1m\n"), "sink.transaction_timeout");
    assert_eq!(p.message, "must be ≥ sink.delivery_timeout (2m; got 1m): a delivery may not outlast its transaction");
    assert_eq!(p.line, Some(16), "{p:?}");
    let p = problem_at(&eos("  transaction_interval: 5ms\n"), "sink.transaction_interval");
    assert_eq!(p.message, "must be ≥ 10ms (got 5ms)");
    let p = problem_at(&eos("  delivery_timeout: 5s\n  transaction_interval: 5s\n"), "sink.transaction_interval");
    assert_eq!(p.message, "must be below sink.transaction_timeout (5s; got 5s)");

    let p = problem_at(&format!("{BASE}guarantee: exactly_once\nstate: {{enabled: false}}\n"), "guarantee");
    assert!(p.message.starts_with("exactly_once needs the detectors' state in its changelog"), "{p:?}");
    let p = problem_at(&format!("{BASE}  transaction_interval: 50ms\n"), "sink.transaction_interval");
    assert_eq!(p.message, "applies only with guarantee: exactly_once");
    // A misspelling is the parser's, located on its line.
    let all = problems(&format!("{BASE}guarantee: exactly-once\n"));
    assert!(all.iter().any(|p| p.line == Some(16) && p.message.contains("exactly_once")), "{all:#?}");
}
