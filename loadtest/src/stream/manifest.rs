//! What a `produce` sent, so that `verify` can recompute, in another
//! process and later, exactly which alerts are due: the workload's
//! parameters, how many transactions went out, and how the rows' ids and
//! users relate to the workload's (PostgreSQL gives rows ids of its own).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use loadtest::workload::{Due, Oracle, Workload};

/// Where the transactions went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Envelopes straight into a topic of their own.
    Kafka,
    /// Rows into the `transactions` table, for Debezium to publish.
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub target: Target,
    /// The topic the changes are read from: the input topic, or the one
    /// Debezium publishes the table to.
    pub topic: String,
    pub seed: u64,
    pub users: i64,
    pub skew: f64,
    pub fraud_rate: f64,
    pub start_us: i64,
    pub spacing_us: i64,
    /// Transactions that went out (the first `count` of the workload).
    pub count: u64,
    pub schemaless: bool,
    /// Row id = workload id + `id_offset` (0 when the rows carry the
    /// workload's own ids).
    pub id_offset: i64,
    /// user_id = workload user + `user_offset`, so that no earlier row
    /// shares a user's history.
    pub user_offset: i64,
}

impl Manifest {
    /// A manifest for `workload` (its offsets 0, its count 0 until known).
    pub fn new(target: Target, topic: &str, workload: &Workload, schemaless: bool) -> Self {
        Manifest {
            target,
            topic: topic.to_owned(),
            seed: workload.seed,
            users: workload.users,
            skew: workload.skew,
            fraud_rate: workload.fraud_rate,
            start_us: workload.start_us,
            spacing_us: workload.spacing_us,
            count: 0,
            schemaless,
            id_offset: 0,
            user_offset: 0,
        }
    }

    pub fn workload(&self) -> Workload {
        Workload {
            users: self.users,
            skew: self.skew,
            fraud_rate: self.fraud_rate,
            seed: self.seed,
            start_us: self.start_us,
            spacing_us: self.spacing_us,
        }
    }

    /// The alerts due, by the rows' ids. The oracle keeps history per
    /// user, so shifting every user by one offset changes nothing.
    pub fn due(&self) -> BTreeSet<Due> {
        let mut oracle = Oracle::default();
        let workload = self.workload();
        let rows = workload.transactions(self.count).flat_map(|t| oracle.observe(&t));
        rows.map(|d| d.map_id(|id| id + self.id_offset)).collect()
    }

    /// Whether the alert on row `id`, read from `topic`, is about a
    /// transaction of this run. Debezium's topic carries other writers'
    /// rows too: only this run's ids are its own there. A topic of our own
    /// holds nothing else, so any row of it is ours.
    pub fn owns(&self, topic: &str, id: i64) -> bool {
        topic == self.topic
            && match self.target {
                Target::Kafka => true,
                Target::Postgres => id > self.id_offset && id <= self.id_offset + self.count as i64,
            }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing the manifest {}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the manifest {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("the manifest {} is not one `produce` wrote", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(target: Target) -> Manifest {
        let workload = Workload {
            users: 50,
            skew: 0.5,
            fraud_rate: 0.05,
            seed: 9,
            start_us: 1_795_601_472_345_678,
            spacing_us: 333,
        };
        Manifest { count: 5_000, ..Manifest::new(target, "t", &workload, true) }
    }

    #[test]
    fn a_manifest_round_trips_through_its_file() {
        let m = Manifest { id_offset: 17, user_offset: 10_000_000, ..manifest(Target::Postgres) };
        let path = std::env::temp_dir().join(format!("loadtest-manifest-test-{}.json", std::process::id()));
        m.write(&path).unwrap();
        let back = Manifest::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.due(), m.due(), "the same alerts due");
    }

    #[test]
    fn a_file_that_is_no_manifest_is_refused_with_its_name() {
        let path = std::env::temp_dir().join(format!("loadtest-manifest-bad-{}.json", std::process::id()));
        std::fs::write(&path, "{\"seed\": 1}").unwrap();
        let e = Manifest::read(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{e:#}").contains(&path.display().to_string()), "{e:#}");
    }

    #[test]
    fn postgres_row_ids_are_the_workload_ids_shifted() {
        let kafka = manifest(Target::Kafka);
        let pg = Manifest { id_offset: 1_000, ..manifest(Target::Postgres) };
        let (a, b) = (kafka.due(), pg.due());
        assert!(a.len() > 100, "planted fraud is due: {}", a.len());
        assert_eq!(b, a.iter().map(|d| d.map_id(|id| id + 1_000)).collect());
        // Other writers' rows on Debezium's topic are not this run's.
        assert!(!pg.owns("t", 1_000) && pg.owns("t", 1_001) && pg.owns("t", 6_000) && !pg.owns("t", 6_001));
        assert!(!pg.owns("other", 1_001));
        // A topic of our own: anything on it is ours (and unexpected if not due).
        assert!(kafka.owns("t", 99_999) && !kafka.owns("other", 1));
    }
}
