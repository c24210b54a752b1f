//! The temperature batch job's results, against the stack's PostgreSQL,
//! with time injected (a manual clock), so windows of ten real minutes are
//! computed at once.
//!
//! Readings spread over three windows, one of them empty, with a reading
//! exactly on a window boundary (it belongs to the later window) and one a
//! microsecond before it, give the per-sensor results computed here by
//! hand; a late reading is taken in when the window is recomputed; a
//! TIMESTAMPTZ column gives the same windows; a time column of the wrong
//! type is refused with a clear reason.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use support::pg::*;
use vigil::config::{load_any_str, BatchPipeline, PipelineDef};
use vigil::schedule::{self, Job, ManualClock, Options, RunError, RunOutcome};
use vigil::telemetry::Health;

/// 2024-03-10T10:00:00Z, µs.
const T10: i64 = 1_710_064_800 * MICROS;
const MIN: i64 = 60 * MICROS;
/// How long a test waits for the windows it expects.
const LIMIT: Duration = Duration::from_secs(20);

fn pipeline(name: &str, readings: &str, results: &str, time_type: &str) -> BatchPipeline {
    let text = format!(
        "name: {name}\n\
         schedule: {{every: 10m, grace: 30s, catch_up_limit: 30m, recompute_last: 1}}\n\
         postgres: {{url: '{url}', statement_timeout: 10s}}\n\
         readings: {{table: {readings}, group_by: sensor_id, value: temperature, time: recorded_at, time_type: {time_type}}}\n\
         results: {{table: {results}, silent_groups_for: 1h}}\n",
        url = support::database_url()
    );
    match load_any_str("test.yaml", &text, |_| None) {
        Ok(PipelineDef::Batch(p)) => p,
        other => panic!("{other:?}"),
    }
}

fn reading(sensor: &str, value: f64, at: i64) -> Reading {
    Reading { sensor: sensor.into(), value, at }
}

/// `2024-03-10 HH:MM:SS.ffffff`: the TIMESTAMP literal of `at`, written
/// here so the test's inserts do not go through the job's time binding.
fn literal(at: i64) -> String {
    let offset = at - T10;
    let (secs, micros) = (offset.div_euclid(MICROS), offset.rem_euclid(MICROS));
    let (h, m, s) = (10 + secs.div_euclid(3600), secs.rem_euclid(3600) / 60, secs.rem_euclid(60));
    format!("2024-03-10 {h:02}:{m:02}:{s:02}.{micros:06}")
}

async fn insert_literally(client: &tokio_postgres::Client, table: &str, readings: &[Reading], suffix: &str) {
    for r in readings {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (sensor_id, temperature, recorded_at) VALUES ($1, $2, '{}{suffix}')",
                    literal(r.at)
                ),
                &[&r.sensor, &r.value],
            )
            .await
            .expect("insert");
    }
}

fn with_silent(mut want: BTreeMap<String, Agg>, silent: &[&str]) -> BTreeMap<String, Agg> {
    for s in silent {
        assert!(want.insert((*s).to_owned(), Agg::SILENT).is_none(), "{s} is not silent");
    }
    want
}

