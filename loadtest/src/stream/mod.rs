//! `loadtest run`: the fraud pipeline under load, straight through Kafka.
//!
//! Generates transactions as Debezium publishes them ([`envelope`]), with
//! planted fraud, and computes with an independent oracle exactly which
//! alerts are due ([`workload`]). Then: the baseline (a plain consumer
//! reading the topic, decoding nothing: this machine's ceiling), vigil
//! itself on the same topic, and a verification of every alert: missing,
//! unexpected and duplicate alerts fail the run. The report gives vigil's
//! rate (from its committed offsets) beside the baseline's, its CPU
//! seconds and peak RSS, and end-to-end latency percentiles (broker
//! timestamps, LogAppendTime on both topics) when records are produced at
//! a steady `--rate` while vigil runs.

mod kafka;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use loadtest::envelope::Envelopes;
use loadtest::workload::{Due, Oracle, Workload};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Transactions to produce.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Produce at this many records/s while vigil runs (latency mode);
    /// without it the topic is preloaded first (throughput mode).
    #[arg(long)]
    rate: Option<u64>,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    users: i64,
    /// Skew of user activity (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// Share of transactions that are planted frauds.
    #[arg(long, default_value_t = 0.002)]
    fraud_rate: f64,
    /// Envelopes without the schema block.
    #[arg(long)]
    schemaless: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The vigil binary (default: beside this one).
    #[arg(long)]
    vigil: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the run's topics afterwards.
    #[arg(long)]
    keep_topics: bool,
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn vigil_binary(args: &RunArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.vigil {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("locating loadtest")?;
    let dir = me.parent().context("loadtest's folder")?;
    // Beside loadtest, or one folder up when run from target/*/deps.
    for candidate in [dir.join("vigil"), dir.join("../vigil")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("no vigil binary beside {}: build it (cargo build --release) or pass --vigil", me.display())
}

/// CPU seconds (user + system) and peak RSS (MiB) of a running process.
fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat (11 and 12 after ')').
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

struct Vigil {
    child: Child,
}

impl Vigil {
    fn start(binary: &PathBuf, pipeline: &PathBuf, log: &PathBuf) -> anyhow::Result<Vigil> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics = format!("127.0.0.1:{port}");
        let out = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .arg("run")
            .arg(pipeline)
            .args(["--metrics-addr", &metrics])
            .env("RUST_LOG", "warn,vigil::run=info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Vigil { child })
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `group` has committed every record of `topic`; returns the
/// (seconds since `since`, records committed) samples.
fn wait_committed(
    args: &RunArgs,
    group: &str,
    topic: &str,
    ends: &HashMap<i32, i64>,
    vigil: &mut Vigil,
    since: Instant,
) -> anyhow::Result<Vec<(f64, i64)>> {
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let want: i64 = ends.values().sum();
    let mut samples = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        if let Ok(Some(status)) = vigil.child.try_wait() {
            bail!("vigil exited early: {status}");
        }
        let done: i64 = kafka::committed(&args.brokers, group, topic, &partitions)?.values().sum();
        if samples.last().is_none_or(|&(_, d)| d != done) {
            last_progress = Instant::now();
        }
        samples.push((since.elapsed().as_secs_f64(), done));
        if done >= want {
            return Ok(samples);
        }
        if last_progress.elapsed() > Duration::from_secs(120) {
            bail!("vigil made no progress for 120 s ({done} of {want} committed)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let binary = vigil_binary(&args)?;
    let prefix = format!("loadtest-{}", now_us() / 1_000_000);
    let (input, alerts, dlq) =
        (format!("{prefix}.transactions"), format!("{prefix}.alerts"), format!("{prefix}.dead-letters"));
    kafka::create_topics(&args.brokers, &[(&input, args.partitions), (&alerts, args.partitions), (&dlq, 1)]).await?;
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir)?;
    let pipeline = dir.join("pipeline.yaml");
    let log = dir.join("vigil.log");
    std::fs::write(
        &pipeline,
        format!(
            "name: loadtest\n\
             source: {{brokers: '{}', topics: [{input}], group: {prefix}, start_from: earliest}}\n\
             format: {{type: debezium-json}}\n\
             rows: {{key: user_id, event_time: created_at, primary_key: [id]}}\n\
             detectors: [{{type: spend_anomaly}}, {{type: velocity_score}}]\n\
             sink: {{alerts: {alerts}, dead_letters: {dlq}}}\n",
            args.brokers
        ),
    )?;

    // Event times a millisecond apart (or at the production rate).
    let spacing_us = args.rate.map_or(1_000, |r| (1_000_000 / r.max(1)) as i64);
    let workload = Workload {
        users: args.users.max(1),
        skew: args.skew,
        fraud_rate: args.fraud_rate,
        seed: args.seed,
        start_us: now_us() - if args.rate.is_some() { 0 } else { args.records as i64 * spacing_us },
        spacing_us,
    };
    let mut oracle = Oracle::default();
    let due: BTreeSet<Due> = workload.transactions(args.records).flat_map(|t| oracle.observe(&t)).collect();
    eprintln!("loadtest: {} transactions, {} alerts due; topics {prefix}.*", args.records, due.len());
    let envelopes = Envelopes::new(args.schemaless);

    let (produce_seconds, ends, baseline, mut vigil, started, samples);
    if let Some(rate) = args.rate {
        started = Instant::now();
        vigil = Vigil::start(&binary, &pipeline, &log)?;
        std::thread::sleep(Duration::from_secs(3));
        produce_seconds = kafka::produce(
            &args.brokers,
            &input,
            args.partitions,
            &envelopes,
            workload.transactions(args.records),
            args.records,
            Some(rate),
        )?;
        ends = kafka::end_offsets(&args.brokers, &input)?;
        samples = wait_committed(&args, &prefix, &input, &ends, &mut vigil, started)?;
        baseline = kafka::scan(&args.brokers, &input, &ends, false)?;
    } else {
        produce_seconds = kafka::produce(
            &args.brokers,
            &input,
            args.partitions,
            &envelopes,
            workload.transactions(args.records),
            args.records,
            None,
        )?;
        ends = kafka::end_offsets(&args.brokers, &input)?;
        eprintln!("loadtest: baseline: a plain consumer reads the topic");
        baseline = kafka::scan(&args.brokers, &input, &ends, false)?;
        eprintln!("loadtest: vigil reads the topic");
        started = Instant::now();
        vigil = Vigil::start(&binary, &pipeline, &log)?;
        samples = wait_committed(&args, &prefix, &input, &ends, &mut vigil, started)?;
    }
    let (cpu_seconds, peak_rss_mib) = process_usage(vigil.child.id());
    vigil.stop();

    // Sustained rate: between the first and the last commit that moved
    // (commits come every second); a run too short for two falls back to
    // the whole time from start to the last commit.
    let total: i64 = ends.values().sum();
    let first = samples.iter().find(|s| s.1 > 0).copied().unwrap_or((0.0, 0));
    let last = samples.last().copied().unwrap_or((0.0, 0));
    let sustained = if last.1 > first.1 && last.0 - first.0 >= 1.0 {
        (last.1 - first.1) as f64 / (last.0 - first.0)
    } else {
        total as f64 / last.0.max(1e-3)
    };

    // Verify every alert, and time them.
    let alert_ends = kafka::end_offsets(&args.brokers, &alerts)?;
    let scanned = kafka::scan(&args.brokers, &alerts, &alert_ends, true)?;
    let mut got: BTreeMap<Due, u32> = BTreeMap::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).context("histogram")?;
    for (_, _, ts, value) in &scanned.values {
        let alert: Value = serde_json::from_slice(value).context("an alert is JSON")?;
        let id = alert["row"]["primary_key"]["id"].as_i64().unwrap_or(-1);
        let key = match alert["detector"].as_str() {
            Some("spend-anomaly") => Due::Spend(id),
            _ => Due::Velocity(id),
        };
        *got.entry(key).or_default() += 1;
        let (p, o) =
            (alert["source"]["partition"].as_i64().unwrap_or(-1), alert["source"]["offset"].as_i64().unwrap_or(-1));
        if let Some(input_ts) = baseline.timestamps.get(&(p as i32)).and_then(|v| v.get(o as usize)) {
            latency.saturating_record((ts - input_ts).max(0) as u64);
        }
    }
    let received: BTreeSet<Due> = got.keys().copied().collect();
    let missing = due.difference(&received).count();
    let unexpected = received.difference(&due).count();
    let duplicates: u32 = got.values().map(|n| n - 1).sum();
    let vigil_seconds = last.0;

    let report = json!({
        "records": total,
        "partitions": args.partitions,
        "users": args.users,
        "schemaless": args.schemaless,
        "mode": if args.rate.is_some() { "steady rate" } else { "preloaded" },
        "target_rate": args.rate,
        "produce_per_second": args.records as f64 / produce_seconds,
        "baseline": { "records_per_second": baseline.records as f64 / baseline.seconds, "seconds": baseline.seconds },
        "vigil": {
            "records_per_second_sustained": sustained,
            "seconds_to_commit_all": vigil_seconds,
            "cpu_seconds": cpu_seconds,
            "records_per_cpu_second": total as f64 / cpu_seconds.max(1e-3),
            "peak_rss_mib": peak_rss_mib,
        },
        "ratio_to_baseline": sustained / (baseline.records as f64 / baseline.seconds),
        "latency_ms": {
            "count": latency.len(),
            "p50": latency.value_at_quantile(0.5),
            "p90": latency.value_at_quantile(0.9),
            "p99": latency.value_at_quantile(0.99),
            "p99_9": latency.value_at_quantile(0.999),
            "max": latency.max(),
        },
        "committed_over_time": samples.iter().step_by(10).map(|(t, n)| json!([t, n])).collect::<Vec<_>>(),
        "alerts": { "due": due.len(), "received": scanned.values.len(), "missing": missing, "unexpected": unexpected, "duplicates": duplicates },
    });
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "records {total} over {} partitions ({})\n\
         baseline consumer  {:>10.0} records/s\n\
         vigil              {:>10.0} records/s sustained ({:.0}% of baseline), {:.1} CPU s, {:.0} records per CPU s, peak RSS {:.0} MiB\n\
         latency (ms)       p50 {}  p90 {}  p99 {}  p99.9 {}  ({} alerts)\n\
         alerts             {} due, {} received: {missing} missing, {unexpected} unexpected, {duplicates} duplicates",
        args.partitions,
        report["mode"].as_str().unwrap_or_default(),
        baseline.records as f64 / baseline.seconds,
        sustained,
        100.0 * report["ratio_to_baseline"].as_f64().unwrap_or(0.0),
        cpu_seconds,
        total as f64 / cpu_seconds.max(1e-3),
        peak_rss_mib,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.9),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.len(),
        due.len(),
        scanned.values.len(),
    );
    if !args.keep_topics {
        kafka::delete_topics(&args.brokers, &[&input, &alerts, &dlq]).await;
    }
    if missing + unexpected > 0 || duplicates > 0 {
        bail!("verification failed: {missing} missing, {unexpected} unexpected, {duplicates} duplicate alerts (vigil's log: {})", log.display());
    }
    Ok(())
}
