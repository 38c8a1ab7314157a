//! AVX2 decoders of the quantized formats for the block kernel in `x86_quant.rs`: how 8 or 16
//! weights of an FP8, FP4 or INT4 row segment become f32 vectors (see that module for the methods
//! and why they are exact).

use super::format::{Fp8Seg, Nib4Seg, Nibble, Seg};
use crate::quant::e8m0_to_f32;
use std::arch::x86_64::*;

/// Decoding modes, fastest first. The 4-bit formats only use [`FAST`]. FP8: [`FAST`] places the
/// code bits straight into an f32 (needs a block without subnormal or NaN codes and a scale of at
/// most `2^7`), [`MID`] goes through FP16 (any non-NaN code, scales up to `2^119`), [`SLOW`]
/// handles everything (NaN codes patched in, two multiplies).
pub(super) const FAST: u8 = 0;
/// See [`FAST`].
pub(super) const MID: u8 = 1;
/// See [`FAST`].
pub(super) const SLOW: u8 = 2;

/// A quantized segment the AVX2 kernel decodes 8 or 16 weights at a time.
pub(super) trait SimdSeg: Seg {
    /// The slowest mode [`SimdSeg::codes_mode`] and [`SimdSeg::scale_mode`] can ask for.
    const MAX_MODE: u8;

    /// Scale group size along the input dimension.
    fn group(&self) -> usize;

    /// Column of the segment's first weight.
    fn col0(&self) -> usize;

    /// The mode the codes among the segment's first `n` weights (`n <= len()`, a multiple of 16)
    /// need.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    unsafe fn codes_mode(&self, n: usize) -> u8;

    /// The mode scale group `g` (a group index of the row) needs.
    fn scale_mode(&self, g: usize) -> u8;

    /// Decoding constants for scale group `g` in `mode` (at least [`SimdSeg::scale_mode`]).
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    unsafe fn params(&self, g: usize, mode: u8) -> Factors;

    /// Address of the byte holding weight `i` of the row `rows` rows below (possibly outside the
    /// matrix: only used as a prefetch hint).
    fn ahead(&self, i: usize, rows: usize) -> *const i8;

    /// Weights `i..i + 16`, all in the group of `p`, decoded in `MODE` (`p` from
    /// [`SimdSeg::params`] with that mode).
    ///
    /// # Safety
    /// Requires AVX2 and F16C (inlined into `#[target_feature]` code) and `i + 16 <= len()`.
    unsafe fn decode16<const MODE: u8>(&self, i: usize, p: Factors) -> [__m256; 2];

    /// Weights `i..i + 8`, all in the group of `p`, decoded in [`SLOW`] mode.
    ///
    /// # Safety
    /// Requires AVX2 and F16C (inlined into `#[target_feature]` code) and `i + 8 <= len()`.
    unsafe fn decode8(&self, i: usize, p: Factors) -> __m256;
}

