//! Decoder tests over real envelopes captured from the stack's connector
//! (`tests/fixtures/debezium/`) and hand-made ones for every type and op.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Value as Json};

use super::*;
use crate::decode::value::{Role, Schemaless, TimeUnit};
use crate::telemetry::Label;

const CREATE: &[u8] = include_bytes!("../../tests/fixtures/debezium/transactions-create.value.json");
const UPDATE: &[u8] = include_bytes!("../../tests/fixtures/debezium/transactions-update.value.json");
const DELETE: &[u8] = include_bytes!("../../tests/fixtures/debezium/transactions-delete.value.json");
const TOPIC: &str = "dbserver1.public.transactions";
/// 2026-11-25T10:11:12.345678Z, the created_at the fixtures were made with.
const CREATED_AT: EventTime = EventTime(1_795_601_472_345_678);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

/// The fraud pipeline's columns: key, event time, primary key, amount.
fn options(ops: &[Op]) -> DecodeOptions {
    DecodeOptions {
        projection: Projection::new(vec!["user_id".into(), "created_at".into(), "id".into(), "amount".into()]),
        key: 0,
        time: TimeSource::Column(1),
        roles: vec![Role::Key, Role::Time, Role::Plain, Role::Decimal { schemaless_scale: None }].into(),
        schemas: SchemaMode::Auto,
        schemaless: Schemaless { decimals: DecimalHandling::Precise, time_unit: TimeUnit::Micros },
        ops: ops.into(),
        max_key_bytes: 256,
        max_future_us: 3_600_000_000,
    }
}

fn decoder(ops: &[Op]) -> Decoder {
    Decoder::new(options(ops), TOPIC)
}

fn row(decoded: Result<Decoded, DecodeError>) -> Row {
    match decoded {
        Ok(Decoded::Row(row)) => row,
        other => panic!("expected a row, got {other:?}"),
    }
}

fn fixture_payload(bytes: &[u8]) -> Json {
    let v: Json = serde_json::from_slice(bytes).expect("fixture is JSON");
    v["payload"].clone()
}

fn user_of(bytes: &[u8], image: &str) -> i64 {
    fixture_payload(bytes)[image]["user_id"].as_i64().expect("user_id")
}

#[test]
fn real_create_decodes_exactly() {
    let r = row(decoder(&[Op::Create]).decode(Some(CREATE), 17));
    let payload = fixture_payload(CREATE);
    assert_eq!(r.op, Op::Create);
    assert_eq!(r.key, Key::Int(user_of(CREATE, "after")));
    assert_eq!(r.event_time, CREATED_AT);
    assert_eq!(r.values[2], Value::Int(payload["after"]["id"].as_i64().expect("id")));
    assert_eq!(r.values[3], Value::Decimal(dec("-1234.56")));
    assert_eq!(&*r.table, "public.transactions");
    assert_eq!(r.lsn, payload["source"]["lsn"].as_i64());
    assert!(r.lsn.is_some());
    assert_eq!(r.offset, 17);
}

#[test]
fn real_update_and_delete_by_op() {
    let mut only_creates = decoder(&[Op::Create]);
    assert_eq!(only_creates.decode(Some(UPDATE), 1), Ok(Decoded::Skipped(Skip::OpNotRead(Op::Update))));
    assert_eq!(only_creates.decode(Some(DELETE), 2), Ok(Decoded::Skipped(Skip::OpNotRead(Op::Delete))));

    let mut all = decoder(&[Op::Create, Op::Update, Op::Delete, Op::Read]);
    let u = row(all.decode(Some(UPDATE), 1));
    assert_eq!((u.op, u.values[3].clone()), (Op::Update, Value::Decimal(dec("4000.10"))));
    // A delete's row is its before image: REPLICA IDENTITY FULL keeps the user.
    let d = row(all.decode(Some(DELETE), 2));
    assert_eq!(d.op, Op::Delete);
    assert_eq!(d.key, Key::Int(user_of(DELETE, "before")));
    assert_eq!(d.values[3], Value::Decimal(dec("4000.10")));
}

#[test]
fn tombstone_truncate_and_message_are_skipped() {
    let mut d = decoder(&[Op::Create]);
    assert_eq!(d.decode(None, 3), Ok(Decoded::Skipped(Skip::Tombstone)));
    for (code, skip) in [("t", Skip::Truncate), ("m", Skip::Message)] {
        let record = json!({"op": code, "before": null, "after": null, "source": {"ts_ms": 1}});
        let bytes = serde_json::to_vec(&record).expect("json");
        assert_eq!(d.decode(Some(&bytes), 4), Ok(Decoded::Skipped(skip)), "op {code}");
    }
    let null_payload = br#"{"schema":null,"payload":null}"#;
    assert_eq!(d.decode(Some(null_payload), 5), Ok(Decoded::Skipped(Skip::Tombstone)));
}

