//! Incremental, lenient output parser for the server: turns the detokenizer's text deltas into
//! reasoning deltas, content deltas and complete tool calls.
//!
//! Unlike [`crate::chat::parse::parse_completion`] (reference-exact, whole text, rejects
//! anything malformed) this parser never fails and never loses text:
//!
//! * Markers may be split across [`StreamParser::push`] calls at any character. Text that could
//!   be the start of a marker (`<`, `<｜`, `</thi`, a trailing `"\n"` that may precede a
//!   tool-call block) is held back only until the next push disambiguates it, then emitted.
//! * `</think>` ends the reasoning. A `<｜DSML｜tool_calls>` block that starts before `</think>`
//!   also ends the reasoning, and its calls are parsed.
//! * The `"\n\n"` (or `"\n"`) before `<｜DSML｜tool_calls>` is a separator, not content.
//! * Each `<｜DSML｜invoke>` is emitted as one [`Delta::ToolCall`] as soon as its
//!   `</｜DSML｜invoke>` arrives. Arguments are always valid JSON: `string="true"` values become
//!   JSON strings; `string="false"` values are copied verbatim when they are valid JSON and
//!   become JSON strings otherwise (the reference would copy invalid text verbatim).
//!   A parameter tag without a `string` attribute is treated as `string="true"`.
//! * Malformed DSML (an unexpected tag, a broken invoke/parameter tag, a `string` attribute
//!   other than `true`/`false`, a duplicate parameter name) is surfaced verbatim as content
//!   from the last complete call on, and parsing goes on in content mode.
//! * `<｜end▁of▁sentence｜>` ends the message. Text after it cannot come from a server that
//!   stops at EOS; if it arrives anyway it is passed through as content, never dropped.
//! * [`StreamParser::finish`] flushes held-back text. A block cut after a complete invoke tag or
//!   parameter (or an EOS there) still yields the call, like the reference; any other
//!   unfinished block is surfaced as content.
//!
//! Tool-call ids are `<prefix><index>` with `index` = 0, 1, 2, … in emission order and the
//! default prefix `"call_"` (`call_0`, `call_1`, …): deterministic, unique within one parser.
//! A server that needs ids unique across requests passes its own prefix to
//! [`StreamParser::with_id_prefix`].

mod scan;

use super::parse::{EOS, THINK_END, push_py_json_string};
use scan::{find_first, find_str, leading_ws, partial_suffix_len};

const OPENER: &str = "<｜DSML｜tool_calls>";
const OPENER_NN: &str = "\n\n<｜DSML｜tool_calls>";
const OPENER_N: &str = "\n<｜DSML｜tool_calls>";
const BLOCK_END: &str = "</｜DSML｜tool_calls>";
const INVOKE_START: &str = "<｜DSML｜invoke";
const INVOKE_END: &str = "</｜DSML｜invoke>";
const PARAM_START: &str = "<｜DSML｜parameter";
const PARAM_END: &str = "/｜DSML｜parameter>";

/// One piece of parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// More reasoning text (`reasoning_content`).
    Reasoning(String),
    /// More answer text (`content`).
    Content(String),
    /// A complete tool call.
    ToolCall {
        /// 0-based position among this parser's tool calls.
        index: usize,
        /// `<prefix><index>`, `call_<index>` by default.
        id: String,
        /// The tool name, verbatim.
        name: String,
        /// The arguments as one complete JSON object text.
        arguments: String,
    },
}

/// Where the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Reasoning,
    Content,
    /// Inside a tool-call block, expecting an invoke or the block end.
    Top,
    /// After `<｜DSML｜invoke`, expecting ` name="…">`.
    InvokeTag,
    /// Inside an invoke, expecting a parameter or the invoke end.
    InvokeBody,
    /// After `<｜DSML｜parameter`, expecting ` name="…" string="…">`.
    ParamTag,
    /// Inside a parameter value, expecting `</｜DSML｜parameter>`.
    ParamValue,
    /// After EOS.
    Ended,
}

/// A complete parameter: key and rendered JSON value.
type Param = (String, String);

