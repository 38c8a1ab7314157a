//! OpenAI ChatCompletions as DeepSeek serves it: the request → [`ValidChatRequest`], and the
//! response, chunk and usage objects.

use serde_json::{Map, Value, json};
use v4_protocol::generate::{MAX_TOP_LOGPROBS, Sampling};
use v4_protocol::tokenizer::{EncodeChatRequest, ThinkingMode};
use v4_tokenizer::chat::api::mode_from_openai;
use v4_tokenizer::chat::encode::{self, ChatError};
use v4_tokenizer::chat::validate::validate_openai_messages;

use crate::config::GatewayConfig;
use crate::driver::{Delta, Finish, Outcome, Usage};
use crate::error::{Failure, Flavor};
use crate::fields::{Fields, type_name};
use crate::request::{ToolCalls, ValidChatRequest, resolve_model, wire_mode};
use crate::sse::{SseFormat, data_frame};

/// Most stop strings per request (DeepSeek's limit).
pub const MAX_STOP: usize = 16;
/// Most tools per request.
pub const MAX_TOOLS: usize = 128;

/// A mode-mapping error as a 422 naming the field.
pub(crate) fn mode_error(e: ChatError) -> Failure {
    match e {
        ChatError::InvalidApiField { field, .. } => Failure::param(field, e.to_string()),
        other => Failure::param("thinking", other.to_string()),
    }
}

