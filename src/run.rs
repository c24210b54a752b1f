//! `vigil run`: the pipelines of one process, side by side.
//!
//! Order of start: the metrics address is bound first (a taken port is
//! refused before anything joins a group), then the worker arbiters, then
//! per pipeline its producers (alerts; dead letters), its detector shards
//! (one per worker) and its source. Order of stop, on
//! SIGINT/SIGTERM or when a pipeline fails for good: every source stops
//! consuming, drains its partitions and commits; the producers flush; the
//! arbiters stop.
//!
//! Batch pipelines (`schedule:` files) get a scheduler actor each, started
//! before the streams (a missing results topic refuses the start before any
//! group is joined) and stopped first, after the run each has in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use anyhow::{bail, Context as _};
use rdkafka::producer::Producer;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::changelog::restore::Restorer;
use crate::changelog::writer::ChangelogWriter;
use crate::changelog::{self, ChangelogTopicError};
use crate::config::{display_duration, BatchPipeline, Guarantee, Pipeline};
use crate::decode::DecodeOptions;
use crate::detect::router::{DetectorRouter, Durable};
use crate::detect::shard::ShardSetup;
use crate::kafka::{
    create_producer, durable_producer_config, ensure_topics, max_transaction_timeout, record_limit, Client,
    DurableProducer, TopicsError,
};
use crate::schedule;
use crate::sink::alert::AlertSink;
use crate::sink::dead_letter::DeadLetters;
use crate::source::{Source, SourceParts, Transactions};
use crate::telemetry::{self, Health};

/// Settings of the process (the pipelines have their own files).
pub struct RunOptions {
    /// Where `/metrics` and `/health` are served.
    pub metrics_addr: SocketAddr,
    /// Worker threads (arbiters) for partition actors.
    pub workers: usize,
    /// This process's name among its group's processes: names its
    /// exactly-once transactions.
    pub instance: String,
}

impl RunOptions {
    /// The instance name when none is given: the host's name and the
    /// metrics port, which no two running processes of a host share and a
    /// restarted process keeps.
    pub fn default_instance(metrics_addr: SocketAddr) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}-{}", metrics_addr.port())
    }
}

/// Runs the pipelines until a signal or a fatal pipeline error.
pub fn run(pipelines: Vec<Pipeline>, batch: Vec<BatchPipeline>, options: RunOptions) -> anyhow::Result<()> {
    actix::System::new().block_on(run_inside(pipelines, batch, options))
}

