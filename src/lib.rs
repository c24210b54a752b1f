//! vigil: an actor-based stream processing engine for Debezium change
//! streams.
//!
//! It reads the PostgreSQL row changes that Debezium publishes to Kafka,
//! keeps per-user sliding windows in actors and emits fraud alerts to Kafka;
//! beside the streams, a scheduler actor runs periodic batch jobs against
//! PostgreSQL. Pipelines are YAML files (`pipelines/`).
//!
//! # Layout
//! - [`alert`]: the alert JSON, its deterministic id, and its producer.
//! - [`config`]: pipeline files: strict parsing, `${VAR}` interpolation,
//!   validation that reports every problem with its path.
//! - [`decode`]: Debezium records (JSON, with or without schema,
//!   flattened or not) to typed rows, exactly; bad records to errors with
//!   a reason.
//! - [`detect`]: the detectors (pure rules over per-user state), the shard
//!   actors that own the users and send alerts, and the router to them.
//! - [`kafka_log`]: Kafka client errors said once, then counted, so an
//!   outage reads as a few lines.
//! - [`dead_letter`]: undecodable records to the dead-letter topic, with
//!   the reason and origin in headers.
//! - [`metrics`]: metric names, the Prometheus recorder, `/metrics` and
//!   `/health`.
//! - [`row`]: a decoded row change, as the detectors see it.
//! - [`run`]: `vigil run`: pipelines side by side, started and stopped in
//!   order.
//! - [`schedule`]: batch pipelines: a scheduler actor per file running a
//!   periodic job against PostgreSQL (clock-aligned windows, catch-up,
//!   advisory lock, retries).
//! - [`source`]: the Kafka consumer, its poll thread and one supervised
//!   actor per assigned partition; offsets committed only when durable.
//! - [`time`]: event time (µs since the epoch, UTC) and its ISO-8601 form.

pub mod alert;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod detect;
pub mod kafka_log;
pub mod metrics;
pub mod row;
pub mod run;
pub mod schedule;
pub mod source;
pub mod time;

/// The version of this build, as shown by `vigil --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
