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

use loadtest::workload::{Due, Oracle, Txn, Workload};
use support::*;

/// Scenarios one at a time (each starts processes of its own).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: i32 = 4;
const ROWS: &str = "vigil_rows_total";
const ASSIGNED: &str = "vigil_assigned_partitions";

/// A scenario's stream: its topics, pipeline file and transactions.
#[derive(Clone)]
struct Scenario {
    name: String,
    topic: String,
    alerts: String,
    dead_letters: String,
    group: String,
    file: std::path::PathBuf,
    txns: Vec<Txn>,
}

impl Scenario {
    /// `records` transactions of `users` users (ids of this scenario's
    /// own), a row of a user every few seconds of event time.
    async fn new(name: &str, users: i64, records: u64, state: &str) -> Scenario {
        let base = unique_base();
        let topic = format!("vigil-test-{name}-{base}");
        let (alerts, dead_letters) = (format!("{topic}-alerts"), format!("{topic}-dlq"));
        create_topic(&topic, PARTITIONS).await;
        create_topic(&alerts, 1).await;
        create_topic(&dead_letters, 1).await;
        let workload = Workload {
            users,
            skew: 0.0,
            fraud_rate: 0.03,
            seed: base as u64,
            start_us: loadtest::envelope::CAPTURED_CREATED_AT,
            spacing_us: 50_000,
        };
        // User ids of the scenario's own, so no two scenarios share one.
        let txns = workload.transactions(records).map(|t| Txn { user: base + t.user, ..t }).collect();
        let scenario = Scenario {
            name: name.to_owned(),
            group: topic.clone(),
            file: std::path::PathBuf::new(),
            topic,
            alerts,
            dead_letters,
            txns,
        };
        let file = scenario.write_pipeline("[{type: spend_anomaly}, {type: velocity_score}]", state);
        Scenario { file, ..scenario }
    }

    /// A short consumer session, so a stopped or killed process's
    /// partitions move within seconds.
    fn short_session(path: &std::path::Path) {
        let text = std::fs::read_to_string(path).expect("pipeline");
        let text =
            text.replace("start_from: earliest}", "start_from: earliest, properties: {session.timeout.ms: '6000'}}");
        std::fs::write(path, text).expect("pipeline written");
    }

    /// Writes the scenario's pipeline file with `detectors` and a `state`
    /// section (flow style, or empty for the defaults).
    fn write_pipeline(&self, detectors: &str, state: &str) -> std::path::PathBuf {
        let path =
            pipeline_file_with(&self.name, &self.topic, &self.group, &self.alerts, &self.dead_letters, detectors);
        Scenario::short_session(&path);
        if !state.is_empty() {
            let text = std::fs::read_to_string(&path).expect("pipeline file");
            std::fs::write(&path, format!("{text}state: {state}\n")).expect("pipeline file written");
        }
        path
    }

    /// Produces transactions `range` in order, `per_second` at most.
    async fn produce(&self, range: std::ops::Range<usize>, per_second: u64) {
        let producer = producer();
        let envelopes = loadtest::envelope::Envelopes::new(false);
        let pause = Duration::from_secs(1) / (per_second.max(1) as u32);
        for t in &self.txns[range] {
            let (key, value) = (envelopes.key(t.user), envelopes.value(t));
            send(&producer, &self.topic, None, Some(&key), Some(&value)).await;
            tokio::time::sleep(pause).await;
        }
    }

    /// The alerts due over the whole stream by the reference rules.
    fn due(&self) -> BTreeSet<Due> {
        let mut oracle = Oracle::default();
        self.txns.iter().flat_map(|t| oracle.observe(t)).collect()
    }

    /// Waits until the group has committed every record of the topic.
    fn wait_committed(&self, processes: &[&Vigil]) {
        let ends = end_offsets(&self.topic).expect("end offsets");
        let all = eventually(Duration::from_secs(120), || {
            let committed = committed(&self.group, &self.topic);
            ends.iter().all(|(p, end)| committed.get(p).is_some_and(|c| c >= end))
        });
        let logs: Vec<String> = processes.iter().map(|v| v.log()).collect();
        assert!(
            all,
            "every record committed: {:?} of {ends:?}\n{}",
            committed(&self.group, &self.topic),
            logs.join("\n---\n")
        );
    }

