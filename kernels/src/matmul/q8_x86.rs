//! AVX2 + FMA + F16C kernels of [`ComputeMode::Int8Activations`](super::q8::ComputeMode); the
//! arithmetic is specified in `q8.rs` (the scalar code there is its bit-identical reference).
//!
//! Each kernel call computes `W` weight rows against `R <= 8` input rows, one 8-lane accumulator
//! per (weight row, input row). Every weight byte is loaded and decoded once per call and used for
//! all `R` input rows; the accumulators never mix, so a dot's operations do not depend on `W`, `R`
//! or the row's position.

use super::q8::{Act, FP4_TWICE, FP4_WS, Fp4Q8, Fp8Mat, Int4Q8, MAX_R, Mat, NibMat, NibQ8, QPair};
use super::q8::{hsum8, w_for};
use std::arch::x86_64::*;

/// The AVX2 side of a 4-bit code.
pub(super) trait NibSimd: NibQ8 {
    /// 32 packed bytes (64 columns) to the unsigned codes `value + OFFSET` of the low nibbles
    /// (even columns) and of the high nibbles (odd columns).
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    unsafe fn split(v: __m256i) -> (__m256i, __m256i);

    /// The weight factors of two consecutive groups of 32 (lanes 0..4 and 4..8), from the scales
    /// at `p` and `p + 1`.
    ///
    /// # Safety
    /// Requires AVX2; `p` and `p + 1` must be readable.
    unsafe fn pair_ws32(p: *const Self::Scale) -> __m256;
}

impl NibSimd for Int4Q8 {
    #[inline(always)]
    unsafe fn split(v: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            // Flipping bit 3 of a two's complement nibble adds 8: codes 0..=15.
            let u = _mm256_xor_si256(v, _mm256_set1_epi8(0x88u8 as i8));
            let m = _mm256_set1_epi8(0x0F);
            (
                _mm256_and_si256(u, m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(u), m),
            )
        }
    }

    #[inline(always)]
    unsafe fn pair_ws32(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and two readable scales.
        unsafe {
            let b = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
            // bf16 -> f32: the scale's two bytes into the top half of each lane (first scale in
            // lanes 0..4, second in 4..8), zeros below.
            let z = -128i8;
            let sel = _mm256_setr_epi8(
                z, z, 0, 1, z, z, 0, 1, z, z, 0, 1, z, z, 0, 1, //
                z, z, 2, 3, z, z, 2, 3, z, z, 2, 3, z, z, 2, 3,
            );
            _mm256_castsi256_ps(_mm256_shuffle_epi8(b, sel))
        }
    }
}

impl NibSimd for Fp4Q8 {
    #[inline(always)]
    unsafe fn split(v: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let t: [i8; 16] = std::array::from_fn(|n| FP4_TWICE[n] + Self::OFFSET as i8);
            let lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast()));
            let m = _mm256_set1_epi8(0x0F);
            (
                _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m)),
                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), m)),
            )
        }
    }

    #[inline(always)]
    unsafe fn pair_ws32(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and two readable scales.
        unsafe { pair_ws(FP4_WS[*p as usize], FP4_WS[*p.add(1) as usize]) }
    }
}

/// `[a; 4] ++ [b; 4]`.
///
/// # Safety
/// Requires AVX (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn pair_ws(a: f32, b: f32) -> __m256 {
    // SAFETY: the caller guarantees the target features.
    unsafe { _mm256_set_m128(_mm_set1_ps(b), _mm_set1_ps(a)) }
}

/// Sum of the 8 lanes in the order of [`hsum8`].
///
/// # Safety
/// Requires AVX (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let mut a = [0.0f32; 8];
    // SAFETY: `a` holds 8 floats; the caller guarantees the target features.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
    hsum8(a)
}

