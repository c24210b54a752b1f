//! Detectors: per-user state and the rules that turn rows into findings.
//!
//! [`Detectors::compile`] turns a pipeline's validated detectors into
//! rules with everything a row needs worked out once (column positions,
//! windows in microseconds, factors split), refusing at start what cannot
//! be read. Each rule owns its state type ([`spend`]: a [`SpendHistory`],
//! [`velocity`]: a [`VelocityWindow`]), and a user's state holds one of
//! each per rule of that kind, so a rule always meets its own state.
//! The rules are plain values over plain state, tested and benched
//! without actors; [`shard::DetectorShard`] owns the users of some
//! partitions and turns findings into alerts; [`router::DetectorRouter`]
//! hands each partition's batches to its shard.

mod exact;
pub mod record;
pub mod restore;
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
use spend::{SpendAnomaly, SpendFinding, SpendHistory};
use velocity::{VelocityFinding, VelocityScore, VelocityWindow};

/// One detector of a pipeline, as its alerts name it.
#[derive(Debug, Clone)]
pub struct Detector {
    pub name: String,
    /// Position of its amount column in every row's values.
    pub amount: usize,
}

/// A compiled rule and the detector it is.
#[derive(Debug, Clone)]
struct Compiled<R> {
    /// Position in [`Detectors::list`].
    detector: usize,
    /// Position of its amount column in every row's values.
    amount: usize,
    rule: R,
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

/// A detector's amount column is not among the columns the pipeline
/// reads: the pipeline is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: detectors[{index}] ({name}): amount column {column} is not read by the pipeline")]
pub struct CompileError {
    pub file: String,
    pub index: usize,
    pub name: String,
    pub column: String,
}

/// A user's state: one per rule, by kind, in the order of the rules.
#[derive(Debug)]
pub struct UserState {
    /// The newest event time seen for the user.
    pub newest: EventTime,
    /// The offset of the newest source record in the state
    /// ([`UserState::NO_OFFSET`] when none): a record read again at or
    /// below it (after a restore or a rewind) has entered the state
    /// already, and its alerts were acknowledged.
    pub offset: i64,
    spend: Box<[SpendHistory]>,
    velocity: Box<[VelocityWindow]>,
    /// Durable state's bookkeeping, kept by the shard.
    pub(crate) capture: CaptureMark,
}

/// Where a user stands with its partition's next checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CaptureMark {
    /// Changed since the last capture, and listed to be captured.
    pub listed: bool,
    /// The user's bytes as the state-bytes gauge counts them: as of its
    /// last capture or install.
    pub counted_bytes: usize,
}

/// Equal states hold the same: the capture's bookkeeping aside.
impl PartialEq for UserState {
    fn eq(&self, other: &Self) -> bool {
        self.newest == other.newest
            && self.offset == other.offset
            && self.spend == other.spend
            && self.velocity == other.velocity
    }
}

/// `clone_from` reuses the allocations it can: the shard saves a user's
/// state before every row (to put it back should judging the row panic),
/// and a copy that allocated each time would cost more than the row.
impl Clone for UserState {
    fn clone(&self) -> Self {
        UserState {
            newest: self.newest,
            offset: self.offset,
            spend: self.spend.clone(),
            velocity: self.velocity.clone(),
            capture: self.capture,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.newest = source.newest;
        self.offset = source.offset;
        self.capture = source.capture;
        // States of one pipeline hold the same rules: copied in place.
        if self.spend.len() != source.spend.len() || self.velocity.len() != source.velocity.len() {
            *self = source.clone();
            return;
        }
        for (to, from) in self.spend.iter_mut().zip(&source.spend) {
            to.clone_from(from);
        }
        for (to, from) in self.velocity.iter_mut().zip(&source.velocity) {
            to.clone_from(from);
        }
    }
}

/// The users of a partition. Keys are user ids from the operator's own
/// database, not chosen by an attacker: foldhash rather than SipHash.
pub type UserMap = HashMap<Key, UserState, foldhash::fast::RandomState>;

/// hashbrown's largest load factor: a map holds at most 7 entries for
/// every 8 buckets (and resizes by doubling, so down to 7 for 16).
const MAX_LOAD: (usize, usize) = (7, 8);

impl UserState {
    /// [`UserState::offset`] of a state that holds no source record.
    pub const NO_OFFSET: i64 = -1;

    /// Each `spend_anomaly` rule's history, in the order of
    /// [`Detectors::spend_rules`].
    pub fn spend(&self) -> &[SpendHistory] {
        &self.spend
    }

    pub fn spend_mut(&mut self) -> &mut [SpendHistory] {
        &mut self.spend
    }

    /// Each `velocity_score` rule's window, in the order of
    /// [`Detectors::velocity_rules`].
    pub fn velocity(&self) -> &[VelocityWindow] {
        &self.velocity
    }

    pub fn velocity_mut(&mut self) -> &mut [VelocityWindow] {
        &mut self.velocity
    }

