//! Weight-matrix formats as the kernels see them.
//!
//! A [`Format`] is a borrowed `[out_dim, in_dim]` matrix in some storage format; it hands out
//! [`Seg`]s, one weight row restricted to one `i`-block. A segment decodes its weights on the fly:
//! [`Seg::get`] gives one weight as f32, computed with exactly the f32 operations of the matching
//! dequantizer in [`crate::quant`] (`code value * scale`), so a kernel that feeds decoded weights
//! into the canonical summation order reproduces the dense kernels on the dequantized matrix bit
//! for bit. [`Seg::block_avx2`] is the format's AVX2 block kernel.
//!
//! Nothing is ever dequantized into a copy of the matrix: the quantized bytes are read once per
//! pass and decoded in registers.

use super::Weight;
use crate::bf16::bf16_to_f32;
use crate::quant::{e2m1_to_f32, e4m3_to_f32, e8m0_to_f32};

/// One weight row restricted to one `i`-block.
pub(super) trait Seg: Copy + Send + Sync {
    /// Number of weights.
    fn len(&self) -> usize;

    /// Weight `i` (`< len()`) decoded to f32, exactly as the format's dequantizer computes it.
    fn get(&self, i: usize) -> f32;

    /// The format's AVX2 + FMA block kernel: `out[a][r] = dot(w[a], x[r])` in the canonical order
    /// (see [`super`]), all segments and input slices of one common length.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; only called (inlined) from `#[target_feature(enable = "avx2,fma")]`
    /// code. Implementations must be `#[inline(always)]`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx2<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W];

    /// The format's block kernel for AVX-512 machines, bit-identical to [`Seg::block_avx2`]
    /// (which it is unless overridden).
    ///
    /// # Safety
    /// Requires AVX-512F, AVX2, FMA and F16C; only called (inlined) from `#[target_feature]` code
    /// with those features. Implementations must be `#[inline(always)]`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: forwarded from the caller.
        unsafe { Self::block_avx2(w, x) }
    }
}

/// A borrowed weight matrix `[out_dim, in_dim]`.
pub(super) trait Format: Copy + Send + Sync {
    /// The segment type.
    type Seg: Seg;

    /// Weight rows processed together against a single input row (at most 4; see `tile.rs`). More
    /// rows share each input load, but decoding needs registers too: FP8 uses 2 (with 4 its
    /// accumulators spill), the others 4.
    const SINGLE_ROW_GROUP: usize;

    /// Whether this is a dense (bf16 / f32) matrix.
    const DENSE: bool = false;

    /// Row `o`, columns `off..off + len`. `off` is a multiple of [`super::KC`].
    fn seg(self, o: usize, off: usize, len: usize) -> Self::Seg;
}

/// A dense bf16 or f32 matrix.
#[derive(Clone, Copy)]
pub(super) struct Dense<'a, E> {
    pub w: &'a [E],
    pub in_dim: usize,
}

impl<'a, E: Weight> Format for Dense<'a, E> {
    type Seg = &'a [E];
    const SINGLE_ROW_GROUP: usize = 4;
    const DENSE: bool = true;

    #[inline(always)]
    fn seg(self, o: usize, off: usize, len: usize) -> &'a [E] {
        &self.w[o * self.in_dim + off..][..len]
    }
}

impl<E: Weight> Seg for &[E] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[E]>::len(self)
    }

    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self[i].to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86::block(w, x) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86::block512(w, x) }
    }
}

/// FP8 E4M3 weights `[out_dim, in_dim]` with E8M0 scales `[ceil(out_dim / block), ceil(in_dim /
/// block)]`.
#[derive(Clone, Copy)]
pub(super) struct Fp8<'a> {
    pub w: &'a [u8],
    pub scale: &'a [u8],
    pub in_dim: usize,
    pub block: usize,
    /// `ceil(in_dim / block)`.
    pub col_blocks: usize,
}

/// A row segment of an [`Fp8`] matrix.
#[derive(Clone, Copy)]
pub(super) struct Fp8Seg<'a> {
    /// The segment's weight bytes.
    pub w: &'a [u8],
    /// The scales of the row's block row (`ceil(in_dim / block)` of them).
    pub scale: &'a [u8],
    /// Column of the segment's first weight.
    pub col0: usize,
    pub block: usize,
    /// Bytes per matrix row (`in_dim`).
    pub row_bytes: usize,
}

impl<'a> Format for Fp8<'a> {
    type Seg = Fp8Seg<'a>;
    const SINGLE_ROW_GROUP: usize = 2;

    #[inline(always)]
    fn seg(self, o: usize, off: usize, len: usize) -> Fp8Seg<'a> {
        let col_blocks = self.col_blocks;
        Fp8Seg {
            w: &self.w[o * self.in_dim + off..][..len],
            scale: &self.scale[(o / self.block) * col_blocks..][..col_blocks],
            col0: off,
            block: self.block,
            row_bytes: self.in_dim,
        }
    }
}

