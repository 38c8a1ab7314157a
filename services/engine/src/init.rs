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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use safetensors::Dtype;

use crate::config::{AttnKind, ModelConfig, RopeScaling, TokenIds};
use crate::st_writer::{self, ShardWriter, StWriteError, TensorSpec};

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

/// How a logical tensor is stored in the official quantized checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    Bf16,
    F32,
    I64,
    /// FP8 E4M3 + `.scale` E8M0 `[ceil(out/128), ceil(in/128)]` (BF16 in `WeightFormat::Bf16`).
    Fp8Linear,
    /// FP4 E2M1 packed in I8 `[out, in/2]` + `.scale` E8M0 `[out, in/32]` (BF16 in `Bf16`).
    Fp4Expert,
}

/// Parameter-accounting group of a tensor (see [`crate::stats::ParamCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamGroup {
    Embedding,
    Head,
    Attention,
    CompressorIndexer,
    RoutedExperts,
    SharedExperts,
    Router,
    HcAndNorms,
    /// Everything under `mtp.*`.
    Mtp,
    /// Not a parameter (`tid2eid`).
    NotAParameter,
}

/// Initial values of a tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitDist {
    Normal {
        std: f32,
    },
    Const(f32),
    /// `num_experts_per_tok` distinct random expert ids per vocabulary row.
    Tid2Eid,
}

/// One logical tensor of the official layout (shape unpacked: FP4 counts every element).
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    pub group: ParamGroup,
    pub init: InitDist,
}

impl LogicalTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    /// Whether this is a routed expert of a main layer or of the MTP block.
    pub fn is_routed_expert(&self) -> bool {
        self.storage == Storage::Fp4Expert
    }
}

/// FP8 block edge and FP4 group length of the official layout.
pub const FP8_BLOCK: usize = 128;
pub const FP4_GROUP: usize = 32;

/// Collects the layout; inside an MTP block every parameter is booked to `ParamGroup::Mtp`.
struct LayoutBuilder {
    out: Vec<LogicalTensor>,
    mtp: bool,
}

impl LayoutBuilder {
    fn push(
        &mut self,
        name: String,
        shape: Vec<usize>,
        storage: Storage,
        group: ParamGroup,
        init: InitDist,
    ) {
        let group = match group {
            ParamGroup::NotAParameter => group,
            _ if self.mtp => ParamGroup::Mtp,
            _ => group,
        };
        self.out.push(LogicalTensor {
            name,
            shape,
            storage,
            group,
            init,
        });
    }
    /// A linear `[out, in]` with std 1/sqrt(in).
    fn linear(
        &mut self,
        name: String,
        out_in: (usize, usize),
        storage: Storage,
        group: ParamGroup,
    ) {
        let std = 1.0 / (out_in.1.max(1) as f32).sqrt();
        self.push(
            name,
            vec![out_in.0, out_in.1],
            storage,
            group,
            InitDist::Normal { std },
        );
    }
    /// An RMSNorm weight (BF16, ones).
    fn norm(&mut self, name: String, n: usize, group: ParamGroup) {
        self.push(name, vec![n], Storage::Bf16, group, InitDist::Const(1.0));
    }
    fn f32(&mut self, name: String, shape: Vec<usize>, group: ParamGroup, init: InitDist) {
        self.push(name, shape, Storage::F32, group, init);
    }
    /// mHC parameters `{p}{site}_fn [rows, n*D]` (std 1/sqrt(n*D)), `_base [rows]` = 0 and
    /// `_scale [scales]` = 1.
    fn hc(&mut self, prefix: String, rows: usize, nd: usize, scales: usize) {
        let g = ParamGroup::HcAndNorms;
        let std = 1.0 / (nd.max(1) as f32).sqrt();
        self.f32(
            format!("{prefix}_fn"),
            vec![rows, nd],
            g,
            InitDist::Normal { std },
        );
        self.f32(
            format!("{prefix}_base"),
            vec![rows],
            g,
            InitDist::Const(0.0),
        );
        self.f32(
            format!("{prefix}_scale"),
            vec![scales],
            g,
            InitDist::Const(1.0),
        );
    }
}