    /// Bytes the state has allocated, from capacities: its slices and what
    /// each state holds.
    pub fn heap_bytes(&self) -> usize {
        let held: usize = self.spend.iter().map(SpendHistory::heap_bytes).sum::<usize>()
            + self.velocity.iter().map(VelocityWindow::heap_bytes).sum::<usize>();
        size_of_val(&*self.spend) + size_of_val(&*self.velocity) + held
    }

    /// Starts loading what the next update of the user reads (each
    /// state's oldest entry): a batch that looks its users up before
    /// judging them waits for their cache misses together, not one after
    /// another.
    pub fn prefetch(&self) {
        for history in self.spend.iter() {
            prefetch(history.oldest());
        }
        for window in self.velocity.iter() {
            prefetch(window.oldest());
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

    fn is_empty(&self) -> bool {
        self.spend.iter().all(SpendHistory::is_empty) && self.velocity.iter().all(VelocityWindow::is_empty)
    }
}

/// Copies `from` into `to`'s allocation: two slice copies, where
/// `VecDeque::clone_from` pushes element by element.
fn copy_ring<T: Copy>(to: &mut VecDeque<T>, from: &VecDeque<T>) {
    to.clear();
    let (front, back) = from.as_slices();
    to.extend(front);
    if !back.is_empty() {
        to.extend(back);
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

/// The detectors of one pipeline, compiled.
#[derive(Debug, Clone)]
pub struct Detectors {
    list: Box<[Detector]>,
    spend: Box<[Compiled<SpendAnomaly>]>,
    velocity: Box<[Compiled<VelocityScore>]>,
    /// `state.idle_timeout`, µs.
    idle_timeout: i64,
}

impl Detectors {
    /// Compiles `pipeline`'s detectors for rows read as `projection`
    /// says.
    pub fn compile(pipeline: &Pipeline, projection: &Projection) -> Result<Detectors, CompileError> {
        let (mut list, mut spend, mut velocity) = (Vec::new(), Vec::new(), Vec::new());
        for (detector, config) in pipeline.detectors.iter().enumerate() {
            let column = config.amount();
            let amount = projection.index(column).ok_or_else(|| CompileError {
                file: pipeline.file.display().to_string(),
                index: detector,
                name: config.name.clone(),
                column: column.to_owned(),
            })?;
            list.push(Detector { name: config.name.clone(), amount });
            match &config.kind {
                DetectorKind::SpendAnomaly(c) => spend.push(Compiled { detector, amount, rule: SpendAnomaly::new(c) }),
                DetectorKind::VelocityScore(c) => {
                    velocity.push(Compiled { detector, amount, rule: VelocityScore::new(c) })
                }
            }
        }
        let idle_timeout = i64::try_from(pipeline.state.idle_timeout.as_micros()).unwrap_or(i64::MAX);
        Ok(Detectors { list: list.into(), spend: spend.into(), velocity: velocity.into(), idle_timeout })
    }

    /// The pipeline's detectors, in the file's order.
    pub fn list(&self) -> &[Detector] {
        &self.list
    }

    /// The `spend_anomaly` rules and their detectors, in the order of
    /// [`UserState::spend`].
    pub fn spend_rules(&self) -> impl Iterator<Item = (&Detector, &SpendAnomaly)> {
        self.spend.iter().map(|c| (&self.list[c.detector], &c.rule))
    }

    /// The `velocity_score` rules and their detectors, in the order of
    /// [`UserState::velocity`].
    pub fn velocity_rules(&self) -> impl Iterator<Item = (&Detector, &VelocityScore)> {
        self.velocity.iter().map(|c| (&self.list[c.detector], &c.rule))
    }

    pub fn new_user(&self) -> UserState {
        UserState {
            newest: EventTime(i64::MIN),
            offset: UserState::NO_OFFSET,
            spend: self.spend.iter().map(|_| SpendHistory::default()).collect(),
            velocity: self.velocity.iter().map(|_| VelocityWindow::default()).collect(),
            capture: CaptureMark::default(),
        }
    }

    /// Runs every detector over `row`, updating `user`. With `alerting`
    /// false (warm ops such as the snapshot's `r`) the state is updated and
    /// nothing is reported. Calls `found(detector index, finding)` for
    /// each finding, rules of one kind after another (not in the file's
    /// order).
    pub fn observe(&self, user: &mut UserState, row: &Row, alerting: bool, mut found: impl FnMut(usize, Finding)) {
        user.newest = user.newest.max(row.event_time);
        // The decoder guarantees a decimal in every amount column.
        let amount = |at: usize| row.values.get(at).and_then(|v| v.as_decimal());
        for (c, history) in self.spend.iter().zip(user.spend.iter_mut()) {
            let Some(amount) = amount(c.amount) else { continue };
            if let (Some(f), true) = (c.rule.observe(history, amount), alerting) {
                found(c.detector, Finding::Spend(f));
            }
        }
        // Past the first rules, so that a planned panic leaves a state half
        // updated, as a real one might.
        #[cfg(test)]
        crate::stage::faults::strike("detector", row.offset);
        for (c, window) in self.velocity.iter().zip(user.velocity.iter_mut()) {
            let Some(amount) = amount(c.amount) else { continue };
            if let (Some(f), true) = (c.rule.observe(window, row.event_time, amount), alerting) {
                found(c.detector, Finding::Velocity(f));
            }
        }
    }

    /// Whether `user` has been idle (in event time, against `now`, the
    /// newest time of its partition) for longer than `state.idle_timeout`,
    /// or holds nothing: then it is forgotten by every detector at once.
    pub fn expired(&self, user: &UserState, now: EventTime) -> bool {
        let idle = now.micros().saturating_sub(user.newest.micros());
        idle > self.idle_timeout || user.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::row::{Key, Op, Value};
    use std::sync::Arc;

    fn pipeline(detectors: &str) -> (Detectors, Projection) {
        pipeline_with(detectors, "")
    }

    /// Detectors of a pipeline with `more` top-level sections.
    pub(crate) fn pipeline_with(detectors: &str, more: &str) -> (Detectors, Projection) {
        let text = format!(
            "name: t\nsource: {{brokers: b, topics: [t], group: g}}\nformat: {{type: debezium-json}}\n\
             rows: {{key: user_id, event_time: created_at}}\ndetectors: {detectors}\n\
             sink: {{alerts: a, dead_letters: d}}\n{more}"
        );
        let p = load_str("t.yaml", &text, |_| None).expect("valid");
        let projection = Projection::new(p.columns());
        (Detectors::compile(&p, &projection).expect("every amount column is read"), projection)
    }

    fn row(projection: &Projection, seconds: i64, amount: &str) -> Row {
        row_at(projection, 0, seconds, amount)
    }

    /// A create of user 1 at `seconds` with `amount`, read at `offset`.
    pub(crate) fn row_at(projection: &Projection, offset: i64, seconds: i64, amount: &str) -> Row {
        let mut values = vec![Value::Null; projection.columns().len()];
        values[projection.index("amount").expect("amount")] = Value::Decimal(amount.parse().expect("decimal"));
        Row {
            op: Op::Create,
            key: Key::Int(1),
            event_time: EventTime(seconds * 1_000_000),
            values: values.into(),
            table: Arc::from("public.transactions"),
            lsn: None,
            offset,
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
        // The warm history counts: 4000 against 100, 100, 100 and 5000.
        ds.observe(&mut user, &row(&p, 0, "4000"), true, |_, _| found += 1);
        assert_eq!(found, 1, "4000 x 4 = 16000 > 3 x 5300 = 15900");
    }

    #[test]
    fn a_pipeline_whose_amount_column_is_not_read_is_refused() {
        let text = "name: t\nsource: {brokers: b, topics: [t], group: g}\nformat: {type: debezium-json}\n\
                    rows: {key: user_id, event_time: created_at}\n\
                    detectors: [{type: velocity_score}, {type: spend_anomaly, amount: total}]\n\
                    sink: {alerts: a, dead_letters: d}\n";
        let p = load_str("t.yaml", text, |_| None).expect("valid");
        let without_total = Projection::new(vec!["user_id".into(), "created_at".into(), "id".into(), "amount".into()]);
        let err = Detectors::compile(&p, &without_total).expect_err("total is not read");
        assert_eq!(
            err.to_string(),
            "t.yaml: detectors[1] (spend-anomaly): amount column total is not read by the pipeline"
        );
        let all = Detectors::compile(&p, &Projection::new(p.columns())).expect("every column read");
        let names: Vec<&str> = all.list().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["velocity-score", "spend-anomaly"]);
    }

    #[test]
    fn findings_name_their_detector_in_the_files_order() {
        let (ds, p) = pipeline("[{type: velocity_score, velocity: {max_count: 0}, alert_above: 39}, {type: spend_anomaly, min_history: 1, min_amount: 0}]");
        let mut user = ds.new_user();
        let mut found = Vec::new();
        for a in ["1", "100"] {
            ds.observe(&mut user, &row(&p, 0, a), true, |i, f| found.push((i, matches!(f, Finding::Spend(_)))));
        }
        found.sort();
        assert_eq!(found, [(0, false), (0, false), (1, true)]);
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
        let (ds, p) = pipeline_with("[{type: spend_anomaly}, {type: velocity_score}]", "state: {idle_timeout: 1h}\n");
        let mut user = ds.new_user();
        assert!(ds.expired(&user, EventTime(0)), "a user holding nothing");
        ds.observe(&mut user, &row(&p, 0, "1"), true, |_, _| {});
        assert!(!ds.expired(&user, EventTime(3_600 * 1_000_000)), "exactly 1 h idle is kept");
        assert!(ds.expired(&user, EventTime(3_600 * 1_000_000 + 1)), "a µs more: forgotten by both");
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
        let ([h], [w]) = (&*user.spend, &*user.velocity) else { panic!("{user:?}") };
        assert_eq!((h.len(), w.len()), (50, 7));
        let bytes = user.bytes_in_map(&Key::Int(1));
        let entry = bytes - user.heap_bytes();
        let parts = (size_of_val(&*user.spend) + size_of_val(&*user.velocity), h.heap_bytes(), w.heap_bytes());
        assert!(bytes <= 512, "{bytes} bytes: the map's {entry}, the slots, amounts and times {parts:?}");
    }
}