#[test]
fn schema_block_is_parsed_once_and_a_changed_schema_is_picked_up() {
    let mut d = decoder(&[Op::Create]);
    row(d.decode(Some(CREATE), 1));
    row(d.decode(Some(CREATE), 2));
    assert_eq!(d.cached_schemas(), 1);

    // The same table after `ALTER TABLE ... ADD COLUMN note TEXT` and with
    // amount's scale changed to 3: a new schema block, read without restart.
    let mut changed: Json = serde_json::from_slice(CREATE).expect("json");
    for image in ["before", "after"] {
        let fields = changed["schema"]["fields"]
            .as_array_mut()
            .expect("fields")
            .iter_mut()
            .find(|f| f["field"] == image)
            .expect("image field");
        let columns = fields["fields"].as_array_mut().expect("columns");
        columns.push(json!({"type": "string", "optional": true, "field": "note"}));
        for c in columns.iter_mut().filter(|c| c["field"] == "amount") {
            c["parameters"]["scale"] = json!("3");
        }
    }
    changed["payload"]["after"]["note"] = json!("added later");
    let bytes = serde_json::to_vec(&changed).expect("json");
    let r = row(d.decode(Some(&bytes), 3));
    assert_eq!(r.values[3], Value::Decimal(dec("-123.456")), "new scale applies");
    assert_eq!(d.cached_schemas(), 2);
    // And the old version still decodes with its own scale.
    assert_eq!(row(d.decode(Some(CREATE), 4)).values[3], Value::Decimal(dec("-1234.56")));
    assert_eq!(d.cached_schemas(), 2);
}

#[test]
fn fast_and_slow_paths_agree() {
    let mut d = decoder(&[Op::Create]);
    let slow = row(d.decode(Some(CREATE), 1));
    // Whitespace defeats the byte comparison: the full parse must agree.
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Json>(CREATE).expect("json")).expect("json");
    let fast = row(d.decode(Some(CREATE), 1));
    let reparsed = row(d.decode(Some(&pretty), 1));
    assert_eq!(slow, fast);
    assert_eq!(slow, reparsed);
}

#[test]
fn schemaless_envelope_needs_a_scale_for_precise_decimals() {
    let payload = serde_json::to_vec(&fixture_payload(CREATE)).expect("json");
    let err = decoder(&[Op::Create]).decode(Some(&payload), 1);
    assert!(
        matches!(err, Err(DecodeError::BadValue { ref column, ref reason }) if column == "amount" && reason.contains("decimal_scales")),
        "{err:?}"
    );

    let mut opts = options(&[Op::Create]);
    opts.roles[3] = Role::Decimal { schemaless_scale: Some(2) };
    opts.schemas = SchemaMode::Disabled;
    let r = row(Decoder::new(opts, TOPIC).decode(Some(&payload), 1));
    assert_eq!(r.values[3], Value::Decimal(dec("-1234.56")));
    assert_eq!(r.event_time, CREATED_AT);
    assert_eq!(r.key, Key::Int(user_of(CREATE, "after")));
}

#[test]
fn schemaless_string_and_double_decimals() {
    let record = |amount: Json| {
        serde_json::to_vec(&json!({
            "op": "c", "before": null,
            "after": {"id": 1, "user_id": 7, "amount": amount, "created_at": CREATED_AT.0},
            "source": {"schema": "public", "table": "transactions", "lsn": 99, "ts_ms": 5},
        }))
        .expect("json")
    };
    let mut opts = options(&[Op::Create]);
    opts.schemaless.decimals = DecimalHandling::String;
    let r = row(Decoder::new(opts.clone(), TOPIC).decode(Some(&record(json!("-0.10"))), 1));
    assert_eq!(r.values[3], Value::Decimal(dec("-0.10")));
    assert_eq!(r.lsn, Some(99));
    opts.schemaless.decimals = DecimalHandling::Double;
    let r = row(Decoder::new(opts, TOPIC).decode(Some(&record(json!(4000.1))), 1));
    assert_eq!(r.values[3], Value::Decimal(dec("4000.1")));
}

