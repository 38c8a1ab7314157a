//! AVX2 + FMA block kernel for dense (bf16 / f32) weights, the backend token and the shared
//! horizontal sum. The quantized formats' block kernels are in `x86_quant.rs`.
//!
//! AVX-512 (F + VL) is used, when detected, by the [`Avx2Fma`] backend itself: its tiles then run
//! under those target features with the [`Avx512`] kernel, whose dense block kernel [`block512`]
//! is bit-identical to [`block`] by holding `acc0` and `acc1` as the two halves of one 16-lane
//! register (one 16-lane FMA per 16-element step, an 8-lane one on the low half for the leftover
//! chunk, then `acc0 + acc1` and the same horizontal sums), with groups of 2 x 4 dots; the
//! quantized formats keep their AVX2 block kernels (with 32 registers available). Adding another
//! backend means: a token type created only by run-time detection, a `Kernel` impl whose `tile`
//! compiles [`tile::compute`] under its target features, a block-kernel method on `format::Seg`
//! for it, and a `Backend` variant in `super`; the block kernels must keep the canonical summation
//! order.

use super::Weight;
use super::format::{Format, Seg};
use super::tile::{self, Kernel, OutWin, Tile};
use std::arch::x86_64::*;

/// Proof that AVX2, FMA and F16C are available: only [`Avx2Fma::detect`] creates one. It also
/// records whether AVX-512F and AVX-512VL were detected; then the dense tiles run the 16-lane kernel
/// [`block512`], which is bit-identical to [`block`] (so results do not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Avx2Fma {
    avx512: bool,
}

impl Avx2Fma {
    pub(super) fn detect() -> Option<Avx2Fma> {
        // F16C (on every AVX2 CPU in practice) is used by the FP8 decoder.
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2Fma {
            avx512: is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl"),
        })
    }

    /// The same token restricted to the AVX2 kernels (for tests comparing the two).
    #[cfg(test)]
    pub(super) fn without_avx512(self) -> Avx2Fma {
        Avx2Fma { avx512: false }
    }

    /// Whether the AVX-512 kernels are used.
    #[cfg(test)]
    pub(super) fn has_avx512(self) -> bool {
        self.avx512
    }
}

/// The AVX-512 variant of [`Avx2Fma`] (created by it when AVX-512F/VL were detected).
#[derive(Clone, Copy, Debug)]
struct Avx512 {
    _private: (),
}

impl Kernel for Avx512 {
    #[inline(always)]
    fn rows<F: Format>() -> usize {
        // Dense weights: 2 x 4 dots in 8 zmm accumulators; the quantized kernels (8-lane) keep
        // the AVX2 grouping they are tuned for.
        if F::DENSE { 4 } else { 3 }
    }

    #[inline(always)]
    fn block<S: Seg, const W: usize, const R: usize>(
        self,
        w: [S; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: an `Avx512` exists only if AVX-512F/VL, AVX2, FMA and F16C were detected.
        unsafe { S::block_avx512(w, x) }
    }

    unsafe fn tile<F: Format>(self, t: Tile<'_, F>, c: OutWin) {
        // SAFETY: the features as above; the window is forwarded from the caller.
        unsafe { tile_avx512(self, t, c) }
    }
}

/// The tile loops compiled with AVX-512F (and the AVX2 features) enabled.
///
/// # Safety
/// Requires AVX-512F/VL, AVX2, FMA and F16C, and the window contract of [`Kernel::tile`].
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
unsafe fn tile_avx512<F: Format>(k: Avx512, t: Tile<'_, F>, c: OutWin) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::compute(k, t, c) }
}

impl Kernel for Avx2Fma {
    #[inline(always)]
    fn block<S: Seg, const W: usize, const R: usize>(
        self,
        w: [S; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: an `Avx2Fma` exists only if AVX2 and FMA were detected.
        unsafe { S::block_avx2(w, x) }
    }

    unsafe fn tile<F: Format>(self, t: Tile<'_, F>, c: OutWin) {
        // SAFETY: the features as above (AVX-512F/VL too when the token says so); the window is
        // forwarded from the caller.
        unsafe {
            // A single row (GEMV) is bound by memory, and measured about 25% slower end to end
            // with the 16-lane kernel; several rows gain from it.
            if self.avx512 && t.s_len > 1 {
                tile_avx512(Avx512 { _private: () }, t, c)
            } else {
                tile_avx2(self, t, c)
            }
        }
    }
}

/// The tile loops compiled with AVX2 + FMA enabled, so the block kernels inline into them.
///
/// # Safety
/// Requires AVX2, FMA and F16C, and the window contract of [`Kernel::tile`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<F: Format>(k: Avx2Fma, t: Tile<'_, F>, c: OutWin) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::compute(k, t, c) }
}

/// Sum of the eight lanes of `v` as `((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))`.
///
/// # Safety
/// Requires AVX2 and FMA; only called (inlined) from `#[target_feature(enable = "avx2,fma")]` code.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: the caller guarantees the target features.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }
}

