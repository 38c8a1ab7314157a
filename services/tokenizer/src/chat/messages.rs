//! Chat messages as the encoder takes them: the OpenAI message shape, kept as lenient as the
//! reference `encoding_dsv4.py` is.
//!
//! The reference checks most things only when it renders a message (a malformed tool call in a
//! context message that is never rendered is not an error), and it prints some non-string
//! values with Python's `str()`. So the fields whose shape the reference does not enforce up
//! front stay `serde_json::Value`s here, and the encoder validates them where the reference
//! does. What is checked on conversion: a message is a JSON object, and its `role` is a string
//! (or missing/null/number/bool, which the reference treats as an unknown role).

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::encode::{ChatError, MessageLoc, json_type};
use super::pyrepr::py_str;

/// A message's `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// Tool results; merged into user turns as `<tool_result>` blocks.
    Tool,
    /// Rendered as a user turn; may carry `tools` and `response_format`.
    Developer,
    /// `<｜latest_reminder｜>` + content.
    LatestReminder,
    /// Anything else (Python's `str()` of it; a missing role is `None`). Rejected when rendered;
    /// silently removed by the thinking-mode drop pass before the last user turn.
    Other(String),
}

impl Role {
    /// The wire name (`"latest_reminder"`, …).
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Developer => "developer",
            Role::LatestReminder => "latest_reminder",
            Role::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "developer" => Role::Developer,
            "latest_reminder" => Role::LatestReminder,
            other => Role::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quick-instruction `task`: its special token is appended after the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// `<｜Assistant｜>` + think token + `<｜action｜>`.
    Action,
    Query,
    Authority,
    Domain,
    Title,
    ReadUrl,
    /// Any other value (Python's `str()` of it): an error once its token would be emitted.
    Invalid(String),
}

impl Task {
    /// The valid task names, for error messages.
    pub const NAMES: &'static str = "action, query, authority, domain, title, read_url";

    fn from_value(v: &Value) -> Task {
        match v.as_str() {
            Some("action") => Task::Action,
            Some("query") => Task::Query,
            Some("authority") => Task::Authority,
            Some("domain") => Task::Domain,
            Some("title") => Task::Title,
            Some("read_url") => Task::ReadUrl,
            _ => Task::Invalid(py_str(v)),
        }
    }

    /// The special token appended for this task (`None` for [`Task::Invalid`]).
    pub fn token(&self) -> Option<&'static str> {
        Some(match self {
            Task::Action => "<｜action｜>",
            Task::Query => "<｜query｜>",
            Task::Authority => "<｜authority｜>",
            Task::Domain => "<｜domain｜>",
            Task::Title => "<｜title｜>",
            Task::ReadUrl => "<｜read_url｜>",
            Task::Invalid(_) => return None,
        })
    }
}

/// One chat message (OpenAI shape plus the V4 extensions `task`, `wo_eos`, `developer` and
/// `latest_reminder` roles). `None` means the key is absent, which the reference sometimes
/// treats differently from `null` (a user message without `content` is an empty turn; with
/// `content: null` it is an error).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// Text. Users need a string; tool results may also be a list of `{type, text}` parts or
    /// any value (printed with Python's `str()`); system/assistant values are printed likewise.
    pub content: Option<Value>,
    /// Assistant reasoning, rendered in thinking mode before `</think>`.
    pub reasoning_content: Option<Value>,
    /// `[{"id"?, "type": "function", "function": {"name", "arguments"}}]`; arguments is a JSON
    /// string (or any value, rendered as one `arguments` parameter).
    pub tool_calls: Option<Value>,
    /// `[{"type": "function", "function": {...}}]`, rendered on system/developer messages; a
    /// non-empty `tools` on any non-user message turns off reasoning dropping.
    pub tools: Option<Value>,
    /// Rendered as JSON after the tools block on system/developer messages.
    pub response_format: Option<Value>,
    /// On tool results: orders the merged results like the calls they answer.
    pub tool_call_id: Option<Value>,
    /// Quick-instruction task (`null` is the same as absent).
    pub task: Option<Task>,
    /// Assistant turn without the closing EOS (prefix continuation).
    pub wo_eos: bool,
}

