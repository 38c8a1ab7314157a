//! Linear layers: `y = x W^T` with bf16, f32 or quantized (FP8 E4M3, FP4 E2M1, INT4) weights.
//!
//! # Quantized weights
//!
//! FP8, FP4 and INT4 matrices are multiplied directly: each pass reads the quantized bytes and the
//! scales once and decodes the weights in registers (no dequantized copy). A weight decodes to
//! exactly the f32 the matching dequantizer in [`crate::quant`] produces (`code value * scale`,
//! exact for the power-of-two scales of FP8/FP4 and for INT4's bf16 scales), and the decoded
//! weights go through the same canonical summation order as the dense kernels below. So the result
//! is **bit-identical** to [`WeightsRef::F32`] on the dequantized matrix, and to
//! [`WeightsRef::Bf16`] whenever the dequantized values are bf16 numbers (always for FP8 and FP4
//! with scales in the usual range, since E4M3 and E2M1 have at most 4 significant bits; INT4 values
//! `q * scale` can need up to 11). The determinism contract below holds for every format. The
//! storage formats and byte counts are specified in `docs/FORMATS.md`.
//!
//! [`matmul_mode`] with [`ComputeMode::Int8Activations`] is an opt-in faster mode for quantized
//! weights that is *not* bit-identical to the dense kernels: INT4/FP4 against int8 activations
//! (per block of 32) with exact integer block sums, FP8 with each weight decoded once per batch.
//! It keeps the determinism contract below and has its own canonical order (`matmul/q8.rs`).
//!
//! # Determinism
//!
//! Every output `y[s, o]` is the dot product of input row `s` with weight row `o`, and it is
//! computed with one fixed arithmetic recipe that depends only on `in_dim` and on the CPU features
//! (AVX2 + FMA or not), never on the batch size, the position of `s` in the batch, the thread count
//! or the tiling:
//!
//! 1. The `i` dimension is cut into consecutive blocks of [`KC`] elements (the last one may be
//!    shorter).
//! 2. Within a block, two 8-lane accumulators take alternate 8-element chunks of each 16-element
//!    step (`acc0 += w[i..i+8] * x[i..i+8]`, `acc1 += w[i+8..i+16] * x[i+8..i+16]`, fused
//!    multiply-add on the SIMD path); a leftover 8-element chunk goes to `acc0`. The block sum is
//!    the fixed-pattern horizontal sum of `acc0 + acc1`, plus the scalar tail (`< 8` elements)
//!    added one by one.
//! 3. The block sums are added in block order: `y = ((b0 + b1) + b2) + ...`.
//!
//! The kernels only change *which* dots are computed together (so a weight row loaded once serves
//! several input rows) and in which order the independent block computations run; each dot's own
//! sequence of floating-point operations is untouched. Hence a single decode row is bit-identical
//! to the same row inside a batch. Two implementation devices keep this: the horizontal sums of up
//! to eight dots are done together with a transposed tree that performs, per dot, exactly the
//! additions of step 2 (`x86::block_sums`), and on CPUs with AVX-512F/VL the dense kernels hold
//! `acc0` and `acc1` as the two halves of one 16-lane register (one 16-lane FMA per 16-element
//! step; `x86::block512`), which gives the same bits as the AVX2 kernels, so the result depends on
//! AVX2 + FMA being present but not on AVX-512. (NaN payloads are not specified.)
//!
//! # Parallelism and tiling
//!
//! Work is split over tiles of output rows (and, for large batches, blocks of input rows) on the
//! current rayon pool; the `i` dimension is never split across threads. Each task writes its
//! window of `y` in place. For decode (at most [`DECODE_MAX_ROWS`] rows) each small group of
//! weight rows is streamed once, front to back, and multiplied with all input rows while it is in
//! L1. For prefill, a `KC`-wide slice of a 64-row weight tile stays in cache while groups of three
//! input rows (four for dense weights on AVX-512) sweep over it, so each weight element is read
//! from memory once per 64 input rows and converted once per 3 (4).

mod format;
mod q8;
#[cfg(target_arch = "x86_64")]
mod q8_x86;
mod scalar;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_decode;
#[cfg(target_arch = "x86_64")]
mod x86_quant;

use crate::bf16::bf16_to_f32;
use crate::quant::{e2m1_to_f32, e4m3_to_f32, e8m0_to_f32, int4_value};
use format::{Dense, Format, Fp4Code, Fp8, Int4Code, Nib4};
use rayon::prelude::*;
use tile::{Kernel, OutWin, Tile};

pub use q8::{ComputeMode, int8_supported, matmul_mode, matmul_q8};

