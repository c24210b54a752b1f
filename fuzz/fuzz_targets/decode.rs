//! Fuzzes the Debezium decoder with arbitrary record values, configured as
//! `pipelines/fraud-detection.yaml` (its schema and decimal settings
//! varied). Whatever the bytes, decoding gives a row, a skip or an error
//! with a reason, never a panic; bytes serde_json refuses as JSON are an
//! error; and the batch path, alone or after a captured record (schema
//! cached, payload shape learned, envelope prefix shared), gives what a
//! fresh decoder gives.
//!
//! Input: a mode byte, a key length byte, the key (the decoder reads no
//! keys; the batch must hold it intact for a dead letter), then the record
//! value.
//! The mode's bits: 0-1 schemas (auto, enabled, disabled, auto), 2-3
//! decimals (precise, string, double, precise), 4-5 the record read before
//! it (none, or the captured create, update or delete), 6 that record
//! without its schema block. `scripts/fuzz` seeds inputs in this form.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil::config::{DecimalHandling, SchemaMode};
use vigil::decode::{DecodeError, DecodeOptions, Decoded, Decoder};
use vigil::source::batch::RecordBatch;
use vigil::telemetry::Label;

const PIPELINE: &str = include_str!("../../pipelines/fraud-detection.yaml");
const TOPIC: &str = "dbserver1.public.transactions";
const CAPTURED: [&[u8]; 3] = [
    include_bytes!("../../tests/fixtures/debezium/transactions-create.value.json"),
    include_bytes!("../../tests/fixtures/debezium/transactions-update.value.json"),
    include_bytes!("../../tests/fixtures/debezium/transactions-delete.value.json"),
];

/// The pipeline's decode options with the mode's schema and decimal
/// settings (a scale for `amount` where the schema may be absent, as
/// validation demands with schemas disabled).
fn options(mode: u8) -> &'static DecodeOptions {
    static OPTIONS: OnceLock<Vec<DecodeOptions>> = OnceLock::new();
    let all = OPTIONS.get_or_init(|| {
        let shipped = vigil::config::load_str("fraud-detection.yaml", PIPELINE, |_| None).expect("shipped pipeline");
        (0..16u8)
            .map(|m| {
                let mut pipeline = shipped.clone();
                pipeline.format.schemas = match m & 3 {
                    1 => SchemaMode::Enabled,
                    2 => SchemaMode::Disabled,
                    _ => SchemaMode::Auto,
                };
                pipeline.format.decimals = match m >> 2 & 3 {
                    1 => DecimalHandling::String,
                    2 => DecimalHandling::Double,
                    _ => DecimalHandling::Precise,
                };
                if pipeline.format.schemas == SchemaMode::Disabled {
                    pipeline.format.decimal_scales.insert("amount".into(), 2);
                }
                DecodeOptions::for_pipeline(&pipeline)
            })
            .collect()
    });
    &all[usize::from(mode & 0x0f)]
}

/// The captured record read before the input, if the mode says one.
fn before(mode: u8) -> Option<&'static [u8]> {
    static BARE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let i = usize::from(mode >> 4 & 3).checked_sub(1)?;
    if mode & 0x40 == 0 {
        return Some(CAPTURED[i]);
    }
    let bare = BARE.get_or_init(|| {
        CAPTURED
            .iter()
            .map(|r| {
                let record: serde_json::Value = serde_json::from_slice(r).expect("captured record");
                serde_json::to_vec(&record["payload"]).expect("payload")
            })
            .collect()
    });
    Some(&bare[i])
}

/// What a decode came to, errors by their reason.
fn outcome(result: &Result<Decoded, DecodeError>) -> Result<&Decoded, &'static str> {
    result.as_ref().map_err(|e| e.reason().as_label())
}

/// Decodes `value` (keyed `key`) at offset 1 in a batch of its own, after
/// `before` (at offset 0) if given; the result for `value`.
fn decode_batch(
    options: &DecodeOptions,
    before: Option<&[u8]>,
    key: &[u8],
    value: &[u8],
) -> Result<Decoded, DecodeError> {
    let mut batch = RecordBatch::new(Arc::from(TOPIC), 0, 0);
    if let Some(before) = before {
        batch.push(0, None, Some(before));
    }
    batch.push(1, Some(key), Some(value));
    let mut decoder = Decoder::new(options.clone(), TOPIC);
    let mut last = None;
    batch.decode_each(&mut decoder, |record, result| {
        // What a dead letter would carry.
        if let Err(e) = &result {
            let _ = (e.to_string(), e.reason().as_label());
        }
        if record.offset == 1 {
            // The batch holds the record whole, its shared prefix aside.
            assert_eq!(record.key, Some(key));
            assert_eq!([record.envelope.unwrap_or_default(), record.value.unwrap_or_default()].concat(), value);
            last = Some(result);
        }
    });
    last.expect("a result for the record")
}

fuzz_target!(|data: &[u8]| {
    let [mode, key_len, rest @ ..] = data else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(*key_len).min(rest.len()));
    let options = options(*mode);

    let first = Decoder::new(options.clone(), TOPIC).decode(Some(value), 1);
    if serde_json::from_slice::<serde_json::Value>(value).is_err() {
        assert!(first.is_err(), "not JSON, yet {first:?}");
    }
    let alone = decode_batch(options, None, key, value);
    assert_eq!(outcome(&alone), outcome(&first), "alone in a batch");
    if let Some(before) = before(*mode) {
        let after = decode_batch(options, Some(before), key, value);
        assert_eq!(outcome(&after), outcome(&first), "after a captured record");
    }
});