#[test]
fn snapshot_reads_decode_as_op_r() {
    let mut snapshot: Json = serde_json::from_slice(CREATE).expect("json");
    snapshot["payload"]["op"] = json!("r");
    let bytes = serde_json::to_vec(&snapshot).expect("json");
    let r = row(decoder(&[Op::Create, Op::Read]).decode(Some(&bytes), 1));
    assert_eq!(r.op, Op::Read);
    assert_eq!(decoder(&[Op::Create]).decode(Some(&bytes), 1), Ok(Decoded::Skipped(Skip::OpNotRead(Op::Read))));
}

/// A row flattened by ExtractNewRecordState with add.fields=op,lsn,source.ts_ms.
fn flat_row() -> Json {
    json!({
        "id": 5, "user_id": 42, "amount": "MDk=", "created_at": CREATED_AT.0,
        "__op": "c", "__lsn": 1234, "__source_ts_ms": 1_795_601_472_000_i64, "__table": "transactions",
    })
}

/// A flattened row with its schema block.
fn flat_with_schema(flat: Json) -> Json {
    json!({
        "schema": {"type": "struct", "name": "dbserver1.public.transactions.Value", "fields": [
            {"type": "int64", "field": "id"},
            {"type": "int32", "field": "user_id"},
            {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}, "field": "amount"},
            {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "created_at"},
            {"type": "string", "field": "__op"},
            {"type": "int64", "field": "__lsn"},
        ]},
        "payload": flat,
    })
}

#[test]
fn flattened_records_with_and_without_schema() {
    let flat = flat_row();
    let with_schema = flat_with_schema(flat.clone());
    let r = row(decoder(&[Op::Create]).decode(Some(&serde_json::to_vec(&with_schema).expect("json")), 9));
    assert_eq!((r.op, r.key.clone(), r.lsn), (Op::Create, Key::Int(42), Some(1234)));
    assert_eq!(r.values[3], Value::Decimal(dec("123.45")));
    assert_eq!(&*r.table, "transactions");

    let mut opts = options(&[Op::Create, Op::Delete]);
    opts.roles[3] = Role::Decimal { schemaless_scale: Some(2) };
    let mut d = Decoder::new(opts, TOPIC);
    let r = row(d.decode(Some(&serde_json::to_vec(&flat).expect("json")), 9));
    assert_eq!((r.op, r.values[3].clone()), (Op::Create, Value::Decimal(dec("123.45"))));

    // delete.handling.mode=rewrite without __op: __deleted says it.
    let deleted = json!({"id": 5, "user_id": 42, "amount": "MDk=", "created_at": 1, "__deleted": "true"});
    let r = row(d.decode(Some(&serde_json::to_vec(&deleted).expect("json")), 10));
    assert_eq!(r.op, Op::Delete);
    assert_eq!(&*r.table, TOPIC, "no __table: the topic names the rows");
}

#[test]
fn event_time_from_source_ts_ms() {
    let mut opts = options(&[Op::Create]);
    opts.time = TimeSource::SourceTsMs;
    let r = row(Decoder::new(opts, TOPIC).decode(Some(CREATE), 1));
    let ts_ms = fixture_payload(CREATE)["source"]["ts_ms"].as_i64().expect("ts_ms");
    assert_eq!(r.event_time, EventTime(ts_ms * 1000));
}

