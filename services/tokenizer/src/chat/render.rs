//! Rendering one message of the merged list, and the transition tokens after it
//! (`shared/design/chat-encoding.md` §2.2–2.3). Checks happen in the reference's order: thinking
//! mode, tools, tool calls, reasoning effort, then the role.

use serde_json::Value;

use super::encode::{ChatError, MessageLoc, ReasoningEffort, ThinkingMode, json_type};
use super::messages::{Message, Role, Task, truthy};
use super::pyjson::{PyValue, loads, to_json, value_to_json};
use super::pyrepr::py_str;

pub(crate) const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";
const USER: &str = "<｜User｜>";
const ASSISTANT: &str = "<｜Assistant｜>";
const LATEST_REMINDER: &str = "<｜latest_reminder｜>";
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Think Max prefix, emitted before the first message of a prompt without context.
const EFFORT_MAX: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n\
You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n\
Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/// Tools block up to the schemas (preceded by "\n\n").
const TOOLS_HEAD: &str = "## Tools\n\n\
You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n\
<｜DSML｜tool_calls>\n\
<｜DSML｜invoke name=\"$TOOL_NAME\">\n\
<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n\
...\n\
</｜DSML｜invoke>\n\
<｜DSML｜invoke name=\"$TOOL_NAME2\">\n\
...\n\
</｜DSML｜invoke>\n\
</｜DSML｜tool_calls>\n\n\
String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n\
If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\n\
Otherwise, output directly after </think> with tool calls or final response.\n\n\
### Available Tool Schemas\n\n";
const TOOLS_TAIL: &str = "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
const RESPONSE_FORMAT_HEAD: &str =
    "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

/// One part of a merged user turn.
#[derive(Debug, Clone)]
pub(crate) enum Block<'a> {
    /// A user message's `content` (`None`: the key was absent → empty).
    Text {
        text: Option<&'a Value>,
        loc: MessageLoc,
    },
    /// A tool message (`None`: absent key → empty id / empty content).
    ToolResult {
        id: Option<&'a Value>,
        content: Option<&'a Value>,
        loc: MessageLoc,
    },
}

/// A message after merging: a user turn built from user and tool messages, or any other
/// message unchanged.
#[derive(Debug, Clone)]
pub(crate) enum Turn<'a> {
    User {
        blocks: Vec<Block<'a>>,
        task: Option<&'a Task>,
        loc: MessageLoc,
    },
    Other {
        msg: &'a Message,
        loc: MessageLoc,
    },
}

static USER_ROLE: Role = Role::User;

impl Turn<'_> {
    pub(crate) fn role(&self) -> &Role {
        match self {
            Turn::User { .. } => &USER_ROLE,
            Turn::Other { msg, .. } => &msg.role,
        }
    }

    pub(crate) fn task(&self) -> Option<&Task> {
        match self {
            Turn::User { task, .. } => *task,
            Turn::Other { msg, .. } => msg.task.as_ref(),
        }
    }

    /// `tools` (merging discards those of user and tool messages).
    pub(crate) fn tools(&self) -> Option<&Value> {
        match self {
            Turn::User { .. } => None,
            Turn::Other { msg, .. } => msg.tools.as_ref(),
        }
    }

    fn loc(&self) -> MessageLoc {
        match self {
            Turn::User { loc, .. } | Turn::Other { loc, .. } => *loc,
        }
    }
}

/// Renders messages of one (possibly drop-passed) list.
pub(crate) struct Render<'r, 'a> {
    pub turns: &'r [&'r Turn<'a>],
    pub mode: &'r Result<ThinkingMode, String>,
    pub effort: &'r Result<Option<ReasoningEffort>, String>,
    /// Effective reasoning dropping.
    pub drop: bool,
    /// Index of the last user/developer turn in `turns`.
    pub last_user: Option<usize>,
}

