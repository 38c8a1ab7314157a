//! Weight matrices as the CPU forward pass consumes them, and their loading from any of the
//! checkpoint formats (BF16, F32, FP8 E4M3 with E8M0 128x128 block scales, FP4 E2M1 with
//! E8M0 per-32 scales).
//!
//! Every tensor stays in the memory map and the kernels compute on it directly: BF16 as is,
//! FP8 and FP4 decoded inside the matmul (bit-identical to multiplying by the dequantized
//! matrix, which BF16 represents exactly). `LoadOptions::dequantize` instead expands FP8/FP4
//! to BF16 once at load (twice/four times the memory, the reference for tests).
//!
//! [`ActivationMode::Int8`] (opt-in, `Model::load_with_mode`) switches the quantized matrices to
//! the kernels' fast mode (`v4_kernels::matmul::ComputeMode::Int8Activations`): INT4/FP4 experts
//! multiply int8-quantized activations (per block of 32) with integer dot products, FP8 linears
//! decode each weight once per batch. Not exact, still deterministic and batch-independent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use safetensors::Dtype;
use v4_kernels::bf16::{bf16_to_f32, f32_to_bf16};
use v4_kernels::matmul::{ComputeMode, WeightsRef, matmul_mode};
use v4_kernels::quant::{
    dequant_fp4_groups, dequant_fp8_blocks, dequant_int4_groups, e2m1_to_f32, e4m3_to_f32,
    e8m0_to_f32, int4_value,
};

use crate::loader::{Checkpoint, LoadError, TensorView};

/// Bytes of weights streamed by every matmul since start (benchmarks read the difference
/// across a decode step to report the weight bytes one step actually reads).
static WEIGHT_BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Total weight bytes read by [`Weight::forward_into`] so far.
pub fn weight_bytes_read() -> u64 {
    WEIGHT_BYTES_READ.load(Ordering::Relaxed)
}

/// Row-major BF16 storage: borrowed from the checkpoint mapping or owned.
pub enum Bf16Data {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<u16>),
}

impl Bf16Data {
    pub fn as_slice(&self) -> &[u16] {
        match self {
            Bf16Data::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + *len * 2];
                // SAFETY: `from_view` only builds `Mapped` when the data is 2-aligned; u16 has
                // no invalid bit patterns; the host is little-endian (checked at compile time).
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const u16, *len) }
            }
            Bf16Data::Owned(v) => v,
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("the CPU engine reads safetensors data in place and needs a little-endian host");

/// Raw bytes borrowed from the checkpoint mapping.
pub struct MappedBytes {
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
}

impl MappedBytes {
    fn from_view(t: &TensorView<'_>) -> Self {
        let (map, offset) = t.mapping();
        Self {
            map,
            offset,
            len: t.bytes.len(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }
}

/// A `[rows, cols]` weight matrix (`rows` = output features, `cols` = input features).
pub struct Weight {
    pub rows: usize,
    pub cols: usize,
    data: WeightData,
    mode: ComputeMode,
}

enum WeightData {
    Bf16(Bf16Data),
    F32(Vec<f32>),
    /// E4M3 codes `[rows, cols]` + E8M0 scales per `block x block` tile.
    Fp8 {
        w: MappedBytes,
        scale: MappedBytes,
        block: usize,
    },
    /// E2M1 nibbles `[rows, cols/2]` + E8M0 scales per `group` columns of a row.
    Fp4 {
        w: MappedBytes,
        scale: MappedBytes,
        group: usize,
    },
    /// Signed int4 nibbles `[rows, cols/2]` + BF16 scales per `group` columns of a row
    /// (v4convert's INT4 experts, `docs/FORMATS.md`).
    Int4 {
        w: MappedBytes,
        scale: Bf16Data,
        group: usize,
    },
}

/// How the kernels compute on quantized (FP8/FP4/INT4) weights; BF16/F32 are always exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ActivationMode {
    /// Bit-identical to BF16 on the dequantized weights (the golden tests' mode).
    #[default]
    Exact,
    /// Int8 activations per block of 32 for INT4/FP4 (integer dot products); FP8 with f32
    /// activations, each weight decoded once per batch. See `docs/FORMATS.md`.
    Int8,
}

impl ActivationMode {
    fn compute_mode(self) -> ComputeMode {
        match self {
            ActivationMode::Exact => ComputeMode::Exact,
            ActivationMode::Int8 => ComputeMode::Int8Activations,
        }
    }
}

/// How quantized tensors are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Expand FP8/FP4 weights to BF16 at load instead of computing on them directly.
    pub dequantize: bool,
}