/// Every logical tensor of the official checkpoint of `cfg`, in writing order: global tensors,
/// `layers.{i}.*`, then `mtp.{j}.*`. Names, storage and shapes follow spec §4.1 and the
/// tiny-v4 fixture headers.
pub fn official_layout(cfg: &ModelConfig) -> Vec<LogicalTensor> {
    use ParamGroup as G;
    use Storage as S;
    let (dm, v) = (cfg.hidden_size, cfg.vocab_size);
    let (n, nd) = (cfg.hc_mult, cfg.hc_mult * cfg.hidden_size);
    let mut b = LayoutBuilder {
        out: Vec::new(),
        mtp: false,
    };

    let embed_init = InitDist::Normal { std: 1.0 };
    b.push(
        "embed.weight".into(),
        vec![v, dm],
        S::Bf16,
        G::Embedding,
        embed_init,
    );
    b.linear("head.weight".into(), (v, dm), S::Bf16, G::Head);
    b.norm("norm.weight".into(), dm, G::HcAndNorms);
    b.hc("hc_head".into(), n, nd, 1);

    for layer in 0..cfg.num_hidden_layers + cfg.num_nextn_predict_layers {
        b.mtp = layer >= cfg.num_hidden_layers;
        let p = if b.mtp {
            format!("mtp.{}.", layer - cfg.num_hidden_layers)
        } else {
            format!("layers.{layer}.")
        };
        if b.mtp {
            b.linear(format!("{p}e_proj.weight"), (dm, dm), S::Fp8Linear, G::Mtp);
            b.linear(format!("{p}h_proj.weight"), (dm, dm), S::Fp8Linear, G::Mtp);
            for norm in ["enorm", "hnorm", "norm"] {
                b.norm(format!("{p}{norm}.weight"), dm, G::Mtp);
            }
            b.hc(format!("{p}hc_head"), n, nd, 1);
        }
        let hash = !b.mtp && cfg.is_hash_layer(layer);
        block(&mut b, cfg, &p, layer, hash);
    }
    b.out
}

