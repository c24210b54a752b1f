//! A detector shard: an actor owning the users of the partitions routed to
//! it. It runs the pipeline's detectors over each batch of rows, in order,
//! sends an alert for every finding, and answers once Kafka has
//! acknowledged all of the batch's alerts: only then may the batch's
//! offsets be committed.
//!
//! No row can stop a shard: each is judged under a guard
//! ([`GuardedJudge`]) that puts its user's state back and tries again when
//! a detector panics, and gives the row up (the partition dead-letters it)
//! after `rows.max_attempts` tries. The router restarts a shard that stops
//! all the same.
//!
//! State lives in memory, per partition. With `state.enabled` it is also
//! durable: a partition's users are installed from its changelog
//! ([`Install`]) before its first batch, rows read again that the restored
//! state holds already (at or below a user's offset, or the partition's
//! restored checkpoint) are skipped, and [`Capture`] encodes the users
//! changed since the last checkpoint (listed as they change, so that a
//! capture costs what changed, not what is held), the tombstones of users
//! forgotten, and last the partition's own record. A shard asked for a partition it
//! does not hold (it was restarted) answers that it is unavailable, so the
//! partition is restored again rather than judged on an empty state.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::prelude::*;
use dashmap::DashMap;
use futures::future::join_all;
use tracing::{error, warn};

use super::record::{self, PartitionRecord};
use super::{CaptureMark, CompileError, Detectors, UserMap, UserState};
use crate::row::{Key, Op, Row, Value};
use crate::sink::alert::{self, Alert, AlertContext, AlertSink, SourcePosition};
use crate::stage::{panic_message, BatchError, Checkpoint, Output, Panicked};
use crate::telemetry::{names, zeroed_counter, zeroed_gauge, OnFirstUse};
use crate::time::EventTime;

/// How often (rows) a partition's idle users are looked for.
const EXPIRE_EVERY_ROWS: usize = 10_000;

/// What every shard of a pipeline shares.
pub struct ShardSetup {
    pub pipeline: String,
    pub detectors: Arc<Detectors>,
    /// Primary key columns: name and position in a row's values.
    pub primary_key: Vec<(String, usize)>,
    /// Ops whose rows may alert; the others only warm the state.
    pub alerting_ops: Vec<Op>,
    pub alerts: AlertSink,
    /// Users tracked by all shards of the pipeline, and its gauge.
    pub tracked_users: Arc<AtomicI64>,
    tracked_gauge: metrics::Gauge,
    misalignments: metrics::Counter,
    /// Alerts acknowledged, by detector (as listed in the pipeline).
    alerts_sent: Box<[OnFirstUse<metrics::Counter>]>,
    /// The partition each key was first seen on, by any shard: per-user
    /// state is only right when all of a user's rows share a partition.
    /// Looked at when a shard meets a key, not for every row; a key goes
    /// when its user does (idle, or its partition left).
    pub key_partitions: DashMap<Key, i32>,
    /// `rows.max_attempts`: tries of a row that panics a detector.
    pub max_attempts: u32,
    /// Shards restarted by the router.
    pub restarts: metrics::Counter,
    /// `state.enabled`: users are installed, captured and skipped by offset.
    pub durable: bool,
    /// Bytes of state held by all shards of the pipeline, and its gauge.
    state_bytes: Arc<AtomicI64>,
    state_bytes_gauge: metrics::Gauge,
    rows_skipped: metrics::Counter,
}

/// The users of one partition.
struct PartitionUsers {
    users: UserMap,
    /// Keys of this partition first seen on another one (usually none).
    misaligned: HashSet<Key>,
    /// The newest event time of the partition: the clock users idle by.
    newest: Option<EventTime>,
    rows_since_expiry: usize,
    /// The last offset the restored checkpoint holds: rows at or below it
    /// are in the state already (or their users were forgotten since).
    restored_through: i64,
    /// Users changed since the last capture, each listed once (marked
    /// in its [`CaptureMark`]); a user forgotten since is listed still.
    changed: Vec<Key>,
    /// Users forgotten since the last capture: tombstones to write.
    evicted: Vec<Key>,
    /// The users' bytes as their marks count them.
    bytes: usize,
}