/// Broadcast decoding factors: the decoded bits are multiplied by `m` (and then by `m2` in
/// [`SLOW`] mode).
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
    const MAX_MODE: u8 = SLOW;

    #[inline(always)]
    fn group(&self) -> usize {
        self.block
    }

    #[inline(always)]
    fn col0(&self) -> usize {
        self.col0
    }

    #[inline(always)]
    unsafe fn codes_mode(&self, n: usize) -> u8 {
        assert!(n.is_multiple_of(16) && n <= self.w.len());
        // SAFETY: the caller guarantees AVX2; the scan reads bytes 0..n, in bounds (checked).
        unsafe {
            // With t = b & 0x7F: NaN codes have t = 0x7F (the largest t), subnormal codes t in
            // 1..=7 (so t - 1, wrapping, below 7).
            let p = self.w.as_ptr();
            let (mask, one) = (_mm256_set1_epi8(0x7F), _mm256_set1_epi8(1));
            let mut hi = _mm256_setzero_si256();
            let mut lo = _mm256_set1_epi8(-1);
            let mut k = 0;
            while k + 64 <= n {
                let t0 = _mm256_and_si256(_mm256_loadu_si256(p.add(k).cast()), mask);
                let t1 = _mm256_and_si256(_mm256_loadu_si256(p.add(k + 32).cast()), mask);
                hi = _mm256_max_epu8(hi, _mm256_max_epu8(t0, t1));
                let m = _mm256_min_epu8(_mm256_sub_epi8(t0, one), _mm256_sub_epi8(t1, one));
                lo = _mm256_min_epu8(lo, m);
                k += 64;
            }
            let mut hi = _mm_max_epu8(
                _mm256_castsi256_si128(hi),
                _mm256_extracti128_si256::<1>(hi),
            );
            let mut lo = _mm_min_epu8(
                _mm256_castsi256_si128(lo),
                _mm256_extracti128_si256::<1>(lo),
            );
            while k < n {
                let t = _mm_and_si128(_mm_loadu_si128(p.add(k).cast()), _mm_set1_epi8(0x7F));
                hi = _mm_max_epu8(hi, t);
                lo = _mm_min_epu8(lo, _mm_sub_epi8(t, _mm_set1_epi8(1)));
                k += 16;
            }
            let nan = _mm_movemask_epi8(_mm_cmpeq_epi8(hi, _mm_set1_epi8(0x7F))) != 0;
            // Unsigned lo < 7 <=> min(lo, 6) == lo.
            let sub =
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(lo, _mm_set1_epi8(6)), lo)) != 0;
            if nan {
                SLOW
            } else if sub {
                MID
            } else {
                FAST
            }
        }
    }

    #[inline(always)]
    fn scale_mode(&self, g: usize) -> u8 {
        match self.scale[g] {
            0..=134 => FAST,
            135..=246 => MID,
            _ => SLOW,
        }
    }

    #[inline(always)]
    unsafe fn params(&self, g: usize, mode: u8) -> Factors {
        let e = self.scale[g] as i32;
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            match mode {
                // scale * 2^120 = 2^(e - 7), a normal f32 for e <= 134 (also for e = 0, the
                // subnormal scale 2^-127).
                FAST => Factors::new(pow2(e - 7), 1.0),
                // scale * 2^8 = 2^(e - 119), a normal f32 for e <= 246.
                MID => Factors::new(pow2(e - 119), 1.0),
                _ if e <= 246 => Factors::new(pow2(e - 119), 1.0),
                _ => Factors::new(pow2(8), e8m0_to_f32(e as u8)),
            }
        }
    }

    #[inline(always)]
    fn ahead(&self, i: usize, rows: usize) -> *const i8 {
        self.w
            .as_ptr()
            .wrapping_add(i + rows * self.row_bytes)
            .cast()
    }

    #[inline(always)]
    unsafe fn decode16<const MODE: u8>(&self, i: usize, p: Factors) -> [__m256; 2] {
        debug_assert!(i + 16 <= self.w.len());
        // SAFETY: the caller guarantees i + 16 <= len, AVX2 and F16C.
        unsafe {
            let ptr = self.w.as_ptr().add(i);
            if MODE == FAST {
                let lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(ptr.cast()));
                let hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(ptr.add(8).cast()));
                return [fp8_direct(lo, p), fp8_direct(hi, p)];
            }
            let b = _mm_loadu_si128(ptr.cast());
            let h = fp8_to_fp16(_mm256_cvtepi8_epi16(b));
            let mut lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
            let mut hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
            if MODE == SLOW {
                lo = fp8_nan(lo, b);
                hi = fp8_nan(hi, _mm_unpackhi_epi64(b, b));
            }
            [fp8_scale::<MODE>(lo, p), fp8_scale::<MODE>(hi, p)]
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
            fp8_scale::<SLOW>(v, p)
        }
    }
}

/// [`FAST`] FP8 decoding of 8 sign-extended codes: shifted left by 20, the mantissa lands at bits
/// 20-22 and the exponent at 23-26 with the sign copied into bits 27-31; masking keeps bits 20-26
/// and 31, the f32 `e4m3 * 2^-120` (normal, as subnormal codes are excluded), then one multiply
/// by `scale * 2^120`.
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn fp8_direct(b: __m256i, p: Factors) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let v = _mm256_and_si256(
            _mm256_slli_epi32::<20>(b),
            _mm256_set1_epi32(0x87F0_0000u32 as i32),
        );
        _mm256_mul_ps(_mm256_castsi256_ps(v), p.m)
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

/// `v * m`, and then `* m2` in [`SLOW`] mode.
///
/// # Safety
/// Requires AVX2 (inlined into `#[target_feature]` code).
#[inline(always)]
unsafe fn fp8_scale<const MODE: u8>(v: __m256, p: Factors) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let v = _mm256_mul_ps(v, p.m);
        if MODE == SLOW {
            _mm256_mul_ps(v, p.m2)
        } else {
            v
        }
    }
}

impl<C: Nibble> SimdSeg for Nib4Seg<'_, C> {
    const MAX_MODE: u8 = FAST;

    #[inline(always)]
    fn group(&self) -> usize {
        self.group
    }

    #[inline(always)]
    fn col0(&self) -> usize {
        self.col0
    }

    #[inline(always)]
    unsafe fn codes_mode(&self, _n: usize) -> u8 {
        FAST
    }

    #[inline(always)]
    fn scale_mode(&self, _g: usize) -> u8 {
        FAST
    }

    #[inline(always)]
    unsafe fn params(&self, g: usize, _mode: u8) -> Factors {
        // SAFETY: the caller guarantees AVX2.
        let m = unsafe { C::simd_factor(self.scale[g]) };
        Factors { m, m2: m }
    }

    #[inline(always)]
    fn ahead(&self, i: usize, rows: usize) -> *const i8 {
        self.w
            .as_ptr()
            .wrapping_add(i / 2 + rows * self.row_bytes)
            .cast()
    }

    #[inline(always)]
    unsafe fn decode16<const MODE: u8>(&self, i: usize, p: Factors) -> [__m256; 2] {
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
