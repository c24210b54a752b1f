//! A JSON reader made for Debezium payloads: it walks an object key by
//! key, reads the few values vigil needs, and skips the rest, in one pass
//! over the text and without allocating (strings are borrowed unless they
//! hold escapes).
//!
//! It accepts exactly JSON (RFC 8259), as serde_json does: skipped values
//! are checked too, so a record that is not JSON is refused whatever part
//! of it is broken. Errors say what was expected and at which byte; a
//! syntax error is [`DecodeError::BadJson`], valid JSON of the wrong shape
//! (a string where an object belongs) is [`DecodeError::BadEnvelope`].

use std::borrow::Cow;

use super::value::Json;
use super::DecodeError;

/// Containers open at once, counted from the top of the record: one more
/// is refused, as serde_json refuses it. Skipping recurses, and a record
/// must not exhaust the stack.
const MAX_DEPTH: u32 = 127;

pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// Containers open around the position, counted from the record's top.
    depth: u32,
}

impl<'a> Reader<'a> {
    /// A reader of a whole record.
    pub fn new(text: &'a str) -> Self {
        Reader::nested(text, 0)
    }

    /// A reader of a value standing `depth` containers down in its record
    /// (a payload under its schema block, say): nesting is limited from
    /// the record's top, wherever reading starts.
    pub fn nested(text: &'a str, depth: u32) -> Self {
        Reader { text, pos: 0, depth }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Containers open around the position, counted from the record's top.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Says how deep the position is, after text passed by
    /// [`Reader::follows`] (which does not count the containers it opens
    /// or closes).
    pub fn set_depth(&mut self, depth: u32) {
        self.depth = depth;
    }

    /// Where the next value starts (past whitespace).
    pub fn value_start(&mut self) -> usize {
        self.peek();
        self.pos
    }

    /// Consumes `text` when the input goes on with exactly it.
    pub fn follows(&mut self, text: &[u8]) -> bool {
        let found = self.bytes().get(self.pos..self.pos + text.len()).is_some_and(|next| same_bytes(next, text));
        if found {
            self.pos += text.len();
        }
        found
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn syntax(&self, what: &str) -> DecodeError {
        DecodeError::BadJson(format!("{what} at byte {}", self.pos))
    }

    /// Valid JSON, but not what a Debezium record holds there.
    pub fn shape(&self, what: &str) -> DecodeError {
        DecodeError::BadEnvelope(format!("{what} at byte {}", self.pos))
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Enters a container, unless one more is too deep.
    fn open(&mut self) -> Result<(), DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.syntax("nested too deeply"));
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    fn consume(&mut self, byte: u8, what: &str) -> Result<(), DecodeError> {
        if self.peek() != Some(byte) {
            return Err(self.syntax(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// Only whitespace may follow the value read.
    pub fn end(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax("trailing characters")),
        }
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> Result<bool, DecodeError> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        if !self.bytes()[self.pos..].starts_with(word) {
            return Err(self.syntax("invalid literal"));
        }
        self.pos += word.len();
        Ok(())
    }

    /// Opens an object; `what` names it in the error when the value is
    /// something else.
    pub fn begin_object(&mut self, what: &str) -> Result<Object, DecodeError> {
        match self.peek() {
            Some(b'{') => {
                self.open()?;
                Ok(Object { first: true })
            }
            _ => {
                let at = self.pos;
                self.skip()?;
                self.pos = at;
                Err(self.shape(&format!("expected {what}")))
            }
        }
    }

    /// The next key of an open object, its `:` consumed; `None` at its end.
    pub fn next_key(&mut self, object: &mut Object) -> Result<Option<Cow<'a, str>>, DecodeError> {
        if !self.at_key(object)? {
            return Ok(None);
        }
        let key = self.string()?;
        self.consume(b':', "expected ':'")?;
        Ok(Some(key))
    }

    /// Moves past the `,` before an object's next key (true, at its opening
    /// quote) or past the object's `}` (false).
    #[inline(always)]
    fn at_key(&mut self, object: &mut Object) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                return Ok(false);
            }
            Some(b',') if !object.first => self.pos += 1,
            _ if object.first => {}
            _ => return Err(self.syntax("expected ',' or '}'")),
        }
        object.first = false;
        if self.peek() != Some(b'"') {
            return Err(self.syntax("expected a key"));
        }
        Ok(true)
    }

