//! `v4 tokenize`: the whole of `shared/fixtures/chat-v4/tokenize.jsonl` through the binary, every
//! output record compared with the fixture; plus malformed input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    assert!(
        path.exists(),
        "required fixture is missing: {}",
        path.display()
    );
    path
}

/// Runs `v4 tokenize` on `input`; returns the parsed output lines.
fn tokenize(input: &[u8]) -> Vec<Value> {
    let tokenizer = shared("tokenizer/deepseek-v4/tokenizer.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_v4"))
        .arg("tokenize")
        .arg("--tokenizer")
        .arg(&tokenizer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn v4");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).expect("write stdin"));
    let out = child.wait_with_output().expect("run v4");
    writer.join().expect("writer thread");
    assert!(
        out.status.success(),
        "v4 tokenize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l:?}: {e}")))
        .collect()
}

#[test]
fn whole_fixture_through_the_binary() {
    let path = shared("fixtures/chat-v4/tokenize.jsonl");
    let input = std::fs::read(&path).expect("read fixture");
    let records: Vec<Value> = String::from_utf8(input.clone())
        .expect("UTF-8 fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture JSON"))
        .collect();
    let outputs = tokenize(&input);
    assert_eq!(
        outputs.len(),
        records.len(),
        "one output line per input line"
    );
    let (mut encodes, mut decodes, mut errors) = (0, 0, 0);
    for (rec, out) in records.iter().zip(&outputs) {
        let id = &rec["id"];
        assert_eq!(&out["id"], id, "ids in order");
        let out = out.as_object().expect("object");
        match rec["kind"].as_str().expect("kind") {
            "encode" => {
                encodes += 1;
                assert_eq!(out.len(), 2, "{id}: {out:?}");
                assert_eq!(out["ids"], rec["ids"], "{id}: ids");
            }
            "decode" => {
                decodes += 1;
                assert_eq!(out.len(), 5, "{id}: {out:?}");
                for key in [
                    "text",
                    "text_skip_special",
                    "stream_chunks",
                    "stream_chunks_skip_special",
                ] {
                    assert_eq!(out[key], rec[key], "{id}: {key}");
                }
            }
            _ => {
                errors += 1;
                assert!(
                    out["error"].as_str().expect("error").contains("byte_table"),
                    "{id}"
                );
            }
        }
    }
    assert_eq!((encodes, decodes, errors), (204, 16, 1));
}

#[test]
fn malformed_lines_get_errors_and_the_filter_goes_on() {
    let input = concat!(
        "{\"id\": 1, \"kind\": \"encode\", \"text\": \"Hi\"}\n",
        "\n",
        "   \n",
        "not json\n",
        "{\"id\": \"a\", \"kind\": \"decode\", \"ids\": [23166, 4294967296]}\n",
        "{\"id\": \"b\", \"kind\": \"decode\", \"ids\": [23166, -1]}\n",
        "{\"id\": \"c\", \"kind\": \"decode\", \"ids\": [23166, 999999]}\n",
        "{\"id\": \"d\", \"kind\": \"encode\"}\n",
        "{\"id\": \"e\", \"kind\": \"nope\"}\n",
        "[1, 2]\n",
        "{\"id\": {\"x\": 1}, \"kind\": \"decode\", \"ids\": [0, 23166, 1]}\n",
        "{\"id\": 9, \"kind\": \"encode\", \"text\": \"<think>\"}",
    );
    let mut bytes = input.as_bytes().to_vec();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    let out = tokenize(&bytes);
    assert_eq!(out.len(), 11, "{out:?}");
    assert_eq!(out[0], serde_json::json!({"id": 1, "ids": [23166]}));
    assert_eq!(out[1]["id"], Value::Null);
    assert!(out[1]["error"].as_str().expect("error").contains("JSON"));
    assert_eq!(out[2]["id"], "a");
    assert!(
        out[2]["error"]
            .as_str()
            .expect("error")
            .contains("4294967296")
    );
    assert!(out[3]["error"].as_str().expect("error").contains("-1"));
    // Like the reference decoder, ids outside the vocabulary are ignored (chunk null).
    assert_eq!(out[4]["text"], "Hi", "{:?}", out[4]);
    assert_eq!(out[4]["stream_chunks"][1], Value::Null);
    assert!(out[5]["error"].as_str().expect("error").contains("text"));
    assert!(out[6]["error"].as_str().expect("error").contains("nope"));
    assert_eq!(out[7]["id"], Value::Null);
    assert!(out[7]["error"].is_string());
    assert_eq!(out[8]["id"], serde_json::json!({"x": 1}));
    assert_eq!(
        out[8]["text"],
        "<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>"
    );
    assert_eq!(out[8]["text_skip_special"], "Hi");
    assert_eq!(
        out[8]["stream_chunks_skip_special"],
        serde_json::json!([null, "Hi", null])
    );
    assert_eq!(out[9], serde_json::json!({"id": 9, "ids": [128821]}));
    assert_eq!(out[10]["id"], Value::Null);
    assert!(out[10]["error"].as_str().expect("error").contains("UTF-8"));
}

#[test]
fn missing_tokenizer_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["tokenize", "--tokenizer", "/nonexistent/tok.json"])
        .stdin(Stdio::null())
        .output()
        .expect("run v4");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tok.json"));
}

/// `--tokenizer owner/name` resolves through the Hugging Face cache (offline here, a cache laid
/// out as Python's) and gives the same ids as the file itself; an uncached repo offline is a
/// clear error.
#[test]
fn tokenizer_from_a_repo_id() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo = cache.path().join("models--deepseek-ai--DeepSeek-V4-Flash");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::copy(
        shared("tokenizer/deepseek-v4/tokenizer.json"),
        repo.join("blobs/tokenizer-blob"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/tokenizer-blob",
        repo.join("snapshots").join(commit).join("tokenizer.json"),
    )
    .unwrap();
    let run = |spec: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_v4"))
            .args(["tokenize", "--tokenizer", spec])
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn v4");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"id\":1,\"kind\":\"encode\",\"text\":\"Hello, DeepSeek-V4!\"}\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let by_repo = run("deepseek-ai/DeepSeek-V4-Flash");
    assert!(
        by_repo.status.success(),
        "{}",
        String::from_utf8_lossy(&by_repo.stderr)
    );
    let by_file = run(shared("tokenizer/deepseek-v4/tokenizer.json")
        .to_str()
        .unwrap());
    assert!(by_file.status.success());
    assert_eq!(by_repo.stdout, by_file.stdout);
    assert!(String::from_utf8_lossy(&by_repo.stdout).contains("\"ids\""));

    let missing = run("deepseek-ai/not-cached");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("deepseek-ai/not-cached") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}
