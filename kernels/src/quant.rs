//! Low-precision formats of the official DeepSeek-V4 checkpoint.
//!
//! * **FP8 E4M3** (`float8_e4m3fn`): 1 sign, 4 exponent (bias 7), 3 mantissa bits; subnormals, no
//!   infinities, `0x7F`/`0xFF` are NaN and the largest finite value is `0x7E` = 448.
//! * **E8M0**: an unsigned power-of-two scale `2^(b - 127)`; `0xFF` is NaN.
//! * **FP4 E2M1**: a nibble with bit 3 the sign and bits 0-2 indexing `{0, 0.5, 1, 1.5, 2, 3, 4,
//!   6}`.
//!
//! FP8 weights carry one E8M0 scale per `block x block` tile; FP4 weights are packed two per byte
//! (even column in the low nibble) with one E8M0 scale per `group` consecutive columns of a row.
//! The dequantizers run on the current rayon pool; the quantizers are the inverse used to build
//! random checkpoints.
//!
//! [`int4`] adds our own INT4 format (signed 4-bit integers with bf16 group scales, see
//! `docs/FORMATS.md`) with its quantizer and dequantizer.

use rayon::prelude::*;

pub mod int4;
pub use int4::{INT4_GROUP, dequant_int4_groups, int4_value, quant_int4_groups};

/// Largest finite FP8 E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Largest FP4 E2M1 magnitude.
pub const E2M1_MAX: f32 = 6.0;

/// Magnitudes of the eight non-negative E2M1 codes.
const E2M1_VALUES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// All 16 E2M1 nibbles decoded (sign in bit 3).
const E2M1_LUT: [f32; 16] = {
    let mut t = [0.0f32; 16];
    let mut i = 0;
    while i < 8 {
        t[i] = E2M1_VALUES[i];
        t[i + 8] = -E2M1_VALUES[i];
        i += 1;
    }
    t
};

/// All 256 E4M3 codes decoded.
static E4M3_LUT: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = e4m3_decode(i as u8);
        i += 1;
    }
    t
};

/// `2^e` for `e` in the normal f32 exponent range (-126..=127), built from its bit pattern.
const fn pow2_normal(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

const fn e4m3_decode(b: u8) -> f32 {
    let exp = ((b >> 3) & 0x0F) as u32;
    let man = (b & 0x07) as u32;
    if exp == 0x0F && man == 0x07 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        // Subnormal: man * 2^-9 (exact).
        man as f32 * (1.0 / 512.0)
    } else {
        // Normal: rebias the exponent (7 -> 127) and left-align the 3 mantissa bits.
        f32::from_bits(((exp + 120) << 23) | (man << 20))
    };
    f32::from_bits(magnitude.to_bits() | (((b >> 7) as u32) << 31))
}

/// Decodes one FP8 E4M3 (`e4m3fn`) byte. Exact; `0x7F`/`0xFF` give NaN.
#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    E4M3_LUT[b as usize]
}

/// `x.round_ties_even()` for `0 <= x < 2^22`, without a libm call: adding and subtracting
/// `1.5 * 2^23` rounds to an integer in the FPU's default mode (nearest, ties to even). Baseline
/// x86-64 has no SSE4.1 `roundss`, so `round_ties_even` would call `rint` per element.
#[inline]
pub(crate) fn round_even_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    debug_assert!((0.0..4_194_304.0).contains(&x));
    (x + MAGIC) - MAGIC
}

/// Encodes an f32 as FP8 E4M3 with round-to-nearest, ties-to-even.
///
/// Magnitudes at or above 448 (including infinities) saturate to +-448 (`0x7E`/`0xFE`); NaN gives
/// `0x7F`. The sign of zero is kept (`-0.0` -> `0x80`).
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7F;
    }
    let sign = ((x.to_bits() >> 31) as u8) << 7;
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    let code = if a < pow2_normal(-6) {
        // Subnormal range: units of 2^-9. Rounding up to 8 lands exactly on code 0x08, the smallest
        // normal.
        round_even_f32(a * 512.0) as u8
    } else {
        // a is a normal f32 with exponent e in -6..=8; scale so the mantissa with its 3 kept bits
        // lies in [8, 16].
        let e = ((a.to_bits() >> 23) as i32) - 127;
        let q = round_even_f32(a * pow2_normal(3 - e)) as u32;
        // Rounding up to 16 carries into the next binade. (Below 448 the result stays finite: e = 8
        // gives q <= 14.)
        let (e, q) = if q >= 16 { (e + 1, 8) } else { (e, q) };
        (((e + 7) as u32) << 3 | (q - 8)) as u8
    };
    sign | code
}

/// Decodes an E8M0 scale byte: `2^(b - 127)`, with `255` giving NaN. Exact (`b = 0` is the
/// subnormal `2^-127`).
#[inline]
pub fn e8m0_to_f32(b: u8) -> f32 {
    match b {
        0xFF => f32::NAN,
        0 => f32::from_bits(0x0040_0000),
        _ => f32::from_bits((b as u32) << 23),
    }
}

