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
//! State lives in memory, per partition: a partition that leaves the
//! process takes its users' state with it (dropped on revocation), and a
//! restart starts empty. Keeping state across restarts is a later step.

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

use super::{CompileError, Detectors, UserMap, UserState};
use crate::row::{Key, Op, Row, Value};
use crate::sink::alert::{self, Alert, AlertContext, AlertSink, SourcePosition};
use crate::stage::{panic_message, BatchError, Output, Panicked};
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
}

/// The users of one partition.
#[derive(Default)]
struct PartitionUsers {
    users: UserMap,
    /// Keys of this partition first seen on another one (usually none).
    misaligned: HashSet<Key>,
    newest: Option<EventTime>,
    rows_since_expiry: usize,
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
        let part = self.partitions.entry((Arc::clone(&msg.topic), msg.partition)).or_default();
        let before = part.users.len();
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
            if !part.misaligned.is_empty() && part.misaligned.contains(&row.key) {
                misaligned += 1;
            }
            match self.judge.guarded(&setup, user, row, source, &mut alerts) {
                Ok(()) => part.newest = part.newest.max(Some(row.event_time)),
                Err(panicked) => given_up.push(panicked),
            }
        }
        part.rows_since_expiry += msg.rows.len();
        if part.rows_since_expiry >= EXPIRE_EVERY_ROWS {
            part.rows_since_expiry = 0;
            if let Some(now) = part.newest {
                let PartitionUsers { users, misaligned, .. } = part;
                users.retain(|key, user| {
                    let idle = detectors.expired(user, now);
                    if idle {
                        setup.forget_key(key, msg.partition);
                        misaligned.remove(key);
                    }
                    !idle
                });
            }
        }
        let delta = part.users.len() as i64 - before as i64;
        self.track(delta);
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
        if let Some(part) = self.partitions.remove(&(msg.topic, msg.partition)) {
            for key in part.users.keys() {
                self.setup.forget_key(key, msg.partition);
            }
            self.track(-(part.users.len() as i64));
        }
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
                    sink: {alerts: a, dead_letters: d}\n";
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
