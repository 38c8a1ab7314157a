//! `v4 chat parse` run as a user would: `shared/fixtures/chat-v4/parse.jsonl` piped through the
//! binary must come back as the fixture (`expected` byte-identical, errors with the reference's
//! `error_type` and `error`), with bad lines answered by an error line and no stop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/chat-v4/parse.jsonl"
);
const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/tokenizer/deepseek-v4/tokenizer.json"
);

fn records() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("parse fixture missing at {FIXTURE}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

fn parser() -> std::process::Child {
    assert!(
        std::path::Path::new(TOKENIZER).is_file(),
        "tokenizer missing at {TOKENIZER}"
    );
    Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["chat", "parse", "--tokenizer", TOKENIZER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run v4 chat parse")
}

#[test]
fn fixture_round_trips_through_the_cli() {
    let records = records();
    let mut child = parser();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    // One line in, one line out, before stdin is closed (flushed per line).
    let first = json!({"id": records[0]["id"], "input": records[0]["input"]});
    writeln!(stdin, "{first}").unwrap();
    let mut reply = String::new();
    stdout.read_line(&mut reply).unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["expected"], records[0]["expected"]);

    let mut requests: Vec<String> = records[1..]
        .iter()
        .map(|r| json!({"id": r["id"], "input": r["input"]}).to_string())
        .collect();
    requests.push("not json".into());
    requests.push(format!("\n{}", json!({"id": "no-input"})));
    let text = "a<｜end▁of▁sentence｜>";
    requests.push(
        json!({"id": "null-mode", "input": {"text": text, "thinking_mode": null}}).to_string(),
    );
    let writer = std::thread::spawn(move || {
        for request in requests {
            writeln!(stdin, "{request}").unwrap();
        }
    });
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("reply is JSON"))
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());

    assert_eq!(
        replies.len(),
        records.len() - 1 + 3,
        "one reply per non-blank line"
    );
    let (mut equal, mut rejected) = (1, 0);
    for (r, reply) in records[1..].iter().zip(&replies) {
        assert_eq!(reply["id"], r["id"]);
        if let Some(expected) = r.get("expected") {
            // Byte-identical JSON, key order included.
            assert_eq!(
                reply["expected"].to_string(),
                expected.to_string(),
                "{}",
                r["id"]
            );
            assert_eq!(reply.as_object().unwrap().len(), 2);
            equal += 1;
        } else {
            assert_eq!(reply.get("expected"), None, "{}: accepted", r["id"]);
            assert_eq!(reply["error_type"], r["error_type"], "{}", r["id"]);
            assert_eq!(reply["error"], r["error"], "{}", r["id"]);
            rejected += 1;
        }
    }
    assert_eq!((equal, rejected), (39, 39));
    let tail = &replies[records.len() - 1..];
    assert_eq!(
        (&tail[0]["id"], &tail[0]["error_type"]),
        (&Value::Null, &json!("InvalidRequest"))
    );
    assert_eq!(
        (&tail[1]["id"], &tail[1]["error_type"]),
        (&json!("no-input"), &json!("InvalidRequest"))
    );
    assert_eq!(
        tail[2]["expected"]["content"], "a",
        "a null thinking_mode is chat"
    );
}

#[test]
fn missing_tokenizer_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args([
            "chat",
            "parse",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run v4");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer"));
}
