//! `v4 chat parse --tokenizer FILE`: a JSON-lines filter over the DeepSeek-V4 output parser
//! (`v4_tokenizer::chat::parse::parse_completion`, reference-exact).
//!
//! One output line per non-blank input line, flushed at once:
//!
//! * `{"id", "input": {"text", "thinking_mode"}}` (the format of
//!   `shared/fixtures/chat-v4/parse.jsonl`; other fields are ignored) →
//!   `{"id", "expected": {"role", "content", "reasoning_content", "tool_calls"}}`, the fixture's
//!   shape. As in the reference, only `thinking_mode == "thinking"` selects thinking mode; any
//!   other value (also `null` or a number) parses as chat.
//! * a completion the reference rejects → `{"id", "error_type", "error"}` with the reference's
//!   exception class (`AssertionError` / `ValueError`) and message;
//! * bad JSON, non-UTF-8 or a missing field → `{"id", "error_type": "InvalidRequest", "error"}`
//!   with `id` copied from the input (`null` if unreadable); the filter goes on with the next
//!   line.
//!
//! The tokenizer is loaded (and so validated) once at start; parsing itself works on text.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::chat::parse::parse_completion;

/// Runs the filter from stdin to stdout until end of input.
pub fn run(tokenizer: &Path) -> anyhow::Result<()> {
    Tokenizer::from_file(tokenizer)
        .with_context(|| format!("loading tokenizer {}", tokenizer.display()))?;
    crate::jsonl::filter(handle_line, |msg| invalid(Value::Null, msg))
}

/// The reply to one input line.
fn handle_line(line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return invalid(Value::Null, format!("invalid JSON: {e}")),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(text) = request.pointer("/input/text").and_then(Value::as_str) else {
        return invalid(
            id,
            "request needs \"input\": {\"text\": string, \"thinking_mode\"}".into(),
        );
    };
    let Some(mode) = request.pointer("/input/thinking_mode") else {
        return invalid(id, "request needs \"input.thinking_mode\"".into());
    };
    match parse_completion(text, mode.as_str().unwrap_or("")) {
        Ok(message) => json!({"id": id, "expected": message}),
        Err(e) => json!({"id": id, "error_type": e.error_type(), "error": e.to_string()}),
    }
}

/// The reply to a line that is not a parse request.
fn invalid(id: Value, error: String) -> Value {
    json!({"id": id, "error_type": "InvalidRequest", "error": error})
}
