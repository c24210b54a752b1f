//! Transactions as Debezium publishes them for the `transactions` table
//! through Kafka Connect's JsonConverter: the captured connector record's
//! schema block, byte for byte and first, a compact payload; keys exactly
//! as the connector writes them (`message.key.columns` = user_id), placed
//! on the partition Connect's producer picks (murmur2 of the key bytes).

use serde_json::{json, Value};

use crate::workload::Txn;

const VALUE: &str = include_str!("../../tests/fixtures/debezium/transactions-create.value.json");
const KEY: &str = include_str!("../../tests/fixtures/debezium/transactions-create.key.json");

/// Builds envelopes from the captured record's shape.
/// The event time of the captured record: 2026-11-25T10:11:12.345678Z.
pub const CAPTURED_CREATED_AT: i64 = 1_795_601_472_345_678;

pub struct Envelopes {
    value_schema: String,
    key_schema: String,
    template: Value,
    schemaless: bool,
}

fn schema_and_payload(text: &str) -> (String, Value) {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        schema: &'a serde_json::value::RawValue,
        payload: Value,
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(e) => (e.schema.get().to_owned(), e.payload),
        Err(e) => panic!("the captured fixture is a schema-enabled envelope: {e}"),
    }
}

impl Envelopes {
    pub fn new(schemaless: bool) -> Self {
        let (value_schema, template) = schema_and_payload(VALUE);
        let (key_schema, _) = schema_and_payload(KEY);
        Envelopes { value_schema, key_schema, template, schemaless }
    }

    /// The record key: `{"schema":…,"payload":{"user_id":N}}`, or the
    /// payload alone without schemas.
    pub fn key(&self, user: i64) -> Vec<u8> {
        let payload = format!("{{\"user_id\":{user}}}");
        self.wrap(&self.key_schema, &payload)
    }

    pub fn value(&self, t: &Txn) -> Vec<u8> {
        let mut p = self.template.clone();
        p["after"]["id"] = json!(t.id);
        p["after"]["user_id"] = json!(t.user);
        p["after"]["amount"] = json!(decimal_bytes(t.cents));
        p["after"]["created_at"] = json!(t.at_us);
        p["source"]["lsn"] = json!(t.id);
        p["source"]["ts_ms"] = json!(t.at_us / 1000);
        p["ts_ms"] = json!(t.at_us / 1000);
        self.wrap(&self.value_schema, &p.to_string())
    }

    fn wrap(&self, schema: &str, payload: &str) -> Vec<u8> {
        if self.schemaless {
            payload.as_bytes().to_vec()
        } else {
            format!("{{\"schema\":{schema},\"payload\":{payload}}}").into_bytes()
        }
    }
}

/// Connect's Decimal: the unscaled value, big-endian two's complement,
/// minimal length, base64.
pub fn decimal_bytes(unscaled: i64) -> String {
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes[start..].chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// Kafka's murmur2, as its Java producer (and so Connect) computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    for (i, &b) in rest.iter().enumerate().rev() {
        h ^= (b as u32) << (8 * i);
    }
    if !rest.is_empty() {
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    (h ^ (h >> 15)) as i32
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest vectors.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn keys_are_byte_identical_to_the_connectors() {
        let captured: Value = serde_json::from_str(KEY).expect("key fixture");
        let user = captured["payload"]["user_id"].as_i64().expect("user");
        assert_eq!(Envelopes::new(false).key(user), KEY.trim_end().as_bytes());
    }

    #[test]
    fn values_keep_the_schema_block_first_and_byte_identical() {
        let e = Envelopes::new(false);
        let v = e.value(&Txn { id: 9, user: 4, cents: -123_456, at_us: 1 });
        let text = String::from_utf8(v).expect("utf8");
        let (schema, _) = schema_and_payload(VALUE);
        assert!(text.starts_with(&format!("{{\"schema\":{schema},\"payload\":")));
        let parsed: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["payload"]["after"]["amount"], "/h3A", "-1234.56 as the connector wrote it");
        assert_eq!(parsed["payload"]["op"], "c");
        let schemaless: Value =
            serde_json::from_slice(&Envelopes::new(true).value(&Txn { id: 9, user: 4, cents: 1, at_us: 1 }))
                .expect("json");
        assert_eq!(schemaless["after"]["user_id"], 4);
    }
}
