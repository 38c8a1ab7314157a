//! Quantized weights: bit-exactness against the dense kernels on the dequantized matrix, for every
//! backend, plus determinism, special values, shape checks and byte counts.

use super::tests::{backends, bits, on_pool};
use super::*;
use crate::bf16::f32_to_bf16;
use crate::quant::{dequant_fp4_groups, dequant_fp8_blocks, dequant_int4_groups};
use crate::test_util::Rng;

/// Owned quantized matrix plus its f32 dequantization.
pub(super) struct Quant {
    w: Vec<u8>,
    s8: Vec<u8>,
    s16: Vec<u16>,
    param: usize,
    kind: Kind,
    pub(super) deq: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Fp8,
    Fp4,
    Int4,
}

impl Quant {
    pub(super) fn weights(&self) -> WeightsRef<'_> {
        match self.kind {
            Kind::Fp8 => WeightsRef::Fp8 {
                w: &self.w,
                scale: &self.s8,
                block: self.param,
            },
            Kind::Fp4 => WeightsRef::Fp4 {
                w: &self.w,
                scale: &self.s8,
                group: self.param,
            },
            Kind::Int4 => WeightsRef::Int4 {
                w: &self.w,
                scale: &self.s16,
                group: self.param,
            },
        }
    }
}

/// Random FP8 codes (no NaN codes, all other codes including subnormals) with E8M0 scales in
/// `2^-17..=2^13` (the NaN codes and extreme scales that take the AVX2 decoder's slow path are in
/// `special_codes_and_extreme_scales`).
pub(super) fn fp8(rng: &mut Rng, out: usize, inp: usize, block: usize) -> Quant {
    fp8_codes(rng, out, inp, block, true)
}

/// [`fp8`], optionally without subnormal codes (real checkpoints have very few; blocks without
/// them take the AVX2 decoder's fastest path).
pub(super) fn fp8_codes(
    rng: &mut Rng,
    out: usize,
    inp: usize,
    block: usize,
    subnormals: bool,
) -> Quant {
    let w: Vec<u8> = (0..out * inp)
        .map(|_| {
            loop {
                let b = rng.below(256) as u8;
                let subnormal = b & 0x78 == 0 && b & 0x07 != 0;
                if b & 0x7F != 0x7F && (subnormals || !subnormal) {
                    break b;
                }
            }
        })
        .collect();
    let ns = out.div_ceil(block) * inp.div_ceil(block);
    let s8: Vec<u8> = (0..ns).map(|_| 110 + rng.below(31) as u8).collect();
    let mut deq = vec![0.0; out * inp];
    dequant_fp8_blocks(&w, &s8, out, inp, block, &mut deq);
    Quant {
        w,
        s8,
        s16: vec![],
        param: block,
        kind: Kind::Fp8,
        deq,
    }
}

/// Random FP4 nibbles (all 16 codes, -0 included) with E8M0 scales in `2^-27..=2^23`.
pub(super) fn fp4(rng: &mut Rng, out: usize, inp: usize, group: usize) -> Quant {
    let w: Vec<u8> = (0..out * inp / 2).map(|_| rng.below(256) as u8).collect();
    let s8: Vec<u8> = (0..out * inp.div_ceil(group))
        .map(|_| 100 + rng.below(51) as u8)
        .collect();
    let mut deq = vec![0.0; out * inp];
    dequant_fp4_groups(&w, &s8, out, inp, group, &mut deq);
    Quant {
        w,
        s8,
        s16: vec![],
        param: group,
        kind: Kind::Fp4,
        deq,
    }
}

/// Random INT4 nibbles with random-sign bf16 scales. With `bf16_exact`, scales keep 5 significant
/// bits, so every `q * scale` is a bf16 number.
pub(super) fn int4(rng: &mut Rng, out: usize, inp: usize, group: usize, bf16_exact: bool) -> Quant {
    let w: Vec<u8> = (0..out * inp / 2).map(|_| rng.below(256) as u8).collect();
    let mask = if bf16_exact { 0xFFF8 } else { 0xFFFF };
    let s16: Vec<u16> = (0..out * inp / group)
        .map(|_| f32_to_bf16(rng.uniform() * 0.01) & mask)
        .collect();
    let mut deq = vec![0.0; out * inp];
    dequant_int4_groups(&w, &s16, out, inp, group, &mut deq);
    Quant {
        w,
        s8: vec![],
        s16,
        param: group,
        kind: Kind::Int4,
        deq,
    }
}