/// Decodes one FP4 E2M1 nibble (only the low 4 bits of `nibble` are used).
#[inline]
pub fn e2m1_to_f32(nibble: u8) -> f32 {
    E2M1_LUT[(nibble & 0x0F) as usize]
}

/// Encodes an f32 as the nearest FP4 E2M1 nibble; ties go to the even code, magnitudes above 6
/// saturate to +-6.
///
/// E2M1 has no NaN: NaN encodes as `+0` (code 0). The sign of zero is kept (`-0.0` -> `0x8`).
pub fn f32_to_e2m1(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    let sign = ((x.to_bits() >> 31) as u8) << 3;
    let a = x.abs();
    // Decision points are the midpoints between neighbouring values; at a midpoint the even code
    // wins (`<=` when the lower code is even, `<` when the upper one is).
    let code = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    sign | code
}

/// Number of `block`-sized pieces covering `n` (the last one may be partial).
fn blocks(n: usize, block: usize) -> usize {
    n.div_ceil(block)
}

/// Dequantizes an FP8 E4M3 weight `[rows, cols]` (one byte per element) whose E8M0 scales are laid
/// out `[ceil(rows / block), ceil(cols / block)]` row-major: `out[r, c] = e4m3(w[r, c]) *
/// e8m0(scale[r / block, c / block])`.
///
/// Runs on the current rayon pool.
///
/// # Panics
/// Panics if `block == 0` or a slice length does not match the shapes.
pub fn dequant_fp8_blocks(
    w: &[u8],
    scale: &[u8],
    rows: usize,
    cols: usize,
    block: usize,
    out: &mut [f32],
) {
    assert!(block > 0, "dequant_fp8_blocks: block must be positive");
    let n = rows
        .checked_mul(cols)
        .expect("dequant_fp8_blocks: rows * cols overflows");
    assert_eq!(w.len(), n, "dequant_fp8_blocks: weight length");
    assert_eq!(out.len(), n, "dequant_fp8_blocks: output length");
    let col_blocks = blocks(cols, block);
    assert_eq!(
        scale.len(),
        blocks(rows, block) * col_blocks,
        "dequant_fp8_blocks: scale length"
    );
    if n == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (out_row, w_row))| {
            let scale_row = &scale[(r / block) * col_blocks..][..col_blocks];
            for ((o, q), &s) in out_row
                .chunks_mut(block)
                .zip(w_row.chunks(block))
                .zip(scale_row)
            {
                let s = e8m0_to_f32(s);
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = e4m3_to_f32(q) * s;
                }
            }
        });
}

/// Dequantizes an FP4 E2M1 weight packed `[rows, cols / 2]` (byte `k` of a row holds logical column
/// `2k` in its low nibble and `2k + 1` in its high nibble) with E8M0 scales `[rows, ceil(cols /
/// group)]` (one scale per `group` consecutive columns; `group = 32` in the official checkpoint)
/// into f32 `[rows, cols]`.
///
/// Runs on the current rayon pool.
///
/// # Panics
/// Panics if `group == 0`, `cols` is odd, or a slice length does not match the shapes.
pub fn dequant_fp4_groups(
    w: &[u8],
    scale: &[u8],
    rows: usize,
    cols: usize,
    group: usize,
    out: &mut [f32],
) {
    assert!(group > 0, "dequant_fp4_groups: group must be positive");
    assert!(
        cols.is_multiple_of(2),
        "dequant_fp4_groups: cols must be even"
    );
    let n = rows
        .checked_mul(cols)
        .expect("dequant_fp4_groups: rows * cols overflows");
    assert_eq!(w.len(), n / 2, "dequant_fp4_groups: packed weight length");
    assert_eq!(out.len(), n, "dequant_fp4_groups: output length");
    let groups = blocks(cols, group);
    assert_eq!(
        scale.len(),
        rows * groups,
        "dequant_fp4_groups: scale length"
    );
    if n == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols / 2))
        .enumerate()
        .for_each(|(r, (out_row, w_row))| {
            let scale_row = &scale[r * groups..][..groups];
            for (g, o) in out_row.chunks_mut(group).enumerate() {
                let s = e8m0_to_f32(scale_row[g]);
                let c0 = g * group;
                for (j, o) in o.iter_mut().enumerate() {
                    let c = c0 + j;
                    let nibble = w_row[c / 2] >> ((c & 1) * 4);
                    *o = e2m1_to_f32(nibble) * s;
                }
            }
        });
}

/// The E8M0 exponent `k` of the smallest power of two with `amax / 2^k <= max_code`, clamped to the
/// E8M0 range `-127..=127` (an all-zero block gets the smallest scale, a non-finite maximum the
/// largest).
fn scale_exponent(amax: f32, max_code: f32) -> i32 {
    if amax.is_nan() || amax.is_infinite() {
        return 127;
    }
    if amax <= 0.0 {
        return -127;
    }
    let a = amax as f64;
    let m = max_code as f64;
    // Estimate, then settle with exact comparisons (powers of two times a small integer are exact
    // in f64).
    let mut k = ((a / m).log2().ceil() as i32).clamp(-127, 127);
    while k > -127 && a <= m * 2f64.powi(k - 1) {
        k -= 1;
    }
    while k < 127 && a > m * 2f64.powi(k) {
        k += 1;
    }
    k
}

