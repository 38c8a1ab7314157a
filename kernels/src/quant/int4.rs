//! INT4: our own 4-bit weight format (specified in `docs/FORMATS.md`).
//!
//! A `[rows, cols]` matrix is stored as packed nibbles `[rows, cols / 2]` (byte `k` of a row holds
//! column `2k` in its low nibble and `2k + 1` in its high nibble, the official FP4 order) and one
//! bf16 scale per `group` consecutive columns of a row, `[rows, cols / group]`. A nibble is a
//! two's complement integer `q` in `-8..=7` and the weight is `q * scale` (computed in f32, where
//! it is exact). The scale may be negative: the quantizer uses its sign to put the group's
//! largest-magnitude value on the `-8` side, which gives a step of about `amax / 8` instead of
//! `amax / 7`.

use crate::bf16::{bf16_to_f32, f32_to_bf16};
use rayon::prelude::*;

/// Default INT4 group size (columns per scale).
pub const INT4_GROUP: usize = 32;

/// Decodes an INT4 nibble (the low 4 bits of `n`, two's complement) to `-8..=7`.
#[inline]
pub fn int4_value(n: u8) -> i8 {
    ((n << 4) as i8) >> 4
}

/// Checks the INT4 shape rules shared by the quantizer and the dequantizer.
fn check_shape(what: &str, rows: usize, cols: usize, group: usize) -> usize {
    assert!(group > 0, "{what}: group must be positive");
    assert!(cols.is_multiple_of(group), "{what}: group must divide cols");
    assert!(cols.is_multiple_of(2), "{what}: cols must be even");
    rows.checked_mul(cols)
        .unwrap_or_else(|| panic!("{what}: rows * cols overflows"))
}

/// Dequantizes INT4 weights packed `[rows, cols / 2]` with bf16 scales `[rows, cols / group]` into
/// f32 `[rows, cols]`: `out[r, c] = int4(w[r, c]) as f32 * bf16(scale[r, c / group])`.
///
/// Runs on the current rayon pool.
///
/// # Panics
/// Panics if `group == 0`, `group` does not divide `cols`, `cols` is odd, or a slice length does
/// not match the shapes.
pub fn dequant_int4_groups(
    w: &[u8],
    scale: &[u16],
    rows: usize,
    cols: usize,
    group: usize,
    out: &mut [f32],
) {
    let n = check_shape("dequant_int4_groups", rows, cols, group);
    assert_eq!(w.len(), n / 2, "dequant_int4_groups: packed weight length");
    assert_eq!(out.len(), n, "dequant_int4_groups: output length");
    let groups = cols / group;
    assert_eq!(
        scale.len(),
        rows * groups,
        "dequant_int4_groups: scale length"
    );
    if n == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols / 2))
        .zip(scale.par_chunks(groups))
        .for_each(|((out_row, w_row), scale_row)| {
            for (c, o) in out_row.iter_mut().enumerate() {
                let q = int4_value(w_row[c / 2] >> ((c & 1) * 4));
                *o = q as f32 * bf16_to_f32(scale_row[c / group]);
            }
        });
}

/// Quantizes f32 `[rows, cols]` to INT4 with one bf16 scale per `group` consecutive columns of a
/// row (the inverse of [`dequant_int4_groups`]). Returns `(packed bytes [rows * cols / 2], bf16
/// scales [rows * cols / group])`.
///
/// Each group gets the scale that minimises its squared error `sum (x - q * scale)^2` among a
/// fixed set of candidates (see [`group_scale`]); then `q = clamp(round(x / scale), -8, 7)` (round
/// to nearest, ties to even). Inputs should be finite: NaN encodes as 0 and infinities saturate,
/// and neither affects the scale. An all-zero group gets scale 0. Runs on the current rayon pool.
///
/// # Panics
/// Panics if `group == 0`, `group` does not divide `cols`, `cols` is odd or `w.len() != rows *
/// cols`.
pub fn quant_int4_groups(w: &[f32], rows: usize, cols: usize, group: usize) -> (Vec<u8>, Vec<u16>) {
    let n = check_shape("quant_int4_groups", rows, cols, group);
    assert_eq!(w.len(), n, "quant_int4_groups: weight length");
    let groups = cols / group;
    let mut packed = vec![0u8; n / 2];
    let mut scales = vec![0u16; rows * groups];
    if n == 0 {
        return (packed, scales);
    }
    packed
        .par_chunks_mut(cols / 2)
        .zip(scales.par_chunks_mut(groups))
        .zip(w.par_chunks(cols))
        .for_each(|((p_row, s_row), w_row)| {
            for (g, x) in w_row.chunks(group).enumerate() {
                let s = group_scale(x);
                s_row[g] = s;
                let inv = inverse(bf16_to_f32(s) as f64);
                for (j, &v) in x.iter().enumerate() {
                    let c = g * group + j;
                    p_row[c / 2] |= (quantize(v, inv) as u8 & 0x0F) << ((c & 1) * 4);
                }
            }
        });
    (packed, scales)
}

