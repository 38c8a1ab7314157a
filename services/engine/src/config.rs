//! `config.json` of a DeepSeek-V4 checkpoint, read with the official Hugging Face keys.
//!
//! Every layer's attention type is derived from `compress_ratios` (spec §1.2): 0 means
//! sliding-window only, 4 means CSA (overlapping compressor + Lightning Indexer), any other
//! ratio means HCA with that ratio. Nothing here hard-codes 128.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or validating `config.json`. Messages name the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid config.json: {err}")]
    Parse {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// `rope_scaling` block (YaRN). Only applied together with `compress_rope_theta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `type` in the official config; transformers writes `rope_type` (often both).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    #[serde(default = "default_beta_fast")]
    pub beta_fast: f64,
    #[serde(default = "default_beta_slow")]
    pub beta_slow: f64,
}

impl RopeScaling {
    /// The scaling type (`yarn` when neither key is given).
    pub fn kind(&self) -> &str {
        self.kind
            .as_deref()
            .or(self.rope_type.as_deref())
            .unwrap_or("yarn")
    }
}
fn default_beta_fast() -> f64 {
    32.0
}
fn default_beta_slow() -> f64 {
    1.0
}

/// `eos_token_id` is an integer in the official config but a list in some fine-tunes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The model configuration, official key names (spec §1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "one")]
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub q_lora_rank: usize,
    pub o_groups: usize,
    pub o_lora_rank: usize,
    pub sliding_window: usize,
    pub compress_ratios: Vec<usize>,
    pub index_n_heads: usize,
    pub index_head_dim: usize,
    pub index_topk: usize,
    pub hc_mult: usize,
    pub hc_sinkhorn_iters: usize,
    pub hc_eps: f64,
    pub rms_norm_eps: f64,
    pub n_routed_experts: usize,
    #[serde(default = "one")]
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    #[serde(default = "default_scoring")]
    pub scoring_func: String,
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f64,
    #[serde(default)]
    pub num_hash_layers: usize,
    pub swiglu_limit: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub rope_theta: f64,
    pub compress_rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Present in FP8 checkpoints (`quant_method: fp8`, `weight_block_size: [128, 128]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<serde_json::Value>,
    /// `"fp4"` in the current official revision: routed experts stored as FP4 E2M1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_scoring() -> String {
    "sqrtsoftplus".to_string()
}
fn default_act() -> String {
    "silu".to_string()
}

/// Attention type of one layer, derived from its compress ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttnKind {
    /// ratio 0: sliding window only.
    Sliding,
    /// ratio 4: overlapping compressor, Lightning Indexer, top-k.
    Csa { ratio: usize },
    /// any other ratio: non-overlapping compressor, every finished entry visible.
    Hca { ratio: usize },
}

impl AttnKind {
    pub fn from_ratio(ratio: usize) -> Self {
        match ratio {
            0 => AttnKind::Sliding,
            4 => AttnKind::Csa { ratio },
            r => AttnKind::Hca { ratio: r },
        }
    }

    pub fn ratio(self) -> usize {
        match self {
            AttnKind::Sliding => 0,
            AttnKind::Csa { ratio } | AttnKind::Hca { ratio } => ratio,
        }
    }

    /// Compressed layers (CSA, HCA) use `compress_rope_theta` with YaRN.
    pub fn is_compressed(self) -> bool {
        !matches!(self, AttnKind::Sliding)
    }

    pub fn name(self) -> &'static str {
        match self {
            AttnKind::Sliding => "sliding",
            AttnKind::Csa { .. } => "csa",
            AttnKind::Hca { .. } => "hca",
        }
    }
}

impl ModelConfig {
    /// Read and validate `DIR/config.json` (or the file itself when `path` is a file).
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let file = if path.is_file() {
            path.to_path_buf()
        } else {
            path.join("config.json")
        };
        let text = std::fs::read_to_string(&file).map_err(|err| ConfigError::Io {
            path: file.clone(),
            err,
        })?;
        Self::from_json_str(&text, &file)
    }

    /// Parse and validate; `origin` is only used in error messages.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: ModelConfig = serde_json::from_str(text).map_err(|err| ConfigError::Parse {
            path: origin.to_path_buf(),
            err,
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Structural checks the forward pass relies on.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            field,
            message,
        };
        let positive: [(&'static str, usize); 13] = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("head_dim", self.head_dim),
            ("q_lora_rank", self.q_lora_rank),
            ("o_groups", self.o_groups),
            ("o_lora_rank", self.o_lora_rank),
            ("sliding_window", self.sliding_window),
            ("hc_mult", self.hc_mult),
            ("hc_sinkhorn_iters", self.hc_sinkhorn_iters),
            ("n_routed_experts", self.n_routed_experts),
            ("moe_intermediate_size", self.moe_intermediate_size),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(bad(field, "must be positive".into()));
            }
        }
        if self.num_key_value_heads != 1 {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "DeepSeek-V4 uses one shared K=V head, found {}",
                    self.num_key_value_heads
                ),
            ));
        }
        if self.qk_rope_head_dim == 0
            || !self.qk_rope_head_dim.is_multiple_of(2)
            || self.qk_rope_head_dim > self.head_dim
        {
            return Err(bad(
                "qk_rope_head_dim",
                format!(
                    "must be even, positive and <= head_dim ({}), found {}",
                    self.head_dim, self.qk_rope_head_dim
                ),
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.o_groups) {
            return Err(bad(
                "o_groups",
                format!(
                    "must divide num_attention_heads ({}), found {}",
                    self.num_attention_heads, self.o_groups
                ),
            ));
        }
        if self.compress_ratios.len() < self.num_hidden_layers {
            return Err(bad(
                "compress_ratios",
                format!(
                    "needs one entry per layer ({} layers + {} MTP), found {}",
                    self.num_hidden_layers,
                    self.num_nextn_predict_layers,
                    self.compress_ratios.len()
                ),
            ));
        }
        if self.has_csa() {
            if self.index_n_heads == 0 || self.index_head_dim == 0 || self.index_topk == 0 {
                return Err(bad(
                    "index_n_heads",
                    "CSA layers need index_n_heads, index_head_dim and index_topk > 0".into(),
                ));
            }
            if self.qk_rope_head_dim > self.index_head_dim {
                return Err(bad(
                    "index_head_dim",
                    format!("must be >= qk_rope_head_dim ({})", self.qk_rope_head_dim),
                ));
            }
        }
        if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
            return Err(bad(
                "num_experts_per_tok",
                format!(
                    "must be in 1..={} (n_routed_experts), found {}",
                    self.n_routed_experts, self.num_experts_per_tok
                ),
            ));
        }
        if self.n_shared_experts > 1 {
            return Err(bad(
                "n_shared_experts",
                format!("0 or 1 supported, found {}", self.n_shared_experts),
            ));
        }
        if self.scoring_func != "sqrtsoftplus" {
            return Err(bad(
                "scoring_func",
                format!(
                    "only \"sqrtsoftplus\" is supported, found {:?}",
                    self.scoring_func
                ),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(bad(
                "hidden_act",
                format!("only \"silu\" is supported, found {:?}", self.hidden_act),
            ));
        }
        if let Some(rs) = &self.rope_scaling {
            if rs.kind() != "yarn" {
                return Err(bad(
                    "rope_scaling",
                    format!("only YaRN scaling is supported, found type {:?}", rs.kind()),
                ));
            }
            if rs.factor < 1.0 || rs.original_max_position_embeddings == 0 {
                return Err(bad(
                    "rope_scaling",
                    "factor must be >= 1 and original_max_position_embeddings > 0".into(),
                ));
            }
        }
        if self.num_hash_layers > self.num_hidden_layers {
            return Err(bad(
                "num_hash_layers",
                format!("exceeds num_hidden_layers ({})", self.num_hidden_layers),
            ));
        }
        if self.num_nextn_predict_layers > 1 {
            return Err(bad(
                "num_nextn_predict_layers",
                format!("0 or 1 supported, found {}", self.num_nextn_predict_layers),
            ));
        }
        Ok(())
    }

    /// Attention type of main layer `l` (`l < num_hidden_layers`) or MTP block `l - num_hidden_layers`.
    pub fn attn_kind(&self, layer: usize) -> AttnKind {
        AttnKind::from_ratio(self.compress_ratios.get(layer).copied().unwrap_or(0))
    }

    /// Layers `0..num_hash_layers` route by token id (`tid2eid`); the MTP block never does.
    pub fn is_hash_layer(&self, layer: usize) -> bool {
        layer < self.num_hash_layers
    }

    pub fn has_csa(&self) -> bool {
        (0..self.num_hidden_layers + self.num_nextn_predict_layers)
            .any(|l| matches!(self.attn_kind(l), AttnKind::Csa { .. }))
    }

    /// Rotary dims of one head (`qk_rope_head_dim`); the first `head_dim - rope` are "nope".
    pub fn rope_dim(&self) -> usize {
        self.qk_rope_head_dim
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_else(|| vec![1])
    }

    /// Whether the checkpoint declares FP8 block-quantized linears.
    pub fn is_fp8(&self) -> bool {
        self.quantization_config
            .as_ref()
            .and_then(|q| q.get("quant_method"))
            .and_then(|m| m.as_str())
            == Some("fp8")
    }

    /// FP8 block size from `quantization_config.weight_block_size` (default 128x128).
    pub fn fp8_block(&self) -> (usize, usize) {
        let bs = self
            .quantization_config
            .as_ref()
            .and_then(|q| q.get("weight_block_size"))
            .and_then(|v| v.as_array());
        match bs {
            Some(a) if a.len() == 2 => (
                a[0].as_u64().unwrap_or(128) as usize,
                a[1].as_u64().unwrap_or(128) as usize,
            ),
            _ => (128, 128),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config() -> ModelConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/tiny-v4/ckpt-bf16");
        ModelConfig::from_path(&dir).expect("tiny config parses")
    }

    #[test]
    fn tiny_layer_types_come_from_compress_ratios() {
        let cfg = fixture_config();
        assert_eq!(cfg.attn_kind(0), AttnKind::Sliding);
        assert_eq!(cfg.attn_kind(1), AttnKind::Csa { ratio: 4 });
        assert_eq!(cfg.attn_kind(2), AttnKind::Hca { ratio: 16 });
        assert_eq!(cfg.attn_kind(3), AttnKind::Csa { ratio: 4 });
        assert_eq!(cfg.attn_kind(4), AttnKind::Sliding, "MTP block");
        assert!(cfg.is_hash_layer(0) && !cfg.is_hash_layer(1));
    }

    #[test]
    fn missing_field_is_named() {
        let err = ModelConfig::from_json_str("{\"vocab_size\": 10}", Path::new("x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x/config.json"), "{err}");
        assert!(err.contains("missing field"), "{err}");
    }
}
