//! [`ConfigError`]: why a pipeline file was refused, as a list of
//! [`Problem`]s, each with its path in the file and, when known, its line
//! and column.
//!
//! A config error is always the user's to fix and is never retried: vigil
//! refuses to start. This module only carries and prints problems; finding
//! them is `interpolate.rs`, the YAML parser and each kind's `validate.rs`.

use std::fmt::{self, Write as _};

/// One thing wrong with a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the pipeline, e.g. `detectors[1].velocity.window`; empty for
    /// syntax errors and `${VAR}` errors, which happen before the structure
    /// is known.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<u64>,
    /// 1-based column (in characters) in the file, when known.
    pub column: Option<u64>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl Problem {
    /// `file:line:col: path: message`, leaving out what is unknown. Control
    /// characters (which a quoted YAML value can hold) are escaped so a
    /// file cannot write terminal escapes through an error.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayProblem(file, self)
    }
}

struct DisplayProblem<'a>(&'a str, &'a Problem);

impl fmt::Display for DisplayProblem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DisplayProblem(file, p) = self;
        write_clean(f, file)?;
        match (p.line, p.column) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ => {}
        }
        f.write_str(": ")?;
        if !p.path.is_empty() {
            write_clean(f, &p.path)?;
            f.write_str(": ")?;
        }
        write_clean(f, &p.message)
    }
}

fn write_clean(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_debug())?;
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

/// A pipeline file that cannot be used: every problem found, one per line
/// when displayed, each prefixed with the file (and `line:col` where known).
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct ConfigError {
    file: String,
    problems: Vec<Problem>,
    #[source]
    io: Option<std::io::Error>,
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", p.display_in(file));
    }
    out
}

impl ConfigError {
    /// Problems found in `file` (never empty).
    pub(super) fn new(file: impl Into<String>, problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        Self { file: file.into(), problems, io: None }
    }

    /// The file could not be read.
    pub(super) fn read(file: impl Into<String>, err: std::io::Error) -> Self {
        Self {
            file: file.into(),
            problems: vec![Problem {
                path: String::new(),
                line: None,
                column: None,
                message: format!("cannot read the file: {err}"),
            }],
            io: Some(err),
        }
    }

    /// The file as it was named to `load` (or the label given to `load_str`).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every problem, in file order where lines are known.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str, line: Option<u64>, column: Option<u64>, message: &str) -> Problem {
        Problem { path: path.into(), line, column, message: message.into() }
    }

    #[test]
    fn displays_one_problem_per_line_with_what_is_known() {
        let err = ConfigError::new(
            "p.yaml",
            vec![
                problem("sink.alerts", Some(3), Some(11), "bad"),
                problem("", Some(1), Some(2), "syntax"),
                problem("name", None, None, "worse"),
            ],
        );
        assert_eq!(err.to_string(), "p.yaml:3:11: sink.alerts: bad\np.yaml:1:2: syntax\np.yaml: name: worse");
        assert_eq!(err.problems().len(), 3);
        assert_eq!(err.file(), "p.yaml");
    }

    #[test]
    fn control_characters_are_escaped() {
        let err = ConfigError::new("p.yaml", vec![problem("name", None, None, "got \u{1b}[31m")]);
        assert_eq!(err.to_string(), "p.yaml: name: got \\u{1b}[31m");
    }

    #[test]
    fn read_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = ConfigError::read("p.yaml", io);
        assert_eq!(err.to_string(), "p.yaml: cannot read the file: gone");
        assert!(std::error::Error::source(&err).is_some());
    }
}
