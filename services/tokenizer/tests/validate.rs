//! The API-level guards (`chat::validate`): every rule with OpenAI and Anthropic inputs, the
//! error bodies, and a sweep over every non-error input of
//! `shared/fixtures/chat-v4/encode.jsonl`.

mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use v4_protocol::{ErrorKind, ServiceError};
use v4_tokenizer::chat::encode::ThinkingMode::{self, Chat, Thinking};
use v4_tokenizer::chat::validate::{
    ApiError, ApiErrorKind, validate_anthropic_messages, validate_openai_messages,
};

/// Golden encoder inputs that the API guards refuse, with the code they are refused with.
/// The goldens document what the reference *encoder* renders; these ones exercise its leniency
/// towards conversations DeepSeek's API answers with HTTP 400 (the rules the guards exist for).
/// Every other non-error golden input must pass.
const API_REFUSES: &[(&str, &str)] = &[
    // The reference renders an empty list as BOS only; the API needs at least one message.
    ("basic-empty-messages", "empty_messages"),
    ("basic-empty-messages-no-bos", "empty_messages"),
    ("basic-empty-invalid-mode", "empty_messages"),
    // An unknown role that the reference silently drops in thinking mode.
    ("unknown-role-dropped-thinking", "invalid_role"),
    // Tool results answering no earlier tool call.
    ("tools-results-unknown-id", "unknown_tool_call_id"),
    ("tools-result-without-call", "unknown_tool_call_id"),
    ("tools-result-after-plain-user", "unknown_tool_call_id"),
    // Tool results with no tool call before them (tagged python-repr: "may reproduce or
    // reject").
    ("pyrepr-tool-object", "orphan_tool_message"),
    ("pyrepr-tool-number", "orphan_tool_message"),
    // A tool result with an image part (rendered by the reference as "[Unsupported image_url]").
    ("tools-result-content-blocks", "unsupported_content_type"),
];

fn golden_records() -> Vec<Value> {
    let path = common::shared("fixtures/chat-v4/encode.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

#[test]
fn golden_inputs_pass_except_the_documented_api_refusals() {
    let mut refused = BTreeMap::new();
    let mut checked = 0;
    for r in golden_records()
        .iter()
        .filter(|r| r.get("error_type").is_none())
    {
        let id = r["id"].as_str().unwrap();
        let kwargs = &r["input"]["kwargs"];
        let mode = if kwargs["thinking_mode"] == "thinking" {
            Thinking
        } else {
            Chat
        };
        // The API sees the whole conversation: the already-encoded context, then the messages.
        let mut all: Vec<Value> = kwargs["context"].as_array().cloned().unwrap_or_default();
        all.extend(r["input"]["messages"].as_array().unwrap().iter().cloned());
        checked += 1;
        if let Err(e) = validate_openai_messages(&Value::Array(all), mode) {
            assert_eq!(e.status, 400, "{id}: {e}");
            refused.insert(id.to_string(), e.code.clone().unwrap_or_default());
        }
    }
    let expected: BTreeMap<String, String> = API_REFUSES
        .iter()
        .map(|(id, code)| (id.to_string(), code.to_string()))
        .collect();
    assert!(checked > 120, "only {checked} golden inputs");
    assert_eq!(refused, expected, "golden inputs refused by the API guards");
}

fn code(r: Result<(), ApiError>) -> String {
    r.expect_err("expected a refusal").code.unwrap_or_default()
}

fn weather_call(id: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}})
}

/// user → assistant(tool call) → tool → assistant(tool call) → tool
fn tool_loop(first_reasoning: Option<&str>, second_reasoning: Option<&str>) -> Value {
    let mut a1 = json!({"role": "assistant", "content": "", "tool_calls": [weather_call("c1")]});
    if let Some(r) = first_reasoning {
        a1["reasoning_content"] = json!(r);
    }
    let mut a2 = json!({"role": "assistant", "content": null, "tool_calls": [weather_call("c2")]});
    if let Some(r) = second_reasoning {
        a2["reasoning_content"] = json!(r);
    }
    json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        a1,
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        a2,
        {"role": "tool", "tool_call_id": "c2", "content": "still sunny"},
    ])
}