/// The canonical block sums `hsum(acc0[a][r] + acc1[a][r])` of a `W x R` group of dots, each
/// bit-identical to [`hsum`] on its own (same additions with the same operands in the same order),
/// but reduced up to eight at a time with a transposed tree: one 128-bit half swap per pair of
/// dots gives every `q_j = v_j + v_(j + 4)`, one in-lane shuffle per two pairs every
/// `d_j = q_j + q_(j + 2)`, and a last shuffle `d_0 + d_1`, for 4 or 8 dots in one register. With
/// in_dim around 128 the per-dot reduction otherwise costs about as much as the FMAs.
///
/// # Safety
/// Requires AVX2; only called (inlined) from `#[target_feature(enable = "avx2,fma")]` code.
#[inline(always)]
pub(super) unsafe fn block_sums<const W: usize, const R: usize>(
    acc0: &[[__m256; R]; W],
    acc1: &[[__m256; R]; W],
) -> [[f32; R]; W] {
    let mut out = [[0.0; R]; W];
    // SAFETY: the caller guarantees the target features.
    unsafe {
        if W * R == 1 {
            out[0][0] = hsum(_mm256_add_ps(acc0[0][0], acc1[0][0]));
            return out;
        }
        assert!(W * R <= 16);
        let mut v = [_mm256_setzero_ps(); 16];
        for a in 0..W {
            for r in 0..R {
                v[a * R + r] = _mm256_add_ps(acc0[a][r], acc1[a][r]);
            }
        }
        // Dot 8 c + k (k < 8) ends in lanes[8 c + k / 2 + 4 (k % 2)].
        let mut lanes = [0.0f32; 16];
        for c in 0..(W * R).div_ceil(8) {
            let v = &v[8 * c..];
            let sums = if W * R - 8 * c <= 4 {
                let t = hsum_pairs(hsum_halves(v[0], v[1]), hsum_halves(v[2], v[3]));
                _mm256_add_ps(
                    _mm256_shuffle_ps::<0x88>(t, t),
                    _mm256_shuffle_ps::<0xDD>(t, t),
                )
            } else {
                let t0 = hsum_pairs(hsum_halves(v[0], v[1]), hsum_halves(v[2], v[3]));
                let t1 = hsum_pairs(hsum_halves(v[4], v[5]), hsum_halves(v[6], v[7]));
                _mm256_add_ps(
                    _mm256_shuffle_ps::<0x88>(t0, t1),
                    _mm256_shuffle_ps::<0xDD>(t0, t1),
                )
            };
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * c), sums);
        }
        for (a, row) in out.iter_mut().enumerate() {
            for (r, o) in row.iter_mut().enumerate() {
                let (c, k) = ((a * R + r) / 8, (a * R + r) % 8);
                *o = lanes[8 * c + k / 2 + 4 * (k % 2)];
            }
        }
        out
    }
}

/// `[q(a) | q(b)]` with `q_j = v_j + v_(j + 4)` (low half plus high half, as in [`hsum`]).
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn hsum_halves(a: __m256, b: __m256) -> __m256 {
    // SAFETY: the caller guarantees the target features.
    unsafe {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }
}

/// From `ab = [q(a) | q(b)]` and `cd = [q(c) | q(d)]`: `[d0(a), d1(a), d0(c), d1(c) | d0(b),
/// d1(b), d0(d), d1(d)]` with `d_j = q_j + q_(j + 2)` (as in [`hsum`]).
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn hsum_pairs(ab: __m256, cd: __m256) -> __m256 {
    // SAFETY: the caller guarantees the target features.
    unsafe {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(ab, cd),
            _mm256_shuffle_ps::<0xEE>(ab, cd),
        )
    }
}

