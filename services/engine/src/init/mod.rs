//! Random checkpoints in the official DeepSeek-V4 layout, so that anyone can produce a model
//! offline (`v4 init`).
//!
//! [`official_layout`] lists every logical tensor of the official checkpoint for a config
//! (names, logical shapes, storage class, initial distribution); it is also the basis of the
//! parameter accounting in [`crate::stats`]. [`write_random_checkpoint`] streams the tensors to
//! sharded safetensors files: each tensor is generated chunk by chunk (rows in parallel with
//! rayon, every row seeded from a hash of the seed, the tensor name and the row index), so the
//! output depends only on the seed and memory stays bounded by one chunk (~64 MiB of f32).
//!
//! FP8 linears and FP4 experts are always drawn in f32 and then quantized (FP8 E4M3 with one
//! UE8M0 scale per 128x128 block; FP4 E2M1 with one UE8M0 scale per 1x32 group). In
//! [`WeightFormat::Fp8Fp4`] the quantized bytes and `.scale` tensors are stored; in
//! [`WeightFormat::Bf16`] their dequantized values are stored as BF16 (exact), so both formats
//! written with the same seed describe the same model, like the two tiny-v4 fixtures.

mod fill;
mod layout;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use layout::{
    FP4_GROUP, FP8_BLOCK, InitDist, LogicalTensor, ParamGroup, Storage, checkpoint_config_json,
    official_layout, stored_specs,
};

use crate::config::{ModelConfig, RopeScaling, TokenIds};
use crate::st_writer::{self, ShardWriter, StWriteError};

/// Errors writing a random checkpoint; I/O errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] StWriteError),
    #[error("cannot write {format} checkpoint: {message}")]
    Unsupported {
        format: WeightFormat,
        message: String,
    },
    #[error("invalid config: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Built-in model sizes for `v4 init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// The tiny-v4 fixture shapes (hidden 128, vocab 512) with `swiglu_limit` 10.
    Tiny,
    /// A small model with the real 129280-token vocabulary, for the offline demo.
    Small,
    /// Real head sizes, 8 layers, hidden 2048, 64 experts: for throughput measurements.
    Bench,
}

/// A preset name that is not `tiny`, `small` or `bench`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {0:?}: expected tiny, small or bench")]
pub struct UnknownPreset(pub String);

impl FromStr for Preset {
    type Err = UnknownPreset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "bench" => Ok(Preset::Bench),
            _ => Err(UnknownPreset(s.to_string())),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Bench => "bench",
        })
    }
}

fn yarn(factor: f64, original: usize) -> Option<RopeScaling> {
    Some(RopeScaling {
        kind: Some("yarn".to_string()),
        rope_type: None,
        factor,
        original_max_position_embeddings: original,
        beta_fast: 32.0,
        beta_slow: 1.0,
    })
}

/// The configuration of a preset (BF16 checkpoint fields; the FP8 keys are added by
/// [`checkpoint_config_json`] when writing an `Fp8Fp4` checkpoint).
pub fn preset_config(p: Preset) -> ModelConfig {
    let tiny = ModelConfig {
        vocab_size: 512,
        hidden_size: 128,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 1,
        head_dim: 64,
        qk_rope_head_dim: 16,
        q_lora_rank: 64,
        o_groups: 2,
        o_lora_rank: 32,
        sliding_window: 16,
        compress_ratios: vec![0, 4, 16, 4, 0],
        index_n_heads: 16,
        index_head_dim: 32,
        index_topk: 4,
        hc_mult: 4,
        hc_sinkhorn_iters: 20,
        hc_eps: 1e-6,
        rms_norm_eps: 1e-6,
        n_routed_experts: 8,
        n_shared_experts: 1,
        num_experts_per_tok: 2,
        moe_intermediate_size: 64,
        scoring_func: "sqrtsoftplus".to_string(),
        norm_topk_prob: true,
        routed_scaling_factor: 1.5,
        num_hash_layers: 1,
        swiglu_limit: 10.0,
        hidden_act: "silu".to_string(),
        rope_theta: 10000.0,
        compress_rope_theta: 160000.0,
        rope_scaling: yarn(16.0, 64),
        max_position_embeddings: 4096,
        num_nextn_predict_layers: 1,
        tie_word_embeddings: false,
        bos_token_id: Some(0),
        eos_token_id: Some(TokenIds::One(1)),
        quantization_config: None,
        expert_dtype: None,
        torch_dtype: Some("bfloat16".to_string()),
    };
    match p {
        Preset::Tiny => tiny,
        Preset::Small => ModelConfig {
            vocab_size: 129280,
            hidden_size: 256,
            q_lora_rank: 128,
            o_lora_rank: 64,
            index_n_heads: 8,
            index_topk: 8,
            moe_intermediate_size: 128,
            rope_scaling: yarn(16.0, 4096),
            max_position_embeddings: 65536,
            ..tiny
        },
        Preset::Bench => ModelConfig {
            vocab_size: 129280,
            hidden_size: 2048,
            num_hidden_layers: 8,
            num_attention_heads: 16,
            head_dim: 512,
            qk_rope_head_dim: 64,
            q_lora_rank: 1024,
            o_groups: 4,
            o_lora_rank: 1024,
            sliding_window: 128,
            compress_ratios: vec![0, 0, 4, 128, 4, 128, 4, 128, 0],
            index_n_heads: 64,
            index_head_dim: 128,
            index_topk: 512,
            n_routed_experts: 64,
            num_experts_per_tok: 6,
            moe_intermediate_size: 1024,
            num_hash_layers: 3,
            rope_scaling: yarn(16.0, 65536),
            max_position_embeddings: 1048576,
            ..tiny
        },
    }
}

