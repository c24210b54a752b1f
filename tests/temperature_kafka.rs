//! The optional Kafka output of the temperature batch job: each result row
//! as JSON keyed by sensor, acknowledged before the window counts as
//! completed; a results topic that does not exist refuses the start.
//! Against the stack's PostgreSQL and Kafka, with time injected.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use support::pg::*;
use support::*;
use vigil::config::{load_any_str, BatchPipeline, PipelineDef};
use vigil::schedule::{self, Job, RunOutcome, StartError};
use vigil::telemetry::Health;

const MIN: i64 = 60 * MICROS;

/// The start of a 10-minute window an hour ago. Recent on purpose: the
/// records carry the window's end as their time, and Kafka's retention
/// (7 days here) would delete records stamped long ago.
fn window_start() -> i64 {
    (now_micros() - 60 * MIN).div_euclid(10 * MIN) * 10 * MIN
}

fn pipeline(name: &str, readings: &str, results: &str, topic: &str) -> BatchPipeline {
    let text = format!(
        "name: {name}\n\
         schedule: {{every: 10m, grace: 30s, catch_up_limit: 11m}}\n\
         postgres: {{url: '{url}'}}\n\
         readings: {{table: {readings}, group_by: sensor_id, value: temperature, time: recorded_at}}\n\
         results:\n  table: {results}\n  kafka: {{brokers: '{brokers}', topic: {topic}}}\n",
        url = database_url(),
        brokers = kafka_brokers()
    );
    match load_any_str("test.yaml", &text, |_| None) {
        Ok(PipelineDef::Batch(p)) => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn results_are_published_keyed_by_sensor_and_a_missing_topic_refuses_the_start() {
    actix::System::new().block_on(async {
        let client = shared().await;
        let t10 = window_start();
        let name = unique("t-kafka").replace('_', "-");
        let topic = unique("vigil-test-temps").replace('_', "-");
        let (readings_table, results_table) = (unique("t_readings"), unique("t_averages"));
        create_readings(&client, &readings_table, false).await;
        let readings = vec![
            Reading { sensor: "s-a".into(), value: 20.0, at: t10 + MIN },
            Reading { sensor: "s-a".into(), value: 23.0, at: t10 + 9 * MIN },
            Reading { sensor: "s-b".into(), value: 19.5, at: t10 + 5 * MIN },
        ];
        insert(&client, &readings_table, &readings).await;

        // The topic does not exist yet: the start is refused, naming it.
        let refused =
            schedule::start(vec![pipeline(&name, &readings_table, &results_table, &topic)], &Health::default()).await;
        match refused {
            Err(e @ StartError::Topic { .. }) => assert!(e.to_string().contains(&topic), "{e}"),
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("started without its results topic"),
        }

        create_topic(&topic, 1).await;
        let mut job = Job::new(Arc::new(pipeline(&name, &readings_table, &results_table, &topic))).expect("job");
        job.check_output().await.expect("the topic exists now");
        let outcome = job.run(t10 + 10 * MIN + 30 * MICROS).await.expect("run");
        let RunOutcome::Ran { windows: done, .. } = outcome else { panic!("the lock is free") };
        assert_eq!(done.last().map(|w| w.window.start), Some(t10));

        let records = read_until(&topic, &HashMap::new(), Duration::from_secs(20), |r| r.len() >= 2)
            .expect("the results are in Kafka");
        assert_eq!(records.len(), 2, "one record per sensor: {records:?}");
        let by_key: HashMap<String, serde_json::Value> = records
            .iter()
            .map(|r| {
                assert_eq!(r.header("vigil.pipeline").as_deref(), Some(name.as_str()));
                let key = String::from_utf8(r.key.clone().expect("keyed")).expect("UTF-8 key");
                (key, r.value_json().expect("a value"))
            })
            .collect();
        // By hand: s-a read 20.0 and 23.0, s-b 19.5.
        assert_eq!(
            by_key["s-a"],
            serde_json::json!({
                "sensor_id": "s-a",
                "window_start": vigil::schedule::timestamp(t10),
                "window_end": vigil::schedule::timestamp(t10 + 10 * MIN),
                "readings": 2,
                "average": 21.5,
                "minimum": 20.0,
                "maximum": 23.0,
            })
        );
        assert_eq!(by_key["s-b"]["readings"], 1);
        assert_eq!(by_key["s-b"]["average"], 19.5);
        // And the same rows are in the results table.
        assert!(same(&results(&client, &results_table, t10).await, &expected(&readings, t10, t10 + 10 * MIN)));

        delete_topics(&[&topic]).await;
        clean_up(&client, &name, &[&readings_table, &results_table]).await;
    });
}
