//! [`S`]: a value of a pipeline file together with where it was written.
//!
//! Both kinds of file (`stream/raw.rs`, `batch/raw.rs`) wrap every value
//! in it, so validation can point at the offending line and column. Kept
//! apart from either kind so neither imports the other.

use serde_saphyr::Spanned;

/// A value and where it was written.
pub(super) type S<T> = Spanned<T>;
