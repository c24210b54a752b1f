//! The fraud pipeline end to end against the real stack: transactions
//! inserted into PostgreSQL reach vigil through Debezium, and a scenario
//! with known answers gives exactly the expected alerts of both detectors,
//! with one process and with two in one group; a process killed with
//! SIGKILL and started again skips no record.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// (detector, key, row id) of an alert.
fn what(alert: &Value) -> (String, String, i64) {
    (
        alert["detector"].as_str().unwrap_or_default().to_owned(),
        alert["key"].as_str().unwrap_or_default().to_owned(),
        alert_row_id(alert),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_through_debezium_gives_exactly_the_expected_alerts_with_one_or_two_processes() {
    let base = unique_base();
    let name = "fraud-scenario";
    let (dlq, one, two) = (
        format!("vigil-test-fraud-dlq-{base}"),
        format!("vigil-test-alerts-one-{base}"),
        format!("vigil-test-alerts-two-{base}"),
    );
    for t in [&dlq, &one, &two] {
        create_topic(t, 1).await;
    }
    // The same pipeline (same name, so the same alert ids) twice: one
    // process in one group, two processes in another.
    let single = pipeline_file(name, TRANSACTIONS_TOPIC, &format!("vigil-test-one-{base}"), &one, &dlq);
    let pair = pipeline_file(name, TRANSACTIONS_TOPIC, &format!("vigil-test-two-{base}"), &two, &dlq);
    let p1 = Vigil::start(&single, "one");
    let (p2a, p2b) = (Vigil::start(&pair, "a"), Vigil::start(&pair, "b"));
    let ready = eventually(Duration::from_secs(60), || {
        p1.metric("vigil_assigned_partitions") == 8.0
            && p2a.metric("vigil_assigned_partitions") == 4.0
            && p2b.metric("vigil_assigned_partitions") == 4.0
    });
    assert!(ready, "all started before the data:\n{}\n{}\n{}", p1.log(), p2a.log(), p2b.log());

    // The scenario: (user offset, seconds after 09:00, amount). Comments
    // give the answer each row must produce.
    let t0 = "2026-11-25 09:00:00";
    let rows: &[(i64, f64, &str)] = &[
        // u0: spend anomaly only: history 100,100,100,301 (mean 150.25);
        // 1000 > 3 x 150.25 and > 500. 301 is > 3 x 100 but not > 500.
        (0, 0.0, "100"),
        (0, 600.0, "100"),
        (0, 1200.0, "100"),
        (0, 1800.0, "301"),
        (0, 2400.0, "1000"),
        // u1: exactly 3 x the mean is not more: nothing.
        (1, 0.0, "200"),
        (1, 600.0, "200"),
        (1, 1200.0, "200"),
        (1, 1800.0, "600"),
        // u2: six rows in 5 s, the sixth 4500: velocity 40 + 50 = 90 and a
        // spend anomaly (4500 against a mean of 10): two alerts, one row.
        (2, 0.0, "10"),
        (2, 1.0, "10"),
        (2, 2.0, "10"),
        (2, 3.0, "10"),
        (2, 4.0, "10"),
        (2, 5.0, "4500"),
        // u3: the sixth row exactly 60 s after five: the window's start is
        // included: 90. No spend anomaly (4500 against a mean of 2000).
        (3, 0.0, "2000"),
        (3, 0.0, "2000"),
        (3, 0.0, "2000"),
        (3, 0.0, "2000"),
        (3, 0.0, "2000"),
        (3, 60.0, "4500"),
        // u4: the same a microsecond later: the five are outside: 50 only.
        (4, 0.0, "2000"),
        (4, 0.0, "2000"),
        (4, 0.0, "2000"),
        (4, 0.0, "2000"),
        (4, 0.0, "2000"),
        (4, 60.000001, "4500"),
        // u5: exactly the threshold: nothing.
        (5, 0.0, "4000"),
    ];
    let db = postgres().await;
    let mut ids = Vec::new();
    for (user, seconds, amount) in rows {
        let id: i64 = db
            .query_one(
                "INSERT INTO transactions (user_id, amount, created_at) \
                 VALUES ($1, $2::text::numeric, $3::text::timestamp + make_interval(secs => $4)) RETURNING id",
                &[&((base + user) as i32), amount, &t0, seconds],
            )
            .await
            .expect("insert")
            .get(0);
        ids.push(id);
    }
    let key = |u: i64| (base + u).to_string();
    let expected: BTreeSet<(String, String, i64)> = [
        ("spend-anomaly", key(0), ids[4]),
        ("spend-anomaly", key(2), ids[14]),
        ("velocity-score", key(2), ids[14]),
        ("velocity-score", key(3), ids[20]),
    ]
    .into_iter()
    .map(|(d, k, i)| (d.to_owned(), k, i))
    .collect();

    let ours = |a: &Value| {
        a["key"].as_str().and_then(|k| k.parse::<i64>().ok()).is_some_and(|k| (base..base + 6).contains(&k))
    };
    let settle = Duration::from_secs(3);
    for (label, topic) in [("one process", &one), ("two processes", &two)] {
        let got: Vec<Value> = read_settled(topic, |all| all.iter().filter(|a| ours(a)).count() >= 4, settle)
            .into_iter()
            .filter(ours)
            .collect();
        let found: Vec<(String, String, i64)> = got.iter().map(what).collect();
        let unique: BTreeSet<_> = found.iter().cloned().collect();
        assert_eq!(found.len(), unique.len(), "{label}: an alert twice: {found:?}");
        assert_eq!(unique, expected, "{label}: exactly the expected alerts");
        for a in &got {
            assert_eq!(a["pipeline"], name);
            assert_eq!(a["source"]["topic"], TRANSACTIONS_TOPIC);
            assert!(a["row"]["lsn"].is_i64(), "Debezium's LSN identifies the row");
            assert!(a["reasons"].as_array().is_some_and(|r| !r.is_empty()));
        }
        let u2_velocity = got.iter().find(|a| what(a) == ("velocity-score".into(), key(2), ids[14])).expect("u2");
        assert_eq!(u2_velocity["score"], 90.0);
        assert_eq!(u2_velocity["amount"], "4500.00");
        assert_eq!(u2_velocity["event_time"], "2026-11-25T09:00:05.000000Z");
        assert_eq!(u2_velocity["reasons"][0]["count"], 6);
        let u0 = got.iter().find(|a| a["key"] == key(0).as_str()).expect("u0");
        assert_eq!(u0["reasons"][0]["mean"], "150.25");
    }
    // Same rows, same pipeline: the same ids whichever process found them.
    let ids_of = |topic: &str| -> BTreeMap<(String, String, i64), String> {
        read_settled(topic, |_| true, Duration::ZERO)
            .iter()
            .filter(|a| ours(a))
            .map(|a| (what(a), a["id"].as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    assert_eq!(ids_of(&one), ids_of(&two));
    drop((p1, p2a, p2b));
    delete_topics(&[&dlq, &one, &two]).await;
}

/// With a pipeline whose alerts depend only on the row itself, a SIGKILL
/// in the middle of a stream and a restart lose nothing: every due alert
/// is there at least once, and a duplicate carries the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_skip_no_record() {
    // 4,000 rows, every tenth due an alert, over a few seconds.
    let mut stream = HighAmountStream::start("kill", 8, 4_000, 50, Duration::from_millis(25)).await;
    let mut first = Vigil::start(&stream.file, "first");
    let midway = eventually(Duration::from_secs(60), || first.metric("vigil_alerts_total") >= 50.0);
    assert!(midway, "alerts flowing before the kill:\n{}", first.log());
    first.kill();
    assert!(!stream.written(), "killed while the stream still ran");
    let second = Vigil::start(&stream.file, "second");
    stream.finish_writing(Duration::from_secs(120)).await;
    let due = stream.due();

    let got = read_settled(
        &stream.alerts,
        |all| all.iter().map(|a| what(a).2).collect::<BTreeSet<_>>().len() >= due.len(),
        Duration::from_secs(2),
    );
    let mut ids_by_row: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for a in &got {
        ids_by_row.entry(what(a).2).or_default().insert(a["id"].as_str().unwrap_or_default().to_owned());
    }
    let alerted: BTreeSet<i64> = ids_by_row.keys().copied().collect();
    assert_eq!(alerted, due, "every due alert, and only those:\n{}", second.log());
    assert!(ids_by_row.values().all(|ids| ids.len() == 1), "duplicates carry the same id");
    let duplicates = got.len() - due.len();
    eprintln!("{} alerts for {} due rows: {duplicates} re-sent after the kill", got.len(), due.len());
    drop(second);
    stream.delete_topics().await;
}
