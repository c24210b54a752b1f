//! The fraud pipeline under load, in pieces that compose:
//!
//! - `produce` ([`produce`]): transactions with planted fraud, as Debezium
//!   envelopes straight into a Kafka topic, or as rows COPYed into
//!   PostgreSQL for Debezium to carry; writes a [`manifest`] of what went out.
//! - `baseline` ([`baseline`]): a plain consumer reading a topic, decoding
//!   nothing: this machine's ceiling.
//! - `verify` ([`verify`]): the alerts the manifest's workload is due,
//!   recomputed by the independent oracle, against the alert topic; with
//!   the input topic, end-to-end latency from broker timestamps.
//! - `run` ([`run`]): all of them around a vigil process it starts
//!   ([`vigil`]), watching its committed offsets ([`watch`]), with a report
//!   and a chart ([`plot`]); or around several processes of one group,
//!   disrupted at seeded moments ([`chaos`]).
//! - `restore` ([`restore`]): a changelog of many users of full state
//!   written directly, and how long vigil takes to restore it.

pub mod baseline;
mod chaos;
mod kafka;
mod manifest;
mod pace;
mod plot;
mod postgres;
pub mod produce;
mod progress;
pub mod restore;
pub mod run;
mod scan;
mod usage;
pub mod verify;
mod vigil;
mod watch;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use loadtest::workload::Workload;

/// Wall-clock time, µs since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A JSON report into `path`, or onto stdout after the summary.
pub fn emit(report: &Value, path: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    match path {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("loadtest: report {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Where Kafka is.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// What to generate: the same flags for `produce` and `run`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    pub users: i64,
    /// Skew of user activity (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    pub skew: f64,
    /// Share of transactions that are planted frauds.
    #[arg(long, default_value_t = 0.002)]
    pub fraud_rate: f64,
    /// Envelopes without the schema block.
    #[arg(long)]
    pub schemaless: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl WorkloadArgs {
    /// The workload, its event times a millisecond apart (or at the
    /// production rate). Preloading a known count puts them in the past,
    /// ending now; otherwise they start now.
    pub fn workload(&self, rate: Option<u64>, records: Option<u64>) -> Workload {
        let spacing_us = rate.map_or(1_000, |r| (1_000_000 / r.max(1)).max(1) as i64);
        let back = match (rate, records) {
            (None, Some(n)) => n as i64 * spacing_us,
            _ => 0,
        };
        Workload {
            users: self.users.max(1),
            skew: self.skew,
            fraud_rate: self.fraud_rate,
            seed: self.seed,
            start_us: now_us() - back,
            spacing_us,
        }
    }
}
