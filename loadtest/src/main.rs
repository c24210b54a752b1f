//! `loadtest`: load generators for vigil's pipelines (the binary; the
//! reusable encoder and oracle are the library, `src/lib.rs`).
//!
//! - `transactions`: random transactions into PostgreSQL, with planted
//!   fraud bursts (the fraud pipeline's input, through Debezium).
//! - `sensors`: temperature sensors writing readings into PostgreSQL, live
//!   or a span of history at once (the temperature batch job's input).
//! - `produce`, `baseline`, `verify`: the fraud pipeline's load test in
//!   pieces: transactions with planted fraud into Kafka or PostgreSQL, the
//!   plain consumer's ceiling, every alert checked against an oracle.
//! - `run`: those pieces in one go around a vigil process, with a report
//!   and a chart (`stream/`); `restore`: how long a large state takes to
//!   restore.

mod db;
mod sensors;
mod stream;
mod transactions;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Durations in the pipeline files' syntax (`500ms`, `60s`, `5m`, `24h`,
/// `2d`): one parser for the engine and its load generators.
pub fn duration(text: &str) -> Result<Duration, String> {
    vigil::config::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Insert batches of random transactions into PostgreSQL.
    Transactions(transactions::TransactionsArgs),
    /// Simulate temperature sensors writing readings into PostgreSQL.
    Sensors(sensors::SensorsArgs),
    /// Produce transactions with planted fraud: Debezium envelopes straight
    /// into Kafka, or rows into PostgreSQL for Debezium; write a manifest.
    Produce(stream::produce::ProduceArgs),
    /// Read a topic with a plain consumer that decodes nothing: the ceiling.
    Baseline(stream::baseline::BaselineArgs),
    /// Check the alert topic against the alerts a manifest's workload is
    /// due: missing, unexpected or duplicate alerts fail; latency with --input.
    Verify(stream::verify::VerifyArgs),
    /// The fraud pipeline under load, straight through Kafka: produce
    /// Debezium envelopes with planted fraud, measure the baseline consumer,
    /// run vigil, verify every alert against an independent oracle, report.
    Run(stream::run::RunArgs),
    /// Write a changelog of many users of full state straight into Kafka,
    /// start vigil on it, and report how long the restore takes.
    Restore(stream::restore::RestoreArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Transactions(args) => transactions::run(args).await,
        Command::Sensors(args) => sensors::run(args).await,
        Command::Produce(args) => stream::produce::run(args).await,
        Command::Baseline(args) => stream::baseline::run(args),
        Command::Verify(args) => stream::verify::run(args),
        Command::Run(args) => stream::run::run(args).await,
        Command::Restore(args) => stream::restore::run(args).await,
    }
}