/// Asserts that `q` gives bit-identical results to the F32 kernel of the same backend on its
/// dequantization, and (with `bf16`) to the Bf16 kernel on the dequantization narrowed to bf16,
/// which must be exact.
#[allow(clippy::too_many_arguments)]
fn assert_exact(
    backend: Backend,
    x: &[f32],
    rows: usize,
    in_dim: usize,
    q: &Quant,
    out_dim: usize,
    bf16: bool,
) {
    let what = format!(
        "{backend:?} {:?}({}) rows={rows} in={in_dim} out={out_dim}",
        q.kind, q.param
    );
    let run = |w: WeightsRef<'_>| {
        let mut y = vec![f32::NAN; rows * out_dim];
        matmul_with(backend, x, rows, in_dim, w, out_dim, &mut y);
        bits(&y)
    };
    let got = run(q.weights());
    assert_eq!(got, run(WeightsRef::F32(&q.deq)), "{what} vs F32");
    if bf16 {
        let wb: Vec<u16> = q.deq.iter().map(|&v| f32_to_bf16(v)).collect();
        assert!(
            wb.iter()
                .zip(&q.deq)
                .all(|(&b, &v)| bf16_to_f32(b).to_bits() == v.to_bits()),
            "{what}: dequantized values must be bf16 numbers"
        );
        assert_eq!(got, run(WeightsRef::Bf16(&wb)), "{what} vs Bf16");
    }
}

const OUTS: [usize; 3] = [1, 3, 129];
const ROWS: [usize; 5] = [1, 2, 5, 8, 37];

