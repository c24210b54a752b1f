//! `loadtest verify`: recomputes from a manifest, with the independent
//! oracle, exactly which alerts are due, reads the alert topic, and reports
//! missing, unexpected and duplicate alerts (any of them fails; with
//! `--allow-repeats`, copies of an alert with its own id pass, as
//! at-least-once delivery after a failure allows). With the
//! input topic, the end-to-end latency of each alert: its input record's
//! broker timestamp to its own (LogAppendTime on both topics makes that
//! one clock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};

use loadtest::workload::Due;

use super::manifest::Manifest;
use super::plot::{self, Series};
use super::scan::{self, Read, Timestamps};
use super::{emit, KafkaArgs};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The alert topic (pipelines/fraud-detection.yaml: fraud.alerts).
    #[arg(long)]
    alerts: String,
    /// The manifest `produce` wrote.
    #[arg(long, default_value = "loadtest-manifest.json")]
    manifest: PathBuf,
    /// The input topic: with it, end-to-end latency from broker timestamps.
    #[arg(long)]
    input: Option<String>,
    /// Only the alerts of this pipeline (for an alert topic pipelines share).
    #[arg(long)]
    pipeline: Option<String>,
    /// Draw latency and the input rate over time into this PNG.
    #[arg(long, requires = "input")]
    plot: Option<PathBuf>,
    /// Write the JSON report here (default: onto stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Copies of an alert carrying the same id pass (at-least-once delivery
    /// after a crash or rebalance); a second id for the same due alert
    /// still fails.
    #[arg(long)]
    allow_repeats: bool,
}

/// The fields of an alert that verification reads.
#[derive(Deserialize)]
struct AlertJson {
    #[serde(default)]
    id: String,
    #[serde(default)]
    pipeline: String,
    #[serde(default)]
    detector: String,
    #[serde(default)]
    row: Value,
    #[serde(default)]
    source: Source,
}

#[derive(Deserialize, Default)]
struct Source {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    partition: i32,
    #[serde(default)]
    offset: i64,
}

/// What the alerts say against what is due.
pub struct Verification {
    pub due: usize,
    /// Alerts about this run's transactions, copies included.
    pub received: usize,
    pub missing: usize,
    pub unexpected: usize,
    /// Copies beyond the first of an alert.
    pub duplicates: usize,
    /// Of the duplicates, those with an id of their own: the same finding
    /// raised twice, which no delivery guarantee allows.
    pub with_another_id: usize,
    /// Alerts about other rows or topics (an alert topic others share).
    pub ignored: usize,
    /// Latency, ms, of the alerts whose input record was read.
    pub latency: Histogram<u64>,
    /// (alert's broker time, latency), ms, of the same alerts.
    pub points: Vec<(i64, u64)>,
}

/// Checks `alerts` (an alert topic, read whole) against the manifest;
/// `input`: the input topic's timestamps, for latency.
pub fn check(
    manifest: &Manifest,
    alerts: &[Read],
    input: Option<&Timestamps>,
    pipeline: Option<&str>,
) -> anyhow::Result<Verification> {
    let due = manifest.due();
    // Per finding: its copies, and the ids they carry.
    let mut got: BTreeMap<Option<Due>, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).context("histogram")?;
    let (mut points, mut ignored) = (Vec::new(), 0);
    for read in alerts {
        let alert: AlertJson = serde_json::from_slice(&read.value)
            .with_context(|| format!("the alert at partition {} offset {} is not JSON", read.partition, read.offset))?;
        let id = alert.row["primary_key"]["id"].as_i64().unwrap_or(-1);
        if !manifest.owns(&alert.source.topic, id) || pipeline.is_some_and(|p| p != alert.pipeline) {
            ignored += 1;
            continue;
        }
        let key = match alert.detector.as_str() {
            "spend-anomaly" => Some(Due::Spend(id)),
            "velocity-score" => Some(Due::Velocity(id)),
            _ => None,
        };
        let (copies, ids) = got.entry(key).or_default();
        *copies += 1;
        ids.insert(alert.id);
        if let Some(input_ms) = input.and_then(|t| t.at(alert.source.partition, alert.source.offset)) {
            let ms = (read.ms - input_ms).max(0) as u64;
            latency.saturating_record(ms);
            points.push((read.ms, ms));
        }
    }
    let received_keys: BTreeSet<Due> = got.keys().flatten().copied().collect();
    Ok(Verification {
        due: due.len(),
        received: got.values().map(|(n, _)| n).sum(),
        missing: due.difference(&received_keys).count(),
        unexpected: received_keys.difference(&due).count() + got.get(&None).map_or(0, |(n, _)| *n),
        duplicates: got.iter().filter(|(k, _)| k.is_some()).map(|(_, (n, _))| n - 1).sum(),
        with_another_id: got.iter().filter(|(k, _)| k.is_some()).map(|(_, (_, ids))| ids.len() - 1).sum(),
        ignored,
        latency,
        points,
    })
}