/// Width of the `i`-blocks of the canonical summation order (part of the arithmetic; a multiple of
/// 16).
pub const KC: usize = 512;
/// Batches up to this many rows use the decode (weight-streaming) schedule.
pub const DECODE_MAX_ROWS: usize = 8;
/// Input rows per task in the prefill schedule.
const PREFILL_ROWS: usize = 64;
/// Largest number of weight rows per task.
const MAX_TILE: usize = 64;

/// Borrowed weight matrix `[out_dim, in_dim]`, row-major.
///
/// The quantized variants follow `docs/FORMATS.md`; [`matmul`] checks every slice length against
/// the shapes.
#[derive(Clone, Copy, Debug)]
pub enum WeightsRef<'a> {
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
    /// f32 values.
    F32(&'a [f32]),
    /// FP8 E4M3 weights (official checkpoint): `w` is `[out_dim, in_dim]`, one byte each; `scale`
    /// holds E8M0 bytes `[ceil(out_dim / block), ceil(in_dim / block)]`, one per `block x block`
    /// tile (`block = 128` in the checkpoint). Weight = `e4m3(w) * 2^(scale - 127)`.
    Fp8 {
        /// E4M3 codes `[out_dim, in_dim]`.
        w: &'a [u8],
        /// E8M0 scales `[ceil(out_dim / block), ceil(in_dim / block)]`.
        scale: &'a [u8],
        /// Side of the square scale tiles (> 0).
        block: usize,
    },
    /// FP4 E2M1 weights (official checkpoint's routed experts): `w` is packed `[out_dim, in_dim /
    /// 2]` (byte `k` of a row: column `2k` in the low nibble, `2k + 1` in the high one; `in_dim`
    /// even); `scale` holds E8M0 bytes `[out_dim, ceil(in_dim / group)]`, one per `group`
    /// consecutive columns of a row (`group = 32` in the checkpoint).
    Fp4 {
        /// Packed E2M1 nibbles `[out_dim, in_dim / 2]`.
        w: &'a [u8],
        /// E8M0 scales `[out_dim, ceil(in_dim / group)]`.
        scale: &'a [u8],
        /// Columns per scale (> 0).
        group: usize,
    },
    /// INT4 weights (our format, see [`crate::quant::int4`]): `w` is packed `[out_dim, in_dim /
    /// 2]` in the FP4 nibble order, each nibble a two's complement `q` in `-8..=7`; `scale` holds
    /// bf16 bit patterns `[out_dim, in_dim / group]` (`group` divides `in_dim`; default
    /// [`crate::quant::INT4_GROUP`]). Weight = `q * bf16(scale)`.
    Int4 {
        /// Packed INT4 nibbles `[out_dim, in_dim / 2]`.
        w: &'a [u8],
        /// bf16 scales `[out_dim, in_dim / group]`.
        scale: &'a [u16],
        /// Columns per scale (> 0, divides `in_dim`).
        group: usize,
    },
}

impl WeightsRef<'_> {
    /// Bytes one pass over the whole matrix reads: the weights plus the scales (each slice's length
    /// times its element size). For `[out, in]` this is `2 out in` (bf16), `4 out in` (f32), `out
    /// in + ceil(out / block) ceil(in / block)` (FP8), `out in / 2 + out ceil(in / group)` (FP4)
    /// and `out in / 2 + 2 out in / group` (INT4).
    pub fn bytes(&self) -> usize {
        match *self {
            WeightsRef::Bf16(w) => std::mem::size_of_val(w),
            WeightsRef::F32(w) => std::mem::size_of_val(w),
            WeightsRef::Fp8 { w, scale, .. } | WeightsRef::Fp4 { w, scale, .. } => {
                w.len() + scale.len()
            }
            WeightsRef::Int4 { w, scale, .. } => w.len() + std::mem::size_of_val(scale),
        }
    }
}

/// Element types a weight matrix can be stored in.
pub(crate) trait Weight: Copy + Send + Sync {
    fn to_f32(self) -> f32;

    /// Loads 8 consecutive elements as f32.
    ///
    /// # Safety
    /// Requires AVX2; `p` must be valid for reading 8 elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// Loads 16 consecutive elements as f32.
    ///
    /// # Safety
    /// Requires AVX-512F; `p` must be valid for reading 16 elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Weight for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        crate::bf16::bf16_to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 32 readable bytes at p.
        let h = unsafe { _mm256_loadu_si256(p.cast()) };
        // bf16 -> f32 as in `load8`, 16 lanes.
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const u16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable bytes at p.
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        // bf16 -> f32: zero-extend each u16 to u32 and move it to the upper half.
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller guarantees 16 readable floats at p.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable floats at p.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

/// Which block kernel computes the canonical dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// AVX2 + FMA (the token proves both were detected at run time).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(x86::Avx2Fma),
    /// Portable code with the same summation order but separate multiply and add.
    Scalar,
}

