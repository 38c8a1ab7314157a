//! The `deepseek4` layout: Hugging Face → GGUF tensor names and the conversion plan (which
//! source tensors make each GGUF tensor, in which order, with which type).
//!
//! Specification: `shared/design/gguf-deepseek4.md` §3; decisions in `docs/GGUF.md`.

use std::collections::{BTreeMap, BTreeSet};

use v4_engine::config::ModelConfig;
use v4_engine::init::{Storage, official_layout};
use v4_engine::loader::Checkpoint;

use super::GgufError;
use super::source::{SourceKind, SourceSpec, classify, index_file};
use super::types::GgmlType;
use super::writer::TensorDecl;

/// Which types the converter writes (see `docs/GGUF.md` §Types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufTypes {
    /// llama.cpp's converter's choices: FP8 → Q8_0, FP4 experts → MXFP4 (lossless), BF16 stays
    /// BF16, F32 stays F32, vectors F32, `tid2eid` I32; plus ours for sources it refuses: BF16
    /// experts stay BF16, INT4 experts → Q4_0 (lossless when the scales fit in f16).
    #[default]
    Stock,
    /// Every tensor F32 (lossless from any source), `tid2eid` I32.
    F32,
    /// What `llama-quantize … Q8_0` makes of the F32 file: Q8_0 for every matrix except norms,
    /// `ffn_gate_inp` and `tid2eid`; everything else F32.
    Q8_0,
}

impl GgufTypes {
    /// The spelling [`FromStr`](std::str::FromStr) accepts: `stock`, `f32`, `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            GgufTypes::Stock => "stock",
            GgufTypes::F32 => "f32",
            GgufTypes::Q8_0 => "q8_0",
        }
    }
}

impl std::fmt::Display for GgufTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GgufTypes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stock" => Ok(GgufTypes::Stock),
            "f32" => Ok(GgufTypes::F32),
            "q8_0" | "q8" => Ok(GgufTypes::Q8_0),
            _ => Err(format!(
                "unknown GGUF types {s:?} (expected stock, f32 or q8_0)"
            )),
        }
    }
}

/// How the bytes of a GGUF tensor are produced from its source pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The source bytes as they are (same type).
    Copy,
    F32,
    Bf16,
    Q8_0,
    /// FP4 → MXFP4 bit repack.
    Mxfp4,
    /// INT4 → Q4_0 bit repack.
    Q4_0,
    /// Integer table → I32.
    I32,
}

/// One GGUF tensor of the plan.
#[derive(Debug, Clone)]
pub(crate) struct PlannedTensor {
    pub decl: TensorDecl,
    /// Source matrices concatenated in this order (several for stacked experts).
    pub pieces: Vec<SourceSpec>,
    pub encoding: Encoding,
}

/// Everything to write, decided before the output file is created.
#[derive(Debug)]
pub(crate) struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// Source tensors deliberately not converted (`mtp.*`, hash-layer router biases).
    pub skipped: Vec<String>,
}