/// Every Connect type vigil reads, in one hand-made schema.
#[test]
fn every_connect_type() {
    let field = |name: &str, ty: &str, logical: Option<&str>, params: Option<Json>| {
        let mut f = json!({"type": ty, "optional": true, "field": name});
        if let Some(l) = logical {
            f["name"] = json!(l);
        }
        if let Some(p) = params {
            f["parameters"] = p;
        }
        f
    };
    let columns = vec![
        field("user_id", "string", None, None),
        field("ts", "string", Some("io.debezium.time.ZonedTimestamp"), None),
        field("d3", "bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(json!({"scale": "3"}))),
        field("vsd", "struct", Some("io.debezium.data.VariableScaleDecimal"), None),
        field("micro", "int64", Some("io.debezium.time.MicroTimestamp"), None),
        field("milli", "int64", Some("io.debezium.time.Timestamp"), None),
        field("nano", "int64", Some("io.debezium.time.NanoTimestamp"), None),
        field("day", "int32", Some("io.debezium.time.Date"), None),
        field("i", "int16", None, None),
        field("f", "float64", None, None),
        field("b", "boolean", None, None),
        field("s", "string", None, None),
    ];
    let names: Vec<String> = columns.iter().map(|c| c["field"].as_str().expect("name").to_owned()).collect();
    let record = json!({
        "schema": {"type": "struct", "fields": [
            {"type": "struct", "fields": columns, "optional": true, "field": "before"},
            {"type": "struct", "fields": columns, "optional": true, "field": "after"},
            {"type": "string", "field": "op"},
        ]},
        "payload": {"op": "c", "before": null, "after": {
            "user_id": "alice", "ts": "2026-11-25T11:11:12.345678+01:00", "d3": "/w==",
            "vsd": {"scale": 4, "value": "MDk="}, "micro": CREATED_AT.0, "milli": 1_795_601_472_345_i64,
            "nano": 1_795_601_472_345_678_901_i64, "day": 20_417, "i": -3, "f": 2.5, "b": true, "s": "x",
        }},
    });
    let mut roles = vec![Role::Plain; names.len()];
    roles[0] = Role::Key;
    roles[1] = Role::Time;
    roles[2] = Role::Decimal { schemaless_scale: None };
    let opts = DecodeOptions {
        projection: Projection::new(names),
        key: 0,
        time: TimeSource::Column(1),
        roles: roles.into(),
        schemas: SchemaMode::Enabled,
        schemaless: Schemaless { decimals: DecimalHandling::Precise, time_unit: TimeUnit::Micros },
        ops: vec![Op::Create].into(),
        max_key_bytes: 256,
        max_future_us: 3_600_000_000,
    };
    let r = row(Decoder::new(opts, "t").decode(Some(&serde_json::to_vec(&record).expect("json")), 1));
    assert_eq!(r.key, Key::Text("alice".into()));
    assert_eq!(r.event_time, CREATED_AT);
    let expected = [
        Value::Text("alice".into()),
        Value::Time(CREATED_AT),
        Value::Decimal(dec("-0.001")),
        Value::Decimal(dec("1.2345")),
        Value::Time(CREATED_AT),
        Value::Time(EventTime(CREATED_AT.0 - 678)),
        Value::Time(CREATED_AT),
        Value::Time(EventTime(20_417 * 86_400_000_000)),
        Value::Int(-3),
        Value::Float(2.5),
        Value::Bool(true),
        Value::Text("x".into()),
    ];
    assert_eq!(&r.values[..], &expected[..]);
}

fn decode_json(d: &mut Decoder, record: Json) -> Result<Decoded, DecodeError> {
    d.decode(Some(&serde_json::to_vec(&record).expect("json")), 1)
}

fn schemaless_create(after: Json) -> Json {
    json!({"op": "c", "before": null, "after": after, "source": {"lsn": 1}})
}

#[test]
fn malformed_records_are_errors_with_reasons() {
    let mut opts = options(&[Op::Create]);
    opts.roles[3] = Role::Decimal { schemaless_scale: Some(2) };
    let mut d = Decoder::new(opts, TOPIC);
    let reason = |r: Result<Decoded, DecodeError>| r.expect_err("must fail").reason().as_label();

    assert_eq!(reason(d.decode(Some(b"{not json"), 1)), "bad_json");
    assert_eq!(reason(d.decode(Some(b"[1,2]"), 1)), "bad_envelope");
    assert_eq!(reason(d.decode(Some(b"{\"op\":\"c\"} trailing"), 1)), "bad_json");
    let good = json!({"id": 1, "user_id": 7, "amount": "MDk=", "created_at": CREATED_AT.0});
    assert!(matches!(decode_json(&mut d, schemaless_create(good.clone())), Ok(Decoded::Row(_))));

    let mut with = |field: &str, value: Json| {
        let mut after = good.clone();
        after[field] = value;
        reason(decode_json(&mut d, schemaless_create(after)))
    };
    assert_eq!(with("user_id", Json::Null), "missing_key");
    assert_eq!(with("user_id", json!(4.5)), "wrong_type");
    assert_eq!(with("created_at", Json::Null), "missing_event_time");
    assert_eq!(with("created_at", json!("not a time")), "bad_value");
    assert_eq!(with("amount", Json::Null), "missing_value");
    assert_eq!(with("amount", json!(true)), "wrong_type");
    assert_eq!(with("amount", json!("@@@")), "bad_value");

    let mut no_key = good.clone();
    no_key.as_object_mut().expect("object").remove("user_id");
    assert_eq!(reason(decode_json(&mut d, schemaless_create(no_key))), "missing_key");

    let unknown_op = json!({"op": "x", "before": null, "after": good, "source": {}});
    assert_eq!(reason(decode_json(&mut d, unknown_op)), "unknown_op");
    let no_after = json!({"op": "c", "before": null, "after": null, "source": {}});
    assert_eq!(reason(decode_json(&mut d, no_after)), "bad_envelope");

    let mut enabled = options(&[Op::Create]);
    enabled.schemas = SchemaMode::Enabled;
    let e = Decoder::new(enabled, TOPIC).decode(Some(&serde_json::to_vec(&schemaless_create(good)).expect("json")), 1);
    assert_eq!(reason(e), "bad_envelope");

    let bad_schema = br#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","field":"amount"}]},{"type":"string","field":"op"}]},"payload":{"op":"c","after":{}}}"#;
    assert_eq!(reason(d.decode(Some(bad_schema), 1)), "bad_schema");
}

#[test]
fn envelope_without_image_for_its_op_is_refused() {
    let mut d = decoder(&[Op::Create]);
    let mut record: Json = serde_json::from_slice(CREATE).expect("json");
    record["payload"]["after"] = Json::Null;
    let e = decode_json(&mut d, record).expect_err("must fail");
    assert_eq!(e.reason().as_label(), "bad_envelope");
    assert!(e.to_string().contains("op c without its after image"), "{e}");
}

#[test]
fn options_follow_the_fraud_pipeline_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/fraud-detection.yaml");
    let text = std::fs::read_to_string(path).expect("pipeline file");
    let pipeline = crate::config::load_str(path, &text, |_| None).expect("valid pipeline");
    let opts = DecodeOptions::for_pipeline(&pipeline);
    let columns = opts.projection.columns().to_vec();
    let at = |c: &str| columns.iter().position(|x| x == c).expect("projected");
    assert_eq!(opts.key, at("user_id"));
    assert_eq!(opts.time, TimeSource::Column(at("created_at")));
    assert_eq!(opts.roles[at("amount")], Role::Decimal { schemaless_scale: None });
    assert_eq!(opts.roles[at("id")], Role::Plain);
    assert_eq!(&*opts.ops, &[Op::Create, Op::Read]);
    // And it decodes the real record.
    let r = row(Decoder::new(opts, TOPIC).decode(Some(CREATE), 1));
    assert_eq!(r.values[at("amount")], Value::Decimal(dec("-1234.56")));
}

