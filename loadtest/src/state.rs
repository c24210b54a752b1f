//! Users of full detector state, as the reference pipeline's detectors
//! build them: fed more rows than the spend history holds, a few of them
//! inside the velocity window. The changelog restore load test writes
//! them, the record benchmark encodes and decodes them.

use std::sync::Arc;

use vigil::config::Pipeline;
use vigil::decode::DecodeOptions;
use vigil::detect::{Detectors, UserState};
use vigil::row::{Key, Op, Row, Value};
use vigil::time::EventTime;

/// Rows each user is fed: more than the spend history holds (50).
pub const ROWS_PER_USER: i64 = 60;
/// Event time between a user's rows: 7 of them in a 60 s window.
pub const ROW_SPACING_US: i64 = 10_000_000;

/// Builds users of full state for `pipeline`'s detectors.
pub struct FullUsers {
    pub detectors: Detectors,
    amount_at: usize,
    columns: usize,
    table: Arc<str>,
}

impl FullUsers {
    /// None when the pipeline's detectors do not compile or read no
    /// `amount` column.
    pub fn new(pipeline: &Pipeline) -> Option<Self> {
        let options = DecodeOptions::for_pipeline(pipeline);
        let detectors = Detectors::compile(pipeline, &options.projection).ok()?;
        let amount_at = options.projection.index("amount")?;
        let columns = options.projection.columns().len();
        Some(FullUsers { detectors, amount_at, columns, table: Arc::from("public.transactions") })
    }

    /// User `user`, its rows' event times from `start_us` on; its offset
    /// that of its last row.
    pub fn user(&self, user: i64, start_us: i64) -> UserState {
        let mut state = self.detectors.new_user();
        for i in 0..ROWS_PER_USER {
            let mut values = vec![Value::Null; self.columns];
            let cents = 300 + (user * 7919 + i * 104_729) % 29_700;
            values[self.amount_at] = Value::Decimal(rust_decimal::Decimal::new(cents, 2));
            let row = Row {
                op: Op::Create,
                key: Key::Int(user),
                event_time: EventTime(start_us + i * ROW_SPACING_US),
                values: values.into(),
                table: Arc::clone(&self.table),
                lsn: None,
                offset: i,
            };
            self.detectors.observe(&mut state, &row, false, |_, _| {});
        }
        state.offset = ROWS_PER_USER - 1;
        state
    }
}
