//! Exact decimals in pipeline files (`factor`, `min_amount`, `threshold`).
//!
//! The YAML scalar's own text is parsed as a decimal, so `2.1` is exactly
//! 2.1 and `2.10` keeps its scale: the value never passes through an `f64`.
//! (serde-saphyr hands the source text of a plain scalar to a `String`
//! field; [`decimal_from_f64`] exists for callers that only have a float,
//! and goes through the float's shortest round-trip text, never
//! `Decimal::from_f64`.) Deliberately not accepted: `.inf`, `.nan`, hex,
//! and anything rust_decimal cannot hold (more than 28 fractional digits,
//! magnitudes beyond 96 bits).

use rust_decimal::Decimal;
use std::str::FromStr;

/// Parses a decimal written as `500`, `3.0`, `-1.25` or `1e3`.
///
/// The error is a message for the user, naming the text.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    let refused = || format!("expected a decimal number such as 3.0 or 500 (got {text:?})");
    if text.is_empty() || text.contains('_') {
        // rust_decimal accepts `1_000`; YAML 1.2 numbers do not.
        return Err(refused());
    }
    if let Ok(d) = Decimal::from_str(text) {
        return Ok(d);
    }
    if text.contains(['e', 'E']) {
        if let Ok(d) = Decimal::from_scientific(text) {
            return Ok(d.normalize());
        }
    }
    Err(refused())
}

/// Converts a float through its shortest decimal text (`2.1_f64` becomes
/// 2.1, not 2.100000000000000088817841970012523233890533447265625).
/// `None` for NaN, infinities and magnitudes a Decimal cannot hold.
pub fn decimal_from_f64(f: f64) -> Option<Decimal> {
    if !f.is_finite() {
        return None;
    }
    // `{}` prints the shortest text that reads back as the same f64, and
    // never uses an exponent.
    Decimal::from_str(&format!("{f}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn text_is_exact() {
        assert_eq!(parse_decimal("2.1"), Ok(dec("2.1")));
        assert_eq!(parse_decimal("0.1"), Ok(dec("0.1")));
        assert_eq!(parse_decimal("3.0"), Ok(Decimal::new(30, 1)));
        assert_eq!(parse_decimal("3.0").unwrap().to_string(), "3.0");
        assert_eq!(parse_decimal("500"), Ok(Decimal::new(500, 0)));
        assert_eq!(parse_decimal("-1.25"), Ok(Decimal::new(-125, 2)));
        assert_eq!(parse_decimal("1e3"), Ok(Decimal::new(1000, 0)));
        // More digits than an f64 holds: still exact.
        assert_eq!(parse_decimal("1.000000000000000000001").unwrap().to_string(), "1.000000000000000000001");
        // 0.1 + 0.2 is 0.3 exactly, unlike floats.
        assert_eq!(parse_decimal("0.1").unwrap() + parse_decimal("0.2").unwrap(), dec("0.3"));
    }

    #[test]
    fn floats_go_through_their_shortest_text() {
        assert_eq!(decimal_from_f64(2.1), Some(dec("2.1")));
        assert_eq!(decimal_from_f64(0.1), Some(dec("0.1")));
        assert_eq!(decimal_from_f64(3.0), Some(dec("3")));
        assert_eq!(decimal_from_f64(500.0), Some(dec("500")));
        assert_eq!(decimal_from_f64(f64::NAN), None);
        assert_eq!(decimal_from_f64(f64::INFINITY), None);
        assert_eq!(decimal_from_f64(1e300), None);
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in ["", "abc", ".inf", ".nan", "0x10", "1_000", "true", "3,0"] {
            let err = parse_decimal(bad).unwrap_err();
            assert!(err.contains("expected a decimal"), "{bad:?}: {err}");
        }
    }
}
