//! Anthropic Messages as DeepSeek serves it: the request is converted to the OpenAI-shaped
//! messages the chat encoder takes (thinking blocks → `reasoning_content`, `tool_use` →
//! assistant `tool_calls`, `tool_result` → `tool` messages, tools' `input_schema` →
//! `parameters`), and the answer is built as message content blocks or as the Anthropic event
//! sequence (`message_start`, `content_block_start` / `_delta` / `_stop`, `message_delta`,
//! `message_stop`, `ping` keep-alives, `error`).

use bytes::Bytes;
use serde_json::{Map, Value, json};
use v4_protocol::generate::Sampling;
use v4_protocol::tokenizer::EncodeChatRequest;
use v4_tokenizer::chat::api::mode_from_anthropic;
use v4_tokenizer::chat::validate::validate_anthropic_messages;

use crate::config::GatewayConfig;
use crate::driver::{Delta, Finish, Outcome, Usage};
use crate::error::{Failure, Flavor};
use crate::fields::{Fields, type_name};
use crate::openai::{self, mode_error};
use crate::request::{ToolCalls, ValidChatRequest, resolve_model, wire_mode};
use crate::sse::{SseFormat, event_frame};

/// Validates an Anthropic Messages request.
pub(crate) fn parse(
    v: &Value,
    config: &GatewayConfig,
    id: String,
) -> Result<ValidChatRequest, Failure> {
    let f = Fields::root(v);
    let served_model = resolve_model(&config.models, f.str("model")?)?;
    let max_tokens = f
        .u32_in("max_tokens", 1, config.max_tokens_limit)?
        .ok_or_else(|| {
            Failure::invalid(
                "missing_max_tokens",
                Some("max_tokens"),
                "max_tokens is required",
            )
        })?;
    let effort = match f.object("output_config")? {
        Some(o) => o.str("effort")?,
        None => None,
    };
    let (mode, effort) = mode_from_anthropic(f.value("thinking"), effort).map_err(mode_error)?;
    let messages = f.value("messages").ok_or_else(|| {
        Failure::invalid("missing_messages", Some("messages"), "messages is required")
    })?;
    let system = f.value("system");
    validate_anthropic_messages(system, messages, mode).map_err(Failure::Invalid)?;
    let tools = tools(f.value("tools"))?;
    let tool_calls = tool_choice(f.value("tool_choice"), tools.as_ref())?;
    let (thinking_mode, reasoning_effort) = wire_mode(mode, effort);
    let mut encode = EncodeChatRequest::new(convert_messages(system, messages), thinking_mode);
    encode.reasoning_effort = reasoning_effort;
    encode.tools = tools.filter(|_| tool_calls == ToolCalls::Allowed);
    Ok(ValidChatRequest {
        flavor: Flavor::Anthropic,
        id,
        api_model: f.str("model")?.unwrap_or_default().to_string(),
        served_model,
        encode,
        sampling: Sampling {
            temperature: f.f32_in("temperature", 0.0, 2.0)?.unwrap_or(1.0),
            top_p: f.f32_in("top_p", 0.0, 1.0)?.unwrap_or(1.0),
            top_k: f.u32_in("top_k", 0, u32::MAX)?.unwrap_or(0),
            ..Sampling::default()
        },
        max_tokens: Some(max_tokens),
        stop: openai::stop(f.value("stop_sequences"), "stop_sequences")?,
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage: false,
        logprobs: None,
        tool_calls,
    })
}

/// The text of a string or of a list of text blocks (joined by `sep`).
fn text_of(v: Option<&Value>, sep: &str) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

/// `system` + `messages` (already validated) → OpenAI-shaped messages.
fn convert_messages(system: Option<&Value>, messages: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if system.is_some_and(|s| !s.is_null()) {
        out.push(json!({"role": "system", "content": text_of(system, "\n")}));
    }
    for m in messages.as_array().into_iter().flatten() {
        let content = m.get("content");
        match (m.get("role").and_then(Value::as_str), content) {
            (Some("assistant"), Some(Value::Array(blocks))) => out.push(assistant(blocks)),
            (Some("user"), Some(Value::Array(blocks))) => user(blocks, &mut out),
            (Some(role), _) => out.push(json!({"role": role, "content": text_of(content, "\n")})),
            (None, _) => {}
        }
    }
    out
}

