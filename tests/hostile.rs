//! Hostile records against the real stack: each gets a verdict (a dead
//! letter with its reason), vigil keeps running, and a normal burst for the
//! same user right after still alerts.
//!
//! The cases: an amount of 300 KB where a Decimal is expected, into a
//! dead-letter topic that takes at most 100 KB (its dead letter is cut to
//! fit, saying so); a key whose JSON type contradicts its schema; a row
//! dated 9999-12-31 (before the guard, it blinded the velocity rule for its
//! user); a text key of 1,000 bytes. And two rows that are no error but
//! once stopped a shard or an alert: an amount of 10^25 after a history of
//! 0.0001s (its score, beyond a decimal's range, saturates), and a
//! primary key of 100 KB of text (the alert carries 256 bytes of it).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use loadtest::envelope::CAPTURED_CREATED_AT;
use serde_json::{json, Value};
use support::*;

const DEAD_LETTER_LIMIT: usize = 100_000;
const SECOND: i64 = 1_000_000;

/// A transaction envelope with `change` applied to its JSON.
fn envelope(user: i64, id: i64, cents: i64, at: i64, change: impl FnOnce(&mut Value)) -> (Vec<u8>, Vec<u8>) {
    let (key, value) = transaction_envelope_at(user, id, cents, Some(at));
    let mut json: Value = serde_json::from_slice(&value).expect("an envelope is JSON");
    change(&mut json);
    (key, serde_json::to_vec(&json).expect("JSON"))
}

/// The `after` field of the schema block, by column name.
fn after_field<'a>(json: &'a mut Value, column: &str) -> &'a mut Value {
    let fields = json["schema"]["fields"].as_array_mut().expect("schema fields");
    let after = fields.iter_mut().find(|f| f["field"] == "after").expect("the after image");
    let columns = after["fields"].as_array_mut().expect("after fields");
    columns.iter_mut().find(|f| f["field"] == column).expect("the column")
}

/// `amount` as the connector writes a Decimal: the unscaled value's
/// big-endian two's complement bytes, in base64, its scale in the schema.
fn set_amount(json: &mut Value, unscaled: i128, scale: u32) {
    let bytes = unscaled.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(15).min(15);
    // Keep a leading zero byte when the top bit would read as a sign.
    let first = if bytes[first] & 0x80 != 0 { first - 1 } else { first };
    json["payload"]["after"]["amount"] = json!(base64(&bytes[first..]));
    let field = after_field(json, "amount");
    field["parameters"]["scale"] = json!(scale.to_string());
    field["parameters"]["connect.decimal.precision"] = json!("38");
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() { ALPHABET[sextet as usize] as char } else { '=' });
        }
    }
    out
}

