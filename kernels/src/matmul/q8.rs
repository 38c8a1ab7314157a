//! The fast compute mode for quantized weights ([`ComputeMode::Int8Activations`]).
//!
//! **INT4 and FP4** weights: each input row is quantized to int8 per block of 32 columns
//! (`sa = amax / 127`, `q = round_ties_even(x * (127 / amax))`, see [`quantize_row`]), and each
//! weight code becomes a small integer `v` (INT4: `q` in `-8..=7`; FP4: `2 * e2m1` in `-12..=12`,
//! with the weight scale halved, `ws = e8m0 / 2`). Per block the integer dot product `sum v * q` is
//! exact (int32); per weight row and input row the result is
//!
//! ```text
//! lane t (0..8) of 64-column pair k covers columns 64k + 8t .. 64k + 8t + 8 (block 2k + t / 4):
//!     acc[t] = fma(f32(isum[k][t]), ws[block] * sa[block], acc[t])      for k = 0, 1, ...
//! y = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
//! ```
//!
//! (a trailing 32-column block has lanes 4..8 all zero). On AVX2 `isum` comes from
//! `vpmaddubsw` on the codes offset to unsigned (`v + 8`, `v + 12`) against the int8 activations,
//! `vpmaddwd` by ones, minus the precomputed `offset * sum q` per lane.
//!
//! **FP8** weights keep f32 activations: AVX2 has no integer product of an E4M3 code and an int8
//! that is cheaper than decoding the code to f32 (see `docs/FORMATS.md`). Each weight is decoded
//! once (`vcvtph2ps` of the code placed in an FP16, times `2^8 * scale`) for all input rows and
//! accumulated as `acc[i % 8] = fma(w[i], x[i], acc[i % 8])` over `i` in order, then the same
//! horizontal sum. E4M3 NaN codes (`0x7F`, `0xFF`) are not special-cased and decode as `+-480`.
//!
//! Every output is one fixed recipe of its own input row and weight row, so the result does not
//! depend on the batch size, the row's position or the thread count, and the scalar fallback does
//! the same operations (`f32::mul_add`) and is bit-identical to the AVX2 kernel.

use super::{Backend, WeightsRef, check_shapes, matmul_with, tile_rows};
use crate::bf16::bf16_to_f32;
use crate::quant::{e4m3_to_f32, e8m0_to_f32, int4_value};
use rayon::prelude::*;

/// How [`matmul_mode`] computes on quantized weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ComputeMode {
    /// Bit-identical to the dense kernels on the dequantized matrix ([`super::matmul`]).
    #[default]
    Exact,
    /// INT4/FP4: int8 activations per block of 32 and integer dot products; FP8: f32
    /// activations, weights decoded once per batch. Bf16/F32 weights always compute exactly.
    Int8Activations,
}

/// [`super::matmul`] in the given mode. In [`ComputeMode::Int8Activations`] the fast kernels need
/// `in_dim % 32 == 0` and a group (FP4/INT4) or block (FP8) that is a multiple of 32
/// ([`int8_supported`]); other shapes and dense weights use the exact kernel.
///
/// # Panics
/// Panics only if a slice length is inconsistent with the shapes.
pub fn matmul_mode(
    mode: ComputeMode,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    matmul_mode_with(Backend::detect(), mode, x, rows, in_dim, w, out_dim, y)
}

/// [`matmul_mode`] with [`ComputeMode::Int8Activations`].
///
/// # Panics
/// Panics only if a slice length is inconsistent with the shapes.
pub fn matmul_q8(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    matmul_mode(ComputeMode::Int8Activations, x, rows, in_dim, w, out_dim, y)
}

/// Whether [`ComputeMode::Int8Activations`] has a fast kernel for `w` with this `in_dim`.
pub fn int8_supported(w: &WeightsRef<'_>, in_dim: usize) -> bool {
    let ok = |g: usize| g > 0 && g.is_multiple_of(32) && in_dim.is_multiple_of(32);
    match *w {
        WeightsRef::Bf16(_) | WeightsRef::F32(_) => false,
        WeightsRef::Fp8 { block, .. } => ok(block),
        WeightsRef::Fp4 { group, .. } | WeightsRef::Int4 { group, .. } => ok(group),
    }
}