/// Computes `c[s][o - o0]` for input rows `0..n` and weight rows `o0..o0 + c.len() / n`.
///
/// # Safety
/// Requires AVX2, FMA and F16C; `mat` and `act` must be consistent (as `q8.rs` builds them).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn task(mat: Mat<'_>, act: Act<'_>, n: usize, o0: usize, c: &mut [f32]) {
    // SAFETY (all arms): the target features are enabled here.
    match (mat, act) {
        (Mat::Int4(m), Act::Q8 { q, pairs }) => unsafe { nib_task(m, q, pairs, n, o0, c) },
        (Mat::Fp4(m), Act::Q8 { q, pairs }) => unsafe { nib_task(m, q, pairs, n, o0, c) },
        (Mat::Fp8(m), Act::F32 { x, in_dim }) => unsafe { fp8_task(m, x, in_dim, n, o0, c) },
        _ => unreachable!("operands prepared for the format"),
    }
}

/// A matrix with an AVX2 kernel for `W` weight rows against `R` input rows.
trait Q8Kernel<'a>: Copy {
    /// One input row as the kernel reads it.
    type Rows: Copy + 'a;

    /// `out[r][a] = dot(weight row o + a, input row r)`.
    ///
    /// # Safety
    /// Requires AVX2, FMA and F16C (inlined into [`task`]); rows `o..o + W` exist and the input
    /// rows are prepared for the matrix.
    unsafe fn kernel<const W: usize, const R: usize>(
        self,
        o: usize,
        rows: [Self::Rows; R],
    ) -> [[f32; W]; R];
}

impl<'a, C: NibSimd> Q8Kernel<'a> for NibMat<'_, C> {
    type Rows = &'a [QPair];

    #[inline(always)]
    unsafe fn kernel<const W: usize, const R: usize>(
        self,
        o: usize,
        rows: [&'a [QPair]; R],
    ) -> [[f32; W]; R] {
        // SAFETY: forwarded from the caller.
        unsafe { nib_kernel(self, o, rows) }
    }
}

impl<'a> Q8Kernel<'a> for Fp8Mat<'_> {
    type Rows = &'a [f32];

    #[inline(always)]
    unsafe fn kernel<const W: usize, const R: usize>(
        self,
        o: usize,
        rows: [&'a [f32]; R],
    ) -> [[f32; W]; R] {
        // SAFETY: forwarded from the caller.
        unsafe { fp8_kernel(self, o, rows) }
    }
}

/// Runs the kernel over the weight rows `o0..o0 + c.len() / n` in groups of `w_for(R)` (then
/// single rows), for each group of up to [`MAX_R`] of the `n` input rows, into `c[s][o - o0]`.
///
/// # Safety
/// As [`Q8Kernel::kernel`].
#[inline(always)]
unsafe fn drive<'a, M: Q8Kernel<'a>>(
    m: M,
    rows: impl Fn(usize) -> M::Rows,
    n: usize,
    o0: usize,
    c: &mut [f32],
) {
    let o_len = c.len() / n;
    for sg in (0..n).step_by(MAX_R) {
        let g = Group { sg, o0, o_len };
        // SAFETY: forwarded from the caller.
        unsafe {
            match MAX_R.min(n - sg) {
                1 => drive_r::<M, 1>(m, &rows, g, c),
                2 => drive_r::<M, 2>(m, &rows, g, c),
                3 => drive_r::<M, 3>(m, &rows, g, c),
                4 => drive_r::<M, 4>(m, &rows, g, c),
                5 => drive_r::<M, 5>(m, &rows, g, c),
                6 => drive_r::<M, 6>(m, &rows, g, c),
                7 => drive_r::<M, 7>(m, &rows, g, c),
                _ => drive_r::<M, 8>(m, &rows, g, c),
            }
        }
    }
}

/// Input rows `sg..` of a task with weight rows `o0..o0 + o_len`.
#[derive(Clone, Copy)]
struct Group {
    sg: usize,
    o0: usize,
    o_len: usize,
}

