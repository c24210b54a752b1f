//! vigil as a consumer group of processes, disrupted while it works
//! (`loadtest run --instances N --chaos kill,join,leave,lapse`).
//!
//! The moments are seeded and bounded: `--disruptions` of them, one in each
//! equal slice of the run's progress (records committed over records due),
//! so every one lands while there is work left and none follows another
//! before the group has moved on. The kinds come in a seeded order in which
//! each listed kind appears before any repeats, so a run of as many
//! disruptions as kinds has each; which process each one hits comes from
//! the same seed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use super::usage::Usage;
use super::vigil::Vigil;

/// The consumer session the processes run with under chaos: a killed or
/// frozen process's partitions move after this long (the broker's least).
pub const SESSION: Duration = Duration::from_secs(6);
/// A frozen process stays stopped this much past its session.
const FROZEN_PAST_SESSION: Duration = Duration::from_secs(4);
/// Disruptions are never closer than this, so the group settles between.
const LEAST_GAP: Duration = Duration::from_secs(3);
/// Progress of the run (committed over due) the disruptions spread over.
const SPREAD: (f64, f64) = (0.1, 0.9);

/// What may happen to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disruption {
    /// SIGKILL, and a new process started in its place (a crash under a
    /// supervisor that restarts it).
    Kill,
    /// Another process joins the group.
    Join,
    /// A process stops cleanly (SIGTERM) while another runs on.
    Leave,
    /// SIGSTOP past the consumer session, then SIGCONT: the group moves the
    /// partitions away from a process that comes back believing it owns them.
    Lapse,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// vigil processes at the start, one consumer group.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// Disrupt the processes while they work (comma-separated): kill, join,
    /// leave, lapse. Repeated alerts (same id) then pass verification, as
    /// at-least-once delivery allows; missing or unexpected ones fail.
    #[arg(long, value_delimiter = ',')]
    pub chaos: Vec<Disruption>,
    /// How many disruptions, at seeded moments spread over the run.
    #[arg(long, default_value_t = 3)]
    pub disruptions: usize,
    /// The seed of the moments and of what each one hits (default: the
    /// workload's).
    #[arg(long)]
    pub chaos_seed: Option<u64>,
}

impl ChaosArgs {
    pub fn enabled(&self) -> bool {
        !self.chaos.is_empty()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.instances == 0 {
            bail!("--instances must be at least 1");
        }
        if self.enabled() && self.disruptions == 0 {
            bail!("--chaos needs --disruptions of at least 1");
        }
        Ok(())
    }
}

/// One disruption, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Since the first process started.
    pub seconds: f64,
    pub kind: Disruption,
    /// The process it hit (`vigil-N`, as its log is named); none for a join.
    pub hit: Option<usize>,
    /// The process started in its place (kill) or that joined.
    pub started: Option<usize>,
    /// Records committed by the group at that moment.
    pub committed: i64,
}

/// The planned disruptions and what has come of them.
struct Plan {
    kinds: Vec<Disruption>,
    /// The kind of each disruption still to come, in order.
    order: Vec<Disruption>,
    /// Progress (0..1) at which each comes due, ascending.
    moments: Vec<f64>,
    rng: SmallRng,
    seed: u64,
    /// Records the run commits in all.
    due: u64,
    events: Vec<Event>,
    last: Option<Instant>,
}

impl Plan {
    fn new(args: &ChaosArgs, seed: u64, due: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = args.disruptions;
        let slice = (SPREAD.1 - SPREAD.0) / n as f64;
        // The middle half of each slice: neighbours a half slice apart at least.
        let moments = (0..n).map(|k| SPREAD.0 + slice * (k as f64 + 0.25 + 0.5 * rng.random::<f64>())).collect();
        let mut kinds = args.chaos.clone();
        kinds.sort_by_key(|k| *k as u8);
        kinds.dedup();
        // Rounds of every kind, each round shuffled.
        let mut order = Vec::new();
        while order.len() < n {
            let mut round = kinds.clone();
            round.shuffle(&mut rng);
            order.extend(round);
        }
        order.truncate(n);
        order.reverse();
        Plan { kinds, order, moments, rng, seed, due, events: Vec::new(), last: None }
    }