/// Validates an OpenAI ChatCompletions request.
pub(crate) fn parse(
    v: &Value,
    config: &GatewayConfig,
    id: String,
) -> Result<ValidChatRequest, Failure> {
    let f = Fields::root(v);
    let served_model = resolve_model(&config.models, f.str("model")?)?;
    let (mode, effort) =
        mode_from_openai(f.value("thinking"), f.str("reasoning_effort")?).map_err(mode_error)?;
    let messages = f.value("messages").ok_or_else(|| {
        Failure::invalid("missing_messages", Some("messages"), "messages is required")
    })?;
    validate_openai_messages(messages, mode).map_err(Failure::Invalid)?;
    let messages = flatten_text_parts(messages);

    if let Some(n) = f.u64("n")?
        && n != 1
    {
        return Err(Failure::param(
            "n",
            format!("n must be 1 (one choice per request), got {n}"),
        ));
    }
    let logprobs = logprobs(&f, mode)?;
    let tools = tools(f.value("tools"), "tools")?;
    let tool_choice = tool_choice(f.value("tool_choice"), tools.as_ref())?;
    let (thinking_mode, reasoning_effort) = wire_mode(mode, effort);
    let mut encode = EncodeChatRequest::new(messages, thinking_mode);
    encode.reasoning_effort = reasoning_effort;
    encode.response_format = response_format(&f)?;
    encode.tools = tools.filter(|_| tool_choice == ToolCalls::Allowed);
    let include_usage = match f.object("stream_options")? {
        Some(o) => o.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    f.str("user")?;
    Ok(ValidChatRequest {
        flavor: Flavor::OpenAi,
        id,
        api_model: f.str("model")?.unwrap_or_default().to_string(),
        served_model,
        encode,
        sampling: sampling(&f)?,
        max_tokens: max_tokens(&f, config.max_tokens_limit)?,
        stop: stop(f.value("stop"), "stop")?,
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage,
        logprobs,
        tool_calls: tool_choice,
    })
}

/// Text content parts become one string (the encoder takes strings); other message fields
/// are passed on unchanged. Tool results keep their parts (the encoder renders them).
fn flatten_text_parts(messages: &Value) -> Vec<Value> {
    let list = messages.as_array().cloned().unwrap_or_default();
    list.into_iter()
        .map(|mut m| {
            let is_tool = m.get("role").and_then(Value::as_str) == Some("tool");
            if let Some(Value::Array(parts)) = m.get("content")
                && !is_tool
            {
                let text: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                m["content"] = Value::String(text.join("\n"));
            }
            m
        })
        .collect()
}

fn sampling(f: &Fields<'_>) -> Result<Sampling, Failure> {
    Ok(Sampling {
        temperature: f.f32_in("temperature", 0.0, 2.0)?.unwrap_or(1.0),
        top_p: f.f32_in("top_p", 0.0, 1.0)?.unwrap_or(1.0),
        presence_penalty: f.f32_in("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: f.f32_in("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        seed: f.u64("seed")?,
        ..Sampling::default()
    })
}

/// `max_completion_tokens`, else `max_tokens`: 1 ..= the configured limit.
fn max_tokens(f: &Fields<'_>, limit: u32) -> Result<Option<u32>, Failure> {
    match f.u32_in("max_completion_tokens", 1, limit)? {
        Some(n) => Ok(Some(n)),
        None => f.u32_in("max_tokens", 1, limit),
    }
}

/// `logprobs` / `top_logprobs` → the alternatives per token; refused in thinking mode.
fn logprobs(f: &Fields<'_>, mode: encode::ThinkingMode) -> Result<Option<u32>, Failure> {
    let on = f.bool("logprobs")?.unwrap_or(false);
    let top = f.u32_in("top_logprobs", 0, MAX_TOP_LOGPROBS)?;
    if top.is_some() && !on {
        return Err(Failure::param(
            "top_logprobs",
            "top_logprobs requires \"logprobs\": true",
        ));
    }
    if on && mode == encode::ThinkingMode::Thinking {
        return Err(Failure::invalid(
            "unsupported_parameter",
            Some("logprobs"),
            "logprobs and top_logprobs are not supported in thinking mode; disable thinking with \
             \"thinking\": {\"type\": \"disabled\"} to get logprobs",
        ));
    }
    Ok(on.then(|| top.unwrap_or(0)))
}

/// A stop string or a list of at most [`MAX_STOP`].
pub(crate) fn stop(v: Option<&Value>, param: &str) -> Result<Vec<String>, Failure> {
    let wrong = || {
        Failure::param(
            param,
            format!("{param} must be a string or an array of at most {MAX_STOP} strings"),
        )
    };
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() <= MAX_STOP => a
            .iter()
            .map(|s| s.as_str().map(String::from).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

fn response_format(f: &Fields<'_>) -> Result<Option<Value>, Failure> {
    let Some(rf) = f.object("response_format")? else {
        return Ok(None);
    };
    match rf.str("type")? {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        other => Err(Failure::param(
            "response_format.type",
            format!(
                "response_format.type must be \"text\" or \"json_object\", got {}",
                other.map_or("nothing".to_string(), |t| format!("{t:?}"))
            ),
        )),
    }
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// OpenAI-shaped tools: `[{"type": "function", "function": {"name", …}}]`, passed on as given.
pub(crate) fn tools(v: Option<&Value>, param: &str) -> Result<Option<Value>, Failure> {
    let list = match v {
        None => return Ok(None),
        Some(Value::Array(a)) if a.len() <= MAX_TOOLS => a,
        Some(Value::Array(_)) => {
            return Err(Failure::param(
                param,
                format!("{param} may list at most {MAX_TOOLS} tools"),
            ));
        }
        Some(other) => {
            return Err(Failure::param(
                param,
                format!("{param} must be an array, found {}", type_name(other)),
            ));
        }
    };
    for (i, t) in list.iter().enumerate() {
        let p = format!("{param}[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Failure::param(
                format!("{p}.type"),
                format!("{p}.type must be \"function\""),
            ));
        }
        let Some(Value::Object(func)) = t.get("function") else {
            return Err(Failure::param(
                format!("{p}.function"),
                format!("{p}.function must be an object with a name"),
            ));
        };
        match func.get("name").and_then(Value::as_str) {
            Some(n) if valid_tool_name(n) => {}
            _ => {
                return Err(Failure::param(
                    format!("{p}.function.name"),
                    format!("{p}.function.name must be 1-64 characters of a-z, A-Z, 0-9, _ and -"),
                ));
            }
        }
        if let Some(params) = func.get("parameters")
            && !params.is_object()
        {
            return Err(Failure::param(
                format!("{p}.function.parameters"),
                format!("{p}.function.parameters must be a JSON Schema object"),
            ));
        }
    }
    Ok((!list.is_empty()).then(|| Value::Array(list.clone())))
}

fn tool_names(tools: Option<&Value>) -> Vec<&str> {
    tools
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// `tool_choice` → the policy (see [`ToolCalls`]); a named function must be declared.
fn tool_choice(v: Option<&Value>, tools: Option<&Value>) -> Result<ToolCalls, Failure> {
    let declared = if tools.is_some() {
        ToolCalls::Allowed
    } else {
        ToolCalls::Dropped
    };
    match v {
        None => Ok(declared),
        Some(Value::String(s)) if s == "none" => Ok(ToolCalls::Dropped),
        Some(Value::String(s)) if s == "auto" => Ok(declared),
        Some(Value::String(s)) if s == "required" && tools.is_some() => Ok(ToolCalls::Allowed),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(n) if tool_names(tools).contains(&n) => Ok(ToolCalls::Allowed),
                _ => Err(Failure::param(
                    "tool_choice",
                    format!(
                        "tool_choice names a function that is not in tools (declared: {})",
                        tool_names(tools).join(", ")
                    ),
                )),
            }
        }
        Some(_) => Err(Failure::param(
            "tool_choice",
            "tool_choice must be \"none\", \"auto\", \"required\" (with tools) or \
             {\"type\": \"function\", \"function\": {\"name\": …}}",
        )),
    }
}

/// Response fields shared by every chunk of one answer.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub thinking: bool,
    pub logprobs: bool,
}

impl Meta {
    pub(crate) fn new(req: &ValidChatRequest) -> Meta {
        Meta {
            id: req.id.clone(),
            created: unix_now(),
            model: req.api_model.clone(),
            thinking: req.encode.thinking_mode == ThinkingMode::Thinking,
            logprobs: req.logprobs.is_some(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::Failed(_) => "insufficient_system_resource",
    }
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "prompt_cache_hit_tokens": u.cached_tokens,
        "prompt_cache_miss_tokens": u.prompt_tokens - u.cached_tokens,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

fn tool_calls_json(d: &Delta, with_index: bool) -> Value {
    Value::Array(
        d.tool_calls
            .iter()
            .map(|c| {
                let mut o = Map::new();
                if with_index {
                    o.insert("index".into(), c.index.into());
                }
                o.insert("id".into(), c.id.clone().into());
                o.insert("type".into(), "function".into());
                o.insert(
                    "function".into(),
                    json!({"name": c.name, "arguments": c.arguments}),
                );
                Value::Object(o)
            })
            .collect(),
    )
}

/// The non-streaming answer.
pub(crate) fn completion(meta: &Meta, all: &Delta, o: &Outcome) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), all.content.clone().into());
    if meta.thinking {
        message.insert("reasoning_content".into(), all.reasoning.clone().into());
    }
    if !all.tool_calls.is_empty() {
        message.insert("tool_calls".into(), tool_calls_json(all, false));
    }
    let logprobs = if meta.logprobs {
        json!({"content": all.logprobs})
    } else {
        Value::Null
    };
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": finish_reason(&o.finish),
        }],
        "usage": usage_json(&o.usage),
    })
}