fn assistant(blocks: &[Value]) -> Value {
    let mut reasoning = String::new();
    let mut content = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("text") => content.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), "assistant".into());
    m.insert("content".into(), content.into());
    let has_thinking = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("thinking"));
    if has_thinking {
        m.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(m)
}

/// A user message's blocks in order: tool results become `tool` messages, runs of text
/// blocks one `user` message.
fn user(blocks: &[Value], out: &mut Vec<Value>) {
    let mut text: Option<String> = None;
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                match &mut text {
                    Some(s) => {
                        s.push('\n');
                        s.push_str(t);
                    }
                    None => text = Some(t.to_string()),
                }
            }
            Some("tool_result") => {
                if let Some(t) = text.take() {
                    out.push(json!({"role": "user", "content": t}));
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": text_of(b.get("content"), "\n\n"),
                }));
            }
            _ => {}
        }
    }
    if let Some(t) = text {
        out.push(json!({"role": "user", "content": t}));
    }
}

/// Anthropic tools (`name`, `description`, `input_schema`) → OpenAI function tools.
fn tools(v: Option<&Value>) -> Result<Option<Value>, Failure> {
    let list = match v {
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(Failure::param(
                "tools",
                format!("tools must be an array, found {}", type_name(other)),
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let p = format!("tools[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
        if kind != "custom" {
            return Err(Failure::param(
                format!("{p}.type"),
                format!("{p}: server tools ({kind:?}) are not supported; declare custom tools"),
            ));
        }
        let mut func = Map::new();
        func.insert("name".into(), t.get("name").cloned().unwrap_or(Value::Null));
        if let Some(d) = t.get("description") {
            func.insert("description".into(), d.clone());
        }
        func.insert(
            "parameters".into(),
            t.get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        );
        out.push(json!({"type": "function", "function": func}));
    }
    openai::tools(Some(&Value::Array(out)), "tools")
}

fn tool_choice(v: Option<&Value>, tools: Option<&Value>) -> Result<ToolCalls, Failure> {
    let declared = if tools.is_some() {
        ToolCalls::Allowed
    } else {
        ToolCalls::Dropped
    };
    let Some(v) = v else { return Ok(declared) };
    let kind = v.get("type").and_then(Value::as_str);
    match kind {
        Some("none") => Ok(ToolCalls::Dropped),
        Some("auto") => Ok(declared),
        Some("any") if tools.is_some() => Ok(ToolCalls::Allowed),
        Some("tool") => {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("");
            let known = tools.and_then(Value::as_array).is_some_and(|a| {
                a.iter()
                    .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
            });
            if known {
                Ok(ToolCalls::Allowed)
            } else {
                Err(Failure::param(
                    "tool_choice.name",
                    format!("tool_choice names the tool {name:?}, which is not in tools"),
                ))
            }
        }
        _ => Err(Failure::param(
            "tool_choice",
            "tool_choice must be {\"type\": \"auto\" | \"any\" | \"none\"} or \
             {\"type\": \"tool\", \"name\": …} (\"any\" and \"tool\" need tools)",
        )),
    }
}

fn stop_reason(f: &Finish) -> (&'static str, Value) {
    match f {
        Finish::Stop | Finish::Failed(_) => ("end_turn", Value::Null),
        Finish::Length => ("max_tokens", Value::Null),
        Finish::ToolCalls => ("tool_use", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", s.clone().into()),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A tool call's arguments as the `input` object.
fn input_of(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// The non-streaming answer.
pub(crate) fn message(req: &ValidChatRequest, all: &Delta, o: &Outcome) -> Value {
    let mut content = Vec::new();
    if !all.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": all.reasoning, "signature": ""}));
    }
    if !all.content.is_empty() {
        content.push(json!({"type": "text", "text": all.content}));
    }
    for c in &all.tool_calls {
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input_of(&c.arguments)}));
    }
    let (reason, sequence) = stop_reason(&o.finish);
    json!({
        "id": req.id,
        "type": "message",
        "role": "assistant",
        "model": req.api_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_json(&o.usage),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
}

/// The event sequence of a streaming answer.
pub(crate) struct EventStream {
    pub id: String,
    pub model: String,
    pub prompt_tokens: u64,
    open: Option<Block>,
    next_index: u32,
}

impl EventStream {
    pub(crate) fn new(req: &ValidChatRequest, prompt_tokens: u64) -> EventStream {
        EventStream {
            id: req.id.clone(),
            model: req.api_model.clone(),
            prompt_tokens,
            open: None,
            next_index: 0,
        }
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            let index = self.next_index - 1;
            out.push(event_frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn start_block(&mut self, block: Value, out: &mut Vec<Bytes>) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        out.push(event_frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    /// Opens a block of `kind` unless it is the open one; returns its index.
    fn ensure(&mut self, kind: Block, out: &mut Vec<Bytes>) -> u32 {
        if self.open == Some(kind) {
            return self.next_index - 1;
        }
        self.close(out);
        let block = match kind {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text => json!({"type": "text", "text": ""}),
        };
        self.open = Some(kind);
        self.start_block(block, out)
    }
}

fn block_delta(index: u32, delta: Value) -> Bytes {
    event_frame(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

impl SseFormat for EventStream {
    fn start(&mut self) -> Vec<Bytes> {
        vec![event_frame(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
            }}),
        )]
    }

    fn delta(&mut self, d: &Delta) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !d.reasoning.is_empty() {
            let i = self.ensure(Block::Thinking, &mut out);
            out.push(block_delta(
                i,
                json!({"type": "thinking_delta", "thinking": d.reasoning}),
            ));
        }
        if !d.content.is_empty() {
            let i = self.ensure(Block::Text, &mut out);
            out.push(block_delta(
                i,
                json!({"type": "text_delta", "text": d.content}),
            ));
        }
        for c in &d.tool_calls {
            self.close(&mut out);
            let block = json!({"type": "tool_use", "id": c.id, "name": c.name, "input": {}});
            let i = self.start_block(block, &mut out);
            out.push(block_delta(
                i,
                json!({"type": "input_json_delta", "partial_json": c.arguments}),
            ));
            out.push(event_frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ));
        }
        out
    }

    fn finish(&mut self, o: &Outcome) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Finish::Failed(f) = &o.finish {
            out.push(event_frame("error", &f.stream_body(Flavor::Anthropic)));
            return out;
        }
        self.close(&mut out);
        let (reason, sequence) = stop_reason(&o.finish);
        out.push(event_frame(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage_json(&o.usage)}),
        ));
        out.push(event_frame(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
        out
    }

    fn keep_alive(&self) -> Bytes {
        event_frame("ping", &json!({"type": "ping"}))
    }
}

#[cfg(test)]
mod tests {
    use v4_protocol::tokenizer::ThinkingMode;

    use super::*;

    #[test]
    fn messages_convert_to_the_encoder_shape() {
        let system =
            json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]);
        let messages = json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "call it", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "thanks"}
            ]}
        ]);
        let out = convert_messages(Some(&system), &messages);
        assert_eq!(
            Value::Array(out),
            json!([
                {"role": "system", "content": "Be brief.\nBe kind."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking.", "reasoning_content": "call it",
                 "tool_calls": [{"id": "t1", "type": "function",
                                 "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ])
        );
    }

    #[test]
    fn requests_validate() {
        let c = GatewayConfig::local();
        let r = parse(
            &json!({"model": "deepseek-v4-flash", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"name": "w", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"},
                    "stop_sequences": ["X"], "top_k": 5, "thinking": {"type": "disabled"}}),
            &c,
            "msg_1".into(),
        )
        .unwrap();
        assert_eq!(r.tool_calls, ToolCalls::Allowed);
        assert_eq!(r.encode.tools.as_ref().unwrap()[0]["function"]["name"], "w");
        assert_eq!(r.sampling.top_k, 5);
        assert_eq!(r.encode.thinking_mode, ThinkingMode::Chat);
        let e = parse(
            &json!({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]}),
            &c,
            "msg_1".into(),
        )
        .unwrap_err();
        assert_eq!(e.status(Flavor::Anthropic), 400);
        assert_eq!(
            e.body(Flavor::Anthropic)["error"]["type"],
            "invalid_request_error"
        );
    }
}
