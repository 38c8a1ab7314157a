//! Converting one tensor: row blocks are read from the source, decoded to f32, encoded to the
//! target and handed to the writer in order, so memory holds a bounded number of row blocks
//! whatever the tensor's size. Blocks of one batch are converted in parallel (rayon); the writer
//! consumes them sequentially.
//!
//! Every quantizing conversion decodes its own output again and compares it with the f32 input,
//! so the report can say exactly which conversions were lossless (FP8 copies, FP4 → FP8) and how
//! large the error of the lossy ones (→ INT4, BF16 → FP8) is.

use rayon::prelude::*;
use v4_kernels::bf16::{bf16_to_f32, f32_to_bf16};
use v4_kernels::quant::{
    dequant_fp4_groups, dequant_fp8_blocks, dequant_int4_groups, quant_fp4_groups,
    quant_fp8_blocks, quant_int4_groups,
};

use crate::error::ConvertError;
use crate::plan::{Encoding, TensorPlan};
use crate::source::SourceCheckpoint;

/// Elements per row block (before rounding to the 128-row tile): 4 MiB of f32.
const BLOCK_ELEMS: usize = 1 << 20;
/// Most row blocks in flight at once. A block costs at most ~14 bytes per element (source
/// bytes, f32 values, encoded bytes, f32 round trip), so the conversion's working set stays
/// under `MAX_BATCH * 14 MiB` (~450 MiB) on any machine, and ~2 * threads * 14 MiB below that.
const MAX_BATCH: usize = 32;
/// Bytes per chunk when copying a tensor unchanged.
const COPY_CHUNK: usize = 16 << 20;

/// Error statistics of one converted tensor (or a sum over many).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorStats {
    pub elements: u64,
    /// Elements whose decoded output differs from the input.
    pub changed: u64,
    pub max_abs_err: f32,
    /// Largest |input| seen (to put `max_abs_err` in proportion).
    pub max_abs: f32,
    pub sum_sq_err: f64,
    pub sum_sq: f64,
}

impl ErrorStats {
    pub fn merge(&mut self, o: &ErrorStats) {
        self.elements += o.elements;
        self.changed += o.changed;
        self.max_abs_err = self.max_abs_err.max(o.max_abs_err);
        self.max_abs = self.max_abs.max(o.max_abs);
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq += o.sum_sq;
    }

    pub fn lossless(&self) -> bool {
        self.changed == 0
    }

    /// Root-mean-square error relative to the root-mean-square of the input.
    pub fn rel_rms(&self) -> f64 {
        if self.sum_sq > 0.0 {
            (self.sum_sq_err / self.sum_sq).sqrt()
        } else {
            0.0
        }
    }

    fn compare(input: &[f32], output: &[f32]) -> Self {
        let mut s = ErrorStats {
            elements: input.len() as u64,
            ..Default::default()
        };
        for (&a, &b) in input.iter().zip(output) {
            let d = (a - b).abs();
            if a.to_bits() != b.to_bits() && !(a == 0.0 && b == 0.0) {
                s.changed += 1;
            }
            s.max_abs_err = s.max_abs_err.max(d);
            s.max_abs = s.max_abs.max(a.abs());
            s.sum_sq_err += (d as f64) * (d as f64);
            s.sum_sq += (a as f64) * (a as f64);
        }
        s
    }
}

/// One converted row block: weight bytes, scale bytes, round-trip error.
type Block = (Vec<u8>, Vec<u8>, ErrorStats);

/// Receives a converted tensor in order: weight bytes in chunks, then the whole scale tensor.
pub trait TensorSink {
    fn weight_chunk(&mut self, bytes: &[u8]) -> Result<(), ConvertError>;
    fn scale(&mut self, bytes: &[u8]) -> Result<(), ConvertError>;
}

/// Converts `t`, streaming its output into `sink`. Returns the error statistics (all zero for
/// copies, which are lossless by construction).
pub fn convert_tensor(
    src: &SourceCheckpoint,
    t: &TensorPlan,
    sink: &mut dyn TensorSink,
) -> Result<ErrorStats, ConvertError> {
    if t.is_copy() {
        copy_tensor(src, t, sink)?;
        return Ok(ErrorStats {
            elements: (t.rows * t.cols) as u64,
            ..Default::default()
        });
    }
    let rows_per_block = rows_per_block(t.rows, t.cols);
    let blocks: Vec<(usize, usize)> = (0..t.rows)
        .step_by(rows_per_block.max(1))
        .map(|r0| (r0, (r0 + rows_per_block).min(t.rows)))
        .collect();
    let batch = (rayon::current_num_threads() * 2).clamp(2, MAX_BATCH);
    let mut scales = Vec::new();
    let mut stats = ErrorStats::default();
    for chunk in blocks.chunks(batch) {
        let done: Vec<Result<Block, ConvertError>> = chunk
            .par_iter()
            .map(|&(r0, r1)| {
                let f = decode_rows(src, t, r0, r1)?;
                Ok(encode_rows(&f, r1 - r0, t.cols, t.dst_enc))
            })
            .collect();
        for d in done {
            let (w, s, st) = d?;
            sink.weight_chunk(&w)?;
            scales.extend_from_slice(&s);
            stats.merge(&st);
        }
    }
    if t.dst_enc.has_scale() {
        sink.scale(&scales)?;
    }
    Ok(stats)
}

