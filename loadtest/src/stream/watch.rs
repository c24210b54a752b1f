//! Watching vigil work through a topic from the outside: its group's
//! committed offsets against the topic's end offsets, sampled a few times a
//! second until it has committed every record. The samples give the
//! sustained rate, the lag (records behind) and the throughput over time.

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::chaos::Fleet;
use super::kafka::{self, Offsets};
use super::progress::Progress;

const EVERY: Duration = Duration::from_millis(200);
/// No commit for this long, with records waiting, fails the run.
const STALLED: Duration = Duration::from_secs(120);

/// One look at the topic and the group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Since the watch began (vigil's start).
    pub seconds: f64,
    /// Records committed by the group, all partitions.
    pub committed: i64,
    /// Records in the topic (its end offsets), all partitions.
    pub produced: i64,
}

pub struct Watch {
    offsets: Offsets,
    topic: String,
    partitions: OnceCell<Vec<i32>>,
}

impl Watch {
    pub fn new(brokers: &str, group: &str, topic: &str) -> anyhow::Result<Self> {
        Ok(Watch { offsets: Offsets::new(brokers, group)?, topic: topic.to_owned(), partitions: OnceCell::new() })
    }

    /// `since`: time zero of the sample. Commits are read before the end
    /// offsets, so a sample never shows more committed than produced.
    pub fn sample(&self, since: Instant) -> anyhow::Result<Sample> {
        let partitions = match self.partitions.get() {
            Some(p) => p,
            None => {
                let marks = self.offsets.watermarks(&self.topic)?;
                self.partitions.get_or_init(|| marks.keys().copied().collect())
            }
        };
        let committed = self.offsets.committed(&self.topic, partitions)?.values().sum();
        let produced = kafka::ends(&self.offsets.watermarks(&self.topic)?);
        Ok(Sample { seconds: since.elapsed().as_secs_f64(), committed, produced })
    }

    /// Samples until production is over (`done`) and the group has
    /// committed every record, letting the fleet act on each sample;
    /// `since`: vigil's start; `expected`: the records to come, for the
    /// progress bar.
    pub fn until_committed(
        &self,
        fleet: &mut Fleet,
        since: Instant,
        expected: Option<u64>,
        done: impl Fn() -> bool,
    ) -> anyhow::Result<Vec<Sample>> {
        let mut progress = Progress::new("vigil", expected);
        let mut samples: Vec<Sample> = Vec::new();
        let mut last_move = Instant::now();
        let mut unreachable = false;
        loop {
            fleet.check_running()?;
            // Asked before sampling: once production is over, the sample's
            // end offsets are final.
            let finished = done();
            // A broker restarting or a partition leader moving fails a
            // sample or two; the run waits it out, as vigil does, and only
            // a stall ends it.
            let s = match self.sample(since) {
                Ok(s) => s,
                Err(e) if last_move.elapsed() > STALLED => {
                    return Err(e.context(format!("no commit seen for {} s", STALLED.as_secs())));
                }
                Err(e) => {
                    if !unreachable {
                        progress.say(&format!("cannot read the offsets now ({e:#}); trying again"));
                        unreachable = true;
                    }
                    std::thread::sleep(EVERY);
                    continue;
                }
            };
            if std::mem::take(&mut unreachable) {
                progress.say("offsets readable again");
            }
            if samples.last().is_none_or(|l| l.committed != s.committed) {
                last_move = Instant::now();
            }
            samples.push(s);
            if let Some(said) = fleet.tend(s.committed)? {
                progress.say(&said);
            }
            progress.update(s.committed.max(0) as u64, || {
                format!("committed, {} produced, {} behind", s.produced, s.produced - s.committed)
            });
            if finished && s.committed >= s.produced {
                progress.finish();
                return Ok(samples);
            }
            if s.committed < s.produced && last_move.elapsed() > STALLED {
                bail!(
                    "vigil committed nothing for {} s ({} of {} committed)",
                    STALLED.as_secs(),
                    s.committed,
                    s.produced
                );
            }
            std::thread::sleep(EVERY);
        }
    }
}

/// Records behind (produced − committed) at each sample.
pub fn lag(samples: &[Sample]) -> Vec<(f64, i64)> {
    samples.iter().map(|s| (s.seconds, s.produced - s.committed)).collect()
}

/// A rate held over an interval of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub from: f64,
    pub to: f64,
    pub per_second: f64,
}

/// Records/s between consecutive changes of a count (vigil commits about
/// once a second, so fixed intervals would alias).
pub fn rates(points: impl IntoIterator<Item = (f64, i64)>) -> Vec<Rate> {
    let mut out = Vec::new();
    let mut points = points.into_iter();
    let Some(mut last) = points.next() else { return out };
    for (t, n) in points {
        if n != last.1 && t > last.0 {
            out.push(Rate { from: last.0, to: t, per_second: (n - last.1) as f64 / (t - last.0) });
            last = (t, n);
        }
    }
    out
}

