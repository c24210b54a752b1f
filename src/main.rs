//! The `vigil` binary. Thin: parse arguments, set up logging, call the
//! library.
//!
//! Logs (tracing, filtered by `RUST_LOG`, default `info`) go to stderr;
//! command output goes to stdout, problems to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vigil::config::PipelineDef;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Actor-based stream processing for Debezium change streams.
#[derive(Debug, Parser)]
#[command(name = "vigil", version = vigil::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check pipeline files without connecting to anything: syntax, unknown
    /// keys, values and cross-field rules, with `${VAR}` taken from the
    /// environment. Prints every problem; exits 1 if any file has one.
    Validate {
        /// Pipeline files (YAML), e.g. pipelines/*.yaml.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run pipelines side by side in this process: each streaming pipeline
    /// joins its consumer group, each batch pipeline runs on its schedule;
    /// SIGINT/SIGTERM drain, commit and stop.
    Run {
        /// Pipeline files (YAML). Every file is validated before anything
        /// starts; one bad file refuses the whole start.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Address of /metrics (Prometheus) and /health.
        #[arg(long, env = "VIGIL_METRICS_ADDR", default_value = "127.0.0.1:9898")]
        metrics_addr: SocketAddr,
        /// Worker threads for partition actors (default: one per core).
        #[arg(long, env = "VIGIL_WORKERS")]
        workers: Option<usize>,
        /// This process's name among the processes of its consumer groups:
        /// exactly-once pipelines name their transactions after it
        /// (transactional.id vigil-PIPELINE-INSTANCE), so a restarted
        /// process must keep it and two running processes may not share it.
        /// Default: the host name and the metrics port.
        #[arg(long, env = "VIGIL_INSTANCE")]
        instance: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run { files, metrics_addr, workers, instance } => run(&files, metrics_addr, workers, instance),
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(files: &[PathBuf], metrics_addr: SocketAddr, workers: Option<usize>, instance: Option<String>) -> ExitCode {
    let mut pipelines = Vec::new();
    let mut batch = Vec::new();
    let mut refused = false;
    for file in files {
        match vigil::config::load_any(file) {
            Ok(PipelineDef::Stream(pipeline)) => pipelines.push(pipeline),
            Ok(PipelineDef::Batch(pipeline)) => batch.push(pipeline),
            Err(err) => {
                refused = true;
                eprintln!("{err}");
            }
        }
    }
    if refused {
        eprintln!("not started: fix the pipeline files above (vigil validate FILE...)");
        return ExitCode::FAILURE;
    }
    let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let instance = instance.unwrap_or_else(|| vigil::run::RunOptions::default_instance(metrics_addr));
    match vigil::run::run(pipelines, batch, vigil::run::RunOptions { metrics_addr, workers, instance }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ok   FILE (pipeline NAME)` on stdout per good file, every problem of
/// the others on stderr; exit 1 if any file has a problem.
fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0usize;
    for file in files {
        match vigil::config::load_any(file) {
            Ok(pipeline) => {
                tracing::debug!(file = %file.display(), name = pipeline.name(), "pipeline is valid");
                println!("ok   {} (pipeline {})", file.display(), pipeline.name());
            }
            Err(err) => {
                failed += 1;
                eprintln!("{err}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {} pipeline file{} refused", files.len(), if files.len() == 1 { "" } else { "s" });
        ExitCode::FAILURE
    }
}