/// What one parsing step achieved.
enum Step {
    /// Progress was made; run another step.
    Again,
    /// Nothing more can be decided without more text.
    NeedMore,
}

/// Incremental lenient parser; see the module documentation. Two parsers compare equal when
/// they are in the same state (and so turn the same future input into the same deltas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParser {
    mode: Mode,
    /// Text received; `buf[pos..]` is not consumed yet. Compacted after every push.
    buf: String,
    pos: usize,
    /// In a block, `buf[raw_start..pos]` is the block text consumed since the last committed
    /// call (surfaced as content if the block turns out to be malformed); 0 outside blocks.
    raw_start: usize,
    /// Name and parameters of the invoke being parsed.
    invoke_name: String,
    params: Vec<Param>,
    /// Key and string flag of the parameter whose value is being read.
    param_key: String,
    param_is_string: bool,
    /// In `ParamValue`, how many bytes of `buf[pos..]` were already searched for the closing tag.
    scanned: usize,
    /// Calls committed in the current block.
    block_calls: usize,
    /// Calls emitted so far.
    calls: usize,
    id_prefix: String,
}

impl StreamParser {
    /// A parser for one completion. `thinking`: the prompt ended in `<think>`, so the output
    /// starts inside the reasoning. Tool-call ids are `call_0`, `call_1`, …
    pub fn new(thinking: bool) -> Self {
        Self::with_id_prefix(thinking, "call_")
    }

    /// Like [`StreamParser::new`] with tool-call ids `<id_prefix><index>`.
    pub fn with_id_prefix(thinking: bool, id_prefix: impl Into<String>) -> Self {
        StreamParser {
            mode: if thinking {
                Mode::Reasoning
            } else {
                Mode::Content
            },
            buf: String::new(),
            pos: 0,
            raw_start: 0,
            invoke_name: String::new(),
            params: Vec::new(),
            param_key: String::new(),
            param_is_string: true,
            scanned: 0,
            block_calls: 0,
            calls: 0,
            id_prefix: id_prefix.into(),
        }
    }

    /// Feeds the next piece of decoded text and returns what it completes (adjacent deltas of
    /// the same kind are merged; empty text is never emitted).
    pub fn push(&mut self, text_delta: &str) -> Vec<Delta> {
        self.buf.push_str(text_delta);
        let mut out = Vec::new();
        while let Step::Again = self.step(&mut out) {}
        let keep_from = if self.in_block() {
            self.raw_start
        } else {
            self.pos
        };
        self.buf.drain(..keep_from);
        self.pos -= keep_from;
        self.raw_start -= keep_from.min(self.raw_start);
        out
    }

    /// Ends the stream: emits held-back text, a call cut after a complete invoke tag or
    /// parameter, or an unfinished block as content. The parser is then in its final state;
    /// later pushes are passed through as content.
    pub fn finish(&mut self) -> Vec<Delta> {
        let mut out = Vec::new();
        while let Step::Again = self.step(&mut out) {}
        let rest = &self.buf[self.pos..];
        match self.mode {
            Mode::Reasoning => emit(&mut out, Mode::Reasoning, rest),
            Mode::Content | Mode::Ended => emit(&mut out, Mode::Content, rest),
            Mode::Top | Mode::InvokeBody if rest.is_empty() => self.end_block_early(&mut out),
            _ => {
                let text = &self.buf[self.raw_start..];
                emit(
                    &mut out,
                    Mode::Content,
                    text.strip_suffix(EOS).unwrap_or(text),
                );
            }
        }
        self.buf.clear();
        self.pos = 0;
        self.raw_start = 0;
        self.mode = Mode::Ended;
        out
    }

    /// Number of tool calls emitted so far.
    pub fn tool_call_count(&self) -> usize {
        self.calls
    }

    fn in_block(&self) -> bool {
        !matches!(self.mode, Mode::Reasoning | Mode::Content | Mode::Ended)
    }

    /// The text received but not yet consumed.
    fn rest(&self) -> &str {
        &self.buf[self.pos..]
    }

