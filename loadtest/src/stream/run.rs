//! `loadtest run`: the pieces in one go, on fresh topics of its own.
//! Produces with planted fraud, measures the baseline consumer, runs vigil
//! on the same topic and watches its commits, then verifies every alert:
//! missing, unexpected and duplicate alerts fail the run. The report gives
//! vigil's rate (from its committed offsets) beside the baseline's (the
//! faster of its reads before and after vigil, when preloaded), its CPU
//! seconds and peak RSS, its lag and throughput over time, and end-to-end
//! latency percentiles (meaningful when records are produced at a steady
//! `--rate` while vigil runs; without it the topic is preloaded first).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use super::baseline::{self, Baseline};
use super::chaos::{self, ChaosArgs, Fleet};
use super::kafka::{self, EnvelopeSink};
use super::manifest::{Manifest, Target};
use super::pace::{Pace, Produced};
use super::plot::{self, Series};
use super::produce;
use super::progress::Progress;
use super::verify::{self, Verification};
use super::vigil;
use super::watch::{self, Sample, Watch};
use super::{emit, now_us, KafkaArgs, WorkloadArgs};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
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
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The vigil binary (default: beside this one).
    #[arg(long)]
    vigil: Option<PathBuf>,
    /// Write the JSON report here (default: onto stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw latency and throughput over time into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Keep the run's topics afterwards.
    #[arg(long)]
    keep_topics: bool,
    /// Run vigil with its detector state in memory only (`state: {enabled:
    /// false}`): no changelog written, the baseline of what durable state
    /// costs.
    #[arg(long)]
    stateless: bool,
    /// Run vigil with `guarantee: exactly_once`: alerts are verified as a
    /// `read_committed` reader sees them, and no repeat passes, even under
    /// chaos.
    #[arg(long)]
    exactly_once: bool,
    #[command(flatten)]
    chaos: ChaosArgs,
}

/// The run's names: topics, vigil's group, its files.
pub(super) struct Names {
    pub group: String,
    pub input: String,
    pub alerts: String,
    pub dead_letters: String,
    pub dir: PathBuf,
}

impl Names {
    pub fn new() -> Self {
        // Seconds and this process: runs started in the same second (tests
        // side by side) get topics of their own.
        let group = format!("loadtest-{}-{}", now_us() / 1_000_000, std::process::id());
        Names {
            input: format!("{group}.transactions"),
            alerts: format!("{group}.alerts"),
            dead_letters: format!("{group}.dead-letters"),
            dir: std::env::temp_dir().join(&group),
            group,
        }
    }

    /// The changelog vigil keeps the input's state in.
    pub fn changelog(&self) -> String {
        format!("loadtest.{}.changelog", self.input)
    }

    /// The pipeline file; under chaos, with a short consumer session so a
    /// killed or frozen process's partitions move within seconds.
    pub fn pipeline(&self, brokers: &str, stateless: bool, exactly_once: bool, chaos: bool) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join("pipeline.yaml");
        let session = match chaos {
            true => format!(", properties: {{session.timeout.ms: '{}'}}", chaos::SESSION.as_millis()),
            false => String::new(),
        };
        let text = format!(
            "name: loadtest\n\
             source: {{brokers: '{brokers}', topics: [{}], group: {}, start_from: earliest{session}}}\n\
             format: {{type: debezium-json, decimal_scales: {{amount: 2}}}}\n\
             rows: {{key: user_id, event_time: created_at, primary_key: [id]}}\n\
             detectors: [{{type: spend_anomaly}}, {{type: velocity_score}}]\n\
             sink: {{alerts: {}, dead_letters: {}}}\n\
             state: {{enabled: {}}}\n\
             guarantee: {}\n",
            self.input,
            self.group,
            self.alerts,
            self.dead_letters,
            !stateless,
            if exactly_once { "exactly_once" } else { "at_least_once" }
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// What the run measured before verification.
struct Measured {
    produced: Produced,
    baseline: Baseline,
    /// Preloaded runs read the topic again once vigil is done, so neither
    /// side gains from going second: when the page cache is short, the
    /// first read of a fresh topic goes partly to disk.
    baseline_after: Option<Baseline>,
    samples: Vec<Sample>,
    /// Wall clock at vigil's start, ms: time zero of the samples.
    vigil_started_ms: i64,
}

/// How to start vigil's processes, and the watch on its group's commits.
struct Watched<'a> {
    start: &'a dyn Fn() -> anyhow::Result<Fleet>,
    watch: &'a Watch,
}

impl Watched<'_> {
    fn start(&self) -> anyhow::Result<(Fleet, Instant, i64)> {
        Ok(((self.start)()?, Instant::now(), now_us() / 1_000))
    }
}