impl Default for PartitionUsers {
    fn default() -> Self {
        PartitionUsers::restored(UserMap::default(), UserState::NO_OFFSET, None)
    }
}

impl PartitionUsers {
    fn restored(users: UserMap, through: i64, newest: Option<EventTime>) -> Self {
        PartitionUsers {
            users,
            misaligned: HashSet::new(),
            newest,
            rows_since_expiry: 0,
            restored_through: through,
            changed: Vec::new(),
            evicted: Vec::new(),
            bytes: 0,
        }
    }
}

impl ShardSetup {
    /// What the shards of `pipeline` share, its rows read as `projection`
    /// says and its alerts sent to `alerts`; refused when a detector's
    /// column is not read.
    pub fn for_pipeline(
        pipeline: &crate::config::Pipeline,
        projection: &crate::row::Projection,
        alerts: AlertSink,
    ) -> Result<Self, CompileError> {
        let alerts_sent = pipeline
            .detectors
            .iter()
            .map(|d| {
                let (pipeline, detector) = (pipeline.name.clone(), d.name.clone());
                OnFirstUse::new(move || {
                    metrics::counter!(names::ALERTS, "pipeline" => pipeline.clone(), "detector" => detector.clone())
                })
            })
            .collect();
        Ok(ShardSetup {
            pipeline: pipeline.name.clone(),
            tracked_gauge: zeroed_gauge(names::TRACKED_USERS, &pipeline.name),
            misalignments: zeroed_counter(names::KEY_MISALIGNMENTS, &pipeline.name),
            alerts_sent,
            detectors: Arc::new(Detectors::compile(pipeline, projection)?),
            primary_key: pipeline
                .rows
                .primary_key
                .iter()
                .filter_map(|c| projection.index(c).map(|i| (c.clone(), i)))
                .collect(),
            alerting_ops: pipeline.rows.ops.clone(),
            alerts,
            tracked_users: Arc::new(AtomicI64::new(0)),
            key_partitions: DashMap::new(),
            max_attempts: pipeline.rows.max_attempts,
            restarts: zeroed_counter(names::ACTOR_RESTARTS, &pipeline.name),
            durable: pipeline.state.enabled,
            state_bytes: Arc::new(AtomicI64::new(0)),
            state_bytes_gauge: zeroed_gauge(names::STATE_BYTES, &pipeline.name),
            rows_skipped: zeroed_counter(names::STATE_ROWS_SKIPPED, &pipeline.name),
        })
    }

    /// The user of `key` on `partition` is gone: the key is no longer
    /// known there (kept when it was first seen on another partition).
    fn forget_key(&self, key: &Key, partition: i32) {
        self.key_partitions.remove_if(key, |_, first| *first == partition);
    }
}

pub struct DetectorShard {
    setup: Arc<ShardSetup>,
    partitions: HashMap<(Arc<str>, i32), PartitionUsers>,
    judge: GuardedJudge,
    last_misalignment_warning: Option<Instant>,
}

impl DetectorShard {
    pub fn new(setup: Arc<ShardSetup>) -> Self {
        DetectorShard {
            setup,
            partitions: HashMap::new(),
            judge: GuardedJudge::default(),
            last_misalignment_warning: None,
        }
    }

    /// Rows of keys that arrived on another partition first: counted, and
    /// named in a warning (at most once a minute) that says how to fix the
    /// topic's keying.
    fn report_misaligned(&mut self, topic: &str, partition: i32, rows: u64, other_partition: Option<i32>) {
        self.setup.misalignments.increment(rows);
        if self.last_misalignment_warning.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        self.last_misalignment_warning = Some(Instant::now());
        warn!(pipeline = %self.setup.pipeline, topic, partition, other_partition = other_partition.unwrap_or(-1), rows,
            "rows of one key arrive on more than one partition, so per-key state is split: \
             key the topic by the routing column (Debezium: message.key.columns=<table>:<column>)");
    }

