//! Transactions as Debezium publishes them for the `transactions` table
//! through Kafka Connect's JsonConverter: the captured connector record's
//! schema block, byte for byte and first, a compact payload; keys exactly
//! as the connector writes them (`message.key.columns` = user_id), placed
//! on the partition Connect's producer picks (murmur2 of the key bytes).

use crate::workload::Txn;

const VALUE: &str = include_str!("../../tests/fixtures/debezium/transactions-create.value.json");
const KEY: &str = include_str!("../../tests/fixtures/debezium/transactions-create.key.json");

/// The event time of the captured record: 2026-11-25T10:11:12.345678Z.
pub const CAPTURED_CREATED_AT: i64 = 1_795_601_472_345_678;

/// Builds envelopes from the captured record's shape.
pub struct Envelopes {
    value_schema: String,
    key_schema: String,
    schemaless: bool,
}

/// Every field of a change that varies from record to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    pub user: i64,
    pub cents: i64,
    /// `created_at`, µs.
    pub at_us: i64,
    /// `source.lsn` (and both elements of `source.sequence`).
    pub lsn: i64,
    pub tx_id: i64,
    /// The commit, `source.ts_us` (`ts_ms`, `ts_ns` follow).
    pub commit_us: i64,
    /// When Debezium emitted the change, the envelope's `ts_ns`.
    pub emitted_ns: i64,
}

impl From<&Txn> for Change {
    /// A generated transaction: committed and emitted at its event time,
    /// its id as LSN and transaction id.
    fn from(t: &Txn) -> Self {
        Change {
            id: t.id,
            user: t.user,
            cents: t.cents,
            at_us: t.at_us,
            lsn: t.id,
            tx_id: t.id,
            commit_us: t.at_us,
            emitted_ns: t.at_us * 1_000,
        }
    }
}

fn schema_of(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        schema: &'a serde_json::value::RawValue,
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(e) => e.schema.get().to_owned(),
        Err(e) => panic!("the captured fixture is a schema-enabled envelope: {e}"),
    }
}

impl Envelopes {
    pub fn new(schemaless: bool) -> Self {
        Envelopes { value_schema: schema_of(VALUE), key_schema: schema_of(KEY), schemaless }
    }

    /// The record key: `{"schema":…,"payload":{"user_id":N}}`, or the
    /// payload alone without schemas.
    pub fn key(&self, user: i64) -> Vec<u8> {
        self.wrap(&self.key_schema, &format!("{{\"user_id\":{user}}}"))
    }

    pub fn value(&self, t: &Txn) -> Vec<u8> {
        self.change(&Change::from(t))
    }

    /// A create of `transactions`, its payload in the connector's field
    /// order, compact.
    pub fn change(&self, c: &Change) -> Vec<u8> {
        let payload = format!(
            concat!(
                r#"{{"before":null,"after":{{"id":{id},"user_id":{user},"amount":"{amount}","created_at":{at},"#,
                r#""merchant":"shop","country":null}},"source":{{"version":"3.6.1.Final","connector":"postgresql","#,
                r#""name":"dbserver1","ts_ms":{commit_ms},"snapshot":"false","db":"mydb","#,
                r#""sequence":"[\"{lsn}\",\"{lsn}\"]","ts_us":{commit_us},"ts_ns":{commit_ns},"schema":"public","#,
                r#""table":"transactions","txId":{tx},"lsn":{lsn},"xmin":null,"origin":null,"origin_lsn":null}},"#,
                r#""transaction":null,"op":"c","ts_ms":{emitted_ms},"ts_us":{emitted_us},"ts_ns":{emitted_ns}}}"#,
            ),
            id = c.id,
            user = c.user,
            amount = decimal_bytes(c.cents),
            at = c.at_us,
            commit_ms = c.commit_us / 1_000,
            lsn = c.lsn,
            commit_us = c.commit_us,
            commit_ns = c.commit_us * 1_000,
            tx = c.tx_id,
            emitted_ms = c.emitted_ns / 1_000_000,
            emitted_us = c.emitted_ns / 1_000,
            emitted_ns = c.emitted_ns,
        );
        self.wrap(&self.value_schema, &payload)
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
    use serde_json::Value;

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
    fn the_captured_record_is_rebuilt_byte_for_byte() {
        let captured = Change {
            id: 5,
            user: 103_070_000,
            cents: -123_456,
            at_us: CAPTURED_CREATED_AT,
            lsn: 26_707_688,
            tx_id: 760,
            commit_us: 1_795_628_996_826_221,
            emitted_ns: 1_795_628_997_323_235_345,
        };
        assert_eq!(Envelopes::new(false).change(&captured), VALUE.trim_end().as_bytes());
    }

    #[test]
    fn schemaless_records_are_the_payload_alone() {
        let v: Value = serde_json::from_slice(&Envelopes::new(true).value(&Txn { id: 9, user: 4, cents: 1, at_us: 1 }))
            .expect("json");
        assert_eq!(v["after"]["user_id"], 4);
        assert_eq!(v["after"]["amount"], "AQ==");
        assert_eq!(v["source"]["lsn"], 9);
    }
}
