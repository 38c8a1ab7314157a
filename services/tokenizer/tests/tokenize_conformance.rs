//! Conformance of the tokenizer with the reference (PyPI `tokenizers` 0.23.3):
//! every record of `shared/fixtures/chat-v4/tokenize.jsonl`, the `token_ids` of every prompt in
//! `encode.jsonl`, and the anchor strings of `shared/design/crates.md` §6.
//!
//! Fixtures are required: a missing file panics with its path (tests never skip).

use serde_json::Value;
use v4_tokenizer::Tokenizer;
use v4_tokenizer::stream::{DecodeStream, stream_chunks};
use v4_tokenizer::tokenizer::{PARALLEL_MIN_BYTES, split_at_safe_points};

mod common;

use common::{shared, tok};

fn records(rel: &str) -> Vec<Value> {
    let path = shared(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: bad line: {e}", path.display()))
        })
        .collect()
}

fn tokenize_records(kind: &str) -> Vec<Value> {
    let all: Vec<Value> = records("fixtures/chat-v4/tokenize.jsonl")
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect();
    assert!(!all.is_empty(), "no {kind} records in tokenize.jsonl");
    all
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn chunks_of(v: &Value) -> Vec<Option<String>> {
    v.as_array()
        .expect("chunks array")
        .iter()
        .map(|c| c.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn identity_and_special_ids() {
    let t = tok();
    assert!(
        t.has_fast_path(),
        "DeepSeek-V4's tokenizer.json must take the fast encode path"
    );
    assert_eq!(t.vocab_size(), 129_280);
    assert_eq!(
        t.sha256_hex(),
        "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"
    );
    let s = t.special_ids();
    assert_eq!((s.bos, s.eos, s.pad), (0, 1, Some(2)));
    assert_eq!((s.user, s.assistant), (128_803, 128_804));
    assert_eq!(
        (s.think_start, s.think_end, s.dsml),
        (128_821, 128_822, 128_825)
    );
    assert!(t.is_special(0) && t.is_special(1) && t.is_special(128_846) && t.is_special(129_279));
    assert!(!t.is_special(128_803) && !t.is_special(128_821) && !t.is_special(23166));
    assert_eq!(t.id_to_token(128_821).as_deref(), Some("<think>"));
    assert_eq!(t.token_to_id("｜DSML｜"), Some(128_825));
    assert_eq!(t.id_to_token(129_280), None);
}

#[test]
fn load_errors_name_the_file() {
    let missing = std::path::Path::new("/nonexistent/dir/tokenizer.json");
    let err = Tokenizer::from_file(missing)
        .expect_err("missing file must fail")
        .to_string();
    assert!(err.contains("/nonexistent/dir/tokenizer.json"), "{err}");
    assert!(Tokenizer::from_bytes(b"{not json").is_err());
}

#[test]
fn encode_records() {
    let t = tok();
    let recs = tokenize_records("encode");
    assert_eq!(recs.len(), 204);
    for r in &recs {
        let id = r["id"].as_str().expect("id");
        let text = r["text"].as_str().expect("text");
        let want = ids_of(&r["ids"]);
        assert_eq!(t.encode(text), want, "{id}: encode");
        assert_eq!(t.encode_one(text), want, "{id}: encode_one");
        assert_eq!(t.encode_reference(text), want, "{id}: encode_reference");
        assert_eq!(t.count(text), want.len(), "{id}: count");
        let tokens: Vec<String> = want
            .iter()
            .map(|&i| t.id_to_token(i).expect("token"))
            .collect();
        let want_tokens: Vec<String> = r["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|s| s.as_str().expect("token").to_owned())
            .collect();
        assert_eq!(tokens, want_tokens, "{id}: tokens");
        assert_eq!(
            t.decode(&want, false).expect("decode"),
            text,
            "{id}: round trip"
        );
    }
}

/// Ids of a decode record, with the positions of ids the reference ignores (outside the
/// vocabulary; we reject them instead).
fn split_out_of_range(t: &Tokenizer, ids: &[u32]) -> (Vec<u32>, Vec<usize>) {
    let bad: Vec<usize> = (0..ids.len())
        .filter(|&i| ids[i] as usize >= t.vocab_size())
        .collect();
    let good = ids
        .iter()
        .copied()
        .filter(|&i| (i as usize) < t.vocab_size())
        .collect();
    (good, bad)
}

#[test]
fn decode_records() {
    let t = tok();
    let recs = tokenize_records("decode");
    assert_eq!(recs.len(), 16);
    let mut rejected = 0;
    for r in &recs {
        let id = r["id"].as_str().expect("id");
        let ids = ids_of(&r["ids"]);
        let (good, bad) = split_out_of_range(t, &ids);
        let mut want = [
            chunks_of(&r["stream_chunks"]),
            chunks_of(&r["stream_chunks_skip_special"]),
        ];
        if let Some(&first) = bad.first() {
            // The reference silently drops these ids; we reject them, naming the id ...
            rejected += 1;
            let bad_id = ids[first];
            for skip in [false, true] {
                let err = t
                    .decode(&ids, skip)
                    .expect_err("out-of-range id")
                    .to_string();
                assert!(err.contains(&bad_id.to_string()), "{id}: {err}");
                let err = stream_chunks(t, &ids, skip)
                    .expect_err("out-of-range id")
                    .to_string();
                assert!(err.contains(&bad_id.to_string()), "{id}: {err}");
            }
            // ... and without them everything else is as the reference (their chunks were null).
            for w in &mut want {
                for &i in bad.iter().rev() {
                    assert_eq!(w.remove(i), None, "{id}: chunk of an ignored id");
                }
            }
        }
        assert_eq!(
            t.decode(&good, false).expect("decode"),
            r["text"],
            "{id}: text"
        );
        assert_eq!(
            t.decode(&good, true).expect("decode"),
            r["text_skip_special"],
            "{id}: skip"
        );
        for (skip, want) in [false, true].into_iter().zip(&want) {
            let got = stream_chunks(t, &good, skip).expect("stream");
            assert_eq!(&got, want, "{id}: stream_chunks (skip_special={skip})");
        }
        if bad.is_empty() {
            let prefixes = r["prefix_texts"].as_array().expect("prefix_texts");
            for (k, want) in prefixes.iter().enumerate() {
                let got = t.decode(&ids[..=k], false).expect("decode");
                assert_eq!(&got, want, "{id}: prefix_texts[{k}]");
            }
        }
    }
    assert_eq!(
        rejected, 1,
        "exactly one record (dec-012) has out-of-range ids"
    );
}

#[test]
fn stream_finish_flushes_held_back_tail() {
    let t = tok();
    // dec-009: "there34" then the first bytes of a character that never completes.
    let ids = [21908, 2012, 53153];
    let mut s = DecodeStream::new(false);
    let mut out = String::new();
    for id in ids {
        if let Some(c) = s.step(t, id).expect("step") {
            out.push_str(&c);
        }
    }
    assert_eq!(out, "there34");
    assert_eq!(s.finish(t).expect("finish").as_deref(), Some("\u{FFFD}"));
    assert_eq!(
        s.finish(t).expect("finish"),
        None,
        "finish resets the stream"
    );
    // A bad id is an error and leaves the stream usable.
    let err = s.step(t, 999_999).expect_err("bad id").to_string();
    assert!(err.contains("999999"), "{err}");
    assert_eq!(s.step(t, 23166).expect("step").as_deref(), Some("Hi"));
}

#[test]
fn byte_table() {
    let t = tok();
    let recs = tokenize_records("byte_table");
    let table = recs[0]["table"].as_array().expect("table");
    assert_eq!(table.len(), 256);
    for row in table {
        let byte = row[0].as_u64().expect("byte");
        let id = u32::try_from(row[1].as_u64().expect("id")).expect("u32");
        let token = row[2].as_str().expect("token");
        assert_eq!(t.token_to_id(token), Some(id), "byte {byte}");
        assert_eq!(t.id_to_token(id).as_deref(), Some(token), "byte {byte}");
        let want = if byte < 0x80 {
            char::from(byte as u8).to_string()
        } else {
            "\u{FFFD}".into()
        };
        assert_eq!(t.decode(&[id], false).expect("decode"), want, "byte {byte}");
    }
}

#[test]
fn encode_jsonl_prompts() {
    let t = tok();
    let mut n = 0;
    for r in records("fixtures/chat-v4/encode.jsonl") {
        let (Some(prompt), Some(ids)) = (r["prompt"].as_str(), r.get("token_ids")) else {
            assert!(
                r.get("error_type").is_some(),
                "{}: neither prompt nor error",
                r["id"]
            );
            continue;
        };
        assert_eq!(t.encode(prompt), ids_of(ids), "{}: token_ids", r["id"]);
        n += 1;
    }
    assert_eq!(n, 133);
}

#[test]
fn crates_md_anchors() {
    let t = tok();
    let anchors: [(&str, &[u32]); 3] = [
        (
            "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ",
            &[
                19923, 3, 223, 5464, 5008, 1175, 19, 940, 223, 19, 438, 223, 20, 6113, 257, 76589,
                131, 100, 76032, 1628, 76589, 131, 108, 76589, 131, 98,
            ],
        ),
        (
            "深度求索的模型很强大。fn main() {\n    let x: Vec<u32> = (0..12345).collect();\n    println!(\"{}\", x.len());\n}",
            &[
                17180, 1645, 4568, 301, 8842, 1168, 22038, 320, 28952, 1840, 1393, 875, 361, 2513,
                1527, 28, 50526, 30, 87, 2111, 32, 438, 343, 18, 426, 6895, 1883, 797, 45684, 2745,
                361, 42432, 64325, 25902, 1760, 1527, 92796, 9477, 95,
            ],
        ),
        (
            "<｜User｜>写一个快速排序<｜Assistant｜><think>好的</think>def qsort(a): return a",
            &[
                128803, 2935, 1057, 9789, 23758, 128804, 128821, 3648, 128822, 3465, 5618, 34670,
                6036, 2605, 1354, 260,
            ],
        ),
    ];
    for (text, want) in anchors {
        assert_eq!(t.encode(text), want, "{text:?}");
        assert_eq!(t.decode(want, false).expect("decode"), text);
    }
    // The only overlap between a `normalized: false` token (`<｜/table>｜`) and a
    // `normalized: true` one (`｜DSML｜`): the non-normalized pass runs first, as in `tokenizers`.
    let overlap = "<｜/table>｜DSML｜";
    let ids = t.encode(overlap);
    assert_eq!(ids, t.encode_reference(overlap));
    assert_eq!(ids[0], 129_265, "{ids:?}");
    assert!(!ids.contains(&128_825), "{ids:?}");
    // No BOS is ever added (G9).
    assert_eq!(t.encode("Hi"), [23166]);
    // G10: whitespace before code follows HF tokenizers, not ds_token.
    let ids = t.encode("{\n    let");
    assert!(ids.ends_with(&[361, 2513]), "{ids:?}");
}

#[test]
fn parallel_split_matches_one_shot() {
    let t = tok();
    // A long text built from all fixture prompts: splitting must not change a single id.
    let mut text = String::new();
    for r in records("fixtures/chat-v4/encode.jsonl") {
        if let Some(p) = r["prompt"].as_str() {
            text.push_str(p);
            text.push('\n');
        }
    }
    for target in [2, 7, 64, 1000] {
        let pieces = split_at_safe_points(&text, target);
        assert_eq!(pieces.concat(), text);
        let joined: Vec<u32> = pieces.iter().flat_map(|p| t.encode_one(p)).collect();
        assert_eq!(joined, t.encode_one(&text), "target {target}");
    }
    // Long enough for the parallel path: numbered copies (so that the word caches of the
    // threads see both repeated and fresh words).
    let mut long = String::new();
    for i in 0.. {
        if long.len() > PARALLEL_MIN_BYTES {
            break;
        }
        long.push_str(&format!("## copy {i}\n"));
        long.push_str(&text);
    }
    let want = t.encode_reference(&long);
    assert_eq!(t.encode(&long), want);
    assert_eq!(t.encode_one(&long), want);
    // Cut rules: only after '\n' followed by a non-whitespace char.
    assert_eq!(
        split_at_safe_points("a\n\n b\n\nc\nd", 100),
        ["a\n\n b\n\n", "c\n", "d"]
    );
    assert_eq!(split_at_safe_points("no newline", 4), ["no newline"]);
    assert_eq!(split_at_safe_points("", 4), [""]);
}

#[test]
fn pathological_long_inputs() {
    let t = tok();
    for text in [
        " ".repeat(200_000),
        format!("{}x", " ".repeat(100_000)),
        "\n".repeat(100_000),
        " \n".repeat(50_000),
        "9".repeat(100_000),
        "字".repeat(50_000),
        "a".repeat(100_000),
        "!".repeat(100_000),
    ] {
        let ids = t.encode(&text);
        assert_eq!(ids, t.encode_reference(&text), "len {}", text.len());
        assert_eq!(
            t.decode(&ids, false).expect("decode"),
            text,
            "len {}",
            text.len()
        );
    }
}