/// Steady rate: vigil runs first, records come at the rate while the
/// watch samples; the baseline reads the finished topic afterwards.
fn steady(
    args: &RunArgs,
    rate: u64,
    sink: &EnvelopeSink,
    manifest: &Manifest,
    w: Watched<'_>,
) -> anyhow::Result<(Measured, Fleet)> {
    let (mut fleet, since, vigil_started_ms) = w.start()?;
    std::thread::sleep(Duration::from_secs(3));
    let (produced, samples) = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let pace = Pace::new(Some(rate), Some(args.records), None);
            produce::to_kafka(sink, &manifest.workload(), &pace, &mut Progress::hidden())
        });
        let samples = w.watch.until_committed(&mut fleet, since, Some(args.records), || producer.is_finished());
        let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
        anyhow::Ok((produced?, samples?))
    })?;
    let baseline = baseline::measure(&args.kafka.brokers, &manifest.topic)?;
    Ok((Measured { produced, baseline, baseline_after: None, samples, vigil_started_ms }, fleet))
}

/// Preloaded: the whole topic first and on disk, the baseline on it, then
/// vigil (and the baseline again once vigil is stopped, in `run`).
fn preloaded(
    args: &RunArgs,
    sink: &EnvelopeSink,
    manifest: &Manifest,
    w: Watched<'_>,
) -> anyhow::Result<(Measured, Fleet)> {
    let pace = Pace::new(None, Some(args.records), None);
    let mut progress = Progress::new("produce", Some(args.records));
    let produced = produce::to_kafka(sink, &manifest.workload(), &pace, &mut progress)?;
    settle_writes();
    let baseline = baseline::measure(&args.kafka.brokers, &manifest.topic)?;
    let (mut fleet, since, vigil_started_ms) = w.start()?;
    let samples = w.watch.until_committed(&mut fleet, since, Some(produced.count), || true)?;
    Ok((Measured { produced, baseline, baseline_after: None, samples, vigil_started_ms }, fleet))
}

/// Waits until what was produced is on disk, when the broker runs on this
/// machine: after a large produce the kernel would otherwise write
/// gigabytes back, in bursts, during the measurements. Quick when the
/// broker is elsewhere.
fn settle_writes() {
    let started = Instant::now();
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {
            eprintln!("loadtest: produced records on disk (sync: {:.1} s)", started.elapsed().as_secs_f64())
        }
        other => eprintln!("loadtest: sync failed ({other:?}); measuring without it"),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.chaos.check()?;
    let binary = vigil::binary(args.vigil.as_deref())?;
    let brokers = args.kafka.brokers.clone();
    let names = Names::new();
    let (input, alerts, dead_letters) = (names.input.as_str(), names.alerts.as_str(), names.dead_letters.as_str());
    kafka::create_topics(&brokers, &[(input, args.partitions), (alerts, args.partitions), (dead_letters, 1)]).await?;
    let pipeline = names.pipeline(&brokers, args.stateless, args.exactly_once, args.chaos.enabled())?;

    let workload = args.workload.workload(args.rate, Some(args.records));
    let mut manifest = Manifest::new(Target::Kafka, input, &workload, args.workload.schemaless);
    manifest.count = args.records;
    eprintln!("loadtest: {} transactions, {} alerts due; topics {}.*", args.records, manifest.due().len(), names.group);
    let sink = EnvelopeSink::new(&brokers, input, args.partitions, args.workload.schemaless)?;
    let watch = Watch::new(&brokers, &names.group, input)?;
    let start = || Fleet::start(&binary, &pipeline, &names.dir, &args.chaos, args.workload.seed, args.records);
    let w = Watched { start: &start, watch: &watch };
    let (mut measured, mut fleet) = match args.rate {
        Some(rate) => steady(&args, rate, &sink, &manifest, w)?,
        None => preloaded(&args, &sink, &manifest, w)?,
    };
    let usage = fleet.usage();
    let state = StateWritten {
        records: fleet.metric("vigil_state_changelog_records_total"),
        bytes: fleet.metric("vigil_state_changelog_bytes_total"),
        users: fleet.metric("vigil_tracked_users"),
    };
    fleet.stop();
    if args.rate.is_none() {
        measured.baseline_after = Some(baseline::measure(&args.kafka.brokers, input)?);
    }
    manifest.count = measured.produced.count;
    let manifest_path = names.dir.join("manifest.json");
    manifest.write(&manifest_path)?;

    let alerts = verify::read_alerts(&brokers, alerts)?;
    let v = verify::check(&manifest, &alerts, Some(&measured.baseline.scan.timestamps), None)?;
    let report = Report {
        args: &args,
        m: &measured,
        v: &v,
        fleet: &fleet,
        state,
        cpu_seconds: usage.cpu_seconds,
        rss: usage.peak_rss_mib,
    };
    if let Some(path) = &args.plot {
        report.plot(path)?;
    }
    println!("{}", report.summary());
    emit(&report.json(&manifest_path), args.report.as_deref())?;
    if !args.keep_topics {
        kafka::delete_topics(&brokers, &[input, &names.alerts, dead_letters, &names.changelog()]).await;
    }
    // At-least-once may repeat an alert (same id) after a disruption;
    // exactly-once never.
    let repeats_allowed = fleet.disrupted() && !args.exactly_once;
    let passed = v.passed(repeats_allowed).and_then(|()| fleet.check_disrupted());
    if let Err(e) = passed {
        bail!("{e} (vigil's log: {})", fleet.logs());
    }
    Ok(())
}

