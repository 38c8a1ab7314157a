//! AVX2 + FMA block kernels for quantized weights: FP8 E4M3 (E8M0 block scales) and the packed
//! 4-bit formats FP4 E2M1 (E8M0 group scales) and INT4 (bf16 group scales).
//!
//! Weights are decoded in registers, 8 at a time, straight from the quantized bytes, into exactly
//! the f32 values the dequantizers produce (`code value * scale`: one correctly rounded multiply
//! of the same exact product); the decoded vectors then go through the canonical summation order
//! of the dense kernel in `x86.rs` (same accumulators, same FMAs, same horizontal sum, same scalar
//! tail). A quantized matrix therefore gives bit-identical results to the dense kernels on its
//! dequantized copy.
//!
//! * FP8: `vpmovsxbd` widens 8 bytes; shifting the sign-extended byte left by 20 and masking with
//!   `0x87F0_0000` puts sign, exponent and mantissa in place: the E4M3 value times `2^-120` as an
//!   f32 (subnormal codes become f32 subnormals with the same factor). One multiply by `scale *
//!   2^120 = 2^(e - 7)` then gives `e4m3 * scale`. The two NaN codes would decode as finite
//!   numbers, so each row's bytes of an `i`-block are first scanned for them (two instructions
//!   per 32 bytes, which also pulls the block's cache lines in early); a block with NaN codes, or
//!   a group with a scale above `2^7` (so `2^(e - 7)` does not exist as an f32; never seen in real
//!   checkpoints), takes the slow decode: NaN lanes patched in, and two multiplies `(v * 2^120) *
//!   scale`.
//! * 4-bit: the 4 bytes holding 8 weights are broadcast to all lanes and shifted left by `28 - 4j`
//!   in lane `j` (`vpsllvd`), which puts nibble `j` (column order: byte `k` holds columns `2k`, `2k
//!   + 1` in its low, high nibble) in the top 4 bits of lane `j`. INT4: an arithmetic shift right
//!   by 28 gives `q`, converted and multiplied by the scale. FP4: an arithmetic shift right by 6
//!   and a mask put the sign at bit 31 and the 3 magnitude bits at bits 22-24, the E2M1 value times
//!   `2^-126` (code 1 is the f32 subnormal `2^-127`); one multiply by `scale * 2^126` (or two
//!   multiplies for scales above `2^1`) finishes. Both are 5 instructions per 8 weights including
//!   the FMA.
//!
//! Scale groups (along the input dimension) that are multiples of 16 keep one set of decoding
//! constants per row for whole 16-element steps, computed once per group; other group sizes fall
//! back to decoding lane by lane with [`Seg::get`], still in the canonical order.

use super::format::{Fp8Seg, Nib4Seg, Nibble, Seg};
use super::x86::hsum;
use crate::quant::e8m0_to_f32;
use std::arch::x86_64::*;

const PF: bool = option_env!("QPF").is_some();
const GATHER: bool = option_env!("QGATHER").is_some();

/// A quantized segment the AVX2 kernel decodes 8 weights at a time.
pub(super) trait SimdSeg: Seg {
    /// Scale group size along the input dimension.
    fn group(&self) -> usize;

    /// Column of the segment's first weight.
    fn col0(&self) -> usize;

    /// Whether the segment's first `n` weights (`n <= len()`, a multiple of 16) contain codes the
    /// fast decode gets wrong (FP8 NaN codes), so that everything must take the slow decode.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    unsafe fn has_special(&self, n: usize) -> bool;

    /// Decoding constants `(m, m2)` for scale group `g` (a group index of the row), and whether
    /// they need the slow decode.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    unsafe fn params(&self, g: usize) -> (Factors, bool);

    /// Address of the byte holding weight `i` of the row `rows` rows below (possibly outside the
    /// matrix: only used as a prefetch hint).
    fn ahead(&self, i: usize, rows: usize) -> *const i8;

    /// Whether [`SimdSeg::params`] can ask for the slow decode at all.
    const CAN_BE_SLOW: bool;

    /// Weights `i..i + 16`, all in the group of `p`.
    ///
    /// # Safety
    /// Requires AVX2 and F16C (inlined into `#[target_feature]` code) and `i + 16 <= len()`.
    unsafe fn decode16<const SLOW: bool>(&self, i: usize, p: Factors) -> [__m256; 2];

