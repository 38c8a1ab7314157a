//! Property tests of the tokenizer and the streaming decoder.
//!
//! What is asserted, precisely:
//!
//! * `encode(s)` equals `tokenizers`' own encode (`encode_reference`) and `decode(encode(s)) == s`
//!   for every string (arbitrary Unicode, and mixes of CJK, emoji,
//!   whitespace, digits and added-token texts).
//! * Cutting a text at [`split_at_safe_points`] never changes its ids.
//! * Streaming, for any sequence of valid ids (from encoded text, or random, which may decode to
//!   invalid UTF-8), with and without `skip_special`, after each step `k`:
//!   - no chunk is empty or ends with U+FFFD (an incomplete character is never emitted);
//!   - the text emitted so far is a prefix of `decode(ids[..=k])` — so a chunk contains U+FFFD
//!     only where the full decode has one — and equals it whenever that decode does not end
//!     with U+FFFD (nothing is held back longer than necessary);
//!   - after `finish`, the concatenation equals `decode(ids)` exactly.

use std::sync::OnceLock;

use proptest::prelude::*;
use v4_tokenizer::stream::DecodeStream;
use v4_tokenizer::tokenizer::split_at_safe_points;

mod common;

use common::{shared, tok};

/// Ids of the 256 single-byte tokens (from the fixture byte table): random sequences of these
/// produce split and invalid UTF-8 far more often than uniformly random ids.
fn byte_ids() -> &'static [u32] {
    static IDS: OnceLock<Vec<u32>> = OnceLock::new();
    IDS.get_or_init(|| {
        let path = shared("fixtures/chat-v4/tokenize.jsonl");
        let text = std::fs::read_to_string(&path).expect("read tokenize.jsonl");
        let rec: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
            .find(|r| r["kind"] == "byte_table")
            .expect("byte_table record");
        let ids: Vec<u32> = rec["table"]
            .as_array()
            .expect("table")
            .iter()
            .map(|row| u32::try_from(row[1].as_u64().expect("id")).expect("u32"))
            .collect();
        assert_eq!(ids.len(), 256);
        ids
    })
}

/// Pieces that exercise every branch of the pre-tokenizer and multi-byte decoding.
const PIECES: &[&str] = &[
    "深度求索",
    "的",
    "吾輩は猫",
    "カタカナ",
    "한국어",
    "𠮷",
    "々",
    "ｱｲ",
    "😀",
    "👩‍💻",
    "🇫🇷",
    "👍🏽",
    "1️⃣",
    "é",
    "e\u{301}",
    "\u{FFFD}",
    "\u{0}",
    "\u{FEFF}",
    "\u{10FFFF}",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\n\n",
    " \n ",
    "\u{3000}",
    "\u{a0}",
    "0",
    "12345",
    "٣٤",
    "①",
    "x²",
    "3.14",
    "-7",
    "Hello",
    " world",
    "don't",
    "fn",
    "(",
    ")",
    "{",
    "}",
    ";",
    "...",
    "!",
    "?",
    "<",
    ">",
    "=",
    "\"",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "｜DSML｜",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜▁pad▁｜>",
    "<｜image｜>",
    "<|EOT|>",
    "<｜User",
    "｜>",
];

fn mixed_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(PIECES).prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
            1 => "[a-zA-Z0-9 ]{1,12}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// The texts of all added tokens.
fn added_texts() -> &'static [String] {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut texts: Vec<String> = tok()
            .inner()
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .collect();
        texts.sort();
        texts
    })
}

/// Added tokens, whole or cut at a char boundary, glued together with a little text: stresses
/// the leftmost-longest matching and the order of the normalized / non-normalized passes.
fn added_token_soup() -> impl Strategy<Value = String> {
    let piece = (
        prop::sample::select(added_texts()),
        any::<prop::sample::Index>(),
        0u8..4,
    )
        .prop_map(|(text, cut, mode)| {
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            let at = bounds[cut.index(bounds.len())];
            match mode {
                0 => text[..at].to_owned(),
                1 => text[at..].to_owned(),
                _ => text,
            }
        });
    prop::collection::vec(prop_oneof![4 => piece, 1 => "[ a<>|｜▁]{0,3}"], 0..12)
        .prop_map(|parts| parts.concat())
}

