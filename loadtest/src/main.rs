//! `loadtest`: load generators for vigil's pipelines.
//!
//! - `transactions`: random transactions into PostgreSQL, with planted
//!   fraud bursts (the fraud pipeline's input, through Debezium).
//! - `sensors`: temperature sensors writing readings into PostgreSQL, live
//!   or a span of history at once (the temperature batch job's input).

mod sensors;
mod transactions;

use clap::{Parser, Subcommand};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Transactions(args) => transactions::run(args).await,
        Command::Sensors(args) => sensors::run(args).await,
    }
}
