//! The load test's pieces on their own against the real stack: `produce`
//! writes a manifest that `verify` reads, `baseline` reads what was
//! produced, `verify` fails when due alerts are missing, and
//! `produce --to postgres` writes rows with ids reserved from the table's
//! sequence and users no earlier row has.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::Value;

fn unique() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

/// Runs loadtest with `args` (words without spaces).
fn loadtest(args: &str) -> (Output, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_loadtest")).args(args.split_whitespace()).output().expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn manifest(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("manifest written")).expect("manifest is JSON")
}

#[tokio::test]
async fn produce_baseline_and_verify_compose_through_a_manifest() {
    let topic = format!("loadtest-test-{}", unique());
    let file = std::env::temp_dir().join(format!("{topic}.json"));
    let path = file.display().to_string();
    let (out, stdout, stderr) = loadtest(&format!(
        "produce --to kafka --topic {topic} --partitions 4 --records 20000 --fraud-rate 0.01 --users 500 --manifest {path}"
    ));
    assert!(out.status.success(), "produce (is Kafka up? scripts/stack up):\n{stdout}\n{stderr}");
    let m = manifest(&path);
    assert_eq!(
        (m["target"].as_str(), m["topic"].as_str(), m["count"].as_u64()),
        (Some("kafka"), Some(&*topic), Some(20_000))
    );

    let (out, stdout, stderr) = loadtest(&format!("baseline --topic {topic}"));
    assert!(out.status.success(), "baseline:\n{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout[stdout.find('{').expect("a JSON report")..]).expect("JSON");
    assert_eq!(json["baseline"]["records"], 20_000);
    assert!(json["baseline"]["records_per_second"].as_f64().is_some_and(|r| r > 0.0), "{json}");

    // No vigil ran: the topic holds no alert, so every due alert is missing.
    let (out, stdout, stderr) = loadtest(&format!("verify --alerts {topic} --manifest {path} --input {topic}"));
    assert!(!out.status.success(), "verify must fail:\n{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout[stdout.find('{').expect("a JSON report")..]).expect("JSON");
    let alerts = &json["alerts"];
    assert!(alerts["due"].as_u64().is_some_and(|d| d >= 100), "planted fraud is due: {alerts}");
    assert_eq!(
        (&alerts["missing"], &alerts["received"], &alerts["ignored"]),
        (&alerts["due"], &0.into(), &20_000.into())
    );
    assert!(stderr.contains("verification failed"), "{stderr}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
        .create()
        .expect("admin client");
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn rows_go_into_postgres_with_reserved_ids_and_users_of_their_own() {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgrespw@127.0.0.1:5432/mydb".into());
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required (scripts/stack up): {e}"));
    tokio::spawn(connection);
    let file = std::env::temp_dir().join(format!("loadtest-test-pg-{}.json", unique()));
    let path = file.display().to_string();
    let (out, stdout, stderr) =
        loadtest(&format!("produce --to postgres --records 300 --rate 1000 --users 50 --manifest {path}"));
    assert!(out.status.success(), "produce --to postgres:\n{stdout}\n{stderr}");
    let m = manifest(&path);
    let _ = std::fs::remove_file(&file);
    assert_eq!((m["target"].as_str(), m["count"].as_u64()), (Some("postgres"), Some(300)));
    assert_eq!(m["topic"], "dbserver1.public.transactions");
    let (ids, users) = (m["id_offset"].as_i64().expect("id_offset"), m["user_offset"].as_i64().expect("user_offset"));

    let row = db
        .query_one(
            "SELECT count(*), min(id), max(id), min(user_id), max(user_id) FROM transactions WHERE id > $1 AND id <= $1 + 300",
            &[&ids],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 300, "every row under its reserved id");
    assert_eq!((row.get::<_, i64>(1), row.get::<_, i64>(2)), (ids + 1, ids + 300));
    let (low, high) = (i64::from(row.get::<_, i32>(3)), i64::from(row.get::<_, i32>(4)));
    assert!(low > users && high <= users + 50, "users {low}..={high} moved past {users}");
    let earlier: i64 = db
        .query_one(
            "SELECT count(*) FROM transactions WHERE user_id > $1 AND user_id <= $2 AND id <= $3",
            &[&(users as i32), &(users as i32 + 50), &ids],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(earlier, 0, "no earlier row shares the users' history");
    let next: i64 = db.query_one("SELECT last_value FROM transactions_id_seq", &[]).await.expect("sequence").get(0);
    assert!(next >= ids + 300, "the sequence moved past the reservation: {next}");
}