#[test]
fn openai_reasoning_must_come_back_in_the_current_tool_loop() {
    validate_openai_messages(&tool_loop(Some("r1"), Some("r2")), Thinking).unwrap();
    validate_openai_messages(&tool_loop(Some(""), Some("r2")), Thinking).unwrap();
    let e = validate_openai_messages(&tool_loop(Some("r1"), None), Thinking).unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.kind, ApiErrorKind::InvalidRequest);
    assert_eq!(e.code.as_deref(), Some("missing_reasoning_content"));
    assert_eq!(e.param.as_deref(), Some("messages[4].reasoning_content"));
    assert!(
        e.message.starts_with(
            "The reasoning_content in the thinking mode must be passed back to the API"
        ),
        "{e}"
    );
    assert!(e.message.contains("exactly as the API returned it"), "{e}");
    // `null` is not reasoning.
    let mut conv = tool_loop(Some("r1"), Some("r2"));
    conv[2]["reasoning_content"] = Value::Null;
    assert_eq!(
        code(validate_openai_messages(&conv, Thinking)),
        "missing_reasoning_content"
    );
    // Chat mode has no reasoning to pass back.
    validate_openai_messages(&tool_loop(None, None), Chat).unwrap();
    // A finished loop (a new user question follows) no longer needs it.
    let mut conv = tool_loop(None, None);
    let list = conv.as_array_mut().unwrap();
    list.push(json!({"role": "assistant", "reasoning_content": "r", "content": "Sunny."}));
    list.push(json!({"role": "user", "content": "And tomorrow?"}));
    validate_openai_messages(&conv, Thinking).unwrap();
}

#[test]
fn openai_tool_results_must_answer_an_earlier_call() {
    let mut conv = tool_loop(Some("r1"), Some("r2"));
    conv[5]["tool_call_id"] = json!("c9");
    let e = validate_openai_messages(&conv, Thinking).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("unknown_tool_call_id"));
    assert_eq!(e.param.as_deref(), Some("messages[5].tool_call_id"));
    assert!(
        e.message.contains("\"c9\"") && e.message.contains("\"c1\", \"c2\""),
        "{e}"
    );
    // A result before its call.
    let conv = json!([
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
        {"role": "assistant", "reasoning_content": "", "tool_calls": [weather_call("c1")]},
    ]);
    assert_eq!(
        code(validate_openai_messages(&conv, Chat)),
        "unknown_tool_call_id"
    );
    // Without ids, results pair with calls by position (official example 3): fine after a
    // call, refused without one.
    let mut conv = tool_loop(Some("r1"), Some("r2"));
    conv[3].as_object_mut().unwrap().remove("tool_call_id");
    validate_openai_messages(&conv, Thinking).unwrap();
    let conv = json!([{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]);
    let e = validate_openai_messages(&conv, Chat).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("orphan_tool_message"));
    assert_eq!(e.param.as_deref(), Some("messages[1]"));
    let conv = json!([
        {"role": "assistant", "tool_calls": [weather_call("c1")]},
        {"role": "tool", "tool_call_id": 7, "content": "x"},
    ]);
    assert_eq!(
        code(validate_openai_messages(&conv, Chat)),
        "invalid_tool_call_id"
    );
}

#[test]
fn openai_roles_content_and_shape() {
    let e = validate_openai_messages(
        &json!([{"role": "function", "name": "f", "content": "x"}]),
        Chat,
    )
    .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("invalid_role"));
    assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    assert!(e.message.contains("\"role\": \"tool\""), "{e}");
    let e = validate_openai_messages(&json!([{"content": "x"}]), Chat).unwrap_err();
    assert!(e.message.contains("(missing)"), "{e}");
    for (part, ty) in [
        (
            json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
            "image_url",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
            "input_audio",
        ),
        (json!({"type": "file", "file": {"file_id": "f"}}), "file"),
    ] {
        let conv = json!([{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]);
        let e = validate_openai_messages(&conv, Thinking).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("unsupported_content_type"), "{ty}");
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1].type"));
        assert!(
            e.message.contains("text-only") && e.message.contains(ty),
            "{e}"
        );
    }
    let text_parts = json!([{"role": "user", "content": [{"type": "text", "text": "a"}]}]);
    validate_openai_messages(&text_parts, Thinking).unwrap();
    assert_eq!(
        code(validate_openai_messages(
            &json!([{"role": "user", "content": [{"type": "fancy"}]}]),
            Chat
        )),
        "unsupported_content_type"
    );
    assert_eq!(
        code(validate_openai_messages(&json!([]), Chat)),
        "empty_messages"
    );
    assert_eq!(
        code(validate_openai_messages(&json!({"role": "user"}), Chat)),
        "invalid_messages"
    );
    assert_eq!(
        code(validate_openai_messages(&json!(["hi"]), Chat)),
        "invalid_message"
    );
    // Empty content is fine (the API accepts it; the encoder renders it).
    validate_openai_messages(&json!([{"role": "user", "content": ""}]), Chat).unwrap();
}

