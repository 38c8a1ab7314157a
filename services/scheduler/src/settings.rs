//! [`SchedulerSettings`]: the scheduler's keys in the layered configuration (`v4-config`).

use std::time::Duration;

use crate::service::SchedulerConfig;

v4_config::settings! {
    /// The scheduler: admission and placement of generations on workers, from their heartbeats.
    pub struct SchedulerSettings("scheduler") {
        /// NATS server of the mesh.
        nats_url: String = "nats://127.0.0.1:4222".into(); env = "V4_NATS_URL",
        /// Subject namespace (several stacks on one NATS server).
        namespace: Option<String> = None; env = "V4_NATS_NAMESPACE",
        /// Milliseconds a worker may take to accept a forwarded request.
        forward_timeout_ms: u64 = 5000,
        /// Workers tried per request (a refusal moves on to the next).
        max_attempts: usize = 3,
        /// Milliseconds after start during which an unknown model waits for heartbeats.
        warmup_ms: u64 = 3000,
        /// Prompts at least this long go through a prefill worker when one serves the model.
        prefill_min_tokens: usize = 64,
    }
}

impl SchedulerSettings {
    pub fn to_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            forward_timeout: Duration::from_millis(self.forward_timeout_ms),
            max_attempts: self.max_attempts.max(1),
            warmup: Duration::from_millis(self.warmup_ms),
            prefill_min_tokens: self.prefill_min_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_library_defaults() {
        let c = SchedulerSettings::default().to_config();
        let d = SchedulerConfig::default();
        assert_eq!(
            (
                c.forward_timeout,
                c.max_attempts,
                c.warmup,
                c.prefill_min_tokens
            ),
            (
                d.forward_timeout,
                d.max_attempts,
                d.warmup,
                d.prefill_min_tokens
            )
        );
    }
}
