//! Exact comparisons of decimals the rules make on every row.
//!
//! rust_decimal's products round beyond 28 digits (and fail beyond 96
//! bits), and its general comparison is slow for what the rules compare
//! most: amounts of one column against thresholds. Here both sides become
//! integers at one common scale: in i64 (products in i128) when they fit
//! there, as every NUMERIC(10,2) amount does, otherwise in 512 bits, which
//! hold any product `amount × n` or `factor × term` at scale
//! `factor's + 28`: at most 96 (mantissa) + 64 (n) + 187 (10^56) bits on
//! the left, 96 + 96 + 187 a term on the right, and a sum of at most 2^64
//! terms adds 64.

use rust_decimal::Decimal;

/// A decimal's mantissa and scale: the value is `mantissa × 10^-scale`.
pub type Parts = (i128, u32);

/// The largest scale of a decimal.
const MAX_SCALE: u32 = 28;

/// `a > b`, exactly.
pub fn greater(a: Decimal, b: Decimal) -> bool {
    let common = a.scale().max(b.scale());
    let at_common = |d: Decimal| i64::try_from(d.mantissa()).ok()?.checked_mul(pow10_i64(common - d.scale())?);
    match (at_common(a), at_common(b)) {
        (Some(x), Some(y)) => x > y,
        _ => a > b,
    }
}

/// A rule's factor, split once at start: its value, and its mantissa as
/// an i64 for the common comparison when it fits one.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    value: Decimal,
    mantissa: Option<i64>,
}

impl Factor {
    pub fn new(value: Decimal) -> Self {
        Factor { value, mantissa: i64::try_from(value.mantissa()).ok() }
    }

    pub fn value(&self) -> Decimal {
        self.value
    }

    /// `amount × n > factor × sum`, exactly.
    pub fn exceeded(&self, amount: Decimal, n: usize, sum: Parts) -> bool {
        self.in_i64(amount, n, sum).unwrap_or_else(|| exceeds_sum_of(amount, n, self.value, std::iter::once(sum)))
    }

    /// The comparison with the powers of ten folded into mantissas that
    /// stay within an i64, so each side is one widening product.
    fn in_i64(&self, amount: Decimal, n: usize, (sum, scale): Parts) -> Option<bool> {
        let factor_scale = self.value.scale();
        let common = amount.scale().max(factor_scale + scale);
        let amount = i64::try_from(amount.mantissa()).ok()?.checked_mul(pow10_i64(common - amount.scale())?)?;
        let factor = self.mantissa?.checked_mul(pow10_i64(common - factor_scale - scale)?)?;
        let left = i128::from(amount) * i128::from(i64::try_from(n).ok()?);
        let right = i128::from(factor) * i128::from(i64::try_from(sum).ok()?);
        Some(left > right)
    }
}

/// `amount × n > factor × (the sum of terms)`, exactly, in 512 bits at
/// the scale `max(amount's, factor's + 28)`: every product goes to the
/// positive or the negative side of `left - right`.
pub fn exceeds_sum_of(amount: Decimal, n: usize, factor: Decimal, terms: impl Iterator<Item = Parts>) -> bool {
    let common = amount.scale().max(factor.scale() + MAX_SCALE);
    let (mut positive, mut negative) = (U512::ZERO, U512::ZERO);
    let left = U512::from(amount.mantissa().unsigned_abs()).mul(n as u128).mul_pow10(common - amount.scale());
    if amount.is_sign_negative() {
        negative = negative.add(left);
    } else {
        positive = positive.add(left);
    }
    let factor_magnitude = U512::from(factor.mantissa().unsigned_abs());
    for (mantissa, scale) in terms {
        let shift = common.saturating_sub(factor.scale() + scale);
        let right = factor_magnitude.mul(mantissa.unsigned_abs()).mul_pow10(shift);
        // A positive product is subtracted: it goes to the negative side.
        if factor.is_sign_negative() == (mantissa < 0) {
            negative = negative.add(right);
        } else {
            positive = positive.add(right);
        }
    }
    positive.greater_than(&negative)
}

/// 10^0 ..= 10^38: every power of ten an i128 holds.
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// 10^k, when an i128 holds it.
pub fn pow10(k: u32) -> Option<i128> {
    POW10.get(k as usize).copied()
}

fn pow10_i64(k: u32) -> Option<i64> {
    pow10(k).and_then(|p| i64::try_from(p).ok())
}

/// An unsigned 512-bit integer, least significant limb first. The callers'
/// values stay below 2^512 (see the module's bounds), so carries out of
/// the top limb do not occur.
#[derive(Clone, Copy)]
struct U512([u64; 8]);

impl U512 {
    const ZERO: U512 = U512([0; 8]);

    fn from(x: u128) -> Self {
        let mut limbs = [0; 8];
        limbs[0] = x as u64;
        limbs[1] = (x >> 64) as u64;
        U512(limbs)
    }