#[test]
fn a_record_held_without_its_shared_prefix_decodes_the_same() {
    let len = envelope_prefix_len(CREATE).expect("JsonConverter's {\"schema\":…,\"payload\": prefix");
    let (prefix, rest) = CREATE.split_at(len);
    assert!(prefix.starts_with(b"{\"schema\":{") && prefix.ends_with(b"},\"payload\":"));
    let mut d = decoder(&[Op::Create]);
    let plan = d.envelope_plan(prefix).expect("schema");
    let split = d.decode_enveloped(&plan, prefix, rest, 17);
    assert_eq!(split, decoder(&[Op::Create]).decode(Some(CREATE), 17));
    assert_eq!(d.cached_schemas(), 1);
    // A record not ending as JsonConverter ends one is read whole.
    let spaced = [rest, b"\n"].concat();
    assert_eq!(d.decode_enveloped(&plan, prefix, &spaced, 17), split);
    assert_eq!(envelope_prefix_len(br#"{"op":"c","after":{}}"#), None);
    assert_eq!(envelope_prefix_len(br#"{"schema":{"type":"struct"},"other":1}"#), None);
    assert_eq!(envelope_prefix_len(br#"{"schema":{"type":"str"#), None);
}

/// Byte-level variants of the part of `record` from `from` on: each byte
/// deleted, replaced by a handful of others, and preceded by a digit.
fn variants(record: &[u8], from: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in from..record.len() {
        let mut deleted = record.to_vec();
        deleted.remove(i);
        out.push(deleted);
        for b in *b"0\"x {n\\-,}" {
            let mut replaced = record.to_vec();
            replaced[i] = b;
            out.push(replaced);
        }
        let mut inserted = record.to_vec();
        inserted.insert(i, b'1');
        out.push(inserted);
    }
    out
}

/// A decoder that has read a record of a layout reads the next records by
/// the layout's shape: whatever such a record holds, the result (row,
/// skip or error) is the one a decoder without shapes gives.
#[test]
fn shaped_reads_agree_with_key_by_key_reads() {
    let mut opts = options(&[Op::Create, Op::Update, Op::Delete, Op::Read]);
    opts.roles[3] = Role::Decimal { schemaless_scale: Some(2) };
    for fixture in [CREATE, UPDATE, DELETE] {
        let schemaless = serde_json::to_vec(&fixture_payload(fixture)).expect("json");
        let prefix = envelope_prefix_len(fixture).expect("a schema-enabled fixture");
        for (original, from) in [(fixture.to_vec(), prefix), (schemaless, 0)] {
            let mut shaped_rows = 0;
            for variant in variants(&original, from) {
                let mut shaped = Decoder::new(opts.clone(), TOPIC);
                shaped.decode(Some(&original), 0).ok();
                // Whether the variant's payload has the original's layout.
                let payload = &variant[from..variant.len() - usize::from(from > 0)];
                let fits =
                    shaped.shapes.first().zip(std::str::from_utf8(payload).ok()).is_some_and(|(shape, text)| {
                        shape.read(text, u32::from(from > 0), |_, r| r.skip().ok()).is_some()
                    });
                let got = shaped.decode(Some(&variant), 1);
                // The same decoder with its schema cache but no shapes.
                let mut key_by_key = Decoder::new(opts.clone(), TOPIC);
                key_by_key.decode(Some(&original), 0).ok();
                key_by_key.shapes.clear();
                let want = key_by_key.decode(Some(&variant), 1);
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&variant[from..]));
                shaped_rows += usize::from(fits && matches!(got, Ok(Decoded::Row(_))));
            }
            if fixture != DELETE {
                assert!(shaped_rows > 100, "rows read by a shape: {shaped_rows}");
            }
        }
    }
}

/// What decoding a record came to, an error by its reason (its text says
/// where the reader stopped, which differs from path to path).
fn outcome(result: Result<Decoded, DecodeError>) -> Result<Decoded, &'static str> {
    result.map_err(|e| e.reason().as_label())
}

/// A record whose schema block is cached is read from its payload alone
/// (the fast paths: the whole record, or a batch's record held without its
/// shared prefix); whatever the payload holds, the result (row, skip, or
/// error and its reason) is the one a decoder meeting the record first
/// gives.
#[test]
fn cached_schema_reads_agree_with_first_reads() {
    let opts = options(&[Op::Create, Op::Update, Op::Delete, Op::Read]);
    for fixture in [CREATE, UPDATE, DELETE] {
        let len = envelope_prefix_len(fixture).expect("a schema-enabled fixture");
        let prefix = &fixture[..len];
        let mut cached = Decoder::new(opts.clone(), TOPIC);
        let plan = cached.envelope_plan(prefix).expect("schema");
        let (mut rows, mut refused) = (0, 0);
        for variant in variants(fixture, len) {
            let want = outcome(Decoder::new(opts.clone(), TOPIC).decode(Some(&variant), 1));
            let text = String::from_utf8_lossy(&variant[len..]);
            assert_eq!(outcome(cached.decode(Some(&variant), 1)), want, "{text}");
            assert_eq!(outcome(cached.decode_enveloped(&plan, prefix, &variant[len..], 1)), want, "{text}");
            rows += usize::from(matches!(want, Ok(Decoded::Row(_))));
            refused += usize::from(want == Err("bad_json"));
        }
        assert_eq!(cached.cached_schemas(), 1);
        // The variants hold both: records read and broken JSON refused.
        assert!(rows > 50 && refused > 50, "rows {rows}, bad_json {refused}");
    }
}

/// The captured create envelope with `change` applied.
fn changed_create(change: impl FnOnce(&mut Json)) -> Vec<u8> {
    let mut json: Json = serde_json::from_slice(CREATE).expect("fixture");
    change(&mut json);
    serde_json::to_vec(&json).expect("json")
}

#[test]
fn a_key_whose_json_type_contradicts_its_schema_is_the_wrong_type() {
    let mut d = decoder(&[Op::Create]);
    let eleven = changed_create(|j| j["payload"]["after"]["user_id"] = json!("eleven"));
    let e = d.decode(Some(&eleven), 1).expect_err("an int64 key sent as a string");
    assert_eq!(e.reason().as_label(), "wrong_type");
    assert_eq!(e.to_string(), "column user_id: expected an integer, got string \"eleven\"");
    assert!(matches!(d.decode(Some(CREATE), 2), Ok(Decoded::Row(_))), "the same schema with an integer key");
}

#[test]
fn a_text_key_longer_than_max_key_bytes_is_a_bad_value() {
    let text_key = |len: usize| {
        changed_create(|j| {
            for field in j["schema"]["fields"].as_array_mut().expect("fields") {
                if field["field"] == "after" {
                    for column in field["fields"].as_array_mut().expect("after fields") {
                        if column["field"] == "user_id" {
                            column["type"] = json!("string");
                        }
                    }
                }
            }
            j["payload"]["after"]["user_id"] = json!("k".repeat(len));
        })
    };
    let mut d = decoder(&[Op::Create]);
    let r = row(d.decode(Some(&text_key(256)), 1));
    assert_eq!(r.key, Key::Text("k".repeat(256).into()));
    let e = d.decode(Some(&text_key(257)), 2).expect_err("one byte too many");
    assert_eq!(e.reason().as_label(), "bad_value");
    assert_eq!(e.to_string(), "column user_id: a key of 257 bytes, more than rows.max_key_bytes (256)");
}

#[test]
fn an_event_time_beyond_max_future_of_the_wall_clock_is_implausible() {
    let mut d = decoder(&[Op::Create]);
    let at = |micros: i64| changed_create(|j| j["payload"]["after"]["created_at"] = json!(micros));
    // The fixture's own time, long past, is judged against the clock told.
    d.observe_clock(EventTime(CREATED_AT.0 - 3_600_000_000));
    assert!(matches!(d.decode(Some(&at(CREATED_AT.0)), 1), Ok(Decoded::Row(_))), "exactly max_future ahead");
    let e = d.decode(Some(&at(CREATED_AT.0 + 1)), 2).expect_err("a µs more");
    assert_eq!(e.reason().as_label(), "implausible_event_time");
    assert_eq!(
        e.to_string(),
        "event time 2026-11-25T10:11:12.345679Z (created_at) is more than 3600s ahead of the wall clock (rows.max_future)"
    );
    // 9999-12-31 against the real clock; the past is never implausible.
    let mut d = decoder(&[Op::Create]);
    let e = d.decode(Some(&at(253_402_214_400_000_000)), 3).expect_err("9999-12-31");
    assert_eq!(e.reason().as_label(), "implausible_event_time");
    assert!(matches!(d.decode(Some(&at(0)), 4), Ok(Decoded::Row(_))), "1970 is fine");
}

#[test]
fn values_from_a_record_are_quoted_short() {
    assert_eq!(quoted("abc"), "\"abc\"");
    let long = "9".repeat(300_000);
    assert_eq!(quoted(&long), format!("\"{}\"... (300000 bytes)", "9".repeat(40)));
    // Cut on a character boundary.
    let wide = "é".repeat(30);
    assert_eq!(quoted(&wide), format!("\"{}\"... (60 bytes)", "é".repeat(20)));
    let mut d = decoder(&[Op::Create]);
    let huge = changed_create(|j| j["payload"]["after"]["amount"] = json!(long));
    let e = d.decode(Some(&huge), 1).expect_err("not a decimal");
    assert!(e.to_string().len() < 200, "{e}");
}

/// The captured create envelope as its text, with the after image's `id`
/// value replaced by `value` (the schema block's bytes untouched, so a
/// decoder that has read the capture reads it by its cached schema).
fn create_with_id(value: &str) -> Vec<u8> {
    let text = std::str::from_utf8(CREATE).expect("UTF-8");
    let at = r#""after":{"id":5,"#;
    assert!(text.contains(at), "the capture's after image");
    text.replacen(at, &format!(r#""after":{{"id":{value},"#), 1).into_bytes()
}

#[test]
fn a_scale_nested_in_scales_is_an_error_not_a_stack_overflow() {
    let n = 100_000;
    let nested = format!("{}1{}", r#"{"scale":"#.repeat(n), "}".repeat(n));
    let record = create_with_id(&nested);
    let mut d = decoder(&[Op::Create]);
    row(d.decode(Some(CREATE), 1));
    // Read by its cached schema and the capture's shape: a projected
    // column read as a value, the nesting not checked before.
    let e = d.decode(Some(&record), 2).expect_err("nested too deeply");
    assert_eq!(e.reason().as_label(), "bad_json");
    assert_eq!(decoder(&[Op::Create]).decode(Some(&record), 2), Err(e));
}

/// serde_json refuses a record nested 128 levels deep, counted from its
/// top, and reads one nested 127 deep: wherever the nesting stands, and
/// whichever path reads the record, so does the decoder.
#[test]
fn nesting_is_refused_where_serde_json_refuses_it_wherever_it_stands() {
    let text = std::str::from_utf8(CREATE).expect("UTF-8");
    // A top-level key, a payload key, an unread column, a source key, and
    // a VariableScaleDecimal's: from one to four levels down.
    let places = [
        (r#"{"schema":"#, r#"{"extra":NESTED,"schema":"#),
        (r#""transaction":null"#, r#""transaction":NESTED"#),
        (r#""merchant":"shop""#, r#""merchant":NESTED"#),
        (r#""xmin":null"#, r#""xmin":NESTED"#),
        (r#""after":{"id":5,"#, r#""after":{"id":{"scale":0,"value":"BQ==","x":NESTED},"#),
    ];
    let mut warm = decoder(&[Op::Create]);
    row(warm.decode(Some(CREATE), 1));
    for (from, to) in places {
        assert!(text.contains(from), "{from}");
        let mut refused = 0;
        for depth in 120..=130 {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let record = text.replacen(from, &to.replace("NESTED", &nested), 1).into_bytes();
            let json = serde_json::from_slice::<Json>(&record).is_ok();
            let fresh = outcome(decoder(&[Op::Create]).decode(Some(&record), 2));
            assert_eq!(fresh == Err("bad_json"), !json, "{to} at depth {depth}: {fresh:?}");
            assert_eq!(outcome(warm.decode(Some(&record), 2)), fresh, "{to} at depth {depth}, warm");
            refused += usize::from(!json);
        }
        assert!((1..11).contains(&refused), "{to}: the limit lies between 120 and 130");
    }
}

/// serde_json refuses a number beyond f64's range: wherever it stands,
/// read or skipped, so does the decoder; tiny ones are zero to both.
#[test]
fn numbers_beyond_f64_are_refused_even_where_skipped() {
    let text = std::str::from_utf8(CREATE).expect("UTF-8");
    let places = [
        (r#""optional":false,"default":0,"field":"id""#, r#""optional":NUMBER,"default":0,"field":"id""#),
        (r#""transaction":null"#, r#""transaction":NUMBER"#),
        (r#""merchant":"shop""#, r#""merchant":NUMBER"#),
        (r#""txId":760"#, r#""txId":NUMBER"#),
    ];
    // 309 digits may be within range (1.1e308) or not (2.2e308).
    let huge = ["1e999".to_owned(), "-1.5E+309".to_owned(), "2".repeat(309), format!("-{}.5", "9".repeat(309))];
    let fine = ["1e-999999".to_owned(), "0e999999".to_owned(), "1".repeat(309), "1.7976931348623157e308".to_owned()];
    let mut warm = decoder(&[Op::Create]);
    row(warm.decode(Some(CREATE), 1));
    for (from, to) in places {
        assert!(text.contains(from), "{from}");
        for number in huge.iter().chain(&fine).map(String::as_str) {
            let record = text.replacen(from, &to.replace("NUMBER", number), 1).into_bytes();
            let json = serde_json::from_slice::<Json>(&record).is_ok();
            assert_eq!(json, !huge.iter().any(|h| h == number), "serde_json and {number}");
            for got in [decoder(&[Op::Create]).decode(Some(&record), 2), warm.decode(Some(&record), 2)] {
                match got {
                    Ok(_) => assert!(json, "{to} with {number}"),
                    Err(e) => assert!(!json && e.reason().as_label() == "bad_json", "{to} with {number}: {e}"),
                }
            }
        }
    }
}

/// A batch's records held without their shared `{"schema":…,"payload":`
/// get what each gets decoded whole, though the decoder reads no schema
/// from that prefix: a null schema, one it cannot parse, or any with
/// schemas disabled.
#[test]
fn records_held_without_a_prefix_whose_schema_is_not_read_decode_as_whole_records() {
    let bare = serde_json::to_vec(&fixture_payload(CREATE)).expect("json");
    let with_block =
        |block: &[u8], payload: &[u8]| [br#"{"schema":"#, block, br#","payload":"#, payload, b"}"].concat();
    let mut schemaless = options(&[Op::Create]);
    schemaless.roles[3] = Role::Decimal { schemaless_scale: Some(2) };
    let mut disabled = schemaless.clone();
    disabled.schemas = SchemaMode::Disabled;
    let cases = [
        (schemaless.clone(), with_block(b"null", b"null"), "a tombstone"),
        (schemaless.clone(), with_block(b"null", &bare), "a schemaless payload"),
        (schemaless, with_block(br#"{"type":"int8"}"#, b"null"), "a tombstone under an unreadable schema"),
        (disabled, CREATE.to_vec(), "a schema block with schemas disabled"),
    ];
    for (opts, record, what) in cases {
        let len = envelope_prefix_len(&record).expect("an envelope prefix");
        let (prefix, rest) = record.split_at(len);
        let mut d = Decoder::new(opts.clone(), TOPIC);
        let plan = d.envelope_plan(prefix).expect("a plan");
        let want = Decoder::new(opts, TOPIC).decode(Some(&record), 1);
        assert_eq!(d.decode_enveloped(&plan, prefix, rest, 1), want, "{what}");
        assert_eq!(d.decode(Some(&record), 1), want, "{what}, after the prefix");
    }
}

mod hostile;
