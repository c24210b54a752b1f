//! `scripts/stack` itself: a second `up` is harmless and restarts nothing,
//! `status` tells the truth, and one service can be taken away and brought
//! back with the CDC path working again afterwards. One test function, so
//! nothing else in this binary runs while PostgreSQL is away.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn stack_up_is_idempotent_and_a_service_comes_back() {
    let again = stack(&["up"]);
    let said = text(&again.stderr);
    assert!(again.status.success(), "second up failed:\n{said}");
    assert!(!said.contains("starting"), "second up restarted something:\n{said}");
    assert!(text(&again.stdout).contains("connector dbserver1: RUNNING RUNNING"));

    let status = stack(&["status"]);
    let out = text(&status.stdout);
    assert!(status.status.success(), "status:\n{out}");
    for service in ["postgres  running", "kafka     running", "connect   running"] {
        assert!(out.contains(service), "{service} in status:\n{out}");
    }

    let stop = stack(&["stop", "postgres"]);
    assert!(stop.status.success(), "stop postgres:\n{}", text(&stop.stderr));
    let status = stack(&["status"]);
    assert!(!status.status.success(), "status must fail with a service down");
    assert!(text(&status.stdout).contains("postgres  stopped"));
    assert!(
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.is_err(),
        "PostgreSQL still answers after stop"
    );

    let start = stack(&["start", "postgres"]);
    assert!(start.status.success(), "start postgres:\n{}", text(&start.stderr));
    assert!(stack(&["status"]).status.success(), "all running again");

    // Debezium reconnects: a change made now still reaches Kafka.
    let db = postgres().await;
    let id = unique_base() as i32;
    let from = end_offsets(ACTIVITY_TOPIC).unwrap_or_default();
    db.execute("INSERT INTO activity (id, name) VALUES ($1, 'after restart')", &[&id]).await.expect("insert");
    let ours = |r: &Record| r.key.is_some() && r.key_json()["payload"]["id"] == id;
    read_until(ACTIVITY_TOPIC, &from, Duration::from_secs(90), |rs| rs.iter().any(ours))
        .expect("the change made after PostgreSQL's restart is published");
}

#[test]
fn unknown_service_is_refused() {
    let out = stack(&["stop", "zookeeper"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown service 'zookeeper'"));
}
