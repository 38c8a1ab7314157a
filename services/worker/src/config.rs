//! [`WorkerConfig`]: everything a decode worker is told at start-up.

use std::time::Duration;

use v4_protocol::generate::WorkerRole;

/// Settings of one decode worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Instance name; a random suffix makes the instance id unique (`<name>-<8 hex>`).
    pub instance_name: String,
    /// The served model id this worker answers for (`deepseek-v4-flash`).
    pub model_id: String,
    /// Decode (prefills its own prompts too, takes handoffs) or prefill (hands every
    /// prefilled cache to the decode worker the scheduler names).
    pub role: WorkerRole,
    /// Sequences decoded together at most (the running batch).
    pub max_batch: usize,
    /// Accepted sequences waiting for a batch slot; beyond that a request is `overloaded`.
    pub max_waiting: usize,
    /// Prompt tokens of one sequence prefilled per step (chunked prefill: a long prompt
    /// never stalls the running batch for more than one chunk).
    pub prefill_chunk: usize,
    /// Tokens (decode + prefill) one forward step processes at most.
    pub step_token_budget: usize,
    /// KV capacity in tokens; a sequence reserves `prompt + max_tokens` while it runs.
    /// `None`: `max_batch × max_context`.
    pub kv_capacity_tokens: Option<u64>,
    /// Longest prompt + output accepted. `None`: the model's `max_position_embeddings`.
    pub max_context: Option<u64>,
    pub heartbeat_interval: Duration,
    /// Prefill role: how long the decode worker may take to accept a handoff.
    pub handoff_timeout: Duration,
    /// A note announced with the model (shown by `/v1/models`).
    pub description: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            instance_name: "decode".to_string(),
            model_id: "deepseek-v4-flash".to_string(),
            role: WorkerRole::Decode,
            max_batch: 32,
            max_waiting: 256,
            prefill_chunk: 256,
            step_token_budget: 512,
            kv_capacity_tokens: None,
            max_context: None,
            heartbeat_interval: Duration::from_millis(1000),
            handoff_timeout: Duration::from_secs(30),
            description: None,
        }
    }
}
