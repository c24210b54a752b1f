//! `loadtest baseline`: a plain librdkafka consumer reads a topic from its
//! first record to its current end, decoding nothing: the ceiling vigil is
//! measured against, in records/s and in CPU seconds of this process.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use super::scan::{self, Scan};
use super::usage;
use super::{emit, KafkaArgs};

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// Write the JSON report here (default: onto stdout).
    #[arg(long)]
    report: Option<PathBuf>,
}

pub struct Baseline {
    pub scan: Scan,
    /// CPU seconds this process spent reading (all its threads).
    pub cpu_seconds: f64,
}

impl Baseline {
    pub fn json(&self) -> Value {
        json!({
            "records": self.scan.records,
            "records_per_second": self.scan.rate(),
            "seconds": self.scan.seconds,
            "cpu_seconds": self.cpu_seconds,
        })
    }

    pub fn summary(&self) -> String {
        self.summary_as("baseline consumer")
    }

    /// The summary line under `label` (padded to the report's column).
    pub fn summary_as(&self, label: &str) -> String {
        format!(
            "{label:<18} {:>10.0} records/s ({} records in {:.2} s, {:.2} CPU s)",
            self.scan.rate(),
            self.scan.records,
            self.scan.seconds,
            self.cpu_seconds
        )
    }
}

/// Reads `topic` up to its end offsets as they are now.
pub fn measure(brokers: &str, topic: &str) -> anyhow::Result<Baseline> {
    let before = usage::of("self").cpu_seconds;
    let scan = scan::to_end(brokers, topic, false, "baseline")?;
    let cpu_seconds = usage::of("self").cpu_seconds - before;
    Ok(Baseline { scan, cpu_seconds })
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let baseline = measure(&args.kafka.brokers, &args.topic)?;
    println!("{}", baseline.summary());
    emit(&json!({"topic": args.topic, "baseline": baseline.json()}), args.report.as_deref())
}