/// One decoder block (main layer or MTP block) with prefix `p`.
fn block(b: &mut LayoutBuilder, cfg: &ModelConfig, p: &str, layer: usize, hash: bool) {
    use ParamGroup as G;
    use Storage as S;
    let dm = cfg.hidden_size;
    let n = cfg.hc_mult;
    b.hc(format!("{p}hc_attn"), (2 + n) * n, n * dm, 3);
    b.hc(format!("{p}hc_ffn"), (2 + n) * n, n * dm, 3);
    b.norm(format!("{p}attn_norm.weight"), dm, G::HcAndNorms);
    b.norm(format!("{p}ffn_norm.weight"), dm, G::HcAndNorms);

    // Attention (spec §2.5).
    let (h, hd, q) = (cfg.num_attention_heads, cfg.head_dim, cfg.q_lora_rank);
    let (g, ol) = (cfg.o_groups, cfg.o_lora_rank);
    let a = format!("{p}attn.");
    b.f32(
        format!("{a}attn_sink"),
        vec![h],
        G::Attention,
        InitDist::Const(0.0),
    );
    b.linear(
        format!("{a}wq_a.weight"),
        (q, dm),
        S::Fp8Linear,
        G::Attention,
    );
    b.norm(format!("{a}q_norm.weight"), q, G::Attention);
    b.linear(
        format!("{a}wq_b.weight"),
        (h * hd, q),
        S::Fp8Linear,
        G::Attention,
    );
    b.linear(
        format!("{a}wkv.weight"),
        (hd, dm),
        S::Fp8Linear,
        G::Attention,
    );
    b.norm(format!("{a}kv_norm.weight"), hd, G::Attention);
    let o_in = h * hd / g.max(1);
    b.linear(
        format!("{a}wo_a.weight"),
        (g * ol, o_in),
        S::Fp8Linear,
        G::Attention,
    );
    b.linear(
        format!("{a}wo_b.weight"),
        (dm, g * ol),
        S::Fp8Linear,
        G::Attention,
    );

    // Compressor and Lightning Indexer (spec §2.6, §2.7).
    let kind = cfg.attn_kind(layer);
    if kind.is_compressed() {
        compressor(b, &format!("{a}compressor."), kind, hd, dm);
    }
    if let AttnKind::Csa { .. } = kind {
        let ix = format!("{a}indexer.");
        let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
        let ci = G::CompressorIndexer;
        b.linear(format!("{ix}wq_b.weight"), (ih * id, q), S::Fp8Linear, ci);
        b.linear(format!("{ix}weights_proj.weight"), (ih, dm), S::Bf16, ci);
        compressor(b, &format!("{ix}compressor."), kind, id, dm);
    }

    // MoE (spec §2.8): learned layers have `gate.bias`, hash layers `gate.tid2eid`.
    let f = format!("{p}ffn.");
    let (e, inter) = (cfg.n_routed_experts, cfg.moe_intermediate_size);
    b.linear(format!("{f}gate.weight"), (e, dm), S::Bf16, G::Router);
    if hash {
        let shape = vec![cfg.vocab_size, cfg.num_experts_per_tok];
        let name = format!("{f}gate.tid2eid");
        b.push(name, shape, S::I64, G::NotAParameter, InitDist::Tid2Eid);
    } else {
        let init = InitDist::Normal { std: 0.01 };
        b.f32(format!("{f}gate.bias"), vec![e], G::Router, init);
    }
    let ffn = [
        ("w1", (inter, dm)),
        ("w2", (dm, inter)),
        ("w3", (inter, dm)),
    ];
    for x in 0..e {
        for (w, shape) in ffn {
            let name = format!("{f}experts.{x}.{w}.weight");
            b.linear(name, shape, S::Fp4Expert, G::RoutedExperts);
        }
    }
    if cfg.n_shared_experts > 0 {
        for (w, shape) in ffn {
            let name = format!("{f}shared_experts.{w}.weight");
            b.linear(name, shape, S::Fp8Linear, G::SharedExperts);
        }
    }
}

/// Compressor of width `c` (`coff = 2` for the overlapping CSA compressor).
fn compressor(b: &mut LayoutBuilder, pre: &str, kind: AttnKind, c: usize, dm: usize) {
    let g = ParamGroup::CompressorIndexer;
    let coff = if matches!(kind, AttnKind::Csa { .. }) {
        2
    } else {
        1
    };
    let ape_init = InitDist::Normal { std: 0.02 };
    b.f32(
        format!("{pre}ape"),
        vec![kind.ratio(), coff * c],
        g,
        ape_init,
    );
    b.linear(format!("{pre}wkv.weight"), (coff * c, dm), Storage::Bf16, g);
    b.linear(
        format!("{pre}wgate.weight"),
        (coff * c, dm),
        Storage::Bf16,
        g,
    );
    b.norm(format!("{pre}norm.weight"), c, g);
}

/// The stored tensors (weight, then `.scale` if any) of one logical tensor in `format`.
pub fn stored_specs(t: &LogicalTensor, format: WeightFormat) -> Vec<TensorSpec> {
    let (out, inp) = (
        t.shape.first().copied().unwrap_or(1),
        t.shape.get(1).copied().unwrap_or(1),
    );
    let scale_name = || {
        t.name
            .strip_suffix(".weight")
            .unwrap_or(&t.name)
            .to_string()
            + ".scale"
    };
    match (t.storage, format) {
        (Storage::F32, _) => vec![TensorSpec::new(&t.name, Dtype::F32, t.shape.clone())],
        (Storage::I64, _) => vec![TensorSpec::new(&t.name, Dtype::I64, t.shape.clone())],
        (_, WeightFormat::Bf16) | (Storage::Bf16, _) => {
            vec![TensorSpec::new(&t.name, Dtype::BF16, t.shape.clone())]
        }
        (Storage::Fp8Linear, WeightFormat::Fp8Fp4) => vec![
            TensorSpec::new(&t.name, Dtype::F8_E4M3, t.shape.clone()),
            TensorSpec::new(
                scale_name(),
                Dtype::F8_E8M0,
                vec![out.div_ceil(FP8_BLOCK), inp.div_ceil(FP8_BLOCK)],
            ),
        ],
        (Storage::Fp4Expert, WeightFormat::Fp8Fp4) => vec![
            TensorSpec::new(&t.name, Dtype::I8, vec![out, inp / 2]),
            TensorSpec::new(scale_name(), Dtype::F8_E8M0, vec![out, inp / FP4_GROUP]),
        ],
    }
}

