//! Routes each partition's batches to the detector shard that owns the
//! partition's users. Shards are chosen by partition (users are aligned to
//! partitions by the topic's key), with the same placement as the
//! partition actors, so a batch usually stays on its thread.

use std::sync::Arc;

use actix::Addr;
use futures::future::BoxFuture;

use super::shard::{Detect, DetectorShard, Forget};
use crate::row::Row;
use crate::stage::{placement, BatchError, Downstream};

pub struct DetectorRouter {
    shards: Vec<Addr<DetectorShard>>,
}

impl DetectorRouter {
    /// `shards[i]` runs on worker `i`.
    pub fn new(shards: Vec<Addr<DetectorShard>>) -> Self {
        DetectorRouter { shards }
    }

    fn shard(&self, topic: &str, partition: i32) -> &Addr<DetectorShard> {
        &self.shards[placement(topic, partition, self.shards.len())]
    }
}

impl Downstream for DetectorRouter {
    fn process(&self, topic: Arc<str>, partition: i32, rows: Vec<Row>) -> BoxFuture<'static, Result<(), BatchError>> {
        let request = self.shard(&topic, partition).send(Detect { topic, partition, rows });
        Box::pin(async move {
            match request.await {
                Ok(result) => result,
                // The shard is gone (its worker stopped): read the batch again.
                Err(reason) => Err(BatchError::Unavailable { stage: "detector shard", reason }),
            }
        })
    }

    fn revoked(&self, topic: &str, partition: i32) {
        self.shard(topic, partition).do_send(Forget { topic: Arc::from(topic), partition });
    }
}
