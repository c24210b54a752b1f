//! `loadtest transactions`: a transaction simulator writing batches of
//! random transactions into PostgreSQL's `transactions` table, as an
//! application would, so Debezium carries them to vigil.
//!
//! Most transactions are ordinary (a few to a few hundred); at
//! `--fraud-rate` a user gets a planted burst: five small transactions and
//! a large one within seconds, which both reference detectors flag. Event
//! times are the wall clock at insert (UTC), like `DEFAULT now()`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Args)]
pub struct TransactionsArgs {
    /// PostgreSQL to write to.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres:postgrespw@127.0.0.1:5432/mydb")]
    database_url: String,
    /// Distinct users (user_id 1..=users).
    #[arg(long, default_value_t = 1_000)]
    users: i32,
    /// Rows per batch (one INSERT).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Pause between batches, e.g. 500ms, 1s.
    #[arg(long, default_value = "1s", value_parser = crate::duration)]
    interval: Duration,
    /// Share of batches that plant a fraud burst (0..=1).
    #[arg(long, default_value_t = 0.2)]
    fraud_rate: f64,
    /// Stop after this long (e.g. 60s, 5m); runs until Ctrl-C without it.
    #[arg(long, value_parser = crate::duration)]
    duration: Option<Duration>,
    /// Seed of the random generator, for a reproducible run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// One row to insert.
struct Txn {
    user_id: i32,
    /// Cents.
    amount: i64,
    /// Microseconds after the batch's base time.
    offset_micros: i64,
    merchant: &'static str,
}

const MERCHANTS: [&str; 6] = ["grocer", "fuel", "cafe", "books", "travel", "electronics"];

fn batch(rng: &mut SmallRng, args: &TransactionsArgs) -> Vec<Txn> {
    let mut rows: Vec<Txn> = (0..args.batch)
        .map(|i| Txn {
            user_id: rng.random_range(1..=args.users.max(1)),
            amount: rng.random_range(300..30_000),
            offset_micros: i as i64,
            merchant: MERCHANTS[rng.random_range(0..MERCHANTS.len())],
        })
        .collect();
    if rng.random_bool(args.fraud_rate.clamp(0.0, 1.0)) {
        // Five small purchases and a large one within five seconds.
        let user_id = rng.random_range(1..=args.users.max(1));
        for second in 0..5 {
            rows.push(Txn { user_id, amount: 1_500, offset_micros: second * 1_000_000, merchant: "cafe" });
        }
        rows.push(Txn { user_id, amount: 650_000, offset_micros: 5_000_000, merchant: "electronics" });
    }
    rows
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

pub async fn run(args: TransactionsArgs) -> anyhow::Result<()> {
    let client = crate::db::connect(&args.database_url).await?;
    // One statement a batch: arrays unnested into rows.
    let insert = client
        .prepare(
            "INSERT INTO transactions (user_id, amount, created_at, merchant) \
             SELECT u, (a / 100.0)::numeric(10,2), to_timestamp(t / 1e6) AT TIME ZONE 'UTC', m \
             FROM UNNEST($1::int[], $2::bigint[], $3::bigint[], $4::text[]) AS x(u, a, t, m)",
        )
        .await
        .context("preparing the insert (does mydb have the transactions table? scripts/stack up)")?;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let (mut total, mut bursts) = (0u64, 0u64);
    let mut tick = tokio::time::interval(args.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let rows = batch(&mut rng, &args);
        bursts += u64::from(rows.len() > args.batch);
        let base = now_micros();
        let users: Vec<i32> = rows.iter().map(|r| r.user_id).collect();
        let amounts: Vec<i64> = rows.iter().map(|r| r.amount).collect();
        let times: Vec<i64> = rows.iter().map(|r| base + r.offset_micros).collect();
        let merchants: Vec<&str> = rows.iter().map(|r| r.merchant).collect();
        client.execute(&insert, &[&users, &amounts, &times, &merchants]).await.context("inserting a batch")?;
        total += rows.len() as u64;
        eprintln!("loadtest: {total} transactions inserted ({bursts} planted bursts) in {:.0?}", started.elapsed());
    }
    eprintln!("loadtest: done: {total} transactions, {bursts} planted bursts");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_burst_is_five_small_and_one_large_within_seconds() {
        let args = TransactionsArgs {
            database_url: String::new(),
            users: 10,
            batch: 3,
            interval: Duration::from_secs(1),
            fraud_rate: 1.0,
            duration: None,
            seed: 7,
        };
        let rows = batch(&mut SmallRng::seed_from_u64(7), &args);
        assert_eq!(rows.len(), 9);
        let burst = &rows[3..];
        assert!(burst.iter().all(|r| r.user_id == burst[0].user_id));
        assert_eq!(burst[5].amount, 650_000, "6500.00: above 4000 and 3x the mean");
        assert!(burst[5].offset_micros - burst[0].offset_micros <= 60_000_000);
    }
}
