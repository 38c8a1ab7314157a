//! Small vector helpers with an AVX2 + FMA path (selected at run time) and a scalar fallback.
//!
//! Both functions are deterministic for a given input length and CPU feature set; the SIMD and
//! scalar paths may differ in the last bits (different summation order, fused vs separate
//! multiply-add).

/// Dot product `sum_i a[i] * b[i]`.
///
/// # Panics
/// Panics if `a.len() != b.len()`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::dot(a, b) };
    }
    dot_scalar(a, b)
}

/// `y += a * x`, element-wise.
///
/// # Panics
/// Panics if `y.len() != x.len()`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::axpy(y, a, x) };
    }
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Portable dot product with eight independent partial sums (vectorizable without reassociation).
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// Sum of the eight lanes of `v`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }

    /// # Safety
    /// Requires AVX2 and FMA; `a` and `b` must have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats starting at i with i + 8 <= n (or i + 32 <= n for the
        // unrolled loop).
        unsafe {
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let k = i + 8 * j;
                    *acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(k)),
                        _mm256_loadu_ps(pb.add(k)),
                        *acc,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        for k in i..n {
            s += a[k] * b[k];
        }
        s
    }

    /// # Safety
    /// Requires AVX2 and FMA; `y` and `x` must have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        // SAFETY: every access covers 8 floats starting at i with i + 8 <= n.
        unsafe {
            while i + 8 <= n {
                let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
        }
        for k in i..n {
            y[k] = a.mul_add(x[k], y[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    #[test]
    fn dot_matches_f64_reference() {
        let mut rng = Rng::new(5);
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 128, 515, 4099] {
            let a = rng.vec_f32(n);
            let b = rng.vec_f32(n);
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let mag: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            for got in [dot(&a, &b), dot_scalar(&a, &b)] {
                assert!(
                    (got as f64 - exact).abs() <= 1e-5 * mag + 1e-30,
                    "n={n}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn axpy_matches_reference() {
        let mut rng = Rng::new(6);
        for n in [0usize, 1, 7, 8, 9, 33, 515] {
            let x = rng.vec_f32(n);
            let y0 = rng.vec_f32(n);
            let mut y = y0.clone();
            axpy(&mut y, 0.75, &x);
            for k in 0..n {
                let exact = y0[k] as f64 + 0.75 * x[k] as f64;
                assert!(
                    (y[k] as f64 - exact).abs() <= 1e-6 * (exact.abs() + 1.0),
                    "n={n} k={k}"
                );
            }
        }
    }

    #[test]
    #[should_panic]
    fn dot_length_mismatch_panics() {
        dot(&[1.0, 2.0], &[1.0]);
    }
}