async fn run_inside(pipelines: Vec<Pipeline>, batch: Vec<BatchPipeline>, options: RunOptions) -> anyhow::Result<()> {
    let handle = telemetry::install().context("installing the metrics recorder")?;
    let listener = telemetry::bind(options.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", options.metrics_addr))?;
    let health = Health::default();
    actix::spawn(telemetry::serve(listener, handle, health.clone()));
    info!(addr = %options.metrics_addr, "metrics on /metrics, health on /health");

    let arbiters: Vec<Arbiter> = (0..options.workers.max(1)).map(|_| Arbiter::new()).collect();
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel();
    // Batch pipelines: one scheduler actor each (none without batch files).
    let schedules = schedule::start(batch, &health).await.context("starting the batch pipelines")?;
    let mut running = Vec::new();
    for pipeline in pipelines {
        let pipeline = Arc::new(pipeline);
        health.register(&pipeline.name);
        check_topics(&pipeline).await?;
        if pipeline.state.enabled {
            check_changelogs(&pipeline).await?;
        }
        let dead_letter_limit =
            record_limit(&pipeline.source.brokers, &pipeline.source.properties, &pipeline.sink.dead_letters)
                .await
                .with_context(|| format!("{}: reading the dead-letter topic's max.message.bytes", pipeline.name))?;
        let (producer, dead_letter_producer, transactions) = match pipeline.guarantee {
            Guarantee::AtLeastOnce => {
                let producer = pipeline_producer(&pipeline, "", None, None)?;
                // A producer of their own: the broker judges a whole batch
                // by the topic's max.message.bytes, so dead letters are
                // batched within it.
                let dead_letters = pipeline_producer(&pipeline, "-dead-letters", Some(dead_letter_limit), None)?;
                (producer, dead_letters, None)
            }
            Guarantee::ExactlyOnce => {
                // One producer for everything a transaction holds, its
                // batches within the dead-letter topic's limit.
                let id = transactional_id(&pipeline, &options.instance);
                check_transaction_timeout(&pipeline).await?;
                let producer = pipeline_producer(&pipeline, "", Some(dead_letter_limit), Some(&id))?;
                let transactions = start_transactions(&pipeline, producer.clone(), id).await?;
                (producer.clone(), producer, Some(transactions))
            }
        };
        let dead_letters = DeadLetters::new(
            dead_letter_producer.clone(),
            pipeline.sink.dead_letters.clone(),
            pipeline.name.clone(),
            dead_letter_limit,
        );
        let decode = DecodeOptions::for_pipeline(&pipeline);
        let router = start_shards(&pipeline, &decode, &arbiters, &producer, &health)?;
        let source = Source::start(SourceParts {
            pipeline: Arc::clone(&pipeline),
            decode,
            downstream: Arc::new(router),
            dead_letters,
            arbiters: arbiters.iter().map(Arbiter::handle).collect(),
            health: health.clone(),
            fatal: fatal_tx.clone(),
            transactions,
        })
        .with_context(|| format!("{}: starting the Kafka source", pipeline.name))?;
        info!(pipeline = %pipeline.name, group = %pipeline.source.group, topics = ?pipeline.source.topics, "pipeline started");
        running.push((pipeline, source, [producer, dead_letter_producer]));
    }

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let failure = tokio::select! {
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); None }
        _ = sigterm.recv() => { info!("SIGTERM: stopping"); None }
        reason = fatal_rx.recv() => reason,
    };

    schedules.stop().await;

    for (pipeline, source, producers) in running {
        let name = pipeline.name.clone();
        tokio::task::spawn_blocking(move || {
            source.stop();
            for producer in producers {
                if let Err(e) = producer.flush(Duration::from_secs(30)) {
                    warn!(pipeline = %name, error = %e, "flushing the producer at shutdown");
                }
            }
        })
        .await
        .context("stopping a pipeline")?;
    }
    for arbiter in arbiters {
        arbiter.stop();
    }
    match failure {
        Some(reason) => {
            error!(%reason, "stopped because a pipeline failed");
            bail!("pipeline failed: {reason}")
        }
        None => {
            info!("stopped cleanly");
            Ok(())
        }
    }
}

/// A durable producer of `pipeline`, client id `vigil-NAME{suffix}`,
/// its batches kept within `batch_limit` bytes when given; transactional
/// with `transactional_id`.
fn pipeline_producer(
    pipeline: &Pipeline,
    suffix: &str,
    batch_limit: Option<usize>,
    transactional_id: Option<&str>,
) -> anyhow::Result<DurableProducer> {
    let mut config =
        durable_producer_config(&pipeline.source.brokers, &pipeline.source.properties, pipeline.sink.delivery_timeout);
    config.set("client.id", format!("vigil-{}{suffix}", pipeline.name));
    if let Some(limit) = batch_limit {
        config.set("batch.size", limit.to_string());
    }
    if let Some(id) = transactional_id {
        config
            .set("transactional.id", id)
            .set("transaction.timeout.ms", pipeline.sink.transaction_timeout.as_millis().to_string());
    }
    create_producer(&config, &pipeline.name, Client::Producer)
        .with_context(|| format!("{}: creating the producer{suffix}", pipeline.name))
}

/// The transactional id of `pipeline` in the process named `instance`:
/// stable across the process's restarts (a restart aborts what its
/// predecessor left open) and unique among the group's processes.
fn transactional_id(pipeline: &Pipeline, instance: &str) -> String {
    format!("vigil-{}-{instance}", pipeline.name)
}

