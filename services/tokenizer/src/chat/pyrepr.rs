//! Python's `str()`/`repr()` and float `repr` for the chat encoder: the reference interpolates
//! some non-string values into prompts with `str()` (`None`, `{'a': 1}`), and prints floats in
//! JSON the way `repr(float)` does.

use std::fmt::Write as _;

use serde_json::Value;

use super::pyjson::{PyValue, write_dict, write_list};

/// Python's `repr(float)` for a finite value: shortest round-trip digits, positional notation
/// for decimal exponents -4..16, otherwise `d.ddde±XX`; always a `.0` on integral values.
pub(crate) fn float_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits ("-1.5e-7", "1e16") but breaks an
    // exact tie between two shortest candidates upwards; Python's dtoa takes the correctly
    // rounded one (ties to even). Re-round at that length and keep it if it still round-trips.
    let shortest = format!("{x:e}");
    let n_digits = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    let rounded = format!("{x:.*e}", n_digits.saturating_sub(1));
    let sci = if rounded.parse::<f64>() == Ok(x) {
        rounded
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1; // value = 0.DIGITS × 10^decpt
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let point = decpt as usize;
        if point >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

/// Python's `str(value)` of a decoded JSON value (a string is itself; containers use `repr`).
pub(crate) fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(&PyValue::from(other)),
    }
}

/// Python's `repr(value)`: `None`, `True`, `{'a': [1, 2.5]}`, quoted strings.
pub(crate) fn py_repr(v: &PyValue) -> String {
    let mut out = String::new();
    write_repr(v, &mut out);
    out
}

fn write_repr(v: &PyValue, out: &mut String) {
    match v {
        PyValue::None => out.push_str("None"),
        PyValue::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        PyValue::Int(s) => out.push_str(s),
        PyValue::Float(f) if f.is_nan() => out.push_str("nan"),
        PyValue::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "inf" } else { "-inf" }),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => write_str_repr(s, out),
        PyValue::List(items) => write_list(items, out, write_repr),
        PyValue::Dict(items) => {
            write_dict(items, out, write_str_repr, write_repr);
        }
    }
}

/// `repr(str)`: single quotes unless the text contains `'` and no `"`; non-printable characters
/// escaped as `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
fn write_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for one character. Exact for control, format, separator,
/// private-use and noncharacter code points; unassigned code points are approximated (only the
/// unassigned planes 4–13 and the tail of plane 14 count as non-printable).
fn is_printable(c: char) -> bool {
    let n = c as u32;
    if n & 0xfffe == 0xfffe {
        return false; // noncharacters U+xFFFE, U+xFFFF
    }
    !matches!(n,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f
        | 0x890..=0x891 | 0x8e2 | 0x180e | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f
        | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef
        | 0xfeff | 0xfff0..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f
        | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a | 0x40000..=0xdffff | 0xe0000..=0xe00ff
        | 0xe01f0..=0x10ffff)
}