/// # Safety
/// As [`Q8Kernel::kernel`].
#[inline(always)]
unsafe fn drive_r<'a, M: Q8Kernel<'a>, const R: usize>(
    m: M,
    rows: &impl Fn(usize) -> M::Rows,
    g: Group,
    c: &mut [f32],
) {
    let xs: [M::Rows; R] = std::array::from_fn(|r| rows(g.sg + r));
    let wn = w_for(R);
    let mut a = 0;
    // SAFETY: forwarded from the caller; a + W <= o_len.
    unsafe {
        while a < g.o_len {
            if wn == 4 && a + 4 <= g.o_len {
                store(m.kernel::<4, R>(g.o0 + a, xs), g, a, c);
                a += 4;
            } else if wn == 2 && a + 2 <= g.o_len {
                store(m.kernel::<2, R>(g.o0 + a, xs), g, a, c);
                a += 2;
            } else {
                store(m.kernel::<1, R>(g.o0 + a, xs), g, a, c);
                a += 1;
            }
        }
    }
}

#[inline(always)]
fn store<const W: usize, const R: usize>(res: [[f32; W]; R], g: Group, a: usize, c: &mut [f32]) {
    for (r, sums) in res.iter().enumerate() {
        c[(g.sg + r) * g.o_len + a..][..W].copy_from_slice(sums);
    }
}

/// # Safety
/// Requires AVX2, FMA and F16C (inlined into [`task`]).
#[inline(always)]
unsafe fn nib_task<C: NibSimd>(
    m: NibMat<'_, C>,
    q: &[QPair],
    pairs: usize,
    n: usize,
    o0: usize,
    c: &mut [f32],
) {
    // SAFETY: forwarded from the caller.
    unsafe { drive(m, |s: usize| &q[s * pairs..][..pairs], n, o0, c) }
}

/// # Safety
/// Requires AVX2, FMA and F16C (inlined into [`task`]).
#[inline(always)]
unsafe fn fp8_task(m: Fp8Mat<'_>, x: &[f32], in_dim: usize, n: usize, o0: usize, c: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { drive(m, |s: usize| &x[s * in_dim..][..in_dim], n, o0, c) }
}

/// Weight rows `o..o + W` of a 4-bit matrix against `R` quantized input rows.
///
/// # Safety
/// Requires AVX2 and FMA (inlined into [`task`]); rows `o..o + W` exist and every `q[r]` holds
/// `in_dim.div_ceil(64)` pairs.
#[inline(always)]
unsafe fn nib_kernel<C: NibSimd, const W: usize, const R: usize>(
    m: NibMat<'_, C>,
    o: usize,
    q: [&[QPair]; R],
) -> [[f32; W]; R] {
    let half = m.in_dim / 2;
    let full = m.in_dim / 64;
    let wp: [*const u8; W] = std::array::from_fn(|a| m.w[(o + a) * half..][..half].as_ptr());
    let sp: [*const C::Scale; W] = std::array::from_fn(|a| m.scale[(o + a) * m.groups..].as_ptr());
    assert!(q.iter().all(|q| q.len() == m.in_dim.div_ceil(64)));
    // SAFETY: the caller guarantees the target features; pair k < full covers bytes 32k..32k + 32
    // of each weight row (< half) and, with group 32, scales 2k and 2k + 1 (< groups); the tail
    // reads bytes 32 full..32 full + 16 = half; every q[r] has full (+ 1 with a tail) pairs.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); W]; R];
        let step = |lo: __m256i, hi: __m256i, ws: __m256, p: &QPair, acc: __m256| {
            let s16 = _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, _mm256_load_si256(p.lo.as_ptr().cast())),
                _mm256_maddubs_epi16(hi, _mm256_load_si256(p.hi.as_ptr().cast())),
            );
            let sum = _mm256_sub_epi32(
                _mm256_madd_epi16(s16, ones),
                _mm256_load_si256(p.corr.as_ptr().cast()),
            );
            let f = _mm256_mul_ps(ws, _mm256_load_ps(p.sa.as_ptr()));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), f, acc)
        };
        for k in 0..full {
            for a in 0..W {
                if k % 2 == 0 {
                    // The same columns of the rows the next call reads (a hint only: the address
                    // may lie past the matrix, so it is formed with wrapping arithmetic).
                    let ahead = wp[a].wrapping_add(W * half + 32 * k);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                let (lo, hi) = C::split(_mm256_loadu_si256(wp[a].add(32 * k).cast()));
                let ws = if m.group == 32 {
                    C::pair_ws32(sp[a].add(2 * k))
                } else {
                    pair_ws(m.block_ws(o + a, 2 * k), m.block_ws(o + a, 2 * k + 1))
                };
                for r in 0..R {
                    acc[r][a] = step(lo, hi, ws, &*q[r].as_ptr().add(k), acc[r][a]);
                }
            }
        }
        if !m.in_dim.is_multiple_of(64) {
            for a in 0..W {
                let v = _mm_loadu_si128(wp[a].add(32 * full).cast());
                let (lo, hi) = C::split(_mm256_set_m128i(_mm_setzero_si128(), v));
                let ws = pair_ws(m.block_ws(o + a, 2 * full), 0.0);
                for r in 0..R {
                    acc[r][a] = step(lo, hi, ws, &*q[r].as_ptr().add(full), acc[r][a]);
                }
            }
        }
        let mut out = [[0.0; W]; R];
        for r in 0..R {
            for a in 0..W {
                out[r][a] = hsum(acc[r][a]);
            }
        }
        out
    }
}

