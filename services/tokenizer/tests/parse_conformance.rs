//! Conformance of [`parse_completion`] with the reference parser
//! (`parse_message_from_completion_text` of `encoding_dsv4.py`) on every record of
//! `shared/fixtures/chat-v4/parse.jsonl`: well-formed records must produce exactly `expected`
//! (byte-identical JSON, key order included); error records must be rejected with the same
//! exception class and message.

use serde_json::Value;
use v4_tokenizer::chat::parse::{ParseError, ParsedMessage, parse_completion};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/chat-v4/parse.jsonl"
);

fn records() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("parse fixture missing at {FIXTURE}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line in {FIXTURE}: {e}")))
        .collect()
}

fn input(r: &Value) -> (&str, &str) {
    let text = r["input"]["text"].as_str().expect("input.text");
    let mode = r["input"]["thinking_mode"]
        .as_str()
        .expect("input.thinking_mode");
    (text, mode)
}

#[test]
fn every_fixture_record_matches_the_reference() {
    let records = records();
    assert_eq!(records.len(), 78, "record count of {FIXTURE}");
    let (mut ok_total, mut ok_equal, mut err_total, mut err_rejected, mut err_same) =
        (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for r in &records {
        let id = r["id"].as_str().unwrap();
        let (text, mode) = input(r);
        let got = parse_completion(text, mode);
        if let Some(expected) = r.get("expected") {
            ok_total += 1;
            match got {
                Ok(m) => {
                    let got_json = serde_json::to_string(&m).unwrap();
                    if got_json == serde_json::to_string(expected).unwrap() {
                        ok_equal += 1;
                    } else {
                        failures.push(format!("{id}: got {got_json}\n  expected {expected}"));
                    }
                    // The type also reads the fixture's shape back.
                    let back: ParsedMessage = serde_json::from_value(expected.clone()).unwrap();
                    assert_eq!(back, m, "{id}: deserialized expected differs");
                }
                Err(e) => failures.push(format!("{id}: unexpected error {e}")),
            }
        } else {
            err_total += 1;
            match got {
                Ok(m) => failures.push(format!("{id}: accepted, got {m:?}")),
                Err(e) => {
                    err_rejected += 1;
                    let (ty, msg) = (
                        r["error_type"].as_str().unwrap(),
                        r["error"].as_str().unwrap(),
                    );
                    if e.error_type() == ty && e.to_string() == msg {
                        err_same += 1;
                    } else {
                        failures.push(format!(
                            "{id}: rejected as {} {:?}, reference {ty} {msg:?}",
                            e.error_type(),
                            e.to_string()
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "parse.jsonl: {ok_equal}/{ok_total} well-formed equal, {err_rejected}/{err_total} errors \
         rejected ({err_same} with the reference's type and message)"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!((ok_total, err_total), (39, 39));
}

#[test]
fn error_classes() {
    let cases: &[(&str, &str, ParseError)] = &[
        ("abc", "thinking", ParseError::MissingThinkEnd),
        (
            "a\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls></think>",
            "thinking",
            ParseError::MissingThinkEnd,
        ),
        ("abc", "chat", ParseError::MissingEos),
        ("a<｜end▁of▁sentence｜>\n", "chat", ParseError::ContentAtEnd),
        (
            "<think>a<｜end▁of▁sentence｜>",
            "chat",
            ParseError::SpecialToken("<think>"),
        ),
        (
            "a\n\n<｜DSML｜tool_calls>x",
            "chat",
            ParseError::ToolCallFormat(">x".into()),
        ),
    ];
    for (text, mode, want) in cases {
        assert_eq!(parse_completion(text, mode).as_ref(), Err(want), "{text:?}");
    }
    assert_eq!(ParseError::MissingEos.error_type(), "AssertionError");
    assert_eq!(
        ParseError::DuplicateParameter("p".into()).error_type(),
        "ValueError"
    );
}

#[test]
fn quirks_of_the_reference_are_kept() {
    let block = |body: &str| {
        format!("\n\n<｜DSML｜tool_calls>\n{body}\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>")
    };
    let args = |text: &str| {
        parse_completion(text, "chat").unwrap().tool_calls[0]
            .function
            .arguments
            .clone()
    };
    // string="false" is copied verbatim, even when it is not JSON.
    let t = block(
        "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" string=\"false\">1e+16</｜DSML｜parameter>\n</｜DSML｜invoke>",
    );
    assert_eq!(args(&t), "{\"x\": 1e+16}");
    // Python's `$` before a final newline: `<\n/｜DSML｜parameter>` closes a value.
    let t = block(
        "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" string=\"true\">a\"\u{7f}<\n/｜DSML｜parameter>\n</｜DSML｜invoke>",
    );
    assert_eq!(args(&t), "{\"x\": \"a\\\"\u{7f}\"}");
    // `\s*` before name= is Python's Unicode whitespace (U+001F included).
    let t = block("<｜DSML｜invoke\u{1f}name=\"f\">\n</｜DSML｜invoke>");
    assert_eq!(args(&t), "{}");
    // Truncation right after the block marker is accepted as plain content.
    let m = parse_completion("ok\n\n<｜DSML｜tool_calls", "thinking-not").unwrap();
    assert_eq!((m.content.as_str(), m.tool_calls.len()), ("ok", 0));
}

#[test]
fn arbitrary_input_never_panics() {
    let pieces = [
        "<",
        ">",
        "\n",
        "\"",
        " ",
        "a",
        "中",
        "/",
        "=",
        "｜",
        "<｜end▁of▁sentence｜>",
        "</think>",
        "<think>",
        "\n\n<｜DSML｜tool_calls",
        ">\n",
        "<｜DSML｜invoke",
        " name=\"",
        "\">\n",
        "</｜DSML｜invoke",
        "<｜DSML｜parameter",
        " string=\"true\">",
        " string=\"false\">",
        "/｜DSML｜parameter",
        "</｜DSML｜tool_calls>",
        "1",
        "{",
        "\u{1f}",
        "\u{2028}",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        for mode in ["thinking", "chat"] {
            if let Ok(m) = parse_completion(&text, mode) {
                assert!(text.len() >= m.content.len() + m.reasoning_content.len());
            }
        }
    }
}