/// The int8 codes of one input row for 64 columns (two blocks of 32), laid out for the kernel:
/// `lo` holds the even columns, `hi` the odd ones (the order of the low and high nibbles of 32
/// packed bytes), `corr[t]` is `offset * sum q` over columns `8t..8t + 8` and `sa[t]` the scale
/// of the block of lane `t`. A missing second block is all zeros.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct QPair {
    pub lo: [i8; 32],
    pub hi: [i8; 32],
    pub corr: [i32; 8],
    pub sa: [f32; 8],
}

const ZERO_PAIR: QPair = QPair {
    lo: [0; 32],
    hi: [0; 32],
    corr: [0; 8],
    sa: [0.0; 8],
};

/// Quantizes one input row (`x.len()` a multiple of 32) into `out` (`x.len().div_ceil(64)` pairs)
/// for a format whose codes are offset by `offset`.
///
/// Per block of 32: `amax = max |x|`; if a value is not finite the block gets `sa = NaN` (every
/// output becomes NaN) and zero codes; if `amax = 0` (or its scale underflows) zeros; otherwise
/// `sa = amax / 127` and `q = clamp(round_ties_even(x * (127 / amax)), -127, 127)` (`x / sa` if
/// `127 / amax` overflows). So `|x - sa * q| <= sa / 2` up to the rounding of `127 / amax`.
pub(super) fn quantize_row(x: &[f32], offset: i32, out: &mut [QPair]) {
    out.fill(ZERO_PAIR);
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let p = &mut out[b / 2];
        let h = b % 2;
        let mut q = [0i8; 32];
        let sa = if xb.iter().all(|v| v.is_finite()) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let sa = amax / 127.0;
            let inv = 127.0 / amax;
            if amax > 0.0 && sa > 0.0 {
                for (q, &v) in q.iter_mut().zip(xb) {
                    let t = if inv.is_finite() { v * inv } else { v / sa };
                    *q = t.round_ties_even().clamp(-127.0, 127.0) as i8;
                }
                sa
            } else {
                0.0
            }
        } else {
            f32::NAN
        };
        for (c, &v) in q.iter().enumerate() {
            let col = 32 * h + c;
            if col % 2 == 0 {
                p.lo[col / 2] = v;
            } else {
                p.hi[col / 2] = v;
            }
            p.corr[col / 8] += offset * v as i32;
        }
        p.sa[4 * h..4 * h + 4].fill(sa);
    }
}

/// A 4-bit code as a small signed integer for the int8 kernels.
pub(super) trait NibQ8: Copy + Send + Sync + 'static {
    type Scale: Copy + Send + Sync;
    /// Added to every code value to make it unsigned for `vpmaddubsw`.
    const OFFSET: i32;
    /// The integer value of nibble `n` (low 4 bits).
    fn value(n: u8) -> i32;
    /// The f32 factor of a group scale (the weight is `value * ws`).
    fn ws(s: Self::Scale) -> f32;
}

/// INT4: `q` in `-8..=7`, weight `q * bf16(scale)`.
#[derive(Clone, Copy)]
pub(super) struct Int4Q8;

impl NibQ8 for Int4Q8 {
    type Scale = u16;
    const OFFSET: i32 = 8;
    fn value(n: u8) -> i32 {
        int4_value(n & 0x0F) as i32
    }
    fn ws(s: u16) -> f32 {
        bf16_to_f32(s)
    }
}

/// FP4 E2M1 as `2 * e2m1` in `-12..=12`, weight `(2 * e2m1) * (e8m0(scale) / 2)`.
#[derive(Clone, Copy)]
pub(super) struct Fp4Q8;

/// `2 * e2m1(n)` for each nibble.
pub(super) const FP4_TWICE: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `e8m0_to_f32(e) / 2` for each E8M0 byte (exact; 255 is NaN).
pub(super) static FP4_WS: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = f32::from_bits(match e {
            0 => 0x0020_0000,
            1 => 0x0040_0000,
            255 => 0x7FC0_0000,
            _ => ((e - 1) as u32) << 23,
        });
        e += 1;
    }
    t
};

impl NibQ8 for Fp4Q8 {
    type Scale = u8;
    const OFFSET: i32 = 12;
    fn value(n: u8) -> i32 {
        FP4_TWICE[(n & 0x0F) as usize] as i32
    }
    fn ws(s: u8) -> f32 {
        FP4_WS[s as usize]
    }
}

/// A packed 4-bit matrix `[out_dim, in_dim / 2]` with scales `[out_dim, groups]`.
pub(super) struct NibMat<'a, C: NibQ8> {
    pub w: &'a [u8],
    pub scale: &'a [C::Scale],
    pub in_dim: usize,
    pub group: usize,
    pub groups: usize,
}

