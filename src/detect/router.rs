//! Routes each partition's batches to the detector shard that owns the
//! partition's users. Shards are chosen by partition (users are aligned to
//! partitions by the topic's key), with the same placement as the
//! partition actors, so a batch usually stays on its thread.
//!
//! The router is also the shards' supervisor. Rows cannot stop a shard (a
//! row that panics a detector is given up, see [`super::shard`]), but
//! should a shard stop all the same, its partitions' batches fail as
//! passing errors (their actors restart and read them again) and the next
//! batch for it starts a new shard in its place, on the same worker. With
//! durable state its partitions are then restored from their changelogs;
//! without, the users it held are lost, as in a restart of the process.
//!
//! With durable state the router also makes a partition's checkpoints
//! durable (the [`ChangelogWriter`]) and restores a partition's users
//! (the [`Restorer`], then [`Install`] on its shard), saying in one log
//! line how many and how long it took.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::{Actor, Addr, ArbiterHandle};
use futures::future::BoxFuture;
use tracing::{error, info, warn};

use super::restore::Loaded;
use super::shard::{Capture, Detect, DetectorShard, Forget, Install, ShardSetup};
use crate::changelog::restore::Restorer;
use crate::changelog::writer::ChangelogWriter;
use crate::row::Row;
use crate::stage::{placement, BatchError, Checkpoint, Downstream, Panicked};
use crate::telemetry::{names, zeroed_counter, Health};

pub struct DetectorRouter {
    /// One per worker: `shards[i]` runs on worker `i`.
    shards: Vec<Arc<ShardSlot>>,
    /// With `state.enabled`: where checkpoints go and restores come from.
    durable: Option<Arc<Durable>>,
}

/// The changelog side of a pipeline's state.
pub struct Durable {
    pub writer: ChangelogWriter,
    pub restorer: Restorer,
    users_restored: metrics::Counter,
}

impl Durable {
    pub fn new(pipeline: &str, writer: ChangelogWriter, restorer: Restorer) -> Self {
        Durable { writer, restorer, users_restored: zeroed_counter(names::STATE_USERS_RESTORED, pipeline) }
    }
}

/// A worker's shard, and what it takes to start it again.
struct ShardSlot {
    index: usize,
    worker: ArbiterHandle,
    setup: Arc<ShardSetup>,
    health: Health,
    shard: Mutex<Addr<DetectorShard>>,
}

fn start_shard(setup: &Arc<ShardSetup>, worker: &ArbiterHandle) -> Addr<DetectorShard> {
    let setup = Arc::clone(setup);
    DetectorShard::start_in_arbiter(worker, move |_| DetectorShard::new(setup))
}

impl ShardSlot {
    /// The running shard: a new one when the last has stopped.
    fn current(&self) -> Addr<DetectorShard> {
        let mut shard = self.shard.lock().unwrap_or_else(PoisonError::into_inner);
        if !shard.connected() {
            self.restart(&mut shard);
        }
        shard.clone()
    }

    /// `failed` did not answer: a new shard, unless one replaced it
    /// already. (Its mailbox may still look open while it is dropped.)
    fn replace(&self, failed: &Addr<DetectorShard>) {
        let mut shard = self.shard.lock().unwrap_or_else(PoisonError::into_inner);
        if *shard == *failed {
            self.restart(&mut shard);
        }
    }

    fn restart(&self, shard: &mut Addr<DetectorShard>) {
        let pipeline = &self.setup.pipeline;
        error!(%pipeline, worker = self.index, "a detector shard stopped; starting a new one (the users it held start empty)");
        self.health.restarted(pipeline, &format!("detector shard {}", self.index));
        self.setup.restarts.increment(1);
        *shard = start_shard(&self.setup, &self.worker);
    }
}

impl DetectorRouter {
    /// Starts one shard on each worker; with `durable`, state is
    /// checkpointed to and restored from changelogs.
    pub fn start(setup: Arc<ShardSetup>, workers: &[ArbiterHandle], health: Health, durable: Option<Durable>) -> Self {
        let shards = workers
            .iter()
            .enumerate()
            .map(|(index, worker)| {
                Arc::new(ShardSlot {
                    index,
                    worker: worker.clone(),
                    setup: Arc::clone(&setup),
                    health: health.clone(),
                    shard: Mutex::new(start_shard(&setup, worker)),
                })
            })
            .collect();
        DetectorRouter { shards, durable: durable.map(Arc::new) }
    }

    fn slot(&self, topic: &str, partition: i32) -> &Arc<ShardSlot> {
        &self.shards[placement(topic, partition, self.shards.len())]
    }

    #[cfg(test)]
    fn shard(&self, topic: &str, partition: i32) -> Addr<DetectorShard> {
        self.slot(topic, partition).current()
    }
}

/// Sends `message` to the slot's shard (sent now, so in order with what
/// was sent before); a shard gone is replaced, and the work is done again
/// (a passing error).
fn ask<M>(slot: &Arc<ShardSlot>, message: M) -> impl Future<Output = Result<M::Result, BatchError>> + Send + 'static
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    DetectorShard: actix::Handler<M>,
{
    let slot = Arc::clone(slot);
    let shard = slot.current();
    let request = shard.send(message);
    async move {
        request.await.map_err(|reason| {
            slot.replace(&shard);
            BatchError::Unavailable { stage: "detector shard", reason }
        })
    }
}