    /// Weights `i..i + 8`, all in the group of `p`, decoded the slow (always valid) way.
    ///
    /// # Safety
    /// Requires AVX2 and F16C (inlined into `#[target_feature]` code) and `i + 8 <= len()`.
    unsafe fn decode8(&self, i: usize, p: Factors) -> __m256;
}

/// Broadcast decoding factors: the decoded bits are multiplied by `m` (and then by `m2` in the
/// slow case).
#[derive(Clone, Copy)]
pub(super) struct Factors {
    m: __m256,
    m2: __m256,
}

impl Factors {
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    #[inline(always)]
    unsafe fn new(m: f32, m2: f32) -> Factors {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            Factors {
                m: _mm256_set1_ps(m),
                m2: _mm256_set1_ps(m2),
            }
        }
    }
}

/// `2^k` for `k` in the normal f32 exponent range.
const fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

impl SimdSeg for Fp8Seg<'_> {
    #[inline(always)]
    fn group(&self) -> usize {
        self.block
    }

    #[inline(always)]
    fn col0(&self) -> usize {
        self.col0
    }

    #[inline(always)]
    unsafe fn has_special(&self, n: usize) -> bool {
        assert!(n.is_multiple_of(16) && n <= self.w.len());
        if GATHER {
            return false;
        }
        // SAFETY: the caller guarantees AVX2; the scan reads bytes 0..n, in bounds (checked).
        unsafe {
            // NaN codes (0x7F, 0xFF) are the bytes with bits 0-6 all set: `b | 0x80 == 0xFF`.
            let p = self.w.as_ptr();
            let hi = _mm256_set1_epi8(-128);
            let mut acc = _mm256_setzero_si256();
            let mut k = 0;
            while k + 128 <= n {
                let b0 = _mm256_or_si256(_mm256_loadu_si256(p.add(k).cast()), hi);
                let b1 = _mm256_or_si256(_mm256_loadu_si256(p.add(k + 32).cast()), hi);
                let b2 = _mm256_or_si256(_mm256_loadu_si256(p.add(k + 64).cast()), hi);
                let b3 = _mm256_or_si256(_mm256_loadu_si256(p.add(k + 96).cast()), hi);
                let m = _mm256_max_epu8(_mm256_max_epu8(b0, b1), _mm256_max_epu8(b2, b3));
                acc = _mm256_max_epu8(acc, m);
                k += 128;
            }
            while k + 32 <= n {
                let b = _mm256_loadu_si256(p.add(k).cast());
                acc = _mm256_max_epu8(acc, _mm256_or_si256(b, hi));
                k += 32;
            }
            let mut acc = _mm_max_epu8(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            if k < n {
                let b = _mm_loadu_si128(p.add(k).cast());
                acc = _mm_max_epu8(acc, _mm_or_si128(b, _mm256_castsi256_si128(hi)));
            }
            _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_set1_epi8(-1))) != 0
        }
    }

    #[inline(always)]
    unsafe fn params(&self, g: usize) -> (Factors, bool) {
        let e = self.scale[g] as i32;
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            if GATHER {
                return (Factors::new(e8m0_to_f32(e as u8), 1.0), false);
            }
            if e <= 246 {
                // scale * 2^8 = 2^(e - 119), a normal f32 (also for e = 0, the subnormal 2^-127).
                (Factors::new(pow2(e - 119), 1.0), false)
            } else {
                (Factors::new(pow2(8), e8m0_to_f32(e as u8)), true)
            }
        }
    }

    const CAN_BE_SLOW: bool = true;

    #[inline(always)]
    fn ahead(&self, i: usize, rows: usize) -> *const i8 {
        self.w
            .as_ptr()
            .wrapping_add(i + rows * self.row_bytes)
            .cast()
    }

    #[inline(always)]
    unsafe fn decode16<const SLOW: bool>(&self, i: usize, p: Factors) -> [__m256; 2] {
        debug_assert!(i + 16 <= self.w.len());
        // SAFETY: the caller guarantees i + 16 <= len, AVX2 and F16C.
        unsafe {
            if GATHER {
                let lut = crate::quant::E4M3_LUT.as_ptr();
                let p8 = self.w.as_ptr().add(i);
                let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p8.cast()));
                let hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p8.add(8).cast()));
                return [
                    _mm256_mul_ps(_mm256_i32gather_ps::<4>(lut, lo), p.m),
                    _mm256_mul_ps(_mm256_i32gather_ps::<4>(lut, hi), p.m),
                ];
            }
            let b = _mm_loadu_si128(self.w.as_ptr().add(i).cast());
            let h = fp8_to_fp16(_mm256_cvtepi8_epi16(b));
            let mut lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
            let mut hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
            if SLOW {
                lo = fp8_nan(lo, b);
                hi = fp8_nan(hi, _mm_unpackhi_epi64(b, b));
            }
            [fp8_scale::<SLOW>(lo, p), fp8_scale::<SLOW>(hi, p)]
        }
    }

    #[inline(always)]
    unsafe fn decode8(&self, i: usize, p: Factors) -> __m256 {
        debug_assert!(i + 8 <= self.w.len());
        // SAFETY: the caller guarantees i + 8 <= len, AVX2 and F16C.
        unsafe {
            let b = _mm_loadl_epi64(self.w.as_ptr().add(i).cast());
            let h = fp8_to_fp16(_mm256_castsi128_si256(_mm_cvtepi8_epi16(b)));
            let v = fp8_nan(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), b);
            fp8_scale::<true>(v, p)
        }
    }
}

