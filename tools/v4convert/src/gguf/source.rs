//! Source tensors of a checkpoint: what storage format each one uses (resolved and validated at
//! planning time, before any output exists) and decoding row ranges of them to f32.
//!
//! Formats (layouts in `docs/FORMATS.md`): F32, BF16, F16; FP8 E4M3 + E8M0 `.scale` per square
//! block; FP4 E2M1 (`I8`/`U8` packed nibbles) + E8M0 `.scale` per group; our INT4 (`I8` packed
//! nibbles) + BF16 `.scale` per group; I64/I32 integer tables.

use std::path::PathBuf;

use safetensors::Dtype;
use v4_engine::loader::{Checkpoint, TensorView, dtype_name};
use v4_kernels::bf16::bf16_to_f32;
use v4_kernels::quant::{dequant_fp4_groups, dequant_fp8_blocks, dequant_int4_groups};

use super::GgufError;
use super::quants::f16_to_f32;

/// Storage format of one source matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    F32,
    Bf16,
    F16,
    /// FP8 E4M3 with one E8M0 scale per `block x block` tile.
    Fp8 {
        block: usize,
    },
    /// FP4 E2M1 nibbles with one E8M0 scale per `group` columns.
    Fp4 {
        group: usize,
    },
    /// Our INT4 nibbles with one BF16 scale per `group` columns.
    Int4 {
        group: usize,
    },
    /// Integer table (I64 or I32), converted to I32.
    Int,
}

impl SourceKind {
    pub(crate) fn describe(self) -> String {
        match self {
            SourceKind::F32 => "F32".into(),
            SourceKind::Bf16 => "BF16".into(),
            SourceKind::F16 => "F16".into(),
            SourceKind::Fp8 { block } => format!("FP8 E4M3 ({block}x{block} E8M0 blocks)"),
            SourceKind::Fp4 { group } => format!("FP4 E2M1 (E8M0 groups of {group})"),
            SourceKind::Int4 { group } => format!("INT4 (BF16 groups of {group})"),
            SourceKind::Int => "integer".into(),
        }
    }
}

/// A validated source matrix `[rows, cols]` (a vector is one row).
#[derive(Debug, Clone)]
pub(crate) struct SourceSpec {
    /// Checkpoint name of the weight.
    pub name: String,
    /// Checkpoint name of its scale tensor, if any.
    pub scale: Option<String>,
    pub kind: SourceKind,
    pub rows: usize,
    pub cols: usize,
    /// Shard holding the weight (for error messages).
    pub file: PathBuf,
}

/// The `.scale` companion of weight `name` (`X.weight` → `X.scale`).
pub(crate) fn scale_name(name: &str) -> String {
    format!("{}.scale", name.strip_suffix(".weight").unwrap_or(name))
}

fn dtype_err(v: &TensorView<'_>, expected: &str) -> GgufError {
    GgufError::SourceDtype {
        file: v.file.to_path_buf(),
        tensor: v.name.to_string(),
        expected: expected.to_string(),
        found: dtype_name(v.dtype).to_string(),
    }
}

fn shape_err(v: &TensorView<'_>, expected: Vec<usize>) -> GgufError {
    GgufError::SourceShape {
        file: v.file.to_path_buf(),
        tensor: v.name.to_string(),
        expected,
        found: v.shape.to_vec(),
    }
}

