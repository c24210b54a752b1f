//! Exactly-once (`guarantee: exactly_once`): a crash mid-transaction, a
//! process joining, one leaving, a broker restart; a `read_committed`
//! reader of the alerts sees each due alert exactly once and nothing else.
//!
//! Streams as in `durable_state.rs` (`support::scenario`), the pipeline
//! committing a transaction every 2 s, long enough that a process killed
//! mid-stream leaves one open with alerts in it. A `read_uncommitted`
//! reader shows that transaction really aborted (its alerts are among what
//! it reads, and not among what a `read_committed` reader does); the test
//! would pass vacuously without one.

mod support;

use std::time::Duration;

use support::scenario::*;
use support::*;

/// Scenarios one at a time (each starts processes of its own).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COMMITTED: &str = "vigil_transactions_committed_total";

async fn scenario(name: &str) -> Scenario {
    Scenario::new(name, 150, 4_000, "").await.exactly_once("2s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_transaction_and_started_again_sends_each_alert_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = scenario("eos-kill").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = s.start("a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_600.0);
    assert!(a.metric(COMMITTED) > 0.0, "transactions committed before the kill:\n{}", a.log());
    // Killed while its open transaction holds alerts.
    let open = eventually(Duration::from_secs(30), || open_transaction_on(&s.alerts));
    assert!(open, "a transaction holding alerts:\n{}", a.log());
    // Started again as the same instance: its first act aborts what the
    // killed one left open.
    let mut again = s.crash_and_recover(&mut a, writer).await;
    let aborted = s.aborted_alerts();
    assert!(aborted > 0, "the killed process's open transaction held alerts, and they were aborted");
    assert!(again.terminate().success(), "{}", again.log());
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_joining_mid_stream_sends_each_alert_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = scenario("eos-join").await;
    s.joining_mid_stream().await;
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_processes_leaving_mid_stream_sends_each_alert_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = scenario("eos-leave").await;
    s.one_of_two_leaving_mid_stream().await;
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_sends_each_alert_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = scenario("eos-broker").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = s.start("a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_400.0);
    // The open transaction cannot commit meanwhile; the partitions may be
    // lost and given back.
    s.broker_away(&mut a).await;
    writer.await.expect("writer");
    s.wait_committed(&[&a]);
    s.check_alerts(&s.due(), &[&a]);
    stack_whole_again();
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_of_the_same_instance_name_fences_the_first_which_stops_saying_so() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = scenario("eos-fenced").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = Vigil::start_instance(&s.file, "a", "same");
    let started = eventually(Duration::from_secs(60), || a.metric(COMMITTED) > 0.0);
    assert!(started, "A commits transactions:\n{}", a.log());
    let mut b = Vigil::start_instance(&s.file, "b", "same");
    // A learns it is fenced when it next writes: rows keep coming.
    let writer = s.write_second_half();
    let stopped = eventually(Duration::from_secs(60), || a.exited().is_some());
    assert!(stopped, "A, fenced, stops:\n{}", a.log());
    assert_eq!(a.exited().and_then(|status| status.code()), Some(1), "{}", a.log());
    assert!(a.log().contains("give each process its own --instance"), "A says why:\n{}", a.log());
    // B goes on alone: what A left uncommitted was aborted when B fenced it.
    writer.await.expect("writer");
    s.wait_committed(&[&b]);
    s.check_alerts(&s.due(), &[&a, &b]);
    assert!(b.terminate().success(), "{}", b.log());
    s.delete_topics().await;
}
