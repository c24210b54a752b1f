//! Debezium decoding: a record's value to a typed row, per record.
//!
//! - `schema_enabled/fast_path`: JsonConverter's records with the schema
//!   block (3.5 KB, 80% schema), a decoder that has seen the block: the
//!   production path (the block is compared, not parsed).
//! - `schema_enabled/pretty`: the same records pretty-printed: the fast
//!   path misses, the whole record is scanned and its schema text found
//!   in the cache by comparison (no fast path, no schema parse).
//! - `schema_enabled/first_record`: one record on a fresh decoder: the
//!   schema block is parsed (a partition's first record, or a new table
//!   version). One element per iteration.
//! - `schemaless/auto`, `schemaless/disabled`: the payload alone, with
//!   `format.schemas` told apart per record (the default) or disabled.
//!
//! Not here: the batch arena (`routing`), actors (`actors`).

mod support;

use std::hint::black_box;

use support::{bench, decode_checked, fraud_pipeline, pretty, schemaless_pipeline, Connect, Routine, Transactions};
use vigil::config::Pipeline;
use vigil::decode::{DecodeOptions, Decoder};

use support::{BATCH, TOPIC};

/// Decodes a batch of record values with one long-lived decoder.
struct DecodeBatch {
    decoder: Decoder,
    values: Vec<Vec<u8>>,
}

impl DecodeBatch {
    /// [`BATCH`] records of the workload, checked once (which also fills
    /// the decoder's schema cache, as a partition's first batch does).
    fn new(pipeline: &Pipeline, with_schema: bool, reformat: fn(Vec<u8>) -> Vec<u8>) -> Self {
        let connect = Connect::new();
        let txns = Transactions::new(1).take(BATCH);
        let values: Vec<Vec<u8>> = txns.iter().map(|t| reformat(connect.value(t, with_schema))).collect();
        let mut decoder = Decoder::new(DecodeOptions::for_pipeline(pipeline), TOPIC);
        decode_checked(&mut decoder, &txns, &values, 0);
        assert_eq!(decoder.cached_schemas(), usize::from(with_schema));
        DecodeBatch { decoder, values }
    }
}

impl Routine for DecodeBatch {
    fn run(&mut self) {
        for (offset, value) in self.values.iter().enumerate() {
            black_box(self.decoder.decode(Some(black_box(value)), offset as i64)).ok();
        }
    }
}

/// One record on a decoder that has seen no schema yet.
struct FirstRecord {
    options: DecodeOptions,
    value: Vec<u8>,
    decoder: Option<Decoder>,
}

impl Routine for FirstRecord {
    fn prepares(&self) -> bool {
        true
    }
    fn prepare(&mut self) {
        self.decoder = Some(Decoder::new(self.options.clone(), TOPIC));
    }
    fn run(&mut self) {
        let decoder = self.decoder.as_mut().expect("prepared");
        black_box(decoder.decode(Some(black_box(&self.value)), 0)).ok();
    }
}

fn main() {
    let n = BATCH as u64;
    support::main(
        "decode",
        vec![
            bench("schema_enabled/fast_path", n, || DecodeBatch::new(&fraud_pipeline(), true, |v| v)),
            bench("schema_enabled/pretty", n, || DecodeBatch::new(&fraud_pipeline(), true, |v| pretty(&v))),
            bench("schema_enabled/first_record", 1, || {
                let txns = Transactions::new(1).take(1);
                let value = Connect::new().value(&txns[0], true);
                let options = DecodeOptions::for_pipeline(&fraud_pipeline());
                decode_checked(&mut Decoder::new(options.clone(), TOPIC), &txns, std::slice::from_ref(&value), 0);
                FirstRecord { options, value, decoder: None }
            }),
            bench("schemaless/auto", n, || DecodeBatch::new(&schemaless_pipeline("auto"), false, |v| v)),
            bench("schemaless/disabled", n, || DecodeBatch::new(&schemaless_pipeline("disabled"), false, |v| v)),
        ],
    );
}
