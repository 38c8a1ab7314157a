//! API-level guards on the conversation of a request, checked before encoding: what DeepSeek's
//! API refuses with HTTP 400 although the chat encoder (like the reference `encoding_dsv4.py`)
//! would render something. Each failure is an [`ApiError`] that renders as an OpenAI or an
//! Anthropic error body and says exactly what the client has to send instead.
//!
//! OpenAI ChatCompletions (`messages`, [`validate_openai_messages`]):
//! * `messages` must be a non-empty array of objects;
//! * `role` must be one the encoder knows: `system`, `user`, `assistant`, `tool`, `developer`,
//!   `latest_reminder`;
//! * content parts must be `text` parts: V4 is text-only (`image_url`, `input_audio`, `file`, …
//!   are refused);
//! * a `tool` message must answer a tool call of an earlier assistant message: its
//!   `tool_call_id`, when given, must be the `id` of such a call (the official format may
//!   leave ids out and pair results with calls by position, so a result without an id only
//!   needs an earlier call);
//! * in thinking mode, an assistant message with `tool_calls` in the current tool-call loop
//!   (after the last user message) must carry its `reasoning_content`: the model continues
//!   that reasoning, so DeepSeek answers "The `reasoning_content` in the thinking mode must be
//!   passed back to the API". (DeepSeek's guide asks for the reasoning of every tool-calling
//!   turn; only the current loop is enforced here, which is what changes the prompt when tools
//!   are not declared.)
//!
//! Anthropic Messages (`system` + `messages`, [`validate_anthropic_messages`]): the same rules
//! in that shape — roles `user`/`assistant`, text-only blocks (`image`, `document` refused),
//! `tool_result.tool_use_id` matching an earlier `tool_use`, and in thinking mode a `thinking`
//! (or `redacted_thinking`) block in every assistant message of the current tool loop that
//! has `tool_use` blocks.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value, json};
use v4_protocol::{ErrorKind, ServiceError};

use super::encode::{ThinkingMode, json_type};

/// The class of an API error; decides the status and the `type` of the error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Internal,
    Overloaded,
}

impl ApiErrorKind {
    /// The HTTP status for this kind.
    pub fn status(self) -> u16 {
        match self {
            ApiErrorKind::InvalidRequest => 400,
            ApiErrorKind::Authentication => 401,
            ApiErrorKind::PermissionDenied => 403,
            ApiErrorKind::NotFound => 404,
            ApiErrorKind::RequestTooLarge => 413,
            ApiErrorKind::RateLimit => 429,
            ApiErrorKind::Internal => 500,
            ApiErrorKind::Overloaded => 503,
        }
    }

    /// `error.type` in an OpenAI error body.
    pub fn openai_type(self) -> &'static str {
        match self {
            ApiErrorKind::InvalidRequest | ApiErrorKind::RequestTooLarge => "invalid_request_error",
            ApiErrorKind::Authentication => "authentication_error",
            ApiErrorKind::PermissionDenied => "permission_error",
            ApiErrorKind::NotFound => "not_found_error",
            ApiErrorKind::RateLimit => "rate_limit_error",
            ApiErrorKind::Internal => "api_error",
            ApiErrorKind::Overloaded => "server_error",
        }
    }

    /// `error.type` in an Anthropic error body.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            ApiErrorKind::InvalidRequest => "invalid_request_error",
            ApiErrorKind::Authentication => "authentication_error",
            ApiErrorKind::PermissionDenied => "permission_error",
            ApiErrorKind::NotFound => "not_found_error",
            ApiErrorKind::RequestTooLarge => "request_too_large",
            ApiErrorKind::RateLimit => "rate_limit_error",
            ApiErrorKind::Internal => "api_error",
            ApiErrorKind::Overloaded => "overloaded_error",
        }
    }
}

