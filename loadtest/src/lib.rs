//! The parts of the load generator other code reuses: Debezium envelopes
//! exactly as the connector writes them, and a transaction workload with
//! its oracle. The integration tests and benches of the engine build their
//! records with [`envelope`] too, so there is one encoder of Connect's
//! format in the project; and users of full detector state ([`state`]).

pub mod envelope;
pub mod state;
pub mod workload;