    /// A string or null; `field` names it in the error otherwise.
    pub fn str_or_null(&mut self, field: &str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'n') => self.literal(b"null").map(|()| None),
            _ => self.wrong(field, "a string"),
        }
    }

    /// An integer (i64) or null; `field` names it in the error otherwise.
    pub fn int_or_null(&mut self, field: &str) -> Result<Option<i64>, DecodeError> {
        let at = self.pos;
        // A container is skipped, not read as a value: reading `{"scale":`
        // would come back here, nested as deep as the record goes.
        if !matches!(self.peek(), Some(b'{' | b'[')) {
            match self.value()? {
                Json::Int(i) => return Ok(Some(i)),
                Json::Null => return Ok(None),
                _ => self.pos = at,
            }
        }
        self.wrong(field, "an integer")
    }

    fn wrong<T>(&mut self, field: &str, expected: &str) -> Result<T, DecodeError> {
        let at = self.pos;
        self.skip()?;
        self.pos = at;
        Err(self.shape(&format!("{field}: expected {expected} or null")))
    }

    /// The text of the next value, checked and skipped.
    pub fn raw(&mut self) -> Result<&'a str, DecodeError> {
        // Past leading whitespace: the text starts at the value.
        self.peek();
        let start = self.pos;
        self.skip()?;
        Ok(&self.text[start..self.pos])
    }

    /// Any value: scalars as they are, a `{"scale", "value"}` object as
    /// [`Json::Scaled`], anything else skipped as [`Json::Other`].
    pub fn value(&mut self) -> Result<Json<'a>, DecodeError> {
        match self.peek() {
            Some(b'"') => self.string().map(Json::Str),
            Some(b'n') => self.literal(b"null").map(|()| Json::Null),
            Some(b't') => self.literal(b"true").map(|()| Json::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|()| Json::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.skip().map(|()| Json::Other("an array")),
            Some(b'{') => self.scaled_decimal(),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end")),
        }
    }

    /// Debezium's VariableScaleDecimal, `{"scale": s, "value": "<base64>"}`.
    fn scaled_decimal(&mut self) -> Result<Json<'a>, DecodeError> {
        let mut object = self.begin_object("an object")?;
        let (mut scale, mut value, mut other) = (None, None, false);
        while let Some(key) = self.next_key(&mut object)? {
            match &*key {
                "scale" => scale = self.int_or_null("scale")?,
                "value" => value = self.str_or_null("value")?,
                _ => {
                    self.skip()?;
                    other = true;
                }
            }
        }
        Ok(match (scale, value, other) {
            (Some(scale), Some(value), false) => Json::Scaled { scale, value },
            _ => Json::Other("an object"),
        })
    }

    /// Skips the next value, checking that it is JSON.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => {
                let mut object = self.begin_object("an object")?;
                while self.next_key_skipped(&mut object)? {
                    self.skip()?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.open()?;
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                loop {
                    self.skip()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            self.depth -= 1;
                            return Ok(());
                        }
                        _ => return Err(self.syntax("expected ',' or ']'")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.skip_number().map(drop),
            _ => self.value().map(drop),
        }
    }

    /// Checks a number's form (and, with an exponent or many digits, its
    /// range) without computing its value; whether it is an integer (no
    /// fraction, no exponent).
    fn skip_number(&mut self) -> Result<bool, DecodeError> {
        let (bytes, start) = (self.bytes(), self.pos);
        self.pos += usize::from(bytes.get(self.pos) == Some(&b'-'));
        match bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.syntax("invalid number")),
        }
        let mut integer = true;
        if bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits()?;
            integer = false;
        }
        let mut exponent = false;
        if matches!(bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
            (integer, exponent) = (false, true);
        }
        // serde_json refuses a number beyond f64's range (1e999, 309
        // digits), skipped or not; one of 308 bytes without an exponent is
        // within it.
        if (exponent || self.pos - start > 308) && !self.text[start..self.pos].parse::<f64>().is_ok_and(f64::is_finite)
        {
            return Err(self.syntax("number out of range"));
        }
        Ok(integer)
    }

    /// As [`Reader::next_key`], for a key that is not looked at.
    fn next_key_skipped(&mut self, object: &mut Object) -> Result<bool, DecodeError> {
        if !self.at_key(object)? {
            return Ok(false);
        }
        self.skip_string()?;
        self.consume(b':', "expected ':'")?;
        Ok(true)
    }

    /// A number: an integer as i64 (u64 above it), anything else as f64,
    /// as serde_json reads them.
    fn number(&mut self) -> Result<Json<'a>, DecodeError> {
        let start = self.pos;
        let integer = self.skip_number()?;
        let text = &self.text[start..self.pos];
        if let Some(json) = integer.then(|| integer_value(text)).flatten() {
            return Ok(json);
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Json::Float(f)),
            _ => Err(self.syntax("number out of range")),
        }
    }

    fn digits(&mut self) -> Result<(), DecodeError> {
        let start = self.pos;
        self.pos = digits_end(self.bytes(), self.pos);
        if self.pos == start {
            return Err(self.syntax("invalid number"));
        }
        Ok(())
    }

    /// A string, the reader at its opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        self.pos += 1;
        let start = self.pos;
        let end = find_special(self.bytes(), self.pos);
        match self.bytes().get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                Ok(Cow::Borrowed(&self.text[start..end]))
            }
            _ => {
                self.pos = end;
                self.escaped_string(start).map(Cow::Owned)
            }
        }
    }

    /// The rest of a string holding escapes, unescaped.
    fn escaped_string(&mut self, start: usize) -> Result<String, DecodeError> {
        let mut out = String::with_capacity(self.pos - start + 16);
        let mut run = start;
        loop {
            let end = find_special(self.bytes(), self.pos);
            out.push_str(&self.text[run..end]);
            self.pos = end;
            match self.bytes().get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                    run = self.pos;
                }
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    /// One escape, the reader after its backslash.
    fn escape(&mut self) -> Result<char, DecodeError> {
        let Some(&b) = self.bytes().get(self.pos) else {
            return Err(self.syntax("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return Err(self.syntax("invalid escape")),
        })
    }

    /// A `\u` escape's character, the reader after the `u`: a UTF-16
    /// surrogate must come in a pair.
    fn unicode_escape(&mut self) -> Result<char, DecodeError> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                if !self.bytes()[self.pos..].starts_with(b"\\u") {
                    return Err(self.syntax("lone leading surrogate in a \\u escape"));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.syntax("invalid surrogate pair in a \\u escape"));
                }
                0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.syntax("lone trailing surrogate in a \\u escape")),
            _ => u32::from(unit),
        };
        char::from_u32(code).ok_or_else(|| self.syntax("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u16, DecodeError> {
        let digits = self.bytes().get(self.pos..self.pos + 4).ok_or_else(|| self.syntax("invalid \\u escape"))?;
        let mut unit = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or_else(|| self.syntax("invalid \\u escape"))?;
            unit = unit << 4 | v as u16;
        }
        self.pos += 4;
        Ok(unit)
    }

    /// Skips a string, checking its escapes, without unescaping it.
    fn skip_string(&mut self) -> Result<(), DecodeError> {
        self.pos += 1;
        loop {
            self.pos = find_special(self.bytes(), self.pos);
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.bytes().get(self.pos) {
                        Some(b'u') => {
                            self.pos += 1;
                            self.unicode_escape()?;
                        }
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        _ => return Err(self.syntax("invalid escape")),
                    }
                }
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }
}

