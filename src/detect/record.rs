//! The changelog's records of detector state, format version 1: a user's
//! state keyed by the user, and one record per partition.
//!
//! | part | bytes |
//! |---|---|
//! | key of a user | `0x01` + i64 big-endian (integer key), or `0x02` + UTF-8 (text key) |
//! | key of the partition record | `0xFF` + `partition` |
//! | user value | version `1`; offset; newest event time µs; entry count; entries |
//! | entry | kind (`1` spend_anomaly, `2` velocity_score); name length + UTF-8 name; body length; body |
//! | spend_anomaly body | count; per amount, oldest first: mantissa, scale byte |
//! | velocity_score body | count; times ascending, each the difference from the one before (µs) |
//! | partition value | version `1`; `through` (the last source offset the checkpoint holds); `0`, or `1` + watermark µs |
//!
//! Integers are LEB128 varints, signed ones zigzag-encoded first. Entries
//! are matched to the pipeline's detectors by kind and name, so a pipeline
//! changed since the state was written restores what still applies: a
//! detector removed or renamed loses its entry, a shorter history keeps
//! the newest amounts, a new detector starts empty ([`RestoreReport`]
//! says which). An entry of a kind this build does not know is skipped by
//! its length; a version it does not know is refused, never misread.

use std::collections::BTreeMap;

use super::spend::SpendHistory;
use super::velocity::VelocityWindow;
use super::{Detectors, UserState};
use crate::row::Key;
use crate::time::EventTime;

/// The format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The key of a partition's own record.
pub const PARTITION_KEY: &[u8] = b"\xFFpartition";

const INT_KEY: u8 = 0x01;
const TEXT_KEY: u8 = 0x02;
const SPEND: u8 = 1;
const VELOCITY: u8 = 2;
/// rust_decimal's largest scale.
const MAX_SCALE: u8 = 28;
/// A decimal's mantissa is 96 bits.
const MAX_MANTISSA: u128 = (1 << 96) - 1;

/// What a changelog record's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    User(Key),
    Partition,
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "state record format version {found} is not one this build reads (it reads {FORMAT_VERSION}): it was \
         written by another vigil; run that version, or delete the changelog topic to start with empty state"
    )]
    UnknownVersion { found: u8 },
    #[error("the state record ends too soon")]
    Truncated,
    #[error("the state record is malformed: {0}")]
    Malformed(&'static str),
}

/// A partition's own record: how far its last checkpoint reaches, and the
/// clock its users idle by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRecord {
    /// The last source offset whose rows the checkpoint holds.
    pub through: i64,
    /// The newest event time of the partition.
    pub watermark: Option<EventTime>,
}

impl PartitionRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_VERSION);
        put_signed(out, self.through.into());
        match self.watermark {
            Some(t) => {
                out.push(1);
                put_signed(out, t.micros().into());
            }
            None => out.push(0),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        r.version()?;
        let through = r.i64()?;
        let watermark = match r.byte()? {
            0 => None,
            1 => Some(EventTime(r.i64()?)),
            _ => return Err(RecordError::Malformed("watermark flag")),
        };
        Ok(PartitionRecord { through, watermark })
    }
}

/// The key bytes of a user's record.
pub fn key_bytes(key: &Key) -> Vec<u8> {
    match key {
        Key::Int(i) => {
            let mut out = Vec::with_capacity(9);
            out.push(INT_KEY);
            out.extend_from_slice(&i.to_be_bytes());
            out
        }
        Key::Text(s) => {
            let mut out = Vec::with_capacity(1 + s.len());
            out.push(TEXT_KEY);
            out.extend_from_slice(s.as_bytes());
            out
        }
    }
}

pub fn decode_key(bytes: &[u8]) -> Result<RecordKey, RecordError> {
    match bytes.split_first() {
        Some((&INT_KEY, rest)) => {
            let be: [u8; 8] = rest.try_into().map_err(|_| RecordError::Malformed("integer key length"))?;
            Ok(RecordKey::User(Key::Int(i64::from_be_bytes(be))))
        }
        Some((&TEXT_KEY, rest)) => {
            let text = std::str::from_utf8(rest).map_err(|_| RecordError::Malformed("text key not UTF-8"))?;
            Ok(RecordKey::User(Key::Text(text.into())))
        }
        _ if bytes == PARTITION_KEY => Ok(RecordKey::Partition),
        _ => Err(RecordError::Malformed("unknown key")),
    }
}