/// Five rows of 100.00 a second apart, then one of 4,500.00: both
/// reference detectors alert on the last (six rows in 60 s and above 4,000
/// score 90; 4,500 is more than three times the mean of 100).
fn burst(user: i64, first_id: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..6)
        .map(|i| {
            let cents = if i == 5 { 450_000 } else { 10_000 };
            transaction_envelope_at(user, first_id + i, cents, Some(CAPTURED_CREATED_AT + i * SECOND))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_dead_lettered_and_their_users_still_alert() {
    let base = unique_base();
    let input = format!("vigil-test-hostile-{base}");
    let (alerts, dlq) = (format!("{input}-alerts"), format!("{input}-dlq"));
    create_topic(&input, 1).await;
    create_topic(&alerts, 1).await;
    create_topic_with(&dlq, 1, &[("max.message.bytes", &DEAD_LETTER_LIMIT.to_string())]).await;
    let (future_user, typed_user, large_user) = (base + 1, base + 2, base + 3);

    let huge_amount = "9".repeat(300_000);
    let hostile = [
        // A Decimal of 300 KB: bad_value, its dead letter cut to fit.
        envelope(large_user, 1, 100, CAPTURED_CREATED_AT, |j| j["payload"]["after"]["amount"] = json!(huge_amount)),
        // `user_id` is int64 in the schema: "eleven" is wrong_type.
        envelope(typed_user, 2, 100, CAPTURED_CREATED_AT, |j| j["payload"]["after"]["user_id"] = json!("eleven")),
        // 9999-12-31: implausible_event_time.
        envelope(future_user, 3, 100, CAPTURED_CREATED_AT, |j| {
            j["payload"]["after"]["created_at"] = json!(253_402_214_400 * SECOND)
        }),
        // A text key of 1,000 bytes: bad_value.
        envelope(large_user, 4, 100, CAPTURED_CREATED_AT, |j| {
            after_field(j, "user_id")["type"] = json!("string");
            j["payload"]["after"]["user_id"] = json!("k".repeat(1_000));
        }),
    ];
    let producer = producer();
    for (key, value) in &hostile {
        send(&producer, &input, Some(0), Some(key), Some(value)).await;
    }
    // Three amounts of 0.0001, then 10^25: more than three times the
    // mean, by a ratio of 10^29, past a decimal's 7.9 x 10^28.
    let extreme_user = base + 4;
    let extreme_at = CAPTURED_CREATED_AT - 3_600 * SECOND;
    for (id, (unscaled, scale)) in [(1, 4), (1, 4), (1, 4), (10_i128.pow(25), 0)].into_iter().enumerate() {
        let at = extreme_at + id as i64 * 120 * SECOND;
        let (key, value) = envelope(extreme_user, 10 + id as i64, 0, at, |j| set_amount(j, unscaled, scale));
        send(&producer, &input, Some(0), Some(&key), Some(&value)).await;
    }
    let mut due = BTreeSet::new();
    due.insert(("spend-anomaly".to_owned(), 13));
    for (i, user) in [future_user, typed_user, large_user, extreme_user].into_iter().enumerate() {
        let first_id = 100 * (i as i64 + 1);
        for (key, value) in burst(user, first_id) {
            send(&producer, &input, Some(0), Some(&key), Some(&value)).await;
        }
        // The extreme user's mean is 2.5 x 10^24 now: no spend anomaly.
        if user != extreme_user {
            due.insert(("spend-anomaly".to_owned(), first_id + 5));
        }
        due.insert(("velocity-score".to_owned(), first_id + 5));
    }
    // A burst whose last row has a primary key of 100 KB of text: both
    // alerts, the key cut (`alert_row_id` reads no number: -1).
    let long_id_user = base + 5;
    let long_id = "i".repeat(100_000);
    for (n, (key, value)) in burst(long_id_user, 600).into_iter().enumerate() {
        let value = if n < 5 {
            value
        } else {
            let mut json: Value = serde_json::from_slice(&value).expect("JSON");
            after_field(&mut json, "id")["type"] = json!("string");
            json["payload"]["after"]["id"] = json!(long_id);
            serde_json::to_vec(&json).expect("JSON")
        };
        send(&producer, &input, Some(0), Some(&key), Some(&value)).await;
    }
    due.insert(("spend-anomaly".to_owned(), -1));
    due.insert(("velocity-score".to_owned(), -1));

    let file = pipeline_file("hostile-test", &input, &input, &alerts, &dlq);
    let mut vigil = Vigil::start(&file, "hostile");
    let got = read_settled(&alerts, |a| a.len() >= due.len(), Duration::from_secs(3));
    let ids: BTreeSet<(String, i64)> =
        got.iter().map(|a| (a["detector"].as_str().unwrap_or("").to_owned(), alert_row_id(a))).collect();
    assert_eq!(
        (ids, got.len()),
        (due.clone(), due.len()),
        "each user's burst alerts, once per detector:\n{}",
        vigil.log()
    );
    let extreme = got.iter().find(|a| alert_row_id(a) == 13).expect("the extreme amount's alert");
    assert_eq!(extreme["score"].as_f64(), Some(79_228_162_514_264_337_593_543_950_335.0), "saturated: {extreme}");
    for alert in got.iter().filter(|a| alert_row_id(a) == -1) {
        assert_eq!(alert["row"]["primary_key"]["id"].as_str(), Some(&long_id[..256]), "{alert}");
        assert_eq!(alert["truncated"], json!({"row.primary_key.id": 100_000}), "{alert}");
    }

    let letters = read_until(&dlq, &HashMap::new(), Duration::from_secs(60), |r| r.len() >= hostile.len())
        .unwrap_or_else(|e| panic!("a dead letter per hostile record: {e}\n{}", vigil.log()));
    let reasons: Vec<(String, String)> = letters
        .iter()
        .map(|r| (r.header("vigil.source.offset").unwrap_or_default(), r.header("vigil.reason").unwrap_or_default()))
        .collect();
    let expected = [("0", "bad_value"), ("1", "wrong_type"), ("2", "implausible_event_time"), ("3", "bad_value")]
        .map(|(o, r)| (o.to_owned(), r.to_owned()));
    assert_eq!(reasons, expected, "{letters:?}");
    let large = &letters[0];
    let original = hostile[0].1.len();
    assert_eq!(large.header("vigil.value.truncated_from"), Some(original.to_string()));
    let kept = large.value.as_ref().map_or(0, Vec::len);
    assert!(kept < DEAD_LETTER_LIMIT && kept > DEAD_LETTER_LIMIT / 2, "{kept} bytes kept of {original}");
    assert_eq!(large.value.as_deref().map(|v| &v[..1000]), Some(&hostile[0].1[..1000]), "a prefix of the record");
    let error = large.header("vigil.error").unwrap_or_default();
    assert!(error.len() < 200 && error.contains("(300000 bytes)"), "a short quote of the value: {error}");
    assert!(letters[3].header("vigil.error").unwrap_or_default().contains("rows.max_key_bytes"), "{:?}", letters[3]);
    assert!(letters[1].header("vigil.error").unwrap_or_default().contains("\"eleven\""), "{:?}", letters[1]);

    assert!(vigil.exited().is_none(), "vigil still runs:\n{}", vigil.log());
    let implausible =
        vigil.metric("vigil_dead_letters_total{pipeline=\"hostile-test\",reason=\"implausible_event_time\"}");
    assert_eq!(implausible, 1.0);
    vigil.stop();
    delete_topics(&[&input, &alerts, &dlq]).await;
}