impl<C: NibQ8> Clone for NibMat<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: NibQ8> Copy for NibMat<'_, C> {}

impl<C: NibQ8> NibMat<'_, C> {
    /// The weight scale factor of 32-column block `b` of row `o`.
    #[inline(always)]
    pub fn block_ws(&self, o: usize, b: usize) -> f32 {
        C::ws(self.scale[o * self.groups + b * 32 / self.group])
    }
}

/// An FP8 matrix `[out_dim, in_dim]` with `block x block` scales.
#[derive(Clone, Copy)]
pub(super) struct Fp8Mat<'a> {
    pub w: &'a [u8],
    pub scale: &'a [u8],
    pub in_dim: usize,
    pub block: usize,
    pub col_blocks: usize,
}

impl Fp8Mat<'_> {
    /// The factor of the decoded codes (`e4m3 * 2^-8`) of row `o`, column block `cb`.
    #[inline(always)]
    pub fn factor(&self, o: usize, cb: usize) -> f32 {
        e8m0_to_f32(self.scale[(o / self.block) * self.col_blocks + cb]) * 256.0
    }
}

/// `e4m3(code) * 2^-8`, as the FP16 bit placement of the AVX2 kernel decodes it (exact; the NaN
/// codes `0x7F`/`0xFF` become `+-1.875`, i.e. `+-480 * 2^-8`).
pub(super) fn fp8_raw(code: u8) -> f32 {
    let mag = if code & 0x7F == 0x7F {
        1.875
    } else {
        e4m3_to_f32(code & 0x7F) / 256.0
    };
    if code & 0x80 != 0 { -mag } else { mag }
}