/// Appends the value of `user`'s record to `out`.
pub fn encode_user(detectors: &Detectors, user: &UserState, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    put_signed(out, user.offset.into());
    put_signed(out, user.newest.micros().into());
    put(out, (user.spend().len() + user.velocity().len()) as u128);
    let mut body = Vec::new();
    for ((detector, _), history) in detectors.spend_rules().zip(user.spend()) {
        body.clear();
        put(&mut body, history.len() as u128);
        for amount in history.amounts() {
            put_signed(&mut body, amount.mantissa());
            body.push(amount.scale() as u8);
        }
        entry(out, SPEND, &detector.name, &body);
    }
    for ((detector, _), window) in detectors.velocity_rules().zip(user.velocity()) {
        body.clear();
        put(&mut body, window.len() as u128);
        let mut before = 0i64;
        for t in window.times() {
            put_signed(&mut body, i128::from(t) - i128::from(before));
            before = t;
        }
        entry(out, VELOCITY, &detector.name, &body);
    }
}

fn entry(out: &mut Vec<u8>, kind: u8, name: &str, body: &[u8]) {
    out.push(kind);
    put(out, name.len() as u128);
    out.extend_from_slice(name.as_bytes());
    put(out, body.len() as u128);
    out.extend_from_slice(body);
}

/// What restoring could not take as it was, because the pipeline's
/// detectors changed since the state was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Users whose entry for a detector no longer in the pipeline (or of
    /// another type now) was dropped, by the entry's name.
    pub dropped: BTreeMap<String, u64>,
    /// Users whose history was longer than the detector's `history` now
    /// (the newest kept), by detector: (history, users).
    pub trimmed: BTreeMap<String, (usize, u64)>,
}

impl RestoreReport {
    /// One line of what was dropped and trimmed, if anything was.
    pub fn summary(&self) -> Option<String> {
        let dropped = self.dropped.iter().map(|(name, users)| {
            format!("dropped the state of {name}, no longer a detector of this type in the pipeline ({users} users)")
        });
        let trimmed = self.trimmed.iter().map(|(name, (history, users))| {
            format!("trimmed {name} to its history of {history} amounts, the newest kept ({users} users)")
        });
        let parts: Vec<String> = dropped.chain(trimmed).collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// A user's state from its record's value, for the current `detectors`.
pub fn decode_user(detectors: &Detectors, bytes: &[u8], report: &mut RestoreReport) -> Result<UserState, RecordError> {
    let mut r = Reader(bytes);
    r.version()?;
    let mut user = detectors.new_user();
    user.offset = r.i64()?;
    user.newest = EventTime(r.i64()?);
    let entries = r.count()?;
    for _ in 0..entries {
        let kind = r.byte()?;
        let name_len = r.count()?;
        let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| RecordError::Malformed("name not UTF-8"))?;
        let body_len = r.count()?;
        let mut body = Reader(r.take(body_len)?);
        let spend = (kind == SPEND).then(|| detectors.spend_rules().position(|(d, _)| d.name == name)).flatten();
        let velocity =
            (kind == VELOCITY).then(|| detectors.velocity_rules().position(|(d, _)| d.name == name)).flatten();
        if let Some(i) = spend {
            let limit = detectors.spend_rules().nth(i).map_or(1, |(_, rule)| rule.history());
            let (history, cut) = decode_history(&mut body, limit)?;
            if cut {
                report.trimmed.entry(name.to_owned()).or_insert((limit, 0)).1 += 1;
            }
            user.spend_mut()[i] = history;
        } else if let Some(i) = velocity {
            user.velocity_mut()[i] = decode_window(&mut body)?;
        } else {
            *report.dropped.entry(name.to_owned()).or_default() += 1;
        }
    }
    Ok(user)
}

/// A history of at most `limit` amounts (the newest), and whether older
/// ones were cut.
fn decode_history(body: &mut Reader<'_>, limit: usize) -> Result<(SpendHistory, bool), RecordError> {
    let count = body.count()?;
    let mut amounts = Vec::with_capacity(count.min(limit));
    for i in 0..count {
        let mantissa = body.signed()?;
        let scale = body.byte()?;
        if scale > MAX_SCALE {
            return Err(RecordError::Malformed("amount scale above 28"));
        }
        if mantissa.unsigned_abs() > MAX_MANTISSA {
            return Err(RecordError::Malformed("amount beyond a decimal"));
        }
        // The newest `limit` amounts only.
        if count - i <= limit {
            amounts.push((mantissa, scale));
        }
    }
    Ok((SpendHistory::restored(&amounts), count > limit))
}

fn decode_window(body: &mut Reader<'_>) -> Result<VelocityWindow, RecordError> {
    let count = body.count()?;
    let mut times = Vec::with_capacity(count);
    let mut t = 0i64;
    for _ in 0..count {
        t = i64::try_from(i128::from(t) + body.signed()?).map_err(|_| RecordError::Malformed("time beyond i64"))?;
        times.push(t);
    }
    Ok(VelocityWindow::from_times(times))
}

fn put(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i128) {
    put(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// Reads a record's bytes; every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&b, rest) = self.0.split_first().ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.0.len() {
            return Err(RecordError::Truncated);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn version(&mut self) -> Result<(), RecordError> {
        match self.byte()? {
            FORMAT_VERSION => Ok(()),
            found => Err(RecordError::UnknownVersion { found }),
        }
    }

    fn unsigned(&mut self) -> Result<u128, RecordError> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            v |= u128::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Malformed("varint too long"))
    }

