//! What the conversion will do, decided entirely before any byte is written: every logical tensor
//! of the model (from the config, `v4_engine::init::official_layout`) is matched with its source
//! tensors (weight and scale), its source encoding is recognised and checked (dtype and shape),
//! and its target encoding is chosen from the options. Any source problem (missing tensor or
//! scale, wrong dtype, wrong shape, a tensor the model does not have) is an error here, naming
//! the file and the tensor, before the output directory is even created.

use std::fmt;
use std::str::FromStr;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use v4_engine::config::ModelConfig;
use v4_engine::init::{FP4_GROUP, FP8_BLOCK, LogicalTensor, Storage, official_layout};
use v4_engine::st_writer::TensorSpec;

use crate::error::ConvertError;
use crate::source::{SourceCheckpoint, SourceTensor, dtype_name};

/// How a matrix is encoded (in the source or in the output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "format")]
pub enum Encoding {
    Bf16,
    F32,
    /// FP8 E4M3 + E8M0 scale per `block x block` tile.
    Fp8 {
        block: usize,
    },
    /// FP4 E2M1 nibbles + E8M0 scale per `group` columns.
    Fp4 {
        group: usize,
    },
    /// INT4 nibbles + BF16 scale per `group` columns (docs/FORMATS.md).
    Int4 {
        group: usize,
    },
    /// Integer tables and anything else copied as is (`tid2eid`).
    Raw,
}

impl Encoding {
    pub fn has_scale(self) -> bool {
        matches!(
            self,
            Encoding::Fp8 { .. } | Encoding::Fp4 { .. } | Encoding::Int4 { .. }
        )
    }

    /// Stored tensors (weight, then scale) of a `[rows, cols]` matrix `name` in this encoding.
    pub fn specs(self, name: &str, rows: usize, cols: usize, raw: Dtype) -> Vec<TensorSpec> {
        let scale = scale_name(name);
        match self {
            Encoding::Bf16 => vec![TensorSpec::new(name, Dtype::BF16, vec![rows, cols])],
            Encoding::F32 => vec![TensorSpec::new(name, Dtype::F32, vec![rows, cols])],
            Encoding::Raw => vec![TensorSpec::new(name, raw, vec![rows, cols])],
            Encoding::Fp8 { block } => vec![
                TensorSpec::new(name, Dtype::F8_E4M3, vec![rows, cols]),
                TensorSpec::new(
                    scale,
                    Dtype::F8_E8M0,
                    vec![rows.div_ceil(block), cols.div_ceil(block)],
                ),
            ],
            Encoding::Fp4 { group } => vec![
                TensorSpec::new(name, Dtype::I8, vec![rows, cols / 2]),
                TensorSpec::new(scale, Dtype::F8_E8M0, vec![rows, cols.div_ceil(group)]),
            ],
            Encoding::Int4 { group } => vec![
                TensorSpec::new(name, Dtype::I8, vec![rows, cols / 2]),
                TensorSpec::new(scale, Dtype::BF16, vec![rows, cols.div_ceil(group)]),
            ],
        }
    }

    pub fn label(self) -> String {
        match self {
            Encoding::Bf16 => "bf16".into(),
            Encoding::F32 => "f32".into(),
            Encoding::Raw => "raw".into(),
            Encoding::Fp8 { block } => format!("fp8 (e4m3, e8m0 {block}x{block})"),
            Encoding::Fp4 { group } => format!("fp4 (e2m1, e8m0 1x{group})"),
            Encoding::Int4 { group } => format!("int4 (bf16 1x{group})"),
        }
    }
}

/// `X.weight` → `X.scale`.
pub fn scale_name(weight: &str) -> String {
    format!("{}.scale", weight.strip_suffix(".weight").unwrap_or(weight))
}

/// Target of the FP8-eligible linears (attention, shared experts, MTP projections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinearFormat {
    Fp8,
    Bf16,
}