#[test]
fn fp8_is_bit_identical_to_dense_on_dequantized() {
    let mut rng = Rng::new(801);
    // 2 * KC + 25: two full i-blocks, a 16-step, a leftover 8-chunk and a 1-element tail. Block 128
    // is the checkpoint's; 48 does not divide KC; 5 takes the lane-by-lane path. Scales up to 2^7
    // and blocks without subnormal codes take the fastest AVX2 decoding, the others the FP16 one.
    for &in_dim in &[1usize, 7, 130, 515, 2 * KC + 25] {
        for &block in &[128usize, 48, 5] {
            for &out_dim in &OUTS {
                for subnormals in [true, false] {
                    let q = fp8_codes(&mut rng, out_dim, in_dim, block, subnormals);
                    for &rows in &ROWS {
                        let x = rng.vec_f32(rows * in_dim);
                        for backend in backends() {
                            assert_exact(backend, &x, rows, in_dim, &q, out_dim, true);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fp4_is_bit_identical_to_dense_on_dequantized() {
    let mut rng = Rng::new(802);
    // 2080 = 4 KC + 32. Group 32 is the checkpoint's; 48 straddles i-blocks and need not divide
    // in_dim; 8 takes the lane-by-lane path.
    for &in_dim in &[32usize, 96, 544, 2080] {
        for &group in &[32usize, 48, 8] {
            for &out_dim in &OUTS {
                let q = fp4(&mut rng, out_dim, in_dim, group);
                for &rows in &ROWS {
                    let x = rng.vec_f32(rows * in_dim);
                    for backend in backends() {
                        assert_exact(backend, &x, rows, in_dim, &q, out_dim, true);
                    }
                }
            }
        }
    }
}

#[test]
fn int4_is_bit_identical_to_dense_on_dequantized() {
    let mut rng = Rng::new(803);
    for &in_dim in &[32usize, 96, 544, 2080] {
        for &group in &[32usize, 16, 8] {
            for &out_dim in &OUTS {
                // Full bf16 scales: `q * scale` may need 11 bits, so compare with F32 only; scales
                // with 5 significant bits: also with Bf16.
                for bf16_exact in [false, true] {
                    let q = int4(&mut rng, out_dim, in_dim, group, bf16_exact);
                    for &rows in &ROWS {
                        let x = rng.vec_f32(rows * in_dim);
                        for backend in backends() {
                            assert_exact(backend, &x, rows, in_dim, &q, out_dim, bf16_exact);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn quantized_batch_and_single_rows_are_bit_identical() {
    let mut rng = Rng::new(804);
    let (rows, in_dim, out_dim) = (150, 2 * KC + 32, 67);
    let x = rng.vec_f32(rows * in_dim);
    let quants = [
        fp8(&mut rng, out_dim, in_dim, 128),
        fp4(&mut rng, out_dim, in_dim, 32),
        int4(&mut rng, out_dim, in_dim, 32, false),
    ];
    for q in &quants {
        for backend in backends() {
            let run = |threads: usize, s0: usize, n: usize| {
                on_pool(threads, || {
                    let mut y = vec![f32::NAN; n * out_dim];
                    let xs = &x[s0 * in_dim..(s0 + n) * in_dim];
                    matmul_with(backend, xs, n, in_dim, q.weights(), out_dim, &mut y);
                    bits(&y)
                })
            };
            let full = run(2, 0, rows);
            for s in 0..rows {
                let row = &full[s * out_dim..(s + 1) * out_dim];
                assert_eq!(run(1, s, 1), row, "{backend:?} {:?} row {s}", q.kind);
            }
            for &(s0, n, threads) in &[(0, 150, 3), (5, 8, 1), (17, 5, 2), (7, 64, 2), (0, 65, 1)] {
                let got = run(threads, s0, n);
                assert_eq!(got, full[s0 * out_dim..(s0 + n) * out_dim], "{:?}", q.kind);
            }
        }
    }
}

/// Compares with the F32 kernel on the dequantization, for the first row of `x` alone and for all
/// of them: equal bits, or both NaN.
fn assert_exact_or_both_nan(q: &Quant, x: &[f32], rows: usize, in_dim: usize, out_dim: usize) {
    for (x, rows) in [(&x[..in_dim], 1), (x, rows)] {
        assert_exact_or_both_nan_rows(q, x, rows, in_dim, out_dim);
    }
}

fn assert_exact_or_both_nan_rows(q: &Quant, x: &[f32], rows: usize, in_dim: usize, out_dim: usize) {
    for backend in backends() {
        let mut got = vec![0.0; rows * out_dim];
        let mut want = vec![0.0; rows * out_dim];
        matmul_with(backend, x, rows, in_dim, q.weights(), out_dim, &mut got);
        matmul_with(
            backend,
            x,
            rows,
            in_dim,
            WeightsRef::F32(&q.deq),
            out_dim,
            &mut want,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{backend:?} {:?}: {g} vs {w}",
                q.kind
            );
        }
    }
}

#[test]
fn special_codes_and_extreme_scales() {
    let mut rng = Rng::new(805);
    let (rows, in_dim, out_dim) = (3, 2 * KC + 64, 9);
    let x = rng.vec_f32(rows * in_dim);
    // FP8: NaN codes in two rows; scales at both ends of E8M0 (0 is the subnormal 2^-127, 254 is
    // 2^127, 255 NaN), so products underflow to subnormals and overflow to infinity; 246/247 are
    // the last fast and the first slow scale of the AVX2 decoder.
    for scale in [0u8, 1, 7, 134, 135, 200, 246, 247, 254, 255] {
        let mut q = fp8(&mut rng, out_dim, in_dim, 128);
        q.s8.iter_mut().step_by(2).for_each(|s| *s = scale);
        q.w[5 * in_dim + 17] = 0x7F;
        q.w[6 * in_dim + 600] = 0xFF;
        dequant_fp8_blocks(&q.w, &q.s8, out_dim, in_dim, 128, &mut q.deq);
        assert_exact_or_both_nan(&q, &x, rows, in_dim, out_dim);
    }
    // FP4 with the same extreme scales.
    for scale in [0u8, 1, 126, 254, 255] {
        let mut q = fp4(&mut rng, out_dim, in_dim, 32);
        q.s8.iter_mut().step_by(3).for_each(|s| *s = scale);
        dequant_fp4_groups(&q.w, &q.s8, out_dim, in_dim, 32, &mut q.deq);
        assert_exact_or_both_nan(&q, &x, rows, in_dim, out_dim);
    }
    // INT4 with zero, subnormal, huge, infinite and NaN bf16 scales.
    for scale in [0u16, 0x8000, 0x0001, 0x7F7F, 0x7F80, 0x7FC0] {
        let mut q = int4(&mut rng, out_dim, in_dim, 32, false);
        q.s16.iter_mut().step_by(5).for_each(|s| *s = scale);
        dequant_int4_groups(&q.w, &q.s16, out_dim, in_dim, 32, &mut q.deq);
        assert_exact_or_both_nan(&q, &x, rows, in_dim, out_dim);
    }
}

#[test]
fn public_entry_point_and_reference_agree() {
    let mut rng = Rng::new(806);
    let (rows, in_dim, out_dim) = (11, 640, 37);
    let x = rng.vec_f32(rows * in_dim);
    for q in [
        fp8(&mut rng, out_dim, in_dim, 128),
        fp4(&mut rng, out_dim, in_dim, 32),
        int4(&mut rng, out_dim, in_dim, 32, false),
    ] {
        let (mut y, mut r) = (vec![0.0; rows * out_dim], vec![0.0; rows * out_dim]);
        matmul(&x, rows, in_dim, q.weights(), out_dim, &mut y);
        matmul_ref(&x, rows, in_dim, q.weights(), out_dim, &mut r);
        for s in 0..rows {
            for o in 0..out_dim {
                let mag: f64 = (0..in_dim)
                    .map(|i| (x[s * in_dim + i] as f64 * q.deq[o * in_dim + i] as f64).abs())
                    .sum();
                let (g, e) = (y[s * out_dim + o] as f64, r[s * out_dim + o] as f64);
                assert!(
                    (g - e).abs() <= 1e-5 * mag,
                    "{:?} {s} {o}: {g} vs {e}",
                    q.kind
                );
            }
        }
    }
}

#[test]
fn bytes_counts_weights_and_scales() {
    assert_eq!(WeightsRef::Bf16(&[0; 12]).bytes(), 24);
    assert_eq!(WeightsRef::F32(&[0.0; 12]).bytes(), 48);
    // [300, 200] FP8 with 128-blocks: 60000 + 3 * 2.
    let (w, s) = (vec![0u8; 60000], vec![0u8; 6]);
    let fp8 = WeightsRef::Fp8 {
        w: &w,
        scale: &s,
        block: 128,
    };
    assert_eq!(fp8.bytes(), 60006);
    // [4, 64] FP4 with groups of 32: 128 + 8; INT4: 128 + 2 * 8.
    let (w, s8, s16) = (vec![0u8; 128], vec![0u8; 8], vec![0u16; 8]);
    let fp4 = WeightsRef::Fp4 {
        w: &w,
        scale: &s8,
        group: 32,
    };
    let int4 = WeightsRef::Int4 {
        w: &w,
        scale: &s16,
        group: 32,
    };
    assert_eq!((fp4.bytes(), int4.bytes()), (136, 144));
    // And they pass the shape checks.
    let mut y = vec![0.0; 4];
    matmul(&[0.0; 64], 1, 64, fp4, 4, &mut y);
    matmul(&[0.0; 64], 1, 64, int4, 4, &mut y);
    assert_eq!(y, vec![0.0; 4]);
}

#[test]
#[should_panic(expected = "scale length")]
fn fp8_wrong_scale_length_panics() {
    let w = WeightsRef::Fp8 {
        w: &[0; 8],
        scale: &[127; 2],
        block: 128,
    };
    matmul(&[0.0; 4], 1, 4, w, 2, &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "in_dim must be even")]
fn fp4_odd_in_dim_panics() {
    let w = WeightsRef::Fp4 {
        w: &[0; 3],
        scale: &[127; 2],
        group: 32,
    };
    matmul(&[0.0; 3], 1, 3, w, 2, &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "multiple of group")]
fn int4_group_must_divide_in_dim() {
    let w = WeightsRef::Int4 {
        w: &[0; 24],
        scale: &[0; 2],
        group: 16,
    };
    matmul(&[0.0; 24], 1, 24, w, 2, &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "w must be")]
fn int4_wrong_weight_length_panics() {
    let w = WeightsRef::Int4 {
        w: &[0; 31],
        scale: &[0; 4],
        group: 32,
    };
    matmul(&[0.0; 64], 1, 64, w, 2, &mut [0.0; 2]);
}
