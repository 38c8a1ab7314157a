//! Small per-row numeric operations of the forward pass (all f32, as the reference).

/// `x ← w ⊙ x / sqrt(mean(x²) + eps)` (weighted RMSNorm, spec §2).
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let r = rms_factor(x, eps);
    for (v, &g) in x.iter_mut().zip(w) {
        *v = g * (*v * r);
    }
}

/// `x ← x / sqrt(mean(x²) + eps)` (unweighted RMSNorm).
pub fn rms_norm_unweighted(x: &mut [f32], eps: f32) {
    let r = rms_factor(x, eps);
    for v in x.iter_mut() {
        *v *= r;
    }
}

/// `1 / sqrt(mean(x²) + eps)`.
pub fn rms_factor(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// Apply a weighted RMSNorm to every `width`-wide row of `x`.
pub fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        rms_norm(row, w, eps);
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `log(1 + e^x)` with torch's threshold (x > 20 returns x).
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rms() {
        let mut x = vec![3.0, 4.0];
        rms_norm_unweighted(&mut x, 0.0);
        let ms: f32 = x.iter().map(|v| v * v).sum::<f32>() / 2.0;
        assert!((ms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn softmax_handles_all_neg_inf() {
        let mut x = vec![f32::NEG_INFINITY; 3];
        softmax(&mut x);
        assert_eq!(x, vec![0.0; 3]);
        let mut y = vec![0.0, f32::NEG_INFINITY];
        softmax(&mut y);
        assert_eq!(y, vec![1.0, 0.0]);
    }
}