    fn step(&mut self, out: &mut Vec<Delta>) -> Step {
        match self.mode {
            Mode::Reasoning | Mode::Content => self.step_text(out),
            Mode::Ended => {
                emit(out, Mode::Content, self.rest());
                self.pos = self.buf.len();
                Step::NeedMore
            }
            Mode::Top | Mode::InvokeBody => self.step_structure(out),
            Mode::InvokeTag | Mode::ParamTag => self.step_tag(out),
            Mode::ParamValue => self.step_value(),
        }
    }

    /// Reasoning or content text: look for the markers that end it.
    fn step_text(&mut self, out: &mut Vec<Delta>) -> Step {
        let reasoning = self.mode == Mode::Reasoning;
        let markers: &[&str] = if reasoning {
            &[THINK_END, OPENER, EOS]
        } else {
            &[OPENER, EOS]
        };
        let rest = &self.buf[self.pos..];
        let Some((pos, marker)) = find_first(rest, markers) else {
            let hold = if reasoning {
                partial_suffix_len(rest, &[THINK_END, OPENER, OPENER_NN, OPENER_N, EOS])
            } else {
                partial_suffix_len(rest, &[OPENER, OPENER_NN, OPENER_N, EOS])
            };
            let cut = rest.len() - hold;
            emit(out, self.mode, &rest[..cut]);
            self.pos += cut;
            return Step::NeedMore;
        };
        let mut text_end = pos;
        if marker == OPENER {
            let before = &rest[..pos];
            text_end -= if before.ends_with("\n\n") {
                2
            } else {
                usize::from(before.ends_with('\n'))
            };
        }
        emit(out, self.mode, &rest[..text_end]);
        let end = pos + marker.len();
        self.mode = match marker {
            THINK_END => Mode::Content,
            OPENER => {
                self.raw_start = self.pos + text_end;
                self.block_calls = 0;
                Mode::Top
            }
            _ => Mode::Ended,
        };
        self.pos += end;
        Step::Again
    }

    /// Between tags in a block (`Top`) or an invoke (`InvokeBody`).
    fn step_structure(&mut self, out: &mut Vec<Delta>) -> Step {
        let ws = leading_ws(self.rest());
        self.consume(ws);
        let rest = self.rest();
        if rest.is_empty() {
            return Step::NeedMore;
        }
        let (open, close) = if self.mode == Mode::Top {
            (INVOKE_START, BLOCK_END)
        } else {
            (PARAM_START, INVOKE_END)
        };
        if rest.starts_with(EOS) {
            self.end_block_early(out);
        } else if rest.starts_with(open) {
            self.consume(open.len());
            self.mode = if self.mode == Mode::Top {
                Mode::InvokeTag
            } else {
                Mode::ParamTag
            };
        } else if rest.starts_with(close) {
            self.consume(close.len());
            if self.mode == Mode::Top {
                self.raw_start = 0;
                self.mode = Mode::Content;
            } else {
                self.commit_call(out);
                self.mode = Mode::Top;
            }
        } else if [open, close, EOS].iter().any(|t| t.starts_with(rest)) {
            return Step::NeedMore;
        } else {
            self.malformed(out);
        }
        Step::Again
    }

    /// The attributes of an invoke or parameter tag, up to `">`.
    fn step_tag(&mut self, out: &mut Vec<Delta>) -> Step {
        let rest = &self.buf[self.pos..];
        let Some(end) = find_str(rest, "\">") else {
            if rest.contains('<') {
                self.malformed(out);
                return Step::Again;
            }
            return Step::NeedMore;
        };
        let tag = &rest[..end];
        let name = tag[leading_ws(tag)..]
            .strip_prefix("name=\"")
            .filter(|_| !tag.contains('<'));
        let Some(name) = name else {
            self.malformed(out);
            return Step::Again;
        };
        if self.mode == Mode::InvokeTag {
            self.invoke_name = name.to_owned();
            self.params.clear();
            self.mode = Mode::InvokeBody;
        } else {
            const STRING_ATTR: &str = "\" string=\"";
            let split =
                find_str(name, STRING_ATTR).map(|p| (&name[..p], &name[p + STRING_ATTR.len()..]));
            let (key, is_string) = match split {
                Some((key, "true")) => (key, true),
                Some((key, "false")) => (key, false),
                Some(_) => {
                    self.malformed(out);
                    return Step::Again;
                }
                None => (name, true),
            };
            if self.params.iter().any(|(k, _)| k == key) {
                self.malformed(out);
                return Step::Again;
            }
            self.param_key = key.to_owned();
            self.param_is_string = is_string;
            self.scanned = 0;
            self.mode = Mode::ParamValue;
        }
        self.consume(end + 2);
        Step::Again
    }

