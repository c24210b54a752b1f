//! `loadtest`: load generators for vigil's pipelines (the binary; the
//! reusable encoder and oracle are the library, `src/lib.rs`).
//!
//! - `transactions`: random transactions into PostgreSQL, with planted
//!   fraud bursts (the fraud pipeline's input, through Debezium).
//! - `sensors`: temperature sensors writing readings into PostgreSQL, live
//!   or a span of history at once (the temperature batch job's input).
//! - `run`: the fraud pipeline under load through Kafka, verified against
//!   an oracle, with a report (`stream/`).

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
    /// The fraud pipeline under load, straight through Kafka: produce
    /// Debezium envelopes with planted fraud, measure the baseline consumer,
    /// run vigil, verify every alert against an independent oracle, report.
    Run(stream::RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Transactions(args) => transactions::run(args).await,
        Command::Sensors(args) => sensors::run(args).await,
        Command::Run(args) => stream::run(args).await,
    }
}
