//! Messages of the tokenizer service (subjects in [`crate::subject::tokenizer`]).
//!
//! Chat input stays in the shape the chat encoder of `v4-tokenizer` reads: OpenAI-shaped
//! message objects, kept as JSON values because the encoder itself distinguishes shapes the
//! reference distinguishes (a missing `content` key is an empty turn, `content: null` an error;
//! tool-call arguments may be a JSON string or an object). Everything else is typed.
//!
//! # Streaming decode
//!
//! A generation's output ids are turned into reasoning / content / tool-call deltas by a
//! session on one tokenizer instance:
//!
//! 1. [`DecodeOpen`] to [`crate::subject::tokenizer::DECODE_OPEN`] (any instance) →
//!    [`DecodeOpened`] with the session id and the instance's own `feed_subject` /
//!    `close_subject`.
//! 2. [`DecodeFeed`] to `feed_subject` with `seq` = 0, 1, 2, … and the next ids →
//!    [`DecodeDeltas`]. Resending the last `seq` (a retry after a timeout) returns the same
//!    deltas again; any other out-of-order `seq` is a `bad_request`.
//! 3. The feed with `finished: true` flushes everything held back and ends the session;
//!    [`DecodeClose`] ends it early. An idle session expires after the instance's TTL
//!    (`DecodeOpened::idle_ttl_ms`); feeding an expired or unknown session is `not_found`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::TokenIds;

fn yes() -> bool {
    true
}

/// Non-Think (`"chat"`) or thinking (`"thinking"`, DeepSeek's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingMode {
    Chat,
    #[default]
    Thinking,
}

/// Reasoning effort in thinking mode (the API's `low`/`medium`/`high` are `high`,
/// `xhigh`/`max` are `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    High,
    Max,
}

/// `v4.v1.tokenizer.info`: no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoRequest {}

/// The capability handshake of a tokenizer instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// The answering instance (unique per process).
    pub instance: String,
    pub protocol_version: u32,
    /// sha256 (hex) of the `tokenizer.json` the instance serves.
    pub tokenizer_sha256: String,
    pub vocab_size: u64,
    pub special: SpecialTokenIds,
}

/// Ids of the special tokens the rest of the stack needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokenIds {
    pub bos: u32,
    pub eos: u32,
    pub user: u32,
    pub assistant: u32,
    pub think_start: u32,
    pub think_end: u32,
    pub dsml: u32,
}

/// `v4.v1.tokenizer.encode.chat`: chat messages → prompt ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeChatRequest {
    /// OpenAI-shaped message objects (`role`, `content`, `reasoning_content`, `tool_calls`,
    /// `tool_call_id`, and the V4 extensions `task`, `wo_eos`, `developer` and
    /// `latest_reminder` roles), passed to the encoder verbatim.
    pub messages: Vec<Value>,
    /// Request-level tool definitions (`[{"type": "function", "function": {…}}]`). They are
    /// attached to the leading system message (one with empty content is inserted when the
    /// conversation has none), which is where the encoder renders them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// Request-level `response_format`, attached like `tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub thinking_mode: ThinkingMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Drop the reasoning of turns before the last user turn (thinking mode; the encoder keeps
    /// it anyway when tools are declared). Default true.
    #[serde(default = "yes")]
    pub drop_thinking: bool,
    /// Start with BOS when there is no `context`. Default true.
    #[serde(default = "yes")]
    pub add_bos: bool,
    /// Messages already encoded earlier (a cached prefix): they shape how `messages` render but
    /// are not rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<Value>>,
    /// Also return the prompt text (debugging; doubles the reply size).
    #[serde(default)]
    pub return_prompt: bool,
}

impl EncodeChatRequest {
    /// A request with the encoder's defaults.
    pub fn new(messages: Vec<Value>, thinking_mode: ThinkingMode) -> EncodeChatRequest {
        EncodeChatRequest {
            messages,
            tools: None,
            response_format: None,
            thinking_mode,
            reasoning_effort: None,
            drop_thinking: true,
            add_bos: true,
            context: None,
            return_prompt: false,
        }
    }
}

/// The prompt of an [`EncodeChatRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeChatReply {
    pub token_ids: TokenIds,
    /// `token_ids.len()`, for metering.
    pub prompt_tokens: u64,
    pub thinking_mode: ThinkingMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// The prompt ends with `<think>`: the completion starts inside the reasoning (pass it as
    /// [`DecodeOpen::thinking`]).
    #[serde(default)]
    pub reasoning_open: bool,
    /// The prompt text, when `return_prompt` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `v4.v1.tokenizer.count`: set exactly one of `text` and `chat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountTokensRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<EncodeChatRequest>,
}

impl CountTokensRequest {
    pub fn text(text: impl Into<String>) -> CountTokensRequest {
        CountTokensRequest {
            text: Some(text.into()),
            chat: None,
        }
    }

