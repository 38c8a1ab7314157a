//! `v4 chat encode` as a user runs it: the whole public `encode.jsonl` piped through the binary,
//! every reply checked (prompt and token ids equal to the reference, error records answered
//! with an `"error"` key), plus malformed lines that must not stop the filter.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    assert!(
        path.is_file(),
        "fixture missing at {} (../shared beside the project root)",
        path.display()
    );
    path
}

/// Runs `v4 chat encode` with `input` on stdin; returns the parsed stdout lines.
fn run_filter(input: &[u8]) -> Vec<Value> {
    let tokenizer = shared("tokenizer/deepseek-v4/tokenizer.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["chat", "encode", "--tokenizer"])
        .arg(&tokenizer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start v4");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("run v4");
    writer.join().expect("writer thread").expect("write stdin");
    assert!(
        out.status.success(),
        "v4 chat encode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l:?}: {e}")))
        .collect()
}

#[test]
fn encode_jsonl_through_the_binary() {
    let fixture = std::fs::read(shared("fixtures/chat-v4/encode.jsonl")).expect("read fixture");
    let records: Vec<Value> = String::from_utf8(fixture.clone())
        .expect("UTF-8 fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect();
    let replies = run_filter(&fixture);
    assert_eq!(replies.len(), records.len(), "one reply per record");
    let (mut ok, mut errors) = (0, 0);
    for (want, got) in records.iter().zip(&replies) {
        let id = &want["id"];
        assert_eq!(&got["id"], id);
        if want.get("error_type").is_some() {
            assert!(
                got["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{id}: expected an error, got {got}"
            );
            assert!(got.get("prompt").is_none(), "{id}: {got}");
            errors += 1;
        } else {
            assert!(got.get("error").is_none(), "{id}: unexpected error {got}");
            assert_eq!(got["prompt"], want["prompt"], "{id}: prompt");
            assert_eq!(got["token_ids"], want["token_ids"], "{id}: token ids");
            ok += 1;
        }
    }
    println!("v4 chat encode: {ok} prompts + token ids equal, {errors} errors reported");
    assert_eq!((ok, errors), (133, 15));
}

#[test]
fn malformed_lines_get_error_replies_and_the_filter_goes_on() {
    let good = r#"{"id": "g", "input": {"messages": [{"role": "user", "content": "hi"}], "kwargs": {"thinking_mode": "chat"}}, "extra": 1}"#;
    let mut input = Vec::new();
    for line in [
        "not json",
        r#"{"id": 1}"#,
        r#"{"id": 2, "input": {"messages": []}}"#,
        r#"{"id": 3, "input": {"kwargs": {"thinking_mode": "chat"}}}"#,
        r#"{"id": 4, "input": {"messages": {}, "kwargs": {"thinking_mode": "chat"}}}"#,
        "",
        good,
    ] {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(b"\xff\xfe\n");
    input.extend_from_slice(good.as_bytes()); // last line without a newline
    let replies = run_filter(&input);
    assert_eq!(replies.len(), 8, "{replies:?}");
    for (reply, id) in
        replies[..5]
            .iter()
            .zip([Value::Null, 1.into(), 2.into(), 3.into(), 4.into()])
    {
        assert_eq!(reply["id"], id);
        assert!(reply["error"].is_string(), "{reply}");
    }
    assert!(
        replies[6]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UTF-8"))
    );
    for reply in [&replies[5], &replies[7]] {
        assert_eq!(reply["id"], "g");
        assert_eq!(
            reply["prompt"],
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>"
        );
        assert_eq!(
            reply["token_ids"],
            serde_json::json!([0, 128803, 6366, 128804, 128822])
        );
    }
}
