//! Detector state moves with its partition: a crash, a restart, a process
//! joining or leaving, a consumer whose session lapses, a broker restart:
//! the alerts are exactly those due over the whole stream, as if one
//! process had read it without a pause (none missing, none unexpected; a
//! repeat only with the same id).
//!
//! Each scenario has a topic, group and users of its own and a seeded
//! workload whose due alerts an oracle of its own computes (the load
//! test's: the reference rules in integer cents, no code shared with the
//! engine). Users' histories are built by the first half of the stream
//! and most frauds are judged against them in the second, so a state lost
//! at the disruption shows as missing (or unexpected) alerts. The
//! scenarios run one at a time: each runs up to three vigil processes, and
//! one restarts the broker.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use loadtest::workload::{Due, Oracle, Txn};
use support::scenario::*;
use support::*;

/// Scenarios one at a time (each starts processes of its own).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_stream_and_started_again_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("kill", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = s.start("a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_600.0);
    let mut again = s.crash_and_recover(&mut a, writer).await;
    assert!(again.terminate().success(), "{}", again.log());
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_joining_mid_stream_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("join", 150, 4_000, "").await;
    s.joining_mid_stream().await;
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_processes_leaving_mid_stream_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("leave", 150, 4_000, "").await;
    s.one_of_two_leaving_mid_stream().await;
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_session_lapses_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("lapse", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let (a, b) = s.two_sharing();
    let writer = s.write_second_half();
    s.wait_rows(&[&a, &b], 2_400.0);
    signal(&b, "STOP");
    let took_over = eventually(Duration::from_secs(60), || a.metric(ASSIGNED) == PARTITIONS as f64);
    signal(&b, "CONT");
    assert!(took_over, "A takes every partition while B is stopped:\n{}", a.log());
    writer.await.expect("writer");
    s.wait_committed(&[&a, &b]);
    s.check_alerts(&s.due(), &[&a, &b]);
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_changed_detectors_keeps_what_still_applies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("changed", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = s.start("a");
    s.wait_committed(&[&a]);
    assert!(a.terminate().success(), "{}", a.log());
    // Restarted with a shorter history and the velocity detector removed.
    let file = s.write_pipeline("[{type: spend_anomaly, history: 20}]", "");
    let b = Vigil::start(&file, "b");
    s.produce(2_000..4_000, 20_000).await;
    s.wait_committed(&[&b]);
    let log = b.log();
    assert!(log.contains("velocity-score") && log.contains("dropped"), "the dropped detector is named:\n{log}");
    assert!(log.contains("trimmed spend-anomaly"), "the trimmed history is said:\n{log}");
    // Due: the reference rules over the first half; then a history of the
    // newest 20 amounts (the trimmed one is exactly that), spend only.
    let mut oracle = Oracle::default();
    let mut due: BTreeSet<Due> = s.txns[..2_000].iter().flat_map(|t| oracle.observe(t)).collect();
    let mut spend = SpendOracle::new(20);
    for (i, t) in s.txns.iter().enumerate() {
        if spend.observe(t) && i >= 2_000 {
            due.insert(Due::Spend(t.id));
        }
    }
    s.check_alerts(&due, &[&a, &b]);
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_and_then_a_kill_change_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("broker", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = s.start("a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_400.0);
    // Away longer than the 6 s session: the process may lose its
    // partitions (nothing checkpointed for them) and be given them back.
    s.broker_away(&mut a).await;
    // Then a crash: what the new process restores was written around the
    // restart.
    s.wait_rows(&[&a], 3_200.0);
    s.crash_and_recover(&mut a, writer).await;
    stack_whole_again();
    s.delete_topics().await;
}

/// The spend rule alone with a history of `history` amounts (factor 3,
/// above 500.00, from 3 amounts on), in cents.
struct SpendOracle {
    history: usize,
    users: BTreeMap<i64, VecDeque<i64>>,
}

impl SpendOracle {
    fn new(history: usize) -> Self {
        SpendOracle { history, users: BTreeMap::new() }
    }

    fn observe(&mut self, t: &Txn) -> bool {
        let amounts = self.users.entry(t.user).or_default();
        let (n, sum) = (amounts.len() as i128, amounts.iter().sum::<i64>() as i128);
        let due = n >= 3 && t.cents as i128 * n > 3 * sum && t.cents > 50_000;
        if amounts.len() == self.history {
            amounts.pop_front();
        }
        amounts.push_back(t.cents);
        due
    }
}