/// GGUF name of a non-expert checkpoint tensor (`layers.{i}.` → `blk.{i}.`), or `None`.
pub fn gguf_tensor_name(hf: &str) -> Option<String> {
    let global = match hf {
        "embed.weight" => Some("token_embd.weight"),
        "head.weight" => Some("output.weight"),
        "norm.weight" => Some("output_norm.weight"),
        "hc_head_fn" => Some("output_hc_fn.weight"),
        "hc_head_base" => Some("output_hc_base.weight"),
        "hc_head_scale" => Some("output_hc_scale.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let suffix = match rest {
        "hc_attn_fn" => "hc_attn_fn.weight",
        "hc_attn_base" => "hc_attn_base.weight",
        "hc_attn_scale" => "hc_attn_scale.weight",
        "hc_ffn_fn" => "hc_ffn_fn.weight",
        "hc_ffn_base" => "hc_ffn_base.weight",
        "hc_ffn_scale" => "hc_ffn_scale.weight",
        "attn_norm.weight" => "attn_norm.weight",
        "ffn_norm.weight" => "ffn_norm.weight",
        "attn.attn_sink" => "attn_sinks.weight",
        "attn.wq_a.weight" => "attn_q_a.weight",
        "attn.q_norm.weight" => "attn_q_a_norm.weight",
        "attn.wq_b.weight" => "attn_q_b.weight",
        "attn.wkv.weight" => "attn_kv.weight",
        "attn.kv_norm.weight" => "attn_kv_a_norm.weight",
        "attn.wo_a.weight" => "attn_output_a.weight",
        "attn.wo_b.weight" => "attn_output_b.weight",
        "attn.compressor.wkv.weight" => "attn_compressor_kv.weight",
        "attn.compressor.wgate.weight" => "attn_compressor_gate.weight",
        "attn.compressor.ape" => "attn_compressor_ape.weight",
        "attn.compressor.norm.weight" => "attn_compressor_norm.weight",
        "attn.indexer.wq_b.weight" => "indexer.attn_q_b.weight",
        "attn.indexer.weights_proj.weight" => "indexer.proj.weight",
        "attn.indexer.compressor.wkv.weight" => "indexer_compressor_kv.weight",
        "attn.indexer.compressor.wgate.weight" => "indexer_compressor_gate.weight",
        "attn.indexer.compressor.ape" => "indexer_compressor_ape.weight",
        "attn.indexer.compressor.norm.weight" => "indexer_compressor_norm.weight",
        "ffn.gate.weight" => "ffn_gate_inp.weight",
        "ffn.gate.bias" => "exp_probs_b.bias",
        "ffn.gate.bias_vl" => "exp_probs_b_vl.bias",
        "ffn.gate.tid2eid" => "ffn_gate_tid2eid.weight",
        "ffn.shared_experts.w1.weight" => "ffn_gate_shexp.weight",
        "ffn.shared_experts.w2.weight" => "ffn_down_shexp.weight",
        "ffn.shared_experts.w3.weight" => "ffn_up_shexp.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{suffix}"))
}