    fn track(&self, delta: i64) {
        if delta != 0 {
            let now = self.setup.tracked_users.fetch_add(delta, Ordering::Relaxed) + delta;
            self.setup.tracked_gauge.set(now as f64);
        }
    }

    fn track_bytes(&self, delta: i64) {
        if delta != 0 {
            let now = self.setup.state_bytes.fetch_add(delta, Ordering::Relaxed) + delta;
            self.setup.state_bytes_gauge.set(now as f64);
        }
    }

    /// Forgets a partition's users.
    fn drop_partition(&mut self, topic: &Arc<str>, partition: i32) {
        if let Some(part) = self.partitions.remove(&(Arc::clone(topic), partition)) {
            for key in part.users.keys() {
                self.setup.forget_key(key, partition);
            }
            self.track(-(part.users.len() as i64));
            self.track_bytes(-(part.bytes as i64));
        }
    }
}

impl Actor for DetectorShard {
    type Context = Context<Self>;
}

/// A shard that stops (a panic, the end of the process) no longer tracks
/// its users.
impl Drop for DetectorShard {
    fn drop(&mut self) {
        let held: usize = self.partitions.values().map(|part| part.users.len()).sum();
        self.track(-(held as i64));
        let bytes: usize = self.partitions.values().map(|part| part.bytes).sum();
        self.track_bytes(-(bytes as i64));
    }
}

/// A batch of one partition's rows, in offset order.
#[derive(Message)]
#[rtype(result = "Result<Vec<Panicked>, BatchError>")]
pub struct Detect {
    pub topic: Arc<str>,
    pub partition: i32,
    pub rows: Vec<Row>,
}

/// A partition's users in `partitions`; with durable state only once
/// installed (else the shard was restarted since: unavailable, so the
/// partition is restored again).
fn users_of<'a>(
    partitions: &'a mut HashMap<(Arc<str>, i32), PartitionUsers>,
    durable: bool,
    topic: &Arc<str>,
    partition: i32,
) -> Result<&'a mut PartitionUsers, BatchError> {
    let key = (Arc::clone(topic), partition);
    if durable {
        let unavailable = BatchError::Unavailable { stage: "detector shard", reason: actix::MailboxError::Closed };
        return partitions.get_mut(&key).ok_or(unavailable);
    }
    Ok(partitions.entry(key).or_default())
}

/// Encode what changed in the partition since the last capture, up to
/// offset `through` (the last of the batches handed over before this).
#[derive(Message)]
#[rtype(result = "Result<Checkpoint, BatchError>")]
pub struct Capture {
    pub topic: Arc<str>,
    pub partition: i32,
    pub through: i64,
}

/// A partition's users as its changelog holds them, replacing any held.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Install {
    pub topic: Arc<str>,
    pub partition: i32,
    pub users: UserMap,
    pub partition_record: Option<PartitionRecord>,
}

