//! vigil: an actor-based stream processing engine for Debezium change
//! streams.
//!
//! It reads the PostgreSQL row changes that Debezium publishes to Kafka,
//! keeps per-user sliding windows in actors and emits fraud alerts to Kafka;
//! beside the streams, a scheduler actor runs periodic batch jobs against
//! PostgreSQL. Pipelines are YAML files (`pipelines/`).
//!
//! # Layout
//! The engine is being built module by module; this crate currently holds
//! only the version banner shown by the binary.

/// The version of this build, as shown by `vigil --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