/// The pipeline's transaction timeout is one the broker allows.
async fn check_transaction_timeout(pipeline: &Pipeline) -> anyhow::Result<()> {
    let name = &pipeline.name;
    let most = max_transaction_timeout(&pipeline.source.brokers, &pipeline.source.properties)
        .await
        .with_context(|| format!("{name}: reading the broker's transaction.max.timeout.ms"))?;
    let timeout = pipeline.sink.transaction_timeout;
    if timeout > most {
        bail!(
            "{name}: sink.transaction_timeout ({}) is above the broker's transaction.max.timeout.ms ({}): \
             lower sink.transaction_timeout (and sink.delivery_timeout with it), or raise the broker's setting",
            display_duration(timeout),
            display_duration(most)
        );
    }
    Ok(())
}

/// Fences the transactions a previous process of this id left open and
/// begins the first; blocks, so off the runtime's thread.
async fn start_transactions(
    pipeline: &Pipeline,
    producer: DurableProducer,
    id: String,
) -> anyhow::Result<Transactions> {
    let name = pipeline.name.clone();
    let interval = pipeline.sink.transaction_interval;
    // A partition's work is acknowledged within the delivery timeout, or
    // its batch fails the pipeline.
    let seal_timeout = pipeline.sink.delivery_timeout + Duration::from_secs(10);
    let started = tokio::task::spawn_blocking(move || Transactions::start(producer, &name, interval, seal_timeout))
        .await
        .context("starting the transactions")?;
    info!(pipeline = %pipeline.name, transactional_id = %id, "exactly-once: transactions begun");
    started.with_context(|| format!("{}: initialising transactions as {id}", pipeline.name))
}

/// One detector shard per worker, each owning the users of the partitions
/// placed on that worker.
fn start_shards(
    pipeline: &Pipeline,
    decode: &DecodeOptions,
    arbiters: &[Arbiter],
    producer: &DurableProducer,
    health: &Health,
) -> anyhow::Result<DetectorRouter> {
    let alerts = AlertSink::new(producer.clone(), pipeline.sink.alerts.clone());
    let setup = Arc::new(ShardSetup::for_pipeline(pipeline, &decode.projection, alerts)?);
    let workers: Vec<_> = arbiters.iter().map(Arbiter::handle).collect();
    let durable = if pipeline.state.enabled {
        let writer = ChangelogWriter::new(producer.clone(), pipeline);
        let restorer =
            Restorer::start(pipeline).with_context(|| format!("{}: starting the state restorer", pipeline.name))?;
        Some(Durable::new(&pipeline.name, writer, restorer))
    } else {
        None
    };
    Ok(DetectorRouter::start(setup, &workers, health.clone(), durable))
}

/// Each source topic's changelog exists (created when missing) with as
/// many partitions and compacted.
async fn check_changelogs(pipeline: &Pipeline) -> anyhow::Result<()> {
    let name = &pipeline.name;
    for source in &pipeline.source.topics {
        let topic = pipeline.state.changelog_topic(source);
        match changelog::ensure(&pipeline.source.brokers, &pipeline.source.properties, source, &topic).await {
            Ok(()) => {}
            Err(e @ (ChangelogTopicError::PartitionCount { .. } | ChangelogTopicError::CleanupPolicy { .. })) => {
                bail!("{name}: state.changelog: {e}")
            }
            Err(e) => return Err(e).with_context(|| format!("{name}: checking the changelog {topic}")),
        }
    }
    Ok(())
}

/// The topics a pipeline reads and writes must exist: the broker is not
/// expected to create them, and a typo should stop the start, not the run.
async fn check_topics(pipeline: &Pipeline) -> anyhow::Result<()> {
    let name = &pipeline.name;
    let wanted =
        pipeline.source.topics.iter().chain([&pipeline.sink.dead_letters, &pipeline.sink.alerts]).cloned().collect();
    match ensure_topics(&pipeline.source.brokers, &pipeline.source.properties, wanted).await {
        Ok(()) => Ok(()),
        Err(e @ TopicsError::Missing(_)) => {
            bail!("{name}: {e} (create them, e.g. scripts/kafka topics --create --topic NAME --partitions 8)")
        }
        Err(TopicsError::Client(e)) => Err(e).with_context(|| format!("{name}: creating a metadata client")),
        Err(TopicsError::Unreachable(e)) => Err(e).with_context(|| format!("{name}: Kafka did not answer")),
        Err(e) => Err(e).context("checking topics"),
    }
}
