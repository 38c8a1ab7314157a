//! DeepSeek-V4 on CPU: configuration, checkpoint loading, the reference forward pass with
//! incremental caches, and sampling. Module and weight names mirror the checkpoint
//! (`layers.{i}.attn.wq_a`, …); see `docs/ARCHITECTURE.md` for the map.

pub mod alloc;
pub mod attention;
pub mod cache;
pub mod cache_codec;
pub mod compressor;
pub mod config;
pub mod generate;
pub mod indexer;
pub mod init;
pub mod loader;
pub mod mhc;
pub mod model;
pub mod moe;
pub mod ops;
pub mod rng;
pub mod rope;
pub mod sampling;
pub mod st_writer;
pub mod stats;
pub mod weights;

pub use cache::SequenceCache;
pub use config::{AttnKind, ModelConfig};
pub use loader::{Checkpoint, LoadError};
pub use model::{ForwardError, ForwardOutput, Logits, Model};
