//! Detectors: per-user state and the rules that turn rows into findings.
//!
//! The rules are plain functions over plain state ([`spend`],
//! [`velocity`]), tested and benched without actors. [`Detectors`] runs a
//! pipeline's detectors over one user's state; [`shard::DetectorShard`]
//! owns the users of some partitions and turns findings into alerts;
//! [`router::DetectorRouter`] hands each partition's batches to its shard.

mod exact;
pub mod router;
pub mod shard;
pub mod spend;
pub mod velocity;

use std::collections::{HashMap, VecDeque};

use rust_decimal::Decimal;

use crate::config::{DetectorKind, Pipeline};
use crate::row::{Key, Projection, Row};
use crate::sink::alert::Evidence;
use crate::time::EventTime;
use spend::{SpendFinding, SpendHistory};
use velocity::{VelocityFinding, VelocityWindow};

/// One detector of a pipeline, resolved against the pipeline's columns.
#[derive(Debug, Clone)]
pub struct Detector {
    pub name: String,
    pub kind: DetectorKind,
    /// Position of its amount column in every row's values.
    amount: usize,
}

/// What a detector found in a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Spend(SpendFinding),
    Velocity(VelocityFinding),
}

impl Evidence for Finding {
    /// How many times the mean for a spend anomaly, the points for a
    /// velocity score.
    fn score(&self) -> Decimal {
        match self {
            Finding::Spend(f) => f.ratio(),
            Finding::Velocity(f) => Decimal::from(f.score),
        }
    }

    fn reasons(&self) -> serde_json::Value {
        match self {
            Finding::Spend(f) => f.reasons(),
            Finding::Velocity(f) => f.reasons(),
        }
    }
}

/// A user's state for every detector of the pipeline, by position.
#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    /// The newest event time seen for the user.
    pub newest: EventTime,
    slots: Box<[Slot]>,
}

/// The users of a partition. Keys are user ids from the operator's own
/// database, not chosen by an attacker: foldhash rather than SipHash.
pub type UserMap = HashMap<Key, UserState, foldhash::fast::RandomState>;

/// hashbrown's largest load factor: a map holds at most 7 entries for
/// every 8 buckets (and resizes by doubling, so down to 7 for 16).
const MAX_LOAD: (usize, usize) = (7, 8);

impl UserState {
    /// Bytes the state has allocated, from capacities: its slots and what
    /// each slot holds.
    pub fn heap_bytes(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Spend(h) => h.heap_bytes(),
                Slot::Velocity(w) => w.heap_bytes(),
            })
            .sum();
        size_of_val(&*self.slots) + slots
    }

    /// Starts loading what the next update of the user reads (each
    /// slot's oldest entry): a batch that looks its users up before judging
    /// them waits for their cache misses together, not one after another.
    pub fn prefetch(&self) {
        for slot in self.slots.iter() {
            prefetch(match slot {
                Slot::Spend(h) => h.oldest(),
                Slot::Velocity(w) => w.oldest(),
            });
        }
    }

    /// What the user costs in a [`UserMap`] at its fullest: the entry and
    /// its control byte over the load factor, the key's text, the heap.
    pub fn bytes_in_map(&self, key: &Key) -> usize {
        let entry = (size_of::<(Key, UserState)>() + 1) * MAX_LOAD.1 / MAX_LOAD.0;
        let key_text = match key {
            Key::Text(s) => s.len(),
            Key::Int(_) => 0,
        };
        entry + key_text + self.heap_bytes()
    }
}

/// Where a ring's oldest entry is (dangling when it is empty, which a
/// prefetch allows).
fn oldest<T>(ring: &VecDeque<T>) -> *const u8 {
    ring.as_slices().0.as_ptr().cast()
}

/// Asks the CPU to bring the cache line at `at` closer: a hint, which
/// reads nothing and cannot fault, whatever the address.
#[inline]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch neither dereferences its address nor faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Spend(SpendHistory),
    Velocity(VelocityWindow),
}

/// The detectors of one pipeline.
#[derive(Debug, Clone)]
pub struct Detectors {
    list: Vec<Detector>,
}

