//! AVX2 + FMA block kernel for dense (bf16 / f32) weights, the backend token and the shared
//! horizontal sum. The quantized formats' block kernels are in `x86_quant.rs`.
//!
//! Adding a backend (e.g. AVX-512) means: a token type like [`Avx2Fma`] created only by run-time
//! detection, a `Kernel` impl whose `tile` compiles [`tile::compute`] under its target features,
//! a block-kernel method on `format::Seg` for it, and a `Backend` variant in `super`. The block
//! kernels must keep the canonical summation order; an AVX-512 kernel can stay bit-identical to
//! this one by holding `acc0` and `acc1` as the two halves of one 16-lane register (one 16-lane
//! FMA per 16-element step, a masked 8-lane one for the leftover chunk, then `acc0 + acc1` and the
//! same horizontal sum).

use super::Weight;
use super::format::{Format, Seg};
use super::tile::{self, Kernel, Tile};
use std::arch::x86_64::*;

/// Proof that AVX2, FMA and F16C are available: only [`Avx2Fma::detect`] creates one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Avx2Fma {
    _private: (),
}

impl Avx2Fma {
    pub(super) fn detect() -> Option<Avx2Fma> {
        // F16C (on every AVX2 CPU in practice) is used by the FP8 decoder.
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2Fma { _private: () })
    }
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

    fn tile<F: Format>(self, t: Tile<'_, F>, c: &mut [f32]) {
        // SAFETY: as above.
        unsafe { tile_avx2(self, t, c) }
    }
}

/// The tile loops compiled with AVX2 + FMA enabled, so the block kernels inline into them.
///
/// # Safety
/// Requires AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<F: Format>(k: Avx2Fma, t: Tile<'_, F>, c: &mut [f32]) {
    tile::compute(k, t, c)
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
        let mut out = [[0.0; R]; W];
        for a in 0..W {
            for r in 0..R {
                let mut s = hsum(_mm256_add_ps(acc0[a][r], acc1[a][r]));
                // Scalar tail (< 8 elements), one by one.
                for k in i..n {
                    s += w[a][k].to_f32() * x[r][k];
                }
                out[a][r] = s;
            }
        }
        out
    }
}
