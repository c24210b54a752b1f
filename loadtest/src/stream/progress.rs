//! Progress of a long phase: a bar on stderr when it is a terminal
//! (indicatif hides its bars by itself otherwise), and a plain line every
//! few seconds when it is not, so CI logs still show a run moving.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: ProgressBar,
    label: String,
    total: Option<u64>,
    /// Plain lines instead of a bar; None: silent.
    plain: Option<Instant>,
    started: Instant,
    pos: u64,
}

impl Progress {
    /// A phase of `total` records (None: not known in advance).
    pub fn new(label: &str, total: Option<u64>) -> Self {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{prefix:>12} [{bar:32}] {human_pos}/{human_len} {per_sec} eta {eta} {msg}"
        } else {
            "{prefix:>12} {spinner} {human_pos} {per_sec} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_owned());
        let plain = (!std::io::stderr().is_terminal()).then(Instant::now);
        Progress { bar, label: label.to_owned(), total, plain, started: Instant::now(), pos: 0 }
    }

    /// Shows nothing (a phase whose progress another one reports).
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            label: String::new(),
            total: None,
            plain: None,
            started: Instant::now(),
            pos: 0,
        }
    }

    /// `pos` records done; `note` adds to the line (called only when a
    /// line is due).
    pub fn update(&mut self, pos: u64, note: impl FnOnce() -> String) {
        self.pos = pos;
        self.bar.set_position(pos);
        match &mut self.plain {
            Some(last) if last.elapsed() >= PLAIN_EVERY => {
                *last = Instant::now();
                eprintln!("{}", self.line(&note()));
            }
            Some(_) => {}
            None if !self.bar.is_hidden() => self.bar.set_message(note()),
            None => {}
        }
    }

    /// A line of its own, above the bar while one is drawn.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("loadtest: {}: {line}", self.label));
    }

    pub fn finish(&mut self) {
        self.bar.finish();
        if self.plain.is_some() {
            eprintln!("{}", self.line("done"));
        }
    }

    fn line(&self, note: &str) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
        let rate = self.pos as f64 / seconds.max(1e-3);
        format!("loadtest: {}: {}{of} ({rate:.0}/s, {seconds:.0} s) {note}", self.label, self.pos).trim_end().to_owned()
    }
}
