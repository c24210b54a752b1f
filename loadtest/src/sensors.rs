//! `loadtest sensors`: a sensor simulator for the temperature batch job.
//! N sensors (`sensor-001`, ...) each write one reading a minute into
//! `temperature_readings` (`--interval`), live, or write a span of history
//! at once (`--history 24h`) for demos and tests, or both (`--history 24h
//! --live`).
//!
//! Readings follow a daily curve (warmest at 15:00 UTC) around each
//! sensor's own base temperature, with a little noise, rounded to 0.01 °C;
//! all of it reproducible from `--seed`. Each sensor reads at its own
//! second of the interval, so readings do not all share one instant. Times
//! are written as UTC into the `TIMESTAMP` column, as the job reads them.
//!
//! Deliberately not simulated: late or out-of-order readings, and broken
//! sensors; tests write those themselves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Number of sensors.
    #[arg(long, default_value_t = 10)]
    sensors: u32,
    /// PostgreSQL to write to.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres:postgrespw@127.0.0.1:5432/mydb")]
    database_url: String,
    /// The readings table; created if missing (sensor_id, temperature,
    /// recorded_at TIMESTAMP).
    #[arg(long, default_value = "temperature_readings")]
    table: String,
    /// Sensor ids are PREFIX001, PREFIX002, ...
    #[arg(long, default_value = "sensor-")]
    prefix: String,
    /// Time between two readings of a sensor, e.g. 1m, 10s.
    #[arg(long, default_value = "1m", value_parser = crate::duration)]
    interval: Duration,
    /// Write this span of past readings at once (e.g. 24h), ending now,
    /// then stop (unless --live).
    #[arg(long, value_parser = crate::duration)]
    history: Option<Duration>,
    /// Write live readings (the default without --history), after the
    /// history if there is one.
    #[arg(long)]
    live: bool,
    /// Stop live writing after this long (e.g. 10m); runs until Ctrl-C
    /// without it.
    #[arg(long, value_parser = crate::duration)]
    duration: Option<Duration>,
    /// Seed of the random generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Readings per INSERT when writing history.
const HISTORY_BATCH: usize = 5_000;

/// One simulated sensor.
#[derive(Debug, Clone)]
struct Sensor {
    id: String,
    /// °C around which its day swings.
    base: f64,
    /// Where in each interval it reads, µs.
    phase: i64,
}

fn sensors(args: &SensorsArgs, rng: &mut SmallRng) -> Vec<Sensor> {
    let interval = args.interval.as_micros().max(1) as i64;
    (1..=args.sensors)
        .map(|i| Sensor {
            id: format!("{}{i:03}", args.prefix),
            base: 19.0 + rng.random_range(0.0..4.0),
            phase: rng.random_range(0..interval),
        })
        .collect()
}

/// The reading of `sensor` at `at` (µs since the epoch, UTC): a daily
/// curve of ±2 °C peaking at 15:00 UTC, ±0.3 °C of noise, 0.01 °C steps.
fn temperature(sensor: &Sensor, at: i64, rng: &mut SmallRng) -> f64 {
    let day_fraction = at.rem_euclid(MICROS_PER_DAY) as f64 / MICROS_PER_DAY as f64;
    let curve = 2.0 * (std::f64::consts::TAU * (day_fraction - 0.375)).sin();
    let noise = rng.random_range(-0.3..0.3);
    ((sensor.base + curve + noise) * 100.0).round() / 100.0
}

