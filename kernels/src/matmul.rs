//! Linear layers: `y = x W^T` with bf16 or f32 weights.
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
//! to the same row inside a batch.
//!
//! # Parallelism and tiling
//!
//! Work is split over tiles of output rows (and, for large batches, blocks of input rows) on the
//! current rayon pool; the `i` dimension is never split across threads. For decode (at most
//! [`DECODE_MAX_ROWS`] rows) each small group of weight rows is streamed once, front to back, and
//! multiplied with all input rows while it is in L1. For prefill, a `KC`-wide slice of a 64-row
//! weight tile stays in cache while groups of three input rows sweep over it, so each weight
//! element is read from memory once per 64 input rows and converted once per 3.

mod scalar;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

use rayon::prelude::*;
use tile::{Kernel, Tile};

/// Width of the `i`-blocks of the canonical summation order (part of the arithmetic; a multiple of
/// 16).
pub const KC: usize = 512;
/// Batches up to this many rows use the decode (weight-streaming) schedule.
pub const DECODE_MAX_ROWS: usize = 8;
/// Input rows per task in the prefill schedule.
const PREFILL_ROWS: usize = 64;
/// Largest number of weight rows per task.
const MAX_TILE: usize = 64;
/// Target size of the multi-row staging buffer, in floats (32 MiB; tiny in tests so that they cover
/// chunking).
const STAGING_FLOATS: usize = if cfg!(test) { 4096 } else { 8 << 20 };

/// Borrowed weight matrix `[out_dim, in_dim]`, row-major.
#[derive(Clone, Copy, Debug)]
pub enum WeightsRef<'a> {
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
    /// f32 values.
    F32(&'a [f32]),
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
}

impl Weight for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        crate::bf16::bf16_to_f32(self)
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
            let sum: f64 = match w {
                WeightsRef::Bf16(w) => {
                    let wo = &w[o * in_dim..(o + 1) * in_dim];
                    xs.iter()
                        .zip(wo)
                        .map(|(&a, &b)| a as f64 * b.to_f32() as f64)
                        .sum()
                }
                WeightsRef::F32(w) => {
                    let wo = &w[o * in_dim..(o + 1) * in_dim];
                    xs.iter().zip(wo).map(|(&a, &b)| a as f64 * b as f64).sum()
                }
            };
            y[s * out_dim + o] = sum as f32;
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
    let w_len = match w {
        WeightsRef::Bf16(w) => w.len(),
        WeightsRef::F32(w) => w.len(),
    };
    assert_eq!(
        Some(x.len()),
        rows.checked_mul(in_dim),
        "matmul: x must be [rows, in_dim]"
    );
    assert_eq!(
        Some(w_len),
        out_dim.checked_mul(in_dim),
        "matmul: w must be [out_dim, in_dim]"
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
        WeightsRef::Bf16(w) => run(backend, x, rows, in_dim, w, out_dim, y),
        WeightsRef::F32(w) => run(backend, x, rows, in_dim, w, out_dim, y),
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

fn run<E: Weight>(
    backend: Backend,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: &[E],
    out_dim: usize,
    y: &mut [f32],
) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2Fma(k) => run_with(k, x, rows, in_dim, w, out_dim, y),
        Backend::Scalar => run_with(scalar::Scalar, x, rows, in_dim, w, out_dim, y),
    }
}

fn run_with<E: Weight, K: Kernel>(
    k: K,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: &[E],
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
    let task = |s0: usize, s_len: usize, o0: usize, c: &mut [f32]| {
        k.tile(
            Tile {
                x,
                w,
                in_dim,
                s0,
                s_len,
                o0,
            },
            c,
        )
    };
    if rows == 1 {
        // A single row's tiles are contiguous pieces of y: write in place.
        let tile = tile_rows(out_dim, 1, threads);
        y.par_chunks_mut(tile)
            .enumerate()
            .for_each(|(t, c)| task(0, 1, t * tile, c));
        return;
    }
    // Several rows: a task's tile (its input rows x its weight rows) is not contiguous in y, so
    // tasks write into a staging buffer laid out [row block][weight tile][row in block][weight row
    // in tile], where each task's region is contiguous, and whole tile rows are then copied into y.
    // Rows are processed in chunks of whole row blocks so that the staging buffer stays around 32
    // MiB at most.
    let block = if rows <= DECODE_MAX_ROWS {
        rows
    } else {
        PREFILL_ROWS
    };
    let chunk_rows = ((STAGING_FLOATS / out_dim).max(1).div_ceil(block) * block).min(rows);
    let tile = tile_rows(out_dim, chunk_rows.div_ceil(block), threads);
    let mut staging = vec![0.0f32; chunk_rows * out_dim];
    for (ci, y_chunk) in y.chunks_mut(chunk_rows * out_dim).enumerate() {
        let c0 = ci * chunk_rows;
        let c_rows = y_chunk.len() / out_dim;
        let staging = &mut staging[..c_rows * out_dim];
        let mut tasks = Vec::new();
        for (b, region) in staging.chunks_mut(block * out_dim).enumerate() {
            let s_len = region.len() / out_dim;
            for (t, c) in region.chunks_mut(tile * s_len).enumerate() {
                tasks.push((c0 + b * block, s_len, t * tile, c));
            }
        }
        tasks
            .into_par_iter()
            .for_each(|(s0, s_len, o0, c)| task(s0, s_len, o0, c));
        let staging = &*staging;
        y_chunk
            .par_chunks_mut(out_dim)
            .enumerate()
            .for_each(|(s, y_row)| {
                let (b, s_in) = (s / block, s % block);
                let s_len = block.min(c_rows - b * block);
                let region = &staging[b * block * out_dim..][..s_len * out_dim];
                for (t, y_piece) in y_row.chunks_mut(tile).enumerate() {
                    let o_len = y_piece.len();
                    y_piece.copy_from_slice(&region[t * tile * s_len + s_in * o_len..][..o_len]);
                }
            });
    }
}

#[cfg(test)]
#[path = "matmul/tests.rs"]
mod tests;