/// `config.json` content for a checkpoint of `cfg` in `format`.
pub fn checkpoint_config_json(cfg: &ModelConfig, format: WeightFormat) -> serde_json::Value {
    let mut c = cfg.clone();
    c.torch_dtype.get_or_insert_with(|| "bfloat16".to_string());
    match format {
        WeightFormat::Bf16 => {
            c.quantization_config = None;
            c.expert_dtype = None;
        }
        WeightFormat::Fp8Fp4 => {
            c.quantization_config = Some(serde_json::json!({
                "activation_scheme": "dynamic",
                "fmt": "e4m3",
                "quant_method": "fp8",
                "scale_fmt": "ue8m0",
                "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
            }));
            c.expert_dtype = Some("fp4".to_string());
        }
    }
    let mut v = serde_json::to_value(&c).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "architectures".into(),
            serde_json::json!(["DeepseekV4ForCausalLM"]),
        );
        obj.insert("model_type".into(), serde_json::json!("deepseek_v4"));
        obj.insert("topk_method".into(), serde_json::json!("noaux_tc"));
    }
    v
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
                generate::write_tensor(
                    &mut writer,
                    t,
                    opts.seed,
                    opts.format,
                    cfg.n_routed_experts,
                )?;
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

/// Seeded generators: splitmix64 for seeding, xoshiro256** streams, polar-method normals.
mod rng {
    /// One splitmix64 step.
    pub fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Seed of one tensor: FNV-1a of its name mixed with the checkpoint seed.
    pub fn tensor_seed(seed: u64, name: &str) -> u64 {
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
        let mut s = seed ^ h.rotate_left(17);
        splitmix64(&mut s)
    }

    /// xoshiro256** generator.
    pub struct Xoshiro256 {
        s: [u64; 4],
    }

    impl Xoshiro256 {
        /// The stream of row `row` of the tensor with seed `tensor_seed`.
        pub fn for_row(tensor_seed: u64, row: u64) -> Self {
            let mut sm = tensor_seed ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03);
            let s = [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ];
            Self { s }
        }

        pub fn next_u64(&mut self) -> u64 {
            let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
            let t = self.s[1] << 17;
            self.s[2] ^= self.s[0];
            self.s[3] ^= self.s[1];
            self.s[1] ^= self.s[2];
            self.s[0] ^= self.s[3];
            self.s[2] ^= t;
            self.s[3] = self.s[3].rotate_left(45);
            result
        }

        /// Uniform in [0, 1) with 53 random bits.
        pub fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }

        /// Uniform integer in `0..n` (n > 0; multiply-shift, bias < 2^-50 for our n).
        pub fn below(&mut self, n: u64) -> u64 {
            ((self.next_u64() as u128 * n as u128) >> 64) as u64
        }

        /// Fill `out` with N(0, std²) samples (Marsaglia's polar method, both outputs used).
        pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
            let std = std as f64;
            for pair in out.chunks_mut(2) {
                let (u, v, s) = loop {
                    let u = 2.0 * self.next_f64() - 1.0;
                    let v = 2.0 * self.next_f64() - 1.0;
                    let s = u * u + v * v;
                    if s > 0.0 && s < 1.0 {
                        break (u, v, s);
                    }
                };
                let m = (-2.0 * s.ln() / s).sqrt() * std;
                pair[0] = (u * m) as f32;
                if let Some(x) = pair.get_mut(1) {
                    *x = (v * m) as f32;
                }
            }
        }
    }
}

