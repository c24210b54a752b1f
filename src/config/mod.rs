//! Pipeline files: the typed, validated description of one pipeline, and
//! [`load`], which produces it from a YAML file.
//!
//! Two kinds of file, each in a module of its own with the same layout
//! (`mod.rs` its types, `raw.rs` its shape as written, `validate.rs` its
//! rules, `tests.rs`): a streaming pipeline ([`Pipeline`], `source:`; see
//! [`stream`]) and a batch pipeline ([`BatchPipeline`], `schedule:`; see
//! [`batch`]). Their types are re-exported here, so users name them
//! `config::Pipeline`, `config::BatchPipeline`. [`load_any`] reads either
//! and tells them apart by their top-level keys; [`load`] reads a
//! streaming file only.
//!
//! Loading runs in three steps, each refusing the file with every problem
//! it can find:
//! 1. `${VAR}` / `${VAR:-default}` interpolation into the file's scalars,
//!    never its structure (`interpolate.rs`);
//! 2. strict parsing into the file's shape (the kind's `raw.rs`, its values
//!    wrapped with their locations as `spanned.rs` says): unknown keys,
//!    wrong types and YAML syntax stop here with one error naming line and
//!    column;
//! 3. validation (the kind's `validate.rs`, reporting through the shared
//!    `validator.rs`): defaults, ranges and cross-field rules, every problem
//!    reported at once with its path, e.g.
//!    `detectors[1].velocity.window: must be > 0 (got 0s)`.
//!
//! This module keeps what both kinds share: loading, the parse options and
//! parse errors in the file's terms, durations, decimals, interpolation,
//! what counts as a secret ([`secret`]) and [`ConfigError`]. The result holds plain values only (no locations, no
//! `Option` where a default exists), so the rest of vigil never re-checks a
//! pipeline. Deliberately not here: building Kafka clients or detectors
//! from these values, and checks that need a broker or a database (does
//! the topic exist, does the column exist); those belong to the components
//! that start.

pub mod batch;
mod decimal;
mod duration;
mod error;
mod interpolate;
pub mod secret;
mod spanned;
pub mod stream;
mod validator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use batch::{
    BatchPipeline, KafkaOutputConfig, PostgresConfig, ReadingsConfig, ResultsConfig, ScheduleConfig, TableName,
    TimeType,
};
pub use decimal::{decimal_from_f64, parse_decimal};
pub use duration::{display as display_duration, parse_duration, DurationError};
pub use error::{ConfigError, Problem};
pub use stream::{
    DecimalHandling, DetectorConfig, DetectorKind, EventTime, FormatConfig, Guarantee, HighAmountRule, Pipeline,
    RowsConfig, SchemaMode, SinkConfig, SourceConfig, SpendAnomalyConfig, StartFrom, StateConfig, VelocityRule,
    VelocityScoreConfig,
};

/// Reads, interpolates (from the process environment), parses and
/// validates the pipeline file at `path`.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::read(&label, err))?;
    // Not-UTF-8 values are replaced lossily rather than reported as unset.
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    load_inner(path.to_path_buf(), &label, &text, &env)
}

/// Like [`load`] for text already in memory; `file_label` names it in
/// errors (and becomes [`Pipeline::file`]), `env` looks variables up.
pub fn load_str(file_label: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Pipeline, ConfigError> {
    load_inner(PathBuf::from(file_label), file_label, text, &env)
}

fn load_inner(
    file: PathBuf,
    label: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, ConfigError> {
    let interpolated = interpolate::interpolate(text, env).map_err(|problems| ConfigError::new(label, problems))?;
    parse_stream(file, label, &interpolated)
}

fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // We print `file:line:col: message` ourselves.
        with_snippet: false,
    }
}

fn parse_stream(file: PathBuf, label: &str, interpolated: &interpolate::Interpolated) -> Result<Pipeline, ConfigError> {
    let raw: stream::raw::RawPipeline = serde_saphyr::from_str_with_options(&interpolated.text, parse_options())
        .map_err(|err| ConfigError::new(label, vec![syntax_problem(&err, &interpolated.columns, FileKind::Stream)]))?;
    stream::validate::validate(raw, file, &interpolated.columns).map_err(|problems| ConfigError::new(label, problems))
}

fn parse_batch(
    file: PathBuf,
    label: &str,
    interpolated: &interpolate::Interpolated,
) -> Result<BatchPipeline, ConfigError> {
    let raw: batch::raw::RawBatchPipeline = serde_saphyr::from_str_with_options(&interpolated.text, parse_options())
        .map_err(|err| ConfigError::new(label, vec![syntax_problem(&err, &interpolated.columns, FileKind::Batch)]))?;
    batch::validate::validate(raw, file, &interpolated.columns).map_err(|problems| ConfigError::new(label, problems))
}

/// A pipeline file of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineDef {
    /// A streaming pipeline (`source:`): Kafka in, detectors, alerts out.
    Stream(Pipeline),
    /// A batch pipeline (`schedule:`): a periodic job against PostgreSQL.
    Batch(BatchPipeline),
}

impl PipelineDef {
    /// The pipeline's `name`.
    pub fn name(&self) -> &str {
        match self {
            PipelineDef::Stream(p) => &p.name,
            PipelineDef::Batch(p) => &p.name,
        }
    }
}

/// The two kinds of pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Stream,
    Batch,
}

