//! The Kafka broker restarts while vigil runs: vigil keeps running, says
//! so in a few log lines (not one per connection attempt), keeps its
//! partitions (its consumer session outlasts the restart, so no detector
//! state is dropped) and, once the broker is back, sends every alert due
//! exactly once: none lost, none repeated.
//!
//! The broker is the shared stack's: `scripts/stack stop kafka` and
//! `start kafka`. One test function, so nothing else in this binary runs
//! while it is away; whatever happens, the broker is started again and the
//! whole stack checked (Connect and Debezium included) before the test
//! ends, so the tests after it find it running.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_and_repeats_no_alert() {
    // 4,000 rows, every tenth due an alert, about 200 a second: before,
    // during (the writer waits for the broker) and after the restart.
    let mut stream = HighAmountStream::start("broker-restart", 4, 4_000, 20, Duration::from_millis(100)).await;
    let mut vigil = Vigil::start(&stream.file, "vigil");
    let flowing = eventually(Duration::from_secs(60), || vigil.metric("vigil_alerts_total") >= 20.0);
    assert!(flowing, "alerts flowing before the restart:\n{}", vigil.log());

    let back = BrokerBack;
    let stop = stack(&["stop", "kafka"]);
    assert!(stop.status.success(), "stop kafka:\n{}", text(&stop.stderr));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(vigil.exited().is_none(), "vigil stopped while the broker was away:\n{}", vigil.log());
    assert!(!stream.written(), "the writer finished before the restart");
    let start = stack(&["start", "kafka"]);
    assert!(start.status.success(), "start kafka:\n{}", text(&start.stderr));
    drop(back);

    stream.finish_writing(Duration::from_secs(120)).await;
    let due = stream.due();
    let caught_up = eventually(Duration::from_secs(120), || vigil.metric("vigil_alerts_total") >= due.len() as f64);
    assert!(caught_up, "every alert sent after the restart:\n{}", vigil.log());

    let mut alerted: Vec<i64> = read_settled(&stream.alerts, |all| all.len() >= due.len(), Duration::from_secs(2))
        .iter()
        .map(alert_row_id)
        .collect();
    alerted.sort_unstable();
    let repeated: Vec<&i64> = alerted.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    assert!(repeated.is_empty(), "alerts repeated for rows {repeated:?}:\n{}", vigil.log());
    assert_eq!(alerted.iter().copied().collect::<BTreeSet<_>>(), due, "every due alert, once:\n{}", vigil.log());

    // The partitions stayed: no revocation, so no user's state was reset.
    let metrics = vigil.metrics();
    let revoked: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_rebalances_total{") && l.contains("kind=\"revoke\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(revoked, 0.0, "partitions revoked during the restart:\n{metrics}");
    // The outage in a few lines: each client says it once, then once
    // every 10 s with the count held back.
    let log = vigil.log();
    let said = log.lines().filter(|l| l.contains("vigil::kafka::log")).count();
    assert!((1..=12).contains(&said), "{said} lines about Kafka errors:\n{log}");
    // Each counted before it is said: read after the log, the count holds them all.
    let counted = vigil.metric("vigil_kafka_client_errors_total");
    assert!(counted >= said as f64, "{counted} errors counted, {said} said:\n{}", vigil.metrics());
    assert!(vigil.terminate().success(), "vigil stops cleanly:\n{}", vigil.log());

    // The stack is whole again for the tests after this one.
    stack_whole_again();
    stream.delete_topics().await;
}