/// `out[a][r] = dot(w[a], x[r])` over one `i`-block in the canonical order, all slices of one
/// common length.
///
/// Each weight chunk is loaded and converted once and used for all `R` input rows; each input chunk
/// once for all `W` weight rows. Every dot has its own pair of accumulators, so its arithmetic does
/// not depend on `W` or `R`. `2 * W * R` accumulators must fit the 16 ymm registers with room for
/// operands (`W * R <= 6`).
///
/// It is `#[inline(always)]` without `#[target_feature]` (the two cannot be combined) so that it
/// inlines into [`tile_avx2`], whose features then apply to the intrinsics; a call per block would
/// cost as much as the block.
///
/// # Safety
/// Requires AVX2 and FMA; only called (inlined) from `#[target_feature(enable = "avx2,fma")]` code.
#[inline(always)]
pub(super) unsafe fn block<E: Weight, const W: usize, const R: usize>(
    w: [&[E]; W],
    x: [&[f32]; R],
) -> [[f32; R]; W] {
    let n = x[0].len();
    assert!(w.iter().all(|w| w.len() == n) && x.iter().all(|x| x.len() == n));
    let wp: [*const E; W] = std::array::from_fn(|a| w[a].as_ptr());
    let xp: [*const f32; R] = std::array::from_fn(|r| x[r].as_ptr());
    let n16 = n - n % 16;
    // SAFETY: the caller guarantees the target features; all slices hold n elements and every
    // vector load covers [i, i + 8) with i + 8 <= n.
    unsafe {
        let mut acc0 = [[_mm256_setzero_ps(); R]; W];
        let mut acc1 = [[_mm256_setzero_ps(); R]; W];
        let mut wv = [_mm256_setzero_ps(); W];
        let mut i = 0;
        while i < n16 {
            // First half of the 16-element step into acc0, second half into acc1. Each weight chunk
            // is converted once for all R input rows; each input chunk is loaded once for all W
            // weight rows.
            for a in 0..W {
                wv[a] = E::load8(wp[a].add(i));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp[r].add(i));
                for a in 0..W {
                    acc0[a][r] = _mm256_fmadd_ps(wv[a], xv, acc0[a][r]);
                }
            }
            for a in 0..W {
                wv[a] = E::load8(wp[a].add(i + 8));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp[r].add(i + 8));
                for a in 0..W {
                    acc1[a][r] = _mm256_fmadd_ps(wv[a], xv, acc1[a][r]);
                }
            }
            i += 16;
        }
        if n - n16 >= 8 {
            // A leftover 8-element chunk goes to acc0.
            for a in 0..W {
                wv[a] = E::load8(wp[a].add(i));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp[r].add(i));
                for a in 0..W {
                    acc0[a][r] = _mm256_fmadd_ps(wv[a], xv, acc0[a][r]);
                }
            }
            i += 8;
        }
        let mut out = block_sums(&acc0, &acc1);
        if i < n {
            for a in 0..W {
                for r in 0..R {
                    // Scalar tail (< 8 elements), one by one.
                    for k in i..n {
                        out[a][r] += w[a][k].to_f32() * x[r][k];
                    }
                }
            }
        }
        out
    }
}

/// The AVX-512 version of [`block`], bit-identical to it: lanes 0-7 of each 16-lane accumulator
/// are `acc0` and lanes 8-15 are `acc1`, so one 16-lane FMA performs both 8-lane FMAs of a
/// 16-element step on the same operands; the leftover 8-element chunk goes to the low half
/// (`acc0`) with an 8-lane FMA, and the halves are reduced by [`block_sums`] exactly as in
/// [`block`]. With 32 vector registers, up to `W * R = 12` dots fit.
///
/// # Safety
/// Requires AVX-512F, AVX2 and FMA; only called (inlined) from code with those target features.
#[inline(always)]
pub(super) unsafe fn block512<E: Weight, const W: usize, const R: usize>(
    w: [&[E]; W],
    x: [&[f32]; R],
) -> [[f32; R]; W] {
    let n = x[0].len();
    assert!(w.iter().all(|w| w.len() == n) && x.iter().all(|x| x.len() == n));
    let wp: [*const E; W] = std::array::from_fn(|a| w[a].as_ptr());
    let xp: [*const f32; R] = std::array::from_fn(|r| x[r].as_ptr());
    let n16 = n - n % 16;
    // SAFETY: the caller guarantees the target features; all slices hold n elements and every
    // vector load covers [i, i + 16) with i + 16 <= n, or [i, i + 8) with i + 8 <= n.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); R]; W];
        let mut wv = [_mm512_setzero_ps(); W];
        let mut i = 0;
        while i < n16 {
            for a in 0..W {
                wv[a] = E::load16(wp[a].add(i));
            }
            for r in 0..R {
                let xv = _mm512_loadu_ps(xp[r].add(i));
                for a in 0..W {
                    acc[a][r] = _mm512_fmadd_ps(wv[a], xv, acc[a][r]);
                }
            }
            i += 16;
        }
        let mut acc0 = [[_mm256_setzero_ps(); R]; W];
        let mut acc1 = [[_mm256_setzero_ps(); R]; W];
        for a in 0..W {
            for r in 0..R {
                acc0[a][r] = _mm512_castps512_ps256(acc[a][r]);
                acc1[a][r] =
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[a][r])));
            }
        }
        if n - n16 >= 8 {
            // A leftover 8-element chunk goes to acc0.
            let mut wv = [_mm256_setzero_ps(); W];
            for a in 0..W {
                wv[a] = E::load8(wp[a].add(i));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp[r].add(i));
                for a in 0..W {
                    acc0[a][r] = _mm256_fmadd_ps(wv[a], xv, acc0[a][r]);
                }
            }
            i += 8;
        }
        let mut out = block_sums(&acc0, &acc1);
        if i < n {
            for a in 0..W {
                for r in 0..R {
                    // Scalar tail (< 8 elements), one by one.
                    for k in i..n {
                        out[a][r] += w[a][k].to_f32() * x[r][k];
                    }
                }
            }
        }
        out
    }
}
