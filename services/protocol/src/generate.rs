//! Messages of generation: gateway → scheduler → decode worker, the token event stream back,
//! cancellation, worker heartbeats and the served-model list (subjects in
//! [`crate::subject::scheduler`] and [`crate::subject::worker`]).
//!
//! # One generation
//!
//! 1. The gateway subscribes to a private inbox (`events`), then sends a [`GenerateRequest`] to
//!    [`crate::subject::scheduler::GENERATE`] (queue group). The scheduler checks it against
//!    the model's context, picks a worker from the heartbeats (least loaded, not draining,
//!    enough free KV) and forwards the same request to that worker's own subject
//!    ([`crate::subject::worker::generate`]). Both answer [`GenerateAccepted`] naming the
//!    worker, or a [`crate::ServiceError`]: `overloaded` when no worker can take it
//!    (the gateway answers 503 with `Retry-After`), `bad_request` for a prompt that cannot fit.
//! 2. The worker publishes [`GenerationEvent`]s to `events`: `seq` 0, 1, 2, … with the new
//!    token ids (and logprobs when asked); the last one carries [`Finished`] with the exact
//!    token counts. A gap in `seq` means events were lost: the receiver ends the generation
//!    with an error.
//! 3. [`CancelGeneration`] on [`crate::subject::worker::CANCEL`] (every worker listens) ends it
//!    early (client disconnected, stop string seen); the worker frees the sequence and still
//!    sends the final event with `reason: cancelled`.
//! 4. Workers publish a [`WorkerHeartbeat`] every `interval_ms` on
//!    [`crate::subject::worker::HEARTBEAT`]. A worker whose heartbeat is older than
//!    [`WorkerHeartbeat::expires_after`] is gone: the scheduler stops choosing it and the
//!    gateway ends its streams with an error event.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::ids::TokenIds;

/// The most `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Billing mode of a generation: DeepSeek's three reasoning modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasoningMode {
    NonThink,
    #[default]
    ThinkHigh,
    ThinkMax,
}

impl ReasoningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningMode::NonThink => "non-think",
            ReasoningMode::ThinkHigh => "think-high",
            ReasoningMode::ThinkMax => "think-max",
        }
    }
}

/// Token selection. The same fields and ranges as the engine's sampler; `temperature == 0`
/// is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None`: seeded per request from entropy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling {
            temperature: 0.0,
            ..Sampling::default()
        }
    }
}

/// `v4.v1.scheduler.generate` (and the worker's own generate subject): one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Unique per request (the gateway's id; used in logs, cancellation and metering).
    pub request_id: String,
    /// The served model id (`deepseek-v4-flash`); workers announce theirs in heartbeats.
    pub model: String,
    /// The prompt, already encoded by the tokenizer service (BOS included).
    pub prompt: TokenIds,
    #[serde(default)]
    pub sampling: Sampling,
    /// Most new tokens to generate (≥ 1).
    pub max_tokens: u32,
    /// Extra ids that end the generation (the model's EOS always does unless `ignore_eos`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_token_ids: Vec<u32>,
    #[serde(default)]
    pub ignore_eos: bool,
    /// `Some(k)`: every event carries the chosen tokens' logprobs and the `k` (≤ 20) most
    /// likely alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Where the worker publishes the [`GenerationEvent`]s (the caller's inbox).
    pub events: String,
    #[serde(default)]
    pub mode: ReasoningMode,
    /// The API key's tenant/key id for metering (opaque to the workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The answer to a [`GenerateRequest`]: who runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateAccepted {
    pub request_id: String,
    /// The decode worker instance that runs the generation.
    pub worker: String,
    /// Requests waiting at that worker before this one.
    #[serde(default)]
    pub queue_position: u32,
}

/// The logprob of one chosen token and its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
    /// Most likely first; empty unless `top_logprobs` > 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token_id: u32,
    pub logprob: f32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS or a stop token id.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
    /// [`CancelGeneration`] or the worker draining past its deadline.
    Cancelled,
    /// The worker failed; see [`Finished::error`].
    Error,
    #[serde(other)]
    Unknown,
}

