//! Hostile records: valid Debezium records changed structurally (values at
//! their types' limits or of the wrong type, keys removed, duplicated or
//! renamed, objects grafted where others belong, cuts at every structural
//! position, deep nesting, long strings, broken UTF-8 and escapes, tokens
//! JSON does not have). Whatever a record holds, the decoder gives a row,
//! a skip or an error, never a panic; it refuses what serde_json refuses
//! as JSON (so a row always comes from JSON); and a decoder that has read
//! the unchanged record first, by its cached schema, learned shape or the
//! batch's shared prefix, gives what a fresh decoder gives.
//!
//! The changes are drawn from a fixed seed, so a failure repeats; it
//! names the change, the base record and the decoder's settings.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// Values at the limits of their types, of the wrong type, or not JSON,
/// as they would stand in a record's text.
const TOKENS: &[&str] = &[
    // Integers and floats at their limits.
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "1e999999",
    "-1e999999",
    "1e-999999",
    "123456789012345678901234567890",
    "0.1234567890123456789012345678901",
    "-0",
    "-0.0",
    "1E+2",
    // Numbers JSON does not have.
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "+1",
    "01",
    ".5",
    "1.",
    "1e",
    "0x10",
    "--1",
    // Other types.
    "null",
    "true",
    "false",
    "nul",
    "\"\"",
    "\"x\"",
    "\"1\"",
    "[]",
    "{}",
    "[null]",
    "{\"a\":1}",
    // Connect decimals (base64) and not.
    "\"MDk=\"",
    "\"/h3A\"",
    "\"@@@\"",
    "\"MDk\"",
    "\"AAAA====\"",
    "\"f////////////////////w==\"",
    "\"AQIDBAUGBwgJCgsMDQ4PEBE=\"",
    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAB\"",
    // Decimals as text.
    "\"123456789012345678901234567890.5\"",
    "\"0.00000000000000000000000000001\"",
    "\"79228162514264337593543950336\"",
    "\"-79228162514264337593543950335\"",
    "\"1e5\"",
    "\"-\"",
    "\"NaN\"",
    // VariableScaleDecimal shapes.
    "{\"scale\":2,\"value\":\"MDk=\"}",
    "{\"scale\":28,\"value\":\"f////////////w==\"}",
    "{\"scale\":29,\"value\":\"MDk=\"}",
    "{\"scale\":-1,\"value\":\"MDk=\"}",
    "{\"scale\":9223372036854775807,\"value\":\"MDk=\"}",
    "{\"scale\":-9223372036854775808,\"value\":\"MDk=\"}",
    "{\"scale\":\"2\",\"value\":\"MDk=\"}",
    "{\"scale\":2.5,\"value\":\"MDk=\"}",
    "{\"scale\":1e999,\"value\":\"MDk=\"}",
    "{\"scale\":2,\"value\":3}",
    "{\"scale\":2,\"value\":\"@@\"}",
    "{\"scale\":2}",
    "{\"value\":\"MDk=\"}",
    "{\"scale\":2,\"value\":\"MDk=\",\"x\":1}",
    "{\"scale\":2,\"scale\":3,\"value\":\"MDk=\"}",
    "{\"scale\":{\"scale\":2,\"value\":\"MDk=\"},\"value\":\"MDk=\"}",
    "{\"scale\":[2],\"value\":\"MDk=\"}",
    // Times.
    "\"9999-12-31T23:59:59.999999Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2024-02-29T00:00:00-23:59\"",
    "\"2026-02-30T00:00:00Z\"",
    "\"2026-11-25T10:11:12.1234567890123456789012345Z\"",
    "\"2026-11-25T10:11:12+99:99\"",
    "\"2026-11-25T10:11:12é\"",
    "\"2026-11-25T10:11:12+é\"",
    // Ops.
    "\"c\"",
    "\"u\"",
    "\"d\"",
    "\"r\"",
    "\"t\"",
    "\"m\"",
    "\"C\"",
    "\"cc\"",
    "\"\\u0063\"",
    // Escapes, valid and not.
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud800\\u0041\"",
    "\"\\ud800\\\"",
    "\"\\ud83d\\ude00\"",
    "\"\\u0000\"",
    "\"\\u00\"",
    "\"\\x41\"",
    "\"\\\"\"",
    "\"a\\/b\"",
    "\"\u{1}\"",
    "\"é\"",
    // What schema blocks hold.
    "\"struct\"",
    "\"bytes\"",
    "\"int64\"",
    "\"string\"",
    "\"float64\"",
    "\"org.apache.kafka.connect.data.Decimal\"",
    "\"io.debezium.data.VariableScaleDecimal\"",
    "\"io.debezium.time.ZonedTimestamp\"",
    "\"io.debezium.time.Date\"",
    "{\"scale\":\"28\"}",
    "{\"scale\":\"29\"}",
    "{\"scale\":\"-1\"}",
    "{\"scale\":\"99999999999999999999\"}",
    "{\"scale\":\"x\"}",
    "{\"scale\":2}",
];

