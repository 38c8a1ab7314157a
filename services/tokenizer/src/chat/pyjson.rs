//! Python compatibility for the chat encoder: the reference builds prompts with Python's
//! `json.loads`, `json.dumps(value, ensure_ascii=False)` and `str()`, and prompts must match it
//! byte for byte (see `shared/design/chat-encoding.md` §1 "to_json").
//!
//! [`PyValue`] is the value model those functions work on: integers of any size, floats printed
//! the way Python's `repr` prints them (`30.0`, `1e-05`, `1e+16`), `NaN`/`Infinity`, and objects
//! that keep their key order (a repeated key keeps its first position and takes the last value,
//! like a Python `dict`).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::pyrepr::float_repr;

/// Python's default `int` string-conversion limit (`sys.get_int_max_str_digits()`): `json.loads`
/// fails on longer integer literals.
const MAX_INT_DIGITS: usize = 4300;
/// Nesting depth at which parsing gives up, standing in for Python's recursion limit.
const MAX_DEPTH: usize = 1000;

/// A JSON value as Python's `json` module sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    None,
    Bool(bool),
    /// An integer of any size, as canonical decimal text (`-12`, `12345678901234567890123`).
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    /// Key/value pairs in insertion order, keys unique.
    Dict(Vec<(String, PyValue)>),
}

impl From<&Value> for PyValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    PyValue::Int(i.to_string())
                } else if let Some(u) = n.as_u64() {
                    PyValue::Int(u.to_string())
                } else {
                    // With serde_json's `arbitrary_precision`, big integers keep their text.
                    let text = n.to_string();
                    let digits = text.strip_prefix('-').unwrap_or(&text);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        PyValue::Int(text)
                    } else {
                        PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
                    }
                }
            }
            Value::String(s) => PyValue::Str(s.clone()),
            Value::Array(a) => PyValue::List(a.iter().map(PyValue::from).collect()),
            Value::Object(o) => PyValue::Dict(
                o.iter()
                    .map(|(k, v)| (k.clone(), PyValue::from(v)))
                    .collect(),
            ),
        }
    }
}

/// `json.dumps(value, ensure_ascii=False)`: separators `", "` / `": "`, non-ASCII kept raw.
pub(crate) fn to_json(v: &PyValue) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

/// [`to_json`] of a `serde_json` value.
pub(crate) fn value_to_json(v: &Value) -> String {
    to_json(&PyValue::from(v))
}

/// `[a, b]`: the separators `json.dumps` and `repr` share; `item` renders each element.
pub(super) fn write_list(items: &[PyValue], out: &mut String, item: fn(&PyValue, &mut String)) {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(v, out);
    }
    out.push(']');
}

/// `{k: v}` with the separators `json.dumps` and `repr` share.
pub(super) fn write_dict(
    items: &[(String, PyValue)],
    out: &mut String,
    key: fn(&str, &mut String),
    item: fn(&PyValue, &mut String),
) {
    out.push('{');
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        key(k, out);
        out.push_str(": ");
        item(v, out);
    }
    out.push('}');
}