    fn mul_u64(self, x: u64) -> Self {
        let mut out = [0; 8];
        let mut carry = 0u128;
        for (o, &limb) in out.iter_mut().zip(&self.0) {
            let wide = u128::from(limb) * u128::from(x) + carry;
            *o = wide as u64;
            carry = wide >> 64;
        }
        U512(out)
    }

    fn mul(self, x: u128) -> Self {
        let high = self.mul_u64((x >> 64) as u64);
        let mut shifted = [0; 8];
        shifted[1..].copy_from_slice(&high.0[..7]);
        self.mul_u64(x as u64).add(U512(shifted))
    }

    fn mul_pow10(self, mut k: u32) -> Self {
        let mut out = self;
        while k > 0 {
            let step = k.min(38);
            out = out.mul(POW10[step as usize] as u128);
            k -= step;
        }
        out
    }

    fn add(self, other: U512) -> Self {
        let mut out = [0; 8];
        let mut carry = false;
        for (o, (&a, &b)) in out.iter_mut().zip(self.0.iter().zip(&other.0)) {
            let (sum, c1) = a.overflowing_add(b);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *o = sum;
            carry = c1 || c2;
        }
        U512(out)
    }

    fn greater_than(&self, other: &U512) -> bool {
        self.0.iter().rev().gt(other.0.iter().rev())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    /// Through `Factor::exceeded` (with one term) and through 512 bits.
    fn both(amount: &str, n: usize, factor: &str, terms: &[&str]) -> (bool, bool) {
        let parts = |t: &&str| (d(t).mantissa(), d(t).scale());
        let wide = exceeds_sum_of(d(amount), n, d(factor), terms.iter().map(parts));
        match terms {
            [sum] => (Factor::new(d(factor)).exceeded(d(amount), n, parts(sum)), wide),
            _ => (wide, wide),
        }
    }

    #[test]
    fn equal_sides_are_not_more() {
        assert_eq!(both("600", 3, "3.0", &["600.00"]), (false, false));
        assert_eq!(both("600.01", 3, "3.0", &["600.00"]), (true, true));
        assert_eq!(both("600", 3, "3.0", &["100", "200", "300.0"]), (false, false));
        assert_eq!(both("600.0000000000000000000000001", 3, "3", &["100", "200", "300"]), (true, true));
    }

    #[test]
    fn signs() {
        assert_eq!(both("-1", 1, "1", &["-2"]), (true, true), "-1 > -2");
        assert_eq!(both("-2", 1, "1", &["-1"]), (false, false));
        assert_eq!(both("0", 5, "3", &["-0.01"]), (true, true));
        assert_eq!(both("0", 5, "3", &["0"]), (false, false));
        assert_eq!(both("1", 1, "-1", &["5"]), (true, true), "a negative factor");
    }

    #[test]
    fn beyond_what_a_decimal_product_holds() {
        // The largest mantissa, at scale 0, beside amounts at scale 28:
        // neither the products nor the common scale fit 96 bits or an i128.
        let max = "79228162514264337593543950335";
        let tiny = "0.0000000000000000000000000001";
        assert_eq!(both(max, 2, "1", &[max, max, tiny]), (false, false), "2 max < 2 max + 1e-28");
        assert_eq!(both(max, 2, "1", &[max, max, &format!("-{tiny}")]), (true, true));
        assert_eq!(both(max, 2, "1", &[max, max]), (false, false), "equal");
        assert_eq!(both(max, 50, tiny, &[max]), (true, true));
        assert_eq!(both(max, 3, "3.0", &[max]), (false, false));
        assert_eq!(both(max, 3, "2.9999999999999999999999999999", &[max]), (true, true));
        assert_eq!(both("0.01", 50, "3.0", &["9223372036854775807"]), (false, false), "the sum beyond an i64 of units");
        assert_eq!(both(&format!("-{tiny}"), 1, "3", &["-7922816251426433759354395033.5"]), (true, true));
        // Equal at scale 56: 3e-28 × 1 and 1e-28 × 3.
        assert_eq!(both("0.0000000000000000000000000003", 1, tiny, &["3"]), (false, false));
        assert_eq!(both("0.0000000000000000000000000003", 1, tiny, &["2.9999999999999999999999999999"]), (true, true));
    }

    #[test]
    fn greater_is_decimal_order() {
        let values = ["-1", "0", "0.00", "4000", "4000.00", "4000.01", "-4000.01", "79228162514264337593543950335"];
        let tiny = "0.0000000000000000000000000001";
        for a in values.iter().chain([&tiny]) {
            for b in values.iter().chain([&tiny]) {
                assert_eq!(greater(d(a), d(b)), d(a) > d(b), "{a} > {b}");
            }
        }
    }
}