/// Target of the routed experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpertFormat {
    Fp4,
    Fp8,
    Int4,
    Bf16,
}

impl FromStr for LinearFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp8" => Ok(Self::Fp8),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown linear format `{s}` (expected fp8 or bf16)"
            )),
        }
    }
}

impl FromStr for ExpertFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp4" => Ok(Self::Fp4),
            "fp8" => Ok(Self::Fp8),
            "int4" => Ok(Self::Int4),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown expert format `{s}` (expected fp4, fp8, int4 or bf16)"
            )),
        }
    }
}

impl fmt::Display for LinearFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp8 => "fp8",
            Self::Bf16 => "bf16",
        })
    }
}

impl fmt::Display for ExpertFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp4 => "fp4",
            Self::Fp8 => "fp8",
            Self::Int4 => "int4",
            Self::Bf16 => "bf16",
        })
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetOptions {
    pub linears: LinearFormat,
    pub experts: ExpertFormat,
    /// INT4 group length along the input dimension.
    pub int4_group: usize,
}

/// Which class of the model a tensor belongs to (for options and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorClass {
    /// FP8 in the official checkpoint (attention projections, shared experts, MTP projections).
    Linear,
    RoutedExpert,
    /// Everything else (embedding, head, norms, mHC, compressor, router...).
    Other,
}

/// One logical tensor: where it comes from and what is written.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    pub name: String,
    pub class: TensorClass,
    pub rows: usize,
    pub cols: usize,
    /// Source weight tensor and its scale tensor, if any.
    pub src: SourceTensor,
    pub src_scale: Option<SourceTensor>,
    pub src_enc: Encoding,
    pub dst_enc: Encoding,
    /// Output tensors (weight, then scale).
    pub out: Vec<TensorSpec>,
}

impl TensorPlan {
    /// Source and target are the same encoding: bytes are copied unchanged.
    pub fn is_copy(&self) -> bool {
        self.src_enc == self.dst_enc
    }

    pub fn src_bytes(&self) -> u64 {
        self.src.len + self.src_scale.as_ref().map_or(0, |s| s.len)
    }

    pub fn out_bytes(&self) -> u64 {
        self.out.iter().map(TensorSpec::byte_len).sum()
    }
}

/// The whole conversion plan.
#[derive(Debug)]
pub struct Plan {
    pub tensors: Vec<TensorPlan>,
    /// Source tensors deliberately not carried over (with the reason).
    pub dropped: Vec<(String, String)>,
}

/// Builds the plan, or explains the first problem with the source.
pub fn build_plan(
    src: &SourceCheckpoint,
    cfg: &ModelConfig,
    opts: &TargetOptions,
) -> Result<Plan, ConvertError> {
    if opts.int4_group == 0 || !opts.int4_group.is_multiple_of(2) {
        return Err(ConvertError::Options(format!(
            "--group must be a positive even number, got {}",
            opts.int4_group
        )));
    }
    let layout = official_layout(cfg);
    let mut used = std::collections::HashSet::new();
    let mut tensors = Vec::with_capacity(layout.len());
    for lt in &layout {
        let t = plan_tensor(src, lt, opts)?;
        used.insert(t.src.name.clone());
        if let Some(s) = &t.src_scale {
            used.insert(s.name.clone());
        }
        tensors.push(t);
    }
    let mut dropped = Vec::new();
    for t in src.tensors() {
        if used.contains(&t.name) {
            continue;
        }
        // The official converter drops MTP copies of the shared embedding and head.
        let mtp_shared = t.name.starts_with("mtp.")
            && (t.name.contains(".emb") || t.name.ends_with("head.weight"));
        if mtp_shared {
            dropped.push((
                t.name.clone(),
                "MTP copy of the shared embedding/head (the model uses the main one)".into(),
            ));
            continue;
        }
        return Err(ConvertError::Tensor {
            path: src.shard_path(t).to_path_buf(),
            tensor: t.name.clone(),
            message: "unknown tensor: the DeepSeek-V4 layout for this config.json has no such \
                      tensor (wrong config, or not a V4 checkpoint?)"
                .into(),
        });
    }
    Ok(Plan { tensors, dropped })
}