/// `x / 2^k` as f32. Exact whenever the result is a normal f32; results this small encode as zero
/// anyway.
fn unscale(x: f32, k: i32) -> f32 {
    (x as f64 * 2f64.powi(-k)) as f32
}

/// Largest absolute value of an iterator of f32, ignoring NaN (0 for an empty or all-NaN input).
fn abs_max<'a>(values: impl Iterator<Item = &'a f32>) -> f32 {
    values.fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Quantizes f32 `[rows, cols]` to FP8 E4M3 with one E8M0 scale per `block x block` tile (the
/// inverse of [`dequant_fp8_blocks`]). Each tile's scale is the smallest power of two with `amax /
/// scale <= 448`; elements are rounded to nearest even. Returns `(weight bytes [rows * cols], scale
/// bytes [ceil(rows/block) * ceil(cols/block)])`.
///
/// Inputs that are already FP8 values times a power-of-two tile scale round-trip exactly.
///
/// # Panics
/// Panics if `block == 0` or `w.len() != rows * cols`.
pub fn quant_fp8_blocks(w: &[f32], rows: usize, cols: usize, block: usize) -> (Vec<u8>, Vec<u8>) {
    assert!(block > 0, "quant_fp8_blocks: block must be positive");
    assert_eq!(
        Some(w.len()),
        rows.checked_mul(cols),
        "quant_fp8_blocks: weight length"
    );
    let (row_blocks, col_blocks) = (blocks(rows, block), blocks(cols, block));
    let mut exps = vec![-127i32; row_blocks * col_blocks];
    for rb in 0..row_blocks {
        for cb in 0..col_blocks {
            let (c0, c1) = (cb * block, ((cb + 1) * block).min(cols));
            let rows_in = rb * block..((rb + 1) * block).min(rows);
            let amax = rows_in
                .map(|r| abs_max(w[r * cols + c0..r * cols + c1].iter()))
                .fold(0.0f32, f32::max);
            exps[rb * col_blocks + cb] = scale_exponent(amax, E4M3_MAX);
        }
    }
    let mut q = vec![0u8; w.len()];
    for (r, (q_row, w_row)) in q
        .chunks_mut(cols.max(1))
        .zip(w.chunks(cols.max(1)))
        .enumerate()
    {
        let exp_row = &exps[(r / block) * col_blocks..][..col_blocks];
        for ((q, x), &k) in q_row
            .chunks_mut(block)
            .zip(w_row.chunks(block))
            .zip(exp_row)
        {
            for (q, &x) in q.iter_mut().zip(x) {
                *q = f32_to_e4m3(unscale(x, k));
            }
        }
    }
    let scales = exps.iter().map(|&k| (k + 127) as u8).collect();
    (q, scales)
}

/// Quantizes f32 `[rows, cols]` to packed FP4 E2M1 with one E8M0 scale per `group` consecutive
/// columns of a row (the inverse of [`dequant_fp4_groups`]). Each group's scale is the smallest
/// power of two with `amax / scale <= 6`. Returns `(packed bytes [rows * cols / 2], scale bytes
/// [rows * ceil(cols / group)])`.
///
/// # Panics
/// Panics if `group == 0`, `cols` is odd or `w.len() != rows * cols`.
pub fn quant_fp4_groups(w: &[f32], rows: usize, cols: usize, group: usize) -> (Vec<u8>, Vec<u8>) {
    assert!(group > 0, "quant_fp4_groups: group must be positive");
    assert!(
        cols.is_multiple_of(2),
        "quant_fp4_groups: cols must be even"
    );
    assert_eq!(
        Some(w.len()),
        rows.checked_mul(cols),
        "quant_fp4_groups: weight length"
    );
    let groups = blocks(cols, group);
    let mut packed = vec![0u8; w.len() / 2];
    let mut scales = vec![0u8; rows * groups];
    if w.is_empty() {
        return (packed, scales);
    }
    for (r, w_row) in w.chunks(cols).enumerate() {
        let p_row = &mut packed[r * cols / 2..][..cols / 2];
        for (g, x) in w_row.chunks(group).enumerate() {
            let k = scale_exponent(abs_max(x.iter()), E2M1_MAX);
            scales[r * groups + g] = (k + 127) as u8;
            for (j, &v) in x.iter().enumerate() {
                let c = g * group + j;
                p_row[c / 2] |= f32_to_e2m1(unscale(v, k)) << ((c & 1) * 4);
            }
        }
    }
    (packed, scales)
}

#[cfg(test)]
#[path = "quant_tests.rs"]
mod tests;
