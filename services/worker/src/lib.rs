//! The decode worker: runs V4 generations on the CPU engine with continuous batching and
//! serves them over the bus ([`v4_protocol::generate`] has the message flow).
//!
//! * [`start`] loads nothing itself: it takes a [`WorkerModel`] (a loaded [`v4_engine::Model`]
//!   plus the sha256 of its `config.json`), subscribes to `v4.v1.worker.<instance>.generate`
//!   and the cancel broadcast, and publishes a [`v4_protocol::generate::WorkerHeartbeat`]
//!   every `heartbeat_interval` with its load (running, waiting, KV reserved) and counters
//!   (steps, batch-size sum, largest batch).
//! * The model runs on one dedicated engine thread ([`batcher`]), never on an async task. A
//!   request is validated on the async side (model id, vocabulary, context, sampling), queued,
//!   joins the running batch as soon as a slot and KV room are free, is prefilled in chunks
//!   while the others keep decoding, and leaves the batch the step it finishes.
//! * Every generation ends with exactly one final event (`finished`), whether it stopped,
//!   hit its length, was cancelled, failed or the worker drained; only [`WorkerHandle::kill`]
//!   (a simulated crash) ends without one, which the gateway notices from the missing
//!   heartbeats.
//! * The worker prefills its own prompts (no prefill worker is needed). Prompt tokens are
//!   reported as processed; there is no prefix cache yet, so `cached_prompt_tokens` is 0.

pub mod batcher;
pub mod config;
pub mod logprobs;
pub mod service;
pub mod settings;
pub mod stats;

pub use config::WorkerConfig;
pub use service::{WorkerError, WorkerHandle, WorkerModel, start};
pub use settings::WorkerSettings;
pub use stats::StatsSnapshot;
