//! Reference-exact output parser: a native port of the behaviour of
//! `parse_message_from_completion_text(text, thinking_mode)` in the official `encoding_dsv4.py`.
//!
//! [`parse_completion`] takes the whole completion (the text generated after the prompt, EOS
//! included) and returns the assistant message, or the error the reference would raise. It
//! reproduces the reference's quirks on purpose (see `shared/design/chat-encoding.md` §3):
//!
//! * `string="false"` parameter values are copied **verbatim** into `arguments`, so the result
//!   is not always valid JSON (`{"x": not json}`, `{"n": }`).
//! * Python's `$` also matches before a final `"\n"`: an extra blank line after an invoke tag is
//!   accepted, and a parameter closed by `<\n/｜DSML｜parameter>` loses the `<\n`.
//! * Output truncated after a complete parameter line, after an invoke tag line, or after the
//!   block end parses successfully (no EOS needed); so does text ending right after
//!   `"\n\n<｜DSML｜tool_calls"`.
//! * Any `thinking_mode` other than `"thinking"` is treated as chat.
//!
//! For a lenient, incremental parser suitable for a server, see
//! [`crate::chat::stream_parse::StreamParser`].

use serde::{Deserialize, Serialize};

/// `<｜begin▁of▁sentence｜>`.
pub const BOS: &str = "<｜begin▁of▁sentence｜>";
/// `<｜end▁of▁sentence｜>`: the stop token's text.
pub const EOS: &str = "<｜end▁of▁sentence｜>";
/// `<think>`.
pub const THINK_START: &str = "<think>";
/// `</think>`: ends the reasoning.
pub const THINK_END: &str = "</think>";
/// `｜DSML｜`: the tag prefix of the tool-call markup.
pub const DSML: &str = "｜DSML｜";

/// What the reference looks for to detect the tool-call block (note: no closing `>`).
const TOOL_CALLS_START: &str = "\n\n<｜DSML｜tool_calls";
const TOOL_CALLS_END: &str = "</｜DSML｜tool_calls>";
const INVOKE_START: &str = "<｜DSML｜invoke";
const INVOKE_END: &str = "</｜DSML｜invoke";
const PARAM_START: &str = "<｜DSML｜parameter";
const PARAM_END: &str = "/｜DSML｜parameter";

/// The parsed assistant message, serialized exactly like the reference's dict
/// (`{"role", "content", "reasoning_content", "tool_calls"}`; strings are never null).
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Clone)]
pub struct ParsedMessage {
    /// Always `"assistant"`.
    pub role: String,
    /// The answer text (empty when there is none).
    pub content: String,
    /// The reasoning text; always `""` in chat mode.
    pub reasoning_content: String,
    /// The tool calls in order (no ids: the reference emits none).
    pub tool_calls: Vec<ToolCall>,
}

/// One tool call in OpenAI shape: `{"type": "function", "function": {"name", "arguments"}}`.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Clone)]
pub struct ToolCall {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub call_type: String,
    /// Name and arguments.
    pub function: FunctionCall,
}

/// The `function` part of a [`ToolCall`].
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Clone)]
pub struct FunctionCall {
    /// The tool name, verbatim.
    pub name: String,
    /// `"{" + ", ".join(json(key) + ": " + value) + "}"` where `value` is `json(text)` for
    /// `string="true"` and the raw text for `string="false"` (not validated, like the reference).
    pub arguments: String,
}

/// Why a completion was rejected. Messages are the reference's assertion / exception texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Thinking mode, but `</think>` is missing or a tool-call block comes first.
    #[error("Invalid thinking format: missing </think>")]
    MissingThinkEnd,
    /// Neither EOS nor a tool-call block after the content.
    #[error("Invalid format: missing EOS token")]
    MissingEos,
    /// Text between the end of the tool-call block and EOS.
    #[error("Unexpected content after tool calls")]
    ContentAfterToolCalls,
    /// Anything after EOS (also a newline or a second EOS).
    #[error("Unexpected content at end")]
    ContentAtEnd,
    /// BOS, EOS, `<think>`, `</think>` or `｜DSML｜` inside content or reasoning.
    #[error("Unexpected special token '{0}' in content")]
    SpecialToken(&'static str),
    /// The text before `<｜DSML｜invoke` / the block end is not exactly `">\n"`.
    #[error("Tool call format error: expected '>\\n' but got '{0}'")]
    ToolCallFormat(String),
    /// Inside the block, neither an invoke nor the block end follows.
    #[error("Missing special token in tool calls")]
    MissingToolCallToken,
    /// The invoke tag does not match `^\s*name="(.*?)">\n$`.
    #[error("Tool name format error: '{0}'")]
    ToolNameFormat(String),
    /// A parameter does not match `^ name="(.*?)" string="(true|false)">(.*?)<$`.
    #[error("Parameter format error: '{0}'")]
    ParameterFormat(String),
    /// The text after a parameter is not exactly `">\n"`.
    #[error("Parameter format error: expected '>\\n' but got '{0}'")]
    ParameterSeparator(String),
    /// The same parameter name twice in one invoke.
    #[error("Duplicate parameter name: '{0}'")]
    DuplicateParameter(String),
}

