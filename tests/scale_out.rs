//! Scale-out is Kafka's: `vigil run` processes in one group share the
//! partitions; when one more joins mid-stream, partitions move, the
//! leaving partition actors drain and commit, and no record is skipped
//! (nor read twice).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const ROWS: &str = "vigil_rows_total";
const ASSIGNED: &str = "vigil_assigned_partitions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_and_move_without_skipping_a_record() {
    let base = unique_base();
    let name = format!("scale-{base}");
    let topic = format!("vigil-test-scale-{base}");
    let (alerts, dlq) = (format!("{topic}-alerts"), format!("{topic}-dlq"));
    for (t, p) in [(&topic, 8), (&alerts, 1), (&dlq, 1)] {
        create_topic(t, p).await;
    }
    let file = pipeline_file(&name, &topic, &format!("vigil-test-scale-{base}"), &alerts, &dlq);

    let mut a = Vigil::start(&file, "a");
    let mut b = Vigil::start(&file, "b");
    let two_share = eventually(Duration::from_secs(60), || a.metric(ASSIGNED) == 4.0 && b.metric(ASSIGNED) == 4.0);
    assert!(two_share, "two processes each hold 4 of 8 partitions:\nA: {}\nB: {}", a.log(), b.log());
    assert_eq!(a.health(), Some(200));
    assert_eq!(b.health(), Some(200));

    // A stream of records across all partitions, running while a third
    // process joins.
    let produced = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (produced, stop, topic) = (Arc::clone(&produced), Arc::clone(&stop), topic.clone());
        tokio::spawn(async move {
            let producer = producer();
            let mut id = 0i64;
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    id += 1;
                    let (key, value) = transaction_envelope(base + id % 97, id, 1_000 + id);
                    send(&producer, &topic, None, Some(&key), Some(&value)).await;
                    produced.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c = Vigil::start(&file, "c");
    let three_share = eventually(Duration::from_secs(60), || {
        let (na, nb, nc) = (a.metric(ASSIGNED), b.metric(ASSIGNED), c.metric(ASSIGNED));
        nc > 0.0 && na + nb + nc == 8.0
    });
    assert!(three_share, "the third process takes partitions:\nC: {}", c.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    // What the topic holds is the truth (a producer retry could add one).
    let ends = end_offsets(&topic).expect("end offsets");
    let total = ends.values().sum::<i64>() as f64;
    assert!(total >= produced.load(Ordering::SeqCst) as f64 && total > 100.0, "a real stream: {total} records");

    let rows = || a.metric(ROWS) + b.metric(ROWS) + c.metric(ROWS);
    let all_read = eventually(Duration::from_secs(60), || rows() >= total);
    assert!(all_read, "every record decoded: {} of {total}", rows());
    assert_eq!(rows(), total, "no record read twice across the move");
    let revoked = a.metrics().contains("kind=\"revoke\"") || b.metrics().contains("kind=\"revoke\"");
    assert!(revoked, "partitions moved away from A or B");

    for (label, v) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let status = v.terminate();
        assert!(status.success(), "{label} stopped cleanly: {status}\n{}", v.log());
        assert!(v.log().contains("drained and committed"), "{label} drained:\n{}", v.log());
    }
    assert_eq!(ends.len(), 8);
    assert!(ends.values().all(|&end| end > 0), "all 8 partitions flowed: {ends:?}");
    let committed = committed(&format!("vigil-test-scale-{base}"), &topic);
    assert_eq!(committed, ends, "the group committed every record");
    delete_topics(&[&topic, &alerts, &dlq]).await;
}

/// Per-user state is only right when a user's rows share a partition: a
/// key seen on two partitions is counted and named in a warning that says
/// how to fix the topic's keying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_two_partitions_is_reported() {
    let base = unique_base();
    let name = format!("align-{base}");
    let topic = format!("vigil-test-align-{base}");
    let (alerts, dlq) = (format!("{topic}-alerts"), format!("{topic}-dlq"));
    for (t, p) in [(&topic, 2), (&alerts, 1), (&dlq, 1)] {
        create_topic(t, p).await;
    }
    let producer = producer();
    let (key, value) = transaction_envelope(base, 1, 100);
    send(&producer, &topic, Some(0), Some(&key), Some(&value)).await;
    send(&producer, &topic, Some(1), Some(&key), Some(&value)).await;
    let (other_key, other_value) = transaction_envelope(base + 1, 2, 100);
    send(&producer, &topic, Some(1), Some(&other_key), Some(&other_value)).await;

    let file = pipeline_file(&name, &topic, &name, &alerts, &dlq);
    let mut vigil = Vigil::start(&file, "a");
    let reported = eventually(Duration::from_secs(60), || {
        vigil.metric("vigil_rows_total") >= 3.0 && vigil.metric("vigil_key_misalignments_total") >= 1.0
    });
    assert!(reported, "rows read and the misplaced key counted:\n{}", vigil.log());
    assert_eq!(vigil.metric("vigil_key_misalignments_total"), 1.0, "one row of a misplaced key");
    assert!(vigil.terminate().success());
    assert!(vigil.log().contains("message.key.columns"), "the warning names the fix:\n{}", vigil.log());
    delete_topics(&[&topic, &alerts, &dlq]).await;
}