fn class_of(lt: &LogicalTensor) -> TensorClass {
    match lt.storage {
        Storage::Fp8Linear => TensorClass::Linear,
        Storage::Fp4Expert => TensorClass::RoutedExpert,
        _ => TensorClass::Other,
    }
}

fn plan_tensor(
    src: &SourceCheckpoint,
    lt: &LogicalTensor,
    opts: &TargetOptions,
) -> Result<TensorPlan, ConvertError> {
    let class = class_of(lt);
    let w = src.get(&lt.name).ok_or_else(|| ConvertError::Source {
        path: src.dir.clone(),
        message: format!("tensor `{}` is missing from the checkpoint", lt.name),
    })?;
    let path = src.shard_path(w).to_path_buf();
    let bad = |message: String| ConvertError::Tensor {
        path: path.clone(),
        tensor: lt.name.clone(),
        message,
    };
    let (rows, cols) = match lt.shape.as_slice() {
        [r, c] => (*r, *c),
        [n] => (1, *n),
        [] => (1, 1),
        s => (s[0], s[1..].iter().product()),
    };

    // Vectors, tables and matrices the official checkpoint keeps in BF16/F32 are copied.
    if class == TensorClass::Other {
        if w.shape != lt.shape {
            return Err(bad(format!(
                "expected shape {:?}, found {:?}",
                lt.shape, w.shape
            )));
        }
        let ok = match lt.storage {
            Storage::I64 => matches!(w.dtype, Dtype::I64 | Dtype::I32),
            _ => matches!(w.dtype, Dtype::BF16 | Dtype::F32),
        };
        if !ok {
            return Err(bad(format!(
                "expected dtype {}, found {}",
                match lt.storage {
                    Storage::I64 => "I64 or I32",
                    _ => "BF16 or F32",
                },
                dtype_name(w.dtype)
            )));
        }
        let out = vec![TensorSpec::new(&lt.name, w.dtype, w.shape.clone())];
        return Ok(TensorPlan {
            name: lt.name.clone(),
            class,
            rows,
            cols,
            src: w.clone(),
            src_scale: None,
            src_enc: Encoding::Raw,
            dst_enc: Encoding::Raw,
            out,
        });
    }

    let (src_enc, src_scale) = source_encoding(src, w, rows, cols, &bad)?;
    let dst_enc = match (class, opts.linears, opts.experts) {
        (TensorClass::Linear, LinearFormat::Fp8, _) => match src_enc {
            Encoding::Fp8 { block } if block == FP8_BLOCK => src_enc,
            _ => Encoding::Fp8 { block: FP8_BLOCK },
        },
        (TensorClass::Linear, LinearFormat::Bf16, _) => Encoding::Bf16,
        (_, _, ExpertFormat::Fp4) => match src_enc {
            Encoding::Fp4 { group } if group == FP4_GROUP => src_enc,
            _ => Encoding::Fp4 { group: FP4_GROUP },
        },
        (_, _, ExpertFormat::Fp8) => Encoding::Fp8 { block: FP8_BLOCK },
        (_, _, ExpertFormat::Int4) => Encoding::Int4 {
            group: opts.int4_group,
        },
        (_, _, ExpertFormat::Bf16) => Encoding::Bf16,
    };
    if let Encoding::Int4 { group } | Encoding::Fp4 { group } = dst_enc
        && !cols.is_multiple_of(group)
    {
        return Err(bad(format!(
            "input width {cols} is not a multiple of the group size {group}"
        )));
    }
    let out = dst_enc.specs(&lt.name, rows, cols, w.dtype);
    Ok(TensorPlan {
        name: lt.name.clone(),
        class,
        rows,
        cols,
        src: w.clone(),
        src_scale,
        src_enc,
        dst_enc,
        out,
    })
}

