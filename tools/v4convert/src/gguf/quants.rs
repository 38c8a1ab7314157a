//! Block encoders and decoders for the ggml types this converter writes: F16 scalars, `Q8_0`,
//! `MXFP4` (lossless repack of DeepSeek FP4 E2M1) and `Q4_0` (lossless repack of our INT4).
//!
//! Encoders work on whole rows (`ne0` elements, a multiple of 32). The `Q8_0` quantizer reproduces
//! ggml's reference quantizer and gguf-py's numpy port bit for bit: per block of 32, `d = amax /
//! 127` in f32, `id = 1 / d` (0 when `d == 0`), `q = round_half_away_from_zero(x * id)`, `d` stored
//! as IEEE f16 rounded to nearest even.

use rayon::prelude::*;
use v4_kernels::bf16::bf16_to_f32;

use super::types::GgmlType;

/// Elements per `Q8_0`, `Q4_0` and `MXFP4` block.
pub const QK: usize = 32;
/// Bytes per `Q8_0` block (f16 scale + 32 int8).
pub const Q8_0_BYTES: usize = 34;
/// Bytes per `MXFP4` block (E8M0 scale + 16 bytes of nibbles).
pub const MXFP4_BYTES: usize = 17;
/// Bytes per `Q4_0` block (f16 scale + 16 bytes of nibbles).
pub const Q4_0_BYTES: usize = 18;

/// Narrows an f32 to IEEE binary16 with round-to-nearest, ties-to-even (what numpy's
/// `astype(float16)` and F16C's `vcvtps2ph` do). Overflow gives infinity, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32;
    let man = b & 0x007F_FFFF;
    if exp == 0xFF {
        let nan = if man != 0 {
            0x0200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7C00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    if e <= 0 {
        // f16 subnormal (or zero): units of 2^-24.
        if e < -10 {
            return sign;
        }
        let m = man | 0x0080_0000;
        let shift = (14 - e) as u32;
        let q = m >> shift;
        let rem = m & ((1u32 << shift) - 1);
        let half = 1u32 << (shift - 1);
        let q = if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        };
        return sign | q as u16;
    }
    let h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1FFF;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    let h = if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h + 1
    } else {
        h
    };
    sign | h as u16
}

/// Widens an IEEE binary16 bit pattern to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x03FF) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: man * 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, _) => sign | 0x7FC0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Quantizes one block of 32 values to `Q8_0` (34 bytes).
fn q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        // `f32::round` rounds half away from zero, like C `roundf` and gguf-py's `np_roundf`.
        *o = ((v * id).round() as i8) as u8;
    }
}

/// Quantizes `x` (a whole number of 32-element blocks) to `Q8_0` into `out`
/// (`x.len() / 32 * 34` bytes). Runs on the current rayon pool.
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len() % QK, 0);
    debug_assert_eq!(out.len(), x.len() / QK * Q8_0_BYTES);
    out.par_chunks_mut(Q8_0_BYTES * 64)
        .zip(x.par_chunks(QK * 64))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(Q8_0_BYTES).zip(x.chunks(QK)) {
                q8_0_block(x, o);
            }
        });
}

/// Repacks one row of DeepSeek FP4 (E2M1 nibbles, byte `k` = columns `2k` low / `2k + 1` high;
/// one E8M0 scale per `group` columns) into ggml `MXFP4` blocks (per 32 columns: the E8M0 byte,
/// then byte `j` = column `j` low / column `j + 16` high). Lossless: ggml's table is the E2M1
/// table doubled and its scale is `2^(e - 128)`, so the codes and the scale byte are unchanged.
///
/// `cols` and `group` must be multiples of 32 (`group` scales are repeated per 32-column block).
pub fn fp4_row_to_mxfp4(codes: &[u8], scales: &[u8], cols: usize, group: usize, out: &mut [u8]) {
    let nib = |c: usize| (codes[c / 2] >> ((c & 1) * 4)) & 0x0F;
    for (b, o) in out.chunks_mut(MXFP4_BYTES).enumerate().take(cols / QK) {
        let c0 = b * QK;
        o[0] = scales[c0 / group];
        for j in 0..QK / 2 {
            o[1 + j] = nib(c0 + j) | (nib(c0 + j + QK / 2) << 4);
        }
    }
}

/// Repacks one row of our INT4 format (two's complement nibbles in the FP4 packing, one bf16 scale
/// per `group` columns) into ggml `Q4_0` blocks (f16 `d`, byte `j` = `q_j + 8` low / `q_{j+16} + 8`
/// high, value `(nibble - 8) * d`). Lossless whenever the bf16 scale is representable in f16;
/// returns the number of blocks whose scale had to be rounded.
pub fn int4_row_to_q4_0(
    codes: &[u8],
    scales: &[u16],
    cols: usize,
    group: usize,
    out: &mut [u8],
) -> u64 {
    let nib = |c: usize| ((codes[c / 2] >> ((c & 1) * 4)) & 0x0F) ^ 0x08;
    let mut inexact = 0;
    for (b, o) in out.chunks_mut(Q4_0_BYTES).enumerate().take(cols / QK) {
        let c0 = b * QK;
        let s = bf16_to_f32(scales[c0 / group]);
        let d = f32_to_f16(s);
        if f16_to_f32(d) != s && !s.is_nan() {
            inexact += 1;
        }
        o[..2].copy_from_slice(&d.to_le_bytes());
        for j in 0..QK / 2 {
            o[2 + j] = nib(c0 + j) | (nib(c0 + j + QK / 2) << 4);
        }
    }
    inexact
}