/// The partition left this process: forget its users.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl Handler<Detect> for DetectorShard {
    type Result = ResponseFuture<Result<Vec<Panicked>, BatchError>>;

    fn handle(&mut self, msg: Detect, _ctx: &mut Context<Self>) -> Self::Result {
        let setup = Arc::clone(&self.setup);
        let detectors = &setup.detectors;
        let part = match users_of(&mut self.partitions, setup.durable, &msg.topic, msg.partition) {
            Ok(part) => part,
            Err(unavailable) => return Box::pin(async move { Err(unavailable) }),
        };
        let before = part.users.len();
        let mut skipped = 0u64;
        let mut alerts = Vec::new();
        let mut given_up = Vec::new();
        let (mut misaligned, mut other_partition) = (0u64, None);
        // The rows' users looked up first: lookups that do not wait on one
        // another overlap their cache misses (user state is mostly out of
        // the cache, pushed out by the records streaming through), and each
        // user's state is on its way by the time its row is judged.
        for row in &msg.rows {
            if let Some(user) = part.users.get(&row.key) {
                user.prefetch();
            }
        }
        let source = SourcePosition { topic: &msg.topic, partition: msg.partition };
        for row in &msg.rows {
            if row.offset <= part.restored_through {
                skipped += 1;
                continue;
            }
            let user = match part.users.entry(row.key.clone()) {
                Entry::Occupied(user) => user.into_mut(),
                Entry::Vacant(slot) => {
                    let first = *setup.key_partitions.entry(row.key.clone()).or_insert(msg.partition);
                    if first != msg.partition {
                        part.misaligned.insert(row.key.clone());
                        other_partition.get_or_insert(first);
                    }
                    slot.insert(detectors.new_user())
                }
            };
            if row.offset <= user.offset {
                skipped += 1;
                continue;
            }
            if !part.misaligned.is_empty() && part.misaligned.contains(&row.key) {
                misaligned += 1;
            }
            match self.judge.guarded(&setup, user, row, source, &mut alerts) {
                Ok(()) => {
                    if setup.durable && !user.capture.listed {
                        user.capture.listed = true;
                        part.changed.push(row.key.clone());
                    }
                    user.offset = row.offset;
                    part.newest = part.newest.max(Some(row.event_time));
                }
                Err(panicked) => given_up.push(panicked),
            }
        }
        if skipped > 0 {
            setup.rows_skipped.increment(skipped);
        }
        part.rows_since_expiry += msg.rows.len();
        let mut forgotten_bytes = 0;
        if part.rows_since_expiry >= EXPIRE_EVERY_ROWS {
            part.rows_since_expiry = 0;
            if let Some(now) = part.newest {
                let PartitionUsers { users, misaligned, evicted, bytes, .. } = part;
                users.retain(|key, user| {
                    let idle = detectors.expired(user, now);
                    if idle {
                        setup.forget_key(key, msg.partition);
                        misaligned.remove(key);
                        forgotten_bytes += user.capture.counted_bytes;
                        if setup.durable {
                            evicted.push(key.clone());
                        }
                    }
                    !idle
                });
                *bytes -= forgotten_bytes;
            }
        }
        let delta = part.users.len() as i64 - before as i64;
        self.track(delta);
        self.track_bytes(-(forgotten_bytes as i64));
        if misaligned > 0 {
            self.report_misaligned(&msg.topic, msg.partition, misaligned, other_partition);
        }

        Box::pin(async move {
            let sends = alerts.into_iter().map(|(detector, alert)| {
                let sink = setup.alerts.clone();
                async move { sink.send(alert).await.map(|()| detector) }
            });
            for result in join_all(sends).await {
                match result {
                    Ok(detector) => setup.alerts_sent[detector].get().increment(1),
                    Err(error) => {
                        let topic = setup.alerts.topic().to_owned();
                        return Err(BatchError::NotDelivered { what: Output::Alert, topic, error });
                    }
                }
            }
            Ok(given_up)
        })
    }
}

/// Judges rows so that none can stop the shard: a row that panics a
/// detector (a bug, never bad input) has its user's state put back as it
/// was before the row and is tried again, and after `rows.max_attempts`
/// tries it is given up (dead-lettered by the partition), the user's
/// state as before it, so no row enters a state twice.
#[derive(Default)]
struct GuardedJudge {
    /// The state of the user being judged, as it was before the row:
    /// kept between rows so that saving it copies into memory it has.
    saved: Option<UserState>,
}

impl GuardedJudge {
    fn guarded(
        &mut self,
        setup: &ShardSetup,
        user: &mut UserState,
        row: &Row,
        source: SourcePosition<'_>,
        alerts: &mut Vec<(usize, Alert)>,
    ) -> Result<(), Panicked> {
        let saved = match &mut self.saved {
            Some(saved) => {
                saved.clone_from(user);
                saved
            }
            None => self.saved.insert(user.clone()),
        };
        let first_alert = alerts.len();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let judged = catch_unwind(AssertUnwindSafe(|| judge(setup, user, row, source, alerts)));
            let Err(panic) = judged else { return Ok(()) };
            let message = panic_message(&*panic);
            alerts.truncate(first_alert);
            user.clone_from(saved);
            error!(pipeline = %setup.pipeline, topic = %source.topic, partition = source.partition,
                offset = row.offset, attempts, max_attempts = setup.max_attempts, panic = %message,
                "a detector panicked on a row; its user's state is put back as before the row");
            if attempts >= setup.max_attempts {
                return Err(Panicked { offset: row.offset, stage: "detector", attempts, message });
            }
        }
    }
}

