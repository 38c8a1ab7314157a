//! Portable block kernel: the canonical summation order of [`super`] with separate multiply and
//! add.

use super::Weight;
use super::tile::Kernel;

/// The portable kernel.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scalar;

impl Kernel for Scalar {
    fn block<E: Weight, const W: usize, const R: usize>(
        self,
        w: [&[E]; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W] {
        std::array::from_fn(|a| std::array::from_fn(|r| dot(w[a], x[r])))
    }
}

/// One block dot product emulating the SIMD layout: 16 lanes (two 8-lane accumulators), a leftover
/// 8-chunk into the first accumulator, the same horizontal-sum tree, then the scalar tail.
fn dot<E: Weight>(w: &[E], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let n = x.len();
    let n16 = n - n % 16;
    let mut acc = [0.0f32; 16];
    for (wc, xc) in w[..n16].chunks_exact(16).zip(x[..n16].chunks_exact(16)) {
        for l in 0..16 {
            acc[l] += wc[l].to_f32() * xc[l];
        }
    }
    let mut i = n16;
    if n - n16 >= 8 {
        for l in 0..8 {
            acc[l] += w[n16 + l].to_f32() * x[n16 + l];
        }
        i += 8;
    }
    let v: [f32; 8] = std::array::from_fn(|l| acc[l] + acc[l + 8]);
    let q: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
    let mut s = (q[0] + q[2]) + (q[1] + q[3]);
    for k in i..n {
        s += w[k].to_f32() * x[k];
    }
    s
}
