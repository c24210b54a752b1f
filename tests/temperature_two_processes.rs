//! Two vigil processes with the same batch pipeline compute each window
//! once: both wake at the same due times, the pipeline's advisory lock lets
//! one run at a time, and the completed-windows table tells the other that
//! nothing is left. 2-second windows against the stack's PostgreSQL.

mod support;

use std::time::Duration;

use support::pg::*;
use support::*;

const EVERY: i64 = 2 * MICROS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_compute_each_window_once() {
    let client = shared().await;
    let name = unique("t-two").replace('_', "-");
    let (readings_table, results_table) = (unique("t_readings"), unique("t_averages"));
    create_readings(&client, &readings_table, false).await;
    let t0 = now_micros();
    let readings = readings_every(&["s-1", "s-2"], t0 - 10 * MICROS, t0 + 60 * MICROS, 200_000);
    insert(&client, &readings_table, &readings).await;
    let yaml = format!(
        "name: {name}\n\
         schedule: {{every: 2s, grace: 200ms, catch_up_limit: 6s, recompute_last: 0}}\n\
         postgres: {{url: '{url}'}}\n\
         readings: {{table: {readings_table}, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
         results: {{table: {results_table}, silent_groups_for: 0s}}\n",
        url = database_url()
    );
    let file = batch_file(&name, &yaml);

    let mut a = Vigil::start(&file, "a");
    let mut b = Vigil::start(&file, "b");
    // Five windows on schedule, with both processes running throughout.
    let until = t0 + 5 * EVERY;
    let logs = || format!("--- A:\n{}\n--- B:\n{}", a.log(), b.log());
    wait_windows(&client, &name, Duration::from_secs(30), "five windows", &logs, |w| {
        w.last().is_some_and(|w| w.end >= until)
    })
    .await;
    // Both are alive and serve metrics; read them before stopping.
    let (metrics_a, metrics_b) = (a.metrics(), b.metrics());
    assert!(a.terminate().success(), "A:\n{}", a.log());
    assert!(b.terminate().success(), "B:\n{}", b.log());

    let rows = windows(&client, &name).await;
    assert_contiguous(&rows);
    assert!(rows.len() >= 6, "{rows:#?}");
    for w in &rows {
        assert_eq!(w.computations, 1, "window {} computed more than once: {rows:#?}", w.start);
    }
    // Each process counts what it computed: together, every window once.
    let computed =
        metric_sum(&metrics_a, "vigil_batch_windows_total") + metric_sum(&metrics_b, "vigil_batch_windows_total");
    assert_eq!(computed, rows.len() as f64, "A:\n{metrics_a}\nB:\n{metrics_b}");
    // Both really ran the schedule.
    for (who, log) in [("A", a.log()), ("B", b.log())] {
        assert!(log.contains("batch job scheduled"), "{who}:\n{log}");
        assert!(!log.contains("batch run failed"), "{who}:\n{log}");
    }
    // Window lines in the two logs, together, name each window once.
    let both = format!("{}\n{}", a.log(), b.log());
    for w in &rows {
        let window = vigil::schedule::Window { start: w.start, end: w.end };
        let lines = both.lines().filter(|l| l.contains(&format!("window={window}"))).count();
        assert_eq!(lines, 1, "window {window} in the logs:\n{both}");
    }
    assert_results(&client, &results_table, &rows, &readings).await;

    clean_up(&client, &name, &[&readings_table, &results_table]).await;
}