impl Weight {
    fn new(rows: usize, cols: usize, data: WeightData) -> Self {
        Self {
            rows,
            cols,
            data,
            mode: ComputeMode::Exact,
        }
    }

    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols);
        Self::new(rows, cols, WeightData::F32(data))
    }

    /// The compute mode of [`Weight::forward_into`] (always `Exact` for BF16/F32 storage).
    pub fn activation_mode(&self) -> ActivationMode {
        match self.mode {
            ComputeMode::Exact => ActivationMode::Exact,
            ComputeMode::Int8Activations => ActivationMode::Int8,
        }
    }

    pub fn kernel_ref(&self) -> WeightsRef<'_> {
        match &self.data {
            WeightData::Bf16(d) => WeightsRef::Bf16(d.as_slice()),
            WeightData::F32(d) => WeightsRef::F32(d),
            WeightData::Fp8 { w, scale, block } => WeightsRef::Fp8 {
                w: w.as_slice(),
                scale: scale.as_slice(),
                block: *block,
            },
            WeightData::Fp4 { w, scale, group } => WeightsRef::Fp4 {
                w: w.as_slice(),
                scale: scale.as_slice(),
                group: *group,
            },
            WeightData::Int4 { w, scale, group } => WeightsRef::Int4 {
                w: w.as_slice(),
                scale: scale.as_slice(),
                group: *group,
            },
        }
    }

    /// Storage format name (`bf16`, `f32`, `fp8`, `fp4`, `int4`).
    pub fn format(&self) -> &'static str {
        match &self.data {
            WeightData::Bf16(_) => "bf16",
            WeightData::F32(_) => "f32",
            WeightData::Fp8 { .. } => "fp8",
            WeightData::Fp4 { .. } => "fp4",
            WeightData::Int4 { .. } => "int4",
        }
    }

    /// Bytes read by one pass over the matrix (what a decode step streams from memory).
    pub fn bytes(&self) -> usize {
        match &self.data {
            WeightData::Bf16(_) => self.rows * self.cols * 2,
            WeightData::F32(_) => self.rows * self.cols * 4,
            WeightData::Fp8 { w, scale, .. } | WeightData::Fp4 { w, scale, .. } => {
                w.len + scale.len
            }
            WeightData::Int4 { w, scale, .. } => w.len + scale.as_slice().len() * 2,
        }
    }

    /// `y[r, :] = W · x[r, :]` for `rows_in` input rows of width `cols`.
    pub fn forward(&self, x: &[f32], rows_in: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows_in * self.rows];
        self.forward_into(x, rows_in, &mut y);
        y
    }

    pub fn forward_into(&self, x: &[f32], rows_in: usize, y: &mut [f32]) {
        WEIGHT_BYTES_READ.fetch_add(self.bytes() as u64, Ordering::Relaxed);
        let (w, mode) = (self.kernel_ref(), self.mode);
        matmul_mode(mode, x, rows_in, self.cols, w, self.rows, y);
    }

    /// A sub-matrix of rows `[r0, r0 + n)` as an owned copy (BF16 for quantized formats;
    /// used for the grouped `wo_a`).
    pub fn row_block(&self, r0: usize, n: usize) -> Weight {
        let c = self.cols;
        let data = match &self.data {
            WeightData::F32(d) => WeightData::F32(d[r0 * c..(r0 + n) * c].to_vec()),
            WeightData::Bf16(d) => {
                WeightData::Bf16(Bf16Data::Owned(d.as_slice()[r0 * c..(r0 + n) * c].to_vec()))
            }
            _ => {
                let mut rows = vec![0u16; n * c];
                let mut row = vec![0f32; c];
                for (i, out) in rows.chunks_exact_mut(c).enumerate() {
                    self.row_f32(r0 + i, &mut row);
                    out.iter_mut()
                        .zip(&row)
                        .for_each(|(o, &v)| *o = f32_to_bf16(v));
                }
                WeightData::Bf16(Bf16Data::Owned(rows))
            }
        };
        Weight::new(n, c, data)
    }

    /// One row as f32 (embedding lookup, row blocks).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match &self.data {
            WeightData::Bf16(d) => {
                for (o, &b) in out.iter_mut().zip(&d.as_slice()[r * c..(r + 1) * c]) {
                    *o = bf16_to_f32(b);
                }
            }
            WeightData::F32(d) => out.copy_from_slice(&d[r * c..(r + 1) * c]),
            WeightData::Fp8 { w, scale, block } => {
                let (w, scale) = (w.as_slice(), scale.as_slice());
                let srow = &scale[(r / block) * c.div_ceil(*block)..];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = e4m3_to_f32(w[r * c + i]) * e8m0_to_f32(srow[i / block]);
                }
            }
            WeightData::Fp4 { w, scale, group } => {
                let (w, scale) = (w.as_slice(), scale.as_slice());
                let srow = &scale[r * c.div_ceil(*group)..];
                for (i, o) in out.iter_mut().enumerate() {
                    let byte = w[r * c / 2 + i / 2];
                    let nibble = if i % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                    *o = e2m1_to_f32(nibble) * e8m0_to_f32(srow[i / group]);
                }
            }
            WeightData::Int4 { w, scale, group } => {
                let (w, scale) = (w.as_slice(), scale.as_slice());
                let srow = &scale[r * c.div_ceil(*group)..];
                for (i, o) in out.iter_mut().enumerate() {
                    let byte = w[r * c / 2 + i / 2];
                    let nibble = if i % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                    *o = int4_value(nibble) as f32 * bf16_to_f32(srow[i / group]);
                }
            }
        }
    }
}