/// `Some(v)` if truthy, as Python's `value or ""` then `str()`.
fn text_or_empty(v: Option<&Value>) -> String {
    if truthy(v) {
        v.map(py_str).unwrap_or_default()
    } else {
        String::new()
    }
}

impl Render<'_, '_> {
    /// Appends message `i` and its transition tokens to `out`.
    pub(crate) fn message(&self, i: usize, out: &mut String) -> Result<(), ChatError> {
        let Some(&turn) = self.turns.get(i) else {
            return Ok(());
        };
        let loc = turn.loc();
        let mode = self.mode.clone().map_err(ChatError::InvalidThinkingMode)?;
        let thinking = mode == ThinkingMode::Thinking;
        let msg = match turn {
            Turn::Other { msg, .. } => Some(*msg),
            Turn::User { .. } => None,
        };
        let tools = match msg {
            Some(m) if truthy(m.tools.as_ref()) => Some(tool_schemas(m.tools.as_ref(), loc)?),
            _ => None,
        };
        let calls = match msg {
            Some(m) if truthy(m.tool_calls.as_ref()) => {
                Some(tool_call_list(m.tool_calls.as_ref(), loc)?)
            }
            _ => None,
        };
        let effort = self
            .effort
            .clone()
            .map_err(ChatError::InvalidReasoningEffort)?;
        if i == 0 && thinking && effort == Some(ReasoningEffort::Max) {
            out.push_str(EFFORT_MAX);
        }
        match turn {
            Turn::User { blocks, .. } => {
                out.push_str(USER);
                user_blocks(blocks, out)?;
            }
            Turn::Other { msg, .. } => match &msg.role {
                Role::System => {
                    out.push_str(&text_or_empty(msg.content.as_ref()));
                    extras(msg, tools, out);
                }
                Role::Developer => {
                    match &msg.content {
                        c if !truthy(c.as_ref()) => {
                            return Err(ChatError::EmptyDeveloperContent { loc });
                        }
                        Some(Value::String(s)) => {
                            out.push_str(USER);
                            out.push_str(s);
                        }
                        Some(v) => {
                            let found = json_type(v);
                            return Err(ChatError::DeveloperContentNotText { loc, found });
                        }
                        None => return Err(ChatError::EmptyDeveloperContent { loc }),
                    }
                    extras(msg, tools, out);
                }
                Role::LatestReminder => {
                    out.push_str(LATEST_REMINDER);
                    out.push_str(&msg.content.as_ref().map_or_else(|| "None".into(), py_str));
                }
                Role::Assistant => self.assistant(i, (msg, loc), thinking, calls, out)?,
                role => {
                    return Err(ChatError::UnknownRole {
                        loc,
                        role: role.to_string(),
                    });
                }
            },
        }
        self.transition(i, thinking, out)
    }

    /// `reasoning</think>` (thinking mode, unless dropped or after a task) + content + tool
    /// calls + EOS (unless `wo_eos`).
    fn assistant(
        &self,
        i: usize,
        (msg, loc): (&Message, MessageLoc),
        thinking: bool,
        calls: Option<Vec<Call<'_>>>,
        out: &mut String,
    ) -> Result<(), ChatError> {
        let calls = calls.map(|c| tool_call_block(&c, loc)).transpose()?;
        let after_task = i > 0 && self.turns[i - 1].task().is_some();
        let after_last_user = self.last_user.is_none_or(|l| i > l);
        if thinking && !after_task && (!self.drop || after_last_user) {
            out.push_str(&text_or_empty(msg.reasoning_content.as_ref()));
            out.push_str(THINK_CLOSE);
        }
        out.push_str(&text_or_empty(msg.content.as_ref()));
        out.push_str(calls.as_deref().unwrap_or(""));
        if !msg.wo_eos {
            out.push_str(EOS);
        }
        Ok(())
    }

