//! Chat-encoder conformance: every record of `shared/fixtures/chat-v4/encode.jsonl` (produced by
//! the reference `encoding_dsv4.py`). Success records: the prompt string must be byte-identical
//! and its token ids (tokenized with the official `tokenizer.json`) equal. Error records: the
//! encoder must reject the input. A missing fixture file fails the test; nothing is skipped.

use std::path::Path;

use serde_json::Value;
use v4_tokenizer::Tokenizer;
use v4_tokenizer::chat::encode::encode_json;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/chat-v4/encode.jsonl"
);
const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/tokenizer/deepseek-v4/tokenizer.json"
);

fn records() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("chat-v4 encoder fixtures missing at {FIXTURE}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{FIXTURE} line {}: {e}", n + 1))
        })
        .collect()
}

/// First differing position of two strings, with some context, for failure messages.
fn first_diff(got: &str, want: &str) -> String {
    let at = got
        .char_indices()
        .zip(want.chars())
        .find(|((_, a), b)| a != b)
        .map_or_else(|| got.len().min(want.len()), |((i, _), _)| i);
    let start = got[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
    let want_start = start.min(want.len());
    let tail = |s: &str, from: usize| {
        s.get(from..)
            .unwrap_or("")
            .chars()
            .take(140)
            .collect::<String>()
    };
    format!(
        "at byte {at}:\n  got : {:?}\n  want: {:?}",
        tail(got, start),
        tail(want, want_start)
    )
}

#[test]
fn encode_fixtures_conform() {
    let tok = Tokenizer::from_file(Path::new(TOKENIZER))
        .unwrap_or_else(|e| panic!("tokenizer missing or invalid at {TOKENIZER}: {e}"));
    let records = records();
    assert_eq!(records.len(), 148, "expected 148 records in {FIXTURE}");
    let (mut prompts_ok, mut ids_ok, mut errors_ok, mut n_ok, mut n_err) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for r in &records {
        let id = r["id"].as_str().unwrap_or("?");
        let got = encode_json(&r["input"]["messages"], &r["input"]["kwargs"]);
        if r.get("error_type").is_some() {
            n_err += 1;
            match got {
                Err(_) => errors_ok += 1,
                Ok(p) => failures.push(format!(
                    "{id}: expected an error ({}), got prompt {p:?}",
                    r["error"]
                )),
            }
            continue;
        }
        n_ok += 1;
        let want = r["prompt"].as_str().expect("prompt is a string");
        let want_ids: Vec<u32> = serde_json::from_value(r["token_ids"].clone()).expect("token_ids");
        match got {
            Err(e) => failures.push(format!("{id}: unexpected error: {e}")),
            Ok(p) => {
                if p == want {
                    prompts_ok += 1;
                } else {
                    failures.push(format!("{id}: prompt differs {}", first_diff(&p, want)));
                }
                let ids = tok.encode(&p);
                if ids == want_ids {
                    ids_ok += 1;
                } else {
                    failures.push(format!(
                        "{id}: token ids differ ({} vs {} ids)",
                        ids.len(),
                        want_ids.len()
                    ));
                }
            }
        }
    }
    println!(
        "encode.jsonl: {prompts_ok}/{n_ok} prompts equal, {ids_ok}/{n_ok} token ids equal, \
         {errors_ok}/{n_err} errors rejected ({} records)",
        records.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(prompts_ok + errors_ok, records.len());
}

/// The fixture's error records name conditions; each must be rejected with a message that says
/// what to fix (spot-check the wording for a few).
#[test]
fn error_messages_name_the_problem() {
    let records = records();
    let find = |id: &str| {
        records
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    let cases = [
        ("err-invalid-thinking-mode", "thinking_mode"),
        ("err-null-thinking-mode", "thinking_mode"),
        ("err-invalid-effort", "reasoning_effort"),
        ("err-unknown-role-chat", "unknown role \"function\""),
        ("err-developer-empty", "developer"),
        ("err-user-null-content", "user content must be a string"),
        ("err-user-content-parts", "found array"),
        ("err-invalid-task", "summarize"),
        ("err-args-json-array", "found array"),
        ("err-args-json-null", "found null"),
        ("err-tool-without-function", "tools[0]"),
        ("err-tool-call-without-function", "\"function\""),
        ("err-tool-call-missing-arguments", "\"arguments\""),
        ("err-tool-call-missing-name", "\"name\""),
    ];
    for (id, needle) in cases {
        let r = find(id);
        let err = encode_json(&r["input"]["messages"], &r["input"]["kwargs"])
            .expect_err(id)
            .to_string();
        assert!(
            err.contains(needle),
            "{id}: {err:?} should mention {needle:?}"
        );
    }
}
