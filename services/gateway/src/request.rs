//! [`ValidChatRequest`]: a chat request of either API after validation, and what is done with
//! it before a worker sees it: model resolution, prompt encoding and the context-length check.

use v4_protocol::generate::{GenerateRequest, ReasoningMode, Sampling};
use v4_protocol::tokenizer::{EncodeChatReply, EncodeChatRequest, ReasoningEffort, ThinkingMode};
use v4_tokenizer::chat::encode;

use crate::config::{GatewayConfig, ModelMap};
use crate::error::{Failure, Flavor};
use crate::mesh::Mesh;

/// What the gateway does with tool calls in the output.
///
/// `tool_choice: "none"` (and a request without tools): the tools are not declared in the
/// prompt, so the model is not offered any, and tool-call markup it produces anyway is dropped
/// from the answer (never returned as calls; the finish reason stays `stop`). `"required"` and
/// a named function cannot be enforced without constrained decoding: they are accepted and
/// behave like `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCalls {
    Allowed,
    Dropped,
}

/// A chat request of either API, validated; nothing here needs checking again.
#[derive(Debug, Clone)]
pub struct ValidChatRequest {
    pub flavor: Flavor,
    /// The response id (`chatcmpl-…` / `msg_…`), also the generation's request id.
    pub id: String,
    /// The model id as the client sent it (echoed in responses).
    pub api_model: String,
    /// The served model id the mesh knows.
    pub served_model: String,
    /// Messages (OpenAI-shaped), tools, response format, thinking mode and effort.
    pub encode: EncodeChatRequest,
    pub sampling: Sampling,
    /// `None`: as many as the context leaves (at most the configured limit).
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// `Some(k)`: logprobs with `k` alternatives per token.
    pub logprobs: Option<u32>,
    pub tool_calls: ToolCalls,
}

impl ValidChatRequest {
    /// The billing mode of the generation.
    pub fn mode(&self) -> ReasoningMode {
        match (self.encode.thinking_mode, self.encode.reasoning_effort) {
            (ThinkingMode::Chat, _) => ReasoningMode::NonThink,
            (ThinkingMode::Thinking, Some(ReasoningEffort::Max)) => ReasoningMode::ThinkMax,
            (ThinkingMode::Thinking, _) => ReasoningMode::ThinkHigh,
        }
    }
}

/// The encoder's mode types → the wire's.
pub(crate) fn wire_mode(
    mode: encode::ThinkingMode,
    effort: Option<encode::ReasoningEffort>,
) -> (ThinkingMode, Option<ReasoningEffort>) {
    let m = match mode {
        encode::ThinkingMode::Chat => ThinkingMode::Chat,
        encode::ThinkingMode::Thinking => ThinkingMode::Thinking,
    };
    let e = effort.map(|e| match e {
        encode::ReasoningEffort::High => ReasoningEffort::High,
        encode::ReasoningEffort::Max => ReasoningEffort::Max,
    });
    (m, e)
}

/// The served model of API id `model`: unknown ids and the retired V3 ids are 400s that say
/// what to send instead.
pub(crate) fn resolve_model(models: &ModelMap, model: Option<&str>) -> Result<String, Failure> {
    let Some(model) = model else {
        return Err(Failure::invalid(
            "missing_model",
            Some("model"),
            format!("model is required: one of {}", models.api_ids().join(", ")),
        ));
    };
    if let Some(served) = models.served(model) {
        return Ok(served.to_string());
    }
    let thinking = match model {
        "deepseek-chat" => Some("disabled"),
        "deepseek-reasoner" => Some("enabled"),
        _ => None,
    };
    let message = match thinking {
        Some(t) => format!(
            "The model {model} has been retired: use \"deepseek-v4-flash\" with \
             \"thinking\": {{\"type\": \"{t}\"}} instead"
        ),
        None => format!(
            "Model Not Exist: {model:?}. Available models: {}",
            models.api_ids().join(", ")
        ),
    };
    Err(Failure::invalid("model_not_found", Some("model"), message))
}

/// A validated request, encoded and checked against the model's context.
pub(crate) struct Prepared {
    pub generate: GenerateRequest,
    pub prompt: EncodeChatReply,
}

/// Encodes the prompt, checks `prompt + max_tokens` against the served model's context, and
/// builds the generation request (its `events` inbox is filled in when it is sent).
pub(crate) async fn prepare(mesh: &Mesh, req: &ValidChatRequest) -> Result<Prepared, Failure> {
    let model = mesh.served_model(&req.served_model).await?;
    let prompt = mesh.encode_chat(&req.encode).await?;
    let max_tokens = max_tokens(&mesh.config, req, prompt.prompt_tokens, model.max_context)?;
    let generate = GenerateRequest {
        request_id: req.id.clone(),
        model: req.served_model.clone(),
        prompt: prompt.token_ids.clone(),
        sampling: req.sampling.clone(),
        max_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: false,
        logprobs: req.logprobs,
        events: String::new(),
        mode: req.mode(),
        key_id: None,
    };
    Ok(Prepared { generate, prompt })
}

/// The generation's `max_tokens`: the request's, checked against the context, or what the
/// context leaves.
fn max_tokens(
    config: &GatewayConfig,
    req: &ValidChatRequest,
    prompt: u64,
    max_context: u64,
) -> Result<u32, Failure> {
    let too_long = |requested: u64, completion: u64| {
        Failure::invalid(
            "context_length_exceeded",
            Some("messages"),
            format!(
                "This model's maximum context length is {max_context} tokens. However, you \
                 requested {requested} tokens ({prompt} in the messages, {completion} in the \
                 completion). Please reduce the length of the messages or completion."
            ),
        )
    };
    match req.max_tokens {
        Some(m) if prompt + u64::from(m) > max_context => {
            Err(too_long(prompt + u64::from(m), m.into()))
        }
        Some(m) => Ok(m),
        None if prompt >= max_context => Err(Failure::invalid(
            "context_length_exceeded",
            Some("messages"),
            format!(
                "This model's maximum context length is {max_context} tokens. However, your \
                 messages resulted in {prompt} tokens, which leaves no room for the completion. \
                 Please reduce the length of the messages."
            ),
        )),
        None => Ok((max_context - prompt).min(u64::from(config.max_tokens_limit)) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_resolve_or_say_what_to_send() {
        let m = ModelMap::default();
        assert_eq!(
            resolve_model(&m, Some("deepseek-v4-pro")).unwrap(),
            "deepseek-v4-pro"
        );
        let e = resolve_model(&m, Some("gpt-4")).unwrap_err().api_error();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("Model Not Exist") && e.message.contains("deepseek-v4-flash"));
        let e = resolve_model(&m, Some("deepseek-reasoner"))
            .unwrap_err()
            .api_error();
        assert!(
            e.message.contains("deepseek-v4-flash") && e.message.contains("enabled"),
            "{}",
            e.message
        );
        let e = resolve_model(&m, Some("deepseek-chat"))
            .unwrap_err()
            .api_error();
        assert!(e.message.contains("disabled"), "{}", e.message);
        assert_eq!(
            resolve_model(&m, None)
                .unwrap_err()
                .api_error()
                .param
                .as_deref(),
            Some("model")
        );
    }
}