    /// The next disruption is due with `committed` records committed.
    fn due_at(&self, committed: i64) -> bool {
        let Some(&moment) = self.moments.get(self.events.len()) else { return false };
        let progress = committed.max(0) as f64 / self.due.max(1) as f64;
        // Once everything is committed a disruption would prove nothing.
        progress >= moment && progress < 1.0 && self.last.is_none_or(|l| l.elapsed() >= LEAST_GAP)
    }

    /// The next kind in the order that can happen to `running` processes
    /// (a leave needs two; a later kind comes forward); a join when none can.
    fn pick(&mut self, running: usize) -> Disruption {
        let possible = |k: &Disruption| *k != Disruption::Leave || running >= 2;
        match self.order.iter().rposition(possible) {
            Some(i) => self.order.remove(i),
            None => {
                self.order.pop();
                Disruption::Join
            }
        }
    }
}

struct Process {
    number: usize,
    /// Its `--instance`: a process started in place of a killed one takes
    /// the killed one's, as a supervisor restarting it would.
    instance: String,
    vigil: Vigil,
    /// Stopped with SIGSTOP until then.
    frozen_until: Option<Instant>,
}

/// The vigil processes of a run, one consumer group.
pub struct Fleet {
    binary: PathBuf,
    pipeline: PathBuf,
    dir: PathBuf,
    running: Vec<Process>,
    started: usize,
    since: Instant,
    /// CPU seconds of the processes gone; the highest peak RSS of any.
    gone: Usage,
    plan: Option<Plan>,
}

impl Fleet {
    /// Starts `args.instances` processes; `seed`: the chaos seed when none
    /// is given; `due`: records the run will commit.
    pub fn start(
        binary: &Path,
        pipeline: &Path,
        dir: &Path,
        args: &ChaosArgs,
        seed: u64,
        due: u64,
    ) -> anyhow::Result<Fleet> {
        let plan = args.enabled().then(|| Plan::new(args, args.chaos_seed.unwrap_or(seed), due));
        let mut fleet = Fleet {
            binary: binary.to_owned(),
            pipeline: pipeline.to_owned(),
            dir: dir.to_owned(),
            running: Vec::new(),
            started: 0,
            since: Instant::now(),
            gone: Usage::default(),
            plan,
        };
        for _ in 0..args.instances {
            fleet.start_one(None)?;
        }
        Ok(fleet)
    }

    /// Starts a process as `instance`, or as a new one.
    fn start_one(&mut self, instance: Option<String>) -> anyhow::Result<usize> {
        self.started += 1;
        let number = self.started;
        let instance = instance.unwrap_or_else(|| format!("loadtest-{number}"));
        let vigil = Vigil::start(&self.binary, &self.pipeline, &self.log(number), &instance)?;
        self.running.push(Process { number, instance, vigil, frozen_until: None });
        Ok(number)
    }

    /// Where process `number` writes its output.
    pub fn log(&self, number: usize) -> PathBuf {
        self.dir.join(format!("vigil-{number}.log"))
    }

    /// Where every process's output is, for an error message.
    pub fn logs(&self) -> String {
        match self.started {
            1 => self.log(1).display().to_string(),
            n => format!("{}/vigil-{{1..{n}}}.log", self.dir.display()),
        }
    }

