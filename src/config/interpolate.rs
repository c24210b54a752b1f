//! `${VAR}` and `${VAR:-default}` in a pipeline file, replaced from the
//! environment inside the file's scalars (values, and keys), never in its
//! text: a value becomes exactly the text of its scalar, or part of it,
//! whatever it holds, so no `#`, `: `, `,`, quote or leading `&`, `*`, `[`
//! in it can make a comment, a key, a list or an anchor.
//!
//! How: the text, with every `${...}` and `$$` masked (`${` is not valid
//! YAML in a flow collection), is parsed into scalars and their spans by
//! serde-saphyr's own parser. A reference inside a scalar is substituted;
//! any other (in a comment) is left as written. The scalar is written back
//! in place, on its line: plain if the result is a number, a duration or a
//! word (`50`, `4000.00`, `60s`, `true`), so YAML types it as if written
//! there; else double-quoted with its content escaped, a string.
//!
//! Rules: `$$` is a literal `$` (`$${X}` a literal `${X}`); a `$` not
//! followed by `{` or `$` is kept. `${VAR:-default}` uses the default when
//! VAR is unset or empty, as the shell does. An unset variable without a
//! default is an error at its `$`; every such error is reported at once.
//!
//! Deliberately not done: no nesting (`${A:-${B}}`), no other shell forms
//! (`${A-x}`, `${A:?}`). Refused: a reference in a scalar written over
//! several lines (a `|` or `>` block, a folded one) and a value holding a
//! line break, so line numbers stay those of the file. A rewritten scalar
//! may change length; [`ColumnMap`] maps columns back to the file's.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError};

use super::Problem;

/// The interpolated text and how to map its columns back to the file.
#[derive(Debug)]
pub(super) struct Interpolated {
    pub text: String,
    pub columns: ColumnMap,
}

/// One rewritten scalar on a line, in 1-based character columns: the
/// file's span `[src_start, src_end)` became the output span
/// `[out_start, out_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shift {
    src_start: u64,
    src_end: u64,
    out_start: u64,
    out_end: u64,
}

/// Maps (line, column) positions of the interpolated text back to the
/// original file. Lines never move (values with line breaks are refused);
/// only columns after a rewritten scalar on the same line do.
#[derive(Debug, Default)]
pub(super) struct ColumnMap {
    lines: HashMap<u64, Vec<Shift>>,
}

impl ColumnMap {
    /// The file's column for `column` (1-based, characters) of `line` in the
    /// interpolated text. A column inside a rewritten scalar maps to the
    /// scalar's first column.
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

/// Replaces `${VAR}`, `${VAR:-default}` and `$$` in the scalars of
/// `text`, looking variables up with `env`. On failure returns every
/// problem found, each with its line and column (path empty: this happens
/// before the structure is known), or the YAML syntax error that stopped
/// the search for scalars.
pub(super) fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, Vec<Problem>> {
    let chars: Vec<char> = text.chars().collect();
    let references = find_references(&chars);
    if references.is_empty() {
        return Ok(Interpolated { text: text.to_owned(), columns: ColumnMap::default() });
    }
    let scalars = scalars(&masked(&chars, &references)).map_err(|problem| vec![problem])?;

    let mut problems = Vec::new();
    let mut rewrites = Vec::new();
    for (scalar, inside) in by_scalar(&scalars, &references) {
        match rewrite(scalar, &chars, inside, env) {
            Ok(text) => rewrites.push((scalar, text)),
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(apply(&chars, &rewrites))
    } else {
        Err(problems)
    }
}

/// A `$` construct of the file.
#[derive(Debug)]
struct Reference {
    /// Its characters, as offsets in the file's characters: `[start, end)`.
    start: usize,
    end: usize,
    /// 1-based line and column (characters) of its `$`.
    line: u64,
    column: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// `$$`, or `$${...}`: this literal text.
    Literal(String),
    /// `${...}`: its body, `NAME` or `NAME:-default`.
    Variable(String),
    /// `${` without a `}` on its line.
    Unclosed,
}

impl Reference {
    /// The text that replaces it.
    fn value(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match &self.kind {
            Kind::Literal(text) => Ok(text.clone()),
            Kind::Variable(body) => resolve(body, env),
            Kind::Unclosed => Err("`${` without a closing `}` (write $$ for a literal $)".into()),
        }
    }

    fn problem(&self, message: String) -> Problem {
        Problem { path: String::new(), line: Some(self.line), column: Some(self.column), message }
    }
}

/// Every `$$`, `${...}` and unclosed `${` of the file, in order. A
/// reference's `}` is the first one after it on its line.
fn find_references(chars: &[char]) -> Vec<Reference> {
    // The first `}` at or after `from`, on the same line.
    let closing =
        |from: usize| chars.get(from..)?.iter().take_while(|&&c| c != '\n').position(|&c| c == '}').map(|p| from + p);
    let mut found = Vec::new();
    let (mut line, mut line_start) = (1, 0);
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\n' {
            line += 1;
            line_start = i + 1;
        }
        if chars[i] != '$' {
            i += 1;
            continue;
        }
        let column = (i - line_start) as u64 + 1;
        let (end, kind) = match chars.get(i + 1) {
            // The braces of `$${X}` belong to it, so that it is text
            // wherever `${X}` would be a reference (in a flow collection
            // too).
            Some('$') => {
                let end = match (chars.get(i + 2), closing(i + 2)) {
                    (Some('{'), Some(close)) => close + 1,
                    _ => i + 2,
                };
                (end, Kind::Literal(chars[i + 1..end].iter().collect()))
            }
            Some('{') => match closing(i + 2) {
                Some(close) => (close + 1, Kind::Variable(chars[i + 2..close].iter().collect())),
                None => (i + 2, Kind::Unclosed),
            },
            _ => {
                i += 1;
                continue;
            }
        };
        found.push(Reference { start: i, end, line, column, kind });
        i = end;
    }
    found
}