impl Detectors {
    pub fn for_pipeline(pipeline: &Pipeline, projection: &Projection) -> Detectors {
        let list = pipeline
            .detectors
            .iter()
            .map(|d| Detector {
                name: d.name.clone(),
                kind: d.kind.clone(),
                amount: projection.index(d.amount()).unwrap_or(0),
            })
            .collect();
        Detectors { list }
    }

    pub fn list(&self) -> &[Detector] {
        &self.list
    }

    pub fn new_user(&self) -> UserState {
        let slots = self
            .list
            .iter()
            .map(|d| match d.kind {
                DetectorKind::SpendAnomaly(_) => Slot::Spend(SpendHistory::default()),
                DetectorKind::VelocityScore(_) => Slot::Velocity(VelocityWindow::default()),
            })
            .collect();
        UserState { newest: EventTime(i64::MIN), slots }
    }

    /// Runs every detector over `row`, updating `user`. With `alerting`
    /// false (warm ops such as the snapshot's `r`) the state is updated and
    /// nothing is reported. Calls `found(detector index, finding)`.
    pub fn observe(&self, user: &mut UserState, row: &Row, alerting: bool, mut found: impl FnMut(usize, Finding)) {
        user.newest = user.newest.max(row.event_time);
        for (i, (detector, slot)) in self.list.iter().zip(user.slots.iter_mut()).enumerate() {
            // The decoder guarantees a decimal in every amount column.
            let Some(amount) = row.values.get(detector.amount).and_then(|v| v.as_decimal()) else {
                continue;
            };
            let finding = match (&detector.kind, slot) {
                (DetectorKind::SpendAnomaly(c), Slot::Spend(h)) => spend::observe(c, h, amount).map(Finding::Spend),
                (DetectorKind::VelocityScore(c), Slot::Velocity(w)) => {
                    velocity::observe(c, w, row.event_time, amount).map(Finding::Velocity)
                }
                _ => None,
            };
            if let (true, Some(f)) = (alerting, finding) {
                found(i, f);
            }
        }
    }

    /// Forgets the velocity state of a user idle (in event time, against
    /// `now`, the newest time of its partition) for longer than its
    /// detector's `idle_timeout`. True when nothing is left to keep.
    pub fn expire(&self, user: &mut UserState, now: EventTime) -> bool {
        let idle = now.micros().saturating_sub(user.newest.micros());
        let mut empty = true;
        for (detector, slot) in self.list.iter().zip(user.slots.iter_mut()) {
            match (&detector.kind, slot) {
                (DetectorKind::VelocityScore(c), Slot::Velocity(w)) => {
                    let timeout = c.idle_timeout.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
                    if timeout.is_some_and(|t| idle > t) {
                        *w = VelocityWindow::default();
                    }
                    empty &= w.is_empty();
                }
                (_, Slot::Spend(h)) => empty &= h.is_empty(),
                _ => empty = false,
            }
        }
        empty
    }