/// An error as the public API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: ApiErrorKind,
    /// Machine-readable reason (`"missing_reasoning_content"`, …).
    pub code: Option<String>,
    /// For the client: what is wrong and what to send instead.
    pub message: String,
    /// The request field at fault (`"messages[3].reasoning_content"`).
    pub param: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.kind.openai_type(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status: kind.status(),
            kind,
            code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 `invalid_request_error` with a code and the field at fault.
    pub fn invalid_request(
        code: &str,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            code: Some(code.to_string()),
            param: Some(param.into()),
            ..ApiError::new(ApiErrorKind::InvalidRequest, message)
        }
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_openai_body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind.openai_type(),
            "param": self.param,
            "code": self.code,
        }})
    }

    /// `{"type": "error", "error": {"type", "message"}}`.
    pub fn to_anthropic_body(&self) -> Value {
        json!({"type": "error", "error": {
            "type": self.kind.anthropic_type(),
            "message": self.message,
        }})
    }

    /// The API error for a service's error reply (the message is passed on as it is written
    /// for API clients).
    pub fn from_service_error(e: &ServiceError) -> ApiError {
        let kind = match e.kind {
            ErrorKind::BadRequest => ApiErrorKind::InvalidRequest,
            ErrorKind::NotFound => ApiErrorKind::NotFound,
            ErrorKind::PayloadTooLarge => ApiErrorKind::RequestTooLarge,
            ErrorKind::Overloaded | ErrorKind::Unavailable => ApiErrorKind::Overloaded,
            ErrorKind::Timeout | ErrorKind::Internal | ErrorKind::Unknown => ApiErrorKind::Internal,
        };
        ApiError {
            code: e.code.clone(),
            param: e.param.clone(),
            ..ApiError::new(kind, e.message.clone())
        }
    }
}

/// Roles the chat encoder renders.
const ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "latest_reminder",
];

/// Non-text content types clients send; named in the error so the client knows what to drop.
const MEDIA_TYPES: [&str; 11] = [
    "image_url",
    "input_image",
    "image",
    "input_audio",
    "audio",
    "file",
    "input_file",
    "document",
    "video",
    "video_url",
    "container_upload",
];

fn obj<'a>(v: &'a Value, param: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| {
        ApiError::invalid_request(
            "invalid_message",
            param,
            format!("{param} must be a JSON object, found {}", json_type(v)),
        )
    })
}

fn non_empty_array<'a>(v: &'a Value, param: &str) -> Result<&'a Vec<Value>, ApiError> {
    match v {
        Value::Array(a) if !a.is_empty() => Ok(a),
        Value::Array(_) => Err(ApiError::invalid_request(
            "empty_messages",
            param,
            format!("{param} must contain at least one message"),
        )),
        other => Err(ApiError::invalid_request(
            "invalid_messages",
            param,
            format!(
                "{param} must be an array of messages, found {}",
                json_type(other)
            ),
        )),
    }
}

/// A content part or block of a type V4 cannot take.
fn unsupported_part(param: &str, ty: &str, allowed: &str) -> ApiError {
    let message = if MEDIA_TYPES.contains(&ty) {
        format!(
            "{param}: content of type {ty:?} is not supported: DeepSeek-V4 is a text-only model. \
             Send {allowed} only (describe or transcribe the media as text)"
        )
    } else {
        format!("{param}: unsupported content type {ty:?}; send {allowed} only")
    };
    ApiError::invalid_request("unsupported_content_type", format!("{param}.type"), message)
}

/// The `type` of a content part/block, or an error naming the part.
fn part_type<'a>(part: &'a Value, param: &str) -> Result<&'a str, ApiError> {
    let o = obj(part, param)?;
    o.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_request(
            "invalid_content",
            format!("{param}.type"),
            format!("{param} needs a string \"type\""),
        )
    })
}

/// Checks an OpenAI-format `messages` array for a request in `mode`.
pub fn validate_openai_messages(messages: &Value, mode: ThinkingMode) -> Result<(), ApiError> {
    let list = non_empty_array(messages, "messages")?;
    let mut checked = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m = obj(m, &param)?;
        let role = openai_role(m, &param)?;
        if let Some(Value::Array(parts)) = m.get("content") {
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{param}.content[{j}]");
                let ty = part_type(part, &p)?;
                if ty != "text" {
                    return Err(unsupported_part(&p, ty, "\"text\" content parts"));
                }
            }
        }
        checked.push((role, m));
    }
    let last_user = checked
        .iter()
        .rposition(|(r, _)| matches!(*r, "user" | "developer"));
    let mut call_ids: Vec<String> = Vec::new();
    for (i, (role, m)) in checked.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        match role {
            "assistant" => {
                let calls = tool_call_ids(m);
                let in_loop = last_user.is_none_or(|u| i > u);
                if mode == ThinkingMode::Thinking && in_loop && !calls.is_empty() {
                    require_reasoning(m, &param)?;
                }
                call_ids.extend(calls);
            }
            "tool" => check_tool_call_id(m, &param, &call_ids)?,
            _ => {}
        }
    }
    Ok(())
}

fn openai_role<'a>(m: &'a Map<String, Value>, param: &str) -> Result<&'a str, ApiError> {
    let role = m.get("role");
    match role.and_then(Value::as_str) {
        Some(r) if ROLES.contains(&r) => Ok(r),
        other => {
            let shown = other.map_or_else(
                || role.map_or("(missing)".to_string(), |v| v.to_string()),
                |r| format!("{r:?}"),
            );
            let hint = if other == Some("function") {
                ". Legacy \"function\" messages are not supported: send each tool result as \
                 {\"role\": \"tool\", \"tool_call_id\": <the call's id>, \"content\": <result>}"
            } else {
                ""
            };
            Err(ApiError::invalid_request(
                "invalid_role",
                format!("{param}.role"),
                format!(
                    "{param}: unknown role {shown}: expected one of {}{hint}",
                    ROLES.join(", ")
                ),
            ))
        }
    }
}