/// An integer's value from its checked text: i64, or u64 above it; `None`
/// beyond both (read as f64, as serde_json does).
fn integer_value(text: &str) -> Option<Json<'_>> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    let mut magnitude: u64 = 0;
    for d in digits.bytes() {
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if !negative {
        return Some(i64::try_from(magnitude).map_or(Json::BigInt(magnitude), Json::Int));
    }
    (magnitude <= i64::MIN.unsigned_abs()).then(|| Json::Int(0i64.wrapping_sub_unsigned(magnitude)))
}

/// An open object: whether its first key is still to come.
pub struct Object {
    first: bool,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The position of the first `"`, `\` or control character at or after
/// `from` (the end when none): eight bytes at a time, as strings in
/// records are mostly plain.
#[inline]
fn find_special(bytes: &[u8], from: usize) -> usize {
    first_where(bytes, from, special_bytes, |b| b == b'"' || b == b'\\' || b < 0x20)
}

/// The position of the first byte at or after `from` that is not an ASCII
/// digit (the end when none): eight bytes at a time, as timestamps in
/// nanoseconds have nineteen.
#[inline]
fn digits_end(bytes: &[u8], from: usize) -> usize {
    first_where(bytes, from, non_digits, |b| !b.is_ascii_digit())
}

/// The position of the first byte at or after `from` that `hit` holds
/// for (the end when none): whole words through `hits` (the high bit of
/// each such byte, the lowest one exact), the last few bytes one by one.
#[inline(always)]
fn first_where(bytes: &[u8], from: usize, hits: impl Fn(u64) -> u64, hit: impl Fn(u8) -> bool) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let found = hits(word(chunk));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if hit(b) {
            return i;
        }
        i += 1;
    }
    i
}

/// The high bit of each byte of `word` that is not an ASCII digit. Bits
/// above the lowest may be wrong (a carry), the lowest never is.
#[inline]
fn non_digits(word: u64) -> u64 {
    // Digits become 0..=9; adding 0x76 sets the high bit of 10 and above.
    let offset = word ^ (ONES * u64::from(b'0'));
    (offset.wrapping_add(ONES * 0x76) | offset) & HIGHS
}

/// Eight bytes as a little-endian word.
#[inline]
fn word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&chunk[..8]);
    u64::from_le_bytes(bytes)
}

/// Whether two slices of one length hold the same bytes: a word at a
/// time (the last word overlapping the one before), for the short texts
/// between a payload's values, without a call.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 < n {
        if word(&a[i..]) != word(&b[i..]) {
            return false;
        }
        i += 8;
    }
    word(&a[n - 8..]) == word(&b[n - 8..])
}

/// The high bit of each byte of `word` that is `"`, `\` or below 0x20.
/// Bits above the lowest may be false (borrows), the lowest never is.
#[inline]
fn special_bytes(word: u64) -> u64 {
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Result<Json<'_>, DecodeError> {
        let mut r = Reader::new(text);
        let v = r.value()?;
        r.end()?;
        Ok(v)
    }

