//! What the integration tests share: the stack's endpoints (from the
//! environment, loopback defaults), clients that fail loudly when a service
//! is missing, and Kafka helpers that read only what a test itself caused.
//! The batch job's PostgreSQL helpers are in [`pg`].
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod pg;
pub mod scenario;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const TRANSACTIONS_TOPIC: &str = "dbserver1.public.transactions";
pub const ACTIVITY_TOPIC: &str = "dbserver1.public.activity";

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgrespw@127.0.0.1:5432/mydb".into())
}

/// A number no earlier run is likely to have used, so rows a test inserts
/// through the shared connector are told apart from everyone else's.
pub fn unique_base() -> i64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    // Fits an INT column with room for 100,000 ids above it.
    100_000_000 + (nanos % 1_900_000) as i64 * 1_000
}

/// A PostgreSQL client for `mydb`; panics with the reason when the database
/// is not there, so a missing stack can never pass for a green test.
pub async fn postgres() -> tokio_postgres::Client {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required (scripts/stack up): {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    client
}

/// A reader of what transactions committed (librdkafka's default).
fn consumer() -> BaseConsumer {
    consumer_isolated("read_committed")
}

fn consumer_isolated(isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", "vigil-tests-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer config is valid")
}

/// The partitions of `topic`, waiting up to `wait` for it to exist (Connect
/// creates a table's topic with its first change). Panics when the broker is
/// unreachable.
pub fn partitions(topic: &str, wait: Duration) -> Result<Vec<i32>> {
    let consumer = consumer();
    let deadline = Instant::now() + wait;
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("Kafka at {} is required (scripts/stack up): {e}", kafka_brokers()));
        if let Some(t) = metadata.topics().first() {
            if t.error().is_none() && !t.partitions().is_empty() {
                let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ids.sort_unstable();
                return Ok(ids);
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} does not exist after {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The end offset of every partition of `topic` now: a test reads from here
/// so that it sees only records produced after it started.
pub fn end_offsets(topic: &str) -> Result<HashMap<i32, i64>> {
    let consumer = consumer();
    let mut ends = HashMap::new();
    for p in partitions(topic, Duration::from_secs(0))? {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// Whether an open transaction holds records of `topic`: its end as a
/// `read_uncommitted` reader sees it lies past its last stable offset,
/// the end of what a `read_committed` reader sees.
pub fn open_transaction_on(topic: &str) -> bool {
    let end = |consumer: BaseConsumer| -> i64 {
        let parts = partitions(topic, Duration::from_secs(0)).unwrap_or_default();
        parts
            .iter()
            .filter_map(|p| consumer.fetch_watermarks(topic, *p, Duration::from_secs(10)).ok())
            .map(|w| w.1)
            .sum()
    };
    end(consumer_isolated("read_uncommitted")) > end(consumer())
}

/// A record as read from Kafka, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
            .unwrap_or_default();
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn key_json(&self) -> serde_json::Value {
        let key = self.key.as_deref().expect("record has a key");
        serde_json::from_slice(key).expect("key is JSON")
    }

    pub fn value_json(&self) -> Option<serde_json::Value> {
        self.value.as_deref().map(|v| serde_json::from_slice(v).expect("value is JSON"))
    }
}

/// Reads `topic` from the given start offsets (partitions not named start at
/// the beginning) until `done` says the collected records suffice (asked
/// after every poll, with or without a new record), or fails after `wait`.
pub fn read_until(
    topic: &str,
    start: &HashMap<i32, i64>,
    wait: Duration,
    done: impl FnMut(&[Record]) -> bool,
) -> Result<Vec<Record>> {
    read_until_isolated(topic, start, wait, "read_committed", done)
}

/// [`read_until`] at `isolation.level` `isolation`.
pub fn read_until_isolated(
    topic: &str,
    start: &HashMap<i32, i64>,
    wait: Duration,
    isolation: &str,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Result<Vec<Record>> {
    let consumer = consumer_isolated(isolation);
    let mut assignment = TopicPartitionList::new();
    for p in partitions(topic, wait)? {
        let offset = start.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o));
        assignment.add_partition_offset(topic, p, offset)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + wait;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => records.push(Record::from_message(&m)),
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
        // Asked after quiet polls too, so a condition on time can end it.
        if done(&records) {
            return Ok(records);
        }
    }
    bail!("gave up on {topic} after {wait:?} with {} records read", records.len())
}

/// Reads `topic` from the beginning until `enough` holds, then for
/// `settle` more (so that an alert too many would show), as JSON values.
pub fn read_settled(
    topic: &str,
    enough: impl Fn(&[serde_json::Value]) -> bool,
    settle: Duration,
) -> Vec<serde_json::Value> {
    let decode = |rs: &[Record]| -> Vec<serde_json::Value> { rs.iter().filter_map(Record::value_json).collect() };
    let mut seen_enough_at: Option<Instant> = None;
    let records = read_until(topic, &HashMap::new(), Duration::from_secs(120), |rs| {
        if seen_enough_at.is_none() && enough(&decode(rs)) {
            seen_enough_at = Some(Instant::now());
        }
        seen_enough_at.is_some_and(|t| t.elapsed() >= settle)
    });
    match records {
        Ok(rs) => decode(&rs),
        Err(e) => panic!("alerts on {topic}: {e}"),
    }
}

/// The partition Kafka's default partitioner (and Connect's producer)
/// gives a keyed record.
pub fn kafka_partition(key: &[u8], partitions: usize) -> i32 {
    loadtest::envelope::partition(key, partitions as i32)
}

/// Creates a topic with `partitions` partitions (replication 1).
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await;
}

/// As [`create_topic`], with topic configs (e.g. `max.message.bytes`).
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("admin client");
    let topic = configs
        .iter()
        .fold(NewTopic::new(name, partitions, TopicReplication::Fixed(1)), |topic, (k, v)| topic.set(k, v));
    let results = admin
        .create_topics(&[topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
        .await
        .unwrap_or_else(|e| panic!("Kafka at {} is required (scripts/stack up): {e}", kafka_brokers()));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    // Metadata reaches every client shortly after creation.
    partitions_wait(name, partitions).await;
}

async fn partitions_wait(topic: &str, expected: i32) {
    for _ in 0..100 {
        if partitions(topic, Duration::ZERO).is_ok_and(|p| p.len() as i32 == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {topic} did not show {expected} partitions");
}

/// `scripts/stack ARGS...`, run to its end.
pub fn stack(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack");
    std::process::Command::new(script).args(args).output().expect("scripts/stack runs")
}

/// Starts the broker again when dropped, so a test that stopped it and
/// then failed leaves it up.
pub struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        let _ = stack(&["start", "kafka"]);
    }
}

/// The whole stack up again (Connect and Debezium included), for the tests
/// after one that restarted the broker.
pub fn stack_whole_again() {
    let up = stack(&["up"]);
    assert!(up.status.success(), "stack up after the restart:\n{}", text(&up.stderr));
    assert!(text(&up.stdout).contains("connector dbserver1: RUNNING RUNNING"), "{}", text(&up.stdout));
}

/// Bytes of a command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A producer for test records, keyed records go where Kafka's default
/// partitioner puts them (as Connect's producer does).
pub fn producer() -> rdkafka::producer::FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Sends one record and waits for the broker's acknowledgement.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut record: rdkafka::producer::FutureRecord<'_, [u8], [u8]> = rdkafka::producer::FutureRecord::to(topic);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer.send(record, Duration::from_secs(10)).await.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
}

/// The offsets group `group` has committed on `topic`'s partitions.
pub fn committed(group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in partitions(topic, Duration::ZERO).expect("topic") {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// A real Debezium create envelope (the captured connector record's shape)
/// with its user, id (and LSN) and amount replaced: what vigil must decode.
pub fn transaction_envelope(user_id: i64, id: i64, amount_cents: i64) -> (Vec<u8>, Vec<u8>) {
    transaction_envelope_at(user_id, id, amount_cents, None)
}

/// As [`transaction_envelope`], with `created_at` (µs since the epoch) set.
pub fn transaction_envelope_at(
    user_id: i64,
    id: i64,
    amount_cents: i64,
    created_at: Option<i64>,
) -> (Vec<u8>, Vec<u8>) {
    use loadtest::envelope::{Envelopes, CAPTURED_CREATED_AT};
    let envelopes = Envelopes::new(false);
    let at_us = created_at.unwrap_or(CAPTURED_CREATED_AT);
    let txn = loadtest::workload::Txn { id, user: user_id, cents: amount_cents, at_us };
    (envelopes.key(user_id), envelopes.value(&txn))
}

/// Deletes topics a test created (best effort: a leftover is harmless).
pub async fn delete_topics(names: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: Result<AdminClient<rdkafka::client::DefaultClientContext>, _> =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(names, &AdminOptions::new()).await;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A `vigil run` process for one pipeline file, killed when dropped.
pub struct Vigil {
    child: std::process::Child,
    pub metrics_addr: String,
    log: std::path::PathBuf,
}

impl Vigil {
    pub fn start(pipeline_file: &std::path::Path, name: &str) -> Vigil {
        Vigil::start_files(&[pipeline_file], pipeline_file.with_extension(format!("{name}.log")))
    }

    /// A process with the instance name `instance` (`--instance`), logging
    /// to a file of `name`: one restarted in place of a killed one keeps
    /// the killed one's instance.
    pub fn start_instance(pipeline_file: &std::path::Path, name: &str, instance: &str) -> Vigil {
        let log = pipeline_file.with_extension(format!("{name}.log"));
        Vigil::start_with(&[pipeline_file], log, &["--instance", instance])
    }

    /// One process running several pipeline files side by side.
    pub fn start_files(files: &[&std::path::Path], log: std::path::PathBuf) -> Vigil {
        Vigil::start_with(files, log, &[])
    }

    fn start_with(files: &[&std::path::Path], log: std::path::PathBuf, args: &[&str]) -> Vigil {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let out = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("run")
            .args(files)
            .args(["--metrics-addr", &metrics_addr])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("vigil starts");
        Vigil { child, metrics_addr, log }
    }

    /// The Prometheus text of this process (empty until it answers).
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// Sum of every series of `name` (all labels) in this process.
    pub fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    pub fn health(&self) -> Option<u16> {
        http_get(&self.metrics_addr, "/health").map(|(status, _)| status)
    }

    /// SIGTERM, then the exit status; `None` if it does not stop within
    /// 60 s (it is killed when dropped).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM, then the exit status; fails the test if it does not stop.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        match self.stop() {
            Some(status) => status,
            None => panic!("vigil did not stop within 60 s:\n{}", self.log()),
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no commit, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Sum of every series of metric `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to `wait` for `condition`, polling every 200 ms.
pub fn eventually(wait: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    condition()
}

/// A pipeline file for a test, in a fresh temporary folder.
pub fn pipeline_file(name: &str, topic: &str, group: &str, alerts: &str, dead_letters: &str) -> std::path::PathBuf {
    let detectors = "[{type: spend_anomaly}, {type: velocity_score}]";
    pipeline_file_with(name, topic, group, alerts, dead_letters, detectors)
}

/// A pipeline file with the given `detectors:` (YAML flow style).
pub fn pipeline_file_with(
    name: &str,
    topic: &str,
    group: &str,
    alerts: &str,
    dead_letters: &str,
    detectors: &str,
) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-test-{group}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("pipeline.yaml");
    let text = format!(
        "name: {name}\n\
         source: {{brokers: '{brokers}', topics: [{topic}], group: {group}, start_from: earliest}}\n\
         format: {{type: debezium-json}}\n\
         rows: {{key: user_id, event_time: created_at}}\n\
         detectors: {detectors}\n\
         sink: {{alerts: {alerts}, dead_letters: {dead_letters}}}\n",
        brokers = kafka_brokers()
    );
    std::fs::write(&path, text).expect("pipeline file written");
    path
}

/// A stream for the tests that disturb vigil mid-stream (a crash, a broker
/// restart): its own topics (input, alerts, dead letters), a pipeline whose
/// alerts depend on the row alone (an amount above 4000), and a writer of
/// `records` rows, every tenth above 4000, pausing `pause` after every
/// `burst` rows. The writer starts at once; start vigil on `file`.
pub struct HighAmountStream {
    pub topic: String,
    pub alerts: String,
    pub dead_letters: String,
    pub file: std::path::PathBuf,
    records: i64,
    writer: tokio::task::JoinHandle<()>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HighAmountStream {
    pub async fn start(name: &str, partitions: i32, records: i64, burst: i64, pause: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let base = unique_base();
        let topic = format!("vigil-test-{name}-{base}");
        let (alerts, dead_letters) = (format!("{topic}-alerts"), format!("{topic}-dlq"));
        create_topic(&topic, partitions).await;
        create_topic(&alerts, 1).await;
        create_topic(&dead_letters, 1).await;
        let detectors = "[{type: velocity_score, high_amount: {threshold: 4000, points: 50}, alert_above: 40}]";
        let file = pipeline_file_with(name, &topic, &topic, &alerts, &dead_letters, detectors);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (topic, done) = (topic.clone(), std::sync::Arc::clone(&done));
            tokio::spawn(async move {
                let producer = producer();
                for id in 1..=records {
                    let cents = if id % 10 == 0 { 500_000 } else { 10_000 };
                    let (key, value) = transaction_envelope(base + id % 101, id, cents);
                    send(&producer, &topic, None, Some(&key), Some(&value)).await;
                    if id % burst == 0 {
                        tokio::time::sleep(pause).await;
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        HighAmountStream { topic, alerts, dead_letters, file, records, writer, done }
    }

    /// Whether every row has been written.
    pub fn written(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (up to `limit`) until every row has been written.
    pub async fn finish_writing(&mut self, limit: Duration) {
        tokio::time::timeout(limit, &mut self.writer).await.expect("the writer finishes").expect("the writer");
    }

    /// The ids of the rows an alert is due for.
    pub fn due(&self) -> std::collections::BTreeSet<i64> {
        (1..=self.records).filter(|id| id % 10 == 0).collect()
    }

    pub async fn delete_topics(&self) {
        delete_topics(&[&self.topic, &self.alerts, &self.dead_letters]).await;
    }
}

/// The primary key `id` of the row an alert is for (-1 if none).
pub fn alert_row_id(alert: &serde_json::Value) -> i64 {
    alert["row"]["primary_key"]["id"].as_i64().unwrap_or(-1)
}