    /// Whether any detector forgets idle users.
    pub fn expires_users(&self) -> bool {
        self.list.iter().any(|d| matches!(&d.kind, DetectorKind::VelocityScore(c) if c.idle_timeout.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::row::{Key, Op, Value};
    use std::sync::Arc;

    fn pipeline(detectors: &str) -> (Detectors, Projection) {
        let text = format!(
            "name: t\nsource: {{brokers: b, topics: [t], group: g}}\nformat: {{type: debezium-json}}\n\
             rows: {{key: user_id, event_time: created_at}}\ndetectors: {detectors}\n\
             sink: {{alerts: a, dead_letters: d}}\n"
        );
        let p = load_str("t.yaml", &text, |_| None).expect("valid");
        let projection = Projection::new(p.columns());
        (Detectors::for_pipeline(&p, &projection), projection)
    }

    fn row(projection: &Projection, seconds: i64, amount: &str) -> Row {
        let mut values = vec![Value::Null; projection.columns().len()];
        values[projection.index("amount").expect("amount")] = Value::Decimal(amount.parse().expect("decimal"));
        Row {
            op: Op::Create,
            key: Key::Int(1),
            event_time: EventTime(seconds * 1_000_000),
            values: values.into(),
            table: Arc::from("public.transactions"),
            lsn: None,
            offset: 0,
        }
    }

    #[test]
    fn both_reference_detectors_on_one_user() {
        let (ds, p) = pipeline("[{type: spend_anomaly}, {type: velocity_score}]");
        let mut user = ds.new_user();
        let mut found = Vec::new();
        for (t, a) in [(0, "100"), (1, "100"), (2, "100"), (3, "100"), (4, "100"), (5, "4500")] {
            ds.observe(&mut user, &row(&p, t, a), true, |i, f| found.push((i, f)));
        }
        // 4500 > 3 x 100 and > 500; the sixth row in 60 s with 4500 > 4000: 90.
        let kinds: Vec<(usize, Decimal)> = found.iter().map(|(i, f)| (*i, f.score())).collect();
        assert_eq!(kinds, [(0, Decimal::from(45)), (1, Decimal::from(90))]);
    }

    #[test]
    fn warm_rows_update_state_without_alerting() {
        let (ds, p) = pipeline("[{type: spend_anomaly}]");
        let mut user = ds.new_user();
        let mut found = 0;
        for a in ["100", "100", "100", "5000"] {
            ds.observe(&mut user, &row(&p, 0, a), false, |_, _| found += 1);
        }
        assert_eq!(found, 0);
        // The warm history counts: 100,100,100,5000 → mean 1325; 5000 is not > 3975? It is.
        ds.observe(&mut user, &row(&p, 0, "4000"), true, |_, _| found += 1);
        assert_eq!(found, 1, "4000 x 4 = 16000 > 3 x 5300 = 15900");
    }

    #[test]
    fn a_rings_oldest_entry_is_found_when_it_wraps() {
        let mut ring: VecDeque<i64> = VecDeque::with_capacity(4);
        let _ = oldest(&ring); // empty: an address, never read
        for x in 0..10 {
            if ring.len() == 4 {
                ring.pop_front();
            }
            ring.push_back(x);
            assert_eq!(oldest(&ring), std::ptr::from_ref(&ring[0]).cast::<u8>(), "after pushing {x}");
        }
        assert_eq!(ring, [6, 7, 8, 9]);
    }

    #[test]
    fn idle_users_are_forgotten_by_event_time() {
        let (ds, p) = pipeline("[{type: velocity_score, idle_timeout: 1h}]");
        assert!(ds.expires_users());
        let mut user = ds.new_user();
        ds.observe(&mut user, &row(&p, 0, "1"), true, |_, _| {});
        assert!(!ds.expire(&mut user, EventTime(3_600 * 1_000_000)), "exactly 1 h idle is kept");
        assert!(ds.expire(&mut user, EventTime(3_600 * 1_000_000 + 1)), "a µs more: forgotten");
    }

    /// The reference detectors' state of a user with a full history of 50
    /// amounts and a row every 10 s (the load test's pace: 7 rows in the
    /// 60 s window, more than its 5), in a map at its fullest.
    #[test]
    fn a_full_user_costs_at_most_512_bytes() {
        let (ds, p) = pipeline("[{type: spend_anomaly}, {type: velocity_score}]");
        let mut user = ds.new_user();
        for i in 0..200 {
            ds.observe(&mut user, &row(&p, 10 * i, &format!("{}.{:02}", 3 + i % 290, i % 100)), true, |_, _| {});
        }
        let [Slot::Spend(h), Slot::Velocity(w)] = &*user.slots else { panic!("{:?}", user.slots) };
        assert_eq!((h.len(), w.len()), (50, 7));
        let bytes = user.bytes_in_map(&Key::Int(1));
        let entry = bytes - user.heap_bytes();
        let parts = (size_of_val(&*user.slots), h.heap_bytes(), w.heap_bytes());
        assert!(bytes <= 512, "{bytes} bytes: the map's {entry}, the slots, amounts and times {parts:?}");
    }
}