/// Runs the detectors over `row`, updating `user`, and builds an alert for
/// every finding; a row's alerts go out in the file's order of detectors.
fn judge(
    setup: &ShardSetup,
    user: &mut UserState,
    row: &Row,
    source: SourcePosition<'_>,
    alerts: &mut Vec<(usize, Alert)>,
) {
    let detectors = &setup.detectors;
    let alerting = setup.alerting_ops.contains(&row.op);
    let first = alerts.len();
    detectors.observe(user, row, alerting, |i, finding| {
        let detector = &detectors.list()[i];
        let ctx = AlertContext {
            pipeline: &setup.pipeline,
            detector: &detector.name,
            primary_key: &setup.primary_key,
            source,
        };
        let amount = row.values.get(detector.amount).unwrap_or(&Value::Null);
        alerts.push((i, alert::build(&ctx, row, amount, &finding)));
    });
    if alerts.len() - first > 1 {
        alerts[first..].sort_by_key(|(i, _)| *i);
    }
}

impl Handler<Forget> for DetectorShard {
    type Result = ();

    fn handle(&mut self, msg: Forget, _ctx: &mut Context<Self>) {
        self.drop_partition(&msg.topic, msg.partition);
    }
}

impl Handler<Capture> for DetectorShard {
    type Result = Result<Checkpoint, BatchError>;

    fn handle(&mut self, msg: Capture, _ctx: &mut Context<Self>) -> Self::Result {
        let setup = Arc::clone(&self.setup);
        let part = users_of(&mut self.partitions, setup.durable, &msg.topic, msg.partition)?;
        let mut records = Vec::new();
        // Tombstones first: a user forgotten and back since has its new
        // state written after, and keeps it.
        for key in std::mem::take(&mut part.evicted) {
            if !part.users.contains_key(&key) {
                records.push((record::key_bytes(&key), None));
            }
        }
        let mut delta = 0i64;
        for key in std::mem::take(&mut part.changed) {
            // Gone (its tombstone is written), or listed twice: forgotten
            // and back since, and captured already.
            let Some(user) = part.users.get_mut(&key).filter(|user| user.capture.listed) else { continue };
            let bytes = user.bytes_in_map(&key);
            delta += bytes as i64 - user.capture.counted_bytes as i64;
            user.capture = CaptureMark { listed: false, counted_bytes: bytes };
            let mut value = Vec::new();
            record::encode_user(&setup.detectors, user, &mut value);
            records.push((record::key_bytes(&key), Some(value)));
        }
        // Last: once it is in the changelog, so is the rest of the capture.
        let mut value = Vec::new();
        PartitionRecord { through: msg.through, watermark: part.newest }.encode(&mut value);
        records.push((record::PARTITION_KEY.to_vec(), Some(value)));
        part.bytes = (part.bytes as i64 + delta) as usize;
        self.track_bytes(delta);
        Ok(Checkpoint { through: msg.through, records })
    }
}

impl Handler<Install> for DetectorShard {
    type Result = usize;

    fn handle(&mut self, msg: Install, _ctx: &mut Context<Self>) -> usize {
        self.drop_partition(&msg.topic, msg.partition);
        let (through, newest) = msg.partition_record.map_or((UserState::NO_OFFSET, None), |p| (p.through, p.watermark));
        let mut part = PartitionUsers::restored(msg.users, through, newest);
        for key in part.users.keys() {
            let first = *self.setup.key_partitions.entry(key.clone()).or_insert(msg.partition);
            if first != msg.partition {
                part.misaligned.insert(key.clone());
            }
        }
        for (key, user) in part.users.iter_mut() {
            user.capture.counted_bytes = user.bytes_in_map(key);
            part.bytes += user.capture.counted_bytes;
        }
        let (users, bytes) = (part.users.len(), part.bytes);
        self.partitions.insert((msg.topic, msg.partition), part);
        self.track(users as i64);
        self.track_bytes(bytes as i64);
        users
    }
}

