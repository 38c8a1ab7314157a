//! The DeepSeek-V4 chat encoder: messages → prompt string, a native port of the behaviour of
//! the official `encoding_dsv4.py` `encode_messages` (the only reference; V4 ships no Jinja
//! template). The rules are written up in `shared/design/chat-encoding.md` §2 and checked
//! against every record of `shared/fixtures/chat-v4/encode.jsonl`.
//!
//! Pipeline: tool results are merged into user turns (`merge`), re-ordered like the calls
//! they answer (`sort_tool_results`), old reasoning is dropped in thinking mode (`drop_pass`),
//! and each message is rendered with its transition tokens (module `render`).
//!
//! Two entry points: [`encode_messages`] (typed) and [`encode_json`] (the reference's arguments
//! as JSON, for the CLI and the conformance test). Mapping OpenAI/Anthropic request fields to
//! the mode lives in [`super::api`].

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;
use thiserror::Error;

use super::messages::truthy;
pub use super::messages::{Message, Role, Task, ToolCall};
use super::render::{Block, Render, Turn};

/// Non-Think (`"chat"`) or thinking (`"thinking"`; Think High, or Think Max with
/// [`ReasoningEffort::Max`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingMode {
    Chat,
    Thinking,
}

/// Reasoning effort in thinking mode. `None` (the default) and `High` render identically; `Max`
/// prepends the fixed "Reasoning Effort: Absolute maximum …" block to a prompt without context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    High,
    Max,
}

/// The reference's keyword arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    pub thinking_mode: ThinkingMode,
    /// Drop the reasoning of assistant turns before the last user turn (thinking mode only;
    /// forced off when any message declares `tools`). Default true.
    pub drop_thinking: bool,
    /// Start with BOS when there is no `context`. Default true.
    pub add_default_bos_token: bool,
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Messages already encoded earlier (a prompt prefix): they shape how `messages` render but
    /// are not rendered themselves.
    pub context: Option<Vec<Message>>,
}

impl EncodeOptions {
    /// The reference defaults for `thinking_mode`.
    pub fn new(thinking_mode: ThinkingMode) -> EncodeOptions {
        EncodeOptions {
            thinking_mode,
            drop_thinking: true,
            add_default_bos_token: true,
            reasoning_effort: None,
            context: None,
        }
    }
}

/// Where a message is: `messages[i]` or `context[i]` (indices of the caller's lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLoc {
    pub in_context: bool,
    pub index: usize,
}

impl fmt::Display for MessageLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = if self.in_context {
            "context"
        } else {
            "messages"
        };
        write!(f, "{list}[{}]", self.index)
    }
}

