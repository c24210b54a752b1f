//! Where a streaming pipeline's effects go: alerts to the alert topic
//! ([`alert`]) and records it cannot read to the dead-letter topic
//! ([`dead_letter`]), both through the durable producer of
//! [`crate::kafka`]. Each send resolves once Kafka has acknowledged it,
//! which is what lets the source commit past the record.

pub mod alert;
pub mod dead_letter;
