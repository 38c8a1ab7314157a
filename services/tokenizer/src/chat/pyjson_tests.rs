//! Expected values below were printed by CPython 3.11.7 (`json.loads`, `json.dumps(...,
//! ensure_ascii=False)`, `repr`, `str`).

use serde_json::json;

use super::*;
use crate::chat::pyrepr::{float_repr, py_repr, py_str};

fn roundtrip(text: &str) -> Option<String> {
    loads(text).map(|v| to_json(&v))
}

#[test]
#[allow(clippy::excessive_precision)] // literals as written in the fixtures' inputs
fn float_repr_matches_python() {
    let cases = [
        (30.0, "30.0"),
        (0.001, "0.001"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (1.5e-07, "1.5e-07"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e100, "1e+100"),
        (123456789.123456789, "123456789.12345679"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
        (100000.0, "100000.0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1234567890123456.7, "1234567890123456.8"),
        (12345678901234567.0, "1.2345678901234568e+16"),
        // An exact tie between two shortest candidates: Python rounds to even.
        (2099944934121138.25, "2099944934121138.2"),
    ];
    for (x, want) in cases {
        assert_eq!(float_repr(x), want, "{x:e}");
    }
}

/// Bulk check against a file of `bits<TAB>repr(x)` lines written by CPython, when present
/// (`V4_FLOAT_REPR_CASES=path`); the fixed cases above always run.
#[test]
fn float_repr_bulk_from_python_when_given() {
    let Ok(path) = std::env::var("V4_FLOAT_REPR_CASES") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("readable cases file");
    let mut n = 0;
    for line in text.lines() {
        let (bits, want) = line.split_once('\t').expect("bits\trepr");
        let x = f64::from_bits(bits.parse().expect("u64"));
        assert_eq!(float_repr(x), want, "bits {bits}");
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn loads_dumps_like_python() {
    let cases = [
        (
            r#"{"a": 1.50, "b": 1e400, "c": -1e400, "d": 1E-400}"#,
            r#"{"a": 1.5, "b": Infinity, "c": -Infinity, "d": 0.0}"#,
        ),
        (r#"{"x": "\ud83e\udd80 \u00e9"}"#, "{\"x\": \"🦀 é\"}"),
        (
            r#"{"a":1,"a":{"b":[1,2,{"a":null}]}, "c": true}"#,
            r#"{"a": {"b": [1, 2, {"a": null}]}, "c": true}"#,
        ),
        (
            r#"{"k": -0, "m": 0.0e0, "n": 5e-324, "o": 1.7976931348623157e308}"#,
            r#"{"k": 0, "m": 0.0, "n": 5e-324, "o": 1.7976931348623157e+308}"#,
        ),
        (
            r#"{"s": "\u2028\u0000\u007f\t"}"#,
            "{\"s\": \"\u{2028}\\u0000\u{7f}\\t\"}",
        ),
        ("{ \"a\" : [ ] , \"b\" : { } }", r#"{"a": [], "b": {}}"#),
        (
            r#"{"big": 12345678901234567890123, "neg": -98765432109876543210}"#,
            r#"{"big": 12345678901234567890123, "neg": -98765432109876543210}"#,
        ),
        (
            r#"  {"n": NaN, "i": Infinity, "j": -Infinity}  "#,
            r#"{"n": NaN, "i": Infinity, "j": -Infinity}"#,
        ),
        (
            r#"{"esc": "\"\\\/\b\f\n\r\t\u0001"}"#,
            r#"{"esc": "\"\\/\b\f\n\r\t\u0001"}"#,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(roundtrip(input).as_deref(), Some(want), "{input}");
    }
}

#[test]
fn loads_rejects_what_python_rejects() {
    let bad = [
        r#"{"a":1,}"#,
        "[1,]",
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        "{\"a\":\"\t\"}",
        r#"{"a":1e}"#,
        r#"{"a":+1}"#,
        r#"{"a":-}"#,
        r#"{"a":"\x"}"#,
        "{'a':1}",
        r#"{"a":1} x"#,
        "\u{feff}{}",
        r#"{"a":"\u12G4"}"#,
        r#"{"a":-NaN}"#,
        r#"{"a":nan}"#,
        "",
        " ",
        "{",
        "[",
        r#"{"a""#,
        r#""abc"#,
        r#"{"a":"\ud800\u00"}"#,
        "tru",
        "nul",
    ];
    for text in bad {
        assert_eq!(loads(text), None, "{text:?} should not parse");
    }
    // 4300 digits parse, 4301 do not (Python's int conversion limit).
    assert!(loads(&"7".repeat(4300)).is_some());
    assert!(loads(&format!("-{}", "7".repeat(4301))).is_none());
}

#[test]
fn loads_edge_values() {
    assert_eq!(loads("-0"), Some(PyValue::Int("0".into())));
    assert_eq!(loads("[]"), Some(PyValue::List(vec![])));
    // A lone surrogate escape becomes U+FFFD; a non-pair second escape is read on its own.
    assert_eq!(
        loads(r#""\ud800x""#),
        Some(PyValue::Str("\u{fffd}x".into()))
    );
    assert_eq!(
        loads(r#""\ud800\u0041""#),
        Some(PyValue::Str("\u{fffd}A".into()))
    );
    // Deep nesting gives up instead of overflowing the stack.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(loads(&deep), None);
    let ok = format!("{}{}", "[".repeat(500), "]".repeat(500));
    assert!(loads(&ok).is_some());
}

#[test]
fn str_and_repr_like_python() {
    let v = json!({"a": "it's", "b": "say \"hi\"", "c": "both ' \"",
        "d": "\u{0}\u{7f}\u{80}\u{a0}\u{ad}\u{2028}\u{e000}\u{e0001}\n\\", "e": 1e16, "f": [1.0, -0.0, 1e-05]});
    let want = r#"{'a': "it's", 'b': 'say "hi"', 'c': 'both \' "', 'd': '\x00\x7f\x80\xa0\xad\u2028\ue000\U000e0001\n\\', 'e': 1e+16, 'f': [1.0, -0.0, 1e-05]}"#;
    assert_eq!(py_str(&v), want);
    assert_eq!(py_str(&json!(null)), "None");
    assert_eq!(py_str(&json!(true)), "True");
    assert_eq!(py_str(&json!(42)), "42");
    assert_eq!(py_str(&json!("raw 'text'")), "raw 'text'");
    assert_eq!(
        py_str(&json!({"a": 1, "b": [true, null]})),
        "{'a': 1, 'b': [True, None]}"
    );
    assert_eq!(py_repr(&PyValue::Float(f64::NAN)), "nan");
    assert_eq!(py_repr(&PyValue::Float(f64::NEG_INFINITY)), "-inf");
    assert_eq!(py_str(&json!("中文 emoji 🦀")), "中文 emoji 🦀");
    assert_eq!(py_str(&json!(["中文 🦀"])), "['中文 🦀']");
}

#[test]
fn value_to_json_matches_python_dumps() {
    let v = json!({"name": "查询", "n": 10.5, "m": 30.0, "d": 0.001, "i": -3, "u": 18446744073709551615u64,
        "s": "q\"\\\n\u{1}\u{7f}é", "l": [null, true, {}]});
    let want = "{\"name\": \"查询\", \"n\": 10.5, \"m\": 30.0, \"d\": 0.001, \"i\": -3, \"u\": 18446744073709551615, \"s\": \"q\\\"\\\\\\n\\u0001\u{7f}é\", \"l\": [null, true, {}]}";
    assert_eq!(value_to_json(&v), want);
}
