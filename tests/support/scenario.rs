//! A stream for the tests that disturb vigil mid-stream and compare the
//! alerts with the exact expected set: topics, a group and users of its
//! own, a seeded workload whose due alerts the load test's oracle computes
//! (the reference rules in integer cents, no code shared with the engine).
//! Users' histories are built by the first half of the stream and most
//! frauds are judged against them in the second, so a state lost at a
//! disruption shows as missing (or unexpected) alerts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use loadtest::workload::{Due, Oracle, Txn, Workload};

use super::*;

pub const PARTITIONS: i32 = 4;
pub const ROWS: &str = "vigil_rows_total";
pub const ASSIGNED: &str = "vigil_assigned_partitions";

/// A scenario's stream: its topics, pipeline file and transactions.
#[derive(Clone)]
pub struct Scenario {
    pub name: String,
    pub topic: String,
    pub alerts: String,
    pub dead_letters: String,
    pub group: String,
    pub file: std::path::PathBuf,
    pub txns: Vec<Txn>,
    /// `guarantee: exactly_once`: alerts are checked as a `read_committed`
    /// reader sees them, no repeat allowed.
    pub exactly_once: bool,
}

impl Scenario {
    /// `records` transactions of `users` users (ids of this scenario's
    /// own), a row of a user every few seconds of event time.
    pub async fn new(name: &str, users: i64, records: u64, state: &str) -> Scenario {
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
            exactly_once: false,
        };
        let file = scenario.write_pipeline("[{type: spend_anomaly}, {type: velocity_score}]", state);
        Scenario { file, ..scenario }
    }

    /// A short consumer session, so a stopped or killed process's
    /// partitions move within seconds.
    pub fn short_session(path: &std::path::Path) {
        let text = std::fs::read_to_string(path).expect("pipeline");
        let text =
            text.replace("start_from: earliest}", "start_from: earliest, properties: {session.timeout.ms: '6000'}}");
        std::fs::write(path, text).expect("pipeline written");
    }

    /// Writes the scenario's pipeline file with `detectors` and a `state`
    /// section (flow style, or empty for the defaults).
    pub fn write_pipeline(&self, detectors: &str, state: &str) -> std::path::PathBuf {
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
    pub async fn produce(&self, range: std::ops::Range<usize>, per_second: u64) {
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
    pub fn due(&self) -> BTreeSet<Due> {
        let mut oracle = Oracle::default();
        self.txns.iter().flat_map(|t| oracle.observe(t)).collect()
    }

    /// Waits until the group has committed every record of the topic.
    pub fn wait_committed(&self, processes: &[&Vigil]) {
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

    /// Reads the alerts (`read_committed`) and compares them with `due`:
    /// none missing, none unexpected, repeats only with the same id, and
    /// exactly-once none at all.
    pub fn check_alerts(&self, due: &BTreeSet<Due>, processes: &[&Vigil]) {
        let once = self.exactly_once;
        let alerts = read_settled(&self.alerts, |all| all.len() >= due.len(), Duration::from_secs(3));
        let mut ids: BTreeMap<Due, Vec<String>> = BTreeMap::new();
        for alert in &alerts {
            ids.entry(due_of(alert)).or_default().push(alert["id"].as_str().unwrap_or_default().to_owned());
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
        let differing: Vec<_> = ids.iter().filter(|(_, ids)| ids.iter().collect::<BTreeSet<_>>().len() > 1).collect();
        assert!(differing.is_empty(), "repeats with another id: {differing:?}");
        if once {
            let repeated: Vec<_> = ids.iter().filter(|(_, ids)| ids.len() > 1).collect();
            assert!(repeated.is_empty(), "a read_committed reader saw repeats: {repeated:?}\n{}", logs());
        }
        assert!(due.len() >= 20, "a stream with alerts to lose: {} due", due.len());
    }

    /// Alerts a `read_uncommitted` reader sees beyond what a
    /// `read_committed` one does: records of aborted transactions.
    pub fn aborted_alerts(&self) -> usize {
        // Read until nothing more came for 3 s (the end offsets count the
        // transactions' markers, which are never handed out).
        let mut last = (0, std::time::Instant::now());
        let uncommitted = read_until_isolated(
            &self.alerts,
            &HashMap::new(),
            Duration::from_secs(60),
            "read_uncommitted",
            |records| {
                if records.len() != last.0 {
                    last = (records.len(), std::time::Instant::now());
                }
                last.1.elapsed() >= Duration::from_secs(3)
            },
        )
        .expect("the alerts, read_uncommitted");
        let committed = read_settled(&self.alerts, |_| true, Duration::from_secs(3));
        uncommitted.len().saturating_sub(committed.len())
    }

    /// The pipeline file made exactly-once, committing every `interval`.
    pub fn exactly_once(self, interval: &str) -> Scenario {
        let text = std::fs::read_to_string(&self.file).expect("pipeline file");
        let sink = format!("dead_letters: {}}}", self.dead_letters);
        let text =
            text.replace(&sink, &format!("dead_letters: {}, transaction_interval: {interval}}}", self.dead_letters));
        std::fs::write(&self.file, format!("{text}guarantee: exactly_once\n")).expect("pipeline file written");
        Scenario { exactly_once: true, ..self }
    }

    /// A process of the scenario, its `--instance` its name.
    pub fn start(&self, name: &str) -> Vigil {
        Vigil::start_instance(&self.file, name, name)
    }

    /// The process has read rows of the second half.
    pub fn wait_rows(&self, vigil: &[&Vigil], rows: f64) {
        let read = eventually(Duration::from_secs(60), || vigil.iter().map(|v| v.metric(ROWS)).sum::<f64>() >= rows);
        assert!(read, "{rows} rows read:\n{}", vigil.iter().map(|v| v.log()).collect::<Vec<_>>().join("\n---\n"));
    }

    /// The second half of the stream, 400 rows a second, on a task.
    pub fn write_second_half(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move { s.produce(2_000..4_000, 400).await })
    }

    /// Two processes, once both hold partitions.
    pub fn two_sharing(&self) -> (Vigil, Vigil) {
        let (a, b) = (self.start("a"), self.start("b"));
        let shared = eventually(Duration::from_secs(60), || a.metric(ASSIGNED) > 0.0 && b.metric(ASSIGNED) > 0.0);
        assert!(shared, "both hold partitions:\nA: {}\nB: {}", a.log(), b.log());
        (a, b)
    }

    /// Kills `a` (started as "a") mid-stream and starts another process in
    /// its place and with its instance name, as a supervisor would, which
    /// restores the state and reads the rest (`writer` writes it): the
    /// alerts over the whole stream are those due.
    pub async fn crash_and_recover(&self, a: &mut Vigil, writer: tokio::task::JoinHandle<()>) -> Vigil {
        a.kill();
        let again = Vigil::start_instance(&self.file, "again", "a");
        writer.await.expect("writer");
        self.wait_committed(&[&again]);
        assert!(restored_users(&again.log()) > 0, "the new process restored users:\n{}", again.log());
        self.check_alerts(&self.due(), &[a, &again]);
        again
    }

    /// The first half written, one process reading, a second joining
    /// while the second half comes: the alerts are those due.
    pub async fn joining_mid_stream(&self) {
        self.produce(0..2_000, 20_000).await;
        let a = self.start("a");
        let writer = self.write_second_half();
        self.wait_rows(&[&a], 2_400.0);
        let b = self.start("b");
        let shared = eventually(Duration::from_secs(60), || b.metric(ASSIGNED) > 0.0);
        assert!(shared, "the joining process takes partitions:\n{}", b.log());
        writer.await.expect("writer");
        self.wait_committed(&[&a, &b]);
        assert!(restored_users(&b.log()) > 0, "the joining process restored users:\n{}", b.log());
        self.check_alerts(&self.due(), &[&a, &b]);
    }

    /// Two processes sharing the stream, one stopping cleanly while the
    /// second half comes: the alerts are those due.
    pub async fn one_of_two_leaving_mid_stream(&self) {
        self.produce(0..2_000, 20_000).await;
        let (a, mut b) = self.two_sharing();
        let writer = self.write_second_half();
        self.wait_rows(&[&a, &b], 2_400.0);
        assert!(b.terminate().success(), "B leaves cleanly:\n{}", b.log());
        writer.await.expect("writer");
        self.wait_committed(&[&a]);
        self.check_alerts(&self.due(), &[&a, &b]);
    }

    /// The broker stopped for 10 s (longer than the 6 s session) while `a`
    /// reads, and started again; `a` outlives it.
    pub async fn broker_away(&self, a: &mut Vigil) {
        let back = BrokerBack;
        let stop = stack(&["stop", "kafka"]);
        assert!(stop.status.success(), "stop kafka:\n{}", text(&stop.stderr));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = stack(&["start", "kafka"]);
        assert!(start.status.success(), "start kafka:\n{}", text(&start.stderr));
        drop(back);
        assert!(a.exited().is_none(), "vigil outlives the broker's restart:\n{}", a.log());
    }

    pub async fn delete_topics(&self) {
        let changelog = format!("{}.{}.changelog", self.name, self.topic);
        delete_topics(&[&self.topic, &self.alerts, &self.dead_letters, &changelog]).await;
    }
}

/// The due alert an alert stands for.
fn due_of(alert: &serde_json::Value) -> Due {
    let id = alert_row_id(alert);
    match alert["detector"].as_str() {
        Some("spend-anomaly") => Due::Spend(id),
        Some("velocity-score") => Due::Velocity(id),
        other => panic!("an alert of detector {other:?}: {alert}"),
    }
}

/// The restore line of a process's log: "restored N users of topic/p in X ms".
pub fn restored_users(log: &str) -> u64 {
    log.lines().filter_map(|l| l.split("restored ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum()
}

/// `kill -SIG` to a process.
pub fn signal(vigil: &Vigil, sig: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{sig}"), &vigil.pid().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig}");
}
