//! `loadtest restore`: how long vigil takes to restore a large state. Writes
//! a changelog of `--users` users of full state (50 amounts, a velocity
//! window of 7 times; records encoded by vigil's own format), one record
//! per user, as a fully compacted changelog holds them, then starts vigil on
//! its empty source topic and reads from its log how long the restore of
//! every partition took, from the assignment to the last partition
//! installed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;

use loadtest::state::{FullUsers, ROWS_PER_USER, ROW_SPACING_US};
use vigil::detect::record::{encode_user, key_bytes};
use vigil::row::Key;

use super::kafka;
use super::progress::Progress;
use super::run::Names;
use super::vigil::{self as process, Vigil};
use super::{emit, now_us, KafkaArgs};

/// How long vigil may take to restore everything.
const RESTORE_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Users of full state in the changelog.
    #[arg(long, default_value_t = 1_000_000)]
    users: i64,
    /// Partitions of the source topic and its changelog.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// The vigil binary (default: beside this one).
    #[arg(long)]
    vigil: Option<PathBuf>,
    /// Write the JSON report here (default: onto stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the run's topics afterwards.
    #[arg(long)]
    keep_topics: bool,
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let binary = process::binary(args.vigil.as_deref())?;
    let brokers = args.kafka.brokers.clone();
    let names = Names::new();
    let changelog = names.changelog();
    kafka::create_topics(&brokers, &[(&names.input, args.partitions), (&names.alerts, 1), (&names.dead_letters, 1)])
        .await?;
    create_changelog(&brokers, &changelog, args.partitions).await?;
    let pipeline = names.pipeline(&brokers, false, false, false)?;
    let written = write_changelog(&brokers, &changelog, &pipeline, args.users, args.partitions)?;
    eprintln!("loadtest: {} users in {changelog}: {} bytes in {:.1} s", args.users, written.bytes, written.seconds);

    let log = names.dir.join("vigil.log");
    let mut vigil = Vigil::start(&binary, &pipeline, &log, "loadtest-restore")?;
    let started = Instant::now();
    let restored = loop {
        vigil.check_running()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let restored = Restored::read(&text);
        if restored.users >= args.users as u64 && restored.partitions >= args.partitions as usize {
            break restored;
        }
        if started.elapsed() > RESTORE_LIMIT {
            bail!(
                "{} of {} users restored after {} s (log: {})",
                restored.users,
                args.users,
                RESTORE_LIMIT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let usage = vigil.usage();
    vigil.stop();
    let seconds = restored.seconds();
    println!(
        "restored {} users ({} changelog bytes, {} partitions) in {seconds:.2} s from the assignment; slowest partition {} ms; peak RSS {:.0} MiB",
        restored.users, written.bytes, restored.partitions, restored.slowest_ms, usage.peak_rss_mib
    );
    let report = json!({
        "users": args.users,
        "partitions": args.partitions,
        "changelog_records": args.users,
        "changelog_bytes": written.bytes,
        "changelog_compacted": "one record per user: as a fully compacted changelog",
        "restore_seconds": seconds,
        "slowest_partition_ms": restored.slowest_ms,
        "users_restored": restored.users,
        "vigil": { "cpu_seconds": usage.cpu_seconds, "peak_rss_mib": usage.peak_rss_mib },
    });
    emit(&report, args.report.as_deref())?;
    if !args.keep_topics {
        kafka::delete_topics(&brokers, &[&names.input, &names.alerts, &names.dead_letters, &changelog]).await;
    }
    Ok(())
}

/// A compacted changelog, as vigil would create it.
async fn create_changelog(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka::config(brokers).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for result in admin.create_topics(&[topic], &AdminOptions::new()).await.context("creating the changelog")? {
        if let Err((t, e)) = result {
            bail!("creating {t}: {e}");
        }
    }
    Ok(())
}

struct Written {
    bytes: u64,
    seconds: f64,
}

/// One full-state record per user, on partition `user % partitions`.
fn write_changelog(
    brokers: &str,
    changelog: &str,
    pipeline: &std::path::Path,
    users: i64,
    partitions: i32,
) -> anyhow::Result<Written> {
    let pipeline = vigil::config::load(pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    let full = FullUsers::new(&pipeline).context("the pipeline's detectors read no amount")?;
    let producer: ThreadedProducer<DefaultProducerContext> = kafka::config(brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the changelog producer")?;
    let started = Instant::now();
    let mut progress = Progress::new("changelog", Some(users as u64));
    let (mut bytes, mut value) = (0u64, Vec::new());
    let start_us = now_us() - ROWS_PER_USER * ROW_SPACING_US;
    for u in 0..users {
        let user = full.user(u, start_us);
        value.clear();
        encode_user(&full.detectors, &user, &mut value);
        let key = key_bytes(&Key::Int(u));
        bytes += (key.len() + value.len()) as u64;
        let partition = (u % partitions as i64) as i32;
        let mut record = BaseRecord::<[u8], [u8]>::to(changelog).partition(partition).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("writing the changelog: {e}"),
            }
        }
        if u % 10_000 == 0 {
            progress.update(u as u64, || format!("{bytes} bytes"));
        }
    }
    producer.flush(Duration::from_secs(120)).context("flushing the changelog")?;
    progress.finish();
    Ok(Written { bytes, seconds: started.elapsed().as_secs_f64() })
}

/// What vigil's log says of its restores.
#[derive(Debug, Default, PartialEq)]
struct Restored {
    users: u64,
    partitions: usize,
    slowest_ms: u64,
    /// Seconds of the day of the first assignment and the last restore.
    assigned_at: Option<f64>,
    last_at: f64,
}

impl Restored {
    /// From lines "… partitions assigned …" and "… restored N users of
    /// topic/p in X ms …", each starting with its RFC 3339 time.
    fn read(log: &str) -> Restored {
        let mut r = Restored::default();
        for line in log.lines() {
            let Some(at) = seconds_of_day(line) else { continue };
            if line.contains("partitions assigned") && !line.contains("partitions=[]") {
                r.assigned_at.get_or_insert(at);
            }
            let Some(rest) = line.split("restored ").nth(1) else { continue };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (Some(users), Some(ms)) = (words.first().and_then(|w| w.parse::<u64>().ok()), words.get(5)) else {
                continue;
            };
            r.users += users;
            r.partitions += 1;
            r.slowest_ms = r.slowest_ms.max(ms.parse().unwrap_or(0));
            r.last_at = at;
        }
        r
    }

    /// From the first assignment to the last partition restored.
    fn seconds(&self) -> f64 {
        self.assigned_at.map_or(0.0, |a| self.last_at - a)
    }
}

/// `2026-12-06T01:22:57.741844Z …` → seconds since midnight.
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.get(11..26)?;
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?, parts.next()?);
    Some(h * 3600.0 + m * 60.0 + s.parse::<f64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_is_read_from_the_log() {
        let log = "2026-12-06T01:22:54.637291Z  INFO vigil::source::consumer: partitions assigned pipeline=l partitions=[]\n\
                   2026-12-06T01:22:57.741844Z  INFO vigil::source::consumer: partitions assigned pipeline=l partitions=[\"t/0\", \"t/1\"]\n\
                   2026-12-06T01:22:57.775596Z  INFO vigil::detect::router: restored 767 users of t/0 in 24 ms pipeline=l records=768\n\
                   2026-12-06T01:22:59.241844Z  INFO vigil::detect::router: restored 655 users of t/1 in 1500 ms pipeline=l records=671\n";
        let r = Restored::read(log);
        assert_eq!((r.users, r.partitions, r.slowest_ms), (1_422, 2, 1_500));
        assert!((r.seconds() - 1.5).abs() < 1e-6, "{r:?}");
        assert_eq!(Restored::read("no time here"), Restored::default());
    }
}