    /// Fails when a process has exited by itself.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.running {
            p.vigil.check_running().with_context(|| format!("vigil-{}", p.number))?;
        }
        Ok(())
    }

    /// After each look at the group's progress (`committed` records):
    /// thaws a frozen process whose time is up, and disrupts one when the
    /// next moment is due; what it did, to say.
    pub fn tend(&mut self, committed: i64) -> anyhow::Result<Option<String>> {
        for p in &mut self.running {
            if p.frozen_until.is_some_and(|t| Instant::now() >= t) {
                p.vigil.signal("CONT")?;
                p.frozen_until = None;
            }
        }
        // A frozen process is left alone until it is thawed.
        let awake: Vec<usize> = (0..self.running.len()).filter(|&i| self.running[i].frozen_until.is_none()).collect();
        let Some(plan) = self.plan.as_mut().filter(|plan| !awake.is_empty() && plan.due_at(committed)) else {
            return Ok(None);
        };
        let kind = plan.pick(self.running.len());
        let target = awake[plan.rng.random_range(0..awake.len())];
        let hit = (kind != Disruption::Join).then(|| self.running[target].number);
        let started = match kind {
            Disruption::Kill => {
                let mut gone = self.running.remove(target);
                self.gone.add(&gone.vigil.usage());
                gone.vigil.kill();
                Some(self.start_one(Some(gone.instance))?)
            }
            Disruption::Join => Some(self.start_one(None)?),
            Disruption::Leave => {
                let mut gone = self.running.remove(target);
                self.gone.add(&gone.vigil.usage());
                gone.vigil.stop();
                None
            }
            Disruption::Lapse => {
                let p = &mut self.running[target];
                p.vigil.signal("STOP")?;
                p.frozen_until = Some(Instant::now() + SESSION + FROZEN_PAST_SESSION);
                None
            }
        };
        let event = Event { seconds: self.since.elapsed().as_secs_f64(), kind, hit, started, committed };
        let said = format!("chaos: {}", describe(&event));
        if let Some(plan) = self.plan.as_mut() {
            plan.events.push(event);
            plan.last = Some(Instant::now());
        }
        Ok(Some(said))
    }

    /// A metric summed over the processes running now.
    pub fn metric(&self, name: &str) -> f64 {
        self.running.iter().map(|p| p.vigil.metric(name)).sum()
    }

    /// CPU seconds of every process that ran; the highest peak RSS.
    pub fn usage(&self) -> Usage {
        let mut usage = self.gone;
        for p in &self.running {
            usage.add(&p.vigil.usage());
        }
        usage
    }

    /// Stops every process (a frozen one is woken first).
    pub fn stop(&mut self) {
        for p in &mut self.running {
            if p.frozen_until.take().is_some() {
                let _ = p.vigil.signal("CONT");
            }
            p.vigil.stop();
        }
    }

    /// Fails when the run ended before every planned disruption happened:
    /// a chaos run that disrupted less than it says proves less.
    pub fn check_disrupted(&self) -> anyhow::Result<()> {
        match &self.plan {
            Some(plan) if plan.events.len() < plan.moments.len() => bail!(
                "the run ended after {} of {} disruptions: give it more --records or a lower --rate",
                plan.events.len(),
                plan.moments.len()
            ),
            _ => Ok(()),
        }
    }

    /// Repeated alerts pass: a disrupted at-least-once pipeline may send
    /// an alert again (with the same id).
    pub fn disrupted(&self) -> bool {
        self.plan.is_some()
    }

    pub fn json(&self) -> Value {
        let chaos = self.plan.as_ref().map(|plan| {
            json!({
                "seed": plan.seed,
                "kinds": plan.kinds,
                "planned_at_progress": plan.moments,
                "events": plan.events,
            })
        });
        json!({ "processes_started": self.started, "chaos": chaos })
    }

    /// One line per disruption, for the summary.
    pub fn summary(&self) -> Option<String> {
        let plan = self.plan.as_ref()?;
        let lines: Vec<String> = plan.events.iter().map(|e| format!("  {}", describe(e))).collect();
        Some(format!("chaos (seed {}): {} disruptions\n{}", plan.seed, plan.events.len(), lines.join("\n")))
    }
}

