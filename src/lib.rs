//! vigil: an actor-based stream processing engine for Debezium change
//! streams.
//!
//! It reads the PostgreSQL row changes that Debezium publishes to Kafka,
//! keeps per-user sliding windows in actors and emits fraud alerts to Kafka;
//! beside the streams, a scheduler actor runs periodic batch jobs against
//! PostgreSQL. Pipelines are YAML files (`pipelines/`).
//!
//! # Layout
//! Rooms, from the entry point down; each imports only rooms below it.
//! - [`run`]: `vigil run`: pipelines side by side, started and stopped in
//!   order.
//! - [`source`]: the Kafka consumer of a streaming pipeline, its poll
//!   thread and one supervised actor per assigned partition; offsets
//!   committed only when durable.
//! - [`schedule`]: batch pipelines: a scheduler actor per file running a
//!   periodic job against PostgreSQL (clock-aligned windows, catch-up,
//!   advisory lock, retries).
//! - [`detect`]: the detectors (pure rules over per-user state), the shard
//!   actors that own the users and send alerts, and the router to them.
//! - [`sink`]: alerts (their JSON and deterministic id) and dead letters
//!   (undecodable records with the reason in headers), sent durably.
//! - [`changelog`]: where detector state is kept: a compacted topic per
//!   source topic, written partition by partition and read back on
//!   assignment; bytes only.
//! - [`decode`]: Debezium records (JSON, with or without schema,
//!   flattened or not) to typed rows, exactly; bad records to errors with
//!   a reason.
//! - [`kafka`]: Kafka clients: consumer and durable producer settings,
//!   client errors said once then counted, the start-time topic check.
//! - [`stage`]: the contract between a stream's stages: `Downstream`,
//!   `BatchError`, the placement of partitions on workers.
//! - [`config`]: pipeline files: strict parsing, `${VAR}` interpolation,
//!   validation that reports every problem with its path.
//! - [`row`] and [`time`]: the model: a decoded row change as the
//!   detectors see it; event time (µs since the epoch, UTC).
//! - [`telemetry`]: metric names, the typed series owners register, the
//!   Prometheus recorder, `/metrics` and `/health`. A leaf.

pub mod changelog;
pub mod config;
pub mod decode;
pub mod detect;
pub mod kafka;
pub mod row;
pub mod run;
pub mod schedule;
pub mod sink;
pub mod source;
pub mod stage;
pub mod telemetry;
pub mod time;

/// The version of this build, as shown by `vigil --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