/// A tool call, for building assistant messages in code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as JSON text (normally an object).
    pub arguments: String,
}

impl ToolCall {
    /// The OpenAI wire form `{"id", "type": "function", "function": {"name", "arguments"}}`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({"type": "function", "function": {"name": self.name, "arguments": self.arguments}});
        if let (Some(id), Some(obj)) = (&self.id, v.as_object_mut()) {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        v
    }
}

impl Message {
    /// A message with text content and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: Some(Value::String(content.into())),
            reasoning_content: None,
            tool_calls: None,
            tools: None,
            response_format: None,
            tool_call_id: None,
            task: None,
            wo_eos: false,
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }

    pub fn developer(content: impl Into<String>) -> Message {
        Message::new(Role::Developer, content)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        let mut m = Message::new(Role::Tool, content);
        m.tool_call_id = Some(Value::String(tool_call_id.into()));
        m
    }

    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Message {
        self.reasoning_content = Some(Value::String(reasoning.into()));
        self
    }

    pub fn with_tool_calls(mut self, calls: &[ToolCall]) -> Message {
        self.tool_calls = Some(Value::Array(calls.iter().map(ToolCall::to_value).collect()));
        self
    }

    /// `tools` in the OpenAI form `[{"type": "function", "function": {...}}]`.
    pub fn with_tools(mut self, tools: Value) -> Message {
        self.tools = Some(tools);
        self
    }

    pub fn with_response_format(mut self, response_format: Value) -> Message {
        self.response_format = Some(response_format);
        self
    }

    pub fn with_task(mut self, task: Task) -> Message {
        self.task = Some(task);
        self
    }

    /// Converts one OpenAI-shaped JSON message; `loc` names it in errors. Unknown keys are
    /// ignored, as the reference ignores them.
    pub fn from_value(v: &Value, loc: MessageLoc) -> Result<Message, ChatError> {
        let Value::Object(obj) = v else {
            return Err(ChatError::InvalidMessage {
                loc,
                reason: format!("a message must be a JSON object, found {}", json_type(v)),
            });
        };
        let role = match obj.get("role") {
            None | Some(Value::Null) => Role::Other("None".into()),
            Some(Value::String(s)) => Role::parse(s),
            Some(r @ (Value::Bool(_) | Value::Number(_))) => Role::Other(py_str(r)),
            Some(r) => {
                return Err(ChatError::InvalidMessage {
                    loc,
                    reason: format!("role must be a string, found {}", json_type(r)),
                });
            }
        };
        let get = |k: &str| obj.get(k).cloned();
        Ok(Message {
            role,
            content: get("content"),
            reasoning_content: get("reasoning_content"),
            tool_calls: get("tool_calls"),
            tools: get("tools"),
            response_format: get("response_format"),
            tool_call_id: get("tool_call_id"),
            task: obj
                .get("task")
                .filter(|t| !t.is_null())
                .map(Task::from_value),
            wo_eos: truthy(obj.get("wo_eos")),
        })
    }

    /// Converts a JSON array of messages (`in_context` says which list, for error locations).
    pub fn list_from_value(v: &Value, in_context: bool) -> Result<Vec<Message>, ChatError> {
        let name = if in_context { "context" } else { "messages" };
        let Value::Array(items) = v else {
            return Err(ChatError::InvalidRequest(format!(
                "{name} must be an array of message objects, found {}",
                json_type(v)
            )));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, m)| Message::from_value(m, MessageLoc { in_context, index }))
            .collect()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message, D::Error> {
        let v = Value::deserialize(d)?;
        let loc = MessageLoc {
            in_context: false,
            index: 0,
        };
        Message::from_value(&v, loc).map_err(|e| match e {
            // The position is the caller's to report.
            ChatError::InvalidMessage { reason, .. } => serde::de::Error::custom(reason),
            other => serde::de::Error::custom(other),
        })
    }
}

/// Python truthiness of an optional JSON value (absent, `null`, `false`, `0`, `""`, `[]`, `{}`
/// are false).
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_none_or(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}