/// Byte sequences that are not UTF-8, or not where they stand.
const BROKEN_UTF8: &[&[u8]] = &[
    b"\"\xff\"",
    b"\"\xc3\"",
    b"\"\xc0\xaf\"",
    b"\"\xed\xa0\x80\"",
    b"\"\xf4\x90\x80\x80\"",
    b"\xff",
    b"\xef\xbb\xbf1",
];

/// Keys a member may be renamed to: those the decoder looks for.
const KEYS: &[&str] = &[
    "schema",
    "payload",
    "op",
    "before",
    "after",
    "source",
    "ts_ms",
    "lsn",
    "table",
    "user_id",
    "created_at",
    "amount",
    "id",
    "scale",
    "value",
    "type",
    "name",
    "field",
    "fields",
    "parameters",
    "__op",
    "__deleted",
    "",
];

/// A value in a record's (compact) text, found by [`nodes`].
struct Node {
    /// Where its key starts, for an object's member.
    key: Option<usize>,
    start: usize,
    end: usize,
    /// Containers around it, innermost last: their closing bytes.
    closers: Vec<u8>,
    /// Its path from the top, for failure messages.
    path: String,
}

/// Every value of a valid, compact JSON text (as JsonConverter writes),
/// in document order.
fn nodes(text: &[u8]) -> Vec<Node> {
    fn string_end(t: &[u8], mut at: usize) -> usize {
        at += 1;
        loop {
            match t[at] {
                b'\\' => at += 2,
                b'"' => return at + 1,
                _ => at += 1,
            }
        }
    }
    fn scan(t: &[u8], at: usize, key: Option<usize>, closers: &[u8], path: String, out: &mut Vec<Node>) -> usize {
        let i = out.len();
        out.push(Node { key, start: at, end: at, closers: closers.to_vec(), path: path.clone() });
        let end = match t[at] {
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let inner = [closers, &[close]].concat();
                let (mut p, mut n) = (at + 1, 0);
                while t[p] != close {
                    p += usize::from(t[p] == b',');
                    let (key, child) = if open == b'{' {
                        let (key, key_end) = (p, string_end(t, p));
                        // Past the key and its ':'.
                        p = key_end + 1;
                        (Some(key), format!("{path}.{}", String::from_utf8_lossy(&t[key + 1..key_end - 1])))
                    } else {
                        (None, format!("{path}[{n}]"))
                    };
                    p = scan(t, p, key, &inner, child, out);
                    n += 1;
                }
                p + 1
            }
            b'"' => string_end(t, at),
            _ => at + t[at..].iter().position(|b| matches!(b, b',' | b'}' | b']')).unwrap_or(t.len() - at),
        };
        out[i].end = end;
        end
    }
    let mut out = Vec::new();
    let end = scan(text, 0, None, &[], "$".into(), &mut out);
    assert_eq!(end, text.len(), "a compact JSON text");
    out
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `text` with `range` replaced by `with`.
fn splice(text: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
    [&text[..range.start], with, &text[range.end..]].concat()
}

/// A changed record and what was changed, for failure messages.
struct Variant {
    bytes: Vec<u8>,
    change: String,
}

