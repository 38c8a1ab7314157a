//! [`ComputeMode::Int8Activations`]: AVX2 against the scalar reference (bit-identical), against
//! the exact product (error bound), batch and thread independence, special values, fallbacks.

use super::q8::{FP4_WS, fp8_raw, matmul_mode_with};
use super::quant_tests::{Quant, fp4, fp8, int4};
use super::tests::{backends, bits, on_pool};
use super::*;
use crate::quant::{e4m3_to_f32, e8m0_to_f32};
use crate::test_util::Rng;

const MODE: ComputeMode = ComputeMode::Int8Activations;

fn run(backend: Backend, x: &[f32], rows: usize, in_dim: usize, q: &Quant, out: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; rows * out];
    matmul_mode_with(backend, MODE, x, rows, in_dim, q.weights(), out, &mut y);
    y
}

/// The quantized matrices of the tests: (name, matrix) for in_dim `inp`.
fn matrices(rng: &mut Rng, out: usize, inp: usize) -> Vec<(String, Quant)> {
    let mut v = vec![
        ("int4/32".to_string(), int4(rng, out, inp, 32, false)),
        ("fp4/32".to_string(), fp4(rng, out, inp, 32)),
        ("fp8/128".to_string(), fp8(rng, out, inp, 128)),
        ("fp8/32".to_string(), fp8(rng, out, inp, 32)),
    ];
    if inp.is_multiple_of(64) {
        v.push(("int4/64".to_string(), int4(rng, out, inp, 64, false)));
    }
    if inp.is_multiple_of(96) {
        v.push(("fp4/96".to_string(), fp4(rng, out, inp, 96)));
    }
    v
}

/// Inputs with a spread of magnitudes between blocks, zeros and an all-zero block.
fn inputs(rng: &mut Rng, rows: usize, inp: usize) -> Vec<f32> {
    let mut x = rng.vec_f32(rows * inp);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= [1.0, 1e-3, 30.0, 0.0][(i / 32) % 4];
        if i % 7 == 0 {
            *v = 0.0;
        }
    }
    x
}

#[test]
fn simd_equals_scalar_bit_for_bit() {
    let mut rng = Rng::new(81);
    for &(inp, out) in &[
        (32usize, 1usize),
        (64, 7),
        (96, 13),
        (288, 37),
        (544, 5),
        (1056, 9),
    ] {
        for (name, q) in matrices(&mut rng, out, inp) {
            for rows in [1usize, 2, 3, 4, 5, 8, 9, 19] {
                let x = inputs(&mut rng, rows, inp);
                let want = run(Backend::Scalar, &x, rows, inp, &q, out);
                for b in backends() {
                    let got = run(b, &x, rows, inp, &q, out);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{b:?} {name} rows={rows} {inp}x{out}"
                    );
                }
            }
        }
    }
}

#[test]
fn close_to_the_exact_product_within_the_bound() {
    let mut rng = Rng::new(82);
    let (inp, out, rows) = (1056usize, 23usize, 3usize);
    for (name, q) in matrices(&mut rng, out, inp) {
        let x = inputs(&mut rng, rows, inp);
        let fp8 = name.starts_with("fp8");
        for b in backends() {
            let got = run(b, &x, rows, inp, &q, out);
            for s in 0..rows {
                for o in 0..out {
                    let (mut exact, mut abs, mut bound) = (0.0f64, 0.0f64, 0.0f64);
                    for (blk, xb) in x[s * inp..][..inp].chunks(32).enumerate() {
                        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                        for (j, &xi) in xb.iter().enumerate() {
                            let w = q.deq[o * inp + 32 * blk + j] as f64;
                            exact += w * xi as f64;
                            abs += (w * xi as f64).abs();
                            bound += w.abs() * amax / 254.0;
                        }
                    }
                    // Activation rounding (none for FP8) plus f32 accumulation.
                    let tol = if fp8 { 0.0 } else { bound * 1.001 } + 1e-5 * abs + 1e-30;
                    let err = (got[s * out + o] as f64 - exact).abs();
                    assert!(
                        err <= tol,
                        "{b:?} {name} [{s},{o}]: error {err:e} > {tol:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn rows_do_not_depend_on_the_batch_or_the_threads() {
    let mut rng = Rng::new(83);
    let (inp, out, rows) = (352usize, 29usize, 9usize);
    for (name, q) in matrices(&mut rng, out, inp) {
        let x = inputs(&mut rng, rows, inp);
        for b in backends() {
            let all = bits(&run(b, &x, rows, inp, &q, out));
            for threads in [1usize, 2, 3] {
                for n in 1..=rows {
                    for s0 in (0..rows).step_by(n) {
                        let m = n.min(rows - s0);
                        let got = on_pool(threads, || {
                            run(b, &x[s0 * inp..][..m * inp], m, inp, &q, out)
                        });
                        assert_eq!(
                            bits(&got),
                            all[s0 * out..][..m * out],
                            "{b:?} {name} batch {n} at {s0}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn special_values_and_tables() {
    for e in 0..=255u8 {
        let want = e8m0_to_f32(e) * 0.5;
        assert!(FP4_WS[e as usize].to_bits() == want.to_bits() || (e == 255 && want.is_nan()));
    }
    for c in 0..=255u8 {
        if c & 0x7F != 0x7F {
            assert_eq!(
                fp8_raw(c).to_bits(),
                (e4m3_to_f32(c) / 256.0).to_bits(),
                "{c:#x}"
            );
        }
    }
    let mut rng = Rng::new(84);
    let (inp, out) = (128usize, 5usize);
    for (name, q) in matrices(&mut rng, out, inp) {
        for b in backends() {
            // Zero input: zero output. A non-finite input: NaN for the 4-bit formats (the block
            // scale is NaN) and a non-finite result for FP8.
            assert!(
                run(b, &vec![0.0; inp], 1, inp, &q, out)
                    .iter()
                    .all(|&v| v == 0.0)
            );
            for bad in [f32::NAN, f32::INFINITY] {
                let mut x = inputs(&mut rng, 1, inp);
                x[40] = bad;
                let y = run(b, &x, 1, inp, &q, out);
                assert!(
                    y.iter().all(|v| !v.is_finite()),
                    "{b:?} {name} {bad}: {y:?}"
                );
            }
            // Tiny and huge (finite) inputs still quantize.
            let x: Vec<f32> = (0..inp)
                .map(|i| [1e-40, 1e30][i / 64] * (i % 5) as f32)
                .collect();
            assert!(
                run(b, &x, 1, inp, &q, out).iter().all(|v| v.is_finite()),
                "{name}"
            );
        }
    }
}

#[test]
fn dense_weights_and_other_shapes_fall_back_to_the_exact_kernel() {
    let mut rng = Rng::new(85);
    let x = rng.vec_f32(2 * 48);
    let w = rng.vec_f32(3 * 48);
    let q4 = int4(&mut rng, 3, 48, 16, false);
    let q8 = fp8(&mut rng, 3, 48, 16);
    let cases = [WeightsRef::F32(&w), q4.weights(), q8.weights()];
    for wr in cases {
        assert!(!int8_supported(&wr, 48));
        let (mut a, mut e) = (vec![0.0; 6], vec![0.0; 6]);
        matmul_mode(MODE, &x, 2, 48, wr, 3, &mut a);
        matmul(&x, 2, 48, wr, 3, &mut e);
        assert_eq!(bits(&a), bits(&e));
    }
    assert!(int8_supported(
        &int4(&mut rng, 3, 64, 32, false).weights(),
        64
    ));
}
