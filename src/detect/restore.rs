//! A partition's users read back from its changelog: each record decoded
//! as it arrives (the newest record of a user wins; a tombstone removes
//! it), on the restorer's thread rather than a worker's.

use std::sync::Arc;

use super::record::{self, PartitionRecord, RecordKey, RestoreReport};
use super::{Detectors, UserMap};
use crate::changelog::restore::Reading;

/// What a partition's changelog holds, decoded.
pub struct Loaded {
    detectors: Arc<Detectors>,
    pub users: UserMap,
    /// The newest partition record: the checkpoint restored.
    pub partition: Option<PartitionRecord>,
    /// What the current detectors could not take (changed parameters).
    pub report: RestoreReport,
}

impl Loaded {
    pub fn new(detectors: Arc<Detectors>) -> Self {
        Loaded { detectors, users: UserMap::default(), partition: None, report: RestoreReport::default() }
    }
}

/// Users reserved for at most: a compacted changelog holds about one
/// record per user, an uncompacted one many more (no need to reserve all).
const RESERVE_AT_MOST: u64 = 1 << 20;

impl Reading for Loaded {
    fn size_hint(&mut self, records: u64) {
        self.users.reserve(records.min(RESERVE_AT_MOST) as usize);
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match (record::decode_key(key).map_err(|e| e.to_string())?, value) {
            (RecordKey::User(user), None) => {
                self.users.remove(&user);
            }
            (RecordKey::User(user), Some(value)) => {
                let state = record::decode_user(&self.detectors, value, &mut self.report).map_err(|e| e.to_string())?;
                self.users.insert(user, state);
            }
            (RecordKey::Partition, Some(value)) => {
                self.partition = Some(PartitionRecord::decode(value).map_err(|e| e.to_string())?);
            }
            (RecordKey::Partition, None) => self.partition = None,
        }
        Ok(())
    }
}
