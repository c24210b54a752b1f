//! Durations in pipeline files: an integer and a unit, e.g. `500ms`, `60s`,
//! `5m`, `1h`, `1d`.
//!
//! Deliberately small: no fractions (`1.5s`), no compound forms (`1h30m`),
//! no signs, and no bare numbers, because a bare `60` silently meaning
//! seconds (or milliseconds) is exactly the kind of mistake a config file
//! should refuse.

use std::fmt;
use std::time::Duration;

/// Why a duration's text was refused; the message tells the user what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// The units a duration may use, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses `<integer><unit>` where unit is `ms`, `s`, `m`, `h` or `d`.
/// `0s` is a valid (zero) duration; whether zero is allowed is the
/// caller's rule.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError("empty duration: write an integer and a unit, e.g. 60s".into()));
    }
    let digits_end = text.char_indices().find(|(_, c)| !c.is_ascii_digit()).map_or(text.len(), |(i, _)| i);
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError(format!(
            "not a duration: {text:?} (write an integer and a unit: ms, s, m, h or d, e.g. 60s)"
        )));
    }
    if unit.is_empty() {
        return Err(DurationError(format!("add a unit: {digits}s (units: ms, s, m, h, d; got {text})")));
    }
    let Some(&(_, millis_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        let hint = if unit.starts_with('.') {
            "durations are whole numbers: use a smaller unit (e.g. 1500ms)"
        } else {
            "use ms, s, m, h or d"
        };
        return Err(DurationError(format!("not a duration: {text:?} ({hint})")));
    };
    let too_large = || DurationError(format!("duration too large: {text}"));
    let count: u64 = digits.parse().map_err(|_| too_large())?;
    let millis = count.checked_mul(millis_per_unit).ok_or_else(too_large)?;
    Ok(Duration::from_millis(millis))
}

/// `d` as a pipeline file would write it: the largest unit that holds it
/// whole (`2m`, `90s`, `1500ms`).
pub fn display(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let (unit, per) = UNITS.iter().rev().find(|(_, per)| millis.is_multiple_of(u128::from(*per))).unwrap_or(&UNITS[0]);
    format!("{}{unit}", millis / u128::from(*per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn durations_are_displayed_as_a_file_would_write_them() {
        for (millis, text) in [(120_000, "2m"), (90_000, "90s"), (1_500, "1500ms"), (86_400_000, "1d"), (0, "0s")] {
            let d = Duration::from_millis(millis);
            assert_eq!(display(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn zero_parses() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn bare_number_is_refused_with_a_hint() {
        let err = parse_duration("60").unwrap_err().to_string();
        assert!(err.starts_with("add a unit: 60s"), "{err}");
    }

    #[test]
    fn other_forms_are_refused() {
        for bad in ["", "s", "-5s", "1.5s", "5 s", "5sec", "1h30m", "5S", "+5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        let err = parse_duration("1.5s").unwrap_err().to_string();
        assert!(err.contains("1500ms"), "{err}");
    }

    #[test]
    fn overflow_is_refused() {
        let err = parse_duration("99999999999999999999s").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        let err = parse_duration("18446744073709551615d").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
}