    /// Reads the alerts and compares them with `due`: none missing, none
    /// unexpected, repeats only with the same id.
    fn check_alerts(&self, due: &BTreeSet<Due>, processes: &[&Vigil]) {
        let alerts = read_settled(&self.alerts, |all| all.len() >= due.len(), Duration::from_secs(3));
        let mut ids: BTreeMap<Due, BTreeSet<String>> = BTreeMap::new();
        for alert in &alerts {
            let id = alert_row_id(alert);
            let found = match alert["detector"].as_str() {
                Some("spend-anomaly") => Due::Spend(id),
                Some("velocity-score") => Due::Velocity(id),
                other => panic!("an alert of detector {other:?}: {alert}"),
            };
            ids.entry(found).or_default().insert(alert["id"].as_str().unwrap_or_default().to_owned());
        }
        let alerted: BTreeSet<Due> = ids.keys().copied().collect();
        let missing: Vec<&Due> = due.difference(&alerted).collect();
        let unexpected: Vec<&Due> = alerted.difference(due).collect();
        let logs = || processes.iter().map(|v| v.log()).collect::<Vec<_>>().join("\n---\n");
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "{} due, {} missing {missing:?}, {} unexpected {unexpected:?}\n{}",
            due.len(),
            missing.len(),
            unexpected.len(),
            logs()
        );
        let differing: Vec<_> = ids.iter().filter(|(_, ids)| ids.len() > 1).collect();
        assert!(differing.is_empty(), "repeats with another id: {differing:?}");
        assert!(due.len() >= 20, "a stream with alerts to lose: {} due", due.len());
    }

    /// The process has read rows of the second half.
    fn wait_rows(&self, vigil: &[&Vigil], rows: f64) {
        let read = eventually(Duration::from_secs(60), || vigil.iter().map(|v| v.metric(ROWS)).sum::<f64>() >= rows);
        assert!(read, "{rows} rows read:\n{}", vigil.iter().map(|v| v.log()).collect::<Vec<_>>().join("\n---\n"));
    }

    /// The second half of the stream, 400 rows a second, on a task.
    fn write_second_half(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move { s.produce(2_000..4_000, 400).await })
    }

    /// Two processes, once both hold partitions.
    fn two_sharing(&self) -> (Vigil, Vigil) {
        let (a, b) = (Vigil::start(&self.file, "a"), Vigil::start(&self.file, "b"));
        let shared = eventually(Duration::from_secs(60), || a.metric(ASSIGNED) > 0.0 && b.metric(ASSIGNED) > 0.0);
        assert!(shared, "both hold partitions:\nA: {}\nB: {}", a.log(), b.log());
        (a, b)
    }

    /// Kills `a` mid-stream and starts another process in its place, which
    /// restores the state and reads the rest (`writer` writes it): the
    /// alerts over the whole stream are those due.
    async fn crash_and_recover(&self, a: &mut Vigil, writer: tokio::task::JoinHandle<()>) -> Vigil {
        a.kill();
        let again = Vigil::start(&self.file, "again");
        writer.await.expect("writer");
        self.wait_committed(&[&again]);
        assert!(restored_users(&again.log()) > 0, "the new process restored users:\n{}", again.log());
        self.check_alerts(&self.due(), &[a, &again]);
        again
    }

    async fn delete_topics(&self) {
        let changelog = format!("{}.{}.changelog", self.name, self.topic);
        delete_topics(&[&self.topic, &self.alerts, &self.dead_letters, &changelog]).await;
    }
}

/// The restore line of a process's log: "restored N users of topic/p in X ms".
fn restored_users(log: &str) -> u64 {
    log.lines().filter_map(|l| l.split("restored ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_stream_and_started_again_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("kill", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let mut a = Vigil::start(&s.file, "a");
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
    s.produce(0..2_000, 20_000).await;
    let a = Vigil::start(&s.file, "a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_400.0);
    let b = Vigil::start(&s.file, "b");
    let shared = eventually(Duration::from_secs(60), || b.metric(ASSIGNED) > 0.0);
    assert!(shared, "the joining process takes partitions:\n{}", b.log());
    writer.await.expect("writer");
    s.wait_committed(&[&a, &b]);
    assert!(restored_users(&b.log()) > 0, "the joining process restored users:\n{}", b.log());
    s.check_alerts(&s.due(), &[&a, &b]);
    s.delete_topics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_processes_leaving_mid_stream_changes_no_alert() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Scenario::new("leave", 150, 4_000, "").await;
    s.produce(0..2_000, 20_000).await;
    let (a, mut b) = s.two_sharing();
    let writer = s.write_second_half();
    s.wait_rows(&[&a, &b], 2_400.0);
    assert!(b.terminate().success(), "B leaves cleanly:\n{}", b.log());
    writer.await.expect("writer");
    s.wait_committed(&[&a]);
    s.check_alerts(&s.due(), &[&a, &b]);
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
    let mut a = Vigil::start(&s.file, "a");
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
    let mut a = Vigil::start(&s.file, "a");
    let writer = s.write_second_half();
    s.wait_rows(&[&a], 2_400.0);
    // Away longer than the 6 s session: the process may lose its
    // partitions (nothing checkpointed for them) and be given them back.
    let back = BrokerBack;
    let stop = stack(&["stop", "kafka"]);
    assert!(stop.status.success(), "stop kafka:\n{}", text(&stop.stderr));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = stack(&["start", "kafka"]);
    assert!(start.status.success(), "start kafka:\n{}", text(&start.stderr));
    drop(back);
    assert!(a.exited().is_none(), "vigil outlives the broker's restart:\n{}", a.log());
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

/// `kill -SIG` to a process.
fn signal(vigil: &Vigil, sig: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{sig}"), &vigil.pid().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig}");
}