/// The file with each reference's characters replaced by `X`: neutral in
/// every kind of scalar and in comments, and of the same length, so spans
/// in it are spans in the file.
fn masked(chars: &[char], references: &[Reference]) -> String {
    let mut masked = chars.to_vec();
    for r in references {
        masked[r.start..r.end].fill('X');
    }
    masked.into_iter().collect()
}

/// A scalar of the file: where it is and how it is written.
#[derive(Debug)]
struct Scalar {
    /// Its characters, quotes included: `[start, end)`.
    start: usize,
    end: usize,
    /// 1-based line and column of its first character.
    line: u64,
    column: u64,
    style: ScalarStyle,
    /// Written over several lines.
    several_lines: bool,
}

/// Every scalar of `text`, in order.
fn scalars(text: &str) -> Result<Vec<Scalar>, Problem> {
    let mut found = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| syntax_problem(&err))?;
        if let Event::Scalar(_, style, _, _) = event {
            found.push(Scalar {
                start: span.start.index(),
                end: span.end.index(),
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
                style,
                several_lines: span.start.line() != span.end.line(),
            });
        }
    }
    // Document order already; an empty scalar sorts before one starting
    // at the same place.
    found.sort_by_key(|s| (s.start, s.end));
    Ok(found)
}

/// A syntax error, worded and placed as serde-saphyr would report it.
fn syntax_problem(err: &ScanError) -> Problem {
    let at = err.marker();
    Problem {
        path: String::new(),
        line: Some(at.line() as u64),
        column: Some(at.col() as u64 + 1),
        message: err.info(),
    }
}

/// The references inside each scalar, scalar by scalar; references
/// outside every scalar (in comments) are left out.
fn by_scalar<'a>(scalars: &'a [Scalar], references: &'a [Reference]) -> Vec<(&'a Scalar, &'a [Reference])> {
    let containing = |r: &Reference| {
        let after = scalars.partition_point(|s| s.start <= r.start);
        after.checked_sub(1).filter(|&k| r.end <= scalars[k].end)
    };
    let mut groups: Vec<(usize, usize, usize)> = Vec::new(); // (scalar, first reference, past the last)
    for (i, r) in references.iter().enumerate() {
        let Some(k) = containing(r) else { continue };
        match groups.last_mut() {
            Some((scalar, _, past)) if *scalar == k => *past = i + 1,
            _ => groups.push((k, i, i + 1)),
        }
    }
    groups.into_iter().map(|(k, first, past)| (&scalars[k], &references[first..past])).collect()
}

