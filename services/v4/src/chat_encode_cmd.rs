//! `v4 chat encode --tokenizer FILE`: a JSON-lines filter over the DeepSeek-V4 chat encoder.
//!
//! One output line per non-blank input line, flushed at once:
//!
//! * `{"id", "input": {"messages", "kwargs"}}` (the format of
//!   `shared/fixtures/chat-v4/encode.jsonl`; other fields are ignored) →
//!   `{"id", "prompt", "token_ids"}`: the prompt of `encode_messages(messages, **kwargs)` and its
//!   token ids (no special tokens added; the prompt carries its own BOS).
//! * a rejected conversation, bad JSON or a missing field → `{"id", "error": "..."}` with `id`
//!   copied from the input (`null` if unreadable); the filter goes on with the next line.

use std::path::Path;

use serde_json::{Value, json};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::chat::encode::encode_json;

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
    let Some(input) = request.get("input").filter(|i| i.is_object()) else {
        return error_reply(
            id,
            "request needs an object field \"input\" with \"messages\" and \"kwargs\"".into(),
        );
    };
    let Some(messages) = input.get("messages") else {
        return error_reply(
            id,
            "input needs a field \"messages\" (an array of messages)".into(),
        );
    };
    let Some(kwargs) = input.get("kwargs") else {
        return error_reply(
            id,
            "input needs a field \"kwargs\" (an object with \"thinking_mode\")".into(),
        );
    };
    match encode_json(messages, kwargs) {
        Ok(prompt) => {
            let token_ids = tok.encode(&prompt);
            json!({"id": id, "prompt": prompt, "token_ids": token_ids})
        }
        Err(e) => error_reply(id, e.to_string()),
    }
}

fn error_reply(id: Value, message: String) -> Value {
    json!({"id": id, "error": message})
}