fn anthropic_loop(thinking_block: bool) -> Value {
    let mut content = vec![json!({"type": "text", "text": "Checking."})];
    if thinking_block {
        content.insert(
            0,
            json!({"type": "thinking", "thinking": "need weather", "signature": "s"}),
        );
    }
    content.push(json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}));
    json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ])
}

#[test]
fn anthropic_thinking_blocks_must_come_back() {
    let system = json!("Be brief.");
    validate_anthropic_messages(Some(&system), &anthropic_loop(true), Thinking).unwrap();
    validate_anthropic_messages(None, &anthropic_loop(false), Chat).unwrap();
    let e = validate_anthropic_messages(None, &anthropic_loop(false), Thinking).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("missing_thinking_block"));
    assert_eq!(e.param.as_deref(), Some("messages[1].content"));
    assert!(
        e.message
            .starts_with("The content[].thinking in the thinking mode must be passed back"),
        "{e}"
    );
    let mut conv = anthropic_loop(false);
    conv[1]["content"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"type": "redacted_thinking", "data": "x"}));
    validate_anthropic_messages(None, &conv, Thinking).unwrap();
    // After a new user question the old loop is done.
    let mut conv = anthropic_loop(false);
    let list = conv.as_array_mut().unwrap();
    list.push(json!({"role": "assistant", "content": "Sunny."}));
    list.push(json!({"role": "user", "content": [{"type": "text", "text": "Thanks"}]}));
    validate_anthropic_messages(None, &conv, Thinking).unwrap();
}

#[test]
fn anthropic_roles_blocks_and_tool_ids() {
    let mut conv = anthropic_loop(true);
    conv[2]["content"][0]["tool_use_id"] = json!("toolu_9");
    let e = validate_anthropic_messages(None, &conv, Thinking).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("unknown_tool_use_id"));
    assert_eq!(
        e.param.as_deref(),
        Some("messages[2].content[0].tool_use_id")
    );
    assert!(e.message.contains("\"toolu_1\""), "{e}");
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}});
    let conv =
        json!([{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]);
    let e = validate_anthropic_messages(None, &conv, Thinking).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("unsupported_content_type"));
    assert!(e.message.contains("text-only"), "{e}");
    let mut conv = anthropic_loop(true);
    conv[2]["content"][0]["content"] = json!([{"type": "document", "source": {}}]);
    let e = validate_anthropic_messages(None, &conv, Thinking).unwrap_err();
    assert_eq!(
        e.param.as_deref(),
        Some("messages[2].content[0].content[0].type")
    );
    let conv = json!([{"role": "system", "content": "x"}]);
    let e = validate_anthropic_messages(None, &conv, Chat).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("invalid_role"));
    assert!(e.message.contains("top-level \"system\""), "{e}");
    let system = json!([{"type": "image", "source": {}}]);
    let conv = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        code(validate_anthropic_messages(Some(&system), &conv, Chat)),
        "unsupported_content_type"
    );
    assert_eq!(
        code(validate_anthropic_messages(None, &json!([]), Chat)),
        "empty_messages"
    );
    // tool_use in a user message is not a thing.
    let conv = json!([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]);
    assert_eq!(
        code(validate_anthropic_messages(None, &conv, Chat)),
        "unsupported_content_type"
    );
}

#[test]
fn error_bodies() {
    let e = validate_openai_messages(&tool_loop(Some("r1"), None), Thinking).unwrap_err();
    let body = e.to_openai_body();
    assert_eq!(
        body,
        json!({"error": {
            "message": e.message,
            "type": "invalid_request_error",
            "param": "messages[4].reasoning_content",
            "code": "missing_reasoning_content",
        }})
    );
    assert_eq!(
        e.to_anthropic_body(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": e.message}})
    );
    let plain = ApiError::new(ApiErrorKind::Overloaded, "busy");
    assert_eq!(plain.to_openai_body()["error"]["param"], Value::Null);
    assert_eq!(
        plain.to_anthropic_body()["error"]["type"],
        "overloaded_error"
    );
    let from = ApiError::from_service_error(
        &ServiceError::new(ErrorKind::PayloadTooLarge, "too big").with_param("messages"),
    );
    assert_eq!(
        (from.status, from.kind),
        (413, ApiErrorKind::RequestTooLarge)
    );
    assert_eq!(from.param.as_deref(), Some("messages"));
    assert_eq!(
        from.to_anthropic_body()["error"]["type"],
        "request_too_large"
    );
}

#[allow(dead_code)]
fn _mode_is_the_encoders(m: ThinkingMode) -> ThinkingMode {
    m
}