impl ParseError {
    /// The Python exception class the reference raises for this error
    /// (`"AssertionError"` or `"ValueError"`), as in the fixtures' `error_type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ParseError::MissingThinkEnd
            | ParseError::MissingEos
            | ParseError::ContentAfterToolCalls
            | ParseError::ContentAtEnd
            | ParseError::SpecialToken(_) => "AssertionError",
            _ => "ValueError",
        }
    }
}

/// Parses a whole completion exactly like the reference
/// `parse_message_from_completion_text(text, thinking_mode)`.
///
/// `thinking_mode == "thinking"` means the prompt ended in `<think>` and the text starts with
/// the reasoning; every other value is treated as chat mode.
pub fn parse_completion(text: &str, thinking_mode: &str) -> Result<ParsedMessage, ParseError> {
    let mut reasoning = "";
    let mut index = 0;
    if thinking_mode == "thinking" {
        let (next, before, stop) = read_until_stop(text, index, &[THINK_END, TOOL_CALLS_START]);
        if stop != Some(THINK_END) {
            return Err(ParseError::MissingThinkEnd);
        }
        reasoning = before;
        index = next;
    }
    let (next, content, mut stop) = read_until_stop(text, index, &[EOS, TOOL_CALLS_START]);
    index = next;
    let mut tool_calls = Vec::new();
    match stop {
        Some(TOOL_CALLS_START) => {
            let (next, calls) = parse_tool_calls(text, index)?;
            tool_calls = calls;
            let (next, after, eos) = read_until_stop(text, next, &[EOS]);
            if !after.is_empty() {
                return Err(ParseError::ContentAfterToolCalls);
            }
            index = next;
            stop = eos;
        }
        Some(_) => {}
        None => return Err(ParseError::MissingEos),
    }
    // `stop` is EOS or None here; the reference also asserts that.
    debug_assert!(matches!(stop, Some(EOS) | None));
    if index != text.len() {
        return Err(ParseError::ContentAtEnd);
    }
    for token in [BOS, EOS, THINK_START, THINK_END, DSML] {
        if content.contains(token) || reasoning.contains(token) {
            return Err(ParseError::SpecialToken(token));
        }
    }
    Ok(ParsedMessage {
        role: "assistant".to_owned(),
        content: content.to_owned(),
        reasoning_content: reasoning.to_owned(),
        tool_calls,
    })
}

/// The reference's `_read_until_stop`: from `index`, finds the earliest of `stops` (the first
/// listed wins a tie) and returns (index after it, text before it, which one); when none is
/// found, (end of text, rest of text, `None`).
fn read_until_stop<'t>(
    text: &'t str,
    index: usize,
    stops: &[&'static str],
) -> (usize, &'t str, Option<&'static str>) {
    let rest = &text[index..];
    let mut best: Option<(usize, &'static str)> = None;
    for &stop in stops {
        if let Some(pos) = rest.find(stop)
            && best.is_none_or(|(p, _)| pos < p)
        {
            best = Some((pos, stop));
        }
    }
    match best {
        Some((pos, stop)) => (index + pos + stop.len(), &rest[..pos], Some(stop)),
        None => (text.len(), rest, None),
    }
}

/// The reference's `parse_tool_calls`, starting just after `"\n\n<｜DSML｜tool_calls"`.
/// Returns the index after the block and the calls.
fn parse_tool_calls(text: &str, mut index: usize) -> Result<(usize, Vec<ToolCall>), ParseError> {
    let mut calls = Vec::new();
    while index < text.len() {
        let (next, gap, stop) = read_until_stop(text, index, &[INVOKE_START, TOOL_CALLS_END]);
        index = next;
        if gap != ">\n" {
            return Err(ParseError::ToolCallFormat(gap.to_owned()));
        }
        match stop {
            Some(TOOL_CALLS_END) => break,
            None => return Err(ParseError::MissingToolCallToken),
            Some(_) => {}
        }
        let (next, tag, mut stop) = read_until_stop(text, index, &[PARAM_START, INVOKE_END]);
        index = next;
        let name =
            match_tool_name(tag).ok_or_else(|| ParseError::ToolNameFormat(tag.to_owned()))?;
        let mut params: Vec<(&str, bool, &str)> = Vec::new();
        while stop == Some(PARAM_START) {
            let (next, body, _) = read_until_stop(text, index, &[PARAM_END]);
            index = next;
            let (key, is_string, value) = match_parameter(body)
                .ok_or_else(|| ParseError::ParameterFormat(body.to_owned()))?;
            if params.iter().any(|(k, _, _)| *k == key) {
                return Err(ParseError::DuplicateParameter(key.to_owned()));
            }
            params.push((key, is_string, value));
            let (next, gap, next_stop) = read_until_stop(text, index, &[PARAM_START, INVOKE_END]);
            index = next;
            stop = next_stop;
            if gap != ">\n" {
                return Err(ParseError::ParameterSeparator(gap.to_owned()));
            }
        }
        calls.push(ToolCall {
            call_type: "function".to_owned(),
            function: FunctionCall {
                name: name.to_owned(),
                arguments: render_arguments(params.iter().map(|&(k, s, v)| (k, s, v))),
            },
        });
    }
    Ok((index, calls))
}

/// The reference's `decode_dsml_to_arguments`: `{"key": value, ...}` with string values
/// JSON-quoted and non-string values copied verbatim.
pub(crate) fn render_arguments<'a>(
    params: impl Iterator<Item = (&'a str, bool, &'a str)>,
) -> String {
    let mut out = String::from("{");
    for (i, (key, is_string, value)) in params.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_json_string(&mut out, key);
        out.push_str(": ");
        if is_string {
            push_py_json_string(&mut out, value);
        } else {
            out.push_str(value);
        }
    }
    out.push('}');
    out
}

