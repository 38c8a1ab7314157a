//! The official checkpoint layout: every logical tensor of a config ([`official_layout`]),
//! its storage class, parameter group and initial distribution, the stored tensors of each
//! ([`stored_specs`]) and the `config.json` written with them ([`checkpoint_config_json`]).

use safetensors::Dtype;

use super::WeightFormat;
use crate::config::{AttnKind, ModelConfig};
use crate::st_writer::TensorSpec;

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
