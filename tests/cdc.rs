//! The CDC path from Rust, against the real stack: a row written to
//! PostgreSQL comes out of Debezium on Kafka with the shape vigil decodes.
//! The envelopes captured here are kept in `tests/fixtures/debezium/` as the
//! real shape for decoder tests (bytes as Kafka carried them); set
//! `VIGIL_UPDATE_FIXTURES=1` to rewrite
//! them from the live connector.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/debezium");

/// The field named `name` of a Connect struct schema.
fn field<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["fields"]
        .as_array()
        .expect("struct schema has fields")
        .iter()
        .find(|f| f["field"] == name)
        .unwrap_or_else(|| panic!("schema has no field {name}: {schema}"))
}

/// Keeps a captured record as `NAME.key.json` and `NAME.value.json`, the
/// bytes exactly as Kafka carried them (a tombstone has no value file).
/// Without VIGIL_UPDATE_FIXTURES, checks that the kept fixture still has the
/// live connector's shape: the same schema blocks.
fn keep_fixture(name: &str, record: &Record) {
    let parts = [("key", &record.key), ("value", &record.value)];
    for (part, bytes) in parts {
        let path = format!("{FIXTURES}/{name}.{part}.json");
        if std::env::var_os("VIGIL_UPDATE_FIXTURES").is_some() {
            match bytes {
                Some(b) => std::fs::write(&path, b).expect("fixture written"),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            continue;
        }
        let kept = std::fs::read(&path).ok();
        assert_eq!(kept.is_some(), bytes.is_some(), "{path}: presence differs from live record");
        if let (Some(kept), Some(live)) = (kept, bytes) {
            let kept: Value = serde_json::from_slice(&kept).expect("fixture is JSON");
            let live: Value = serde_json::from_slice(live).expect("record is JSON");
            assert_eq!(
                kept["schema"], live["schema"],
                "{path}: schema changed; rerun with VIGIL_UPDATE_FIXTURES=1 if intended"
            );
        }
    }
}

/// Insert, update and delete one transaction; Debezium must publish c, u, d
/// and a tombstone, keyed by user_id, on the partition Connect's producer
/// picks for that key, with the DECIMAL and TIMESTAMP columns typed.
#[tokio::test]
async fn transaction_lifecycle_reaches_kafka_keyed_by_user() {
    let db = postgres().await;
    let user_id = unique_base() as i32;
    let start = end_offsets(TRANSACTIONS_TOPIC).expect("transactions topic exists");
    assert_eq!(start.len(), 8, "dbserver1.public.transactions has 8 partitions");

    let row = db
        .query_one(
            "INSERT INTO transactions (user_id, amount, created_at, merchant) \
             VALUES ($1, '-1234.56'::numeric, '2026-11-25 10:11:12.345678'::timestamp, 'shop') \
             RETURNING id",
            &[&user_id],
        )
        .await
        .expect("insert");
    let id: i64 = row.get(0);
    db.execute("UPDATE transactions SET amount = 4000.10 WHERE id = $1", &[&id]).await.expect("update");
    db.execute("DELETE FROM transactions WHERE id = $1", &[&id]).await.expect("delete");

    let ours = |r: &Record| r.key.is_some() && r.key_json()["payload"]["user_id"] == user_id;
    let records = read_until(TRANSACTIONS_TOPIC, &start, WAIT, |rs| rs.iter().filter(|r| ours(r)).count() >= 4)
        .expect("Debezium publishes the four records");
    let ours: Vec<&Record> = records.iter().filter(|r| ours(r)).collect();

    // Key: {user_id} only, as message.key.columns says; same partition for all.
    let key = ours[0].key_json();
    assert_eq!(key["payload"], json!({ "user_id": user_id }));
    assert_eq!(key["schema"]["name"], "dbserver1.public.transactions.Key");
    let key_bytes = ours[0].key.as_deref().expect("key");
    let expected_partition = kafka_partition(key_bytes, 8);
    for r in &ours {
        assert_eq!(r.partition, expected_partition, "partition of {:?}", r.offset);
        assert_eq!(r.key.as_deref(), Some(key_bytes), "every change keyed alike");
    }

    // Create: after image, typed columns, source block.
    let create = ours[0].value_json().expect("create has a value");
    let payload = &create["payload"];
    assert_eq!(payload["op"], "c");
    assert_eq!(payload["before"], Value::Null);
    assert_eq!(payload["after"]["id"], id);
    assert_eq!(payload["after"]["user_id"], user_id);
    assert_eq!(payload["after"]["amount"], loadtest::envelope::decimal_bytes(-123456));
    // 2026-11-25T10:11:12.345678 in microseconds since the epoch.
    assert_eq!(payload["after"]["created_at"], 1_795_601_472_345_678_i64);
    assert_eq!(payload["after"]["merchant"], "shop");
    assert_eq!(payload["source"]["table"], "transactions");
    assert!(payload["source"]["lsn"].is_i64(), "source.lsn present");

    let after_schema = field(&create["schema"], "after");
    let amount = field(after_schema, "amount");
    assert_eq!(amount["type"], "bytes");
    assert_eq!(amount["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(amount["parameters"]["scale"], "2");
    assert_eq!(amount["parameters"]["connect.decimal.precision"], "10");
    let created_at = field(after_schema, "created_at");
    assert_eq!(created_at["name"], "io.debezium.time.MicroTimestamp");
    assert_eq!(created_at["type"], "int64");

    // Update: REPLICA IDENTITY FULL puts the whole old row in `before`.
    let update = ours[1].value_json().expect("update has a value");
    assert_eq!(update["payload"]["op"], "u");
    assert_eq!(update["payload"]["before"]["amount"], loadtest::envelope::decimal_bytes(-123456));
    assert_eq!(update["payload"]["after"]["amount"], loadtest::envelope::decimal_bytes(400010));

    // Delete: the old row, still carrying user_id; then a tombstone.
    let delete = ours[2].value_json().expect("delete has a value");
    assert_eq!(delete["payload"]["op"], "d");
    assert_eq!(delete["payload"]["before"]["user_id"], user_id);
    assert_eq!(delete["payload"]["after"], Value::Null);
    assert!(ours[3].value.is_none(), "a tombstone follows the delete");

    keep_fixture("transactions-create", ours[0]);
    keep_fixture("transactions-update", ours[1]);
    keep_fixture("transactions-delete", ours[2]);
    keep_fixture("transactions-tombstone", ours[3]);
}

/// The walkthrough's first step: a row in `activity` appears with op `c`.
#[tokio::test]
async fn activity_insert_appears_with_op_c() {
    let db = postgres().await;
    let id = unique_base() as i32;
    // The topic appears with the table's first change: read from its start
    // if it does not exist yet, filtering by our own id.
    let start = end_offsets(ACTIVITY_TOPIC).unwrap_or_default();
    db.execute("INSERT INTO activity (id, name) VALUES ($1, 'Alice')", &[&id]).await.expect("insert");

    let ours = |r: &Record| r.key.is_some() && r.key_json()["payload"]["id"] == id;
    let records =
        read_until(ACTIVITY_TOPIC, &start, WAIT, |rs| rs.iter().any(ours)).expect("Debezium publishes the insert");
    let record = records.iter().find(|r| ours(r)).expect("found");
    let value = record.value_json().expect("value");
    assert_eq!(value["payload"]["op"], "c");
    assert_eq!(value["payload"]["after"], json!({ "id": id, "name": "Alice", "email": null }));
}