fn describe(e: &Event) -> String {
    let name = |n: Option<usize>| n.map_or_else(|| "vigil-?".to_owned(), |n| format!("vigil-{n}"));
    let (hit, started) = (name(e.hit), name(e.started));
    let what = match e.kind {
        Disruption::Kill => format!("killed {hit} (SIGKILL), started {started}"),
        Disruption::Join => format!("{started} joined"),
        Disruption::Leave => format!("{hit} left (SIGTERM)"),
        Disruption::Lapse => format!(
            "froze {hit} (SIGSTOP) for {} s, past its {} s session",
            (SESSION + FROZEN_PAST_SESSION).as_secs(),
            SESSION.as_secs()
        ),
    };
    format!("{what} at {:.1} s, {} records committed", e.seconds, e.committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(chaos: &[Disruption], disruptions: usize) -> ChaosArgs {
        ChaosArgs { instances: 2, chaos: chaos.to_vec(), disruptions, chaos_seed: None }
    }

    #[test]
    fn moments_are_seeded_spread_and_bounded() {
        let a = Plan::new(&args(&[Disruption::Kill], 4), 7, 1_000);
        let b = Plan::new(&args(&[Disruption::Kill], 4), 7, 1_000);
        let c = Plan::new(&args(&[Disruption::Kill], 4), 8, 1_000);
        assert_eq!(a.moments, b.moments);
        assert_ne!(a.moments, c.moments);
        assert_eq!(a.moments.len(), 4);
        // One in the middle half of each fifth of 0.1..0.9.
        for (k, m) in a.moments.iter().enumerate() {
            let lo = 0.1 + 0.2 * (k as f64 + 0.25);
            assert!((lo..=lo + 0.1).contains(m), "moment {k} at {m}");
        }
    }

    #[test]
    fn a_disruption_waits_for_its_moment_and_the_gap() {
        let mut plan = Plan::new(&args(&[Disruption::Join], 2), 1, 1_000);
        assert!(!plan.due_at(0));
        let first = (plan.moments[0] * 1_000.0).ceil() as i64;
        assert!(plan.due_at(first));
        plan.events.push(Event { seconds: 0.0, kind: Disruption::Join, hit: None, started: Some(3), committed: 0 });
        plan.last = Some(Instant::now());
        assert!(!plan.due_at(999), "too soon after the last one");
        plan.last = Some(Instant::now() - LEAST_GAP);
        assert!(plan.due_at(999));
        assert!(!plan.due_at(1_000), "nothing left to disrupt");
        plan.events.push(plan.events[0].clone());
        assert!(!plan.due_at(999), "none left");
    }

    #[test]
    fn each_listed_kind_comes_before_any_repeats() {
        let all = [Disruption::Kill, Disruption::Join, Disruption::Leave, Disruption::Lapse];
        for seed in 0..20 {
            let mut plan = Plan::new(&args(&all, 6), seed, 1_000);
            let first: Vec<Disruption> = (0..4).map(|_| plan.pick(3)).collect();
            assert!(all.iter().all(|k| first.contains(k)), "seed {seed}: {first:?}");
            assert_eq!((0..2).map(|_| plan.pick(3)).filter(|k| all.contains(k)).count(), 2);
        }
        let a: Vec<_> = {
            let mut p = Plan::new(&args(&all, 4), 9, 1);
            (0..4).map(|_| p.pick(3)).collect()
        };
        let b: Vec<_> = {
            let mut p = Plan::new(&args(&all, 4), 9, 1);
            (0..4).map(|_| p.pick(3)).collect()
        };
        assert_eq!(a, b, "seeded");
    }

    #[test]
    fn a_leave_needs_another_process() {
        let mut plan = Plan::new(&args(&[Disruption::Leave], 2), 1, 1_000);
        assert_eq!(plan.pick(1), Disruption::Join);
        assert_eq!(plan.pick(2), Disruption::Leave);
        // A later kind comes forward, and the leave waits its turn.
        let mut mixed = Plan::new(&args(&[Disruption::Leave, Disruption::Kill], 2), 1, 1_000);
        assert_eq!(mixed.pick(1), Disruption::Kill);
        assert_eq!(mixed.pick(2), Disruption::Leave);
    }
}