    /// A parameter value, up to `</｜DSML｜parameter>` (also `<\n/｜DSML｜parameter>`).
    fn step_value(&mut self) -> Step {
        let rest = &self.buf[self.pos..];
        let mut from = self.scanned.saturating_sub(PARAM_END.len());
        while !rest.is_char_boundary(from) {
            from -= 1;
        }
        let Some(found) = find_str(&rest[from..], PARAM_END) else {
            self.scanned = rest.len();
            return Step::NeedMore;
        };
        let end = from + found;
        let text = &rest[..end];
        let value = text
            .strip_suffix("<\n")
            .or_else(|| text.strip_suffix('<'))
            .unwrap_or(text);
        let mut json = String::new();
        if self.param_is_string || serde_json::from_str::<serde::de::IgnoredAny>(value).is_err() {
            push_py_json_string(&mut json, value);
        } else {
            json.push_str(value);
        }
        self.params
            .push((std::mem::take(&mut self.param_key), json));
        self.consume(end + PARAM_END.len());
        self.mode = Mode::InvokeBody;
        Step::Again
    }

    /// Moves the next `n` bytes of unconsumed text to the uncommitted block text.
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Emits the invoke being parsed as a tool call.
    fn commit_call(&mut self, out: &mut Vec<Delta>) {
        let mut arguments = String::from("{");
        for (i, (key, value)) in self.params.drain(..).enumerate() {
            if i > 0 {
                arguments.push_str(", ");
            }
            push_py_json_string(&mut arguments, &key);
            arguments.push_str(": ");
            arguments.push_str(&value);
        }
        arguments.push('}');
        out.push(Delta::ToolCall {
            index: self.calls,
            id: format!("{}{}", self.id_prefix, self.calls),
            name: std::mem::take(&mut self.invoke_name),
            arguments,
        });
        self.calls += 1;
        self.block_calls += 1;
        self.raw_start = self.pos;
    }

    /// The block ends without its end tag (EOS or end of stream where a tag was expected):
    /// an invoke with complete parameters is still a call; a block without calls is text.
    fn end_block_early(&mut self, out: &mut Vec<Delta>) {
        if self.mode == Mode::InvokeBody {
            self.commit_call(out);
        } else if self.block_calls == 0 {
            emit(out, Mode::Content, &self.buf[self.raw_start..self.pos]);
        }
        self.raw_start = 0;
        self.mode = Mode::Content;
    }

    /// Malformed DSML: the uncommitted block text becomes content; parsing continues as
    /// content with the rest of the buffer.
    fn malformed(&mut self, out: &mut Vec<Delta>) {
        emit(out, Mode::Content, &self.buf[self.raw_start..self.pos]);
        self.raw_start = 0;
        self.params.clear();
        self.mode = Mode::Content;
    }
}

/// Appends `text` as a reasoning or content delta, merging with a preceding delta of the same
/// kind.
fn emit(out: &mut Vec<Delta>, mode: Mode, text: &str) {
    if text.is_empty() {
        return;
    }
    match (mode, out.last_mut()) {
        (Mode::Reasoning, Some(Delta::Reasoning(s))) => s.push_str(text),
        (Mode::Reasoning, _) => out.push(Delta::Reasoning(text.to_owned())),
        (_, Some(Delta::Content(s))) => s.push_str(text),
        _ => out.push(Delta::Content(text.to_owned())),
    }
}
