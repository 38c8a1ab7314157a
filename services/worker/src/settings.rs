//! [`WorkerSettings`]: the worker's keys in the layered configuration (`v4-config`).

use std::path::PathBuf;
use std::time::Duration;

use v4_protocol::generate::WorkerRole;

use crate::config::WorkerConfig;

v4_config::settings! {
    /// A decode worker (continuous batching; also prefills its own prompts and takes prefill
    /// handoffs) or a prefill worker (`role = "prefill"`).
    pub struct WorkerSettings("worker") {
        /// NATS server of the mesh.
        nats_url: String = "nats://127.0.0.1:4222".into(); env = "V4_NATS_URL",
        /// Subject namespace (several stacks on one NATS server).
        namespace: Option<String> = None; env = "V4_NATS_NAMESPACE",
        /// Model directory (config.json + safetensors: BF16, or FP8 linears with FP4/FP8/INT4 experts).
        model: String = String::new(); env = "V4_MODEL",
        /// The served model id this worker answers for.
        model_id: String = "deepseek-v4-flash".into(); env = "V4_MODEL_ID",
        /// `decode` or `prefill`.
        role: String = "decode".into(),
        /// Instance name; a random suffix makes it unique.
        instance: String = "decode".into(),
        /// Sequences in the running batch at most.
        max_batch: usize = 32,
        /// Accepted sequences waiting for a batch slot at most (beyond: `overloaded`).
        max_waiting: usize = 256,
        /// Prompt tokens per sequence per step (chunked prefill).
        prefill_chunk: usize = 256,
        /// Tokens per forward step at most.
        step_tokens: usize = 512,
        /// KV capacity in tokens (0: max_batch × max_context).
        kv_capacity_tokens: u64 = 0,
        /// Longest prompt + output (0: the model's max_position_embeddings).
        max_context: u64 = 0,
        /// Milliseconds between heartbeats.
        heartbeat_ms: u64 = 1000,
        /// Milliseconds a decode worker may take to accept a prefill handoff.
        handoff_timeout_ms: u64 = 30_000,
        /// Seconds in-flight generations may run after SIGTERM before they are cancelled.
        drain_secs: u64 = 30,
        /// Engine threads (0: one per core).
        threads: usize = 0; env = "V4_THREADS",
    }
}

impl WorkerSettings {
    /// The model directory (an error when not set).
    pub fn model_dir(&self) -> Result<PathBuf, String> {
        if self.model.is_empty() {
            return Err("no model: set `model` (--model, V4_MODEL or the config file)".into());
        }
        Ok(PathBuf::from(&self.model))
    }

    pub fn to_config(&self) -> Result<WorkerConfig, String> {
        let role = match self.role.as_str() {
            "decode" => WorkerRole::Decode,
            "prefill" => WorkerRole::Prefill,
            other => return Err(format!("role: expected decode or prefill, got {other:?}")),
        };
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        Ok(WorkerConfig {
            instance_name: self.instance.clone(),
            model_id: self.model_id.clone(),
            role,
            max_batch: self.max_batch,
            max_waiting: self.max_waiting,
            prefill_chunk: self.prefill_chunk,
            step_token_budget: self.step_tokens,
            kv_capacity_tokens: (self.kv_capacity_tokens > 0).then_some(self.kv_capacity_tokens),
            max_context: (self.max_context > 0).then_some(self.max_context),
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(50)),
            handoff_timeout: Duration::from_millis(self.handoff_timeout_ms),
            description: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_library_defaults() {
        let c = WorkerSettings::default().to_config().unwrap();
        let d = WorkerConfig::default();
        assert_eq!(c.instance_name, d.instance_name);
        assert_eq!(c.model_id, d.model_id);
        assert_eq!(c.role, d.role);
        assert_eq!(
            (
                c.max_batch,
                c.max_waiting,
                c.prefill_chunk,
                c.step_token_budget
            ),
            (
                d.max_batch,
                d.max_waiting,
                d.prefill_chunk,
                d.step_token_budget
            )
        );
        assert_eq!((c.kv_capacity_tokens, c.max_context), (None, None));
        assert_eq!(c.heartbeat_interval, d.heartbeat_interval);
        assert_eq!(c.handoff_timeout, d.handoff_timeout);
        let bad = WorkerSettings {
            role: "both".into(),
            ..WorkerSettings::default()
        };
        assert!(bad.to_config().unwrap_err().contains("role"));
        assert!(WorkerSettings::default().model_dir().is_err());
    }
}