impl Verification {
    pub fn alerts_json(&self) -> Value {
        json!({
            "due": self.due,
            "received": self.received,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "duplicates": self.duplicates,
            "duplicates_with_another_id": self.with_another_id,
            "ignored": self.ignored,
        })
    }

    pub fn latency_json(&self) -> Value {
        let l = &self.latency;
        json!({
            "count": l.len(),
            "p50": l.value_at_quantile(0.5),
            "p90": l.value_at_quantile(0.9),
            "p99": l.value_at_quantile(0.99),
            "p99_9": l.value_at_quantile(0.999),
            "max": l.max(),
        })
    }

    pub fn summary(&self) -> String {
        let l = &self.latency;
        format!(
            "latency (ms)       p50 {}  p90 {}  p99 {}  p99.9 {}  ({} alerts)\n\
             alerts             {} due, {} received: {} missing, {} unexpected, {} duplicates ({} with another id; {} of other rows ignored)",
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.9),
            l.value_at_quantile(0.99),
            l.value_at_quantile(0.999),
            l.len(),
            self.due,
            self.received,
            self.missing,
            self.unexpected,
            self.duplicates,
            self.with_another_id,
            self.ignored,
        )
    }

    /// Latency over time for a chart: (seconds since `t0_ms`, ms).
    pub fn latency_series(&self, t0_ms: i64) -> Vec<(f64, f64)> {
        self.points.iter().map(|&(at, ms)| ((at - t0_ms) as f64 / 1e3, ms as f64)).collect()
    }

    /// Fails on any missing, unexpected or duplicate alert; with
    /// `repeats_allowed`, only on duplicates that carry another id.
    pub fn passed(&self, repeats_allowed: bool) -> anyhow::Result<()> {
        let duplicates = if repeats_allowed { self.with_another_id } else { self.duplicates };
        if self.missing + self.unexpected + duplicates > 0 {
            bail!(
                "verification failed: {} missing, {} unexpected, {} duplicate alerts ({} with another id)",
                self.missing,
                self.unexpected,
                self.duplicates,
                self.with_another_id
            );
        }
        Ok(())
    }
}