impl Seg for Fp8Seg<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.w.len()
    }

    /// `e4m3(w) * e8m0(scale)`, as [`crate::quant::dequant_fp8_blocks`].
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        e4m3_to_f32(self.w[i]) * e8m0_to_f32(self.scale[(self.col0 + i) / self.block])
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86_quant::block(w, x) }
    }
}

/// A 4-bit code: how a nibble and its group scale decode (FP4 E2M1 with E8M0 scales, or INT4 with
/// bf16 scales).
pub(super) trait Nibble: Copy + Send + Sync + 'static {
    /// Storage type of one scale.
    type Scale: Copy + Send + Sync;

    /// The nibble's value (low 4 bits of `n`).
    fn value(n: u8) -> f32;

    /// The scale's value.
    fn scale(s: Self::Scale) -> f32;

    /// The AVX2 decoder's per-group constant for scale `s`; see `x86_quant.rs`.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_factor(s: Self::Scale) -> std::arch::x86_64::__m256;

    /// The AVX2 decoder's last step: 8 nibbles, each in the top 4 bits of its 32-bit lane, to 8
    /// weights, given the group's [`Nibble::simd_factor`]; see `x86_quant.rs`.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into `#[target_feature]` code).
    #[cfg(target_arch = "x86_64")]
    unsafe fn simd_finish(
        t: std::arch::x86_64::__m256i,
        m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256;
}

/// FP4 E2M1 nibbles with E8M0 scales (the official checkpoint's routed experts).
#[derive(Clone, Copy)]
pub(super) struct Fp4Code;

impl Nibble for Fp4Code {
    type Scale = u8;

    #[inline(always)]
    fn value(n: u8) -> f32 {
        e2m1_to_f32(n)
    }

    #[inline(always)]
    fn scale(s: u8) -> f32 {
        e8m0_to_f32(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn simd_factor(s: u8) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86_decode::fp4_table(e8m0_to_f32(s)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn simd_finish(
        t: std::arch::x86_64::__m256i,
        m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86_decode::fp4_finish(t, m) }
    }
}

/// Symmetric signed INT4 nibbles (two's complement, `-8..=7`) with bf16 scales (our format, see
/// `docs/FORMATS.md`).
#[derive(Clone, Copy)]
pub(super) struct Int4Code;

impl Nibble for Int4Code {
    type Scale = u16;

    #[inline(always)]
    fn value(n: u8) -> f32 {
        crate::quant::int4_value(n) as f32
    }

    #[inline(always)]
    fn scale(s: u16) -> f32 {
        bf16_to_f32(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn simd_factor(s: u16) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm256_set1_ps(bf16_to_f32(s)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn simd_finish(
        t: std::arch::x86_64::__m256i,
        m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86_decode::int4_finish(t, m) }
    }
}

/// Packed 4-bit weights `[out_dim, in_dim / 2]` (byte `k` of a row: column `2k` in the low nibble,
/// `2k + 1` in the high one) with scales `[out_dim, ceil(in_dim / group)]`.
pub(super) struct Nib4<'a, C: Nibble> {
    pub w: &'a [u8],
    pub scale: &'a [C::Scale],
    pub in_dim: usize,
    pub group: usize,
    /// `ceil(in_dim / group)`.
    pub groups: usize,
}

// Manual impls: a derive would require `C: Clone`/`Copy` bounds it does not need.
impl<C: Nibble> Clone for Nib4<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: Nibble> Copy for Nib4<'_, C> {}

/// A row segment of a [`Nib4`] matrix.
pub(super) struct Nib4Seg<'a, C: Nibble> {
    /// The bytes holding the segment's weights (`ceil(len / 2)`; the segment starts at an even
    /// column).
    pub w: &'a [u8],
    /// The row's scales.
    pub scale: &'a [C::Scale],
    pub col0: usize,
    pub len: usize,
    pub group: usize,
    /// Bytes per matrix row (`in_dim / 2`).
    pub row_bytes: usize,
}

impl<C: Nibble> Clone for Nib4Seg<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: Nibble> Copy for Nib4Seg<'_, C> {}

impl<'a, C: Nibble> Format for Nib4<'a, C> {
    type Seg = Nib4Seg<'a, C>;
    const SINGLE_ROW_GROUP: usize = 4;

    #[inline(always)]
    fn seg(self, o: usize, off: usize, len: usize) -> Nib4Seg<'a, C> {
        let groups = self.groups;
        // in_dim and off are even, so the segment starts on a byte boundary.
        Nib4Seg {
            w: &self.w[(o * self.in_dim + off) / 2..][..len.div_ceil(2)],
            scale: &self.scale[o * groups..][..groups],
            col0: off,
            len,
            group: self.group,
            row_bytes: self.in_dim / 2,
        }
    }
}

impl<C: Nibble> Seg for Nib4Seg<'_, C> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    /// `value(nibble) * scale`, as the format's dequantizer.
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        let nibble = self.w[i / 2] >> ((i & 1) * 4);
        C::value(nibble & 0x0F) * C::scale(self.scale[(self.col0 + i) / self.group])
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2<const W: usize, const R: usize>(
        w: [Self; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        // SAFETY: forwarded from the caller.
        unsafe { super::x86_quant::block(w, x) }
    }
}
