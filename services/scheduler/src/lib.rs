//! The scheduler: admission and placement of generations.
//!
//! It listens to the workers' heartbeats ([`registry`]) and serves, in queue group
//! `v4-scheduler` (run as many as you like; each builds its own view from the heartbeats):
//!
//! * `v4.v1.scheduler.generate`: checks the request against the model's context
//!   (`context_length_exceeded`), picks the least loaded live decode worker of the model with
//!   a free slot and KV room, and forwards the request to it. A worker that refuses
//!   (`overloaded`, `unavailable`, no responders) is skipped for the next one; when every
//!   worker is full the answer is `overloaded`, which the gateway turns into 503 with
//!   `Retry-After` (back-pressure). A model nobody serves is `unavailable` /
//!   `model_not_served`.
//! * `v4.v1.scheduler.models`: the served models (id, context, live workers, free slots).
//!
//! Chunked prefill happens in the worker: a long prompt is prefilled a chunk per step while
//! the running batch keeps decoding.

pub mod registry;
pub mod service;
pub mod settings;

pub use registry::Registry;
pub use service::{SchedulerConfig, SchedulerHandle, start};
pub use settings::SchedulerSettings;