/// Recognises how a matrix is stored in the source, checking dtypes and shapes.
fn source_encoding(
    src: &SourceCheckpoint,
    w: &SourceTensor,
    rows: usize,
    cols: usize,
    bad: &dyn Fn(String) -> ConvertError,
) -> Result<(Encoding, Option<SourceTensor>), ConvertError> {
    let expect_shape = |t: &SourceTensor, shape: &[usize], what: &str| {
        if t.shape != shape {
            let path = src.shard_path(t).to_path_buf();
            Err(ConvertError::Tensor {
                path,
                tensor: t.name.clone(),
                message: format!("{what}: expected shape {shape:?}, found {:?}", t.shape),
            })
        } else {
            Ok(())
        }
    };
    let scale = || {
        let primary = scale_name(&w.name);
        let alt = format!(
            "{}.weight_scale_inv",
            w.name.strip_suffix(".weight").unwrap_or(&w.name)
        );
        src.get(&primary).or_else(|| src.get(&alt)).ok_or_else(|| {
            bad(format!(
                "{} weight without its scale tensor `{primary}`",
                dtype_name(w.dtype)
            ))
        })
    };
    match w.dtype {
        Dtype::BF16 | Dtype::F32 => {
            expect_shape(w, &[rows, cols], "weight")?;
            let enc = if w.dtype == Dtype::BF16 {
                Encoding::Bf16
            } else {
                Encoding::F32
            };
            Ok((enc, None))
        }
        Dtype::F8_E4M3 => {
            expect_shape(w, &[rows, cols], "FP8 weight")?;
            let s = scale()?;
            if !matches!(s.dtype, Dtype::F8_E8M0 | Dtype::U8) {
                return Err(scale_dtype_error(src, s, "F8_E8M0"));
            }
            // The block edge follows from the scale grid (128 in every official checkpoint).
            let block = FP8_BLOCK;
            expect_shape(
                s,
                &[rows.div_ceil(block), cols.div_ceil(block)],
                "FP8 block scale (128x128 blocks)",
            )?;
            Ok((Encoding::Fp8 { block }, Some(s.clone())))
        }
        Dtype::I8 | Dtype::U8 => {
            if !cols.is_multiple_of(2) {
                return Err(bad(format!("4-bit weight with odd input width {cols}")));
            }
            expect_shape(w, &[rows, cols / 2], "packed 4-bit weight")?;
            let s = scale()?;
            let groups = s.shape.get(1).copied().unwrap_or(0);
            if s.shape.len() != 2
                || s.shape[0] != rows
                || groups == 0
                || !cols.is_multiple_of(groups)
            {
                let path = src.shard_path(s).to_path_buf();
                return Err(ConvertError::Tensor {
                    path,
                    tensor: s.name.clone(),
                    message: format!(
                        "group scale: expected shape [{rows}, {cols}/group], found {:?}",
                        s.shape
                    ),
                });
            }
            let group = cols / groups;
            match s.dtype {
                Dtype::F8_E8M0 | Dtype::U8 => Ok((Encoding::Fp4 { group }, Some(s.clone()))),
                Dtype::BF16 => Ok((Encoding::Int4 { group }, Some(s.clone()))),
                _ => Err(scale_dtype_error(
                    src,
                    s,
                    "F8_E8M0 (FP4 experts) or BF16 (INT4 experts)",
                )),
            }
        }
        other => Err(bad(format!(
            "unsupported dtype {} (expected BF16, F32, F8_E4M3 + scale, or I8 4-bit + scale)",
            dtype_name(other)
        ))),
    }
}

fn scale_dtype_error(src: &SourceCheckpoint, s: &SourceTensor, expected: &str) -> ConvertError {
    ConvertError::Tensor {
        path: src.shard_path(s).to_path_buf(),
        tensor: s.name.clone(),
        message: format!(
            "expected scale dtype {expected}, found {}",
            dtype_name(s.dtype)
        ),
    }
}