/// Resolves the format of source tensor `name` whose logical shape (the `[out, in]` matrix, or a
/// vector) is `logical`, and checks dtypes and shapes of it and its scale. `fp8_block` is the
/// checkpoint's FP8 block edge; `int_table` marks the expert-id table (`tid2eid`).
pub(crate) fn classify(
    ckpt: &Checkpoint,
    name: &str,
    logical: &[usize],
    fp8_block: usize,
    int_table: bool,
) -> Result<SourceSpec, GgufError> {
    let v = ckpt.get(name).map_err(|_| GgufError::MissingTensor {
        file: index_file(ckpt),
        tensor: name.to_string(),
        needed_by: None,
    })?;
    let (rows, cols) = match *logical {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => return Err(shape_err(&v, logical.to_vec())),
    };
    let spec = |kind, scale: Option<String>| SourceSpec {
        name: name.to_string(),
        scale,
        kind,
        rows,
        cols,
        file: v.file.to_path_buf(),
    };
    if int_table {
        if !matches!(v.dtype, Dtype::I64 | Dtype::I32) {
            return Err(dtype_err(&v, "I64 or I32"));
        }
        if v.shape != logical {
            return Err(shape_err(&v, logical.to_vec()));
        }
        return Ok(spec(SourceKind::Int, None));
    }
    let plain = match v.dtype {
        Dtype::F32 => Some(SourceKind::F32),
        Dtype::BF16 => Some(SourceKind::Bf16),
        Dtype::F16 => Some(SourceKind::F16),
        _ => None,
    };
    if let Some(kind) = plain {
        if v.shape != logical {
            return Err(shape_err(&v, logical.to_vec()));
        }
        return Ok(spec(kind, None));
    }
    if logical.len() != 2 {
        return Err(dtype_err(&v, "F32, BF16 or F16"));
    }
    let quantized = matches!(v.dtype, Dtype::F8_E4M3 | Dtype::I8 | Dtype::U8);
    if !quantized {
        return Err(dtype_err(
            &v,
            "F32, BF16, F16, F8_E4M3 (+ E8M0 scale) or I8 (FP4 + E8M0 / INT4 + BF16 scale)",
        ));
    }
    let sname = scale_name(name);
    let s = ckpt.get(&sname).map_err(|_| GgufError::MissingTensor {
        file: v.file.to_path_buf(),
        tensor: sname.clone(),
        needed_by: Some(format!("{name} ({})", dtype_name(v.dtype))),
    })?;
    if v.dtype == Dtype::F8_E4M3 {
        if v.shape != logical {
            return Err(shape_err(&v, logical.to_vec()));
        }
        if s.dtype != Dtype::F8_E8M0 {
            return Err(dtype_err(&s, "F8_E8M0"));
        }
        let want = vec![rows.div_ceil(fp8_block), cols.div_ceil(fp8_block)];
        if s.shape != want.as_slice() {
            return Err(shape_err(&s, want));
        }
        return Ok(spec(SourceKind::Fp8 { block: fp8_block }, Some(sname)));
    }
    // Packed nibbles: FP4 (E8M0 scales) or INT4 (BF16 scales).
    if !cols.is_multiple_of(2) || v.shape != [rows, cols / 2] {
        return Err(shape_err(&v, vec![rows, cols / 2]));
    }
    let groups = match s.shape {
        [r, g] if *r == rows && *g > 0 && cols.is_multiple_of(*g) => *g,
        _ => {
            return Err(GgufError::SourceValue {
                file: s.file.to_path_buf(),
                tensor: sname,
                message: format!(
                    "scale shape {:?} does not fit a [{rows}, {cols}] matrix (expected [{rows}, \
                     groups] with groups dividing {cols})",
                    s.shape
                ),
            });
        }
    };
    let group = cols / groups;
    let kind = match s.dtype {
        Dtype::F8_E8M0 => SourceKind::Fp4 { group },
        Dtype::BF16 if group.is_multiple_of(2) => SourceKind::Int4 { group },
        Dtype::BF16 => {
            return Err(GgufError::SourceValue {
                file: s.file.to_path_buf(),
                tensor: sname,
                message: format!("INT4 group size {group} must be even"),
            });
        }
        _ => return Err(dtype_err(&s, "F8_E8M0 (FP4) or BF16 (INT4)")),
    };
    Ok(spec(kind, Some(sname)))
}

/// The file to name when a tensor is missing altogether.
pub(crate) fn index_file(ckpt: &Checkpoint) -> PathBuf {
    let index = ckpt.dir().join("model.safetensors.index.json");
    if index.is_file() {
        index
    } else {
        ckpt.dir().join("model.safetensors")
    }
}

impl SourceSpec {
    /// Rows per decoding chunk: about `target` elements, a multiple of the FP8 block.
    pub(crate) fn chunk_rows(&self, target: usize) -> usize {
        let rows = (target / self.cols.max(1)).clamp(1, self.rows.max(1));
        match self.kind {
            SourceKind::Fp8 { block } => (rows / block).max(1) * block,
            _ => rows,
        }
    }