/// What the processes running at the end wrote to their changelogs (their
/// metrics; a process gone before the end took its counts with it).
struct StateWritten {
    records: f64,
    bytes: f64,
    /// Users held at the end.
    users: f64,
}

/// The figures of a run, as JSON, a summary and a chart.
struct Report<'a> {
    args: &'a RunArgs,
    m: &'a Measured,
    v: &'a Verification,
    fleet: &'a Fleet,
    state: StateWritten,
    cpu_seconds: f64,
    rss: f64,
}

impl Report<'_> {
    fn records(&self) -> u64 {
        self.m.produced.count
    }

    fn sustained(&self) -> f64 {
        watch::sustained(&self.m.samples)
    }

    /// The faster of the baseline's reads: the ceiling vigil is held to.
    fn ceiling(&self) -> f64 {
        let after = self.m.baseline_after.as_ref().map_or(0.0, |b| b.scan.rate());
        self.m.baseline.scan.rate().max(after)
    }

    fn mode(&self) -> &'static str {
        if self.args.rate.is_some() {
            "steady rate"
        } else {
            "preloaded"
        }
    }

    fn json(&self, manifest: &Path) -> serde_json::Value {
        let (m, samples) = (self.m, &self.m.samples);
        let committed: Vec<(f64, i64)> = samples.iter().map(|s| (s.seconds, s.committed)).collect();
        json!({
            "records": self.records(),
            "partitions": self.args.partitions,
            "users": self.args.workload.users,
            "schemaless": self.args.workload.schemaless,
            "mode": self.mode(),
            "target_rate": self.args.rate,
            "produce_per_second": m.produced.rate(),
            "baseline": m.baseline.json(),
            "baseline_after": m.baseline_after.as_ref().map(Baseline::json),
            "baseline_ceiling_per_second": self.ceiling(),
            "vigil": {
                "guarantee": if self.args.exactly_once { "exactly_once" } else { "at_least_once" },
                "instances": self.args.chaos.instances,
                "processes": self.fleet.json(),
                "records_per_second_sustained": self.sustained(),
                "seconds_to_commit_all": samples.last().map_or(0.0, |s| s.seconds),
                "cpu_seconds": self.cpu_seconds,
                "records_per_cpu_second": self.records() as f64 / self.cpu_seconds.max(1e-3),
                "peak_rss_mib": self.rss,
                "state": {
                    "changelog_records": self.state.records,
                    "changelog_bytes": self.state.bytes,
                    "users_held": self.state.users,
                    "changelog_bytes_per_user_record": self.state.bytes / self.state.records.max(1.0),
                    "changelog_bytes_per_input_record": self.state.bytes / self.records().max(1) as f64,
                },
            },
            "ratio_to_baseline": self.sustained() / self.ceiling(),
            "latency_ms": self.v.latency_json(),
            "committed_over_time": watch::thin(&committed),
            "lag_over_time": watch::thin(&watch::lag(samples)),
            "throughput_over_time": watch::rates_json(&watch::throughput(samples)),
            "produced_over_time": watch::rates_json(&watch::production(samples)),
            "alerts": self.v.alerts_json(),
            "manifest": manifest,
            "plot": self.args.plot,
        })
    }

    fn summary(&self) -> String {
        let sustained = self.sustained();
        let (mut baselines, mut of) = (self.m.baseline.summary(), "baseline");
        if let Some(after) = &self.m.baseline_after {
            baselines = format!("{baselines}\n{}", after.summary_as("  read again after"));
            of = "the faster baseline read";
        }
        let chaos = self.fleet.summary().map_or_else(String::new, |c| format!("\n{c}"));
        let st = &self.state;
        let state = if st.records > 0.0 {
            format!(
                "\nchangelog          {:.0} records, {:.0} bytes ({:.0} B a user record, {:.1} B an input record), {:.0} users held",
                st.records,
                st.bytes,
                st.bytes / st.records,
                st.bytes / self.records().max(1) as f64,
                st.users
            )
        } else {
            String::new()
        };
        format!(
            "records {} over {} partitions ({})\n{}\n\
             vigil              {:>10.0} records/s sustained ({:.0}% of {of}), {:.1} CPU s, {:.0} records per CPU s, peak RSS {:.0} MiB{state}\n{}{chaos}",
            self.records(),
            self.args.partitions,
            self.mode(),
            baselines,
            sustained,
            100.0 * sustained / self.ceiling(),
            self.cpu_seconds,
            self.records() as f64 / self.cpu_seconds.max(1e-3),
            self.rss,
            self.v.summary(),
        )
    }

    /// Latency and throughput over vigil's time (zero: its start).
    fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let mut series =
            vec![Series { label: "vigil, committed records/s", rates: watch::throughput(&self.m.samples) }];
        let produced = watch::production(&self.m.samples);
        if !produced.is_empty() {
            series.push(Series { label: "produced records/s", rates: produced });
        }
        plot::draw(path, &self.v.latency_series(self.m.vigil_started_ms), &series)?;
        eprintln!("loadtest: chart {}", path.display());
        Ok(())
    }
}
