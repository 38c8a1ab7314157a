//! The `quantization` section of a converted model's `config.json`, and the rest of the config
//! rewrite.
//!
//! The section fully describes what was written, per tensor class, so that a loader (ours, or
//! anyone's) needs nothing else:
//!
//! ```json
//! "quantization": {
//!   "producer": "v4convert 0.1.0",
//!   "linears":        {"format": "fp8_e4m3", "scale_format": "e8m0", "block_size": [128, 128], ...},
//!   "routed_experts": {"format": "int4", "group_size": 32, "scale_format": "bf16",
//!                      "symmetric": true, "packing": "...", "spec": "docs/FORMATS.md"},
//!   "other": {"format": "as in source (bf16 / f32 / i64)"}
//! }
//! ```
//!
//! The Hugging Face keys the official checkpoint uses stay consistent with it:
//! `quantization_config` (FP8 block size) is present exactly when some tensor is FP8, and
//! `expert_dtype` names the routed experts' format (`fp4`, `fp8`, `int4`, `bf16`). Every other
//! key of the source config is kept verbatim.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::ConvertError;
use crate::manifest::CONVERTER_VERSION;
use crate::plan::{Encoding, Plan, TargetOptions, TensorClass};

fn describe(enc: Encoding) -> Value {
    const PACKING: &str =
        "two 4-bit codes per byte along the input dimension; low nibble = even column";
    match enc {
        Encoding::Fp8 { block } => json!({
            "format": "fp8_e4m3",
            "scale_format": "e8m0",
            "scale_tensor": "<weight>.scale",
            "block_size": [block, block],
            "scale_shape": "[ceil(out/block), ceil(in/block)]",
        }),
        Encoding::Fp4 { group } => json!({
            "format": "fp4_e2m1",
            "scale_format": "e8m0",
            "scale_tensor": "<weight>.scale",
            "group_size": group,
            "weight_dtype": "I8 [out, in/2]",
            "scale_shape": "[out, in/group]",
            "packing": PACKING,
        }),
        Encoding::Int4 { group } => json!({
            "format": "int4",
            "symmetric": true,
            "code_range": [-8, 7],
            "scale_format": "bf16",
            "scale_tensor": "<weight>.scale",
            "group_size": group,
            "weight_dtype": "I8 [out, in/2]",
            "scale_shape": "[out, in/group]",
            "packing": PACKING,
            "value": "int4(code) * bf16(scale) (two's complement codes)",
            "spec": "docs/FORMATS.md#int4-with-bf16-group-scales-our-format",
        }),
        Encoding::Bf16 => json!({"format": "bf16"}),
        Encoding::F32 => json!({"format": "f32"}),
        Encoding::Raw => json!({"format": "as in source"}),
    }
}

/// The `quantization` section for a plan.
pub fn quantization_section(plan: &Plan, opts: &TargetOptions) -> Value {
    let enc_of = |class: TensorClass| {
        plan.tensors
            .iter()
            .find(|t| t.class == class)
            .map(|t| describe(t.dst_enc))
            .unwrap_or(Value::Null)
    };
    json!({
        "producer": format!("v4convert {CONVERTER_VERSION}"),
        "requested": {
            "linears": opts.linears.to_string(),
            "experts": opts.experts.to_string(),
            "int4_group": opts.int4_group,
        },
        "linears": enc_of(TensorClass::Linear),
        "routed_experts": enc_of(TensorClass::RoutedExpert),
        "other": {"format": "as in source (bf16 / f32 / i64)"},
    })
}

/// The source `config.json` with the quantization keys rewritten for the plan.
pub fn config_with_quantization(
    cfg_path: &Path,
    plan: &Plan,
    quant: &Value,
) -> Result<String, ConvertError> {
    let text = std::fs::read(cfg_path).map_err(|e| ConvertError::io(cfg_path, e))?;
    let mut v: Value = serde_json::from_slice(&text).map_err(|e| ConvertError::Config {
        path: cfg_path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })?;
    let obj = v.as_object_mut().ok_or_else(|| ConvertError::Config {
        path: cfg_path.to_path_buf(),
        message: "config.json is not a JSON object".into(),
    })?;
    let fp8_block = plan.tensors.iter().find_map(|t| match t.dst_enc {
        Encoding::Fp8 { block } => Some(block),
        _ => None,
    });
    match fp8_block {
        Some(b) => {
            obj.insert(
                "quantization_config".into(),
                json!({
                    "activation_scheme": "dynamic",
                    "fmt": "e4m3",
                    "quant_method": "fp8",
                    "scale_fmt": "ue8m0",
                    "weight_block_size": [b, b],
                }),
            );
        }
        None => {
            obj.remove("quantization_config");
        }
    }
    let expert = plan
        .tensors
        .iter()
        .find(|t| t.class == TensorClass::RoutedExpert)
        .map(|t| match t.dst_enc {
            Encoding::Fp4 { .. } => "fp4",
            Encoding::Fp8 { .. } => "fp8",
            Encoding::Int4 { .. } => "int4",
            Encoding::F32 => "f32",
            _ => "bf16",
        });
    match expert {
        Some(e) => {
            obj.insert("expert_dtype".into(), json!(e));
        }
        None => {
            obj.remove("expert_dtype");
        }
    }
    obj.insert("quantization".into(), quant.clone());
    let mut s = serde_json::to_string_pretty(&v).map_err(|e| ConvertError::Config {
        path: cfg_path.to_path_buf(),
        message: e.to_string(),
    })?;
    s.push('\n');
    Ok(s)
}
