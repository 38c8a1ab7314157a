//! OpenAI-style logprobs: the log-softmax of the model's raw logits for the chosen token
//! and the most likely alternatives.

use v4_protocol::generate::{TokenLogprob, TopLogprob};

/// `log_softmax(logits)[chosen]` and the `top` most likely tokens (most likely first, ties
/// by lower id).
pub fn token_logprob(logits: &[f32], chosen: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp = |x: f32| (x as f64 - log_z) as f32;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if best.len() == top && x <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, v)| v >= x);
            best.insert(at, (i as u32, x));
            best.truncate(top);
        }
    }
    TokenLogprob {
        token_id: chosen,
        logprob: logits
            .get(chosen as usize)
            .map_or(f32::NEG_INFINITY, |&x| lp(x)),
        top: best
            .into_iter()
            .map(|(token_id, x)| TopLogprob {
                token_id,
                logprob: lp(x),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_log_softmax() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        let t = token_logprob(&logits, 4, 3);
        assert!((t.logprob as f64 - (0.5 - z.ln())).abs() < 1e-6);
        let ids: Vec<u32> = t.top.iter().map(|t| t.token_id).collect();
        assert_eq!(ids, [1, 3, 0]);
        let p: f64 = t.top.iter().map(|t| (t.logprob as f64).exp()).sum();
        assert!(p < 1.0 && p > 0.9);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }
}
