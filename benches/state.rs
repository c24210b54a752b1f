//! Durable state's records (`src/detect/record.rs`), with the reference
//! pipeline's detectors:
//!
//! - `record/encode_user`: 1,000 users of full state (50 amounts, a
//!   velocity window of 7 times) encoded, as a checkpoint does for every
//!   user changed in the last second.
//! - `record/decode_user`: the same records decoded into users' state, as
//!   a restore does for every user of an assigned partition.

mod support;

use std::hint::black_box;

use loadtest::state::FullUsers;
use support::{bench, fraud_pipeline, Routine};
use vigil::detect::record::{decode_user, encode_user, RestoreReport};
use vigil::detect::{Detectors, UserState};

const USERS: usize = 1_000;

/// `USERS` users of full state (the load test's, 60 rows 10 s apart).
fn full_users() -> (Detectors, Vec<UserState>) {
    let full = FullUsers::new(&fraud_pipeline()).expect("the reference pipeline reads amounts");
    let users = (0..USERS as i64).map(|u| full.user(u, 1_795_601_472_000_000)).collect();
    (full.detectors, users)
}

struct Encode {
    detectors: Detectors,
    users: Vec<UserState>,
    out: Vec<u8>,
}

impl Routine for Encode {
    fn run(&mut self) {
        for user in &self.users {
            self.out.clear();
            encode_user(&self.detectors, user, &mut self.out);
            black_box(&self.out);
        }
    }
}

struct Decode {
    detectors: Detectors,
    records: Vec<Vec<u8>>,
}

impl Routine for Decode {
    fn run(&mut self) {
        let mut report = RestoreReport::default();
        for record in &self.records {
            black_box(decode_user(&self.detectors, record, &mut report).expect("decodes"));
        }
    }
}

fn main() {
    let (detectors, users) = full_users();
    let records: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            let mut out = Vec::new();
            encode_user(&detectors, u, &mut out);
            out
        })
        .collect();
    let bytes = records.iter().map(Vec::len).sum::<usize>() / USERS;
    eprintln!("a full reference user's record: {bytes} bytes (value), 9 bytes of key");
    let for_decode = detectors.clone();
    support::main(
        "record",
        vec![
            bench("encode_user", USERS as u64, move || Encode { detectors, users, out: Vec::new() }),
            bench("decode_user", USERS as u64, move || Decode { detectors: for_decode, records }),
        ],
    )
}