fn write_json(v: &PyValue, out: &mut String) {
    match v {
        PyValue::None => out.push_str("null"),
        PyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PyValue::Int(s) => out.push_str(s),
        PyValue::Float(f) if f.is_nan() => out.push_str("NaN"),
        PyValue::Float(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => write_json_str(s, out),
        PyValue::List(items) => write_list(items, out, write_json),
        PyValue::Dict(items) => {
            write_dict(items, out, write_json_str, write_json);
        }
    }
}

/// A JSON string literal as Python writes it with `ensure_ascii=False`.
fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `json.loads(text)` (C scanner, `strict=True`): accepts `NaN`, `Infinity`,
/// `-Infinity`; integers of any size up to 4300 digits; duplicate keys keep their first position
/// and the last value. Returns `None` wherever Python raises. A lone UTF-16 surrogate escape,
/// which a Rust string cannot hold, becomes U+FFFD.
pub(crate) fn loads(text: &str) -> Option<PyValue> {
    if text.starts_with('\u{feff}') {
        return None; // "Unexpected UTF-8 BOM"
    }
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        let hit = self.s[self.i..].starts_with(lit);
        if hit {
            self.i += lit.len();
        }
        hit
    }

    fn value(&mut self) -> Option<PyValue> {
        match self.peek()? {
            b'"' => self.string().map(PyValue::Str),
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'n' if self.eat("null") => Some(PyValue::None),
            b't' if self.eat("true") => Some(PyValue::Bool(true)),
            b'f' if self.eat("false") => Some(PyValue::Bool(false)),
            b'N' if self.eat("NaN") => Some(PyValue::Float(f64::NAN)),
            b'I' if self.eat("Infinity") => Some(PyValue::Float(f64::INFINITY)),
            b'-' if self.eat("-Infinity") => Some(PyValue::Float(f64::NEG_INFINITY)),
            _ => self.number(),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Option<PyValue>) -> Option<PyValue> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`; a fraction or exponent makes a float.
    fn number(&mut self) -> Option<PyValue> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let int_end = self.i;
        let mut is_float = false;
        if self.peek() == Some(b'.') && matches!(self.b.get(self.i + 1), Some(b'0'..=b'9')) {
            self.i += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let e_start = self.i;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() > 0 {
                is_float = true;
            } else {
                self.i = e_start;
            }
        }
        let text = &self.s[start..self.i];
        if is_float {
            return text.parse::<f64>().ok().map(PyValue::Float);
        }
        let digits = &self.s[start..int_end];
        let magnitude = digits.strip_prefix('-').unwrap_or(digits);
        if magnitude.len() > MAX_INT_DIGITS {
            return None; // ValueError: exceeds the limit for integer string conversion
        }
        Some(PyValue::Int(if magnitude == "0" {
            "0".into()
        } else {
            digits.into()
        }))
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while matches!(self.peek(), Some(c) if c != b'"' && c != b'\\' && c >= 0x20) {
                self.i += 1;
            }
            out.push_str(&self.s[start..self.i]);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let esc = self.peek()?;
                    self.i += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                }
                _ => return None, // raw control character (strict mode)
            }
        }
    }

    /// After `\u`: four hex digits, joined with a following `\uDCxx` when they are a high
    /// surrogate.
    fn unicode_escape(&mut self) -> Option<char> {
        let c = self.hex4()?;
        if (0xd800..0xdc00).contains(&c) && self.s[self.i..].starts_with("\\u") {
            let save = self.i;
            self.i += 2;
            let c2 = self.hex4()?;
            if (0xdc00..0xe000).contains(&c2) {
                return char::from_u32(0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00));
            }
            self.i = save; // not a pair: the second escape is read on its own
        }
        Some(char::from_u32(c).unwrap_or('\u{fffd}'))
    }

    fn object(&mut self) -> Option<PyValue> {
        self.i += 1;
        self.skip_ws();
        let mut items: Vec<(String, PyValue)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(PyValue::Dict(items));
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.skip_ws();
            let v = self.value()?;
            match index.get(&key) {
                Some(&at) => items[at].1 = v,
                None => {
                    index.insert(key.clone(), items.len());
                    items.push((key, v));
                }
            }
            self.skip_ws();
            match self.peek()? {
                b'}' => {
                    self.i += 1;
                    return Some(PyValue::Dict(items));
                }
                b',' => {
                    self.i += 1;
                    self.skip_ws();
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self) -> Option<PyValue> {
        self.i += 1;
        self.skip_ws();
        let mut items = Vec::new();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(PyValue::List(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek()? {
                b']' => {
                    self.i += 1;
                    return Some(PyValue::List(items));
                }
                b',' => {
                    self.i += 1;
                    self.skip_ws();
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
#[path = "pyjson_tests.rs"]
mod tests;