/// Changes of the values of `base` under path `within` (`$` for all),
/// drawn from `rng`: `count` of them, plus every cut at a structural
/// position among those values.
fn variants(base: &[u8], within: &str, rng: &mut Rng, count: usize) -> Vec<Variant> {
    let nodes: Vec<Node> = nodes(base).into_iter().filter(|n| n.path.starts_with(within)).collect();
    let mut out = Vec::new();
    let mut push = |bytes: Vec<u8>, change: String| out.push(Variant { bytes, change });

    // Cut where a container, key or value begins or ends; and cut after a
    // value with its containers closed (valid JSON, fields missing).
    for (i, &b) in base.iter().enumerate().take(nodes[0].end).skip(nodes[0].start) {
        if matches!(b, b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"') {
            push(base[..i].to_vec(), format!("cut before byte {i}"));
        }
    }
    push([base, base].concat(), "the record twice".into());
    push([b"[", base, b",", base, b"]"].concat(), "the record twice in an array".into());
    for node in &nodes {
        let closed = [&base[..node.end], &node.closers.iter().rev().copied().collect::<Vec<u8>>()[..]].concat();
        push(closed, format!("cut after {} and closed", node.path));
    }

    for _ in 0..count {
        let node = rng.pick(&nodes);
        let value = node.start..node.end;
        let text = &base[value.clone()];
        let (bytes, change) = match rng.below(10) {
            0..=3 => {
                let token = rng.pick(TOKENS);
                (splice(base, value, token.as_bytes()), format!("{} = {token}", node.path))
            }
            4 => {
                let broken = rng.pick(BROKEN_UTF8);
                (splice(base, value, broken), format!("{} = {}", node.path, String::from_utf8_lossy(broken)))
            }
            5 => {
                // Another value of the record in its place (an object
                // grafted where a scalar or another object belongs).
                let other = rng.pick(&nodes);
                (splice(base, value, &base[other.start..other.end]), format!("{} = {}", node.path, other.path))
            }
            6 => match node.key {
                Some(key) => {
                    // The member duplicated, as it is or with another value.
                    let member = &base[key..node.end];
                    let again = if rng.below(2) == 0 {
                        member.to_vec()
                    } else {
                        [&base[key..node.start], rng.pick(TOKENS).as_bytes()].concat()
                    };
                    (splice(base, node.end..node.end, &[b",", &again[..]].concat()), format!("{} twice", node.path))
                }
                None => (
                    splice(base, value, &[b"[", text, b",", text, b"]"].concat()),
                    format!("{} in an array", node.path),
                ),
            },
            7 => match node.key {
                Some(key) => {
                    // The member removed, or its key renamed.
                    if rng.below(2) == 0 {
                        let (from, to) = if base[node.end] == b',' { (key, node.end + 1) } else { (key - 1, node.end) };
                        let from = if base[from] == b'{' { from + 1 } else { from };
                        (splice(base, from..to, b""), format!("{} removed", node.path))
                    } else {
                        let new = rng.pick(KEYS);
                        (
                            splice(base, key..node.start - 1, format!("\"{new}\"").as_bytes()),
                            format!("{} renamed {new:?}", node.path),
                        )
                    }
                }
                None => {
                    (splice(base, value, &[b"{\"value\":", text, b"}"].concat()), format!("{} in an object", node.path))
                }
            },
            8 => {
                // Nested around the limit of serde_json (128 levels,
                // counted from the top of the record).
                let depth = 118 + rng.below(14);
                let (open, close) = if rng.below(2) == 0 { ("[", "]") } else { ("{\"a\":", "}") };
                let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                (splice(base, value, nested.as_bytes()), format!("{} = {depth} x {open}", node.path))
            }
            _ => {
                // A long value: text, digits, or base64.
                let long = match rng.below(3) {
                    0 => format!("\"{}\"", "x".repeat(100_000)),
                    1 => "9".repeat(10_000),
                    _ => format!("\"{}\"", "A".repeat(10_000)),
                };
                (
                    splice(base, value, long.as_bytes()),
                    format!("{} = {}... ({} bytes)", node.path, &long[..3], long.len()),
                )
            }
        };
        push(bytes, change);
    }
    out
}

/// Checks `variant` under `opts`: no panic; an error for what serde_json
/// refuses; and the same outcome from a fresh decoder, a decoder that has
/// read `base` (schema cached, shape learned) and the batch path (the
/// record held without `base`'s envelope prefix, or its own).
fn check(opts: &DecodeOptions, base: &[u8], variant: &[u8]) {
    let clock = EventTime(CREATED_AT.0 + 86_400_000_000);
    let fresh = || {
        let mut d = Decoder::new(opts.clone(), TOPIC);
        d.observe_clock(clock);
        d
    };
    let first = fresh().decode(Some(variant), 1);
    if let Err(e) = &first {
        // What a dead letter carries.
        assert!(!e.to_string().is_empty());
    }
    if serde_json::from_slice::<Json>(variant).is_err() {
        assert!(first.is_err(), "not JSON, yet {first:?}");
    }
    let want = outcome(first);

    let mut warm = fresh();
    // Whether or not the settings read it (a schema block with schemas
    // disabled is refused), it leaves what it leaves behind.
    warm.decode(Some(base), 0).ok();
    assert_eq!(outcome(warm.decode(Some(variant), 1)), want, "after the base record");
    if let Some(len) = envelope_prefix_len(base).filter(|&len| variant.get(..len) == Some(&base[..len])) {
        let prefix = &base[..len];
        let plan = warm.envelope_plan(prefix).expect("the base's schema");
        assert_eq!(
            outcome(warm.decode_enveloped(&plan, prefix, &variant[len..], 1)),
            want,
            "held without the base's prefix"
        );
    }
    if let Some(len) = envelope_prefix_len(variant) {
        let (prefix, rest) = variant.split_at(len);
        let got = warm.envelope_plan(prefix).and_then(|plan| warm.decode_enveloped(&plan, prefix, rest, 1));
        assert_eq!(outcome(got), want, "held without its own prefix");
    }
}

