//! Rotary position embedding, DeepSeek-V4 flavour (spec §2.4).
//!
//! Interleaved pairs `(2i, 2i+1)` of the trailing `rope_dim` channels rotate by `t·θ_i`.
//! Sliding-only layers use `rope_theta` unscaled; CSA/HCA layers, their compressors and the
//! indexer use `compress_rope_theta` with YaRN frequency blending (no magnitude factor).

use crate::config::ModelConfig;

/// Inverse frequencies `θ_i` for one rope type.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// Plain RoPE: `θ_i = base^(-2i/dim)`, computed like the reference (f32 power).
    pub fn plain(base: f64, dim: usize) -> Self {
        let inv_freq = (0..dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / dim as f32;
                1.0f32 / (base as f32).powf(exponent)
            })
            .collect();
        Self { inv_freq }
    }

    /// YaRN-blended frequencies (transformers' `_compute_yarn_parameters` without the
    /// attention factor, which V4 forces to 1).
    pub fn yarn(
        base: f64,
        dim: usize,
        factor: f64,
        original_max: usize,
        beta_fast: f64,
        beta_slow: f64,
    ) -> Self {
        let correction_dim = |rotations: f64| {
            dim as f64 * (original_max as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let low = correction_dim(beta_fast).floor().max(0.0);
        let high = correction_dim(beta_slow).ceil().min(dim as f64 - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        let plain = Self::plain(base, dim);
        let inv_freq = plain
            .inv_freq
            .iter()
            .enumerate()
            .map(|(i, &extrapolated)| {
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let interpolated = extrapolated / factor as f32;
                interpolated * ramp + extrapolated * (1.0 - ramp)
            })
            .collect();
        Self { inv_freq }
    }

    /// The two rope types of a model: (main for sliding layers, compress for CSA/HCA).
    pub fn for_model(cfg: &ModelConfig) -> (Rope, Rope) {
        let dim = cfg.rope_dim();
        let main = Rope::plain(cfg.rope_theta, dim);
        let compress = match &cfg.rope_scaling {
            Some(rs) => Rope::yarn(
                cfg.compress_rope_theta,
                dim,
                rs.factor,
                rs.original_max_position_embeddings,
                rs.beta_fast,
                rs.beta_slow,
            ),
            None => Rope::plain(cfg.compress_rope_theta, dim),
        };
        (main, compress)
    }

    pub fn dim(&self) -> usize {
        self.inv_freq.len() * 2
    }

    /// Rotate the trailing `dim()` channels of `x` by angle `sign · pos · θ_i`
    /// (`sign = -1` undoes a rotation: the attention output's de-rotation).
    pub fn apply(&self, x: &mut [f32], pos: usize, inverse: bool) {
        let d = self.dim();
        let n = x.len();
        let tail = &mut x[n - d..];
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = f * pos as f32;
            let (sin, cos) = angle.sin_cos();
            let sin = if inverse { -sin } else { sin };
            let (a, b) = (tail[2 * i], tail[2 * i + 1]);
            tail[2 * i] = a * cos - b * sin;
            tail[2 * i + 1] = b * cos + a * sin;
        }
    }

    /// Apply to each `width`-wide head of `x` (all at the same position).
    pub fn apply_heads(&self, x: &mut [f32], width: usize, pos: usize, inverse: bool) {
        for head in x.chunks_exact_mut(width) {
            self.apply(head, pos, inverse);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_yarn_window_is_15_to_25() {
        // spec §2.4: low = 15, high = 25 for dim 64, base 160000, original 65536.
        let r = Rope::yarn(160000.0, 64, 16.0, 65536, 32.0, 1.0);
        let plain = Rope::plain(160000.0, 64);
        for i in 0..=15 {
            assert_eq!(
                r.inv_freq[i], plain.inv_freq[i],
                "i={i} keeps the original frequency"
            );
        }
        for i in 25..32 {
            assert!(
                (r.inv_freq[i] - plain.inv_freq[i] / 16.0).abs() <= 1e-12,
                "i={i} fully interpolated"
            );
        }
        assert!(r.inv_freq[20] < plain.inv_freq[20] && r.inv_freq[20] > plain.inv_freq[20] / 16.0);
    }

    #[test]
    fn inverse_undoes_rotation() {
        let r = Rope::plain(10000.0, 8);
        let orig: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 1.0).collect();
        let mut x = orig.clone();
        r.apply(&mut x, 1234, false);
        assert_eq!(&x[..4], &orig[..4], "nope channels untouched");
        r.apply(&mut x, 1234, true);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