/// Weight rows `o..o + W` of an FP8 matrix against `R` f32 input rows.
///
/// # Safety
/// Requires AVX2, FMA and F16C (inlined into [`task`]); rows `o..o + W` exist, every `x[r]` has
/// `in_dim` elements, and `in_dim` and `block` are multiples of 32.
#[inline(always)]
unsafe fn fp8_kernel<const W: usize, const R: usize>(
    m: Fp8Mat<'_>,
    o: usize,
    x: [&[f32]; R],
) -> [[f32; W]; R] {
    let n = m.in_dim;
    let wp: [*const u8; W] = std::array::from_fn(|a| m.w[(o + a) * n..][..n].as_ptr());
    assert!(x.iter().all(|x| x.len() == n) && n.is_multiple_of(16) && m.block.is_multiple_of(16));
    // SAFETY: the caller guarantees the target features; every load covers [i, i + 16) with
    // i + 16 <= n (n and the block boundaries are multiples of 16).
    unsafe {
        let mask = _mm256_set1_epi16(0xBF80u16 as i16);
        let mut acc = [[_mm256_setzero_ps(); W]; R];
        for cb in 0..m.col_blocks {
            let (c0, c1) = (cb * m.block, ((cb + 1) * m.block).min(n));
            let f: [__m256; W] = std::array::from_fn(|a| _mm256_set1_ps(m.factor(o + a, cb)));
            let mut i = c0;
            while i < c1 {
                for a in 0..W {
                    if i % 64 == 0 {
                        // As in `nib_kernel`: the rows of the next call, same columns.
                        _mm_prefetch::<_MM_HINT_T0>(wp[a].wrapping_add(W * n + i).cast());
                    }
                    // The code's bits into an FP16 (sign, 0eeee, mmm): e4m3 * 2^-8, exactly.
                    let codes = _mm_loadu_si128(wp[a].add(i).cast());
                    let h =
                        _mm256_and_si256(_mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(codes)), mask);
                    let w0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), f[a]);
                    let w1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h)), f[a]);
                    for r in 0..R {
                        let xp = x[r].as_ptr().add(i);
                        acc[r][a] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), acc[r][a]);
                        acc[r][a] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(8)), acc[r][a]);
                    }
                }
                i += 16;
            }
        }
        let mut out = [[0.0; W]; R];
        for r in 0..R {
            for a in 0..W {
                out[r][a] = hsum(acc[r][a]);
            }
        }
        out
    }
}