impl Backend {
    fn detect() -> Backend {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::Avx2Fma::detect() {
            return Backend::Avx2Fma(k);
        }
        Backend::Scalar
    }
}

/// `y[s * out_dim + o] = sum_i x[s * in_dim + i] * w[o * in_dim + i]` for `s < rows`, `o <
/// out_dim`.
///
/// `x` is `[rows, in_dim]`, `w` is `[out_dim, in_dim]` and `y` is `[rows, out_dim]`, all row-major;
/// `y` is overwritten. Runs on the current rayon pool. Results are bit-identical for a given
/// `in_dim` and CPU whatever `rows`, the row's position in the batch and the thread count (see the
/// module documentation).
///
/// # Panics
/// Panics only if a slice length is inconsistent with the shapes.
pub fn matmul(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    matmul_with(Backend::detect(), x, rows, in_dim, w, out_dim, y);
}

/// Plain scalar reference for [`matmul`] with the same contract (f64 accumulation,
/// single-threaded).
///
/// # Panics
/// Panics only if a slice length is inconsistent with the shapes.
pub fn matmul_ref(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    check_shapes(x, rows, in_dim, w, out_dim, y);
    for s in 0..rows {
        let xs = &x[s * in_dim..(s + 1) * in_dim];
        for o in 0..out_dim {
            let sum: f64 = xs
                .iter()
                .enumerate()
                .map(|(i, &a)| a as f64 * weight_at(w, in_dim, o, i) as f64)
                .sum();
            y[s * out_dim + o] = sum as f32;
        }
    }
}

/// Weight `[o, i]` of the `[_, in_dim]` matrix `w` as f32, decoded element by element with the
/// scalar codecs of [`crate::quant`] (the dequantizers' formula). Shapes must have been checked.
pub(crate) fn weight_at(w: WeightsRef<'_>, in_dim: usize, o: usize, i: usize) -> f32 {
    let c = o * in_dim + i;
    match w {
        WeightsRef::Bf16(w) => bf16_to_f32(w[c]),
        WeightsRef::F32(w) => w[c],
        WeightsRef::Fp8 { w, scale, block } => {
            let s = scale[(o / block) * in_dim.div_ceil(block) + i / block];
            e4m3_to_f32(w[c]) * e8m0_to_f32(s)
        }
        WeightsRef::Fp4 { w, scale, group } => {
            let s = scale[o * in_dim.div_ceil(group) + i / group];
            e2m1_to_f32(w[c / 2] >> ((c & 1) * 4)) * e8m0_to_f32(s)
        }
        WeightsRef::Int4 { w, scale, group } => {
            let s = scale[o * (in_dim / group) + i / group];
            int4_value(w[c / 2] >> ((c & 1) * 4)) as f32 * bf16_to_f32(s)
        }
    }
}

fn check_shapes(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &[f32],
) {
    assert_eq!(
        Some(x.len()),
        rows.checked_mul(in_dim),
        "matmul: x must be [rows, in_dim]"
    );
    let n = out_dim.checked_mul(in_dim);
    // (weight slice length, expected, scale slice length, expected)
    let (w_len, want, s_len, s_want) = match w {
        WeightsRef::Bf16(w) => (w.len(), n, 0, Some(0)),
        WeightsRef::F32(w) => (w.len(), n, 0, Some(0)),
        WeightsRef::Fp8 { w, scale, block } => {
            assert!(block > 0, "matmul: FP8 block must be positive");
            let s_want = out_dim.div_ceil(block).checked_mul(in_dim.div_ceil(block));
            (w.len(), n, scale.len(), s_want)
        }
        WeightsRef::Fp4 { w, scale, group } => {
            assert!(group > 0, "matmul: FP4 group must be positive");
            assert!(in_dim.is_multiple_of(2), "matmul: FP4 in_dim must be even");
            let s_want = out_dim.checked_mul(in_dim.div_ceil(group));
            (w.len(), n.map(|n| n / 2), scale.len(), s_want)
        }
        WeightsRef::Int4 { w, scale, group } => {
            assert!(group > 0, "matmul: INT4 group must be positive");
            assert!(
                in_dim.is_multiple_of(2) && in_dim.is_multiple_of(group),
                "matmul: INT4 in_dim must be even and a multiple of group"
            );
            let s_want = out_dim.checked_mul(in_dim / group);
            (w.len(), n.map(|n| n / 2), scale.len(), s_want)
        }
    };
    assert_eq!(
        Some(w_len),
        want,
        "matmul: w must be [out_dim, in_dim] (packed [out_dim, in_dim / 2] for FP4/INT4)"
    );
    assert_eq!(
        Some(s_len),
        s_want,
        "matmul: scale length does not match the shapes"
    );
    assert_eq!(
        Some(y.len()),
        rows.checked_mul(out_dim),
        "matmul: y must be [rows, out_dim]"
    );
}