/// Vigil's committed records/s over time.
pub fn throughput(samples: &[Sample]) -> Vec<Rate> {
    rates(samples.iter().map(|s| (s.seconds, s.committed)))
}

/// Records/s written to the topic over time.
pub fn production(samples: &[Sample]) -> Vec<Rate> {
    rates(samples.iter().map(|s| (s.seconds, s.produced)))
}

/// Rates for the report: [seconds at the interval's end, records/s].
pub fn rates_json(rates: &[Rate]) -> Vec<(f64, f64)> {
    rates.iter().map(|r| (r.to, r.per_second)).collect()
}

/// The sustained rate: records committed between the first commit that
/// moved and the last one before the final commit, over the time between
/// them. vigil is busy all that while; start-up comes before it, and the
/// final commit may come up to a commit interval after the last record,
/// so both are left out. A run too short for that falls back to the
/// larger of two lower bounds: first to last commit that moved, and every
/// record over the time from vigil's start to its last commit.
pub fn sustained(samples: &[Sample]) -> f64 {
    // Where the committed count moved: the commits, as they were seen.
    let mut commits: Vec<(f64, i64)> = Vec::new();
    for s in samples.iter().filter(|s| s.committed > 0) {
        if commits.last().is_none_or(|&(_, n)| s.committed > n) {
            commits.push((s.seconds, s.committed));
        }
    }
    if let [first, .., steady_end, _final] = commits[..] {
        if steady_end.0 - first.0 >= 1.0 {
            return (steady_end.1 - first.1) as f64 / (steady_end.0 - first.0);
        }
    }
    let first = commits.first().copied().unwrap_or((0.0, 0));
    let last = samples.last().map_or((0.0, 0), |s| (s.seconds, s.committed));
    let overall = last.1 as f64 / last.0.max(1e-3);
    if last.1 > first.1 && last.0 - first.0 >= 1.0 {
        overall.max((last.1 - first.1) as f64 / (last.0 - first.0))
    } else {
        overall
    }
}

/// At most one point a second (and the last), for the report.
pub fn thin<T: Copy>(points: &[(f64, T)]) -> Vec<(f64, T)> {
    let mut out: Vec<(f64, T)> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        if out.last().is_none_or(|l| p.0 - l.0 >= 1.0) || i + 1 == points.len() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: f64, committed: i64, produced: i64) -> Sample {
        Sample { seconds, committed, produced }
    }

    #[test]
    fn lag_is_records_produced_but_not_committed() {
        let samples = [s(0.0, 0, 100), s(1.0, 40, 200), s(2.0, 200, 200)];
        assert_eq!(lag(&samples), [(0.0, 100), (1.0, 160), (2.0, 0)]);
    }

    #[test]
    fn throughput_is_measured_between_commits() {
        // Commits once a second, sampled five times a second.
        let samples: Vec<Sample> = (0..=15).map(|i| s(i as f64 * 0.2, (i / 5) as i64 * 1_000, 3_000)).collect();
        let t = throughput(&samples);
        assert_eq!(t.len(), 3);
        assert!((t[0].from, t[0].to) == (0.0, 1.0) && (t[2].from, t[2].to) == (2.0, 3.0), "{t:?}");
        assert!(t.iter().all(|r| (r.per_second - 1_000.0).abs() < 1e-6), "{t:?}");
        assert_eq!(rates_json(&t)[1], (2.0, t[1].per_second));
        assert!(production(&samples).is_empty(), "preloaded: nothing produced meanwhile");
        assert!((sustained(&samples) - 1_000.0).abs() < 1e-6);
    }

    #[test]
    fn the_final_commit_and_its_idle_tail_are_left_out() {
        // 1,000 records a second, work done at 3.2 s, final commit at 4.0 s.
        let samples =
            [s(0.0, 0, 3_200), s(1.0, 1_000, 3_200), s(2.0, 2_000, 3_200), s(3.0, 3_000, 3_200), s(4.0, 3_200, 3_200)];
        assert!((sustained(&samples) - 1_000.0).abs() < 1e-6, "{}", sustained(&samples));
    }

    #[test]
    fn a_short_run_falls_back_to_the_whole_time() {
        assert!((sustained(&[s(0.0, 0, 10), s(0.5, 10, 10)]) - 20.0).abs() < 1e-9);
        assert_eq!(sustained(&[]), 0.0);
        // Nearly everything in the first commit: the tail alone says little.
        let most_first = [s(0.0, 0, 200_000), s(1.0, 197_000, 200_000), s(2.0, 200_000, 200_000)];
        assert!((sustained(&most_first) - 100_000.0).abs() < 1e-6);
    }

    #[test]
    fn thinning_keeps_one_point_a_second_and_the_last() {
        let points: Vec<(f64, i64)> = (0..=12).map(|i| (i as f64 * 0.25, i)).collect();
        assert_eq!(thin(&points), [(0.0, 0), (1.0, 4), (2.0, 8), (3.0, 12)]);
        let odd: Vec<(f64, i64)> = vec![(0.0, 0), (0.6, 1)];
        assert_eq!(thin(&odd), odd);
    }
}