/// The SSE chunks of a streaming answer.
pub(crate) struct ChunkStream {
    pub meta: Meta,
    pub include_usage: bool,
}

impl ChunkStream {
    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> bytes::Bytes {
        let mut c = json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        data_frame(&c)
    }
}

impl SseFormat for ChunkStream {
    fn start(&mut self) -> Vec<bytes::Bytes> {
        vec![self.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        )]
    }

    fn delta(&mut self, d: &Delta) -> Vec<bytes::Bytes> {
        let mut out = Vec::new();
        let mut logprobs = if self.meta.logprobs && !d.logprobs.is_empty() {
            json!({"content": d.logprobs})
        } else {
            Value::Null
        };
        if !d.reasoning.is_empty() {
            out.push(self.chunk(
                json!({"reasoning_content": d.reasoning}),
                Value::Null,
                Value::Null,
            ));
        }
        if !d.content.is_empty() || !logprobs.is_null() {
            out.push(self.chunk(json!({"content": d.content}), logprobs.take(), Value::Null));
        }
        if !d.tool_calls.is_empty() {
            out.push(self.chunk(
                json!({"tool_calls": tool_calls_json(d, true)}),
                Value::Null,
                Value::Null,
            ));
        }
        out
    }

    fn finish(&mut self, o: &Outcome) -> Vec<bytes::Bytes> {
        let mut out = vec![self.chunk(json!({}), Value::Null, finish_reason(&o.finish).into())];
        if self.include_usage {
            out.push(data_frame(&json!({
                "id": self.meta.id,
                "object": "chat.completion.chunk",
                "created": self.meta.created,
                "model": self.meta.model,
                "choices": [],
                "usage": usage_json(&o.usage),
            })));
        }
        if let Finish::Failed(f) = &o.finish {
            out.push(data_frame(&f.stream_body(Flavor::OpenAi)));
        }
        out.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    fn keep_alive(&self) -> bytes::Bytes {
        bytes::Bytes::from_static(b": keep-alive\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig::local()
    }

    fn parse_json(v: Value) -> Result<ValidChatRequest, Failure> {
        parse(&v, &config(), "chatcmpl-x".into())
    }

    fn err(v: Value) -> (u16, Value) {
        let f = parse_json(v).unwrap_err();
        (f.status(Flavor::OpenAi), f.body(Flavor::OpenAi))
    }

    #[test]
    fn a_full_request_validates() {
        let r = parse_json(json!({
            "model": "deepseek-v4-flash",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "stream": true, "stream_options": {"include_usage": true},
            "stop": ["x", "y"], "max_tokens": 10, "temperature": 0, "top_p": 0.5, "seed": 7,
            "thinking": {"type": "disabled"}, "logprobs": true, "top_logprobs": 3,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto", "response_format": {"type": "json_object"}, "user": "u1", "n": 1
        }))
        .unwrap();
        assert_eq!(r.encode.messages[0]["content"], "a\nb");
        assert_eq!(r.encode.thinking_mode, ThinkingMode::Chat);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.stop, ["x", "y"]);
        assert_eq!(r.max_tokens, Some(10));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.seed, Some(7));
        assert_eq!(r.logprobs, Some(3));
        assert_eq!(r.tool_calls, ToolCalls::Allowed);
        assert!(r.encode.tools.is_some() && r.encode.response_format.is_some());
    }

    #[test]
    fn tool_choice_none_drops_the_tools() {
        let r = parse_json(json!({
            "model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"
        }))
        .unwrap();
        assert_eq!(r.tool_calls, ToolCalls::Dropped);
        assert!(r.encode.tools.is_none());
        let (s, b) = err(json!({
            "model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}}
        }));
        assert_eq!(
            (s, b["error"]["param"].as_str()),
            (422, Some("tool_choice"))
        );
    }

    #[test]
    fn bad_fields_name_their_param() {
        let base =
            json!({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v, status, param) in [
            ("temperature", json!("hot"), 422, "temperature"),
            ("temperature", json!(3), 422, "temperature"),
            ("max_tokens", json!(0), 422, "max_tokens"),
            ("max_tokens", json!(10_000_000), 422, "max_tokens"),
            ("n", json!(2), 422, "n"),
            ("stop", json!([1]), 422, "stop"),
            ("top_logprobs", json!(3), 422, "top_logprobs"),
            ("logprobs", json!(true), 400, "logprobs"),
            ("stream", json!("yes"), 422, "stream"),
            ("messages", json!([]), 400, "messages"),
            ("messages", json!("hi"), 400, "messages"),
            ("reasoning_effort", json!("ultra"), 422, "reasoning_effort"),
            ("model", json!("deepseek-chat"), 400, "model"),
        ] {
            let mut req = base.clone();
            req[k] = v.clone();
            let (s, b) = err(req);
            assert_eq!(s, status, "{k}={v}: {b}");
            assert_eq!(b["error"]["param"], param, "{k}={v}: {b}");
        }
    }
}