/// The last event of a generation: exact token counts for metering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub reason: FinishReason,
    /// Prompt tokens processed (all of the prompt).
    pub prompt_tokens: u64,
    /// Of those, served from a prefix cache (DeepSeek's cache-hit input).
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// Tokens generated and sent in events (EOS included when generated).
    pub completion_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ServiceError>,
}

/// One step of a generation, published to [`GenerateRequest::events`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationEvent {
    pub request_id: String,
    /// 0, 1, 2, … per generation.
    pub seq: u64,
    /// New token ids since the previous event (may be empty in the final event).
    #[serde(default)]
    pub token_ids: TokenIds,
    /// One per id of `token_ids` when logprobs were asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
    /// The worker that sent this event: the one whose heartbeats decide whether the
    /// generation is still alive (after a prefill handoff it is the decode worker, not the
    /// one named in [`GenerateAccepted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// `v4.v1.worker.<prefill instance>.prefill`: the scheduler asks a prefill worker to prefill
/// `request` and hand the cache to `decode_worker`. Answered with [`GenerateAccepted`] naming
/// the prefill worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefillRequest {
    pub request: GenerateRequest,
    /// The decode worker that continues the generation.
    pub decode_worker: String,
}

/// `v4.v1.worker.<decode instance>.handoff`: a prefilled sequence for a decode worker.
/// Answered with [`GenerateAccepted`] naming the decode worker, or a `ServiceError` (then the
/// prefill worker ends the generation with a final error event).
///
/// The cache travels as the engine's cache codec bytes (`V4KV`, see
/// `v4_engine::cache_codec`); with the bus's chunked transfer it may exceed one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvHandoff {
    pub request: GenerateRequest,
    /// sha256 of the prefill worker's `config.json` (must equal the decode worker's).
    pub model_fingerprint: String,
    pub prefill_worker: String,
    /// The sequence cache after the whole prompt.
    pub cache: Blob,
    /// The logits of the last prompt position (f32 little-endian, `vocab_size` values): the
    /// decode worker samples the first token from them.
    pub last_logits: Blob,
}

/// Bytes inside JSON: one base64 string (standard alphabet, padded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::ids::base64::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        let s = String::deserialize(d)?;
        crate::ids::base64::decode(&s)
            .map(Blob)
            .map_err(serde::de::Error::custom)
    }
}

/// `v4.v1.worker.cancel` (broadcast): stop a generation wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelGeneration {
    pub request_id: String,
    /// Why (for logs): `client_disconnected`, `stop_sequence`, …
    #[serde(default)]
    pub reason: String,
}

/// What a worker does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// Prefills and decodes (continuous batching).
    #[default]
    Decode,
    /// Prefills only and hands the cache to a decode worker.
    Prefill,
    #[serde(other)]
    Unknown,
}

