//! `loadtest sensors` against the stack's PostgreSQL: a span of history
//! written at once (one reading per sensor per interval, all in the span),
//! then live readings. Each run writes to a table of its own.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgrespw@127.0.0.1:5432/mydb".into())
}

fn loadtest(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "loadtest {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test]
async fn history_then_live_readings() {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required (scripts/stack up): {e}"));
    tokio::spawn(connection);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    let table = format!("loadtest_sensors_{}_{}", nanos % 1_000_000_000_000, std::process::id());

    let before = SystemTime::now();
    let out = loadtest(&["sensors", "--sensors", "3", "--history", "1h", "--table", &table]);
    assert!(out.contains("wrote 180 readings of 3 sensors"), "{out}");
    let rows = client
        .query(
            &format!(
                "SELECT sensor_id, count(*), min(recorded_at), max(recorded_at), min(temperature), max(temperature) \
                 FROM {table} GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await
        .expect("the table exists");
    let sensors: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(sensors, ["sensor-001", "sensor-002", "sensor-003"]);
    for row in &rows {
        assert_eq!(row.get::<_, i64>(1), 60, "one a minute for an hour");
        let (first, last): (SystemTime, SystemTime) = (row.get(2), row.get(3));
        // recorded_at is UTC: within the hour before the run.
        let span = last.duration_since(first).expect("ordered").as_secs();
        assert!((3_480..3_600).contains(&span), "{span}");
        assert!(last <= SystemTime::now() && first >= before - std::time::Duration::from_secs(3_601));
        let (low, high): (f64, f64) = (row.get(4), row.get(5));
        assert!(16.0 <= low && high <= 26.0, "{low}..{high}");
    }

    // Live: every second for a little over two seconds.
    loadtest(&["sensors", "--sensors", "2", "--interval", "1s", "--duration", "2500ms", "--table", &table]);
    let live: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {table} WHERE recorded_at > now() AT TIME ZONE 'UTC' - interval '10 seconds'"
            ),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!((2..=8).contains(&live), "about two readings per sensor, got {live}");

    client.batch_execute(&format!("DROP TABLE {table}")).await.expect("drop");
}