#[test]
fn three_windows_one_empty_with_boundary_readings_give_hand_computed_results() {
    actix::System::new().block_on(async {
        let client = shared().await;
        let name = unique("t-windows").replace('_', "-");
        let (readings_table, results_table) = (unique("t_readings"), unique("t_averages"));
        create_readings(&client, &readings_table, false).await;

        let s = |x: i64| x * MICROS;
        let readings = vec![
            // Before 10:00: a window the run does not compute.
            reading("s-a", 99.0, T10 - 1),
            // 10:00-10:10, its first instant included.
            reading("s-a", 20.5, T10),
            reading("s-a", 21.25, T10 + 4 * MIN + s(30)),
            reading("s-b", 18.75, T10 + 5 * MIN),
            reading("s-c", 25.0, T10 + 3 * MIN),
            // A microsecond before the boundary: still 10:00-10:10.
            reading("s-a", 22.0, T10 + 10 * MIN - 1),
            // Exactly on the boundary: 10:10-10:20.
            reading("s-a", 19.5, T10 + 10 * MIN),
            reading("s-b", 18.25, T10 + 15 * MIN),
            reading("s-b", 18.5, T10 + 20 * MIN - 1),
            // 10:20-10:30: empty. Exactly at 10:30: the next window.
            reading("s-a", 30.0, T10 + 30 * MIN),
        ];
        insert_literally(&client, &readings_table, &readings, "").await;

        // 10:30:30: 10:20-10:30 is due; catch_up_limit 30m reaches back to
        // the window ending 10:10.
        let clock = ManualClock::at(T10 + 30 * MIN + s(30));
        let health = Health::default();
        let options = Options { clock: Arc::new(clock.clone()), nap: Duration::from_millis(20) };
        let schedules =
            schedule::start_with(vec![pipeline(&name, &readings_table, &results_table, "timestamp")], &health, options)
                .await
                .expect("the job starts");

        let rows = wait_windows(&client, &name, LIMIT, "three windows", &String::new, |w| w.len() == 3).await;
        let starts: Vec<i64> = rows.iter().map(|w| w.start).collect();
        assert_eq!(starts, [T10, T10 + 10 * MIN, T10 + 20 * MIN]);
        assert_contiguous(&rows);

        // By hand, first the numbers themselves, then the generic check.
        let w1 = results(&client, &results_table, T10).await;
        assert_eq!(
            w1["s-a"],
            Agg { readings: 3, average: Some(21.25), minimum: Some(20.5), maximum: Some(22.0) },
            "20.5, 21.25 and 22.0 (a microsecond before 10:10); not 99.0 (before 10:00), not 19.5 (at 10:10)"
        );
        let w2 = results(&client, &results_table, T10 + 10 * MIN).await;
        assert_eq!(w2["s-a"], Agg { readings: 1, average: Some(19.5), minimum: Some(19.5), maximum: Some(19.5) });
        assert_eq!(w2["s-b"], Agg { readings: 2, average: Some(18.375), minimum: Some(18.25), maximum: Some(18.5) });
        // The empty window: no average of nothing, but a row per sensor
        // that reported within the hour (readings 0, average NULL).
        let w3 = results(&client, &results_table, T10 + 20 * MIN).await;
        assert_eq!(w3, with_silent(BTreeMap::new(), &["s-a", "s-b", "s-c"]));

        let want = [
            expected(&readings, T10, T10 + 10 * MIN),
            with_silent(expected(&readings, T10 + 10 * MIN, T10 + 20 * MIN), &["s-c"]),
            with_silent(expected(&readings, T10 + 20 * MIN, T10 + 30 * MIN), &["s-a", "s-b", "s-c"]),
        ];
        for (w, want) in rows.iter().zip(&want) {
            let got = results(&client, &results_table, w.start).await;
            assert!(same(&got, want), "window at {}: got {got:#?} want {want:#?}", w.start);
            assert_eq!(w.rows_read, want.values().map(|a| a.readings).sum::<i64>());
            assert_eq!(w.computations, 1);
        }
        assert_eq!((rows[2].rows_read, rows[2].result_rows), (0, 3), "the empty window is recorded as empty");
        assert!(health.check().is_ok(), "{:?}", health.check());

        // A late reading for 10:20-10:30 arrives; at 10:40:30 the job
        // computes 10:30-10:40 and recomputes the window before it.
        let late = reading("s-b", 17.0, T10 + 25 * MIN);
        insert_literally(&client, &readings_table, std::slice::from_ref(&late), "").await;
        let mut all = readings.clone();
        all.push(late);
        clock.set(T10 + 40 * MIN + s(30));
        let rows = wait_windows(&client, &name, LIMIT, "the fourth window", &String::new, |w| w.len() == 4).await;
        let computations: Vec<i32> = rows.iter().map(|w| w.computations).collect();
        assert_eq!(computations, [1, 1, 2, 1], "only the window before the new one is recomputed");
        let w3 = results(&client, &results_table, T10 + 20 * MIN).await;
        assert!(same(&w3, &with_silent(expected(&all, T10 + 20 * MIN, T10 + 30 * MIN), &["s-a", "s-c"])), "{w3:#?}");
        assert_eq!(w3["s-b"].average, Some(17.0));
        let w4 = results(&client, &results_table, T10 + 30 * MIN).await;
        assert!(same(&w4, &with_silent(expected(&all, T10 + 30 * MIN, T10 + 40 * MIN), &["s-b", "s-c"])), "{w4:#?}");
        assert_eq!(w4["s-a"].average, Some(30.0), "the reading exactly at 10:30 opens 10:30-10:40");

        schedules.stop().await;
        clean_up(&client, &name, &[&readings_table, &results_table]).await;
    });
}

#[test]
fn a_timestamptz_column_gives_the_same_windows_and_a_wrong_time_type_is_refused() {
    actix::System::new().block_on(async {
        let client = shared().await;
        // The test's own session in another zone: instants, not wall clocks.
        client.batch_execute("SET TIME ZONE 'America/New_York'").await.expect("set zone");
        let name = unique("t-tz").replace('_', "-");
        let (readings_table, results_table) = (unique("t_readings_tz"), unique("t_averages_tz"));
        create_readings(&client, &readings_table, true).await;
        let readings = vec![
            reading("s-a", 20.0, T10 + 10 * MIN - 1),
            reading("s-a", 21.0, T10 + 10 * MIN),
            reading("s-b", 22.5, T10 + 19 * MIN),
        ];
        insert_literally(&client, &readings_table, &readings, "+00").await;

        // Declared as TIMESTAMP: refused on first contact, saying why.
        let wrong = pipeline(&name, &readings_table, &results_table, "timestamp");
        let mut job = Job::new(Arc::new(wrong)).expect("job");
        let err = job.run(T10 + 20 * MIN + 30 * MICROS).await.expect_err("the time type does not match");
        assert!(matches!(err, RunError::Readings { .. }), "{err}");
        assert!(err.to_string().contains("recorded_at is timestamptz, not timestamp"), "{err}");

        let mut job = Job::new(Arc::new(pipeline(&name, &readings_table, &results_table, "timestamptz"))).expect("job");
        let RunOutcome::Ran { windows: done, .. } = job.run(T10 + 20 * MIN + 30 * MICROS).await.expect("run") else {
            panic!("the lock is free")
        };
        let got: Vec<(i64, i64)> = done.iter().map(|w| (w.window.start, w.rows_read)).collect();
        // 09:50-10:00 too: catch_up_limit (30m) reaches back to it; it is
        // empty, with no sensor known before it, so it has no rows.
        assert_eq!(
            got,
            [(T10 - 10 * MIN, 0), (T10, 1), (T10 + 10 * MIN, 2)],
            "the boundary reading is in the later window"
        );
        assert!(done[0].results.is_empty());
        for w in &done {
            let got = results(&client, &results_table, w.window.start).await;
            assert!(same(&got, &expected(&readings, w.window.start, w.window.end)), "{got:#?}");
        }
        // The report matches the table.
        assert_eq!(done[2].results.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(), ["s-a", "s-b"]);
        // Nothing more is due at the same instant.
        let again = job.run(T10 + 20 * MIN + 30 * MICROS).await.expect("run");
        assert_eq!(again, RunOutcome::Ran { windows: vec![], skipped: None });

        clean_up(&client, &name, &[&readings_table, &results_table]).await;
    });
}
