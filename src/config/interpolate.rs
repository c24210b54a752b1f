//! `${VAR}` and `${VAR:-default}` in a pipeline file's text, replaced from
//! the environment before the YAML is parsed.
//!
//! Rules: `$$` is a literal `$`; a `$` not followed by `{` or `$` is kept as
//! it is; lines whose first non-blank character is `#` are copied untouched
//! (so commented-out examples need no variables). `${VAR:-default}` uses the
//! default when VAR is unset or empty, as the shell does. A variable that is
//! unset and has no default is an error naming its line and column; every
//! such error in the file is reported at once.
//!
//! Deliberately not done: no nesting (`${A:-${B}}`), no other shell forms
//! (`${A-x}`, `${A:?}`), no quoting or escaping of substituted values
//! (they become YAML text, as in docker-compose), and values holding a line
//! break are refused so line numbers stay those of the file. Trailing
//! comments (`key: v  # ${X}`) are interpolated: telling them apart needs a
//! YAML parser.
//!
//! Substitutions shift columns; [`ColumnMap`] maps a column of the
//! interpolated text back to the file's, so errors point at the file.

use std::collections::HashMap;

use super::Problem;

/// The interpolated text and how to map its columns back to the file.
#[derive(Debug)]
pub(super) struct Interpolated {
    pub text: String,
    pub columns: ColumnMap,
}

/// One replaced span on a line, in 1-based character columns: the source
/// span `[src_start, src_end)` became the output span `[out_start, out_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shift {
    src_start: u64,
    src_end: u64,
    out_start: u64,
    out_end: u64,
}

/// Maps (line, column) positions of the interpolated text back to the
/// original file. Lines never move (values with line breaks are refused);
/// only columns after a substitution on the same line do.
#[derive(Debug, Default)]
pub(super) struct ColumnMap {
    lines: HashMap<u64, Vec<Shift>>,
}

impl ColumnMap {
    /// The file's column for `column` (1-based, characters) of `line` in the
    /// interpolated text. A column inside a substituted value maps to the
    /// `$` that produced it.
    pub fn original(&self, line: u64, column: u64) -> u64 {
        let Some(shifts) = self.lines.get(&line) else {
            return column;
        };
        let mut mapped = column;
        for s in shifts {
            if column >= s.out_end {
                mapped = s.src_end + (column - s.out_end);
            } else if column >= s.out_start {
                mapped = s.src_start;
            } else {
                break;
            }
        }
        mapped
    }
}

/// Replaces `${VAR}`, `${VAR:-default}` and `$$` in `text`, looking
/// variables up with `env`. On failure returns every problem found, each
/// with its line and column (path empty: this happens before parsing).
pub(super) fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut columns = ColumnMap::default();
    let mut problems = Vec::new();

    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index as u64 + 1;
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut shifts = Vec::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        // 1-based column of the next character written to `out` on this line.
        let mut out_col: u64 = 1;
        let problem = |column: usize, message: String| Problem {
            path: String::new(),
            line: Some(line_no),
            column: Some(column as u64 + 1),
            message,
        };
        while i < chars.len() {
            let c = chars[i];
            if c != '$' {
                out.push(c);
                out_col += 1;
                i += 1;
                continue;
            }
            match chars.get(i + 1) {
                Some('$') => {
                    out.push('$');
                    shifts.push(Shift {
                        src_start: i as u64 + 1,
                        src_end: i as u64 + 3,
                        out_start: out_col,
                        out_end: out_col + 1,
                    });
                    out_col += 1;
                    i += 2;
                }
                Some('{') => {
                    let Some(close) = chars[i + 2..].iter().position(|&c| c == '}') else {
                        problems.push(problem(i, "`${` without a closing `}` (write $$ for a literal $)".into()));
                        break;
                    };
                    let body: String = chars[i + 2..i + 2 + close].iter().collect();
                    let end = i + 2 + close + 1; // just past the `}`
                    match resolve(&body, env) {
                        Ok(value) => {
                            let len = value.chars().count() as u64;
                            out.push_str(&value);
                            shifts.push(Shift {
                                src_start: i as u64 + 1,
                                src_end: end as u64 + 1,
                                out_start: out_col,
                                out_end: out_col + len,
                            });
                            out_col += len;
                        }
                        Err(message) => problems.push(problem(i, message)),
                    }
                    i = end;
                }
                _ => {
                    out.push('$');
                    out_col += 1;
                    i += 1;
                }
            }
        }
        if !shifts.is_empty() {
            columns.lines.insert(line_no, shifts);
        }
    }

    if problems.is_empty() {
        Ok(Interpolated { text: out, columns })
    } else {
        Err(problems)
    }
}

