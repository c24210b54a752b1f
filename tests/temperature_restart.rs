//! Stopping vigil across two window boundaries and starting it again fills
//! both missed windows, once each: `vigil run` processes on 2-second
//! windows against the stack's PostgreSQL, readings written beforehand
//! for the whole test (with future times), results checked by hand.

mod support;

use std::time::Duration;

use support::pg::*;
use support::*;

const EVERY: i64 = 2 * MICROS;
const GRACE: i64 = 300_000;

fn yaml(name: &str, readings: &str, results: &str) -> String {
    format!(
        "name: {name}\n\
         schedule: {{every: 2s, grace: 300ms, catch_up_limit: 6s, recompute_last: 0}}\n\
         postgres: {{url: '{url}', connect_timeout: 2s}}\n\
         readings: {{table: {readings}, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
         results: {{table: {results}, silent_groups_for: 0s}}\n",
        url = database_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_across_two_boundaries_fills_both_missed_windows_once_each() {
    let client = shared().await;
    let name = unique("t-restart").replace('_', "-");
    let (readings_table, results_table) = (unique("t_readings"), unique("t_averages"));
    create_readings(&client, &readings_table, false).await;
    let t0 = now_micros();
    let readings = readings_every(&["s-1", "s-2", "s-3"], t0 - 10 * MICROS, t0 + 60 * MICROS, 250_000);
    insert(&client, &readings_table, &readings).await;
    let file = batch_file(&name, &yaml(&name, &readings_table, &results_table));

    // A runs until it has computed a window on schedule, then stops.
    let mut a = Vigil::start(&file, "a");
    let rows = wait_windows(&client, &name, Duration::from_secs(20), "A computes windows", &|| a.log(), |w| {
        w.last().is_some_and(|w| w.end >= t0 + EVERY)
    })
    .await;
    assert!(a.terminate().success(), "A stops cleanly:\n{}", a.log());
    let stopped = now_micros();
    let rows_a = windows(&client, &name).await;
    assert!(rows_a.len() >= rows.len());
    let last_a = rows_a.last().expect("A completed windows").end;

    // Two windows end, and become due, while no vigil runs.
    let due_both = last_a + 2 * EVERY + GRACE;
    let wait = (due_both - now_micros()).max(0) as u64 + 500_000;
    tokio::time::sleep(Duration::from_micros(wait)).await;
    assert_eq!(windows(&client, &name).await, rows_a, "nothing runs while vigil is stopped");

    let restarted = now_micros();
    let mut b = Vigil::start(&file, "b");
    wait_windows(&client, &name, Duration::from_secs(20), "B catches up and goes on", &|| b.log(), |w| {
        w.last().is_some_and(|w| w.end >= restarted + EVERY)
    })
    .await;
    let metrics_b = b.metrics();
    assert!(b.terminate().success(), "B stops cleanly:\n{}", b.log());
    let rows = windows(&client, &name).await;

    assert_contiguous(&rows);
    for w in &rows {
        assert_eq!(w.computations, 1, "each window once (recompute_last is 0): {rows:#?}");
    }
    // The windows that became due while vigil was stopped were filled by B
    // when it started, in order, with nothing skipped.
    let missed: Vec<&WindowRow> = rows.iter().filter(|w| w.start >= last_a && w.end + GRACE <= restarted).collect();
    assert!(
        missed.len() >= 2,
        "two boundaries passed while stopped (A stopped at {stopped}, B at {restarted}): {rows:#?}"
    );
    assert_eq!(missed[0].start, last_a, "the first missed window follows A's last");
    for w in &missed {
        assert!(w.first_completed_at >= restarted, "window {} was computed by B: {rows:#?}", w.start);
        let window = vigil::schedule::Window { start: w.start, end: w.end };
        assert!(b.log().contains(&format!("window={window}")), "B logs window {window}:\n{}", b.log());
    }
    assert_results(&client, &results_table, &rows, &readings).await;

    // B's metrics say so too.
    let completed = metric_sum(&metrics_b, "vigil_batch_last_completed_window_seconds");
    assert!(completed * 1e6 >= (restarted + EVERY) as f64 - 1.0, "last completed window end {completed}");
    assert!(metric_sum(&metrics_b, "vigil_batch_windows_total") >= missed.len() as f64, "{metrics_b}");
    assert!(metric_sum(&metrics_b, "vigil_batch_rows_read_total") > 0.0, "{metrics_b}");
    assert_eq!(metric_sum(&metrics_b, "vigil_batch_failures_total"), 0.0, "{metrics_b}");

    clean_up(&client, &name, &[&readings_table, &results_table]).await;
}
