//! A delivery that finally fails stops the pipeline loudly, without
//! committing past the record whose alert was lost. The failure is real:
//! the alert topic's `max.message.bytes` is too small for any alert, so
//! the broker refuses it. (Stalled deliveries and backpressure are tested
//! in `tests/source.rs`.)

mod support;

use std::time::Duration;

use futures::future::join_all;
use support::*;

/// `count` records on partition 0, every tenth above 4000 (an alert due).
async fn produce(topic: &str, base: i64, count: i64) {
    let producer = producer();
    for chunk in (1..=count).collect::<Vec<_>>().chunks(1_000) {
        let sends = chunk.iter().map(|&id| {
            let cents = if id % 10 == 0 { 500_000 } else { 10_000 };
            let (key, value) = transaction_envelope(base + id % 53, id, cents);
            let producer = &producer;
            async move { send(producer, topic, Some(0), Some(&key), Some(&value)).await }
        });
        join_all(sends).await;
    }
}

const HIGH_AMOUNT_ONLY: &str = "[{type: velocity_score, high_amount: {threshold: 4000, points: 50}, alert_above: 40}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_finally_fails_stops_the_pipeline_without_committing() {
    let base = unique_base();
    let input = format!("vigil-test-fail-{base}");
    let (alerts, dlq) = (format!("{input}-alerts"), format!("{input}-dlq"));
    create_topic(&input, 1).await;
    create_topic(&dlq, 1).await;
    // Refuses every alert: they are all larger than 64 bytes.
    create_topic_with(&alerts, 1, &[("max.message.bytes", "64")]).await;
    produce(&input, base, 20).await;

    let file = pipeline_file_with("fail-test", &input, &input, &alerts, &dlq, HIGH_AMOUNT_ONLY);
    let mut vigil = Vigil::start(&file, "a");
    let exited = eventually(Duration::from_secs(60), || vigil.exited().is_some());
    assert!(exited, "vigil stops by itself:\n{}", vigil.log());
    let status = vigil.exited().expect("exited");
    assert_eq!(status.code(), Some(1), "loudly: exit 1\n{}", vigil.log());
    let says_why = format!("alert not delivered to topic {alerts}");
    assert!(vigil.log().contains(&says_why), "says why:\n{}", vigil.log());
    assert!(vigil.log().contains("raise the topic's max.message.bytes"), "and the fix:\n{}", vigil.log());
    // Offsets 0..9 hold no alert, offset 9 (id 10) does: nothing at or past
    // it may be committed.
    let committed = committed(&input, &input).get(&0).copied().unwrap_or(0);
    assert!(committed <= 9, "committed {committed}: past an undelivered alert");
    delete_topics(&[&input, &alerts, &dlq]).await;
}