    fn skip(text: &str) -> Result<(), DecodeError> {
        let mut r = Reader::new(text);
        r.skip()?;
        r.end()
    }

    #[test]
    fn scalars() {
        assert_eq!(value("-12"), Ok(Json::Int(-12)));
        assert_eq!(value("0"), Ok(Json::Int(0)));
        assert_eq!(value(" 9223372036854775807 "), Ok(Json::Int(i64::MAX)));
        assert_eq!(value("-9223372036854775808"), Ok(Json::Int(i64::MIN)));
        assert_eq!(value("18446744073709551615"), Ok(Json::BigInt(u64::MAX)));
        assert_eq!(value("-9223372036854775809"), Ok(Json::Float(-9223372036854775809.0)));
        assert_eq!(value("1.5e3"), Ok(Json::Float(1500.0)));
        assert_eq!(value("true"), Ok(Json::Bool(true)));
        assert_eq!(value("null"), Ok(Json::Null));
        assert_eq!(value(r#""plain""#), Ok(Json::Str(Cow::Borrowed("plain"))));
        assert_eq!(value(r#"{"scale":3,"value":"MDk="}"#), Ok(Json::Scaled { scale: 3, value: "MDk=".into() }));
        assert_eq!(value(r#"{"scale":3,"value":"MDk=","x":1}"#), Ok(Json::Other("an object")));
        assert_eq!(value("[1,[2,{}]]"), Ok(Json::Other("an array")));
    }

    #[test]
    fn strings_with_escapes_are_unescaped() {
        let text = r#""a\"b\\c\/\n\u00e9\ud83d\ude00 long enough to cross eight bytes""#;
        assert_eq!(value(text), Ok(Json::Str("a\"b\\c/\né😀 long enough to cross eight bytes".into())));
        assert_eq!(value("\"ünïcödé text\""), Ok(Json::Str(Cow::Borrowed("ünïcödé text"))));
    }

    #[test]
    fn the_first_special_byte_is_found_in_any_position() {
        for at in 0..20 {
            for special in [b'"', b'\\', 0x01, 0x1f] {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = special;
                if at + 1 < 20 {
                    // A later special byte must not hide the first.
                    bytes[at + 1] = 0x00;
                }
                assert_eq!(find_special(&bytes, 0), at, "{special:#x} at {at}");
            }
        }
        assert_eq!(find_special(&[0xc3, 0xa9, b' ', 0x7f, b'~'], 0), 5, "non-ASCII and DEL are plain");
    }

    #[test]
    fn the_first_non_digit_is_found_in_any_position() {
        for len in 0..20 {
            for stop in [b'/', b':', b'.', b'e', b',', b'}', b' ', 0x00, 0x80, 0xff] {
                let mut bytes = vec![b'7'; 20];
                if len < 20 {
                    bytes[len] = stop;
                }
                for (later, byte) in bytes.iter_mut().enumerate().skip(len + 1) {
                    *byte = if later % 2 == 0 { 0xff } else { b'0' + (later % 10) as u8 };
                }
                assert_eq!(digits_end(&bytes, 0), len.min(20), "{stop:#x} after {len} digits");
            }
        }
        assert_eq!(digits_end(b"x0123456789", 1), 11);
    }

    #[test]
    fn same_bytes_compares_every_byte() {
        let text = b"},\"source\":{\"version\":\"";
        for n in 0..=text.len() {
            for i in 0..n {
                let mut other = text[..n].to_vec();
                other[i] ^= 1;
                assert!(!same_bytes(&text[..n], &other), "a difference at {i} of {n}");
            }
            assert!(same_bytes(&text[..n], &text[..n]));
        }
    }

    #[test]
    fn invalid_json_is_refused_even_when_skipped() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"abc",
            "\"a\tb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "{} {}",
        ] {
            assert!(matches!(skip(bad), Err(DecodeError::BadJson(_))), "{bad:?} skipped");
            assert!(value(bad).is_err(), "{bad:?} read");
        }
        assert!(matches!(value("1e999"), Err(DecodeError::BadJson(ref m)) if m.contains("range")));
        // 127 levels, as serde_json; not 128, counted from the record's top.
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        skip(&nested(127)).expect("127 levels");
        assert!(matches!(skip(&nested(128)), Err(DecodeError::BadJson(ref m)) if m.contains("nested")));
        let within_one = |text: &str| Reader::nested(text, 1).skip();
        within_one(&nested(126)).expect("126 levels within one");
        assert!(matches!(within_one(&nested(127)), Err(DecodeError::BadJson(ref m)) if m.contains("nested")));
        let objects = |depth: usize| "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
        skip(&objects(127)).expect("127 levels");
        assert!(skip(&objects(128)).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(127)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(128)).is_err());
        skip(r#" {"a": [1, -2.5e-3, "x\"y", {"b": null, "c": [true, false]}], "d": {}} "#).expect("valid");
    }

    #[test]
    fn objects_walk_key_by_key() {
        let mut r = Reader::new(r#"{"op":"c","n":null,"lsn":42,"skip":{"deep":[1]},"esc\u0061pe":1}"#);
        let mut o = r.begin_object("a payload").expect("object");
        let mut seen = Vec::new();
        while let Some(key) = r.next_key(&mut o).expect("key") {
            match &*key {
                "op" => assert_eq!(r.str_or_null("op"), Ok(Some("c".into()))),
                "n" => assert_eq!(r.str_or_null("n"), Ok(None)),
                "lsn" => assert_eq!(r.int_or_null("lsn"), Ok(Some(42))),
                _ => r.skip().expect("skip"),
            }
            seen.push(key.into_owned());
        }
        r.end().expect("end");
        assert_eq!(seen, ["op", "n", "lsn", "skip", "escape"]);

        let mut r = Reader::new(r#"{"lsn":"42"}"#);
        let mut o = r.begin_object("a payload").expect("object");
        r.next_key(&mut o).expect("key");
        assert!(matches!(r.int_or_null("source.lsn"), Err(DecodeError::BadEnvelope(m)) if m.contains("source.lsn")));
        assert!(matches!(Reader::new("[1]").begin_object("a payload"), Err(DecodeError::BadEnvelope(_))));
        assert!(matches!(Reader::new("[1").begin_object("a payload"), Err(DecodeError::BadJson(_))));
    }
}