    /// After a message followed by an assistant/latest_reminder message (or the last one): the
    /// task token, or `<｜Assistant｜>` + think token after a user/developer turn.
    fn transition(&self, i: usize, thinking: bool, out: &mut String) -> Result<(), ChatError> {
        if let Some(next) = self.turns.get(i + 1)
            && !matches!(next.role(), Role::Assistant | Role::LatestReminder)
        {
            return Ok(());
        }
        let turn = self.turns[i];
        if let Some(task) = turn.task() {
            if let Task::Invalid(task) = task {
                return Err(ChatError::InvalidTask {
                    loc: turn.loc(),
                    task: task.clone(),
                });
            }
            let token = task.token().unwrap_or_default();
            if *task == Task::Action {
                out.push_str(ASSISTANT);
                out.push_str(if thinking { THINK_OPEN } else { THINK_CLOSE });
            }
            out.push_str(token);
        } else if matches!(turn.role(), Role::User | Role::Developer) {
            out.push_str(ASSISTANT);
            let at_or_after_last_user = self.last_user.is_none_or(|l| i >= l);
            let open = thinking && (!self.drop || at_or_after_last_user);
            out.push_str(if open { THINK_OPEN } else { THINK_CLOSE });
        }
        Ok(())
    }
}

/// The tools block and the response-format block of a system/developer message.
fn extras(msg: &Message, tools: Option<String>, out: &mut String) {
    if let Some(schemas) = tools {
        out.push_str("\n\n");
        out.push_str(TOOLS_HEAD);
        out.push_str(&schemas);
        out.push_str(TOOLS_TAIL);
    }
    if let Some(rf) = msg.response_format.as_ref().filter(|rf| truthy(Some(rf))) {
        out.push_str(RESPONSE_FORMAT_HEAD);
        out.push_str(&value_to_json(rf));
    }
}

/// The `function` of each tool as one JSON line each.
fn tool_schemas(tools: Option<&Value>, loc: MessageLoc) -> Result<String, ChatError> {
    let bad = |reason: String| ChatError::InvalidTools { loc, reason };
    let Some(Value::Array(tools)) = tools else {
        return Err(bad(
            "tools must be an array of {\"type\": \"function\", \"function\": {...}}".into(),
        ));
    };
    let mut lines = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        match tool.as_object().and_then(|t| t.get("function")) {
            Some(f) => lines.push(value_to_json(f)),
            None => {
                return Err(bad(format!(
                    "tools[{k}] needs the OpenAI wrapper {{\"type\": \"function\", \"function\": {{...}}}}"
                )));
            }
        }
    }
    Ok(lines.join("\n"))
}

/// A tool call's `function.name` and `function.arguments`.
type Call<'a> = (&'a Value, &'a Value);

/// The name and arguments of each tool call (checked on every message that has tool calls).
fn tool_call_list(calls: Option<&Value>, loc: MessageLoc) -> Result<Vec<Call<'_>>, ChatError> {
    let bad = |reason: String| ChatError::InvalidToolCall { loc, reason };
    let Some(Value::Array(calls)) = calls else {
        return Err(bad(
            "tool_calls must be an array of tool call objects".into()
        ));
    };
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.iter().enumerate() {
        let Some(Value::Object(function)) = call.as_object().and_then(|c| c.get("function")) else {
            return Err(bad(format!("tool_calls[{k}] needs a \"function\" object")));
        };
        let Some(name) = function.get("name") else {
            return Err(bad(format!("tool_calls[{k}].function needs \"name\"")));
        };
        let Some(arguments) = function.get("arguments") else {
            return Err(bad(format!("tool_calls[{k}].function needs \"arguments\"")));
        };
        out.push((name, arguments));
    }
    Ok(out)
}