/// `clamp(round(x / s), -8, 7)` with ties to even; 0 for `s == 0` or NaN `x`. Computed as
/// `x * (1 / s)` (`inv = 1 / s`, exact for the power-of-two-heavy bf16 scales up to one ulp), the
/// same expression in the scale search and in the final encoding, so both agree on every code.
#[inline]
fn quantize(x: f32, inv: f64) -> i8 {
    if inv == 0.0 || x.is_nan() {
        return 0;
    }
    // Clamp first (the result is the same) so that the rounding below stays in its exact range;
    // adding and subtracting 1.5 * 2^52 rounds to nearest, ties to even, without a libm call.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let v = (x as f64 * inv).clamp(-9.0, 8.0);
    ((v + MAGIC) - MAGIC).clamp(-8.0, 7.0) as i8
}

/// `1 / s`, or 0 for a zero scale.
#[inline]
fn inverse(s: f64) -> f64 {
    if s == 0.0 { 0.0 } else { 1.0 / s }
}

/// Squared error of a group quantized with scale `s` (finite elements only).
#[cfg(test)]
fn group_error(x: &[f32], s: f64) -> f64 {
    error_and_refit(x, s).0
}

/// One pass over a group quantized with scale `s` (finite elements only): the squared error and
/// the least-squares refit `sum x q / sum q^2` of its codes (`None` when all codes are zero).
fn error_and_refit(x: &[f32], s: f64) -> (f64, Option<f64>) {
    let inv = inverse(s);
    let (mut err, mut xq, mut qq) = (0.0f64, 0.0f64, 0.0f64);
    for &v in x.iter().filter(|v| v.is_finite()) {
        let q = quantize(v, inv) as f64;
        let d = v as f64 - q * s;
        err += d * d;
        xq += v as f64 * q;
        qq += q * q;
    }
    (err, (qq > 0.0).then(|| xq / qq))
}

/// Relative shrink factors tried on each no-clipping scale: `1 - k / 32` for `k` in `0..=8`
/// (down to 0.75, where the extremes start to clip).
const SHRINK_STEPS: usize = 8;

/// The bf16 scale of one group.
///
/// Candidates, each rounded to bf16 before it is judged:
/// 1. the two no-clipping scales of the signed range `[-8, 7]`: `+max(hi / 7, -lo / 8)` (the
///    negative extreme may use `-8`) and `-max(hi / 8, -lo / 7)` (a negative scale, so the positive
///    extreme may use `-8`), where `hi`/`lo` are the group's largest/smallest finite values;
/// 2. each of them shrunk by `1 - k / 32`, `k = 1..=8` (trading clipping of the extremes for a
///    finer step);
/// 3. for every candidate so far, the least-squares refit `sum x q / sum q^2` of its codes.
///
/// The candidate with the smallest squared error wins (the earliest on ties). All-zero (or
/// all-non-finite) groups get scale 0.
pub fn group_scale(x: &[f32]) -> u16 {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in x.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo == 0.0 && hi == 0.0 {
        return 0;
    }
    let bases = [
        (hi as f64 / 7.0).max(-lo as f64 / 8.0),
        -(hi as f64 / 8.0).max(-lo as f64 / 7.0),
    ];
    let mut best: Option<(f64, u16)> = None;
    let mut consider = |s: f64| -> Option<f64> {
        let code = f32_to_bf16(s as f32);
        let sf = bf16_to_f32(code) as f64;
        let (err, refit) = error_and_refit(x, sf);
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, code));
        }
        refit
    };
    for base in bases {
        for k in 0..=SHRINK_STEPS {
            if let Some(s) = consider(base * (1.0 - k as f64 / 32.0)) {
                consider(s);
            }
        }
    }
    best.map_or(0, |(_, code)| code)
}

#[cfg(test)]
#[path = "int4_tests.rs"]
mod tests;