/// Rows per block: a multiple of the 128-row FP8 tile (so block scales never straddle blocks),
/// about [`BLOCK_ELEMS`] elements.
fn rows_per_block(rows: usize, cols: usize) -> usize {
    let r = (BLOCK_ELEMS / cols.max(1)).max(1);
    let r = r.div_ceil(128) * 128;
    r.min(rows.max(1))
}

fn copy_tensor(
    src: &SourceCheckpoint,
    t: &TensorPlan,
    sink: &mut dyn TensorSink,
) -> Result<(), ConvertError> {
    let mut buf = vec![0u8; COPY_CHUNK.min(t.src.len as usize)];
    let mut pos = 0u64;
    while pos < t.src.len {
        let n = ((t.src.len - pos) as usize).min(buf.len());
        src.read_range(&t.src, pos, &mut buf[..n])?;
        sink.weight_chunk(&buf[..n])?;
        pos += n as u64;
    }
    if let Some(s) = &t.src_scale {
        sink.scale(&src.read_all(s)?)?;
    }
    Ok(())
}

/// Source rows `r0..r1` as f32.
fn decode_rows(
    src: &SourceCheckpoint,
    t: &TensorPlan,
    r0: usize,
    r1: usize,
) -> Result<Vec<f32>, ConvertError> {
    let (n, cols) = (r1 - r0, t.cols);
    let mut out = vec![0f32; n * cols];
    let read = |elem_bits: usize, rows: std::ops::Range<usize>, width: usize| {
        let row_bytes = width * elem_bits / 8;
        let mut b = vec![0u8; rows.len() * row_bytes];
        src.read_range(&t.src, (rows.start * row_bytes) as u64, &mut b)
            .map(|_| b)
    };
    let read_scale = |start: usize, len: usize| -> Result<Vec<u8>, ConvertError> {
        let s = t.src_scale.as_ref().ok_or_else(|| ConvertError::Tensor {
            path: src.shard_path(&t.src).to_path_buf(),
            tensor: t.name.clone(),
            message: "scale tensor missing".into(),
        })?;
        let mut b = vec![0u8; len];
        src.read_range(s, start as u64, &mut b)?;
        Ok(b)
    };
    match t.src_enc {
        Encoding::Bf16 => {
            let b = read(16, r0..r1, cols)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Encoding::F32 | Encoding::Raw => {
            let b = read(32, r0..r1, cols)?;
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Encoding::Fp8 { block } => {
            let b = read(8, r0..r1, cols)?;
            let cb = cols.div_ceil(block);
            let (s0, s1) = (r0 / block, r1.div_ceil(block));
            let s = read_scale(s0 * cb, (s1 - s0) * cb)?;
            dequant_fp8_blocks(&b, &s, n, cols, block, &mut out);
        }
        Encoding::Fp4 { group } => {
            let b = read(4, r0..r1, cols)?;
            let g = cols.div_ceil(group);
            let s = read_scale(r0 * g, n * g)?;
            dequant_fp4_groups(&b, &s, n, cols, group, &mut out);
        }
        Encoding::Int4 { group } => {
            let b = read(4, r0..r1, cols)?;
            let g = cols / group;
            let s = read_scale(r0 * g * 2, n * g * 2)?;
            let s: Vec<u16> = s
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            dequant_int4_groups(&b, &s, n, cols, group, &mut out);
        }
    }
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        return Err(ConvertError::Tensor {
            path: src.shard_path(&t.src).to_path_buf(),
            tensor: t.name.clone(),
            message: format!(
                "non-finite value at row {}, column {}",
                r0 + i / cols.max(1),
                i % cols.max(1)
            ),
        });
    }
    Ok(out)
}

/// Encodes f32 rows; returns (weight bytes, scale bytes, error of the round trip).
pub fn encode_rows(
    f: &[f32],
    rows: usize,
    cols: usize,
    enc: Encoding,
) -> (Vec<u8>, Vec<u8>, ErrorStats) {
    let mut back = vec![0f32; f.len()];
    let (w, s) = match enc {
        Encoding::Bf16 | Encoding::Raw => {
            let mut w = Vec::with_capacity(f.len() * 2);
            for (&x, b) in f.iter().zip(back.iter_mut()) {
                let h = f32_to_bf16(x);
                *b = bf16_to_f32(h);
                w.extend_from_slice(&h.to_le_bytes());
            }
            (w, Vec::new())
        }
        Encoding::F32 => {
            back.copy_from_slice(f);
            (f.iter().flat_map(|x| x.to_le_bytes()).collect(), Vec::new())
        }
        Encoding::Fp8 { block } => {
            let (w, s) = quant_fp8_blocks(f, rows, cols, block);
            dequant_fp8_blocks(&w, &s, rows, cols, block, &mut back);
            (w, s)
        }
        Encoding::Fp4 { group } => {
            let (w, s) = quant_fp4_groups(f, rows, cols, group);
            dequant_fp4_groups(&w, &s, rows, cols, group, &mut back);
            (w, s)
        }
        Encoding::Int4 { group } => {
            let (w, s) = quant_int4_groups(f, rows, cols, group);
            dequant_int4_groups(&w, &s, rows, cols, group, &mut back);
            (w, s.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    };
    let stats = ErrorStats::compare(f, &back);
    (w, s, stats)
}
