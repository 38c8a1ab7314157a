//! Manifold-constrained hyper-connections (mHC, spec §2.3): the residual state is `hc_mult`
//! streams per token; each sublayer reads a weighted collapse of them (`pre`) and writes
//! back through `post` plus a Sinkhorn-projected stream mixing matrix `comb`.

use rayon::prelude::*;

use crate::loader::LoadError;
use crate::ops::{rms_factor, sigmoid};
use crate::weights::{Weight, WeightLoader};

/// Shapes and constants shared by every mHC site.
#[derive(Debug, Clone, Copy)]
pub struct HcDims {
    /// Number of streams (`hc_mult`).
    pub n: usize,
    /// Hidden size.
    pub d: usize,
    pub norm_eps: f32,
    pub hc_eps: f32,
    pub sinkhorn_iters: usize,
}

/// One `hc_{attn,ffn}_{fn,base,scale}` site.
pub struct HcSite {
    func: Weight,
    base: Vec<f32>,
    scale: Vec<f32>,
}

/// Per-token mixing coefficients produced by [`HcSite::pre`].
pub struct HcMix {
    /// `[tokens, n]`
    pub post: Vec<f32>,
    /// `[tokens, n, n]`, row-major `comb[j][k]`.
    pub comb: Vec<f32>,
}

impl HcSite {
    /// Load `{prefix}_fn`, `{prefix}_base`, `{prefix}_scale` (e.g. `layers.3.hc_attn`).
    pub fn load(w: &WeightLoader<'_>, prefix: &str, dims: HcDims) -> Result<Self, LoadError> {
        let m = (2 + dims.n) * dims.n;
        let func = w.vector(&format!("{prefix}_fn"), &[m, dims.n * dims.d])?;
        Ok(Self {
            func: Weight::from_f32(m, dims.n * dims.d, func),
            base: w.vector(&format!("{prefix}_base"), &[m])?,
            scale: w.vector(&format!("{prefix}_scale"), &[3])?,
        })
    }

    /// HC_pre for `tokens` tokens of `streams` (`[tokens, n, d]`): returns the collapsed
    /// sublayer input `[tokens, d]` and the mixing coefficients.
    pub fn pre(&self, streams: &[f32], tokens: usize, dims: HcDims) -> (Vec<f32>, HcMix) {
        let (n, d) = (dims.n, dims.d);
        let m = (2 + n) * n;
        let mut mu = self.func.forward(streams, tokens);
        let mut post = vec![0f32; tokens * n];
        let mut comb = vec![0f32; tokens * n * n];
        let mut collapsed = vec![0f32; tokens * d];
        mu.par_chunks_mut(m)
            .zip(post.par_chunks_mut(n))
            .zip(comb.par_chunks_mut(n * n))
            .zip(collapsed.par_chunks_mut(d))
            .enumerate()
            .for_each(|(t, (((mu, post), comb), out))| {
                let x = &streams[t * n * d..(t + 1) * n * d];
                let rho = rms_factor(x, dims.norm_eps);
                mu.iter_mut().for_each(|v| *v *= rho);
                let (s_pre, s_post, s_comb) = (self.scale[0], self.scale[1], self.scale[2]);
                for i in 0..n {
                    let pre = sigmoid(mu[i] * s_pre + self.base[i]) + dims.hc_eps;
                    post[i] = 2.0 * sigmoid(mu[n + i] * s_post + self.base[n + i]);
                    let stream = &x[i * d..(i + 1) * d];
                    for (o, &v) in out.iter_mut().zip(stream) {
                        *o += pre * v;
                    }
                }
                for (c, (&mu, &b)) in comb
                    .iter_mut()
                    .zip(mu[2 * n..].iter().zip(&self.base[2 * n..]))
                {
                    *c = mu * s_comb + b;
                }
                sinkhorn(comb, n, dims.hc_eps, dims.sinkhorn_iters);
            });
        (collapsed, HcMix { post, comb })
    }
}

/// Row softmax + eps, then alternating column/row normalisation exactly as spec §2.3 step 7:
/// one column pass, then `iters - 1` (row, column) pairs.
pub fn sinkhorn(c: &mut [f32], n: usize, eps: f32, iters: usize) {
    for row in c.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v = *v / sum + eps;
        }
    }
    let normalize_cols = |c: &mut [f32]| {
        for k in 0..n {
            let s: f32 = (0..n).map(|j| c[j * n + k]).sum::<f32>() + eps;
            for j in 0..n {
                c[j * n + k] /= s;
            }
        }
    };
    normalize_cols(c);
    for _ in 1..iters {
        for row in c.chunks_exact_mut(n) {
            let s: f32 = row.iter().sum::<f32>() + eps;
            row.iter_mut().for_each(|v| *v /= s);
        }
        normalize_cols(c);
    }
}

/// HC_post: `X'_k = post_k · f + Σ_j comb[j][k] · X_j` for every token, in place.
pub fn hc_post(streams: &mut [f32], f: &[f32], mix: &HcMix, dims: HcDims) {
    let (n, d) = (dims.n, dims.d);
    streams
        .par_chunks_mut(n * d)
        .zip(f.par_chunks(d))
        .zip(mix.post.par_chunks(n).zip(mix.comb.par_chunks(n * n)))
        .for_each(|((x, f), (post, comb))| {
            let old = x.to_vec();
            for k in 0..n {
                let out = &mut x[k * d..(k + 1) * d];
                for (e, o) in out.iter_mut().enumerate() {
                    let mut acc = post[k] * f[e];
                    for j in 0..n {
                        acc += comb[j * n + k] * old[j * d + e];
                    }
                    *o = acc;
                }
            }
        });
}

/// The final stream collapse before the output norm (`hc_head_*`, also `mtp.0.hc_head_*`).
pub struct HcHead {
    func: Weight,
    base: Vec<f32>,
    scale: f32,
}

impl HcHead {
    pub fn load(w: &WeightLoader<'_>, prefix: &str, dims: HcDims) -> Result<Self, LoadError> {
        let func = w.vector(&format!("{prefix}hc_head_fn"), &[dims.n, dims.n * dims.d])?;
        Ok(Self {
            func: Weight::from_f32(dims.n, dims.n * dims.d, func),
            base: w.vector(&format!("{prefix}hc_head_base"), &[dims.n])?,
            scale: w.vector(&format!("{prefix}hc_head_scale"), &[1])?[0],
        })
    }

    /// `[tokens, n, d]` streams -> `[tokens, d]`.
    pub fn collapse(&self, streams: &[f32], tokens: usize, dims: HcDims) -> Vec<f32> {
        let (n, d) = (dims.n, dims.d);
        let mu = self.func.forward(streams, tokens);
        let mut out = vec![0f32; tokens * d];
        out.par_chunks_mut(d).enumerate().for_each(|(t, out)| {
            let x = &streams[t * n * d..(t + 1) * n * d];
            let rho = rms_factor(x, dims.norm_eps);
            for i in 0..n {
                let w = sigmoid(mu[t * n + i] * rho * self.scale + self.base[i]) + dims.hc_eps;
                for (o, &v) in out.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *o += w * v;
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinkhorn_is_nearly_doubly_stochastic() {
        let mut c: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.5).collect();
        sinkhorn(&mut c, 4, 1e-6, 20);
        for j in 0..4 {
            let row: f32 = c[j * 4..j * 4 + 4].iter().sum();
            let col: f32 = (0..4).map(|i| c[i * 4 + j]).sum();
            assert!(
                (row - 1.0).abs() < 1e-3 && (col - 1.0).abs() < 1e-5,
                "row {row} col {col}"
            );
        }
    }
}