/// Appends `s` as Python `json.dumps(s, ensure_ascii=False)` writes it: `"` and `\` escaped,
/// `\n \r \t \b \f` by name, other characters below U+0020 as `\u00XX`, everything else raw.
pub(crate) fn push_py_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    // Only ASCII bytes are ever escaped, so the runs in between are whole characters.
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Python's `str.isspace()` (what `\s` matches in a `str` pattern): Unicode White_Space plus
/// the separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Strips what Python's `$` (without MULTILINE) allows after `body`: the regex part before `$`
/// must end the string or be followed by exactly one final `"\n"`. Returns the candidates in
/// the order a lazy match tries them (shorter body first).
fn dollar_candidates(s: &str) -> impl Iterator<Item = &str> {
    s.strip_suffix('\n').into_iter().chain(std::iter::once(s))
}

/// `re.findall(r'^\s*name="(.*?)">\n$', tag, re.DOTALL)` with exactly one match → the name.
fn match_tool_name(tag: &str) -> Option<&str> {
    let rest = tag.trim_start_matches(py_isspace).strip_prefix("name=\"")?;
    // `.*?` is lazy: the shortest name whose remainder is `">\n` then `$`.
    dollar_candidates(rest).find_map(|body| body.strip_suffix("\">\n"))
}

/// `re.findall(r'^ name="(.*?)" string="(true|false)">(.*?)<$', body, re.DOTALL)` with exactly
/// one match → (name, is_string, value).
fn match_parameter(body: &str) -> Option<(&str, bool, &str)> {
    let rest = body.strip_prefix(" name=\"")?;
    // Lazy name: try every `" string="true|false">` occurrence from the left.
    let mut search = 0;
    while let Some(found) = rest[search..].find("\" string=\"") {
        let name_end = search + found;
        let attr = &rest[name_end + "\" string=\"".len()..];
        for (flag, is_string) in [("true\">", true), ("false\">", false)] {
            if let Some(value_part) = attr.strip_prefix(flag) {
                // Lazy value: the shortest one followed by `<` and `$`.
                if let Some(value) = dollar_candidates(value_part).find_map(|v| v.strip_suffix('<'))
                {
                    return Some((&rest[..name_end], is_string, value));
                }
            }
        }
        search = name_end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_quirks() {
        assert_eq!(match_tool_name(" name=\"f\">\n"), Some("f"));
        assert_eq!(match_tool_name(" name=\"f\">\n\n"), Some("f"));
        assert_eq!(match_tool_name("\u{1f}name=\"f\">\n"), Some("f"));
        assert_eq!(match_tool_name(" name=\"f\">"), None);
        assert_eq!(
            match_parameter(" name=\"p\" string=\"true\">v<"),
            Some(("p", true, "v"))
        );
        assert_eq!(
            match_parameter(" name=\"p\" string=\"false\">v<\n"),
            Some(("p", false, "v"))
        );
        assert_eq!(match_parameter(" name=\"p\" string=\"yes\">v<"), None);
        assert_eq!(
            match_parameter(" name=\"a\" string=\"x\" string=\"true\"><<"),
            Some(("a\" string=\"x", true, "<"))
        );
    }

    #[test]
    fn ends_right_after_block_marker() {
        let m = parse_completion("abc\n\n<｜DSML｜tool_calls", "chat").unwrap();
        assert_eq!(m.content, "abc");
        assert!(m.tool_calls.is_empty());
    }
}
