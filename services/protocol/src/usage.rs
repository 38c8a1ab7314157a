//! Usage events: what every request served, for metering (subject
//! [`crate::subject::usage::SUBJECT`], carried by the JetStream stream
//! [`crate::subject::usage::STREAM`] to the ledger writer).
//!
//! Every request — finished, stopped, cancelled or failed — produces exactly one event, keyed
//! by its `request_id` (also the JetStream message id, so a republished event is deduplicated
//! by the stream, and the ledger applies a request id at most once).

use serde::{Deserialize, Serialize};

use crate::generate::ReasoningMode;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    /// The model ended the answer (EOS, stop token) or reached `max_tokens`.
    Finished,
    /// A stop string ended it.
    Stopped,
    /// The client went away or cancelled.
    Cancelled,
    /// It failed (worker lost, internal error) after being accepted.
    Failed,
    #[serde(other)]
    Unknown,
}

impl UsageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Finished => "finished",
            UsageStatus::Stopped => "stopped",
            UsageStatus::Cancelled => "cancelled",
            UsageStatus::Failed => "failed",
            UsageStatus::Unknown => "unknown",
        }
    }
}

/// The four token classes DeepSeek bills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenCounts {
    pub input_cache_hit: u64,
    pub input_cache_miss: u64,
    pub output_reasoning: u64,
    pub output_answer: u64,
}

impl TokenCounts {
    pub fn total(&self) -> u64 {
        self.input_cache_hit + self.input_cache_miss + self.output_reasoning + self.output_answer
    }
}

/// What one request served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: String,
    /// The API model id the request named.
    pub model: String,
    pub mode: ReasoningMode,
    pub status: UsageStatus,
    /// When the request arrived (ms since the Unix epoch): it is priced at the prices in
    /// force then.
    pub started_ms: i64,
    pub finished_ms: i64,
    pub tokens: TokenCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let e = UsageEvent {
            request_id: "r".into(),
            tenant_id: "t".into(),
            key_id: "k".into(),
            model: "deepseek-v4-flash".into(),
            mode: ReasoningMode::ThinkMax,
            status: UsageStatus::Stopped,
            started_ms: 1,
            finished_ms: 2,
            tokens: TokenCounts {
                input_cache_hit: 1,
                input_cache_miss: 2,
                output_reasoning: 3,
                output_answer: 4,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["mode"], "think-max");
        assert_eq!(v["status"], "stopped");
        assert_eq!(serde_json::from_value::<UsageEvent>(v).unwrap(), e);
        assert_eq!(e.tokens.total(), 10);
    }
}
