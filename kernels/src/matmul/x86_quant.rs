//! AVX2 + FMA block kernels for quantized weights: FP8 E4M3 (E8M0 block scales) and the packed
//! 4-bit formats FP4 E2M1 (E8M0 group scales) and INT4 (bf16 group scales).
//!
//! Weights are decoded in registers, 8 or 16 at a time, straight from the quantized bytes, into
//! exactly the f32 values the dequantizers produce (`code value * scale`: one correctly rounded
//! multiply of the same exact product, or an exact table entry); the decoded vectors then go
//! through the canonical summation order of the dense kernel in `x86.rs` (same accumulators, same
//! FMAs, same horizontal sum, same scalar tail). A quantized matrix therefore gives bit-identical
//! results to the dense kernels on its dequantized copy.
//!
//! * FP8, three modes, chosen per scale group (`x86_decode.rs`): each row's bytes of an `i`-block
//!   are first scanned (four instructions per 64 bytes) for NaN codes and subnormal codes.
//!   - `FAST` (no such codes, scale at most `2^7`; practically every block of a real checkpoint):
//!     `vpmovsxbd` widens 8 codes, `<< 20` and a mask put sign, exponent and mantissa in place,
//!     the f32 `e4m3 * 2^-120` (normal), and one multiply by `2^(e - 7)` (the scale times `2^120`)
//!     gives `e4m3 * scale`.
//!   - `MID` (subnormal codes, or scales up to `2^119`): `vpmovsxbw`, `<< 7` and a mask give the
//!     FP16 bits of `e4m3 * 2^-8` (subnormal codes become FP16 subnormals) and `vcvtph2ps`
//!     converts them to *normal* f32s, then one multiply by `2^(e - 119)`. (Placing subnormal
//!     codes straight into f32 bits would make f32 subnormals, and multiplies with subnormal
//!     inputs are several times slower on this CPU; `vcvtph2ps` has half the throughput of the
//!     other instructions, hence two paths.)
//!   - `SLOW` (NaN codes, which the bit tricks would decode as finite numbers, or larger scales):
//!     the FP16 path with NaN lanes patched in and two multiplies `(v * 2^8) * scale`.
//!
//!   A 256-entry f32 table looked up with `vpgatherdd` (then one multiply) is simpler but measured
//!   3.3x slower here (see `docs/FORMATS.md`).
//! * 4-bit: the 4 bytes holding 8 weights are broadcast to all lanes and shifted left by `28 - 4j`
//!   in lane `j` (`vpsllvd`), which puts nibble `j` (column order: byte `k` holds columns `2k`,
//!   `2k + 1` in its low, high nibble) in the top 4 bits of lane `j`. INT4: an arithmetic shift
//!   right by 28 gives `q`, converted and multiplied by the scale (5 instructions per 8 weights
//!   with the FMA). FP4: the 3 magnitude bits index (`vpermps`) the group's table `{0, 0.5, 1, 1.5,
//!   2, 3, 4, 6} * scale`, computed once per group, and the sign bit is or-ed in (6 instructions
//!   per 8 weights; no subnormal intermediate, no special cases).
//!
//! Scale groups (along the input dimension) that are multiples of 16 keep one set of decoding
//! constants per row for whole 16-element steps, computed once per group; other group sizes fall
//! back to decoding lane by lane with [`Seg::get`], still in the canonical order. Each block also
//! prefetches the same columns of the next rows of the decode schedule (software prefetch doubled
//! the single-thread FP8 GEMV throughput).

use super::format::Seg;
use super::x86::block_sums;
use super::x86_decode::{FAST, Factors, MID, SLOW, SimdSeg};
use std::arch::x86_64::*;