/// Every input the reference rejects (same conditions, messages written for API clients).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChatError {
    #[error("invalid thinking_mode {0}: expected \"chat\" or \"thinking\"")]
    InvalidThinkingMode(String),
    #[error("invalid reasoning_effort {0}: expected \"high\", \"max\" or null")]
    InvalidReasoningEffort(String),
    #[error(
        "{loc}: unknown role {role:?}: expected system, user, assistant, tool, developer or latest_reminder"
    )]
    UnknownRole { loc: MessageLoc, role: String },
    #[error("{loc}: a developer message needs non-empty content")]
    EmptyDeveloperContent { loc: MessageLoc },
    #[error("{loc}: developer content must be a string, found {found}")]
    DeveloperContentNotText {
        loc: MessageLoc,
        found: &'static str,
    },
    #[error(
        "{loc}: user content must be a string, found {found} (content parts are not supported: send the text as one string)"
    )]
    UserContentNotText {
        loc: MessageLoc,
        found: &'static str,
    },
    #[error("{loc}: tool result content part {part}: {reason}")]
    ToolResultPart {
        loc: MessageLoc,
        part: usize,
        reason: String,
    },
    #[error("{loc}: invalid task {task:?}: expected one of {}", Task::NAMES)]
    InvalidTask { loc: MessageLoc, task: String },
    #[error("{loc}: invalid tools: {reason}")]
    InvalidTools { loc: MessageLoc, reason: String },
    #[error("{loc}: invalid tool_calls: {reason}")]
    InvalidToolCall { loc: MessageLoc, reason: String },
    #[error(
        "{loc}: tool_calls[{call}].function.arguments must encode a JSON object, found {found}"
    )]
    ToolArgumentsNotObject {
        loc: MessageLoc,
        call: usize,
        found: &'static str,
    },
    #[error("{loc}: {reason}")]
    InvalidMessage { loc: MessageLoc, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid {field} {value}: expected {allowed}")]
    InvalidApiField {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// The JSON type name of a value, for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Encodes `messages` into the prompt string (typed entry point).
///
/// ```
/// use v4_tokenizer::chat::encode::{EncodeOptions, Message, ThinkingMode, encode_messages};
///
/// let msgs = [Message::system("Be brief."), Message::user("Hi")];
/// let prompt = encode_messages(&msgs, &EncodeOptions::new(ThinkingMode::Thinking)).unwrap();
/// assert_eq!(prompt, "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜><think>");
/// ```
pub fn encode_messages(messages: &[Message], opts: &EncodeOptions) -> Result<String, ChatError> {
    let settings = Settings {
        mode: Ok(opts.thinking_mode),
        effort: Ok(opts.reasoning_effort),
        drop_thinking: opts.drop_thinking,
        add_bos: opts.add_default_bos_token,
    };
    encode_impl(messages, opts.context.as_deref().unwrap_or(&[]), &settings)
}

/// The keyword arguments `encode_json` accepts (anything else is rejected, as Python would).
const KWARGS: [&str; 5] = [
    "thinking_mode",
    "context",
    "drop_thinking",
    "add_default_bos_token",
    "reasoning_effort",
];

/// Encodes from the reference's arguments as JSON: `messages` (an array of OpenAI-shaped
/// messages) and `kwargs` (`thinking_mode` required; `context`, `drop_thinking`,
/// `add_default_bos_token`, `reasoning_effort` optional). Like the reference, an invalid
/// `thinking_mode` or `reasoning_effort` is only an error when a message is rendered.
pub fn encode_json(messages: &Value, kwargs: &Value) -> Result<String, ChatError> {
    let Value::Object(kw) = kwargs else {
        return Err(ChatError::InvalidRequest(format!(
            "kwargs must be an object, found {}",
            json_type(kwargs)
        )));
    };
    if let Some(k) = kw.keys().find(|k| !KWARGS.contains(&k.as_str())) {
        return Err(ChatError::InvalidRequest(format!(
            "unknown argument {k:?}: expected {}",
            KWARGS.join(", ")
        )));
    }
    let mode = match kw.get("thinking_mode") {
        None => {
            return Err(ChatError::InvalidRequest(
                "thinking_mode is required".into(),
            ));
        }
        Some(Value::String(s)) if s == "chat" => Ok(ThinkingMode::Chat),
        Some(Value::String(s)) if s == "thinking" => Ok(ThinkingMode::Thinking),
        Some(other) => Err(quoted(other)),
    };
    let effort = match kw.get("reasoning_effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "high" => Ok(Some(ReasoningEffort::High)),
        Some(Value::String(s)) if s == "max" => Ok(Some(ReasoningEffort::Max)),
        Some(other) => Err(quoted(other)),
    };
    let context = match kw.get("context") {
        Some(c) if truthy(Some(c)) => Message::list_from_value(c, true)?,
        _ => Vec::new(),
    };
    let messages = Message::list_from_value(messages, false)?;
    let settings = Settings {
        mode,
        effort,
        drop_thinking: kw.get("drop_thinking").is_none_or(|v| truthy(Some(v))),
        add_bos: kw
            .get("add_default_bos_token")
            .is_none_or(|v| truthy(Some(v))),
    };
    encode_impl(&messages, &context, &settings)
}

/// A kwarg value for an error message: JSON text (`"think"`, `null`, `3`).
fn quoted(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Settings with the mode/effort validation deferred to rendering (as in the reference).
pub(crate) struct Settings {
    pub mode: Result<ThinkingMode, String>,
    pub effort: Result<Option<ReasoningEffort>, String>,
    pub drop_thinking: bool,
    pub add_bos: bool,
}

fn encode_impl(
    messages: &[Message],
    context: &[Message],
    settings: &Settings,
) -> Result<String, ChatError> {
    let mut full = merge(context, true);
    let context_len = full.len();
    full.extend(merge(messages, false));
    // The reference sorts context+messages together and the context again on its own; the
    // context comes first, so one pass over the whole list gives the same order.
    sort_tool_results(&mut full)?;

    let mut prompt = String::new();
    if settings.add_bos && context_len == 0 {
        prompt.push_str(super::render::BOS);
    }
    // Declaring tools anywhere keeps every turn's reasoning.
    let drop = settings.drop_thinking && !full.iter().any(|t| truthy(t.tools()));
    let all: Vec<&Turn> = full.iter().collect();
    let (list, start) = if settings.mode == Ok(ThinkingMode::Thinking) && drop {
        // The render window starts after the drop-passed context, counted on its own (this
        // reproduces the reference's off-by-one when the context ends with a dropped developer).
        let context_kept = drop_pass(&all[..context_len]).len();
        (drop_pass(&all), context_kept)
    } else {
        (all, context_len)
    };
    let render = Render {
        turns: &list,
        mode: &settings.mode,
        effort: &settings.effort,
        drop,
        last_user: last_user_index(&list),
    };
    for i in start..list.len() {
        render.message(i, &mut prompt)?;
    }
    Ok(prompt)
}

/// Merges tool results into user turns: a tool result joins the previous turn if that is a
/// user turn, else starts one; a user message joins a previous user turn without a task.
/// Every other message passes through unchanged.
fn merge(messages: &[Message], in_context: bool) -> Vec<Turn<'_>> {
    let mut out: Vec<Turn> = Vec::with_capacity(messages.len());
    for (index, msg) in messages.iter().enumerate() {
        let loc = MessageLoc { in_context, index };
        match msg.role {
            Role::Tool => {
                let block = Block::ToolResult {
                    id: msg.tool_call_id.as_ref(),
                    content: msg.content.as_ref(),
                    loc,
                };
                match out.last_mut() {
                    Some(Turn::User { blocks, .. }) => blocks.push(block),
                    _ => out.push(Turn::User {
                        blocks: vec![block],
                        task: None,
                        loc,
                    }),
                }
            }
            Role::User => {
                let block = Block::Text {
                    text: msg.content.as_ref(),
                    loc,
                };
                match out.last_mut() {
                    Some(Turn::User {
                        blocks, task: None, ..
                    }) => blocks.push(block),
                    _ => out.push(Turn::User {
                        blocks: vec![block],
                        task: msg.task.as_ref(),
                        loc,
                    }),
                }
            }
            _ => out.push(Turn::Other { msg, loc }),
        }
    }
    out
}

/// A tool-call id as a Python dict key (`1`, `1.0` and `true` are the same key).
#[derive(Debug, PartialEq, Eq, Hash)]
enum PyKey {
    None,
    Str(String),
    Int(i128),
    Float(u64),
}

/// `v` as a dict key; `Err` with the type name for arrays and objects (unhashable in Python).
fn py_key(v: Option<&Value>) -> Result<PyKey, &'static str> {
    Ok(match v {
        None => PyKey::Str(String::new()),
        Some(Value::Null) => PyKey::None,
        Some(Value::Bool(b)) => PyKey::Int(i128::from(*b)),
        Some(Value::String(s)) => PyKey::Str(s.clone()),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => PyKey::Int(i128::from(i)),
            (_, Some(u), _) => PyKey::Int(i128::from(u)),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e30 => PyKey::Int(f as i128),
            (_, _, f) => PyKey::Float(f.unwrap_or(f64::NAN).to_bits()),
        },
        Some(other @ (Value::Array(_) | Value::Object(_))) => return Err(json_type(other)),
    })
}