/// The new text of `scalar`, its references substituted, or why it cannot
/// have one.
fn rewrite(
    scalar: &Scalar,
    chars: &[char],
    references: &[Reference],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    // Folding and indentation would decide what part of a value is kept.
    let several_lines = || {
        vec![references[0].problem(
            "`${...}` and `$$` are replaced only in values written on one line; this one spans several \
             (a `|` or `>` block, or a value folded over lines)"
                .into(),
        )]
    };
    if scalar.several_lines {
        return Err(several_lines());
    }
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for r in references {
        match r.value(env) {
            Ok(value) => values.push(value),
            Err(message) => problems.push(r.problem(message)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // The scalar's content (inside its quotes, if any) as pieces: text of
    // the file, then a value, and so on.
    let quoted = matches!(scalar.style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
    let (start, end) = if quoted { (scalar.start + 1, scalar.end - 1) } else { (scalar.start, scalar.end) };
    let mut file_text = Vec::new();
    let mut at = start;
    for r in references {
        file_text.push(chars[at..r.start].iter().collect::<String>());
        at = r.end;
    }
    file_text.push(chars[at..end].iter().collect());

    let mut out = String::new();
    match scalar.style {
        ScalarStyle::Plain => {
            let mut text = file_text[0].clone();
            for (value, after) in values.iter().zip(&file_text[1..]) {
                text.push_str(value);
                text.push_str(after);
            }
            if stands_plain(&text) {
                return Ok(text);
            }
            out.push('"');
            escape_into(&text, &mut out);
        }
        // The file's text keeps its escapes; values are escaped.
        ScalarStyle::DoubleQuoted => {
            out.push('"');
            out.push_str(&file_text[0]);
            for (value, after) in values.iter().zip(&file_text[1..]) {
                escape_into(value, &mut out);
                out.push_str(after);
            }
        }
        // Rewritten double-quoted: single quotes cannot escape what a
        // value may hold. `''` is a quote in the file's text.
        ScalarStyle::SingleQuoted => {
            out.push('"');
            escape_into(&file_text[0].replace("''", "'"), &mut out);
            for (value, after) in values.iter().zip(&file_text[1..]) {
                escape_into(value, &mut out);
                escape_into(&after.replace("''", "'"), &mut out);
            }
        }
        ScalarStyle::Literal | ScalarStyle::Folded => return Err(several_lines()),
    }
    out.push('"');
    Ok(out)
}

/// Whether `text`, written as a plain scalar, is read back as itself and
/// typed as YAML types what it looks like: a number (`50`, `-4000.00`,
/// `1e3`), a duration (`60s`), a word (`true`, `earliest`). Not `null`,
/// which would make the value disappear, and nothing with a character YAML
/// might read as syntax (space, `:`, `#`, `,`, quotes, brackets, ...).
fn stands_plain(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        && text.chars().any(|c| c.is_ascii_alphanumeric())
        && !matches!(text, "null" | "Null" | "NULL")
}

/// Appends `text` as the content of a double-quoted YAML scalar: `"` and
/// `\` escaped, and every character YAML does not allow as it is.
fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            // Control characters, line and paragraph separators, the BOM
            // and non-characters: written as code points.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// The file with each scalar of `rewrites` replaced by its new text.
fn apply(chars: &[char], rewrites: &[(&Scalar, String)]) -> Interpolated {
    let mut text = String::with_capacity(chars.len());
    let mut columns = ColumnMap::default();
    let mut at = 0;
    // How far the output has moved from the file on the current line.
    let (mut line, mut moved) = (0, 0i64);
    for (scalar, new) in rewrites {
        text.extend(&chars[at..scalar.start]);
        text.push_str(new);
        at = scalar.end;
        if scalar.line != line {
            (line, moved) = (scalar.line, 0);
        }
        let old_len = (scalar.end - scalar.start) as i64;
        let new_len = new.chars().count() as i64;
        let out_start = (scalar.column as i64 + moved) as u64;
        columns.lines.entry(scalar.line).or_default().push(Shift {
            src_start: scalar.column,
            src_end: scalar.column + old_len as u64,
            out_start,
            out_end: out_start + new_len as u64,
        });
        moved += new_len - old_len;
    }
    text.extend(&chars[at..]);
    Interpolated { text, columns }
}

/// The value of one `${...}` body (`VAR` or `VAR:-default`).
fn resolve(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    // Messages show the reference without its default, which may be a
    // password written in the file.
    let shown = if default.is_some() { format!("${{{name}:-…}}") } else { format!("${{{name}}}") };
    if !is_variable_name(name) {
        return Err(format!(
            "`{shown}`: expected ${{NAME}} or ${{NAME:-default}}, NAME made of letters, digits and _ (write $$ for a literal $)"
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
            "`{shown}`: the value holds a line break; values substituted into a pipeline file must be one line"
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
    use serde_json::{json, Value};

    fn env_with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<String, Vec<Problem>> {
        interpolate(text, &env_with(vars)).map(|i| i.text)
    }

    /// The document `text` is once interpolated, as JSON; the interpolated
    /// text has the file's lines.
    fn document(text: &str, vars: &[(&str, &str)]) -> Value {
        let out = run(text, vars).unwrap();
        assert_eq!(out.lines().count(), text.lines().count(), "{out}");
        serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
    }

    /// Values that would change the document if they were pasted into its
    /// text: comments, keys, flow collections, anchors, tags, aliases,
    /// quotes, block scalars, escapes, and characters YAML escapes.
    const HOSTILE: &[&str] = &[
        "hunter2 #not a comment",
        "a #b: [c",
        "user: admin",
        "key:",
        "& anchor",
        "&anchor",
        "!tag",
        "!!int 5",
        "*alias",
        "[a, b]",
        "{k: v}",
        "'single",
        "\"double",
        "it's \"quoted\"",
        "|literal",
        ">folded",
        "- item",
        "? key",
        "%percent",
        "@at",
        "`tick",
        "#hash",
        "a, b",
        "a}b]c,d",
        "C:\\path\\n\\\\x",
        "pässwörd ✓ 🔑",
        "\u{1b}[31mred\ttab\u{85}\u{2028}\u{feff}",
        "  padded  ",
        "",
        "null",
        "~",
        "---",
        "-",
        "...",
        "$${X}",
    ];

    #[test]
    fn hostile_values_arrive_intact_and_leave_the_document_unchanged() {
        for &v in HOSTILE {
            let vars = [("V", v)];
            let q = |s: &str| Value::String(s.to_owned());
            assert_eq!(document("a: ${V}\nb: after\n", &vars), json!({"a": v, "b": "after"}), "{v:?}");
            assert_eq!(document("a: x ${V}y # c\nb: 1\n", &vars), json!({"a": format!("x {v}y"), "b": 1}), "{v:?}");
            assert_eq!(document("a: \"q\\t${V}\"\n", &vars), json!({"a": format!("q\t{v}")}), "{v:?}");
            assert_eq!(document("a: 'it''s ${V}'\n", &vars), json!({"a": format!("it's {v}")}), "{v:?}");
            assert_eq!(document("l: [${V}, b]\n", &vars), json!({"l": [q(v), "b"]}), "{v:?}");
            assert_eq!(document("m: {k: ${V}, j: v}\n", &vars), json!({"m": {"k": q(v), "j": "v"}}), "{v:?}");
            assert_eq!(document("- ${V}\n- z\n", &vars), json!([q(v), "z"]), "{v:?}");
            assert_eq!(document("${V}: v\nk: w\n", &vars), json!({v: "v", "k": "w"}), "{v:?}");
        }
    }

    #[test]
    fn numbers_durations_decimals_and_booleans_are_typed_as_written() {
        let text = "h: ${H:-50}\nw: ${W:-60s}\nt: ${T:-4000.00}\ne: ${E:-true}\nn: ${N:--3}\ns: ${S:-earliest}\n\
                    port: ${PORT}\np: ${P:-90}92\nf: ${F:-1.5e3}\n";
        assert_eq!(
            document(text, &[("PORT", "9092")]),
            json!({"h": 50, "w": "60s", "t": 4000.0, "e": true, "n": -3, "s": "earliest",
                   "port": 9092, "p": 9092, "f": 1500.0})
        );
        // Stays plain, so YAML types it; what is not a number or a word is
        // quoted.
        assert_eq!(run("h: ${H:-50}\nb: ${B:-k:1}\n", &[]).unwrap(), "h: 50\nb: \"k:1\"\n");
        // Quoted in the file: a string.
        assert_eq!(document("h: \"${H:-50}\"\n", &[]), json!({"h": "50"}));
    }

    #[test]
    fn default_applies_when_unset_or_empty() {
        let text = "brokers: ${B:-127.0.0.1:9092}\n";
        assert_eq!(document(text, &[]), json!({"brokers": "127.0.0.1:9092"}));
        assert_eq!(document(text, &[("B", "")]), json!({"brokers": "127.0.0.1:9092"}));
        assert_eq!(document(text, &[("B", "k:1")]), json!({"brokers": "k:1"}));
        // An empty default is a default: the empty string.
        assert_eq!(document("a: ${B:-}\nb: '${B:-}'\n", &[]), json!({"a": "", "b": ""}));
        // Set but empty, no default: empty (validation judges the value).
        assert_eq!(document("a: ${B}\n", &[("B", "")]), json!({"a": ""}));
    }

    #[test]
    fn comments_are_not_interpolated() {
        let text =
            "# brokers: ${UNSET}\n  # also ${UNSET} and $$ and ${\na: 1 # ${UNSET} ${\nb: [x, # ${UNSET}\n  y]\n";
        assert_eq!(run(text, &[]).unwrap(), text);
        // A `#` inside a reference is the reference's.
        assert_eq!(document("a: ${A:-x #y} # z\n", &[]), json!({"a": "x #y"}));
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
        let problems = run("a: ${A}\nb: x ${B} ${C}\nc: [é, ${D}]\n", &[("B", "b")]).unwrap_err();
        let found: Vec<_> = problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(found, [(Some(1), Some(4)), (Some(2), Some(11)), (Some(3), Some(8))]);
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(
            document("a: $${B}\nb: 5$$\nc: [$${B}, $$]\n", &[]),
            json!({"a": "${B}", "b": "5$", "c": ["${B}", "$"]})
        );
        // A lone $ stays, and a scalar without references is left as written.
        assert_eq!(run("a: $5 and $x\n", &[]).unwrap(), "a: $5 and $x\n");
        assert_eq!(run("a: $5 and $$x\n", &[]).unwrap(), "a: \"$5 and $x\"\n");
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
    fn messages_never_show_a_default() {
        let problems = run("a: ${B:-hunter2}\nb: ${C D:-hunter2}\n", &[("B", "x\ny")]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        for p in problems {
            assert!(!p.message.contains("hunter2"), "{}", p.message);
        }
    }

    #[test]
    fn values_over_several_lines_are_refused() {
        for text in ["a: |\n  x ${B}\n", "a: >\n  $$\n", "a: x\n  ${B}\n", "a: \"x\n  ${B}\"\n"] {
            let problems = run(text, &[("B", "b")]).unwrap_err();
            assert_eq!(
                (problems[0].line, problems[0].column),
                (Some(2), Some(text.lines().nth(1).unwrap().find('$').unwrap() as u64 + 1))
            );
            assert!(problems[0].message.contains("one line"), "{}", problems[0].message);
        }
    }

    #[test]
    fn yaml_syntax_errors_are_reported_where_they_are() {
        let problems = run("a: ${A:-1}\nb: [x\n", &[]).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(2));
    }

    #[test]
    fn default_may_hold_colons_and_dollars() {
        assert_eq!(document("a: ${B:-x:-y$z}\n", &[]), json!({"a": "x:-y$z"}));
    }

    #[test]
    fn columns_map_back_to_the_file() {
        // `${B:-1}` (7 chars) stays plain as `1`; `'${C:-x}'` (9) becomes
        // `"x"` (3).
        let text = "b: [${B:-1}, '${C:-x}', bad] # ok\n";
        let i = interpolate(text, &env_with(&[])).unwrap();
        assert_eq!(i.text, "b: [1, \"x\", bad] # ok\n");
        let m = &i.columns;
        assert_eq!(m.original(1, 1), 1);
        assert_eq!(m.original(1, 5), 5); // the `1` -> the `$`
        assert_eq!(m.original(1, 8), 14); // the opening quote
        assert_eq!(m.original(1, 9), 14); // inside the value -> the scalar
        assert_eq!(m.original(1, 13), 25); // `bad`
        assert_eq!(m.original(1, 18), 30); // the comment
        assert_eq!(m.original(2, 7), 7); // untouched line
    }
}