/// Test-only: stops the shard by a panic in its handler, as a bug outside
/// the guarded judgment would.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Crash;

#[cfg(test)]
impl Handler<Crash> for DetectorShard {
    type Result = ();

    fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("planned crash of a detector shard");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::load_str;
    use crate::kafka::{create_producer, durable_producer_config, Client};
    use crate::row::Projection;
    use crate::stage::faults;

    /// The reference detectors, alerts to a producer that never connects.
    pub(crate) fn setup() -> ShardSetup {
        let text = "name: t\nsource: {brokers: b, topics: [t], group: g}\nformat: {type: debezium-json}\n\
                    rows: {key: user_id, event_time: created_at}\n\
                    detectors: [{type: spend_anomaly}, {type: velocity_score}]\n\
                    sink: {alerts: a, dead_letters: d}\nstate: {enabled: false}\n";
        let pipeline = load_str("t.yaml", text, |_| None).expect("valid");
        let config = durable_producer_config("127.0.0.1:1", &BTreeMap::new(), Duration::from_secs(1));
        let producer = create_producer(&config, "t", Client::Producer).expect("a producer is made offline");
        let projection = Projection::new(pipeline.columns());
        ShardSetup::for_pipeline(&pipeline, &projection, AlertSink::new(producer, "a".into())).expect("compiles")
    }

    fn row(setup: &ShardSetup, offset: i64, seconds: i64, amount: &str) -> Row {
        let projection = Projection::new(vec!["user_id".into(), "created_at".into(), "id".into(), "amount".into()]);
        assert_eq!(setup.detectors.list()[0].amount, projection.index("amount").expect("amount"));
        crate::detect::tests::row_at(&projection, offset, seconds, amount)
    }

    const SOURCE: SourcePosition<'static> = SourcePosition { topic: "t", partition: 0 };

    /// Five rows of 100 then one of 4500: both detectors alert on the last.
    pub(crate) fn rows(setup: &ShardSetup) -> Vec<Row> {
        let amounts = ["100", "100", "100", "100", "100", "4500"];
        amounts.iter().enumerate().map(|(i, a)| row(setup, i as i64, i as i64, a)).collect()
    }

    #[test]
    fn a_row_that_panics_once_is_judged_as_if_it_had_not() {
        let setup = setup();
        let (mut expected, mut expected_alerts) = (setup.detectors.new_user(), Vec::new());
        for row in rows(&setup) {
            judge(&setup, &mut expected, &row, SOURCE, &mut expected_alerts);
        }
        let (mut guarded, mut user, mut alerts) = (GuardedJudge::default(), setup.detectors.new_user(), Vec::new());
        faults::plan("detector", 5, 2);
        for row in rows(&setup) {
            guarded.guarded(&setup, &mut user, &row, SOURCE, &mut alerts).expect("the third try passes");
        }
        assert_eq!(user, expected, "the half-done tries left nothing behind");
        let detectors = |alerts: &[(usize, Alert)]| alerts.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        assert_eq!(detectors(&alerts), [0, 1], "one alert per detector, none from the failed tries");
        assert_eq!(detectors(&alerts), detectors(&expected_alerts));
    }

