//! A detector shard: an actor owning the users of the partitions routed to
//! it. It runs the pipeline's detectors over each batch of rows, in order,
//! sends an alert for every finding, and answers once Kafka has
//! acknowledged all of the batch's alerts: only then may the batch's
//! offsets be committed.
//!
//! State lives in memory, per partition: a partition that leaves the
//! process takes its users' state with it (dropped on revocation), and a
//! restart starts empty. Keeping state across restarts is a later step.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use futures::future::join_all;
use tracing::warn;

use super::{CompileError, Detectors, UserMap};
use crate::row::{Key, Op, Row, Value};
use crate::sink::alert::{self, AlertContext, AlertSink, SourcePosition};
use crate::stage::{BatchError, Output};
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
    /// Looked at when a shard meets a key, not for every row.
    pub key_partitions: DashMap<Key, i32>,
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
        })
    }
}

pub struct DetectorShard {
    setup: Arc<ShardSetup>,
    partitions: HashMap<(Arc<str>, i32), PartitionUsers>,
    last_misalignment_warning: Option<Instant>,
}

impl DetectorShard {
    pub fn new(setup: Arc<ShardSetup>) -> Self {
        DetectorShard { setup, partitions: HashMap::new(), last_misalignment_warning: None }
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

/// A batch of one partition's rows, in offset order.
#[derive(Message)]
#[rtype(result = "Result<(), BatchError>")]
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
    type Result = ResponseFuture<Result<(), BatchError>>;

    fn handle(&mut self, msg: Detect, _ctx: &mut Context<Self>) -> Self::Result {
        let setup = Arc::clone(&self.setup);
        let detectors = &setup.detectors;
        let part = self.partitions.entry((Arc::clone(&msg.topic), msg.partition)).or_default();
        let before = part.users.len();
        let mut alerts = Vec::new();
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
        for row in &msg.rows {
            let alerting = setup.alerting_ops.contains(&row.op);
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
            let first = alerts.len();
            detectors.observe(user, row, alerting, |i, finding| {
                let detector = &detectors.list()[i];
                let ctx = AlertContext {
                    pipeline: &setup.pipeline,
                    detector: &detector.name,
                    primary_key: &setup.primary_key,
                    source: SourcePosition { topic: &msg.topic, partition: msg.partition },
                };
                let amount = row.values.get(detector.amount).unwrap_or(&Value::Null);
                alerts.push((i, alert::build(&ctx, row, amount, &finding)));
            });
            // A row's alerts go out in the file's order of detectors.
            if alerts.len() - first > 1 {
                alerts[first..].sort_by_key(|(i, _)| *i);
            }
            part.newest = part.newest.max(Some(row.event_time));
        }
        part.rows_since_expiry += msg.rows.len();
        if detectors.expires_users() && part.rows_since_expiry >= EXPIRE_EVERY_ROWS {
            part.rows_since_expiry = 0;
            if let Some(now) = part.newest {
                part.users.retain(|_, user| !detectors.expire(user, now));
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
                    Err(error) => return Err(BatchError::NotDelivered { what: Output::Alert, error }),
                }
            }
            Ok(())
        })
    }
}

impl Handler<Forget> for DetectorShard {
    type Result = ();

    fn handle(&mut self, msg: Forget, _ctx: &mut Context<Self>) {
        if let Some(part) = self.partitions.remove(&(msg.topic, msg.partition)) {
            self.track(-(part.users.len() as i64));
        }
    }
}