/// `layers.{i}.ffn.experts.{e}.w{1,2,3}.weight` → `(i, e, projection 1..=3)`.
fn parse_expert(hf: &str) -> Option<(usize, usize, usize)> {
    let rest = hf.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("ffn.experts.")?;
    let (expert, rest) = rest.split_once('.')?;
    let w = match rest {
        "w1.weight" => 1,
        "w2.weight" => 2,
        "w3.weight" => 3,
        _ => return None,
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((num(layer)?, num(expert)?, w))
}

/// Layer index of a `layers.{i}.…` name.
fn layer_of(hf: &str) -> Option<usize> {
    hf.strip_prefix("layers.")?.split_once('.')?.0.parse().ok()
}

/// Whether `llama-quantize` would quantize a ≥2-D tensor of this name.
fn quantizable(gguf_name: &str) -> bool {
    gguf_name.ends_with(".weight")
        && !gguf_name.ends_with("_norm.weight")
        && !gguf_name.ends_with("ffn_gate_inp.weight")
        && !gguf_name.ends_with("ffn_gate_tid2eid.weight")
}

/// Picks the stored type and the encoding of one GGUF tensor.
fn choose(
    types: GgufTypes,
    gguf_name: &str,
    kind: SourceKind,
    ndim: usize,
    cols: usize,
) -> (GgmlType, Encoding) {
    let f32_from = |k: SourceKind| {
        if k == SourceKind::F32 {
            (GgmlType::F32, Encoding::Copy)
        } else {
            (GgmlType::F32, Encoding::F32)
        }
    };
    let blocks = cols.is_multiple_of(32);
    if kind == SourceKind::Int {
        return (GgmlType::I32, Encoding::I32);
    }
    if ndim == 1 {
        return f32_from(kind);
    }
    match types {
        GgufTypes::F32 => f32_from(kind),
        GgufTypes::Q8_0 if quantizable(gguf_name) && blocks => (GgmlType::Q8_0, Encoding::Q8_0),
        GgufTypes::Q8_0 => f32_from(kind),
        GgufTypes::Stock => match kind {
            SourceKind::F32 => (GgmlType::F32, Encoding::Copy),
            SourceKind::Bf16 => (GgmlType::Bf16, Encoding::Copy),
            SourceKind::F16 => (GgmlType::F16, Encoding::Copy),
            SourceKind::Fp8 { .. } if blocks => (GgmlType::Q8_0, Encoding::Q8_0),
            // FP8 values are BF16 numbers: BF16 is exact.
            SourceKind::Fp8 { .. } => (GgmlType::Bf16, Encoding::Bf16),
            SourceKind::Fp4 { group } if blocks && group.is_multiple_of(32) => {
                (GgmlType::Mxfp4, Encoding::Mxfp4)
            }
            SourceKind::Fp4 { .. } => (GgmlType::Bf16, Encoding::Bf16),
            SourceKind::Int4 { group } if blocks && group.is_multiple_of(32) => {
                (GgmlType::Q4_0, Encoding::Q4_0)
            }
            SourceKind::Int4 { .. } => f32_from(kind),
            SourceKind::Int => (GgmlType::I32, Encoding::I32),
        },
    }
}

/// Builds and validates the plan: every checkpoint tensor is mapped, stacked, skipped (`mtp.*`,
/// router biases of hash layers) or refused; every tensor of the layout must be present with the
/// right dtype and shape. Order: per layer the `tid2eid` table and the stacked experts (gate,
/// down, up), then every other tensor in checkpoint-name order (what llama.cpp's converter does).
pub(crate) fn plan(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    types: GgufTypes,
) -> Result<Plan, GgufError> {
    let n_layers = cfg.num_hidden_layers;
    let n_experts = cfg.n_routed_experts;
    let fp8_block = {
        let (a, b) = cfg.fp8_block();
        if a != b || a == 0 {
            return Err(GgufError::Unsupported(format!(
                "{}: FP8 weight_block_size [{a}, {b}] is not a square block",
                ckpt.dir().join("config.json").display()
            )));
        }
        a
    };
    // Logical tensors of the main layers (shape and storage class), by checkpoint name.
    let layout: BTreeMap<String, (Vec<usize>, Storage)> = official_layout(cfg)
        .into_iter()
        .filter(|t| !t.name.starts_with("mtp."))
        .map(|t| (t.name, (t.shape, t.storage)))
        .collect();

    let mut regular: Vec<String> = Vec::new();
    let mut experts: BTreeMap<(usize, usize), BTreeMap<usize, String>> = BTreeMap::new();
    let mut scales: BTreeSet<String> = BTreeSet::new();
    let mut skipped = Vec::new();
    for name in ckpt.names() {
        let unknown = || -> GgufError {
            let file = ckpt
                .get(name)
                .map(|v| v.file.to_path_buf())
                .unwrap_or_else(|_| index_file(ckpt));
            GgufError::UnknownTensor {
                file,
                tensor: name.to_string(),
            }
        };
        if name.starts_with("mtp.") {
            // Listed once per weight (its `.scale` goes with it).
            if !name.ends_with(".scale") {
                skipped.push(name.to_string());
            }
        } else if name.ends_with(".scale") {
            scales.insert(name.to_string());
        } else if let Some((layer, e, w)) = parse_expert(name) {
            if layer >= n_layers || e >= n_experts {
                return Err(unknown());
            }
            experts
                .entry((layer, w))
                .or_default()
                .insert(e, name.to_string());
        } else if layout.contains_key(name) {
            regular.push(name.to_string());
        } else if name.ends_with(".ffn.gate.bias")
            && layer_of(name).is_some_and(|l| l < n_layers && cfg.is_hash_layer(l))
        {
            // llama.cpp drops the (unused) router bias of hash-routed layers.
            skipped.push(name.to_string());
        } else if name.ends_with(".ffn.gate.bias_vl")
            && layer_of(name).is_some_and(|l| l < n_layers)
        {
            regular.push(name.to_string());
        } else {
            return Err(unknown());
        }
    }

    // Every tensor of the layout must be there.
    let regular_set: BTreeSet<&str> = regular.iter().map(String::as_str).collect();
    for (name, (_, storage)) in &layout {
        if *storage == Storage::Fp4Expert {
            let Some((layer, e, w)) = parse_expert(name) else {
                continue;
            };
            if experts.get(&(layer, w)).is_some_and(|m| m.contains_key(&e)) {
                continue;
            }
        } else if regular_set.contains(name.as_str()) {
            continue;
        }
        return Err(GgufError::MissingTensor {
            file: index_file(ckpt),
            tensor: name.clone(),
            needed_by: None,
        });
    }

    let mut tensors = Vec::new();
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut add =
        |gguf: String, pieces: Vec<SourceSpec>, logical_ndim: usize| -> Result<(), GgufError> {
            let first = &pieces[0];
            if let Some(odd) = pieces.iter().find(|p| p.kind != first.kind) {
                return Err(GgufError::SourceDtype {
                    file: odd.file.clone(),
                    tensor: odd.name.clone(),
                    expected: format!("{} like `{}`", first.kind.describe(), first.name),
                    found: odd.kind.describe(),
                });
            }
            for p in &pieces {
                if let Some(s) = &p.scale {
                    consumed.insert(s.clone());
                }
            }
            let (ty, encoding) = choose(types, &gguf, first.kind, logical_ndim, first.cols);
            let mut dims = vec![first.cols as u64];
            if logical_ndim >= 2 {
                dims.push(first.rows as u64);
            }
            if pieces.len() > 1 {
                dims.push(pieces.len() as u64);
            }
            tensors.push(PlannedTensor {
                decl: TensorDecl {
                    name: gguf,
                    ty,
                    dims,
                },
                pieces,
                encoding,
            });
            Ok(())
        };

    // Per layer: the hash table, then the stacked experts (gate = w1, down = w2, up = w3).
    for layer in 0..n_layers {
        let tid = format!("layers.{layer}.ffn.gate.tid2eid");
        if regular_set.contains(tid.as_str()) {
            let shape = &layout[&tid].0;
            let spec = classify(ckpt, &tid, shape, fp8_block, true)?;
            add(
                format!("blk.{layer}.ffn_gate_tid2eid.weight"),
                vec![spec],
                2,
            )?;
        }
        for (w, gguf) in [
            (1, "ffn_gate_exps"),
            (2, "ffn_down_exps"),
            (3, "ffn_up_exps"),
        ] {
            let Some(stack) = experts.get(&(layer, w)) else {
                continue;
            };
            let mut pieces = Vec::with_capacity(stack.len());
            for name in stack.values() {
                let shape = &layout[name].0;
                pieces.push(classify(ckpt, name, shape, fp8_block, false)?);
            }
            add(format!("blk.{layer}.{gguf}.weight"), pieces, 3)?;
        }
    }
    for name in &regular {
        if name.ends_with(".ffn.gate.tid2eid") {
            continue;
        }
        let shape = match layout.get(name) {
            Some((shape, _)) => shape.clone(),
            None => vec![n_experts], // `ffn.gate.bias_vl`
        };
        let gguf = gguf_tensor_name(name).ok_or_else(|| GgufError::UnknownTensor {
            file: index_file(ckpt),
            tensor: name.clone(),
        })?;
        let spec = classify(ckpt, name, &shape, fp8_block, false)?;
        add(gguf, vec![spec], shape.len())?;
    }

    // A scale tensor no quantized weight used is an error, not silently dropped.
    if let Some(s) = scales.difference(&consumed).next() {
        let file = ckpt
            .get(s)
            .map(|v| v.file.to_path_buf())
            .unwrap_or_else(|_| index_file(ckpt));
        return Err(GgufError::UnknownTensor {
            file,
            tensor: s.clone(),
        });
    }
    Ok(Plan { tensors, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_titles() {
        assert_eq!(
            gguf_tensor_name("layers.12.attn.wq_a.weight").as_deref(),
            Some("blk.12.attn_q_a.weight")
        );
        assert_eq!(
            gguf_tensor_name("hc_head_fn").as_deref(),
            Some("output_hc_fn.weight")
        );
        assert_eq!(gguf_tensor_name("layers.x.attn.wq_a.weight"), None);
        assert_eq!(gguf_tensor_name("layers.0.attn.wq_a.scale"), None);
        assert_eq!(
            parse_expert("layers.3.ffn.experts.17.w2.weight"),
            Some((3, 17, 2))
        );
        assert_eq!(parse_expert("layers.3.ffn.experts.17.w4.weight"), None);
    }
}
