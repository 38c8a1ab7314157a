use super::*;
use crate::bf16::f32_to_bf16;
use crate::test_util::Rng;

/// All backends available on this machine (the scalar one always is; on an AVX-512 machine also
/// the AVX2 kernels alone).
pub(super) fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    let detected = Backend::detect();
    if detected != Backend::Scalar {
        b.push(detected);
    }
    #[cfg(target_arch = "x86_64")]
    if let Backend::Avx2Fma(k) = detected
        && k.has_avx512()
    {
        b.push(Backend::Avx2Fma(k.without_avx512()));
    }
    b
}

/// A value from `[-1, 1)` times `2^-30..2^30`, so that any change of the summation order shows.
fn spread(rng: &mut Rng) -> f32 {
    rng.uniform() * 2f32.powi(rng.below(61) as i32 - 30)
}

struct Case {
    x: Vec<f32>,
    w_bf16: Vec<u16>,
    w_f32: Vec<f32>,
}

fn case(rng: &mut Rng, rows: usize, in_dim: usize, out_dim: usize) -> Case {
    let x = rng.vec_f32(rows * in_dim);
    let w_f32 = rng.vec_f32(out_dim * in_dim);
    let w_bf16 = w_f32.iter().map(|&v| f32_to_bf16(v)).collect();
    Case { x, w_bf16, w_f32 }
}

/// Checks `y` against the f64 reference with a tolerance relative to `sum_i |x_i w_i|` (the dot's
/// condition).
fn check_close(
    y: &[f32],
    c: &Case,
    w: WeightsRef<'_>,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    what: &str,
) {
    let mut want = vec![0.0f32; rows * out_dim];
    matmul_ref(&c.x, rows, in_dim, w, out_dim, &mut want);
    for s in 0..rows {
        for o in 0..out_dim {
            let w_at = |i: usize| weight_at(w, in_dim, o, i);
            let mag: f64 = (0..in_dim)
                .map(|i| (c.x[s * in_dim + i] as f64 * w_at(i) as f64).abs())
                .sum();
            let (got, exp) = (y[s * out_dim + o] as f64, want[s * out_dim + o] as f64);
            assert!(
                (got - exp).abs() <= 1e-5 * mag + 1e-30,
                "{what}: rows={rows} in={in_dim} out={out_dim} s={s} o={o}: {got} vs {exp} (mag {mag})"
            );
        }
    }
}

#[test]
fn matches_reference_on_odd_shapes() {
    let mut rng = Rng::new(42);
    // 2 * KC + 25: two full i-blocks, then a 16-step, a leftover 8-chunk and a 1-element tail.
    for &in_dim in &[1usize, 7, 33, 128, 515, 2 * KC + 25] {
        for &out_dim in &[1usize, 3, 64, 129] {
            for &rows in &[1usize, 2, 5, 8, 37] {
                let c = case(&mut rng, rows, in_dim, out_dim);
                for backend in backends() {
                    for w in [WeightsRef::Bf16(&c.w_bf16), WeightsRef::F32(&c.w_f32)] {
                        let mut y = vec![f32::NAN; rows * out_dim];
                        matmul_with(backend, &c.x, rows, in_dim, w, out_dim, &mut y);
                        check_close(&y, &c, w, rows, in_dim, out_dim, &format!("{backend:?}"));
                    }
                }
            }
        }
    }
}

#[test]
fn public_entry_point_matches_reference() {
    let mut rng = Rng::new(43);
    let (rows, in_dim, out_dim) = (70, 300, 45);
    let c = case(&mut rng, rows, in_dim, out_dim);
    let w = WeightsRef::Bf16(&c.w_bf16);
    let mut y = vec![f32::NAN; rows * out_dim];
    matmul(&c.x, rows, in_dim, w, out_dim, &mut y);
    check_close(&y, &c, w, rows, in_dim, out_dim, "matmul");
}