impl Downstream for DetectorRouter {
    fn process(
        &self,
        topic: Arc<str>,
        partition: i32,
        rows: Vec<Row>,
    ) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>> {
        let ask = ask(self.slot(&topic, partition), Detect { topic, partition, rows });
        Box::pin(async move { ask.await? })
    }

    fn keeps_state(&self) -> bool {
        self.durable.is_some()
    }

    fn checkpoint(
        &self,
        topic: Arc<str>,
        partition: i32,
        through: i64,
    ) -> BoxFuture<'static, Result<Checkpoint, BatchError>> {
        let ask = ask(self.slot(&topic, partition), Capture { topic, partition, through });
        Box::pin(async move { ask.await? })
    }

    fn persist(
        &self,
        topic: Arc<str>,
        partition: i32,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'static, Result<(), BatchError>> {
        match &self.durable {
            Some(durable) => durable.writer.write(&topic, partition, checkpoint.records),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn restore(&self, topic: Arc<str>, partition: i32) -> BoxFuture<'static, Result<(), BatchError>> {
        let Some(durable) = self.durable.clone() else { return Box::pin(async { Ok(()) }) };
        let slot = Arc::clone(self.slot(&topic, partition));
        let changelog = durable.writer.changelog(&topic);
        let pipeline = slot.setup.pipeline.clone();
        let started = Instant::now();
        let read = durable.restorer.read(changelog.clone(), partition, Loaded::new(Arc::clone(&slot.setup.detectors)));
        Box::pin(async move {
            let unreadable =
                |reason: String| BatchError::StateUnreadable { changelog: format!("{changelog}/{partition}"), reason };
            let (loaded, stats) = read.await.map_err(|e| unreadable(e.to_string()))?;
            let Loaded { users, partition: partition_record, report, .. } = loaded;
            let install = Install { topic: Arc::clone(&topic), partition, users, partition_record };
            let users = ask(&slot, install).await?;
            let took = started.elapsed();
            durable.users_restored.increment(users as u64);
            metrics::gauge!(names::STATE_RESTORE_SECONDS, "pipeline" => pipeline.clone(),
                "topic" => topic.to_string(), "partition" => partition.to_string())
            .set(took.as_secs_f64());
            info!(%pipeline, records = stats.records, bytes = stats.bytes,
                "restored {users} users of {topic}/{partition} in {} ms", took.as_millis());
            if let Some(summary) = report.summary() {
                warn!(%pipeline, %topic, partition, "the pipeline's detectors changed since the state was saved: {summary}");
            }
            Ok(())
        })
    }

    fn revoked(&self, topic: &str, partition: i32) {
        self.slot(topic, partition).current().do_send(Forget { topic: Arc::from(topic), partition });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use actix::Arbiter;

    use super::*;
    use crate::detect::shard::{tests as shard, Crash};

    #[test]
    fn a_shard_that_stopped_is_started_again_on_its_worker() {
        let system = actix::System::new();
        system.block_on(async {
            let worker = Arbiter::new();
            let health = Health::default();
            health.healthy("t");
            let setup = Arc::new(shard::setup());
            let router = DetectorRouter::start(Arc::clone(&setup), &[worker.handle()], health.clone(), None);
            // Rows that warm the state and alert on nothing (the producer
            // never connects).
            let calm = || shard::rows(&setup).into_iter().take(3).collect::<Vec<_>>();
            assert_eq!(router.process("t".into(), 0, calm()).await, Ok(Vec::new()));
            assert_eq!(setup.tracked_users.load(Ordering::Relaxed), 1);

            // A crash, then batches until one is taken: the first may meet
            // the dying shard (a passing error: read again), never more.
            let crash_and_process = || async {
                let crashed = router.shard("t", 0).send(Crash).await;
                assert_eq!(crashed, Err(actix::MailboxError::Closed), "the panic stopped the shard");
                let first = router.process("t".into(), 0, calm()).await;
                if first.is_err() {
                    assert!(first.is_err_and(|e| e.is_passing()));
                    return router.process("t".into(), 0, calm()).await;
                }
                first
            };
            assert_eq!(crash_and_process().await, Ok(Vec::new()), "a new shard took the batch");
            // The stopped shard is dropped on its worker, soon after.
            for _ in 0..100 {
                if setup.tracked_users.load(Ordering::Relaxed) == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(setup.tracked_users.load(Ordering::Relaxed), 1, "the stopped shard's user left the gauge");
            assert_eq!(health.check(), Ok("t: ok\n".into()), "one restart is no loop");

            for _ in 0..2 {
                assert_eq!(crash_and_process().await, Ok(Vec::new()));
            }
            let unhealthy = health.check().expect_err("three restarts in a minute");
            assert!(unhealthy.contains("detector shard 0 restarted 3 times"), "{unhealthy}");
            worker.stop();
        });
    }
}