/// The value of one `${...}` body (`VAR` or `VAR:-default`).
fn resolve(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    if !is_variable_name(name) {
        return Err(format!(
            "`${{{body}}}`: expected ${{NAME}} or ${{NAME:-default}}, NAME made of letters, digits and _ (write $$ for a literal $)"
        ));
    }
    let value = match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
        (Some(value), _) => value,
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return Err(format!(
                "environment variable {name} is not set and `${{{name}}}` has no default (set it, or write ${{{name}:-value}})"
            ))
        }
    };
    if value.contains(['\n', '\r']) {
        return Err(format!(
            "`${{{body}}}`: the value holds a line break; values substituted into a pipeline file must be one line"
        ));
    }
    Ok(value)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<String, Vec<Problem>> {
        interpolate(text, &env_with(vars)).map(|i| i.text)
    }

    #[test]
    fn set_variable_replaces() {
        assert_eq!(run("brokers: ${B}\n", &[("B", "k1:9092,k2:9092")]).unwrap(), "brokers: k1:9092,k2:9092\n");
    }

    #[test]
    fn default_applies_when_unset_or_empty() {
        let text = "brokers: ${B:-127.0.0.1:9092}\n";
        assert_eq!(run(text, &[]).unwrap(), "brokers: 127.0.0.1:9092\n");
        assert_eq!(run(text, &[("B", "")]).unwrap(), "brokers: 127.0.0.1:9092\n");
        assert_eq!(run(text, &[("B", "k:1")]).unwrap(), "brokers: k:1\n");
        // An empty default is a default.
        assert_eq!(run("a: '${B:-}'\n", &[]).unwrap(), "a: ''\n");
        // Set but empty, no default: empty (validation judges the value).
        assert_eq!(run("a: '${B}'\n", &[("B", "")]).unwrap(), "a: ''\n");
    }

    #[test]
    fn unset_without_default_names_line_column_and_variable() {
        let problems = run("name: x\nsource:\n  brokers: ${KAFKA_BROKERS}\n", &[]).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.line, p.column), (Some(3), Some(12)));
        assert!(p.message.contains("KAFKA_BROKERS"), "{}", p.message);
        assert!(p.message.contains("not set"), "{}", p.message);
        assert!(p.path.is_empty());
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let problems = run("a: ${A}\nb: x ${B} ${C}\n", &[("B", "b")]).unwrap_err();
        let found: Vec<_> = problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(found, [(Some(1), Some(4)), (Some(2), Some(11))]);
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(run("a: $${B}\n", &[]).unwrap(), "a: ${B}\n");
        assert_eq!(run("a: 5$$\n", &[]).unwrap(), "a: 5$\n");
        // A lone $ stays.
        assert_eq!(run("a: $5 and $x\n", &[]).unwrap(), "a: $5 and $x\n");
    }

    #[test]
    fn full_line_comments_are_skipped() {
        let text = "# brokers: ${UNSET}\n  # also ${UNSET} and $$\na: 1\n";
        assert_eq!(run(text, &[]).unwrap(), text);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in ["a: ${B\n", "a: ${}\n", "a: ${1B}\n", "a: ${B-x}\n", "a: ${B:?x}\n"] {
            let problems = run(bad, &[("B", "b")]).unwrap_err();
            assert_eq!(problems[0].column, Some(4), "{bad:?}");
        }
    }

    #[test]
    fn line_breaks_in_values_are_refused() {
        let problems = run("a: ${B}\n", &[("B", "x\ny: 1")]).unwrap_err();
        assert!(problems[0].message.contains("line break"));
    }

    #[test]
    fn default_may_hold_colons_and_dollars() {
        assert_eq!(run("a: ${B:-x:-y$z}\n", &[]).unwrap(), "a: x:-y$z\n");
    }

    #[test]
    fn columns_map_back_to_the_file() {
        // `${B:-127.0.0.1:9092}` (20 chars) becomes `127.0.0.1:9092` (14).
        let i = interpolate("b: ${B:-127.0.0.1:9092} x $$y\n", &env_with(&[])).unwrap();
        assert_eq!(i.text, "b: 127.0.0.1:9092 x $y\n");
        let m = &i.columns;
        assert_eq!(m.original(1, 1), 1);
        assert_eq!(m.original(1, 4), 4); // start of the value -> the `$`
        assert_eq!(m.original(1, 10), 4); // inside the value -> the `$`
        assert_eq!(m.original(1, 19), 25); // the `x`
        assert_eq!(m.original(1, 21), 27); // the `$` of `$$`
        assert_eq!(m.original(1, 22), 29); // the `y`
        assert_eq!(m.original(2, 7), 7); // untouched line
    }
}
