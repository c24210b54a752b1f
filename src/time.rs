//! Event time: microseconds since the Unix epoch, UTC.
//!
//! Rows carry their own time (a timestamp column, or Debezium's
//! `source.ts_ms`); windows are measured in it, never in wall-clock time.
//! PostgreSQL keeps microseconds, so that is the unit. This module also
//! parses and prints the ISO-8601 form Debezium uses for `ZonedTimestamp`,
//! without a calendar library: only UTC offsets, no time zones by name.

use std::fmt;

/// A point in event time: microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(pub i64);

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

impl EventTime {
    /// The wall clock, for what is stamped or checked against it (an
    /// alert's `detected_at`, an implausible event time), never for windows.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        EventTime(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    pub fn from_millis(ms: i64) -> Option<Self> {
        ms.checked_mul(1_000).map(EventTime)
    }

    /// Nanoseconds are floored to the microsecond.
    pub fn from_nanos(ns: i64) -> Self {
        EventTime(ns.div_euclid(1_000))
    }

    pub fn from_days(days: i64) -> Option<Self> {
        days.checked_mul(SECONDS_PER_DAY * MICROS_PER_SECOND).map(EventTime)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM|±HHMM)`; a space may
    /// stand for `T`. Digits beyond microseconds are floored.
    pub fn parse_iso8601(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(range)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut i = 19;
        let mut micros = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return None;
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
        let offset_seconds = match b.get(i) {
            Some(b'Z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) => {
                let rest = &text[i + 1..];
                let (h, m) = match rest.len() {
                    5 if rest.as_bytes()[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                    4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                    2 => (num(i + 1..i + 3)?, 0),
                    _ => return None,
                };
                if h > 23 || m > 59 {
                    return None;
                }
                let s = h * 3600 + m * 60;
                if sign == b'+' {
                    s
                } else {
                    -s
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
        Some(EventTime(seconds * MICROS_PER_SECOND + micros))
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-25T10:11:12.345678Z`.
impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let secs_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25T10:11:12.345678Z, as Debezium published it for a
    // TIMESTAMP column holding that value (tests/fixtures/debezium).
    const SAMPLE: i64 = 1_795_601_472_345_678;

    #[test]
    fn parses_utc_and_offsets() {
        let p = |s: &str| EventTime::parse_iso8601(s).map(|t| t.0);
        assert_eq!(p("2026-11-25T10:11:12.345678Z"), Some(SAMPLE));
        assert_eq!(p("2026-11-25T11:11:12.345678+01:00"), Some(SAMPLE));
        assert_eq!(p("2026-11-25T05:11:12.345678-0500"), Some(SAMPLE));
        assert_eq!(p("2026-11-25 10:11:12.345678Z"), Some(SAMPLE));
        assert_eq!(p("2026-11-25T10:11:12.3456789Z"), Some(SAMPLE), "nanos floored");
        assert_eq!(p("2026-11-25T10:11:12Z"), Some(SAMPLE - 345_678));
        assert_eq!(p("2026-11-25T10:11:12.3Z"), Some(SAMPLE - 45_678));
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1969-12-31T23:59:59.999999Z"), Some(-1));
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T10:11:12",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:11:12.Z",
            "2026-11-25T10:11:12Zjunk",
            "2026-11-25T10:11:12+1:00",
            "2026-11-25T10:11:1xZ",
        ] {
            assert_eq!(EventTime::parse_iso8601(bad), None, "{bad:?}");
        }
        assert!(EventTime::parse_iso8601("2024-02-29T00:00:00Z").is_some(), "leap day");
    }

    #[test]
    fn prints_rfc3339_and_round_trips() {
        assert_eq!(EventTime(SAMPLE).to_string(), "2026-11-25T10:11:12.345678Z");
        assert_eq!(EventTime(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        for t in [0, SAMPLE, -86_400_000_001, 951_782_400_000_000] {
            let text = EventTime(t).to_string();
            assert_eq!(EventTime::parse_iso8601(&text), Some(EventTime(t)), "{text}");
        }
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(EventTime::from_millis(1_795_601_472_345), Some(EventTime(SAMPLE - 678)));
        assert_eq!(EventTime::from_nanos(SAMPLE * 1000 + 999), EventTime(SAMPLE));
        assert_eq!(EventTime::from_nanos(-1), EventTime(-1));
        assert_eq!(EventTime::from_days(1).map(|t| t.0), Some(86_400_000_000));
    }
}