/// Sign-extended E4M3 bytes (16-bit lanes) to FP16 bit patterns of `e4m3 * 2^-8`: shifted left by
/// 7, exponent and mantissa land in FP16's (exponent bits 10-13, mantissa 7-9) and the sign in bit
/// 15; bit 14 (a copy of the sign) is cleared. E4M3 subnormals become FP16 subnormals with the same
/// factor, which `vcvtph2ps` turns into normal f32 (f32 subnormals would slow the multiplies
/// down).
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn fp8_to_fp16(w: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe { _mm256_and_si256(_mm256_slli_epi16::<7>(w), _mm256_set1_epi16(!0x4000)) }
}

/// Makes the lanes of `v` whose code among the low 8 bytes of `b` is a NaN code NaN.
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn fp8_nan(v: __m256, b: __m128i) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        // NaN codes (0x7F, 0xFF) have bits 0-6 all set.
        let nan = _mm_cmpeq_epi8(_mm_or_si128(b, _mm_set1_epi8(-128)), _mm_set1_epi8(-1));
        _mm256_or_ps(v, _mm256_castsi256_ps(_mm256_cvtepi8_epi32(nan)))
    }
}

/// `v * m` (fast) or `(v * m) * m2` (slow).
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn fp8_scale<const SLOW: bool>(v: __m256, p: Factors) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let v = _mm256_mul_ps(v, p.m);
        if SLOW { _mm256_mul_ps(v, p.m2) } else { v }
    }
}

impl<C: Nibble> SimdSeg for Nib4Seg<'_, C> {
    #[inline(always)]
    fn group(&self) -> usize {
        self.group
    }

    #[inline(always)]
    fn col0(&self) -> usize {
        self.col0
    }

    #[inline(always)]
    unsafe fn has_special(&self, _n: usize) -> bool {
        false
    }

    #[inline(always)]
    unsafe fn params(&self, g: usize) -> (Factors, bool) {
        // SAFETY: the caller guarantees AVX2.
        let m = unsafe { C::simd_factor(self.scale[g]) };
        (Factors { m, m2: m }, false)
    }

    const CAN_BE_SLOW: bool = false;

    #[inline(always)]
    fn ahead(&self, i: usize, rows: usize) -> *const i8 {
        self.w
            .as_ptr()
            .wrapping_add(i / 2 + rows * self.row_bytes)
            .cast()
    }

    #[inline(always)]
    unsafe fn decode16<const SLOW: bool>(&self, i: usize, p: Factors) -> [__m256; 2] {
        // SAFETY: forwarded from the caller.
        unsafe { [self.decode8(i, p), self.decode8(i + 8, p)] }
    }

    #[inline(always)]
    unsafe fn decode8(&self, i: usize, p: Factors) -> __m256 {
        debug_assert!(i.is_multiple_of(8) && i / 2 + 4 <= self.w.len());
        // SAFETY: the caller guarantees i + 8 <= len (so the 4 bytes at i / 2 are in bounds) and
        // AVX2.
        unsafe {
            let word = self.w.as_ptr().add(i / 2).cast::<i32>().read_unaligned();
            let t = _mm256_sllv_epi32(
                _mm256_set1_epi32(word),
                _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0),
            );
            C::simd_finish(t, p.m)
        }
    }
}