    /// Stored bytes per row of the weight.
    fn row_bytes(&self) -> usize {
        match self.kind {
            SourceKind::F32 => 4 * self.cols,
            SourceKind::Bf16 | SourceKind::F16 => 2 * self.cols,
            SourceKind::Fp8 { .. } => self.cols,
            SourceKind::Fp4 { .. } | SourceKind::Int4 { .. } => self.cols / 2,
            SourceKind::Int => 0,
        }
    }

    /// The stored weight bytes of rows `r0..r1`.
    pub(crate) fn raw_rows<'a>(&self, v: &TensorView<'a>, r0: usize, r1: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &v.bytes[r0 * rb..r1 * rb]
    }

    /// The scale bytes covering rows `r0..r1` (per-row scales only: FP4 and INT4).
    pub(crate) fn raw_scale_rows<'a>(&self, s: &TensorView<'a>, r0: usize, r1: usize) -> &'a [u8] {
        let per_row = match self.kind {
            SourceKind::Fp4 { group } => self.cols / group,
            SourceKind::Int4 { group } => 2 * (self.cols / group),
            _ => 0,
        };
        &s.bytes[r0 * per_row..r1 * per_row]
    }

    /// Decodes rows `r0..r1` to f32 into `out` (`(r1 - r0) * cols` values). For FP8, `r0` must
    /// be a multiple of the block (see [`SourceSpec::chunk_rows`]).
    pub(crate) fn decode_rows(
        &self,
        ckpt: &Checkpoint,
        r0: usize,
        r1: usize,
        out: &mut [f32],
    ) -> Result<(), GgufError> {
        let v = ckpt.get(&self.name)?;
        let n = r1 - r0;
        let w = self.raw_rows(&v, r0, r1);
        match self.kind {
            SourceKind::F32 => {
                for (o, b) in out.iter_mut().zip(w.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            SourceKind::Bf16 => {
                for (o, b) in out.iter_mut().zip(w.chunks_exact(2)) {
                    *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            SourceKind::F16 => {
                for (o, b) in out.iter_mut().zip(w.chunks_exact(2)) {
                    *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            SourceKind::Fp8 { block } => {
                let s = self.scale_view(ckpt)?;
                let cb = self.cols.div_ceil(block);
                let sr0 = r0 / block;
                let sr1 = r1.div_ceil(block);
                let scale = &s.bytes[sr0 * cb..sr1 * cb];
                dequant_fp8_blocks(w, scale, n, self.cols, block, out);
            }
            SourceKind::Fp4 { group } => {
                let s = self.scale_view(ckpt)?;
                let scale = self.raw_scale_rows(&s, r0, r1);
                dequant_fp4_groups(w, scale, n, self.cols, group, out);
            }
            SourceKind::Int4 { group } => {
                let s = self.scale_view(ckpt)?;
                let scale: Vec<u16> = self
                    .raw_scale_rows(&s, r0, r1)
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                dequant_int4_groups(w, &scale, n, self.cols, group, out);
            }
            SourceKind::Int => {
                return Err(GgufError::SourceValue {
                    file: self.file.clone(),
                    tensor: self.name.clone(),
                    message: "an integer table cannot be converted to floating point".into(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn scale_view<'a>(&self, ckpt: &'a Checkpoint) -> Result<TensorView<'a>, GgufError> {
        let name = self.scale.as_deref().unwrap_or_default();
        Ok(ckpt.get(name)?)
    }

    /// The integer table as I32 little-endian bytes; every value must lie in `0..limit`.
    pub(crate) fn int_table_i32(
        &self,
        ckpt: &Checkpoint,
        limit: u64,
    ) -> Result<Vec<u8>, GgufError> {
        let v = ckpt.get(&self.name)?;
        let values: Vec<i64> = match v.dtype {
            Dtype::I64 => v
                .bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            _ => v
                .bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        };
        let mut out = Vec::with_capacity(values.len() * 4);
        for (i, &x) in values.iter().enumerate() {
            if x < 0 || x as u64 >= limit {
                return Err(GgufError::SourceValue {
                    file: self.file.clone(),
                    tensor: self.name.clone(),
                    message: format!("element {i} is {x}, not an expert id (0..{limit})"),
                });
            }
            out.extend_from_slice(&(x as i32).to_le_bytes());
        }
        Ok(out)
    }
}