/// The `\n\n<｜DSML｜tool_calls>…</｜DSML｜tool_calls>` block of an assistant message.
fn tool_call_block(calls: &[Call<'_>], loc: MessageLoc) -> Result<String, ChatError> {
    let mut invokes = Vec::with_capacity(calls.len());
    for (k, (name, arguments)) in calls.iter().enumerate() {
        let params = dsml_params(arguments, loc, k)?;
        invokes.push(format!(
            "<｜DSML｜invoke name=\"{}\">\n{params}\n</｜DSML｜invoke>",
            py_str(name)
        ));
    }
    Ok(format!(
        "\n\n<｜DSML｜tool_calls>\n{}\n</｜DSML｜tool_calls>",
        invokes.join("\n")
    ))
}

/// One DSML parameter line per argument: strings raw with `string="true"`, everything else as
/// Python JSON with `string="false"`. Arguments that are not a JSON string encoding an object
/// (invalid JSON, or not a string at all) become the single parameter `arguments`.
fn dsml_params(arguments: &Value, loc: MessageLoc, call: usize) -> Result<String, ChatError> {
    let params = match arguments {
        Value::String(text) => match loads(text) {
            Some(PyValue::Dict(items)) => items,
            Some(other) => {
                let found = match other {
                    PyValue::None => "null",
                    PyValue::Bool(_) => "boolean",
                    PyValue::Int(_) | PyValue::Float(_) => "number",
                    PyValue::Str(_) => "string",
                    PyValue::List(_) => "array",
                    PyValue::Dict(_) => "object",
                };
                return Err(ChatError::ToolArgumentsNotObject { loc, call, found });
            }
            None => vec![("arguments".to_string(), PyValue::Str(text.clone()))],
        },
        other => vec![("arguments".to_string(), PyValue::from(other))],
    };
    let lines: Vec<String> = params
        .iter()
        .map(|(key, v)| {
            let (is_str, value) = match v {
                PyValue::Str(s) => ("true", s.clone()),
                other => ("false", to_json(other)),
            };
            format!(
                "<｜DSML｜parameter name=\"{key}\" string=\"{is_str}\">{value}</｜DSML｜parameter>"
            )
        })
        .collect();
    Ok(lines.join("\n"))
}

/// The blocks of a user turn joined by blank lines: text as is, tool results wrapped in
/// `<tool_result>` (a list of parts → their texts joined by blank lines, other values → `str()`).
fn user_blocks(blocks: &[Block<'_>], out: &mut String) -> Result<(), ChatError> {
    for (k, block) in blocks.iter().enumerate() {
        if k > 0 {
            out.push_str("\n\n");
        }
        match block {
            Block::Text { text: None, .. } => {}
            Block::Text {
                text: Some(Value::String(s)),
                ..
            } => out.push_str(s),
            Block::Text { text: Some(v), loc } => {
                return Err(ChatError::UserContentNotText {
                    loc: *loc,
                    found: json_type(v),
                });
            }
            Block::ToolResult { content, loc, .. } => {
                out.push_str("<tool_result>");
                match content {
                    None => {}
                    Some(Value::Array(parts)) => tool_result_parts(parts, *loc, out)?,
                    Some(v) => out.push_str(&py_str(v)),
                }
                out.push_str("</tool_result>");
            }
        }
    }
    Ok(())
}

/// Tool-result content parts: `{"type": "text", "text"}` → text, any other part →
/// `[Unsupported <type>]`, joined by blank lines.
fn tool_result_parts(parts: &[Value], loc: MessageLoc, out: &mut String) -> Result<(), ChatError> {
    for (part, p) in parts.iter().enumerate() {
        let bad = |reason: String| ChatError::ToolResultPart { loc, part, reason };
        let Value::Object(p) = p else {
            return Err(bad(format!("must be an object, found {}", json_type(p))));
        };
        if part > 0 {
            out.push_str("\n\n");
        }
        match p.get("type") {
            Some(Value::String(t)) if t == "text" => match p.get("text") {
                None => {}
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => {
                    return Err(bad(format!(
                        "text must be a string, found {}",
                        json_type(v)
                    )));
                }
            },
            t => {
                let t = t.map_or_else(|| "None".into(), py_str);
                out.push_str(&format!("[Unsupported {t}]"));
            }
        }
    }
    Ok(())
}