/// Lanes `i..i + 8` of `s` decoded one by one with [`Seg::get`].
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn lanes<S: Seg>(s: &S, i: usize) -> __m256 {
    let mut v = [0.0f32; 8];
    for (l, v) in v.iter_mut().enumerate() {
        *v = s.get(i + l);
    }
    // SAFETY: v holds 8 floats; the caller guarantees AVX2.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// `out[a][r] = dot(w[a], x[r])` over one `i`-block in the canonical order, decoding the weights in
/// registers (the quantized counterpart of `x86::block`; see there for the register budget and why
/// this is `#[inline(always)]`).
///
/// # Safety
/// Requires AVX2 and FMA; only called (inlined) from `#[target_feature(enable = "avx2,fma")]` code.
#[inline(always)]
pub(super) unsafe fn block<S: SimdSeg, const W: usize, const R: usize>(
    w: [S; W],
    x: [&[f32]; R],
) -> [[f32; R]; W] {
    let n = x[0].len();
    let (group, col0) = (w[0].group(), w[0].col0());
    assert!(
        w.iter()
            .all(|s| s.len() == n && s.group() == group && s.col0() == col0)
            && x.iter().all(|x| x.len() == n)
    );
    let mut xp = [x[0].as_ptr(); R];
    for r in 1..R {
        xp[r] = x[r].as_ptr();
    }
    let n16 = n - n % 16;
    // SAFETY: the caller guarantees the target features; every access covers [i, i + 8) with
    // i + 8 <= n (the decoders read the matching weight bytes).
    unsafe {
        let mut acc0 = [[_mm256_setzero_ps(); R]; W];
        let mut acc1 = [[_mm256_setzero_ps(); R]; W];
        let mut i = 0;
        if group.is_multiple_of(16) {
            // col0 and group are multiples of 16, so every scale group covers whole 16-steps.
            // The slowest decoding mode the codes of any row need (FP8: subnormal or NaN codes).
            let mut codes = FAST;
            if S::MAX_MODE > FAST {
                for s in &w {
                    codes = codes.max(s.codes_mode(n16));
                }
            }
            // Software prefetch of the same columns of the next group of rows, the data the decode
            // schedule needs next (without it, FP8 GEMV streams at half the speed: the hardware
            // prefetchers do not follow these short interleaved row pieces well).
            for s in &w {
                let (mut a, hi) = (s.ahead(0, W), s.ahead(n, W));
                while a < hi {
                    _mm_prefetch::<_MM_HINT_T0>(a);
                    a = a.wrapping_add(64);
                }
            }
            if S::MAX_MODE == FAST && group == 32 {
                // One iteration per scale group of 32 (the checkpoint's FP4, the default INT4):
                // a straight-line loop whose only per-group work is fetching the scales.
                let mut g = col0 / 32;
                while i + 32 <= n16 {
                    let mut p = [w[0].params(g, FAST); W];
                    for a in 1..W {
                        p[a] = w[a].params(g, FAST);
                    }
                    steps::<S, W, R, FAST>(&w, &xp, &p, i, i + 32, &mut acc0, &mut acc1);
                    i += 32;
                    g += 1;
                }
            }
            let mut g = (col0 + i) / group;
            let mut end = ((g + 1) * group - col0).min(n16);
            while i < n16 {
                let mut mode = codes;
                for s in &w {
                    mode = mode.max(s.scale_mode(g));
                }
                let mut p = [w[0].params(g, mode); W];
                for a in 1..W {
                    p[a] = w[a].params(g, mode);
                }
                if S::MAX_MODE == FAST || mode == FAST {
                    steps::<S, W, R, FAST>(&w, &xp, &p, i, end, &mut acc0, &mut acc1);
                } else if mode == MID {
                    steps::<S, W, R, MID>(&w, &xp, &p, i, end, &mut acc0, &mut acc1);
                } else {
                    steps::<S, W, R, SLOW>(&w, &xp, &p, i, end, &mut acc0, &mut acc1);
                }
                i = end;
                g += 1;
                end = (end + group).min(n16);
            }
            if n - n16 >= 8 {
                // The leftover 8-chunk (in one group: it starts on a multiple of 16) goes to acc0,
                // decoded the slow (always valid) way.
                let g = (col0 + i) / group;
                for a in 0..W {
                    let p = w[a].params(g, SLOW);
                    let wv = w[a].decode8(i, p);
                    for r in 0..R {
                        let xv = _mm256_loadu_ps(xp[r].add(i));
                        acc0[a][r] = _mm256_fmadd_ps(wv, xv, acc0[a][r]);
                    }
                }
                i += 8;
            }
        } else {
            // Scale groups not aligned with the 16-steps: decode lane by lane, same order.
            while i + 8 <= n {
                for a in 0..W {
                    let wv = lanes(&w[a], i);
                    for r in 0..R {
                        let xv = _mm256_loadu_ps(xp[r].add(i));
                        if i % 16 == 0 {
                            acc0[a][r] = _mm256_fmadd_ps(wv, xv, acc0[a][r]);
                        } else {
                            acc1[a][r] = _mm256_fmadd_ps(wv, xv, acc1[a][r]);
                        }
                    }
                }
                i += 8;
            }
        }
        let mut out = block_sums(&acc0, &acc1);
        for a in 0..W {
            for r in 0..R {
                // Scalar tail (< 8 elements), one by one.
                for (k, &xk) in x[r].iter().enumerate().take(n).skip(i) {
                    out[a][r] += w[a].get(k) * xk;
                }
            }
        }
        out
    }
}

/// The 16-element steps `i..end` of one scale group: the first 8 weights of each step into `acc0`,
/// the second 8 into `acc1`.
///
/// # Safety
/// Requires AVX2 and FMA (inlined into `#[target_feature]` code); `end - i` a multiple of 16 and
/// the `x` pointers valid for `end` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn steps<S: SimdSeg, const W: usize, const R: usize, const MODE: u8>(
    w: &[S; W],
    xp: &[*const f32; R],
    p: &[Factors; W],
    mut i: usize,
    end: usize,
    acc0: &mut [[__m256; R]; W],
    acc1: &mut [[__m256; R]; W],
) {
    assert!(end <= w[0].len());
    // SAFETY: forwarded from the caller; every decode covers [i, i + 16) with i + 16 <= end <= len
    // (all segments have one length).
    unsafe {
        while i < end {
            for a in 0..W {
                let [wa, wb] = w[a].decode16::<MODE>(i, p[a]);
                for r in 0..R {
                    acc0[a][r] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xp[r].add(i)), acc0[a][r]);
                    acc1[a][r] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xp[r].add(i + 8)), acc1[a][r]);
                }
            }
            i += 16;
        }
    }
}