/// Chunked, parallel, deterministic generation of one logical tensor into a shard writer.
mod generate {
    use rayon::prelude::*;
    use v4_kernels::bf16::f32_to_bf16;
    use v4_kernels::quant::{
        dequant_fp4_groups, dequant_fp8_blocks, quant_fp4_groups, quant_fp8_blocks,
    };

    use super::rng::{Xoshiro256, tensor_seed};
    use super::{
        FP4_GROUP, FP8_BLOCK, InitDist, InitError, LogicalTensor, Storage, WeightFormat,
        stored_specs,
    };
    use crate::st_writer::ShardWriter;

    /// Target elements per generated chunk (64 MiB of f32).
    const CHUNK_ELEMS: usize = 16 << 20;

    /// `(rows, cols)` of a tensor viewed as a matrix (1-D: one row).
    fn rows_cols(shape: &[usize]) -> (usize, usize) {
        match shape {
            [] => (1, 1),
            [n] => (1, *n),
            [r, rest @ ..] => (*r, rest.iter().product()),
        }
    }

    fn bf16_bytes(vals: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; vals.len() * 2];
        out.par_chunks_mut(2)
            .zip(vals.par_iter())
            .for_each(|(o, &v)| o.copy_from_slice(&f32_to_bf16(v).to_le_bytes()));
        out
    }

    fn f32_bytes(vals: &[f32]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// `tid2eid` rows `row0..row0+rows`: `k` distinct expert ids per row (partial Fisher-Yates).
    fn tid2eid_bytes(seed: u64, row0: usize, rows: usize, k: usize, experts: usize) -> Vec<u8> {
        let mut out = vec![0u8; rows * k * 8];
        out.par_chunks_mut((k * 8).max(1))
            .enumerate()
            .for_each(|(i, row)| {
                let mut rng = Xoshiro256::for_row(seed, (row0 + i) as u64);
                let mut ids: Vec<i64> = (0..experts as i64).collect();
                for j in 0..k.min(experts) {
                    let pick = j + rng.below((experts - j) as u64) as usize;
                    ids.swap(j, pick);
                    row[j * 8..j * 8 + 8].copy_from_slice(&ids[j].to_le_bytes());
                }
            });
        out
    }

    /// Quantize `vals [_, cols]` in parallel slabs of `slab` rows (a multiple of the FP8 block,
    /// so the per-slab scale rows concatenate); the result does not depend on the thread count.
    fn quantize(vals: &[f32], cols: usize, storage: Storage) -> (Vec<u8>, Vec<u8>) {
        let slab = FP8_BLOCK;
        let parts: Vec<(Vec<u8>, Vec<u8>)> = vals
            .par_chunks((slab * cols).max(1))
            .map(|part| {
                // `vals` is empty when `cols == 0`, so no part reaches here then.
                let r = part.len() / cols.max(1);
                match storage {
                    Storage::Fp8Linear => quant_fp8_blocks(part, r, cols, FP8_BLOCK),
                    _ => quant_fp4_groups(part, r, cols, FP4_GROUP),
                }
            })
            .collect();
        let mut q = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
        let mut s = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum());
        for (pq, ps) in parts {
            q.extend_from_slice(&pq);
            s.extend_from_slice(&ps);
        }
        (q, s)
    }

    /// Generate `t` and write its stored tensor(s) (weight, then `.scale`) to `w`.
    pub fn write_tensor(
        w: &mut ShardWriter,
        t: &LogicalTensor,
        seed: u64,
        format: WeightFormat,
        n_experts: usize,
    ) -> Result<(), InitError> {
        let specs = stored_specs(t, format);
        let tseed = tensor_seed(seed, &t.name);
        let (rows, cols) = rows_cols(&t.shape);
        let chunk_rows = if rows * cols <= CHUNK_ELEMS {
            rows.max(1)
        } else {
            ((CHUNK_ELEMS / cols.max(1)) / FP8_BLOCK * FP8_BLOCK).max(FP8_BLOCK)
        };
        let quantized = match t.storage {
            Storage::Fp8Linear => true,
            Storage::Fp4Expert => cols % FP4_GROUP == 0,
            _ => false,
        };
        let keep_quantized = format == WeightFormat::Fp8Fp4 && quantized;
        let mut scales: Vec<u8> = Vec::new();
        w.begin_tensor(&t.name)?;
        let mut row0 = 0;
        while row0 < rows {
            let r = chunk_rows.min(rows - row0);
            if let InitDist::Tid2Eid = t.init {
                w.write_chunk(&tid2eid_bytes(tseed, row0, r, cols, n_experts))?;
                row0 += r;
                continue;
            }
            let mut vals = vec![0f32; r * cols];
            match t.init {
                InitDist::Normal { std } => {
                    vals.par_chunks_mut(cols.max(1))
                        .enumerate()
                        .for_each(|(i, row)| {
                            Xoshiro256::for_row(tseed, (row0 + i) as u64).fill_normal(row, std)
                        });
                }
                InitDist::Const(c) => vals.fill(c),
                InitDist::Tid2Eid => {}
            }
            let bytes = match t.storage {
                Storage::F32 => f32_bytes(&vals),
                Storage::I64 => vals
                    .iter()
                    .flat_map(|&v| (v as i64).to_le_bytes())
                    .collect(),
                _ if !quantized => bf16_bytes(&vals),
                storage => {
                    let (q, s) = quantize(&vals, cols, storage);
                    if keep_quantized {
                        scales.extend_from_slice(&s);
                        q
                    } else {
                        // Store the dequantized model (exact in BF16).
                        match storage {
                            Storage::Fp8Linear => {
                                dequant_fp8_blocks(&q, &s, r, cols, FP8_BLOCK, &mut vals)
                            }
                            _ => dequant_fp4_groups(&q, &s, r, cols, FP4_GROUP, &mut vals),
                        }
                        bf16_bytes(&vals)
                    }
                }
            };
            w.write_chunk(&bytes)?;
            row0 += r;
        }
        w.end_tensor()?;
        if let Some(scale) = specs.get(1) {
            w.write_tensor(&scale.name, &scales)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use safetensors::SafeTensors;

    use super::*;

    fn fixture_dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/tiny-v4")
            .join(name)
    }

    /// `name -> (dtype, shape)` of every tensor of a checkpoint directory, read from the shards.
    fn read_headers(dir: &Path) -> BTreeMap<String, (String, Vec<usize>)> {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let mut files: Vec<String> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        files.sort();
        files.dedup();
        let mut out = BTreeMap::new();
        for f in files {
            let buf = std::fs::read(dir.join(&f)).unwrap();
            let st = SafeTensors::deserialize(&buf).unwrap();
            for (name, view) in st.tensors() {
                assert_eq!(
                    index["weight_map"][&name],
                    f.as_str(),
                    "index entry of {name}"
                );
                out.insert(name, (view.dtype().to_string(), view.shape().to_vec()));
            }
        }
        out
    }

    fn write(
        format: WeightFormat,
        seed: u64,
        max_shard_bytes: u64,
    ) -> (tempfile::TempDir, InitSummary) {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            seed,
            format,
            max_shard_bytes,
        };
        let summary =
            write_random_checkpoint(&preset_config(Preset::Tiny), dir.path(), &opts).unwrap();
        (dir, summary)
    }

    fn check_against_fixture(format: WeightFormat, fixture: &str) {
        let (dir, summary) = write(format, 7, 0);
        let ours = read_headers(dir.path());
        let theirs = read_headers(&fixture_dir(fixture));
        assert_eq!(summary.tensors, ours.len());
        let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
        let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
        assert!(missing.is_empty(), "missing from ours: {missing:?}");
        assert!(extra.is_empty(), "extra in ours: {extra:?}");
        for (name, spec) in &theirs {
            assert_eq!(&ours[name], spec, "{name}");
        }
        let cfg = ModelConfig::from_path(dir.path()).unwrap();
        assert_eq!(cfg.is_fp8(), format == WeightFormat::Fp8Fp4);
        let generation: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("generation_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            generation,
            serde_json::json!({"bos_token_id": 0, "eos_token_id": 1, "do_sample": false})
        );
    }

    #[test]
    fn tiny_fp8_fp4_matches_fixture_layout() {
        check_against_fixture(WeightFormat::Fp8Fp4, "ckpt-fp8-fp4");
    }

    #[test]
    fn tiny_bf16_matches_fixture_layout() {
        check_against_fixture(WeightFormat::Bf16, "ckpt-bf16");
    }

    #[test]
    fn tiny_preset_has_fixture_shapes() {
        let text = std::fs::read_to_string(fixture_dir("ckpt-bf16").join("config.json")).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ours = serde_json::to_value(preset_config(Preset::Tiny)).unwrap();
        for (k, v) in ours.as_object().unwrap() {
            match k.as_str() {
                "swiglu_limit" => assert_eq!(v.as_f64(), Some(10.0)),
                "rope_scaling" => {
                    for f in [
                        "factor",
                        "original_max_position_embeddings",
                        "beta_fast",
                        "beta_slow",
                    ] {
                        assert_eq!(v[f].as_f64(), fixture[k][f].as_f64(), "rope_scaling.{f}");
                    }
                }
                _ => match (v.as_f64(), fixture[k].as_f64()) {
                    (Some(a), Some(b)) => assert_eq!(a, b, "{k}"),
                    _ => assert_eq!(v, &fixture[k], "{k}"),
                },
            }
        }
        for p in [Preset::Tiny, Preset::Small, Preset::Bench] {
            preset_config(p)
                .validate(Path::new(&p.to_string()))
                .unwrap();
            assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
        }
        assert!(
            "huge"
                .parse::<Preset>()
                .unwrap_err()
                .to_string()
                .contains("huge")
        );
        let bench = preset_config(Preset::Bench);
        assert_eq!(bench.compress_ratios.len(), bench.num_hidden_layers + 1);
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let (a, sa) = write(WeightFormat::Fp8Fp4, 42, 0);
        let (b, _) = write(WeightFormat::Fp8Fp4, 42, 0);
        let (c, _) = write(WeightFormat::Fp8Fp4, 43, 0);
        let shard = |d: &tempfile::TempDir| {
            std::fs::read(d.path().join(st_writer::shard_file_name(1, 1))).unwrap()
        };
        assert_eq!(sa.shards, 1);
        assert_eq!(shard(&a), shard(&b));
        assert_ne!(shard(&a), shard(&c));
        // Same result with a single-threaded pool.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (d, _) = pool.install(|| write(WeightFormat::Fp8Fp4, 42, 0));
        assert_eq!(shard(&a), shard(&d));
    }

    #[test]
    fn shards_split_and_index_is_consistent() {
        let (dir, summary) = write(WeightFormat::Bf16, 1, 256 << 10);
        assert!(summary.shards > 3, "{} shards", summary.shards);
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let mut total = 0u64;
        for i in 1..=summary.shards {
            let name = st_writer::shard_file_name(i, summary.shards);
            let buf = std::fs::read(dir.path().join(&name)).unwrap();
            let st = SafeTensors::deserialize(&buf).unwrap();
            for (t, view) in st.tensors() {
                assert_eq!(index["weight_map"][&t], name.as_str());
                total += view.data().len() as u64;
            }
        }
        assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
        assert_eq!(summary.data_bytes, total);
        assert_eq!(
            index["weight_map"].as_object().unwrap().len(),
            summary.tensors
        );
        assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        }));
    }

    /// Both formats describe the same model, and the values follow the documented init.
    #[test]
    fn formats_agree_and_values_are_tame() {
        let (q, _) = write(WeightFormat::Fp8Fp4, 5, 0);
        let (b, _) = write(WeightFormat::Bf16, 5, 0);
        let qb = std::fs::read(q.path().join(st_writer::shard_file_name(1, 1))).unwrap();
        let bb = std::fs::read(b.path().join(st_writer::shard_file_name(1, 1))).unwrap();
        let (qs, bs) = (
            SafeTensors::deserialize(&qb).unwrap(),
            SafeTensors::deserialize(&bb).unwrap(),
        );
        let bf = |name: &str| -> Vec<f32> {
            bs.tensor(name)
                .unwrap()
                .data()
                .chunks(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect()
        };
        // FP8: dequantized FP8 bytes equal the BF16 checkpoint's values.
        let w = qs.tensor("layers.1.attn.wq_b.weight").unwrap();
        let s = qs.tensor("layers.1.attn.wq_b.scale").unwrap();
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        let bc = cols.div_ceil(FP8_BLOCK);
        let ref_vals = bf("layers.1.attn.wq_b.weight");
        assert_eq!(ref_vals.len(), rows * cols);
        for (i, (&q, &want)) in w.data().iter().zip(&ref_vals).enumerate() {
            let sc = s.data()[(i / cols / FP8_BLOCK) * bc + (i % cols) / FP8_BLOCK];
            let v = v4_kernels::quant::e4m3_to_f32(q) * v4_kernels::quant::e8m0_to_f32(sc);
            assert_eq!(v, want, "element {i}");
        }
        // std ~ 1/sqrt(in) for linears, 1 for the embedding, norms 1, sinks 0.
        let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let wq_a = bf("layers.0.attn.wq_a.weight");
        assert!(
            (std(&wq_a) * (128f32).sqrt() - 1.0).abs() < 0.1,
            "{}",
            std(&wq_a)
        );
        let emb = bf("embed.weight");
        assert!((std(&emb) - 1.0).abs() < 0.05);
        let expert = bf("layers.1.ffn.experts.3.w2.weight");
        assert!((std(&expert) * 8.0 - 1.0).abs() < 0.2, "{}", std(&expert));
        assert!(bf("layers.2.attn_norm.weight").iter().all(|&x| x == 1.0));
        let sink = bs.tensor("layers.0.attn.attn_sink").unwrap();
        assert!(sink.data().iter().all(|&x| x == 0));
        // tid2eid: distinct ids in range on every row.
        let t = bs.tensor("layers.0.ffn.gate.tid2eid").unwrap();
        let ids: Vec<i64> = t
            .data()
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for row in ids.chunks(2) {
            assert!(
                row.iter().all(|&e| (0..8).contains(&e)) && row[0] != row[1],
                "{row:?}"
            );
        }
        assert_eq!(
            t.data(),
            qs.tensor("layers.0.ffn.gate.tid2eid").unwrap().data()
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = preset_config(Preset::Tiny);
        cfg.moe_intermediate_size = 48; // w2 input 48 is not a multiple of 32
        let opts = InitOptions {
            format: WeightFormat::Fp8Fp4,
            ..InitOptions::default()
        };
        let err = write_random_checkpoint(&cfg, dir.path(), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("w2.weight") && err.contains("48"), "{err}");
        // BF16 stores such experts unquantized.
        let opts = InitOptions {
            format: WeightFormat::Bf16,
            ..InitOptions::default()
        };
        write_random_checkpoint(&cfg, dir.path(), &opts).unwrap();
        // An unwritable output directory is named.
        let file = dir.path().join("config.json");
        let err = write_random_checkpoint(&cfg, &file.join("sub"), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        assert_eq!("fp8-fp4".parse::<WeightFormat>(), Ok(WeightFormat::Fp8Fp4));
        assert!("int4".parse::<WeightFormat>().is_err());
    }
}
