//! The filter pipeline of a non-greedy step: top-k (partial selection), top-p on the
//! renormalised remainder (growing sorted prefix), min-p, then one weighted draw.
//! Ordering ties are broken by the lower token id.

use super::{Sampler, argmax};

/// Descending by value, ascending by token id on ties. Values are never NaN here.
#[inline]
pub(super) fn cmp_desc(s: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    let (va, vb) = (s[a as usize], s[b as usize]);
    vb.partial_cmp(&va)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.cmp(&b))
}

impl Sampler {
    /// Apply top-k, top-p, min-p to scaled logits `s` (max exactly 0, no NaN,
    /// at least one finite) and draw one token. Also returns the unfiltered
    /// normaliser `sum_i exp(s_i)` (for the log-probability; only guaranteed
    /// to be computed when `need_total`, otherwise may be NaN).
    pub(super) fn filter_and_draw(&mut self, s: &[f32], need_total: bool) -> (u32, f64) {
        let top_k = self.params.top_k;
        let top_p = self.params.top_p;
        let min_p = self.params.min_p;
        let cmp = |a: &u32, b: &u32| cmp_desc(s, *a, *b);
        // Weights are exp in f32 (s <= 0, so no overflow), accumulated in f64.
        let weight = |i: u32| s[i as usize].exp() as f64;

        let mut idx = std::mem::take(&mut self.idx);
        let mut w = std::mem::take(&mut self.w);
        idx.clear();
        w.clear();

        // Pass 1: finite candidates and the full normaliser (skipped when only
        // top-k needs it and no log-probability is wanted); when no ordering
        // filter is active, the candidate weights are stored on the way.
        let ordered = top_k > 0 || top_p < 1.0;
        let exps = need_total || top_k == 0;
        let mut total_all = if exps { 0.0f64 } else { f64::NAN };
        for (i, &v) in s.iter().enumerate() {
            if v > f32::NEG_INFINITY {
                idx.push(i as u32);
                if exps {
                    let e = v.exp() as f64;
                    total_all += e;
                    if !ordered {
                        w.push(e);
                    }
                }
            }
        }

        // top-k: partial selection, O(V).
        let total_c = if top_k > 0 && top_k < idx.len() {
            idx.select_nth_unstable_by(top_k - 1, cmp);
            idx.truncate(top_k);
            idx.iter().map(|&i| weight(i)).sum()
        } else if exps {
            total_all
        } else {
            idx.iter().map(|&i| weight(i)).sum()
        };

        // top-p on the renormalised remainder: the nucleus is the shortest
        // prefix (in descending order) whose mass reaches top_p; a token is
        // kept while the mass strictly before it is < top_p (at least one).
        // Only a growing prefix is selected and sorted, not the whole vocab.
        if top_p < 1.0 {
            let target = top_p as f64 * total_c;
            let len = idx.len();
            let mut k = len.min(256);
            loop {
                if k < len {
                    idx.select_nth_unstable_by(k - 1, cmp);
                }
                idx[..k].sort_unstable_by(cmp);
                let mut cum = 0.0f64;
                let mut keep = 0usize;
                for &i in &idx[..k] {
                    if keep > 0 && cum >= target {
                        break;
                    }
                    cum += weight(i);
                    keep += 1;
                }
                if keep < k || cum >= target || k == len {
                    idx.truncate(keep);
                    break;
                }
                k = len.min(k * 4);
            }
        }
        if ordered {
            w.extend(idx.iter().map(|&i| weight(i)));
        }

        if min_p > 0.0 {
            // p_max corresponds to weight exactly 1 (max scaled logit is 0 and
            // the global max always survives top-k / top-p), so the threshold
            // is simply `min_p` in weight space.
            let thr = min_p as f64;
            let mut j = 0usize;
            for i in 0..idx.len() {
                if w[i] >= thr {
                    idx[j] = idx[i];
                    w[j] = w[i];
                    j += 1;
                }
            }
            idx.truncate(j);
            w.truncate(j);
        }

        // Draw. There is always at least the max token (weight 1) left.
        let total: f64 = w.iter().sum();
        let r = self.rng.next_f64() * total;
        let mut cum = 0.0f64;
        let mut chosen: Option<u32> = None;
        let mut last_pos: Option<u32> = None;
        for (&i, &wi) in idx.iter().zip(w.iter()) {
            if wi > 0.0 {
                last_pos = Some(i);
                cum += wi;
                if r < cum {
                    chosen = Some(i);
                    break;
                }
            }
        }
        let tok = chosen.or(last_pos).unwrap_or_else(|| argmax(s));
        self.idx = idx;
        self.w = w;
        (tok, total_all)
    }
}
