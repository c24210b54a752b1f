//! The shape of a Debezium payload, learned from one record so that the
//! records after it are read by their values alone.
//!
//! JsonConverter writes every change of a table version with the same keys
//! in the same order, compactly: from one record to the next only the
//! values differ. A shape is a record's text cut at its values: the bytes
//! between two values (commas, keys, colons, braces) kept as they are, and
//! each value replaced by what the decoder does with it. A payload with
//! exactly those bytes between its values has the same keys in the same
//! places, so reading its values where the shape says gives what reading
//! it key by key gives. Its values are still read and checked whole, and
//! any difference (other bytes between values, a value that does not read)
//! sends the payload to the key-by-key path, which gives the result or the
//! error. Keys are the costly part of a payload to read: about thirty of
//! them, a handful looked at.

use std::ops::Range;

use super::reader::Reader;
use super::{PayloadKey, SourceKey};

/// What the decoder does with a value at its place in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// Checked and passed over.
    Skip,
    Op,
    /// `before`: kept as text (read for deletes).
    Before,
    /// A column of `after` the pipeline reads (its projection index).
    Column(usize),
    Source(SourceKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Bytes the payload must continue with (a range of the shape's text).
    Text(Range<usize>),
    /// A value, and the containers around it in the payload.
    Value(Field, u32),
}

/// A payload's layout: the text between its values and what each value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PayloadShape {
    text: Box<[u8]>,
    steps: Box<[Step]>,
}

impl PayloadShape {
    /// The shape of an envelope payload whose `after` and `source` are
    /// objects (`column` gives a projected column's index by name); `None`
    /// for any other payload, and for one with both a `schema` and a
    /// `payload` key, which a schemaless record must not look like.
    pub fn learn(payload: &str, column: impl Fn(&str) -> Option<usize>) -> Option<PayloadShape> {
        let mut r = Reader::new(payload);
        let mut shape = Builder::default();
        let mut object = r.begin_object("a payload").ok()?;
        let (mut schema, mut payload_key) = (false, false);
        while let Some(key) = r.next_key(&mut object).ok()? {
            schema |= key == "schema";
            payload_key |= key == "payload";
            match PayloadKey::of(&key) {
                PayloadKey::Op => shape.value(&mut r, payload, Field::Op)?,
                PayloadKey::Before => shape.value(&mut r, payload, Field::Before)?,
                PayloadKey::After => {
                    shape.object(&mut r, payload, |key| column(key).map_or(Field::Skip, Field::Column))?
                }
                PayloadKey::Source => {
                    shape.object(&mut r, payload, |key| SourceKey::of(key).map_or(Field::Skip, Field::Source))?
                }
                PayloadKey::Other => shape.value(&mut r, payload, Field::Skip)?,
            }
        }
        r.end().ok()?;
        if schema && payload_key {
            return None;
        }
        Some(shape.finish(payload))
    }

    /// Walks `payload` (standing `depth` containers down in its record)
    /// along the shape, handing each value's field to `read` with the
    /// reader at the value; `None` as soon as the payload leaves the shape
    /// or a value does not read.
    pub fn read<'a>(
        &self,
        payload: &'a str,
        depth: u32,
        mut read: impl FnMut(Field, &mut Reader<'a>) -> Option<()>,
    ) -> Option<()> {
        let mut r = Reader::nested(payload, depth);
        for step in &self.steps {
            match step {
                Step::Text(range) => {
                    if !r.follows(&self.text[range.clone()]) {
                        return None;
                    }
                }
                Step::Value(field, inside) => {
                    r.set_depth(depth + inside);
                    read(*field, &mut r)?
                }
            }
        }
        r.end().ok()
    }
}

/// A shape as it is learned: the text since the last value is pending.
#[derive(Default)]
struct Builder {
    text: Vec<u8>,
    steps: Vec<Step>,
    /// Where the payload's text not taken into the shape yet starts.
    from: usize,
}

impl Builder {
    /// The value the reader is at, whole, read as `field`.
    fn value(&mut self, r: &mut Reader<'_>, payload: &str, field: Field) -> Option<()> {
        let start = r.value_start();
        self.take_text(payload, start);
        let depth = r.depth();
        r.skip().ok()?;
        self.steps.push(Step::Value(field, depth));
        self.from = r.position();
        Some(())
    }

    /// The object the reader is at, its values read as `field_of` their
    /// key says; `None` when the value is not an object.
    fn object(&mut self, r: &mut Reader<'_>, payload: &str, field_of: impl Fn(&str) -> Field) -> Option<()> {
        if payload.as_bytes().get(r.value_start()) != Some(&b'{') {
            return None;
        }
        let mut object = r.begin_object("an object").ok()?;
        while let Some(key) = r.next_key(&mut object).ok()? {
            self.value(r, payload, field_of(&key))?;
        }
        Some(())
    }