fn matmul_with(
    backend: Backend,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    check_shapes(x, rows, in_dim, w, out_dim, y);
    match w {
        WeightsRef::Bf16(w) => run(backend, x, rows, in_dim, Dense { w, in_dim }, out_dim, y),
        WeightsRef::F32(w) => run(backend, x, rows, in_dim, Dense { w, in_dim }, out_dim, y),
        WeightsRef::Fp8 { w, scale, block } => {
            let m = Fp8 {
                w,
                scale,
                in_dim,
                block,
                col_blocks: in_dim.div_ceil(block),
            };
            run(backend, x, rows, in_dim, m, out_dim, y)
        }
        WeightsRef::Fp4 { w, scale, group } => {
            let m = Nib4::<Fp4Code> {
                w,
                scale,
                in_dim,
                group,
                groups: in_dim.div_ceil(group),
            };
            run(backend, x, rows, in_dim, m, out_dim, y)
        }
        WeightsRef::Int4 { w, scale, group } => {
            let m = Nib4::<Int4Code> {
                w,
                scale,
                in_dim,
                group,
                groups: in_dim.div_ceil(group),
            };
            run(backend, x, rows, in_dim, m, out_dim, y)
        }
    }
}

/// Weight rows per task: at most [`MAX_TILE`], a multiple of 4, and small enough that `row_blocks`
/// blocks of input rows times the weight tiles give every thread about eight tasks.
fn tile_rows(out_dim: usize, row_blocks: usize, threads: usize) -> usize {
    let tiles_wanted = (8 * threads.max(1)).div_ceil(row_blocks.max(1));
    out_dim
        .div_ceil(tiles_wanted)
        .next_multiple_of(4)
        .clamp(4, MAX_TILE)
}

fn run<F: Format>(
    backend: Backend,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: F,
    out_dim: usize,
    y: &mut [f32],
) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2Fma(k) => run_with(k, x, rows, in_dim, w, out_dim, y),
        Backend::Scalar => run_with(scalar::Scalar, x, rows, in_dim, w, out_dim, y),
    }
}

fn run_with<F: Format, K: Kernel>(
    k: K,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: F,
    out_dim: usize,
    y: &mut [f32],
) {
    if rows == 0 || out_dim == 0 {
        return;
    }
    if in_dim == 0 {
        y.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads();
    let task = |s0: usize, s_len: usize, o0: usize, c: OutWin| {
        let t = Tile {
            x,
            w,
            in_dim,
            s0,
            s_len,
            o0,
        };
        // SAFETY: every caller below passes a window of `y` that is in bounds and disjoint from
        // the windows of all other tasks.
        unsafe { k.tile(t, c) }
    };
    if rows == 1 {
        // A single row's tiles are contiguous pieces of y.
        let tile = tile_rows(out_dim, 1, threads);
        y.par_chunks_mut(tile).enumerate().for_each(|(t, c)| {
            let win = OutWin {
                ptr: c.as_mut_ptr(),
                ld: out_dim,
                o_len: c.len(),
            };
            task(0, 1, t * tile, win)
        });
        return;
    }
    // Several rows: a task's tile (its input rows x its weight rows) is a window of y that is not
    // contiguous; each task writes its window in place through a raw pointer (the windows tile y
    // without overlap), which saves a staging buffer and a copy of the whole output.
    let block = if rows <= DECODE_MAX_ROWS {
        rows
    } else {
        PREFILL_ROWS
    };
    let row_blocks = rows.div_ceil(block);
    let tile = tile_rows(out_dim, row_blocks, threads);
    let tiles = out_dim.div_ceil(tile);
    let y_win = OutWin {
        ptr: y.as_mut_ptr(),
        ld: out_dim,
        o_len: out_dim,
    };
    (0..row_blocks * tiles).into_par_iter().for_each(|j| {
        let (b, t) = (j / tiles, j % tiles);
        let (s0, o0) = (b * block, t * tile);
        let s_len = block.min(rows - s0);
        // SAFETY: s0 < rows and o0 < out_dim, so the offset is inside y (checked shapes).
        let win = unsafe { y_win.sub(s0, o0, tile.min(out_dim - o0)) };
        // Task j owns rows s0..s0 + s_len x columns o0..o0 + o_len of y; distinct j give
        // disjoint windows, and `y` stays mutably borrowed (unused) until all tasks are done.
        task(s0, s_len, o0, win)
    });
}

#[cfg(test)]
#[path = "matmul/tests.rs"]
mod tests;

#[cfg(test)]
#[path = "matmul/quant_tests.rs"]
mod quant_tests;

#[cfg(test)]
#[path = "matmul/q8_tests.rs"]
mod q8_tests;