/// The operands of one call after preparation.
#[derive(Clone, Copy)]
pub(super) enum Mat<'a> {
    Int4(NibMat<'a, Int4Q8>),
    Fp4(NibMat<'a, Fp4Q8>),
    Fp8(Fp8Mat<'a>),
}

/// Input rows as a kernel reads them: quantized pairs (`pairs` per row) or f32.
#[derive(Clone, Copy)]
pub(super) enum Act<'a> {
    Q8 { q: &'a [QPair], pairs: usize },
    F32 { x: &'a [f32], in_dim: usize },
}

/// Largest number of input rows one kernel call handles.
pub(super) const MAX_R: usize = 8;

/// Weight rows per kernel call for `r` input rows (accumulators: at most 8 on AVX2).
pub(super) fn w_for(r: usize) -> usize {
    match r {
        1 | 2 => 4,
        3 | 4 => 2,
        _ => 1,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_mode_with(
    backend: Backend,
    mode: ComputeMode,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: WeightsRef<'_>,
    out_dim: usize,
    y: &mut [f32],
) {
    if mode == ComputeMode::Exact || !int8_supported(&w, in_dim) {
        return matmul_with(backend, x, rows, in_dim, w, out_dim, y);
    }
    check_shapes(x, rows, in_dim, w, out_dim, y);
    if rows == 0 || out_dim == 0 {
        return;
    }
    if in_dim == 0 {
        y.fill(0.0);
        return;
    }
    let (mat, offset) = match w {
        WeightsRef::Int4 { w, scale, group } => {
            let m = NibMat {
                w,
                scale,
                in_dim,
                group,
                groups: in_dim / group,
            };
            (Mat::Int4(m), Int4Q8::OFFSET)
        }
        WeightsRef::Fp4 { w, scale, group } => {
            let m = NibMat {
                w,
                scale,
                in_dim,
                group,
                groups: in_dim.div_ceil(group),
            };
            (Mat::Fp4(m), Fp4Q8::OFFSET)
        }
        WeightsRef::Fp8 { w, scale, block } => {
            let m = Fp8Mat {
                w,
                scale,
                in_dim,
                block,
                col_blocks: in_dim.div_ceil(block),
            };
            (Mat::Fp8(m), 0)
        }
        WeightsRef::Bf16(_) | WeightsRef::F32(_) => unreachable!("dense weights are exact"),
    };
    // Input rows are processed in chunks (each weight tile is streamed once per chunk).
    let chunk = if rows <= MAX_R { rows } else { 64 };
    let threads = rayon::current_num_threads();
    let tile = tile_rows(out_dim, 1, threads);
    let pairs = in_dim.div_ceil(64);
    let mut qbuf = Vec::new();
    let mut staging = Vec::new();
    for (ci, y_chunk) in y.chunks_mut(chunk * out_dim).enumerate() {
        let n = y_chunk.len() / out_dim;
        let xc = &x[ci * chunk * in_dim..][..n * in_dim];
        let act = if let Mat::Fp8(_) = mat {
            Act::F32 { x: xc, in_dim }
        } else {
            qbuf.resize(n * pairs, ZERO_PAIR);
            qbuf.par_chunks_mut(pairs)
                .zip(xc.par_chunks(in_dim))
                .for_each(|(q, x)| quantize_row(x, offset, q));
            Act::Q8 { q: &qbuf, pairs }
        };
        let task = |o0: usize, c: &mut [f32]| match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2Fma(_) => {
                // SAFETY: an `Avx2Fma` token exists only if AVX2, FMA and F16C were detected.
                unsafe { super::q8_x86::task(mat, act, n, o0, c) }
            }
            Backend::Scalar => scalar_task(mat, act, n, o0, c),
        };
        if n == 1 {
            y_chunk
                .par_chunks_mut(tile)
                .enumerate()
                .for_each(|(t, c)| task(t * tile, c));
            continue;
        }
        // Each task writes its [n rows x tile] block contiguously; then rows are scattered.
        staging.resize(n * out_dim, 0.0);
        staging
            .par_chunks_mut(tile * n)
            .enumerate()
            .for_each(|(t, c)| task(t * tile, c));
        for (s, y_row) in y_chunk.chunks_mut(out_dim).enumerate() {
            for (t, y_piece) in y_row.chunks_mut(tile).enumerate() {
                let o_len = y_piece.len();
                y_piece.copy_from_slice(&staging[t * tile * n + s * o_len..][..o_len]);
            }
        }
    }
}

/// The horizontal sum of the kernels' 8 lanes.
#[inline(always)]
pub(super) fn hsum8(v: [f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// Portable task: `c[s][o - o0]` for input rows `0..n` and weight rows `o0..o0 + c.len() / n`,
/// with the arithmetic of the AVX2 kernels.
fn scalar_task(mat: Mat<'_>, act: Act<'_>, n: usize, o0: usize, c: &mut [f32]) {
    let o_len = c.len() / n;
    for s in 0..n {
        for a in 0..o_len {
            let o = o0 + a;
            c[s * o_len + a] = match (mat, act) {
                (Mat::Int4(m), Act::Q8 { q, pairs }) => nib_dot(m, o, &q[s * pairs..][..pairs]),
                (Mat::Fp4(m), Act::Q8 { q, pairs }) => nib_dot(m, o, &q[s * pairs..][..pairs]),
                (Mat::Fp8(m), Act::F32 { x, in_dim }) => fp8_dot(m, o, &x[s * in_dim..][..in_dim]),
                _ => unreachable!("operands prepared for the format"),
            };
        }
    }
}

fn nib_dot<C: NibQ8>(m: NibMat<'_, C>, o: usize, q: &[QPair]) -> f32 {
    let row = &m.w[o * m.in_dim / 2..][..m.in_dim / 2];
    let blocks = m.in_dim / 32;
    let mut acc = [0.0f32; 8];
    for (k, p) in q.iter().enumerate() {
        for (t, acc) in acc.iter_mut().enumerate() {
            let b = 2 * k + t / 4;
            let (isum, ws) = if b < blocks {
                let mut isum = 0i32;
                for j in 0..4 {
                    // Byte 32k + 4t + j holds columns 64k + 8t + 2j (low) and + 1 (high).
                    let byte = row[32 * k + 4 * t + j];
                    isum += C::value(byte) * p.lo[4 * t + j] as i32;
                    isum += C::value(byte >> 4) * p.hi[4 * t + j] as i32;
                }
                (isum, m.block_ws(o, b))
            } else {
                (0, 0.0)
            };
            *acc = (isum as f32).mul_add(ws * p.sa[t], *acc);
        }
    }
    hsum8(acc)
}

fn fp8_dot(m: Fp8Mat<'_>, o: usize, x: &[f32]) -> f32 {
    let row = &m.w[o * m.in_dim..][..m.in_dim];
    let mut acc = [0.0f32; 8];
    for (i, (&code, &xi)) in row.iter().zip(x).enumerate() {
        let w = fp8_raw(code) * m.factor(o, i / m.block);
        acc[i % 8] = w.mul_add(xi, acc[i % 8]);
    }
    hsum8(acc)
}
