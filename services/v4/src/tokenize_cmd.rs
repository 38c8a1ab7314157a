//! `v4 tokenize --tokenizer FILE`: a JSON-lines filter over the DeepSeek-V4 tokenizer.
//!
//! One output line per non-blank input line, flushed at once:
//!
//! * `{"id", "kind": "encode", "text"}` → `{"id", "ids"}`
//! * `{"id", "kind": "decode", "ids"}` → `{"id", "text", "text_skip_special", "stream_chunks",
//!   "stream_chunks_skip_special"}` (chunks per id, `null` where a streaming step yields nothing;
//!   the format of `shared/fixtures/chat-v4/tokenize.jsonl`)
//!   Like the reference decoder, ids outside the vocabulary are ignored here (their chunk is
//!   `null`); the library's `Tokenizer::decode` rejects them instead.
//! * anything else (bad JSON, unknown kind, missing field, an id that is not a u32) →
//!   `{"id", "error": "..."}` with `id` copied from the input (`null` if unreadable); the filter
//!   goes on with the next line.

use std::path::Path;

use serde_json::{Map, Value, json};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::stream::DecodeStream;

/// Runs the filter from stdin to stdout until end of input.
pub fn run(tokenizer: &Path) -> anyhow::Result<()> {
    let tok = Tokenizer::from_file(tokenizer)?;
    crate::jsonl::filter(
        |text| handle_line(&tok, text),
        |msg| error_reply(Value::Null, msg),
    )
}

/// The reply to one input line.
fn handle_line(tok: &Tokenizer, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error_reply(Value::Null, format!("invalid JSON: {e}")),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    match answer(tok, &request) {
        Ok(fields) => {
            let mut reply = Map::new();
            reply.insert("id".into(), id);
            reply.extend(fields);
            Value::Object(reply)
        }
        Err(message) => error_reply(id, message),
    }
}

/// The reply fields (besides `id`) for a well-formed request, or an error message.
fn answer(tok: &Tokenizer, request: &Value) -> Result<Map<String, Value>, String> {
    let Some(obj) = request.as_object() else {
        return Err("request must be a JSON object".into());
    };
    let mut fields = Map::new();
    match obj.get("kind").and_then(Value::as_str) {
        Some("encode") => {
            let text = obj
                .get("text")
                .and_then(Value::as_str)
                .ok_or("encode needs a string field \"text\"")?;
            fields.insert("ids".into(), json!(tok.encode(text)));
        }
        Some("decode") => {
            let ids = parse_ids(obj.get("ids"))?;
            let known: Vec<u32> = ids.iter().copied().filter(|&i| in_vocab(tok, i)).collect();
            let text = tok.decode(&known, false).map_err(|e| e.to_string())?;
            let text_skip = tok.decode(&known, true).map_err(|e| e.to_string())?;
            let chunks = chunks_ignoring_unknown(tok, &ids, false)?;
            let chunks_skip = chunks_ignoring_unknown(tok, &ids, true)?;
            fields.insert("text".into(), json!(text));
            fields.insert("text_skip_special".into(), json!(text_skip));
            fields.insert("stream_chunks".into(), json!(chunks));
            fields.insert("stream_chunks_skip_special".into(), json!(chunks_skip));
        }
        Some(other) => {
            return Err(format!(
                "unknown kind {other:?} (expected encode or decode)"
            ));
        }
        None => return Err("missing string field \"kind\" (encode or decode)".into()),
    }
    Ok(fields)
}

fn in_vocab(tok: &Tokenizer, id: u32) -> bool {
    (id as usize) < tok.vocab_size()
}

/// Streaming chunks per id, `None` for ids outside the vocabulary (which are skipped).
fn chunks_ignoring_unknown(
    tok: &Tokenizer,
    ids: &[u32],
    skip_special: bool,
) -> Result<Vec<Option<String>>, String> {
    let mut stream = DecodeStream::new(skip_special);
    ids.iter()
        .map(|&id| {
            if in_vocab(tok, id) {
                stream.step(tok, id).map_err(|e| e.to_string())
            } else {
                Ok(None)
            }
        })
        .collect()
}

/// `ids` must be an array of integers in `0..2^32`.
fn parse_ids(value: Option<&Value>) -> Result<Vec<u32>, String> {
    let array = value
        .and_then(Value::as_array)
        .ok_or("decode needs an array field \"ids\"")?;
    array
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("bad token id {v}: not an integer in 0..2^32"))
        })
        .collect()
}

fn error_reply(id: Value, message: String) -> Value {
    json!({ "id": id, "error": message })
}