/// Every alert on `topic`, up to its end offsets as they are now.
pub fn read_alerts(brokers: &str, topic: &str) -> anyhow::Result<Vec<Read>> {
    Ok(scan::to_end(brokers, topic, true, "alerts")?.values)
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let manifest = Manifest::read(&args.manifest)?;
    let brokers = &args.kafka.brokers;
    let alerts = read_alerts(brokers, &args.alerts)?;
    let input = args.input.as_ref().map(|topic| scan::to_end(brokers, topic, false, "input")).transpose()?;
    let timestamps = input.as_ref().map(|s| &s.timestamps);
    let v = check(&manifest, &alerts, timestamps, args.pipeline.as_deref())?;
    println!("{}", v.summary());
    if let (Some(path), Some(timestamps)) = (&args.plot, timestamps) {
        // Time runs from the first input record that raised an alert.
        let t0 = v.points.iter().map(|&(at, ms)| at - ms as i64).min().unwrap_or(0);
        let t1 = v.points.iter().map(|&(at, _)| at).max().unwrap_or(0);
        let input_rate = plot::per_second(timestamps.all(), t0, t1);
        let series = [Series { label: "input topic, records/s (broker time)", rates: input_rate }];
        plot::draw(path, &v.latency_series(t0), &series)?;
        eprintln!("loadtest: chart {}", path.display());
    }
    let report = json!({
        "manifest": args.manifest,
        "alerts": v.alerts_json(),
        "latency_ms": v.latency_json(),
    });
    emit(&report, args.report.as_deref())?;
    v.passed(args.allow_repeats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::manifest::Target;
    use loadtest::workload::Workload;

    fn alert(detector: &str, id: i64, topic: &str, offset: i64, ms: i64) -> Read {
        let value = json!({
            "id": format!("{detector}-{id}"),
            "pipeline": "p",
            "detector": detector,
            "row": {"primary_key": {"id": id}},
            "source": {"topic": topic, "partition": 0, "offset": offset},
        });
        Read { partition: 0, offset, ms, value: value.to_string().into_bytes() }
    }

    fn alerts_for(due: &BTreeSet<Due>) -> Vec<Read> {
        due.iter()
            .enumerate()
            .map(|(i, d)| match *d {
                Due::Spend(id) => alert("spend-anomaly", id, "in", i as i64, 1_000),
                Due::Velocity(id) => alert("velocity-score", id, "in", i as i64, 1_000),
            })
            .collect()
    }

    fn manifest() -> Manifest {
        let w = Workload { users: 20, skew: 0.0, fraud_rate: 0.05, seed: 4, start_us: 0, spacing_us: 1_000 };
        Manifest { count: 2_000, id_offset: 500, ..Manifest::new(Target::Postgres, "in", &w, false) }
    }

    #[test]
    fn every_due_alert_once_passes() {
        let m = manifest();
        let mut alerts = alerts_for(&m.due());
        // Other writers' rows on the same topic, and another topic.
        alerts.push(alert("spend-anomaly", 3, "in", 9_000, 1_000));
        alerts.push(alert("spend-anomaly", 600, "elsewhere", 9_001, 1_000));
        let v = check(&m, &alerts, None, None).unwrap();
        assert!(v.due > 10);
        assert_eq!((v.received, v.missing, v.unexpected, v.duplicates, v.ignored), (v.due, 0, 0, 0, 2));
        v.passed(false).unwrap();
    }

    #[test]
    fn missing_unexpected_and_duplicate_alerts_fail() {
        let m = manifest();
        let mut alerts = alerts_for(&m.due());
        let dropped = alerts.pop().unwrap();
        alerts.push(alerts[0].clone());
        let not_due = (501..=2_500).find(|&id| !m.due().contains(&Due::Velocity(id))).unwrap();
        alerts.push(alert("velocity-score", not_due, "in", 9_000, 1_000));
        alerts.push(alert("some-other-detector", 501, "in", 9_001, 1_000));
        let v = check(&m, &alerts, None, None).unwrap();
        assert_eq!((v.missing, v.unexpected, v.duplicates), (1, 2, 1), "dropped {dropped:?}");
        assert!(v.passed(false).is_err());
        // Only the named pipeline's alerts count.
        let v = check(&m, &alerts, None, Some("another")).unwrap();
        assert_eq!((v.received, v.missing, v.ignored), (0, v.due, alerts.len()));
    }

    #[test]
    fn repeats_with_the_same_id_may_pass_but_another_id_never() {
        let m = manifest();
        let mut alerts = alerts_for(&m.due());
        alerts.push(alerts[0].clone());
        let v = check(&m, &alerts, None, None).unwrap();
        assert_eq!((v.duplicates, v.with_another_id), (1, 0));
        assert!(v.passed(false).is_err(), "a repeat fails a run that allows none");
        v.passed(true).unwrap();
        let mut other: Value = serde_json::from_slice(&alerts[1].value).unwrap();
        other["id"] = "raised again".into();
        alerts.push(Read { value: other.to_string().into_bytes(), ..alerts[1].clone() });
        let v = check(&m, &alerts, None, None).unwrap();
        assert_eq!((v.duplicates, v.with_another_id), (2, 1));
        assert!(v.passed(true).is_err(), "the same finding under a second id");
    }

    #[test]
    fn latency_is_input_to_alert_broker_time() {
        let m = manifest();
        let alerts = alerts_for(&m.due());
        let marks = [(0, (0, alerts.len() as i64))].into_iter().collect();
        let mut input = Timestamps::new(&marks);
        for i in 0..alerts.len() as i64 {
            input.set(0, i, 1_000 - i.min(900));
        }
        let v = check(&m, &alerts, Some(&input), None).unwrap();
        assert_eq!(v.latency.len() as usize, alerts.len());
        assert_eq!(v.latency.min(), 0);
        assert_eq!(v.points[1], (1_000, 1));
        assert_eq!(v.latency_series(0)[1], (1.0, 1.0));
    }

    #[test]
    fn an_alert_that_is_no_json_is_an_error() {
        let bad = Read { partition: 2, offset: 7, ms: 0, value: b"{".to_vec() };
        let e = check(&manifest(), &[bad], None, None).err().unwrap();
        assert!(format!("{e:#}").contains("partition 2 offset 7"), "{e:#}");
    }
}