/// Reads, interpolates, parses and validates a pipeline file of either
/// kind. The kind comes from the top-level keys: `source:` makes a
/// streaming pipeline, `schedule:` a batch pipeline; a file with neither is
/// a batch pipeline if it has one of `postgres:`, `readings:` or
/// `results:`, else a streaming one (and is refused as such, with the keys
/// it lacks named). A file with both is refused.
pub fn load_any(path: &Path) -> Result<PipelineDef, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::read(&label, err))?;
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    load_any_inner(path.to_path_buf(), &label, &text, &env)
}

/// Like [`load_any`] for text already in memory (see [`load_str`]).
pub fn load_any_str(
    file_label: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PipelineDef, ConfigError> {
    load_any_inner(PathBuf::from(file_label), file_label, text, &env)
}

fn load_any_inner(
    file: PathBuf,
    label: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineDef, ConfigError> {
    let interpolated = interpolate::interpolate(text, env).map_err(|problems| ConfigError::new(label, problems))?;
    match kind_of(&interpolated).map_err(|problem| ConfigError::new(label, vec![problem]))? {
        FileKind::Stream => parse_stream(file, label, &interpolated).map(PipelineDef::Stream),
        FileKind::Batch => parse_batch(file, label, &interpolated).map(PipelineDef::Batch),
    }
}

/// The kind of a file, from its top-level keys (see [`load_any`]). A file
/// that is not a mapping at all is left to the streaming parser, whose
/// syntax errors then name the problem.
///
/// This parses the file a second time (the typed parse follows), on
/// purpose: the kind (and the "not both" refusal) depends on keys
/// anywhere in the file, while a typed parse stops at the first bad value
/// and cannot read on past it (serde-saphyr reads values as they come). In
/// one parse, `name: ~` before `source:` and `schedule:` would be refused
/// at `name` instead of as both kinds, and a bad `postgres:` value before
/// `source:` as a bad value instead of as a key a streaming file lacks.
fn kind_of(interpolated: &interpolate::Interpolated) -> Result<FileKind, Problem> {
    use serde::de::IgnoredAny;
    let Ok(keys) = serde_saphyr::from_str_with_options::<BTreeMap<String, spanned::S<IgnoredAny>>>(
        &interpolated.text,
        parse_options(),
    ) else {
        return Ok(FileKind::Stream);
    };
    match (keys.get("source"), keys.get("schedule")) {
        (Some(_), Some(schedule)) => {
            let at = schedule.referenced;
            let (line, column) = if at.line() == 0 {
                (None, None)
            } else {
                (Some(at.line()), Some(interpolated.columns.original(at.line(), at.column())))
            };
            Err(Problem {
                path: "schedule".into(),
                line,
                column,
                message: "a pipeline file is either a streaming pipeline (`source:`) or a batch pipeline \
                          (`schedule:`), not both; put them in two files"
                    .into(),
            })
        }
        (Some(_), None) => Ok(FileKind::Stream),
        (None, Some(_)) => Ok(FileKind::Batch),
        (None, None) if ["postgres", "readings", "results"].iter().any(|k| keys.contains_key(*k)) => {
            Ok(FileKind::Batch)
        }
        (None, None) => Ok(FileKind::Stream),
    }
}

/// A parse error as a problem: its location mapped back to the file and
/// its message in the file's terms.
fn syntax_problem(err: &serde_saphyr::Error, columns: &interpolate::ColumnMap, kind: FileKind) -> Problem {
    let (line, column) = match err.location() {
        Some(at) if at.line() > 0 => (Some(at.line()), Some(columns.original(at.line(), at.column()))),
        _ => (None, None),
    };
    Problem { path: String::new(), line, column, message: syntax_message(err.without_snippet(), kind) }
}

/// serde-saphyr words a few errors for Rust developers (`use
/// Option<String>`, `invalid u32`); say those in the file's terms, and
/// suggest the closest key for an unknown one. Anything else is the
/// parser's own message, without its location suffix.
fn syntax_message(err: &serde_saphyr::Error, kind: FileKind) -> String {
    use serde_saphyr::{Error as E, MessageFormatter as _};
    match err {
        E::Eof { .. } => match kind {
            FileKind::Stream => "the file ends before the pipeline does (a pipeline needs name, \
                             source, format, rows, detectors and sink)"
                .into(),
            FileKind::Batch => "the file ends before the pipeline does (a batch pipeline needs name, \
                            schedule, postgres, readings and results)"
                .into(),
        },
        E::NullIntoString { .. } => "a value is required here (got nothing or null)".into(),
        E::MultipleDocuments { .. } => "a pipeline file holds one YAML document (found a second `---`)".into(),
        E::InvalidScalar { ty: "u32", .. } => "expected a whole number from 0 to 4294967295".into(),
        E::InvalidScalar { ty: "u64" | "usize", .. } => "expected a whole number ≥ 0".into(),
        E::Unexpected { expected: "string scalar", .. } => "expected a single value, not a list or a mapping".into(),
        E::DuplicateMappingKey { key: Some(key), .. } => format!("duplicate key `{key}`"),
        E::DuplicateMappingKey { key: None, .. } => "duplicate key".into(),
        E::SerdeUnknownField { field, expected, .. } => {
            let hint = closest(field, expected).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            format!("unknown key `{field}`{hint}; expected one of {}", expected.join(", "))
        }
        E::SerdeMissingField { field, .. } => format!("missing required key `{field}`"),
        other => serde_saphyr::DefaultMessageFormatter.format_message(other).into_owned(),
    }
}

/// The candidate nearest to `word` by edit distance (a transposition
/// counts as one edit), if it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