    pub fn chat(chat: EncodeChatRequest) -> CountTokensRequest {
        CountTokensRequest {
            text: None,
            chat: Some(chat),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTokensReply {
    pub tokens: u64,
}

/// `v4.v1.tokenizer.encode.text`: raw text → ids (no special tokens added; added-token texts
/// such as `<think>` in the text become their ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeTextRequest {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeTextReply {
    pub token_ids: TokenIds,
    pub tokens: u64,
}

/// `v4.v1.tokenizer.decode.ids`: ids → text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeIdsRequest {
    pub token_ids: TokenIds,
    /// Drop tokens flagged special (BOS, EOS, pad …). Default false.
    #[serde(default)]
    pub skip_special_tokens: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeIdsReply {
    pub text: String,
}

/// `v4.v1.tokenizer.decode.open`: opens a streaming decode session for one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeOpen {
    /// The generation this session decodes (named in the session's error messages).
    pub request_id: String,
    /// The prompt ended with `<think>`: output starts inside the reasoning
    /// ([`EncodeChatReply::reasoning_open`]).
    pub thinking: bool,
    /// The request declared tools. Informational today: tool-call markup is parsed either way
    /// (the caller decides what to do with calls to undeclared tools).
    #[serde(default)]
    pub tools_present: bool,
    /// Drop special tokens (BOS, EOS …) before parsing. Default false: the parser itself ends
    /// the message at EOS.
    #[serde(default)]
    pub skip_special_tokens: bool,
    /// Tool-call ids are `<prefix><index>`; default `call_<session>_`, unique per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id_prefix: Option<String>,
}

impl DecodeOpen {
    pub fn new(request_id: impl Into<String>, thinking: bool) -> DecodeOpen {
        DecodeOpen {
            request_id: request_id.into(),
            thinking,
            tools_present: false,
            skip_special_tokens: false,
            tool_call_id_prefix: None,
        }
    }
}

/// A session, pinned to the instance that opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeOpened {
    pub session: String,
    /// Where [`DecodeFeed`]s for this session go (the instance's own subject).
    pub feed_subject: String,
    /// Where [`DecodeClose`] for this session goes.
    pub close_subject: String,
    pub instance: String,
    /// The session expires after this long without a feed.
    pub idle_ttl_ms: u64,
}

/// The next output ids of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeFeed {
    pub session: String,
    /// 0 for the first feed, then +1 per feed.
    pub seq: u64,
    pub token_ids: TokenIds,
    /// The generation ended: flush and close the session.
    #[serde(default)]
    pub finished: bool,
}

/// A complete tool call parsed from the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position among this session's tool calls (0, 1, …).
    pub index: u32,
    pub id: String,
    pub name: String,
    /// The arguments as one JSON object text.
    pub arguments: String,
}

/// What one feed produced. Within one reply, reasoning precedes content; tool calls are listed
/// in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeDeltas {
    pub session: String,
    pub seq: u64,
    #[serde(default)]
    pub reasoning_content: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDelta>,
    /// The session ended with this feed.
    #[serde(default)]
    pub finished: bool,
    /// Ids fed to the session so far.
    #[serde(default)]
    pub tokens_fed: u64,
}

/// Ends a session early (the generation was cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeClose {
    pub session: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeClosed {
    pub session: String,
    /// Whether the session still existed.
    pub found: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encode_chat_request_defaults_and_additive_fields() {
        let r: EncodeChatRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "some_future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(r.thinking_mode, ThinkingMode::Thinking);
        assert!(r.drop_thinking && r.add_bos && !r.return_prompt);
        assert_eq!(
            r,
            EncodeChatRequest::new(r.messages.clone(), ThinkingMode::Thinking)
        );
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["thinking_mode"], "thinking");
        assert!(back.get("tools").is_none());
    }

    #[test]
    fn feed_and_deltas_round_trip() {
        let feed = DecodeFeed {
            session: "s".into(),
            seq: 3,
            token_ids: vec![1, 2, 3].into(),
            finished: false,
        };
        let json = serde_json::to_value(&feed).unwrap();
        assert_eq!(json["token_ids"], "AQAAAAIAAAADAAAA");
        assert_eq!(serde_json::from_value::<DecodeFeed>(json).unwrap(), feed);
        let d: DecodeDeltas = serde_json::from_value(json!({"session": "s", "seq": 0})).unwrap();
        assert!(d.content.is_empty() && d.tool_calls.is_empty() && !d.finished);
    }

    #[test]
    fn count_request_shapes() {
        let t = serde_json::to_value(CountTokensRequest::text("abc")).unwrap();
        assert_eq!(t, json!({"text": "abc"}));
        let c: CountTokensRequest =
            serde_json::from_value(json!({"chat": {"messages": []}})).unwrap();
        assert!(c.text.is_none() && c.chat.is_some());
    }
}