/// Runs `f` on a fresh rayon pool with `threads` threads.
pub(super) fn on_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn batch_and_single_rows_are_bit_identical() {
    let mut rng = Rng::new(9);
    // 150 rows spans several prefill row blocks; 2 * KC + 27 = two full i-blocks, a 16-step, an
    // 8-chunk and a 3-element tail.
    let rows = 150;
    for &(in_dim, out_dim) in &[(2 * KC + 27, 129usize), (515, 67), (16, 5)] {
        let c = case(&mut rng, rows, in_dim, out_dim);
        for backend in backends() {
            for w in [WeightsRef::Bf16(&c.w_bf16), WeightsRef::F32(&c.w_f32)] {
                let run = |threads: usize, s0: usize, n: usize| {
                    on_pool(threads, || {
                        let mut y = vec![f32::NAN; n * out_dim];
                        matmul_with(
                            backend,
                            &c.x[s0 * in_dim..(s0 + n) * in_dim],
                            n,
                            in_dim,
                            w,
                            out_dim,
                            &mut y,
                        );
                        bits(&y)
                    })
                };
                let full = run(2, 0, rows);
                let row = |s: usize| &full[s * out_dim..(s + 1) * out_dim];
                // Every row alone, and the whole batch on other pool sizes.
                for s in 0..rows {
                    assert_eq!(run(1, s, 1), row(s), "{backend:?} single row {s}");
                }
                for threads in [1, 3, 4] {
                    assert_eq!(run(threads, 0, rows), full, "{backend:?} {threads} threads");
                }
                // Sub-batches at various offsets and sizes (decode and prefill schedules).
                for &(s0, n) in &[
                    (0, 8),
                    (5, 8),
                    (3, 2),
                    (17, 5),
                    (40, 37),
                    (1, 9),
                    (10, 100),
                    (7, 64),
                    (0, 65),
                ] {
                    for threads in [1, 2] {
                        let got = run(threads, s0, n);
                        assert_eq!(
                            got,
                            full[s0 * out_dim..(s0 + n) * out_dim],
                            "{backend:?} rows {s0}..+{n}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_and_simd_agree_closely() {
    // Different backends may differ (fused vs separate multiply-add), but only in rounding.
    let mut rng = Rng::new(10);
    let (rows, in_dim, out_dim) = (9, 1000, 33);
    let c = case(&mut rng, rows, in_dim, out_dim);
    let w = WeightsRef::Bf16(&c.w_bf16);
    for backend in backends() {
        let mut y = vec![0.0; rows * out_dim];
        matmul_with(backend, &c.x, rows, in_dim, w, out_dim, &mut y);
        check_close(&y, &c, w, rows, in_dim, out_dim, &format!("{backend:?}"));
    }
}

#[test]
fn degenerate_shapes() {
    // rows = 0: no-op.
    let mut y: Vec<f32> = vec![];
    matmul(&[], 0, 4, WeightsRef::F32(&[1.0; 12]), 3, &mut y);
    // out_dim = 0.
    matmul(&[1.0; 8], 2, 4, WeightsRef::Bf16(&[]), 0, &mut y);
    // in_dim = 0: empty sums are zero and y is overwritten.
    let mut y = vec![f32::NAN; 6];
    matmul(&[], 2, 0, WeightsRef::F32(&[]), 3, &mut y);
    assert_eq!(y, vec![0.0; 6]);
    // A hand-checked product.
    let x = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
    let w = [1.0, 0.0, 1.0, 2.0, 2.0, 2.0];
    let mut y = vec![0.0; 4];
    matmul(&x, 2, 3, WeightsRef::F32(&w), 2, &mut y);
    assert_eq!(y, vec![4.0, 12.0, 1.0, 3.0]);
}

#[test]
#[should_panic(expected = "w must be")]
fn inconsistent_weight_length_panics() {
    let mut y = vec![0.0; 2];
    matmul(&[0.0; 4], 1, 4, WeightsRef::F32(&[0.0; 7]), 2, &mut y);
}

#[test]
#[should_panic(expected = "y must be")]
fn inconsistent_output_length_panics() {
    let mut y = vec![0.0; 3];
    matmul(&[0.0; 4], 1, 4, WeightsRef::Bf16(&[0; 8]), 2, &mut y);
}

#[test]
fn avx512_and_avx2_kernels_are_bit_identical() {
    #[cfg(target_arch = "x86_64")]
    {
        let Backend::Avx2Fma(k) = Backend::detect() else {
            return;
        };
        if !k.has_avx512() {
            eprintln!("no AVX-512 on this machine: nothing to compare");
            return;
        }
        let (wide, narrow) = (Backend::Avx2Fma(k), Backend::Avx2Fma(k.without_avx512()));
        let mut rng = Rng::new(11);
        let out_dim = 67;
        for &in_dim in &[1usize, 7, 8, 15, 16, 24, 33, 128, 515, 2 * KC + 25] {
            for &rows in &[1usize, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 70] {
                let mut x: Vec<f32> = (0..rows * in_dim).map(|_| spread(&mut rng)).collect();
                if rows > 1 && in_dim > 8 {
                    // Specials in row 1 only.
                    x[in_dim + 3] = f32::INFINITY;
                    x[in_dim + 5] = f32::NAN;
                    x[in_dim + 8] = f32::NEG_INFINITY;
                }
                let w_f32: Vec<f32> = (0..out_dim * in_dim).map(|_| spread(&mut rng)).collect();
                let w_bf16: Vec<u16> = w_f32.iter().map(|&v| f32_to_bf16(v)).collect();
                for w in [WeightsRef::Bf16(&w_bf16), WeightsRef::F32(&w_f32)] {
                    let run = |b: Backend| {
                        let mut y = vec![0.0; rows * out_dim];
                        matmul_with(b, &x, rows, in_dim, w, out_dim, &mut y);
                        // NaN payloads are not specified (the compiler may commute additions).
                        let y: Vec<f32> = y
                            .iter()
                            .map(|&v| if v.is_nan() { f32::NAN } else { v })
                            .collect();
                        bits(&y)
                    };
                    assert_eq!(run(wide), run(narrow), "rows {rows} in_dim {in_dim}");
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn transposed_block_sums_equal_single_horizontal_sums() {
    use std::arch::x86_64::*;

    /// # Safety
    /// Requires AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn check<const W: usize, const R: usize>(rng: &mut Rng) {
        for round in 0..300 {
            let mut vals = [[[[0.0f32; 8]; R]; W]; 2];
            for v in vals.iter_mut().flatten().flatten().flatten() {
                *v = spread(rng);
                if round % 10 == 0 {
                    match rng.below(40) {
                        0 => *v = f32::INFINITY,
                        1 => *v = f32::NEG_INFINITY,
                        2 => *v = f32::from_bits(0x7FC0_0000 | rng.below(1 << 22) as u32),
                        3 => *v = f32::from_bits(0xFFC0_0000 | rng.below(1 << 22) as u32),
                        _ => {}
                    }
                }
            }
            let mut acc0 = [[_mm256_setzero_ps(); R]; W];
            let mut acc1 = [[_mm256_setzero_ps(); R]; W];
            for a in 0..W {
                for r in 0..R {
                    // SAFETY: 8 floats each.
                    unsafe {
                        acc0[a][r] = _mm256_loadu_ps(vals[0][a][r].as_ptr());
                        acc1[a][r] = _mm256_loadu_ps(vals[1][a][r].as_ptr());
                    }
                }
            }
            // SAFETY: the target features are enabled here.
            let got = unsafe { x86::block_sums(&acc0, &acc1) };
            for a in 0..W {
                for r in 0..R {
                    // SAFETY: as above.
                    let want = unsafe { x86::hsum(_mm256_add_ps(acc0[a][r], acc1[a][r])) };
                    // NaN payloads are not specified (Rust lets the compiler commute additions).
                    let same = got[a][r].to_bits() == want.to_bits()
                        || (got[a][r].is_nan() && want.is_nan());
                    assert!(same, "{W}x{R} dot {a},{r}: {} vs {want}", got[a][r]);
                }
            }
        }
    }

    if Backend::detect() == Backend::Scalar {
        return;
    }
    let mut rng = Rng::new(12);
    // SAFETY: AVX2 and FMA were detected.
    unsafe {
        check::<1, 1>(&mut rng);
        check::<2, 1>(&mut rng);
        check::<3, 1>(&mut rng);
        check::<4, 1>(&mut rng);
        check::<1, 2>(&mut rng);
        check::<2, 2>(&mut rng);
        check::<1, 3>(&mut rng);
        check::<2, 3>(&mut rng);
        check::<2, 4>(&mut rng);
        check::<2, 5>(&mut rng);
        check::<1, 7>(&mut rng);
        check::<2, 8>(&mut rng);
    }
}