/// ggml's MXFP4 value table (E2M1 doubled).
const MXFP4_VALUES: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0,
];

/// ggml's `e8m0_to_fp32_half`: `2^(e - 128)`.
fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000u32 << e)
    } else {
        f32::from_bits(((e as u32) - 1) << 23)
    }
}

/// Dequantizes `n` elements of a tensor of type `ty` stored in `data`, as ggml and gguf-py do.
/// Supported: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_0`, `MXFP4`, and the integer types `I8`, `I16`,
/// `I32` (converted to f32). Returns `None` for any other type or a length mismatch.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Option<Vec<f32>> {
    let nbytes = ty.nbytes(ty.block_size().max(1), n as u64)?;
    if data.len() as u64 != nbytes {
        return None;
    }
    let supported = matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::Bf16
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Mxfp4
    );
    if !supported {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(
            data.chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        ),
        GgmlType::Bf16 => out.extend(
            data.chunks_exact(2)
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        ),
        GgmlType::I8 => out.extend(data.iter().map(|&b| b as i8 as f32)),
        GgmlType::I16 => out.extend(
            data.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32),
        ),
        GgmlType::I32 => out.extend(
            data.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        ),
        GgmlType::Q8_0 => {
            for blk in data.chunks_exact(Q8_0_BYTES) {
                let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                out.extend(blk[2..].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 => {
            for blk in data.chunks_exact(Q4_0_BYTES) {
                let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                let qs = &blk[2..];
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Mxfp4 => {
            for blk in data.chunks_exact(MXFP4_BYTES) {
                let d = e8m0_half(blk[0]);
                let qs = &blk[1..];
                out.extend(qs.iter().map(|&q| d * MXFP4_VALUES[(q & 0x0F) as usize]));
                out.extend(qs.iter().map(|&q| d * MXFP4_VALUES[(q >> 4) as usize]));
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use v4_kernels::quant::{dequant_fp4_groups, e8m0_to_f32};

    #[test]
    fn f16_round_trip_and_rounding() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x}");
            }
        }
        // Ties to even, overflow, underflow.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        assert_eq!(f32_to_f16(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.0001), 1);
        assert_eq!(f32_to_f16(3.0 * 2f32.powi(-25)), 2);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
    }

    #[test]
    fn q8_0_round_trip_shape() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
        let mut q = vec![0u8; 2 * Q8_0_BYTES];
        quantize_q8_0(&x, &mut q);
        let y = dequantize(GgmlType::Q8_0, &q, 64).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 0.37 * 32.0 / 127.0, "{a} {b}");
        }
        // Zero block.
        let mut q = vec![0xAAu8; Q8_0_BYTES];
        quantize_q8_0(&[0.0; 32], &mut q);
        assert!(q.iter().all(|&b| b == 0));
    }

    #[test]
    fn mxfp4_repack_is_lossless() {
        let cols = 96;
        let codes: Vec<u8> = (0..cols / 2).map(|i| (i * 37 + 11) as u8).collect();
        let scales = [120u8, 127, 0];
        let mut want = vec![0f32; cols];
        dequant_fp4_groups(&codes, &scales, 1, cols, 32, &mut want);
        let mut packed = vec![0u8; 3 * MXFP4_BYTES];
        fp4_row_to_mxfp4(&codes, &scales, cols, 32, &mut packed);
        let got = dequantize(GgmlType::Mxfp4, &packed, cols).unwrap();
        assert_eq!(got, want);
        assert_eq!(e8m0_half(0) * 2.0, e8m0_to_f32(0));
        assert_eq!(e8m0_half(200) * 2.0, e8m0_to_f32(200));
    }

    #[test]
    fn int4_repack_is_lossless() {
        let cols = 64;
        let codes: Vec<u8> = (0..cols / 2).map(|i| (i * 53 + 7) as u8).collect();
        let scales = [0x3C00u16, 0xBB80]; // bf16 0.0078125, -0.00390625
        let mut want = vec![0f32; cols];
        v4_kernels::quant::dequant_int4_groups(&codes, &scales, 1, cols, 32, &mut want);
        let mut packed = vec![0u8; 2 * Q4_0_BYTES];
        assert_eq!(int4_row_to_q4_0(&codes, &scales, cols, 32, &mut packed), 0);
        assert_eq!(dequantize(GgmlType::Q4_0, &packed, cols).unwrap(), want);
    }
}