/// Loads weights by official name from a checkpoint, checking dtype and shape.
pub struct WeightLoader<'a> {
    pub ckpt: &'a Checkpoint,
    /// FP8 block size `(rows, cols)` from `quantization_config.weight_block_size`.
    pub fp8_block: (usize, usize),
    pub opts: LoadOptions,
    /// Compute mode given to the quantized matrices of [`WeightLoader::matrix`].
    pub activations: ActivationMode,
}

impl<'a> WeightLoader<'a> {
    /// A linear weight `name` (e.g. `layers.0.attn.wq_a.weight`) of shape `[rows, cols]`, in
    /// BF16, F32, FP8 (+ `.scale`) or FP4-packed I8 (+ `.scale`) form.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, LoadError> {
        let mut w = self.load_matrix(name, rows, cols, self.opts.dequantize)?;
        if !matches!(w.data, WeightData::Bf16(_) | WeightData::F32(_)) {
            w.mode = self.activations.compute_mode();
        }
        Ok(w)
    }

    /// Like [`WeightLoader::matrix`] but always expanded to BF16 (the official converter does
    /// this for `wo_a`, whose grouped product slices rows inside FP8 scale tiles).
    pub fn matrix_bf16(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, LoadError> {
        self.load_matrix(name, rows, cols, true)
    }

    fn load_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        dequantize: bool,
    ) -> Result<Weight, LoadError> {
        let t = self.ckpt.get(name)?;
        match t.dtype {
            Dtype::BF16 => {
                t.expect_shape(&[rows, cols])?;
                Ok(Weight::new(
                    rows,
                    cols,
                    WeightData::Bf16(bf16_from_view(&t)),
                ))
            }
            Dtype::F32 => {
                t.expect_shape(&[rows, cols])?;
                Ok(Weight::from_f32(rows, cols, f32_from_bytes(t.bytes)))
            }
            Dtype::F8_E4M3 => {
                t.expect_shape(&[rows, cols])?;
                let (br, bc) = self.fp8_block;
                let scale = self.scale_for(name, &[rows.div_ceil(br), cols.div_ceil(bc)])?;
                if br != bc {
                    return Err(t_value(&t, "non-square FP8 blocks are not supported"));
                }
                if !dequantize {
                    let data = WeightData::Fp8 {
                        w: MappedBytes::from_view(&t),
                        scale: MappedBytes::from_view(&scale),
                        block: br,
                    };
                    let wt = Weight::new(rows, cols, data);
                    check_scales(&t, &wt)?;
                    return Ok(wt);
                }
                let mut f = vec![0f32; rows * cols];
                dequant_fp8_blocks(t.bytes, scale.bytes, rows, cols, br, &mut f);
                check_finite(&t, &f)?;
                Ok(Weight::new(
                    rows,
                    cols,
                    WeightData::Bf16(Bf16Data::Owned(to_bf16(&f))),
                ))
            }
            Dtype::I8 | Dtype::U8 => {
                // 4-bit codes, two per byte along the input dimension, low nibble first: FP4
                // E2M1 with E8M0 group scales (official), or INT4 with BF16 group scales (ours).
                // The scale's dtype tells which; its width gives the group length.
                if !cols.is_multiple_of(2) {
                    return Err(t_value(&t, "4-bit weights need an even input width"));
                }
                t.expect_shape(&[rows, cols / 2])?;
                let scale = self.group_scale_for(name, rows, cols)?;
                let groups = scale.shape.get(1).copied().unwrap_or(0);
                if groups == 0 || !cols.is_multiple_of(groups) {
                    return Err(t_value(
                        &scale,
                        &format!("scale width {groups} does not divide the input width {cols}"),
                    ));
                }
                let group = cols / groups;
                let int4 = scale.dtype == Dtype::BF16;
                if !int4 && group != 32 {
                    return Err(t_value(
                        &scale,
                        &format!("FP4 scales must cover groups of 32 columns, found {group}"),
                    ));
                }
                if !dequantize {
                    let data = if int4 {
                        WeightData::Int4 {
                            w: MappedBytes::from_view(&t),
                            scale: bf16_from_view(&scale),
                            group,
                        }
                    } else {
                        WeightData::Fp4 {
                            w: MappedBytes::from_view(&t),
                            scale: MappedBytes::from_view(&scale),
                            group,
                        }
                    };
                    let wt = Weight::new(rows, cols, data);
                    check_scales(&scale, &wt)?;
                    return Ok(wt);
                }
                let mut f = vec![0f32; rows * cols];
                if int4 {
                    // A code times a BF16 scale needs up to 12 significant bits: expand to F32
                    // (exact), not BF16.
                    let s16: Vec<u16> = scale
                        .bytes
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    dequant_int4_groups(t.bytes, &s16, rows, cols, group, &mut f);
                    check_finite(&t, &f)?;
                    return Ok(Weight::from_f32(rows, cols, f));
                } else {
                    dequant_fp4_groups(t.bytes, scale.bytes, rows, cols, group, &mut f);
                }
                check_finite(&t, &f)?;
                Ok(Weight::new(
                    rows,
                    cols,
                    WeightData::Bf16(Bf16Data::Owned(to_bf16(&f))),
                ))
            }
            _ => Err(t.dtype_error("BF16, F32, F8_E4M3 (+ .scale) or I8 FP4/INT4 (+ .scale)")),
        }
    }

    /// The E8M0 scale tensor that goes with `weight_name` (`X.scale`, or HF's `X.weight_scale_inv`).
    fn scale_for(&self, weight_name: &str, shape: &[usize]) -> Result<TensorView<'a>, LoadError> {
        let stem = weight_name.strip_suffix(".weight").unwrap_or(weight_name);
        let primary = format!("{stem}.scale");
        let alt = format!("{stem}.weight_scale_inv");
        let t = if self.ckpt.contains(&primary) || !self.ckpt.contains(&alt) {
            self.ckpt.get(&primary)?
        } else {
            self.ckpt.get(&alt)?
        };
        if t.dtype != Dtype::F8_E8M0 && t.dtype != Dtype::U8 {
            return Err(t.dtype_error("F8_E8M0"));
        }
        t.expect_shape(shape)?;
        Ok(t)
    }

    /// The group-scale tensor of a 4-bit weight: `[rows, groups]`, E8M0 (FP4) or BF16 (INT4).
    fn group_scale_for(
        &self,
        weight_name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<TensorView<'a>, LoadError> {
        let stem = weight_name.strip_suffix(".weight").unwrap_or(weight_name);
        let (primary, alt) = (format!("{stem}.scale"), format!("{stem}.weight_scale_inv"));
        let t = if self.ckpt.contains(&primary) || !self.ckpt.contains(&alt) {
            self.ckpt.get(&primary)?
        } else {
            self.ckpt.get(&alt)?
        };
        if !matches!(t.dtype, Dtype::F8_E8M0 | Dtype::U8 | Dtype::BF16) {
            return Err(t.dtype_error("F8_E8M0 (FP4) or BF16 (INT4)"));
        }
        if t.shape.len() != 2 || t.shape[0] != rows {
            return Err(LoadError::Shape {
                name: t.name.to_string(),
                file: t.file.to_path_buf(),
                expected: vec![rows, cols / 32],
                found: t.shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// A small f32 parameter (norm weights, hc_*, sinks, ape, biases) stored as F32 or BF16.
    pub fn vector(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let t = self.ckpt.get(name)?;
        t.expect_shape(shape)?;
        let v = match t.dtype {
            Dtype::F32 => f32_from_bytes(t.bytes),
            Dtype::BF16 => t
                .bytes
                .chunks_exact(2)
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => return Err(t.dtype_error("F32 or BF16")),
        };
        check_finite(&t, &v)?;
        Ok(v)
    }

    /// `tid2eid`: `[vocab, k]` expert ids (I64 in the checkpoints, I32 in the official module).
    pub fn expert_table(
        &self,
        name: &str,
        shape: &[usize],
        n_experts: usize,
    ) -> Result<Vec<u32>, LoadError> {
        let t = self.ckpt.get(name)?;
        t.expect_shape(shape)?;
        let ids: Vec<i64> = match t.dtype {
            Dtype::I64 => t
                .bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => t
                .bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
            _ => return Err(t.dtype_error("I64 or I32")),
        };
        ids.iter()
            .map(|&e| {
                if e < 0 || e as usize >= n_experts {
                    Err(t_value(
                        &t,
                        &format!("expert id {e} out of range 0..{n_experts}"),
                    ))
                } else {
                    Ok(e as u32)
                }
            })
            .collect()
    }
}

fn t_value(t: &TensorView<'_>, message: &str) -> LoadError {
    LoadError::Value {
        name: t.name.to_string(),
        file: t.file.to_path_buf(),
        message: message.to_string(),
    }
}

fn check_finite(t: &TensorView<'_>, v: &[f32]) -> Result<(), LoadError> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(t_value(t, &format!("non-finite value at flat index {i}"))),
    }
}

/// Quantized weights are checked through their scales (E8M0 byte 255 is NaN). The FP8 codes
/// themselves are not scanned: that would read the whole model at load; a NaN code shows up
/// as NaN logits instead.
fn check_scales(t: &TensorView<'_>, w: &Weight) -> Result<(), LoadError> {
    match &w.data {
        WeightData::Fp8 { scale, .. } | WeightData::Fp4 { scale, .. }
            if scale.as_slice().contains(&255) =>
        {
            Err(t_value(t, "NaN E8M0 scale (255)"))
        }
        WeightData::Int4 { scale, .. } => match scale
            .as_slice()
            .iter()
            .position(|&b| !bf16_to_f32(b).is_finite())
        {
            Some(i) => Err(t_value(
                t,
                &format!("non-finite BF16 scale at flat index {i}"),
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn bf16_from_view(t: &TensorView<'_>) -> Bf16Data {
    let (map, offset) = t.mapping();
    if offset % 2 == 0 {
        Bf16Data::Mapped {
            map,
            offset,
            len: t.numel(),
        }
    } else {
        Bf16Data::Owned(
            t.bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )
    }
}

fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

fn to_bf16(f: &[f32]) -> Vec<u16> {
    f.iter().map(|&x| f32_to_bf16(x)).collect()
}