/// `v4.v1.worker.heartbeat`: a worker's capability handshake and load, every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub instance: String,
    pub role: WorkerRole,
    pub protocol_version: u32,
    /// The served model id this worker answers for.
    pub model: String,
    /// sha256 (hex) of the model's `config.json` (workers of one model id must agree).
    pub model_fingerprint: String,
    /// Vocabulary size of the model (the tokenizer's must not exceed it).
    pub vocab_size: u64,
    /// Longest sequence (prompt + output) the worker accepts.
    pub max_context: u64,
    /// Sequences decoded together at most.
    pub max_batch: u32,
    /// Sequences in the running batch.
    pub running: u32,
    /// Accepted, waiting for a batch slot.
    pub waiting: u32,
    /// Waiting requests the worker accepts before it answers `overloaded`.
    pub max_waiting: u32,
    /// KV capacity in tokens and tokens reserved by accepted sequences.
    pub kv_capacity_tokens: u64,
    pub kv_reserved_tokens: u64,
    /// Draining: accepts nothing new.
    #[serde(default)]
    pub draining: bool,
    /// Milliseconds between heartbeats.
    pub interval_ms: u64,
    /// Decode steps run and the sum of their batch sizes (mean batch = sum / steps).
    #[serde(default)]
    pub steps: u64,
    #[serde(default)]
    pub batch_size_sum: u64,
    /// The largest batch one step has run.
    #[serde(default)]
    pub max_batch_seen: u32,
    /// Tokens generated since start.
    #[serde(default)]
    pub generated_tokens: u64,
    /// A note for `/v1/models` (e.g. "random weights generated for an offline demo").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl WorkerHeartbeat {
    /// After this long without a heartbeat the worker counts as gone: three intervals,
    /// at least one second.
    pub fn expires_after(&self) -> Duration {
        Duration::from_millis((self.interval_ms.saturating_mul(3)).max(1000))
    }

    /// Free KV tokens.
    pub fn kv_free_tokens(&self) -> u64 {
        self.kv_capacity_tokens
            .saturating_sub(self.kv_reserved_tokens)
    }

    /// Whether the worker can take one more request now.
    pub fn has_room(&self) -> bool {
        !self.draining && self.running + self.waiting < self.max_batch + self.max_waiting
    }
}

/// `v4.v1.scheduler.models`: no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelsRequest {}

/// A served model as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedModel {
    pub id: String,
    pub max_context: u64,
    pub vocab_size: u64,
    /// Live decode workers serving it.
    pub workers: u32,
    pub model_fingerprint: String,
    /// Free batch slots + queue room across its workers.
    pub free_slots: u64,
    /// The workers' note on the model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelsReply {
    pub models: Vec<ServedModel>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_defaults_and_round_trip() {
        let r: GenerateRequest = serde_json::from_value(json!({
            "request_id": "r1", "model": "deepseek-v4-flash", "prompt": [0, 5, 9],
            "max_tokens": 4, "events": "_INBOX.x", "future": 1
        }))
        .unwrap();
        assert_eq!(r.sampling, Sampling::default());
        assert_eq!(r.mode, ReasoningMode::ThinkHigh);
        assert_eq!(r.prompt.as_slice(), &[0, 5, 9]);
        let back: GenerateRequest =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            serde_json::to_value(ReasoningMode::NonThink).unwrap(),
            "non-think"
        );
    }

    #[test]
    fn events_and_heartbeats() {
        let e: GenerationEvent = serde_json::from_value(json!({
            "request_id": "r", "seq": 2,
            "finished": {"reason": "brand_new", "prompt_tokens": 3, "completion_tokens": 1}
        }))
        .unwrap();
        assert!(e.token_ids.is_empty());
        assert_eq!(e.finished.unwrap().reason, FinishReason::Unknown);
        let hb = WorkerHeartbeat {
            instance: "w".into(),
            role: WorkerRole::Decode,
            protocol_version: 1,
            model: "m".into(),
            model_fingerprint: "f".into(),
            vocab_size: 10,
            max_context: 100,
            max_batch: 2,
            running: 2,
            waiting: 0,
            max_waiting: 1,
            kv_capacity_tokens: 50,
            kv_reserved_tokens: 60,
            draining: false,
            interval_ms: 200,
            steps: 0,
            batch_size_sum: 0,
            max_batch_seen: 0,
            generated_tokens: 0,
            description: None,
        };
        assert!(hb.has_room());
        let blob = Blob(vec![0, 1, 2, 255]);
        let json = serde_json::to_string(&blob).unwrap();
        assert_eq!(json, "\"AAEC/w==\"");
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), blob);
        assert!(serde_json::from_str::<Blob>("\"**\"").is_err());
        assert_eq!(hb.kv_free_tokens(), 0);
        assert_eq!(hb.expires_after(), Duration::from_secs(1));
    }
}
