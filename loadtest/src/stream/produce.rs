//! `loadtest produce`: the workload's transactions into Kafka (envelopes
//! straight into a topic) or PostgreSQL (rows for Debezium to publish), at
//! a rate or as fast as possible, for a count or a duration; then a
//! manifest from which `verify` recomputes the alerts due.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use loadtest::workload::Workload;

use super::kafka::{self, EnvelopeSink, Offsets};
use super::manifest::{Manifest, Target};
use super::pace::{Pace, Produced, Step};
use super::postgres;
use super::progress::Progress;
use super::{KafkaArgs, WorkloadArgs};

/// The topic Debezium publishes `transactions` to (the stack's connector).
const DEBEZIUM_TOPIC: &str = "dbserver1.public.transactions";

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Where the transactions go: Debezium envelopes straight into a Kafka
    /// topic, or rows into PostgreSQL's `transactions` table.
    #[arg(long, value_enum, default_value_t = Target::Kafka)]
    to: Target,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The input topic (created if missing; default loadtest.transactions);
    /// with --to postgres, the topic Debezium publishes the table to.
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a topic that does not exist yet.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Transactions to produce (200,000 when --duration is not given).
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// Produce for this long instead (e.g. 90s, 5m).
    #[arg(long, value_parser = crate::duration)]
    duration: Option<Duration>,
    /// Records per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Where to write the manifest `verify` reads.
    #[arg(long, default_value = "loadtest-manifest.json")]
    manifest: PathBuf,
    /// PostgreSQL, with --to postgres.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres:postgrespw@127.0.0.1:5432/mydb")]
    database_url: String,
    /// Rows per COPY at most, with --to postgres.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
}

/// Sends the workload's transactions to `sink` at `pace` and waits until
/// the broker has them all.
pub fn to_kafka(
    sink: &EnvelopeSink,
    workload: &Workload,
    pace: &Pace,
    progress: &mut Progress,
) -> anyhow::Result<Produced> {
    let mut count = 0u64;
    let mut txns = workload.transactions(pace.expected().unwrap_or(i64::MAX as u64));
    loop {
        match pace.step(count) {
            Step::Go => {}
            Step::Wait(wait) => {
                std::thread::sleep(wait);
                continue;
            }
            Step::Stop => break,
        }
        let Some(t) = txns.next() else { break };
        sink.send(&t)?;
        count += 1;
        if count.is_multiple_of(1024) {
            progress.update(count, String::new);
        }
    }
    sink.flush()?;
    progress.update(count, String::new);
    progress.finish();
    Ok(Produced { count, seconds: pace.seconds() })
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let records = match (args.records, args.duration) {
        (None, None) => Some(200_000),
        (n, _) => n,
    };
    if args.to == Target::Postgres && args.workload.schemaless {
        anyhow::bail!("--schemaless is for --to kafka: with --to postgres, Kafka Connect's converter decides");
    }
    let mut pace = Pace::new(args.rate, records, args.duration);
    pace.stop_on_ctrl_c();
    let workload = args.workload.workload(args.rate, records);
    let (topic, produced, placement) = match args.to {
        Target::Kafka => {
            let topic = args.topic.clone().unwrap_or_else(|| "loadtest.transactions".into());
            let brokers = &args.kafka.brokers;
            kafka::create_topics(brokers, &[(&topic, args.partitions)]).await?;
            let marks = Offsets::plain(brokers)?.watermarks(&topic)?;
            let already = kafka::records(&marks);
            if already > 0 {
                eprintln!(
                    "loadtest: warning: {topic} already holds {already} records; `verify` will see their alerts too"
                );
            }
            let sink = EnvelopeSink::new(brokers, &topic, marks.len() as i32, args.workload.schemaless)?;
            pace.start();
            let produced = to_kafka(&sink, &workload, &pace, &mut Progress::new("produce", pace.expected()))?;
            (topic, produced, postgres::Placement { id_offset: 0, user_offset: 0 })
        }
        Target::Postgres => {
            let topic = args.topic.clone().unwrap_or_else(|| DEBEZIUM_TOPIC.into());
            let writer = postgres::Writer::open(&args.database_url, pace.expected(), workload.users).await?;
            pace.start();
            let mut progress = Progress::new("produce", pace.expected());
            let produced = writer.write(&workload, &pace, args.batch, &mut progress).await?;
            (topic, produced, writer.placement)
        }
    };
    let manifest = Manifest {
        count: produced.count,
        id_offset: placement.id_offset,
        user_offset: placement.user_offset,
        ..Manifest::new(args.to, &topic, &workload, args.workload.schemaless)
    };
    manifest.write(&args.manifest).context("after producing")?;
    println!(
        "produced {} transactions to {topic} in {:.1} s ({:.0}/s); {} alerts due; manifest {}",
        produced.count,
        produced.seconds,
        produced.rate(),
        manifest.due().len(),
        args.manifest.display()
    );
    Ok(())
}
