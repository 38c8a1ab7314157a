//! Portable block kernel: the canonical summation order of [`super`] with separate multiply and
//! add.

use super::format::Seg;
use super::tile::Kernel;

/// The portable kernel.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scalar;

impl Kernel for Scalar {
    fn block<S: Seg, const W: usize, const R: usize>(
        self,
        w: [S; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        std::array::from_fn(|a| std::array::from_fn(|r| dot(w[a], x[r])))
    }
}

/// One block dot product emulating the SIMD layout: 16 lanes (two 8-lane accumulators), a leftover
/// 8-chunk into the first accumulator, the same horizontal-sum tree, then the scalar tail. Weights
/// are decoded one by one with [`Seg::get`].
fn dot<S: Seg>(w: S, x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let n = x.len();
    let n16 = n - n % 16;
    let mut acc = [0.0f32; 16];
    for (c, xc) in x[..n16].chunks_exact(16).enumerate() {
        for l in 0..16 {
            acc[l] += w.get(c * 16 + l) * xc[l];
        }
    }
    let mut i = n16;
    if n - n16 >= 8 {
        for l in 0..8 {
            acc[l] += w.get(n16 + l) * x[n16 + l];
        }
        i += 8;
    }
    let v: [f32; 8] = std::array::from_fn(|l| acc[l] + acc[l + 8]);
    let q: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
    let mut s = (q[0] + q[2]) + (q[1] + q[3]);
    for (k, &xk) in x.iter().enumerate().take(n).skip(i) {
        s += w.get(k) * xk;
    }
    s
}