/// Ids of the tool calls of an assistant message: `tool_calls[k].id`, else
/// `tool_calls[k].function.id` (where the encoder also looks); `""` for a call without one.
fn tool_call_ids(m: &Map<String, Value>) -> Vec<String> {
    let Some(Value::Array(calls)) = m.get("tool_calls") else {
        return Vec::new();
    };
    fn id(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    calls
        .iter()
        .map(|c| {
            id(c.get("id"))
                .or_else(|| id(c.get("function").and_then(|f| f.get("id"))))
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn require_reasoning(m: &Map<String, Value>, param: &str) -> Result<(), ApiError> {
    if m.get("reasoning_content").is_some_and(Value::is_string) {
        return Ok(());
    }
    Err(ApiError::invalid_request(
        "missing_reasoning_content",
        format!("{param}.reasoning_content"),
        format!(
            "The reasoning_content in the thinking mode must be passed back to the API: {param} \
             is an assistant message with tool_calls in the current tool-call loop (after the \
             last user message) but has no reasoning_content. Send the assistant message back \
             exactly as the API returned it — content, reasoning_content and tool_calls — or \
             disable thinking with \"thinking\": {{\"type\": \"disabled\"}}."
        ),
    ))
}

fn known_ids(ids: &[String]) -> String {
    let named: Vec<String> = ids
        .iter()
        .filter(|id| !id.is_empty())
        .map(|id| format!("{id:?}"))
        .collect();
    if named.is_empty() {
        "no earlier assistant message has tool calls with ids".to_string()
    } else {
        format!("known ids: {}", named.join(", "))
    }
}

fn check_tool_call_id(
    m: &Map<String, Value>,
    param: &str,
    call_ids: &[String],
) -> Result<(), ApiError> {
    // The official format pairs results with calls by position: a result without an id is
    // fine as long as there was a call to answer.
    let id = match m.get("tool_call_id") {
        None | Some(Value::Null) if !call_ids.is_empty() => return Ok(()),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request(
                "orphan_tool_message",
                param,
                format!(
                    "{param}: a tool message must answer a tool call, but no earlier assistant                      message has tool_calls. Send the assistant message with its tool_calls                      before the tool results"
                ),
            ));
        }
        Some(Value::String(id)) => id,
        Some(other) => {
            return Err(ApiError::invalid_request(
                "invalid_tool_call_id",
                format!("{param}.tool_call_id"),
                format!(
                    "{param}: tool_call_id must be a string (the id of the tool call it answers),                      found {}",
                    json_type(other)
                ),
            ));
        }
    };
    if call_ids.iter().any(|c| c == id) {
        return Ok(());
    }
    Err(ApiError::invalid_request(
        "unknown_tool_call_id",
        format!("{param}.tool_call_id"),
        format!(
            "{param}: tool_call_id {id:?} does not match any tool call of an earlier assistant \
             message ({}). A tool message must answer a tool call of a preceding assistant \
             message: send that assistant message, with its tool_calls, before the results",
            known_ids(call_ids)
        ),
    ))
}

/// Checks an Anthropic-format request (`system` and `messages`) for a request in `mode`.
pub fn validate_anthropic_messages(
    system: Option<&Value>,
    messages: &Value,
    mode: ThinkingMode,
) -> Result<(), ApiError> {
    match system {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                let p = format!("system[{j}]");
                let ty = part_type(b, &p)?;
                if ty != "text" {
                    return Err(unsupported_part(&p, ty, "\"text\" blocks"));
                }
            }
        }
        Some(other) => {
            return Err(ApiError::invalid_request(
                "invalid_system",
                "system",
                format!(
                    "system must be a string or an array of text blocks, found {}",
                    json_type(other)
                ),
            ));
        }
    }
    let list = non_empty_array(messages, "messages")?;
    let mut parsed = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        parsed.push(AnthropicMessage::parse(m, i)?);
    }
    let last_user = parsed
        .iter()
        .rposition(|m| m.role == "user" && m.has_user_input);
    let mut tool_use_ids: HashSet<String> = HashSet::new();
    let mut ordered_ids: Vec<String> = Vec::new();
    for (i, m) in parsed.iter().enumerate() {
        let param = format!("messages[{i}]");
        for (j, id) in &m.tool_results {
            if !tool_use_ids.contains(id) {
                return Err(ApiError::invalid_request(
                    "unknown_tool_use_id",
                    format!("{param}.content[{j}].tool_use_id"),
                    format!(
                        "{param}.content[{j}]: tool_use_id {id:?} does not match any tool_use \
                         block of an earlier assistant message ({}). Each tool_result must \
                         answer a tool_use of the preceding assistant message",
                        known_ids(&ordered_ids)
                    ),
                ));
            }
        }
        let in_loop = last_user.is_none_or(|u| i > u);
        if mode == ThinkingMode::Thinking && in_loop && !m.tool_uses.is_empty() && !m.has_thinking {
            return Err(ApiError::invalid_request(
                "missing_thinking_block",
                format!("{param}.content"),
                format!(
                    "The content[].thinking in the thinking mode must be passed back to the \
                     API: {param} is an assistant message with tool_use blocks in the current \
                     tool loop (after the last user message) but has no thinking block. Send \
                     the assistant content back unchanged, including the thinking block that \
                     precedes the tool_use blocks, or disable thinking with \"thinking\": \
                     {{\"type\": \"disabled\"}}."
                ),
            ));
        }
        for id in &m.tool_uses {
            tool_use_ids.insert(id.clone());
            ordered_ids.push(id.clone());
        }
    }
    Ok(())
}

