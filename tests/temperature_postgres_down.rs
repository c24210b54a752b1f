//! PostgreSQL gone during a run (an immediate shutdown, as in a crash):
//! vigil keeps running, says so (log, `/health`, failure metric), retries
//! with backoff, and once PostgreSQL is back fills every window it missed,
//! once each; the window whose run was cut short was rolled back and is
//! computed again, whole.
//!
//! The test runs a PostgreSQL cluster of its own (initdb in a temporary
//! folder, a free port), so stopping it touches neither the shared stack
//! nor Debezium's replication slot. To stop it *during* a run, the test
//! holds an exclusive lock on the readings table until vigil's aggregation
//! is seen waiting for it in `pg_stat_activity`.

mod support;

use std::time::Duration;

use support::pg::*;
use support::*;

const EVERY: i64 = 2 * MICROS;
const GRACE: i64 = 300_000;
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_during_a_run_then_back_fills_the_missed_windows() {
    // initdb and pg_ctl block; block_in_place keeps the runtime's other
    // worker free.
    let pg = tokio::task::block_in_place(OwnPostgres::start);
    let client = connect(&pg.url()).await;
    create_readings(&client, "readings", false).await;
    let t0 = now_micros();
    let readings = readings_every(&["s-1", "s-2"], t0 - 10 * MICROS, t0 + 90 * MICROS, 250_000);
    insert(&client, "readings", &readings).await;
    let name = unique("t-pg-down").replace('_', "-");
    let yaml = format!(
        "name: {name}\n\
         schedule: {{every: 2s, grace: 300ms, catch_up_limit: 60s, recompute_last: 0}}\n\
         postgres: {{url: '{url}', statement_timeout: 30s, connect_timeout: 1s}}\n\
         readings: {{table: readings, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
         results: {{table: averages, silent_groups_for: 0s}}\n",
        url = pg.url()
    );
    let file = batch_file(&name, &yaml);
    let mut vigil = Vigil::start(&file, "v");
    wait_windows(&client, &name, LIMIT, "the first scheduled window", &|| vigil.log(), |w| {
        w.last().is_some_and(|w| w.end >= t0 + EVERY)
    })
    .await;
    assert!(eventually(Duration::from_secs(5), || vigil.health() == Some(200)), "{}", vigil.log());

    // Hold the readings table so the next run waits inside PostgreSQL.
    let blocker = connect(&pg.url()).await;
    blocker.batch_execute("BEGIN; LOCK TABLE readings IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let application = format!("vigil {name}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&application],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "vigil's run never waited:\n{}", vigil.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = windows(&client, &name).await;
    let in_flight = before.last().expect("windows").end; // start of the window being computed

    // PostgreSQL goes away in the middle of that run, all sessions at once:
    // the lock holder's session must not end (and release the lock) before
    // vigil's does.
    tokio::task::block_in_place(|| pg.crash());
    let down_at = now_micros();
    drop((client, blocker));

    // vigil keeps running and says so.
    let said =
        eventually(Duration::from_secs(10), || vigil.health() == Some(503) && vigil.log().contains("is unavailable"));
    assert!(said, "health {:?}\n{}", vigil.health(), vigil.log());
    // Two more boundaries pass while PostgreSQL is away.
    let back = down_at + 2 * EVERY + GRACE + 1_000_000;
    tokio::time::sleep(Duration::from_micros((back - now_micros()).max(0) as u64)).await;
    assert!(vigil.metric("vigil_batch_failures_total") >= 2.0, "failed runs are counted:\n{}", vigil.metrics());
    assert!(vigil.log().contains("batch run failed"), "{}", vigil.log());

    tokio::task::block_in_place(|| pg.start_again());
    let up_at = now_micros();

    let client = connect(&pg.url()).await;
    wait_windows(&client, &name, LIMIT, "windows filled after PostgreSQL is back", &|| vigil.log(), |w| {
        w.last().is_some_and(|w| w.end >= up_at + EVERY)
    })
    .await;
    assert!(eventually(Duration::from_secs(10), || vigil.health() == Some(200)), "{}", vigil.log());
    assert!(vigil.log().contains("batch job runs again"), "{}", vigil.log());
    assert!(vigil.terminate().success(), "{}", vigil.log());

    let rows = windows(&client, &name).await;
    assert_contiguous(&rows);
    for w in &rows {
        assert_eq!(w.computations, 1, "each window once: {rows:#?}");
    }
    // The cut-short window was rolled back, then computed whole.
    let cut = rows.iter().find(|w| w.start == in_flight).expect("the window in flight is completed");
    assert!(cut.first_completed_at >= up_at, "{cut:?} was completed after PostgreSQL came back");
    // The windows that became due while PostgreSQL was away were filled.
    let missed = rows.iter().filter(|w| w.start >= in_flight && w.end + GRACE <= up_at).count();
    assert!(missed >= 3, "the window in flight and two more: {rows:#?}");
    assert_results(&client, "averages", &rows, &readings).await;
}
