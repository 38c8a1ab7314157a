//! The stateless requests: chat and text encoding, token counts, decoding, info. Plain
//! functions over a [`Tokenizer`]; the service runs them on blocking threads.

use serde_json::{Map, Value};
use v4_protocol::ServiceError;
use v4_protocol::tokenizer::{
    CountTokensRequest, DecodeIdsReply, DecodeIdsRequest, EncodeChatReply, EncodeChatRequest,
    EncodeTextReply, EncodeTextRequest, ReasoningEffort, SpecialTokenIds, ThinkingMode,
    TokenizerInfo,
};

use crate::chat::encode::{self, ChatError, EncodeOptions, Message};
use crate::{Tokenizer, TokenizerError};

pub(crate) fn info(tok: &Tokenizer, instance: &str) -> TokenizerInfo {
    let s = tok.special_ids();
    TokenizerInfo {
        instance: instance.to_string(),
        protocol_version: v4_protocol::PROTOCOL_VERSION,
        tokenizer_sha256: tok.sha256_hex(),
        vocab_size: tok.vocab_size() as u64,
        special: SpecialTokenIds {
            bos: s.bos,
            eos: s.eos,
            user: s.user,
            assistant: s.assistant,
            think_start: s.think_start,
            think_end: s.think_end,
            dsml: s.dsml,
        },
    }
}

fn chat_error(e: ChatError) -> ServiceError {
    ServiceError::bad_request(e.to_string()).with_code("invalid_chat_input")
}

fn tokenizer_error(e: TokenizerError) -> ServiceError {
    match e {
        TokenizerError::UnknownId { .. } => {
            ServiceError::bad_request(e.to_string()).with_param("token_ids")
        }
        other => ServiceError::internal(other.to_string()),
    }
}

/// The message list with request-level `tools` / `response_format` attached to the leading
/// system message (inserted, with empty content, when the conversation has none): that is the
/// only place the encoder renders them.
fn messages_with_tools(req: &EncodeChatRequest) -> Result<Vec<Value>, ServiceError> {
    let mut messages = req.messages.clone();
    let extra: Vec<(&str, &Value)> = [
        ("tools", req.tools.as_ref()),
        ("response_format", req.response_format.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.filter(|v| !v.is_null()).map(|v| (k, v)))
    .collect();
    if extra.is_empty() {
        return Ok(messages);
    }
    let leading_system = matches!(
        messages.first(),
        Some(Value::Object(m)) if m.get("role").and_then(Value::as_str) == Some("system")
    );
    if !leading_system {
        let mut system = Map::new();
        system.insert("role".into(), "system".into());
        system.insert("content".into(), "".into());
        messages.insert(0, Value::Object(system));
    }
    if let Some(Value::Object(system)) = messages.first_mut() {
        for (key, value) in extra {
            if system.get(key).is_some_and(|v| !v.is_null()) {
                return Err(ServiceError::bad_request(format!(
                    "{key} is given both on the request and on the leading system message; \
                     send it once"
                ))
                .with_param(key));
            }
            system.insert(key.into(), value.clone());
        }
    }
    Ok(messages)
}

fn encode_options(req: &EncodeChatRequest) -> Result<EncodeOptions, ServiceError> {
    let mut opts = EncodeOptions::new(match req.thinking_mode {
        ThinkingMode::Chat => encode::ThinkingMode::Chat,
        ThinkingMode::Thinking => encode::ThinkingMode::Thinking,
    });
    opts.reasoning_effort = req.reasoning_effort.map(|e| match e {
        ReasoningEffort::High => encode::ReasoningEffort::High,
        ReasoningEffort::Max => encode::ReasoningEffort::Max,
    });
    opts.drop_thinking = req.drop_thinking;
    opts.add_default_bos_token = req.add_bos;
    opts.context = match &req.context {
        Some(c) if !c.is_empty() => {
            Some(Message::list_from_value(&Value::Array(c.clone()), true).map_err(chat_error)?)
        }
        _ => None,
    };
    Ok(opts)
}

/// Renders the prompt of `req` (no tokenization).
pub(crate) fn render_chat(req: &EncodeChatRequest) -> Result<String, ServiceError> {
    let messages = messages_with_tools(req)?;
    let messages = Message::list_from_value(&Value::Array(messages), false).map_err(chat_error)?;
    let opts = encode_options(req)?;
    encode::encode_messages(&messages, &opts).map_err(chat_error)
}

pub(crate) fn encode_chat(
    tok: &Tokenizer,
    req: &EncodeChatRequest,
) -> Result<EncodeChatReply, ServiceError> {
    let prompt = render_chat(req)?;
    let ids = tok.encode(&prompt);
    Ok(EncodeChatReply {
        prompt_tokens: ids.len() as u64,
        reasoning_open: ids.last() == Some(&tok.think_start_id()),
        token_ids: ids.into(),
        thinking_mode: req.thinking_mode,
        reasoning_effort: match req.thinking_mode {
            ThinkingMode::Thinking => req.reasoning_effort,
            ThinkingMode::Chat => None,
        },
        prompt: req.return_prompt.then_some(prompt),
    })
}

pub(crate) fn count_tokens(tok: &Tokenizer, req: &CountTokensRequest) -> Result<u64, ServiceError> {
    match (&req.text, &req.chat) {
        (Some(text), None) => Ok(tok.count(text) as u64),
        (None, Some(chat)) => Ok(tok.count(&render_chat(chat)?) as u64),
        _ => Err(ServiceError::bad_request(
            "set exactly one of `text` and `chat` to count tokens",
        )),
    }
}

pub(crate) fn encode_text(tok: &Tokenizer, req: &EncodeTextRequest) -> EncodeTextReply {
    let ids = tok.encode(&req.text);
    EncodeTextReply {
        tokens: ids.len() as u64,
        token_ids: ids.into(),
    }
}

pub(crate) fn decode_ids(
    tok: &Tokenizer,
    req: &DecodeIdsRequest,
) -> Result<DecodeIdsReply, ServiceError> {
    let text = tok
        .decode(req.token_ids.as_slice(), req.skip_special_tokens)
        .map_err(tokenizer_error)?;
    Ok(DecodeIdsReply { text })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(messages: Value) -> EncodeChatRequest {
        let Value::Array(m) = messages else {
            unreachable!()
        };
        EncodeChatRequest::new(m, ThinkingMode::Thinking)
    }

    #[test]
    fn request_tools_go_to_the_system_message() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let mut r =
            req(json!([{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]));
        r.tools = Some(tools.clone());
        let m = messages_with_tools(&r).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["tools"], tools);
        let mut r = req(json!([{"role": "user", "content": "u"}]));
        r.response_format = Some(json!({"type": "json_object"}));
        let m = messages_with_tools(&r).unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "", "response_format": {"type": "json_object"}})
        );
        let prompt = render_chat(&r).unwrap();
        assert!(prompt.contains("## Response Format"), "{prompt}");
    }

    #[test]
    fn tools_twice_is_an_error() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let mut r = req(json!([{"role": "system", "content": "S", "tools": tools}]));
        r.tools = Some(tools);
        let e = messages_with_tools(&r).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
    }
}