/// What the checks need from one Anthropic message.
struct AnthropicMessage {
    role: &'static str,
    /// A user message with text (not only tool results): starts a new turn.
    has_user_input: bool,
    has_thinking: bool,
    tool_uses: Vec<String>,
    /// (block index, tool_use_id).
    tool_results: Vec<(usize, String)>,
}

impl AnthropicMessage {
    fn parse(m: &Value, i: usize) -> Result<AnthropicMessage, ApiError> {
        let param = format!("messages[{i}]");
        let o = obj(m, &param)?;
        let role = match o.get("role").and_then(Value::as_str) {
            Some("user") => "user",
            Some("assistant") => "assistant",
            other => {
                let shown = other.map_or_else(
                    || o.get("role").map_or("(missing)".into(), |v| v.to_string()),
                    |r| format!("{r:?}"),
                );
                return Err(ApiError::invalid_request(
                    "invalid_role",
                    format!("{param}.role"),
                    format!(
                        "{param}: unknown role {shown}: expected \"user\" or \"assistant\" \
                         (a system prompt goes in the top-level \"system\" field)"
                    ),
                ));
            }
        };
        let mut msg = AnthropicMessage {
            role,
            has_user_input: false,
            has_thinking: false,
            tool_uses: Vec::new(),
            tool_results: Vec::new(),
        };
        let blocks = match o.get("content") {
            Some(Value::String(_)) => {
                msg.has_user_input = role == "user";
                return Ok(msg);
            }
            Some(Value::Array(blocks)) => blocks,
            other => {
                return Err(ApiError::invalid_request(
                    "invalid_content",
                    format!("{param}.content"),
                    format!(
                        "{param}.content must be a string or an array of content blocks, found {}",
                        other.map_or("nothing", json_type)
                    ),
                ));
            }
        };
        for (j, b) in blocks.iter().enumerate() {
            msg.block(b, &format!("{param}.content[{j}]"), j)?;
        }
        Ok(msg)
    }

    fn block(&mut self, b: &Value, p: &str, j: usize) -> Result<(), ApiError> {
        let ty = part_type(b, p)?;
        let allowed = if self.role == "user" {
            "\"text\" and \"tool_result\" blocks"
        } else {
            "\"text\", \"thinking\", \"redacted_thinking\" and \"tool_use\" blocks"
        };
        let id = |key: &str| {
            b.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match (self.role, ty) {
            (_, "text") => self.has_user_input |= self.role == "user",
            ("user", "tool_result") => {
                check_tool_result_content(b.get("content"), p)?;
                self.tool_results.push((j, id("tool_use_id")));
            }
            ("assistant", "thinking" | "redacted_thinking") => self.has_thinking = true,
            ("assistant", "tool_use") => self.tool_uses.push(id("id")),
            _ => return Err(unsupported_part(p, ty, allowed)),
        }
        Ok(())
    }
}

fn check_tool_result_content(content: Option<&Value>, p: &str) -> Result<(), ApiError> {
    if let Some(Value::Array(parts)) = content {
        for (k, part) in parts.iter().enumerate() {
            let pp = format!("{p}.content[{k}]");
            let ty = part_type(part, &pp)?;
            if ty != "text" {
                return Err(unsupported_part(&pp, ty, "\"text\" blocks"));
            }
        }
    }
    Ok(())
}