/// On-disk representation of the FP8/FP4 tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// Everything BF16 (FP8/FP4 weights dequantized, no `.scale`), like fixture `ckpt-bf16`.
    Bf16,
    /// Official layout: FP8 E4M3 linears and FP4 (I8-packed) routed experts with E8M0 scales.
    Fp8Fp4,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Fp8Fp4 => "fp8-fp4",
        })
    }
}

/// A weight format name that is not `bf16` or `fp8-fp4`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown weight format {0:?}: expected bf16 or fp8-fp4")]
pub struct UnknownFormat(pub String);

impl FromStr for WeightFormat {
    type Err = UnknownFormat;
    /// `bf16` or `fp8-fp4` (also `fp8fp4`, `fp8_fp4`, `fp8`), case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" => Ok(WeightFormat::Bf16),
            "fp8-fp4" | "fp8fp4" | "fp8_fp4" | "fp8" => Ok(WeightFormat::Fp8Fp4),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// Options of [`write_random_checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub seed: u64,
    pub format: WeightFormat,
    /// Upper bound on the data bytes of one shard (a single larger tensor gets its own
    /// shard); 0 = everything in one shard.
    pub max_shard_bytes: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            format: WeightFormat::Bf16,
            max_shard_bytes: 4 << 30,
        }
    }
}

/// What [`write_random_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSummary {
    /// Every file written, in order: the shards, the index, generation_config.json, config.json.
    pub files: Vec<PathBuf>,
    pub shards: usize,
    /// Tensors stored (weights, scales, tid2eid).
    pub tensors: usize,
    /// Sum of tensor data bytes (the index's `total_size`).
    pub data_bytes: u64,
    /// Bytes of all files written.
    pub file_bytes: u64,
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<u64, InitError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| InitError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    text.push('\n');
    std::fs::write(path, &text).map_err(|source| InitError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.len() as u64)
}

/// Write a random checkpoint of `cfg` to `out_dir` (created if needed): shards
/// `model-0000i-of-0000N.safetensors`, `model.safetensors.index.json`, `config.json` and
/// `generation_config.json` (written last). Files of an earlier run with other shard counts
/// are left alone. Deterministic in `opts.seed`, independent of the thread count.
pub fn write_random_checkpoint(
    cfg: &ModelConfig,
    out_dir: &Path,
    opts: &InitOptions,
) -> Result<InitSummary, InitError> {
    cfg.validate(&out_dir.join("config.json"))?;
    let layout = official_layout(cfg);
    let bad_fp4 = layout
        .iter()
        .find(|t| t.storage == Storage::Fp4Expert && t.shape[1] % FP4_GROUP != 0);
    if let (WeightFormat::Fp8Fp4, Some(t)) = (opts.format, bad_fp4) {
        return Err(InitError::Unsupported {
            format: opts.format,
            message: format!(
                "`{}` has {} input features, FP4 needs a multiple of {FP4_GROUP}",
                t.name, t.shape[1]
            ),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|source| InitError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;

    let by_name: BTreeMap<&str, &LogicalTensor> =
        layout.iter().map(|t| (t.name.as_str(), t)).collect();
    let units = layout
        .iter()
        .map(|t| stored_specs(t, opts.format))
        .collect();
    let shards = st_writer::plan_shards(units, opts.max_shard_bytes);
    let count = shards.len();
    let mut summary = InitSummary {
        files: Vec::new(),
        shards: count,
        tensors: 0,
        data_bytes: 0,
        file_bytes: 0,
    };
    let mut weight_map = BTreeMap::new();
    for (i, specs) in shards.into_iter().enumerate() {
        let file = st_writer::shard_file_name(i + 1, count);
        let mut writer = ShardWriter::create(out_dir.join(&file), specs.clone())?;
        for spec in &specs {
            weight_map.insert(spec.name.clone(), file.clone());
            // Scales are written together with their weight.
            if let Some(t) = by_name.get(spec.name.as_str()) {
                fill::write_tensor(&mut writer, t, opts.seed, opts.format, cfg.n_routed_experts)?;
            }
        }
        let s = writer.finish()?;
        summary.tensors += s.tensors.len();
        summary.data_bytes += s.data_bytes;
        summary.file_bytes += s.file_bytes;
        summary.files.push(s.path);
    }
    let index = st_writer::write_index(out_dir, &weight_map, summary.data_bytes)?;
    summary.file_bytes += std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
    summary.files.push(index);

    let gen_path = out_dir.join("generation_config.json");
    let gen_cfg = serde_json::json!({
        "bos_token_id": cfg.bos_token_id.unwrap_or(0),
        "eos_token_id": cfg.eos_ids().first().copied().unwrap_or(1),
        "do_sample": false,
    });
    summary.file_bytes += write_json(&gen_path, &gen_cfg)?;
    summary.files.push(gen_path);
    let cfg_path = out_dir.join("config.json");
    summary.file_bytes += write_json(&cfg_path, &checkpoint_config_json(cfg, opts.format))?;
    summary.files.push(cfg_path);
    Ok(summary)
}