    fn signed(&mut self) -> Result<i128, RecordError> {
        let v = self.unsigned()?;
        Ok(((v >> 1) as i128) ^ -((v & 1) as i128))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        i64::try_from(self.signed()?).map_err(|_| RecordError::Malformed("integer beyond i64"))
    }

    /// A count of things each at least a byte long: never more than the
    /// bytes left, so no count makes a reader allocate beyond the record.
    fn count(&mut self) -> Result<usize, RecordError> {
        let n = usize::try_from(self.unsigned()?).map_err(|_| RecordError::Truncated)?;
        if n > self.0.len() {
            return Err(RecordError::Truncated);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{pipeline_with, row_at};
    use rust_decimal::Decimal;

    const BOTH: &str = "[{type: spend_anomaly}, {type: velocity_score}]";

    /// A user fed `amounts`, a row every 10 s, offsets 0, 1, 2...
    fn user_of(detectors: &str, amounts: &[String]) -> (Detectors, UserState) {
        let (ds, p) = pipeline_with(detectors, "");
        let mut user = ds.new_user();
        for (i, a) in amounts.iter().enumerate() {
            let row = row_at(&p, i as i64, 10 * i as i64, a);
            ds.observe(&mut user, &row, true, |_, _| {});
            user.offset = row.offset;
        }
        (ds, user)
    }

    fn amounts(n: usize) -> Vec<String> {
        (0..n).map(|i| if i % 3 == 0 { format!("{}.5", i + 3) } else { format!("{}.25", 100 + i) }).collect()
    }

    fn spend_values(user: &UserState) -> Vec<Decimal> {
        user.spend()[0].amounts().collect()
    }

    #[test]
    fn a_user_comes_back_exactly() -> Result<(), RecordError> {
        let mut big = amounts(60);
        big.push("98765432101.17".into()); // beyond an i32 of cents
        big.push("1.0000000000000000000000000001".into()); // scale 28
        for list in [amounts(60), big] {
            let (ds, user) = user_of(BOTH, &list);
            let mut bytes = Vec::new();
            encode_user(&ds, &user, &mut bytes);
            let mut report = RestoreReport::default();
            let back = decode_user(&ds, &bytes, &mut report)?;
            assert_eq!((back.offset, back.newest), (user.offset, user.newest));
            assert_eq!(spend_values(&back), spend_values(&user));
            assert_eq!(back.velocity()[0].times().collect::<Vec<_>>(), user.velocity()[0].times().collect::<Vec<_>>());
            assert_eq!(report, RestoreReport::default());
        }
        let (ds, user) = user_of(BOTH, &amounts(200));
        let mut bytes = Vec::new();
        encode_user(&ds, &user, &mut bytes);
        assert!(bytes.len() <= 320, "a full reference user in {} bytes", bytes.len());
        let back = decode_user(&ds, &bytes, &mut RestoreReport::default())?;
        assert_eq!(back, user, "the same form too");
        Ok(())
    }

    #[test]
    fn keys_and_partition_records_come_back() {
        for key in [Key::Int(-7), Key::Int(i64::MAX), Key::Text("ü-42".into()), Key::Text("".into())] {
            assert_eq!(decode_key(&key_bytes(&key)), Ok(RecordKey::User(key.clone())));
        }
        assert_eq!(decode_key(PARTITION_KEY), Ok(RecordKey::Partition));
        assert!(decode_key(b"\x01\x00").is_err());
        for record in [
            PartitionRecord { through: 41, watermark: Some(EventTime(1_795_601_472_345_678)) },
            PartitionRecord { through: -1, watermark: None },
        ] {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(PartitionRecord::decode(&bytes), Ok(record));
        }
    }

    #[test]
    fn a_changed_pipeline_keeps_what_still_applies_and_says_what_not() -> Result<(), RecordError> {
        let (ds, user) = user_of(BOTH, &amounts(60));
        let mut bytes = Vec::new();
        encode_user(&ds, &user, &mut bytes);
        let (shorter, _) = pipeline_with("[{type: spend_anomaly, history: 20}]", "");
        let mut report = RestoreReport::default();
        let back = decode_user(&shorter, &bytes, &mut report)?;
        assert_eq!(spend_values(&back), spend_values(&user)[30..], "the newest 20 of 50");
        assert_eq!(report.trimmed, BTreeMap::from([("spend-anomaly".to_owned(), (20, 1))]));
        assert_eq!(report.dropped, BTreeMap::from([("velocity-score".to_owned(), 1)]));
        let summary = report.summary().unwrap_or_default();
        assert!(summary.contains("dropped the state of velocity-score") && summary.contains("trimmed spend-anomaly"));

        let (renamed, _) = pipeline_with("[{type: spend_anomaly, name: big}, {type: velocity_score}]", "");
        let mut report = RestoreReport::default();
        let back = decode_user(&renamed, &bytes, &mut report)?;
        assert!(back.spend()[0].is_empty(), "a renamed detector starts empty");
        assert_eq!(back.velocity()[0].len(), user.velocity()[0].len());
        assert_eq!(report.dropped, BTreeMap::from([("spend-anomaly".to_owned(), 1)]));
        Ok(())
    }

    #[test]
    fn an_unknown_version_is_refused_and_no_bytes_panic() {
        let (ds, user) = user_of(BOTH, &amounts(50));
        let mut bytes = Vec::new();
        encode_user(&ds, &user, &mut bytes);
        let mut newer = bytes.clone();
        newer[0] = 2;
        let err = decode_user(&ds, &newer, &mut RestoreReport::default()).expect_err("version 2");
        assert_eq!(err, RecordError::UnknownVersion { found: 2 });
        assert!(err.to_string().contains("delete the changelog topic"), "{err}");
        for end in 0..bytes.len() {
            let _ = decode_user(&ds, &bytes[..end], &mut RestoreReport::default());
            let _ = PartitionRecord::decode(&bytes[..end]);
        }
        // Random bytes and random corruptions of a real record.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let len = (next() % 300) as usize;
            let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = noise.first_mut() {
                *first = FORMAT_VERSION;
            }
            let _ = decode_user(&ds, &noise, &mut RestoreReport::default());
            let _ = decode_key(&noise);
            let mut corrupt = bytes.clone();
            let at = (next() as usize) % corrupt.len();
            corrupt[at] = next() as u8;
            let _ = decode_user(&ds, &corrupt, &mut RestoreReport::default());
        }
    }
}
