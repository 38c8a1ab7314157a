//! Counters the engine thread updates and the heartbeat and tests read.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Live load and lifetime counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub running: AtomicU32,
    pub waiting: AtomicU32,
    pub kv_reserved_tokens: AtomicU64,
    /// Forward steps run and the sum of their batch sizes (sequences per step).
    pub steps: AtomicU64,
    pub batch_size_sum: AtomicU64,
    pub max_batch_seen: AtomicU32,
    pub generated_tokens: AtomicU64,
    pub finished: AtomicU64,
    pub cancelled: AtomicU64,
    pub draining: AtomicBool,
}

/// A copy of [`WorkerStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub running: u32,
    pub waiting: u32,
    pub kv_reserved_tokens: u64,
    pub steps: u64,
    pub batch_size_sum: u64,
    pub max_batch_seen: u32,
    pub generated_tokens: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub draining: bool,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            running: self.running.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            kv_reserved_tokens: self.kv_reserved_tokens.load(Relaxed),
            steps: self.steps.load(Relaxed),
            batch_size_sum: self.batch_size_sum.load(Relaxed),
            max_batch_seen: self.max_batch_seen.load(Relaxed),
            generated_tokens: self.generated_tokens.load(Relaxed),
            finished: self.finished.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            draining: self.draining.load(Relaxed),
        }
    }

    pub(crate) fn record_step(&self, batch: usize) {
        self.steps.fetch_add(1, Relaxed);
        self.batch_size_sum.fetch_add(batch as u64, Relaxed);
        self.max_batch_seen.fetch_max(batch as u32, Relaxed);
    }
}