/// Re-orders the tool results of each user turn (with more than one) by the position of their
/// `tool_call_id` among the calls of the most recent assistant message with tool calls
/// (`tool_calls[k].id`, else `tool_calls[k].function.id`); unknown ids sort as position 0, and
/// the sort is stable. Text blocks keep their slots.
fn sort_tool_results(turns: &mut [Turn<'_>]) -> Result<(), ChatError> {
    let mut order: HashMap<PyKey, usize> = HashMap::new();
    for turn in turns.iter_mut() {
        match turn {
            Turn::Other { msg, loc } => {
                if msg.role == Role::Assistant && truthy(msg.tool_calls.as_ref()) {
                    order = call_order(msg.tool_calls.as_ref(), *loc)?;
                }
            }
            Turn::User { blocks, .. } => {
                let slots: Vec<usize> = (0..blocks.len())
                    .filter(|&k| matches!(blocks[k], Block::ToolResult { .. }))
                    .collect();
                if slots.len() < 2 || order.is_empty() {
                    continue;
                }
                let mut ranked = Vec::with_capacity(slots.len());
                for &k in &slots {
                    if let Block::ToolResult { id, loc, .. } = &blocks[k] {
                        let key = py_key(*id).map_err(|found| ChatError::InvalidMessage {
                            loc: *loc,
                            reason: format!("tool_call_id must be a string, found {found}"),
                        })?;
                        ranked.push((order.get(&key).copied().unwrap_or(0), k));
                    }
                }
                ranked.sort_by_key(|&(rank, _)| rank); // stable
                let sorted: Vec<Block> = ranked.iter().map(|&(_, k)| blocks[k].clone()).collect();
                for (slot, block) in slots.into_iter().zip(sorted) {
                    blocks[slot] = block;
                }
            }
        }
    }
    Ok(())
}

/// The id → position map of one assistant message's tool calls.
fn call_order(calls: Option<&Value>, loc: MessageLoc) -> Result<HashMap<PyKey, usize>, ChatError> {
    let bad = |reason: String| ChatError::InvalidToolCall { loc, reason };
    let Some(Value::Array(calls)) = calls else {
        return Err(bad(
            "tool_calls must be an array of tool call objects".into()
        ));
    };
    let mut order = HashMap::new();
    for (k, call) in calls.iter().enumerate() {
        let Value::Object(call) = call else {
            return Err(bad(format!(
                "tool_calls[{k}] must be an object, found {}",
                json_type(call)
            )));
        };
        let mut id = call.get("id");
        if !truthy(id) {
            id = match call.get("function") {
                None => None,
                Some(Value::Object(f)) => f.get("id"),
                Some(f) => {
                    return Err(bad(format!(
                        "tool_calls[{k}].function must be an object, found {}",
                        json_type(f)
                    )));
                }
            };
        }
        if truthy(id) {
            let key = py_key(id)
                .map_err(|t| bad(format!("tool_calls[{k}].id must be a string, found {t}")))?;
            order.insert(key, k);
        }
    }
    Ok(order)
}

/// Index of the last user or developer turn.
fn last_user_index(turns: &[&Turn<'_>]) -> Option<usize> {
    turns
        .iter()
        .rposition(|t| matches!(t.role(), Role::User | Role::Developer))
}

/// The thinking-mode drop pass: before the last user/developer turn, keep user, system,
/// latest_reminder and `direct_search_results` messages and assistants (their reasoning is not
/// rendered there anyway); remove everything else (developer messages, unknown roles).
fn drop_pass<'t, 'a>(turns: &[&'t Turn<'a>]) -> Vec<&'t Turn<'a>> {
    let last = last_user_index(turns);
    turns
        .iter()
        .enumerate()
        .filter(|&(i, t)| {
            last.is_none_or(|l| i >= l)
                || match t.role() {
                    Role::User | Role::System | Role::Tool | Role::LatestReminder => true,
                    Role::Assistant => true,
                    Role::Other(r) => r == "direct_search_results",
                    Role::Developer => false,
                }
        })
        .map(|(_, t)| *t)
        .collect()
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "encode_fuzz_tests.rs"]
mod fuzz_tests;