fn random_ids() -> impl Strategy<Value = Vec<u32>> {
    let vocab = u32::try_from(tok().vocab_size()).expect("vocab fits u32");
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(byte_ids()),
            2 => 0..vocab,
            1 => 128_000..vocab,
            1 => 0u32..3,
        ],
        0..48,
    )
}

/// Checks the streaming properties listed in the module doc for one id sequence.
fn check_stream(ids: &[u32], skip_special: bool) -> Result<(), TestCaseError> {
    let t = tok();
    let mut stream = DecodeStream::new(skip_special);
    let mut emitted = String::new();
    for k in 0..ids.len() {
        let chunk = stream
            .step(t, ids[k])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(chunk) = chunk {
            prop_assert!(!chunk.is_empty(), "empty chunk at {}", k);
            prop_assert!(
                !chunk.ends_with('\u{FFFD}'),
                "chunk {:?} ends with U+FFFD",
                chunk
            );
            emitted.push_str(&chunk);
        }
        let full = t.decode(&ids[..=k], skip_special).expect("valid ids");
        prop_assert!(
            full.starts_with(&emitted),
            "step {}: {:?} not a prefix of {:?}",
            k,
            emitted,
            full
        );
        if !full.ends_with('\u{FFFD}') {
            prop_assert_eq!(&emitted, &full, "step {}: held back too much", k);
        }
    }
    if let Some(rest) = stream
        .finish(t)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
    {
        emitted.push_str(&rest);
    }
    prop_assert_eq!(emitted, t.decode(ids, skip_special).expect("valid ids"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_arbitrary_unicode(s in any::<String>()) {
        let t = tok();
        let ids = t.encode(&s);
        prop_assert_eq!(&ids, &t.encode_reference(&s));
        prop_assert_eq!(t.decode(&ids, false).expect("decode"), s);
    }

    #[test]
    fn round_trip_mixed_text(s in mixed_text()) {
        let t = tok();
        let ids = t.encode(&s);
        prop_assert_eq!(&ids, &t.encode_reference(&s));
        prop_assert_eq!(t.count(&s), ids.len());
        prop_assert_eq!(t.decode(&ids, false).expect("decode"), s);
    }

    #[test]
    fn added_tokens_match_like_the_reference(s in added_token_soup()) {
        let t = tok();
        let ids = t.encode(&s);
        prop_assert_eq!(&ids, &t.encode_reference(&s));
        prop_assert_eq!(t.decode(&ids, false).expect("decode"), s);
    }

    #[test]
    fn safe_split_points_do_not_change_ids(s in mixed_text(), target in 1usize..12) {
        let t = tok();
        let pieces = split_at_safe_points(&s, target);
        prop_assert_eq!(pieces.concat(), s.clone());
        let joined: Vec<u32> = pieces.iter().flat_map(|p| t.encode_one(p)).collect();
        prop_assert_eq!(joined, t.encode_one(&s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn stream_of_encoded_text(s in mixed_text(), skip in any::<bool>()) {
        check_stream(&tok().encode(&s), skip)?;
    }

    #[test]
    fn stream_of_random_ids(ids in random_ids(), skip in any::<bool>()) {
        check_stream(&ids, skip)?;
    }

    #[test]
    fn stream_rejects_out_of_range_ids_without_losing_state(
        ids in random_ids(), bad in 129_280u32.., at in any::<prop::sample::Index>()
    ) {
        let t = tok();
        let mut stream = DecodeStream::new(false);
        let mut emitted = String::new();
        let at = if ids.is_empty() { 0 } else { at.index(ids.len()) };
        for (k, &id) in ids.iter().enumerate() {
            if k == at {
                let err = stream.step(t, bad).expect_err("out of range").to_string();
                prop_assert!(err.contains(&bad.to_string()), "{}", err);
            }
            if let Some(c) = stream.step(t, id).expect("valid id") {
                emitted.push_str(&c);
            }
        }
        emitted.extend(stream.finish(t).expect("finish"));
        prop_assert_eq!(emitted, t.decode(&ids, false).expect("decode"));
    }
}
