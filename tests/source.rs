//! The Kafka source in process, against the real stack: rows written to
//! PostgreSQL come out decoded exactly; malformed records and tombstones
//! written straight to a topic are dead-lettered or skipped, the stream
//! goes on, and the group's offsets end up past all of them.

mod support;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Arbiter;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use vigil::config::{load_str, Pipeline};
use vigil::decode::DecodeOptions;
use vigil::kafka::{create_producer, durable_producer_config, Client};
use vigil::row::{Key, Row, Value};
use vigil::sink::dead_letter::{headers, DeadLetters};
use vigil::source::records::{Fetched, RecordsQueue};
use vigil::source::{Source, SourceParts};
use vigil::stage::{BatchError, Downstream, Panicked};
use vigil::telemetry::Health;
use vigil::time::EventTime;

use support::*;

/// Collects every row handed downstream; optionally refuses the first
/// batch with a passing error, as a downstream actor that went away would.
#[derive(Default)]
struct Collect {
    rows: Mutex<Vec<(i32, Row)>>,
    failures_left: AtomicUsize,
}

impl Downstream for Collect {
    fn process(
        &self,
        _topic: Arc<str>,
        partition: i32,
        rows: Vec<Row>,
    ) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>> {
        let fail = self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if fail {
            return Box::pin(async {
                Err(BatchError::Unavailable { stage: "test downstream", reason: actix::MailboxError::Closed })
            });
        }
        if let Ok(mut all) = self.rows.lock() {
            all.extend(rows.into_iter().map(|r| (partition, r)));
        }
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl Collect {
    fn rows(&self) -> Vec<(i32, Row)> {
        self.rows.lock().expect("rows").clone()
    }
}

fn pipeline(name: &str, topic: &str, group: &str, dead_letters: &str) -> Pipeline {
    let text = format!(
        "name: {name}\n\
         source: {{brokers: '{brokers}', topics: [{topic}], group: {group}, start_from: earliest}}\n\
         format: {{type: debezium-json}}\n\
         rows: {{key: user_id, event_time: created_at, primary_key: [id]}}\n\
         detectors: [{{type: spend_anomaly}}]\n\
         sink: {{alerts: {name}.alerts, dead_letters: {dead_letters}}}\n",
        brokers = kafka_brokers()
    );
    load_str("test pipeline", &text, |_| None).expect("test pipeline is valid")
}

/// Runs a source for `pipeline` until `done` holds for the collected rows
/// (or 60 s pass), then stops it (drain and commit) and returns the rows.
async fn run_source(pipeline: Pipeline, done: impl Fn(&[(i32, Row)]) -> bool) -> Vec<(i32, Row)> {
    run_source_into(pipeline, Arc::new(Collect::default()), done).await
}

async fn run_source_into(
    pipeline: Pipeline,
    collect: Arc<Collect>,
    done: impl Fn(&[(i32, Row)]) -> bool,
) -> Vec<(i32, Row)> {
    let watched = Arc::clone(&collect);
    run_with(pipeline, collect.clone(), move || done(&watched.rows())).await;
    collect.rows()
}

/// Runs a source into `downstream` until `done` (asked every 100 ms, for at
/// most 120 s), then stops it: drain and commit.
async fn run_with(pipeline: Pipeline, downstream: Arc<dyn Downstream>, mut done: impl FnMut() -> bool) {
    {
        let arbiters: Vec<Arbiter> = (0..2).map(|_| Arbiter::new()).collect();
        let config = durable_producer_config(
            &pipeline.source.brokers,
            &pipeline.source.properties,
            pipeline.sink.delivery_timeout,
        );
        let producer = create_producer(&config, &pipeline.name, Client::Producer).expect("dead-letter producer");
        let (fatal, _fatal_rx) = tokio::sync::mpsc::unbounded_channel();
        let source = Source::start(SourceParts {
            decode: DecodeOptions::for_pipeline(&pipeline),
            dead_letters: DeadLetters::new(
                producer,
                pipeline.sink.dead_letters.clone(),
                pipeline.name.clone(),
                1_000_000,
            ),
            pipeline: Arc::new(pipeline),
            downstream,
            arbiters: arbiters.iter().map(Arbiter::handle).collect(),
            health: Health::default(),
            fatal,
            transactions: None,
        })
        .expect("source starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::task::spawn_blocking(move || source.stop()).await.expect("source stops");
        for a in arbiters {
            a.stop();
        }
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

#[actix_rt::test]
async fn rows_inserted_into_postgres_come_out_decoded_exactly() {
    let base = unique_base();
    let dlq = format!("vigil-test-dlq-{base}");
    create_topic(&dlq, 1).await;
    let db = postgres().await;
    let inserted = [
        ("0.01", "2026-01-01 00:00:00"),
        ("-99.99", "2026-02-28 23:59:59.999999"),
        ("99999999.99", "2026-11-25 10:11:12.345678"),
        ("1234.50", "1999-12-31 23:59:59.5"),
    ];
    let mut expected = Vec::new();
    for (i, (amount, at)) in inserted.iter().enumerate() {
        let user = (base + i as i64) as i32;
        let row = db
            .query_one(
                "INSERT INTO transactions (user_id, amount, created_at) VALUES ($1, $2::text::numeric, $3::text::timestamp) \
                 RETURNING id, (extract(epoch from created_at) * 1000000)::bigint",
                &[&user, amount, at],
            )
            .await
            .expect("insert");
        expected.push((user as i64, row.get::<_, i64>(0), dec(amount), EventTime(row.get::<_, i64>(1))));
    }

    let users: Vec<i64> = expected.iter().map(|e| e.0).collect();
    let ours = move |rows: &[(i32, Row)]| {
        rows.iter().filter(|(_, r)| matches!(r.key, Key::Int(k) if users.contains(&k))).count() >= 4
    };
    let group = format!("vigil-test-decode-{base}");
    let p = pipeline("decode-test", TRANSACTIONS_TOPIC, &group, &dlq);
    let projection = DecodeOptions::for_pipeline(&p).projection;
    let rows = run_source(p, ours).await;

    for (user, id, amount, at) in expected {
        let (partition, row) =
            rows.iter().find(|(_, r)| r.key == Key::Int(user)).unwrap_or_else(|| panic!("row of user {user} decoded"));
        assert_eq!(row.values[projection.index("id").expect("id")], Value::Int(id));
        assert_eq!(row.values[projection.index("amount").expect("amount")], Value::Decimal(amount));
        assert_eq!(row.values[projection.index("amount").expect("amount")].as_decimal().map(|d| d.scale()), Some(2));
        assert_eq!(row.event_time, at, "created_at of user {user}");
        assert_eq!(&*row.table, "public.transactions");
        assert!(row.lsn.is_some());
        let key = format!("{{\"schema\":{{\"type\":\"struct\",\"fields\":[{{\"type\":\"int32\",\"optional\":false,\"field\":\"user_id\"}}],\"optional\":false,\"name\":\"dbserver1.public.transactions.Key\"}},\"payload\":{{\"user_id\":{user}}}}}");
        assert_eq!(*partition, kafka_partition(key.as_bytes(), 8), "user {user} on its key's partition");
    }
    let committed = committed(&group, TRANSACTIONS_TOPIC);
    assert!(!committed.is_empty(), "the group committed its progress");
}

#[actix_rt::test]
async fn malformed_records_are_dead_lettered_and_the_stream_goes_on() {
    let base = unique_base();
    let input = format!("vigil-test-input-{base}");
    let dlq = format!("vigil-test-dlq-{base}");
    create_topic(&input, 4).await;
    create_topic(&dlq, 1).await;
    let producer = producer();
    let (key, good) = transaction_envelope(base, 1, 12_345);
    let (_, good_again) = transaction_envelope(base, 2, -500);
    let mut missing_key: serde_json::Value = serde_json::from_slice(&good).expect("json");
    missing_key["payload"]["after"]["user_id"] = serde_json::Value::Null;
    let missing_key = serde_json::to_vec(&missing_key).expect("json");
    let mut unknown_op: serde_json::Value = serde_json::from_slice(&good).expect("json");
    unknown_op["payload"]["op"] = "x".into();
    let unknown_op = serde_json::to_vec(&unknown_op).expect("json");
    // Bytes as the connector writes them, the schema block first, with an
    // amount that is not base64: held without the batch's shared prefix,
    // and dead-lettered whole.
    let text = String::from_utf8(good.clone()).expect("utf-8");
    let bad_amount = text.replacen("\"amount\":\"MDk=\"", "\"amount\":\"@@@@\"", 1).into_bytes();
    assert_ne!(bad_amount, good, "the amount is in the record");
    let records: [(&str, Option<&[u8]>); 7] = [
        ("good", Some(&good)),
        ("bad_json", Some(b"{\"schema\": oops")),
        ("missing_key", Some(&missing_key)),
        ("unknown_op", Some(&unknown_op)),
        ("bad_value", Some(&bad_amount)),
        ("tombstone", None),
        ("good", Some(&good_again)),
    ];
    for (_, value) in &records {
        send(&producer, &input, Some(2), Some(&key), *value).await;
    }

    let group = format!("vigil-test-dlq-{base}");
    let rows = run_source(pipeline("dlq-test", &input, &group, &dlq), |rows| rows.len() >= 2).await;
    let amounts: Vec<Value> = rows.iter().map(|(_, r)| r.values[3].clone()).collect();
    assert_eq!(amounts, [Value::Decimal(dec("123.45")), Value::Decimal(dec("-5.00"))], "both good rows, in order");

    let letters =
        read_until(&dlq, &Default::default(), Duration::from_secs(30), |rs| rs.len() >= 4).expect("four dead letters");
    assert_eq!(letters.len(), 4);
    for (letter, (offset, (reason, value))) in letters.iter().zip(records.iter().enumerate().skip(1)) {
        assert_eq!(letter.header(headers::REASON).as_deref(), Some(*reason));
        assert_eq!(letter.header(headers::PIPELINE).as_deref(), Some("dlq-test"));
        assert_eq!(letter.header(headers::TOPIC).as_deref(), Some(input.as_str()));
        assert_eq!(letter.header(headers::PARTITION).as_deref(), Some("2"));
        assert_eq!(letter.header(headers::OFFSET), Some(offset.to_string()));
        assert!(letter.header(headers::ERROR).is_some_and(|e| !e.is_empty()));
        assert_eq!(letter.value.as_deref(), *value, "dead letter carries the record unchanged");
        assert_eq!(letter.key.as_deref(), Some(&key[..]));
    }
    // Everything, the tombstone and the dead letters included, is behind
    // the committed offset: the stream went on past them.
    assert_eq!(committed(&group, &input).get(&2), Some(&7));
}

/// Gives up every row with a negative amount, as the detector shard gives
/// up a row that panicked a detector on each of its attempts; collects the
/// others.
#[derive(Default)]
struct GiveUpRefunds {
    collect: Collect,
}

impl Downstream for GiveUpRefunds {
    fn process(
        &self,
        topic: Arc<str>,
        partition: i32,
        rows: Vec<Row>,
    ) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>> {
        let refund = |row: &Row| matches!(&row.values[3], Value::Decimal(d) if d.is_sign_negative());
        let (refunds, rest): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(refund);
        let given_up = refunds
            .iter()
            .map(|row| Panicked { offset: row.offset, stage: "detector", attempts: 3, message: "test".into() })
            .collect();
        let collected = self.collect.process(topic, partition, rest);
        Box::pin(async move {
            collected.await?;
            Ok(given_up)
        })
    }
}

/// A row downstream gives up on goes to the dead-letter topic unchanged,
/// as `internal_error` with the panic in the error header, after the
/// rows before it; the stream goes on and commits past it.
#[actix_rt::test]
async fn a_row_given_up_downstream_is_dead_lettered_as_internal_error() {
    let base = unique_base();
    let input = format!("vigil-test-input-{base}");
    let dlq = format!("vigil-test-dlq-{base}");
    create_topic(&input, 1).await;
    create_topic(&dlq, 1).await;
    let producer = producer();
    let (key, good) = transaction_envelope(base, 1, 12_345);
    let (_, refund) = transaction_envelope(base, 2, -500);
    let (_, good_again) = transaction_envelope(base, 3, 700);
    for value in [&good, &refund, &good_again] {
        send(&producer, &input, Some(0), Some(&key), Some(value)).await;
    }

    let group = format!("vigil-test-give-up-{base}");
    let downstream = Arc::new(GiveUpRefunds::default());
    let watched = Arc::clone(&downstream);
    run_with(pipeline("give-up-test", &input, &group, &dlq), downstream, move || watched.collect.rows().len() >= 2)
        .await;
    let letters =
        read_until(&dlq, &Default::default(), Duration::from_secs(30), |rs| !rs.is_empty()).expect("a dead letter");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.header(headers::REASON).as_deref(), Some("internal_error"));
    assert_eq!(
        letter.header(headers::ERROR).as_deref(),
        Some("detector panicked on this record 3 times (rows.max_attempts): test")
    );
    assert_eq!(letter.header(headers::OFFSET).as_deref(), Some("1"));
    assert_eq!((letter.key.as_deref(), letter.value.as_deref()), (Some(&key[..]), Some(&refund[..])));
    assert_eq!(committed(&group, &input).get(&0), Some(&3), "committed past the given-up row");
}

/// A batch whose downstream fails with a passing error: the partition
/// actor is restarted by its supervisor, the partition is rewound, and the
/// batch is read again: every row arrives once, nothing is skipped.
#[actix_rt::test]
async fn a_failed_partition_actor_restarts_and_reads_its_batch_again() {
    let base = unique_base();
    let input = format!("vigil-test-restart-{base}");
    let dlq = format!("{input}-dlq");
    create_topic(&input, 1).await;
    create_topic(&dlq, 1).await;
    let producer = producer();
    for id in 1..=5 {
        let (key, value) = transaction_envelope(base, id, id * 100);
        send(&producer, &input, Some(0), Some(&key), Some(&value)).await;
    }
    let collect = Arc::new(Collect { failures_left: AtomicUsize::new(1), ..Collect::default() });
    let group = format!("vigil-test-restart-{base}");
    let rows =
        run_source_into(pipeline("restart-test", &input, &group, &dlq), Arc::clone(&collect), |rows| rows.len() >= 5)
            .await;
    assert_eq!(collect.failures_left.load(Ordering::SeqCst), 0, "the first batch failed once");
    let amounts: Vec<Value> = rows.iter().map(|(_, r)| r.values[3].clone()).collect();
    let expected: Vec<Value> = (1..=5).map(|i| Value::Decimal(Decimal::new(i * 100, 2))).collect();
    assert_eq!(amounts, expected, "each row once, in order, after the restart");
    assert_eq!(committed(&group, &input).get(&0), Some(&5));
    delete_topics(&[&input, &dlq]).await;
}

/// Holds every batch until opened, as an alert topic that does not
/// acknowledge would.
#[derive(Default)]
struct Gate {
    open: Arc<AtomicBool>,
    batches: AtomicUsize,
    rows: Mutex<Vec<Row>>,
}

impl Downstream for Gate {
    fn process(&self, _: Arc<str>, _: i32, rows: Vec<Row>) -> BoxFuture<'static, Result<Vec<Panicked>, BatchError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut all) = self.rows.lock() {
            all.extend(rows);
        }
        let open = Arc::clone(&self.open);
        Box::pin(async move {
            while !open.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Vec::new())
        })
    }
}

/// Effects that are not acknowledged hold batches in flight: the partition
/// pauses with a bounded number of records taken in, and when they are
/// acknowledged it resumes where it stopped: every record once, in order.
#[actix_rt::test]
async fn stalled_effects_pause_the_partition_and_it_resumes_where_it_stopped() {
    let base = unique_base();
    let input = format!("vigil-test-stall-{base}");
    let dlq = format!("{input}-dlq");
    create_topic(&input, 1).await;
    create_topic(&dlq, 1).await;
    const RECORDS: i64 = 60_000;
    let producer = producer();
    for chunk in (1..=RECORDS).collect::<Vec<_>>().chunks(2_000) {
        let sends = chunk.iter().map(|&id| {
            let (key, value) = transaction_envelope(base + id % 53, id, 10_000);
            let (producer, input) = (&producer, &input);
            async move { send(producer, input, Some(0), Some(&key), Some(&value)).await }
        });
        futures::future::join_all(sends).await;
    }

    let gate = Arc::new(Gate::default());
    let (mut held, mut stable_since) = (0usize, Instant::now());
    let mut opened = false;
    let group = format!("vigil-test-stall-{base}");
    let watched = Arc::clone(&gate);
    run_with(pipeline("stall-test", &input, &group, &dlq), gate.clone(), move || {
        let rows = watched.rows.lock().expect("rows").len();
        if !opened {
            if rows != held {
                (held, stable_since) = (rows, Instant::now());
            } else if rows > 0 && stable_since.elapsed() > Duration::from_secs(2) {
                // Taken in and holding still: bounded by the in-flight cap.
                let batches = watched.batches.load(Ordering::SeqCst);
                assert!(batches <= 16, "{batches} batches in flight");
                assert!((rows as i64) < RECORDS, "{rows} of {RECORDS} rows taken in while stalled");
                watched.open.store(true, Ordering::SeqCst);
                opened = true;
            }
            return false;
        }
        rows as i64 >= RECORDS
    })
    .await;
    assert!(gate.open.load(Ordering::SeqCst), "the stall was seen and released");
    let ids: Vec<i64> = gate
        .rows
        .lock()
        .expect("rows")
        .iter()
        .map(|r| match r.values[2] {
            Value::Int(id) => id,
            ref other => panic!("id {other:?}"),
        })
        .collect();
    let first_wrong = ids.iter().zip(1..).position(|(&got, want)| got != want);
    assert_eq!(
        (ids.len() as i64, first_wrong),
        (RECORDS, None),
        "every record once, in order (around the first wrong one: {:?})",
        first_wrong.map(|i| &ids[i.saturating_sub(2)..(i + 3).min(ids.len())])
    );
    assert_eq!(committed(&group, &input).get(&0), Some(&RECORDS));
    delete_topics(&[&input, &dlq]).await;
}

/// Partitions forwarded to a records queue before they are assigned send
/// it every record, several per call, in offset order, and none to the
/// consumer queue; a seek reads a partition again from there.
#[actix_rt::test]
async fn forwarded_partitions_come_in_batches_in_order_and_never_on_the_consumer_queue() {
    let topic = format!("vigil-test-records-{}", unique_base());
    create_topic(&topic, 2).await;
    const PER_PARTITION: i64 = 3_000;
    let producer = producer();
    for partition in 0..2 {
        for chunk in (0..PER_PARTITION).collect::<Vec<_>>().chunks(1_000) {
            let sends = chunk.iter().map(|i| {
                let (producer, topic, value) = (&producer, &topic, format!("{partition}-{i}"));
                async move { send(producer, topic, Some(partition), None, Some(value.as_bytes())).await }
            });
            futures::future::join_all(sends).await;
        }
    }

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", &topic)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let records = RecordsQueue::new(&consumer).expect("a records queue");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..2 {
        assert!(records.forward(&consumer, &topic, partition), "partition {partition} forwarded");
        assignment.add_partition_offset(&topic, partition, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");

    let mut fetched = Fetched::default();
    // Reads `want` records: (partition, offset, value), and the most one call gave.
    let mut read = |want: usize| {
        let (mut got, mut most) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < want && Instant::now() < deadline {
            assert!(!matches!(consumer.poll(Duration::ZERO), Some(Ok(_))), "a record came on the consumer queue");
            records.fill(Duration::from_millis(100), 500, &mut fetched);
            let before = got.len();
            for record in fetched.runs().flatten() {
                assert!(record.error().is_none(), "{:?}", record.error());
                let value = String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned();
                got.push((record.partition(), record.offset(), value));
            }
            most = most.max(got.len() - before);
        }
        (got, most)
    };
    let in_order = |got: &[(i32, i64, String)], partition: i32, from: i64| {
        let of: Vec<(i64, &str)> = got.iter().filter(|r| r.0 == partition).map(|r| (r.1, r.2.as_str())).collect();
        let want: Vec<(i64, String)> = (from..PER_PARTITION).map(|o| (o, format!("{partition}-{o}"))).collect();
        of.len() == want.len() && of.iter().zip(&want).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    };

    let (got, most) = read(2 * PER_PARTITION as usize);
    assert_eq!(got.len(), 2 * PER_PARTITION as usize, "every record came");
    assert!(in_order(&got, 0, 0) && in_order(&got, 1, 0), "each partition's records once, in offset order");
    assert!(most > 1, "records come several per call (at most {most})");

    consumer.seek(&topic, 0, Offset::Offset(1_000), Duration::from_secs(10)).expect("seek");
    let (again, _) = read((PER_PARTITION - 1_000) as usize);
    assert!(in_order(&again, 0, 1_000), "after the seek, partition 0 from offset 1000 once, in order");
    assert!(!matches!(consumer.poll(Duration::ZERO), Some(Ok(_))), "a record came on the consumer queue");

    drop(fetched);
    drop(records);
    drop(consumer);
    delete_topics(&[&topic]).await;
}