/// Every reading time of a sensor in `[from, to)`, one per interval.
fn times(sensor: &Sensor, interval: i64, from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = from.div_euclid(interval) * interval + sensor.phase;
    let first = if first < from { first + interval } else { first };
    (0..).map(move |k| first + k * interval).take_while(move |t| *t < to)
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn at(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

/// A table name that goes into SQL as is: `name` or `schema.name`, plain.
fn check_table(table: &str) -> anyhow::Result<()> {
    let plain = |part: &str| {
        let mut chars = part.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if table.split('.').count() <= 2 && table.split('.').all(plain) {
        Ok(())
    } else {
        bail!("--table {table:?}: use a plain lowercase name, or schema.name")
    }
}

pub async fn run(args: SensorsArgs) -> anyhow::Result<()> {
    check_table(&args.table)?;
    if args.sensors == 0 || args.interval.is_zero() {
        bail!("--sensors and --interval must be above zero");
    }
    let client = crate::db::connect(&args.database_url).await?;
    let table = &args.table;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id          BIGSERIAL PRIMARY KEY,
                sensor_id   TEXT NOT NULL,
                temperature DOUBLE PRECISION NOT NULL,
                recorded_at TIMESTAMP NOT NULL
            )"
        ))
        .await
        .with_context(|| format!("creating {table} if missing"))?;
    // One statement per batch: arrays unnested into rows. A SystemTime
    // bound to a TIMESTAMP is its UTC wall-clock time.
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (sensor_id, temperature, recorded_at) \
             SELECT * FROM UNNEST($1::text[], $2::float8[], $3::timestamp[])"
        ))
        .await
        .context("preparing the insert")?;

    let mut rng = SmallRng::seed_from_u64(args.seed);
    let fleet = sensors(&args, &mut rng);
    let interval = args.interval.as_micros() as i64;

    let mut rows: Vec<(String, f64, SystemTime)> = Vec::new();
    let mut total = 0usize;
    let flush = |rows: &mut Vec<(String, f64, SystemTime)>| {
        let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let temps: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let times: Vec<SystemTime> = rows.iter().map(|r| r.2).collect();
        rows.clear();
        (ids, temps, times)
    };

    if let Some(history) = args.history {
        let to = now_micros();
        let from = to - history.as_micros() as i64;
        for sensor in &fleet {
            for t in times(sensor, interval, from, to) {
                rows.push((sensor.id.clone(), temperature(sensor, t, &mut rng), at(t)));
                if rows.len() >= HISTORY_BATCH {
                    let (ids, temps, times) = flush(&mut rows);
                    client.execute(&insert, &[&ids, &temps, &times]).await.context("inserting history")?;
                    total += ids.len();
                }
            }
        }
        if !rows.is_empty() {
            let (ids, temps, times) = flush(&mut rows);
            client.execute(&insert, &[&ids, &temps, &times]).await.context("inserting history")?;
            total += ids.len();
        }
        println!("loadtest: wrote {total} readings of {} sensors over the last {history:?} into {table}", fleet.len());
        if !args.live {
            return Ok(());
        }
    }

    // Live: every interval, each sensor's reading at its own phase.
    let started = tokio::time::Instant::now();
    let mut from = now_micros();
    let mut live = 0usize;
    loop {
        let sleep = tokio::time::sleep(Duration::from_millis(200));
        tokio::select! {
            _ = sleep => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let to = now_micros();
        for sensor in &fleet {
            for t in times(sensor, interval, from, to) {
                rows.push((sensor.id.clone(), temperature(sensor, t, &mut rng), at(t)));
            }
        }
        from = to;
        if !rows.is_empty() {
            let (ids, temps, times) = flush(&mut rows);
            client.execute(&insert, &[&ids, &temps, &times]).await.context("inserting readings")?;
            live += ids.len();
            println!("loadtest: {live} live readings written");
        }
    }
    println!("loadtest: done: {live} live readings of {} sensors into {table}", fleet.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sensors: u32, interval: &str) -> SensorsArgs {
        SensorsArgs {
            sensors,
            database_url: String::new(),
            table: "t".into(),
            prefix: "s-".into(),
            interval: crate::duration(interval).expect("duration"),
            history: None,
            live: false,
            duration: None,
            seed: 1,
        }
    }

    #[test]
    fn one_reading_per_sensor_per_interval_inside_the_span() {
        let a = args(3, "1m");
        let fleet = sensors(&a, &mut SmallRng::seed_from_u64(1));
        assert_eq!(fleet.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s-001", "s-002", "s-003"]);
        let (from, to) = (1_795_600_800_000_000, 1_795_600_800_000_000 + 3_600_000_000);
        for sensor in &fleet {
            let t: Vec<i64> = times(sensor, 60_000_000, from, to).collect();
            assert_eq!(t.len(), 60, "{sensor:?}");
            assert!(t.iter().all(|&x| (from..to).contains(&x)));
            assert!(t.windows(2).all(|w| w[1] - w[0] == 60_000_000));
        }
    }

    #[test]
    fn temperatures_are_plausible_and_reproducible() {
        let a = args(5, "1m");
        let mut rng = SmallRng::seed_from_u64(9);
        let fleet = sensors(&a, &mut rng);
        let readings: Vec<f64> = fleet.iter().map(|s| temperature(s, 1_795_600_800_000_000, &mut rng)).collect();
        assert!(readings.iter().all(|t| (16.0..26.0).contains(t)), "{readings:?}");
        assert!(readings.iter().all(|t| (t * 100.0 - (t * 100.0).round()).abs() < 1e-6));
        let mut again = SmallRng::seed_from_u64(9);
        let fleet2 = sensors(&a, &mut again);
        let readings2: Vec<f64> = fleet2.iter().map(|s| temperature(s, 1_795_600_800_000_000, &mut again)).collect();
        assert_eq!(readings, readings2);
    }

    #[test]
    fn table_names_are_checked() {
        assert!(check_table("temperature_readings").is_ok());
        assert!(check_table("iot.readings").is_ok());
        assert!(check_table("x; drop table y").is_err());
        assert!(check_table("a.b.c").is_err());
    }
}