    #[test]
    fn durable_partitions_are_installed_skip_what_they_hold_and_capture_what_changed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut setup = setup();
        setup.durable = true;
        let setup = Arc::new(setup);
        let system = actix::System::new();
        system.block_on(async {
            let shard = DetectorShard::new(Arc::clone(&setup)).start();
            let topic: Arc<str> = Arc::from("t");
            // Rows that alert on nothing (the producer never connects).
            let calm: Vec<Row> = rows(&setup).into_iter().take(5).collect();
            let detect = |rows: Vec<Row>| shard.send(Detect { topic: Arc::clone(&topic), partition: 0, rows });
            let before = detect(calm.clone()).await?;
            assert!(before.is_err_and(|e| e.is_passing()), "not installed yet: read again after a restore");

            // The changelog held the partition through offset 2.
            let partition_record = Some(PartitionRecord { through: 2, watermark: None });
            let install =
                Install { topic: Arc::clone(&topic), partition: 0, users: UserMap::default(), partition_record };
            assert_eq!(shard.send(install).await?, 0);
            assert_eq!(detect(calm).await?, Ok(Vec::new()));
            let capture = |through| shard.send(Capture { topic: Arc::clone(&topic), partition: 0, through });
            let Checkpoint { through, records } = capture(4).await??;
            assert_eq!((through, records.len()), (4, 2), "the user, then the partition's record");
            let (key, value) = &records[0];
            assert_eq!(record::decode_key(key), Ok(record::RecordKey::User(Key::Int(1))));
            let value = value.as_deref().ok_or("a tombstone where a state was due")?;
            let user = record::decode_user(&setup.detectors, value, &mut record::RestoreReport::default())?;
            assert_eq!((user.offset, user.spend()[0].len()), (4, 2), "offsets 0 to 2 were skipped as held");
            assert_eq!(records[1].0, record::PARTITION_KEY);
            let partition =
                PartitionRecord::decode(records[1].1.as_deref().ok_or("the partition's record has no value")?)?;
            assert_eq!(partition.through, 4);

            // The live user may have allocated more than its record holds.
            let counted = setup.state_bytes.load(Ordering::Relaxed);
            assert!(counted >= user.bytes_in_map(&Key::Int(1)) as i64, "the state-bytes gauge counts the user");

            // Nothing changed since: only the partition's record.
            let again = capture(4).await??;
            assert_eq!(again.records.len(), 1);

            // Two rows of the user since: captured once, as of the newer.
            let later = vec![row(&setup, 5, 5, "100"), row(&setup, 6, 6, "100")];
            assert_eq!(detect(later).await?, Ok(Vec::new()));
            let Checkpoint { records, .. } = capture(6).await??;
            assert_eq!(records.len(), 2, "the user once, then the partition's record");
            let value = records[0].1.as_deref().ok_or("a tombstone where a state was due")?;
            let user = record::decode_user(&setup.detectors, value, &mut record::RestoreReport::default())?;
            assert_eq!((user.offset, user.spend()[0].len()), (6, 4));
            let grown = setup.state_bytes.load(Ordering::Relaxed);
            assert!(grown >= user.bytes_in_map(&Key::Int(1)) as i64 && grown >= counted, "{grown} after {counted}");
            Ok(())
        })
    }

    #[test]
    fn a_row_that_always_panics_is_given_up_and_its_user_kept_as_before() {
        let setup = setup();
        let mut judge = GuardedJudge::default();
        let mut user = setup.detectors.new_user();
        let mut alerts = Vec::new();
        let rows = rows(&setup);
        for row in &rows[..5] {
            judge.guarded(&setup, &mut user, row, SOURCE, &mut alerts).expect("no panic");
        }
        let before = user.clone();
        faults::plan("detector", 5, u32::MAX);
        let given_up = judge.guarded(&setup, &mut user, &rows[5], SOURCE, &mut alerts).expect_err("always panics");
        assert_eq!(
            given_up,
            Panicked {
                offset: 5,
                stage: "detector",
                attempts: 3,
                message: "planned panic in the detector at offset 5".into()
            }
        );
        assert_eq!(user, before, "the row entered no state");
        assert!(alerts.is_empty(), "{} alerts", alerts.len());
        // The next row of the user is judged on the state before the
        // given-up one.
        let next = row(&setup, 6, 6, "4500");
        judge.guarded(&setup, &mut user, &next, SOURCE, &mut alerts).expect("no panic");
        assert_eq!(alerts.len(), 2, "4500 after five 100s: both detectors");
    }
}