/// The FP4 decoding table for scale `s`: `e2m1 magnitude * s` for the 8 magnitude codes.
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
pub(super) unsafe fn fp4_table(s: f32) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        _mm256_mul_ps(
            _mm256_setr_ps(0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
            _mm256_set1_ps(s),
        )
    }
}

/// FP4: nibbles in the top 4 bits of each lane to `e2m1 * scale`, with the group's
/// [`fp4_table`].
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
pub(super) unsafe fn fp4_finish(t: __m256i, table: __m256) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        // The magnitude code (bits 28-30) indexes the table; the sign (bit 31) is or-ed in.
        let mag = _mm256_permutevar8x32_ps(table, _mm256_srli_epi32::<28>(t));
        let sign = _mm256_and_si256(t, _mm256_set1_epi32(i32::MIN));
        _mm256_or_ps(mag, _mm256_castsi256_ps(sign))
    }
}

/// INT4: nibbles in the top 4 bits of each lane to `q * scale`.
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
pub(super) unsafe fn int4_finish(t: __m256i, m: __m256) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe { _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32::<28>(t)), m) }
}

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
            let mut special = false;
            for s in &w {
                special |= s.has_special(n16);
            }
            if PF {
                // The same columns of the next group of rows (the data the decode schedule needs
                // next), one cache line at a time.
                for s in &w {
                    let (mut a, hi) = (s.ahead(0, W), s.ahead(n, W));
                    while a < hi {
                        _mm_prefetch::<_MM_HINT_T0>(a);
                        a = a.wrapping_add(64);
                    }
                }
            }
            if !S::CAN_BE_SLOW && group == 32 {
                // One iteration per scale group of 32 (the checkpoint's FP4, the default INT4):
                // a straight-line loop whose only per-group work is fetching the scales.
                let mut g = col0 / 32;
                while i + 32 <= n16 {
                    let mut p = [w[0].params(g).0; W];
                    for a in 1..W {
                        p[a] = w[a].params(g).0;
                    }
                    steps::<S, W, R, false>(&w, &xp, &p, i, i + 32, &mut acc0, &mut acc1);
                    i += 32;
                    g += 1;
                }
            }
            let mut g = (col0 + i) / group;
            let mut end = ((g + 1) * group - col0).min(n16);
            while i < n16 {
                let (p0, mut slow) = w[0].params(g);
                let mut p = [p0; W];
                for a in 1..W {
                    let (pa, sa) = w[a].params(g);
                    p[a] = pa;
                    slow |= sa;
                }
                if S::CAN_BE_SLOW && (slow || special) {
                    steps::<S, W, R, true>(&w, &xp, &p, i, end, &mut acc0, &mut acc1);
                } else {
                    steps::<S, W, R, false>(&w, &xp, &p, i, end, &mut acc0, &mut acc1);
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
                    let (p, _) = w[a].params(g);
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
        let mut out = [[0.0; R]; W];
        for a in 0..W {
            for r in 0..R {
                let mut s = hsum(_mm256_add_ps(acc0[a][r], acc1[a][r]));
                // Scalar tail (< 8 elements), one by one.
                for k in i..n {
                    s += w[a].get(k) * x[r][k];
                }
                out[a][r] = s;
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
unsafe fn steps<S: SimdSeg, const W: usize, const R: usize, const SLOW: bool>(
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
                let [wa, wb] = w[a].decode16::<SLOW>(i, p[a]);
                for r in 0..R {
                    acc0[a][r] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xp[r].add(i)), acc0[a][r]);
                    acc1[a][r] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xp[r].add(i + 8)), acc1[a][r]);
                }
            }
            i += 16;
        }
    }
}