/// Every op read, so a delete's before image is read too.
const ALL_OPS: &[Op] = &[Op::Create, Op::Update, Op::Delete, Op::Read];

/// The decoder settings a base record is read with: the shipped pipeline's
/// and its schema and decimal variants.
fn settings(schema_block: bool) -> Vec<(&'static str, DecodeOptions)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/fraud-detection.yaml");
    let text = std::fs::read_to_string(path).expect("pipeline file");
    let pipeline = crate::config::load_str(path, &text, |_| None).expect("valid pipeline");
    let mut shipped = DecodeOptions::for_pipeline(&pipeline);
    shipped.ops = ALL_OPS.into();
    let amount = shipped.projection.index("amount").expect("amount is read");
    let with = |change: &dyn Fn(&mut DecodeOptions)| {
        let mut opts = shipped.clone();
        change(&mut opts);
        opts
    };
    let disabled = with(&|o| {
        o.schemas = SchemaMode::Disabled;
        o.roles[amount] = Role::Decimal { schemaless_scale: Some(2) };
    });
    if schema_block {
        vec![
            ("shipped", shipped.clone()),
            ("schemas enabled", with(&|o| o.schemas = SchemaMode::Enabled)),
            ("schemas disabled", disabled),
        ]
    } else {
        vec![
            ("schemas disabled, amount scale 2", disabled),
            ("decimals as strings", with(&|o| o.schemaless.decimals = DecimalHandling::String)),
            ("decimals as doubles", with(&|o| o.schemaless.decimals = DecimalHandling::Double)),
        ]
    }
}

/// The payload of a captured record, as a schemaless record: its text as
/// it stands in the record.
fn bare(record: &[u8]) -> Vec<u8> {
    let payload = nodes(record).into_iter().find(|n| n.path == "$.payload").expect("a payload");
    record[payload.start..payload.end].to_vec()
}

#[test]
fn hostile_records_are_errors_never_panics_and_never_more_than_json() {
    let flat = serde_json::to_vec(&flat_row()).expect("json");
    let flat_schema = serde_json::to_vec(&flat_with_schema(flat_row())).expect("json");
    // The captured update and delete share the create's schema block:
    // only their payloads are changed, and fewer times.
    let bases: [(&str, Vec<u8>, &str, usize, bool); 7] = [
        ("create", CREATE.to_vec(), "$", 600, true),
        ("update", UPDATE.to_vec(), "$.payload", 250, true),
        ("delete", DELETE.to_vec(), "$.payload", 250, true),
        ("flat with schema", flat_schema, "$", 600, true),
        ("bare create", bare(CREATE), "$", 600, false),
        ("bare delete", bare(DELETE), "$", 600, false),
        ("bare flat", flat, "$", 600, false),
    ];
    let mut rng = Rng(0x5eed);
    let mut checked = 0;
    for (name, base, within, count, schema_block) in &bases {
        let variants = variants(base, within, &mut rng, *count);
        for (setting, opts) in settings(*schema_block) {
            for v in &variants {
                let run = catch_unwind(AssertUnwindSafe(|| check(&opts, base, &v.bytes)));
                if run.is_err() {
                    let shown = String::from_utf8_lossy(&v.bytes);
                    panic!("{name} record, {setting}, {}: {}", v.change, quoted(&shown));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked} records checked");
}

/// Nesting far beyond any limit, at every depth of a record's structure
/// and in every kind of value: an error, not a stack overflow.
#[test]
fn deep_nesting_is_an_error_wherever_it_stands() {
    let deep = [("[", "]"), ("{\"a\":", "}"), ("{\"scale\":", "}"), ("{\"value\":", "}")]
        .map(|(open, close)| format!("{}1{}", open.repeat(10_000), close.repeat(10_000)));
    let bases = [("create", CREATE.to_vec(), true), ("bare create", bare(CREATE), false)];
    for (name, base, schema_block) in &bases {
        // The payload's values, and the schema block whole.
        let places = nodes(base).into_iter().filter(|n| !n.path.starts_with("$.schema") || n.path == "$.schema");
        for node in places {
            for nested in &deep {
                let variant = splice(base, node.start..node.end, nested.as_bytes());
                for (setting, opts) in settings(*schema_block) {
                    let run = catch_unwind(AssertUnwindSafe(|| check(&opts, base, &variant)));
                    assert!(run.is_ok(), "{name} record, {setting}, {} = {}", node.path, &nested[..12]);
                }
            }
        }
    }
}