    fn take_text(&mut self, payload: &str, to: usize) {
        let start = self.text.len();
        self.text.extend_from_slice(&payload.as_bytes()[self.from..to]);
        self.steps.push(Step::Text(start..self.text.len()));
        self.from = to;
    }

    fn finish(mut self, payload: &str) -> PayloadShape {
        self.take_text(payload, payload.len());
        PayloadShape { text: self.text.into(), steps: self.steps.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = r#"{"before":null,"after":{"id":1,"user_id":7,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#;

    fn column(key: &str) -> Option<usize> {
        ["id", "user_id"].iter().position(|c| *c == key)
    }

    fn fields(shape: &PayloadShape, payload: &str) -> Option<Vec<(Field, String)>> {
        let mut seen = Vec::new();
        shape.read(payload, 0, |field, r| {
            seen.push((field, r.raw().ok()?.to_owned()));
            Some(())
        })?;
        Some(seen)
    }

    #[test]
    fn a_payload_is_cut_at_its_values() {
        let shape = PayloadShape::learn(CREATE, column).expect("an envelope");
        let texts: Vec<&[u8]> = shape
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Text(r) => Some(&shape.text[r.clone()]),
                Step::Value(..) => None,
            })
            .collect();
        assert_eq!(
            texts,
            [
                &br#"{"before":"#[..],
                br#","after":{"id":"#,
                br#","user_id":"#,
                br#","note":"#,
                br#"},"source":{"db":"#,
                br#","lsn":"#,
                br#","ts_ms":"#,
                br#"},"op":"#,
                br#","ts_ms":"#,
                b"}",
            ]
        );
        let got = fields(&shape, CREATE).expect("its own shape");
        let want = [
            (Field::Before, "null"),
            (Field::Column(0), "1"),
            (Field::Column(1), "7"),
            (Field::Skip, r#""x""#),
            (Field::Skip, r#""d""#),
            (Field::Source(SourceKey::Lsn), "5"),
            (Field::Source(SourceKey::TsMs), "9"),
            (Field::Op, r#""c""#),
            (Field::Skip, "10"),
        ];
        assert_eq!(got, want.map(|(f, t)| (f, t.to_owned())));
    }

    #[test]
    fn other_values_fit_and_other_layouts_do_not() {
        let shape = PayloadShape::learn(CREATE, column).expect("an envelope");
        let update = r#"{"before":{"id":1,"user_id":7},"after":{"id":1,"user_id":8,"note":"y\"z"},"source":{"db":"d","lsn":6,"ts_ms":11},"op":"u","ts_ms":12}"#;
        let got = fields(&shape, update).expect("same keys, other values");
        assert_eq!(got[0], (Field::Before, r#"{"id":1,"user_id":7}"#.to_owned()));
        assert_eq!(got[2], (Field::Column(1), "8".to_owned()));
        for other in [
            // a delete: after is null
            r#"{"before":{"id":1},"after":null,"source":{"db":"d","lsn":6,"ts_ms":11},"op":"d","ts_ms":12}"#,
            // keys in another order, a key more, a key less
            r#"{"before":null,"after":{"user_id":7,"id":1,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#,
            r#"{"before":null,"after":{"id":1,"user_id":7,"note":"x","n":1},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#,
            r#"{"before":null,"after":{"id":1,"user_id":7},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#,
            // whitespace between values, a broken value, trailing bytes
            r#"{"before":null, "after":{"id":1,"user_id":7,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#,
            r#"{"before":nul,"after":{"id":1,"user_id":7,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}"#,
            r#"{"before":null,"after":{"id":1,"user_id":7,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":10}}"#,
            r#"{"before":null,"after":{"id":1,"user_id":7,"note":"x"},"source":{"db":"d","lsn":5,"ts_ms":9},"op":"c","ts_ms":1"#,
        ] {
            assert_eq!(fields(&shape, other), None, "{other}");
        }
    }

    #[test]
    fn only_envelopes_with_objects_to_read_have_a_shape() {
        for payload in [
            r#"{"before":{"id":1},"after":null,"source":{},"op":"d"}"#,
            r#"{"before":null,"after":{"id":1},"source":null,"op":"c"}"#,
            r#"{"schema":1,"payload":2,"after":{"id":1},"source":{},"op":"c"}"#,
            r#"{"after":{"id":1},"source":{},"op":"c"} x"#,
            "[1]",
        ] {
            assert_eq!(PayloadShape::learn(payload, column), None, "{payload}");
        }
    }
}
