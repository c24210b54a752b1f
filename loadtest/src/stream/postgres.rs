//! `produce --to postgres`: the workload's transactions COPYed into the
//! real `transactions` table in batches, so that the whole path
//! (PostgreSQL, Debezium, Kafka, vigil) is measured.
//!
//! Two things keep the oracle right on a table other writers share. Row
//! ids are reserved from the table's sequence up front and written
//! explicitly (row id = workload id + offset), so `verify` maps alerts
//! back. Users are moved past every user id the table already has in the
//! load tests' band, so no earlier row joins a user's history; an advisory
//! lock makes concurrent producers take turns at that.

use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::Client;

use loadtest::workload::{Txn, Workload};
use vigil::time::EventTime;

use super::pace::{Pace, Produced, Step};
use super::progress::Progress;

/// The user ids load tests write: above the transaction simulator's
/// (1..=users) and below the integration tests' (from 100,000,000).
const USER_BAND: Range<i64> = 10_000_000..100_000_000;
/// Advisory lock held while producing: one PostgreSQL producer at a time.
const LOCK_KEY: i64 = 0x6c6f_6164_7465_7374;
/// The shortest pause between two COPYs at a steady rate: rows gather
/// into batches instead of one statement (and one transaction) per row.
const TICK: Duration = Duration::from_millis(20);

/// How the rows relate to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Row id = workload id + `id_offset`.
    pub id_offset: i64,
    /// user_id = workload user + `user_offset`.
    pub user_offset: i64,
}

/// Reserves `count` ids from the table's sequence and picks the users'
/// offset. Inserts wait on the table lock, so no other session takes an
/// id between reading the sequence and moving it past the reservation.
async fn reserve(client: &mut Client, count: u64, users: i64) -> anyhow::Result<Placement> {
    let count = i64::try_from(count.max(1)).context("too many records")?;
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK TABLE transactions IN SHARE ROW EXCLUSIVE MODE")
        .await
        .context("locking transactions (does mydb have the table? scripts/stack up)")?;
    let seq = "pg_get_serial_sequence('transactions', 'id')";
    let first: i64 = tx
        .query_one(
            &format!("SELECT GREATEST(nextval({seq}), COALESCE((SELECT max(id) FROM transactions), 0) + 1)"),
            &[],
        )
        .await
        .context("reading the id sequence")?
        .try_get(0)?;
    tx.execute(&format!("SELECT setval({seq}, $1)"), &[&(first + count - 1)]).await.context("reserving ids")?;
    let band = (USER_BAND.start as i32, USER_BAND.end as i32);
    let max_user: Option<i32> = tx
        .query_one("SELECT max(user_id) FROM transactions WHERE user_id >= $1 AND user_id < $2", &[&band.0, &band.1])
        .await
        .context("reading the users in use")?
        .try_get(0)?;
    tx.commit().await?;
    let user_offset = max_user.map_or(USER_BAND.start, i64::from);
    if user_offset + users >= USER_BAND.end {
        bail!("no room for {users} more users below user_id {}: empty the transactions table", USER_BAND.end);
    }
    Ok(Placement { id_offset: first - 1, user_offset })
}

/// Amounts as NUMERIC(10,2) text.
fn amount(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// One row in COPY's text format: id, user_id, amount, created_at (UTC,
/// µs; the zone is ignored by a TIMESTAMP column), merchant.
fn copy_line(out: &mut Vec<u8>, t: &Txn, p: Placement) {
    let line = format!(
        "{}\t{}\t{}\t{}\tshop\n",
        t.id + p.id_offset,
        t.user + p.user_offset,
        amount(t.cents),
        EventTime(t.at_us)
    );
    out.extend_from_slice(line.as_bytes());
}

async fn copy(client: &Client, rows: Vec<u8>) -> anyhow::Result<u64> {
    let sink = client
        .copy_in("COPY transactions (id, user_id, amount, created_at, merchant) FROM STDIN")
        .await
        .context("starting a COPY into transactions")?;
    let mut sink = std::pin::pin!(sink);
    sink.send(Bytes::from(rows)).await.context("sending a COPY batch")?;
    sink.as_mut().finish().await.context("finishing a COPY batch")
}

/// A connection holding the producers' lock and a reservation of ids.
pub struct Writer {
    client: Client,
    pub placement: Placement,
}

impl Writer {
    /// Connects, waits for any other PostgreSQL producer to finish, and
    /// reserves `expected` ids for a workload of `users` users.
    pub async fn open(url: &str, expected: Option<u64>, users: i64) -> anyhow::Result<Self> {
        let Some(expected) = expected else {
            bail!("--to postgres needs --records, or --duration with --rate (ids are reserved up front)");
        };
        let mut client = crate::db::connect(url).await?;
        let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY]).await?.try_get(0)?;
        if !locked {
            eprintln!("loadtest: another `produce --to postgres` is running; waiting for it to finish");
            client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
        }
        let placement = reserve(&mut client, expected, users).await?;
        Ok(Writer { client, placement })
    }

    /// Inserts the workload at `pace`, `batch` rows per COPY at most.
    pub async fn write(
        &self,
        workload: &Workload,
        pace: &Pace,
        batch: usize,
        progress: &mut Progress,
    ) -> anyhow::Result<Produced> {
        let mut txns = workload.transactions(pace.expected().unwrap_or(0));
        let mut sent = 0u64;
        let mut stopped = false;
        while !stopped {
            let mut rows = Vec::new();
            let mut n = 0u64;
            while n < batch.max(1) as u64 {
                match pace.step(sent + n) {
                    Step::Go => match txns.next() {
                        Some(t) => {
                            copy_line(&mut rows, &t, self.placement);
                            n += 1;
                        }
                        None => {
                            stopped = true;
                            break;
                        }
                    },
                    Step::Wait(wait) if n == 0 => tokio::time::sleep(wait.max(TICK)).await,
                    Step::Wait(_) => break,
                    Step::Stop => {
                        stopped = true;
                        break;
                    }
                }
            }
            if n > 0 {
                copy(&self.client, rows).await?;
                sent += n;
                progress.update(sent, String::new);
            }
        }
        progress.finish();
        Ok(Produced { count: sent, seconds: pace.seconds() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_reserved_ids_and_moved_users() {
        let mut out = Vec::new();
        let t = Txn { id: 3, user: 7, cents: 650_000, at_us: 1_795_601_472_345_678 };
        copy_line(&mut out, &t, Placement { id_offset: 1_000, user_offset: 10_000_000 });
        assert_eq!(String::from_utf8(out).unwrap(), "1003\t10000007\t6500.00\t2026-11-25T10:11:12.345678Z\tshop\n");
    }

    #[test]
    fn amounts_are_exact_decimals() {
        assert_eq!(amount(300), "3.00");
        assert_eq!(amount(29_999), "299.99");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(-123_456), "-1234.56");
    }
}
