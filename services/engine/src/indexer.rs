//! Lightning Indexer of CSA layers (spec §2.7): scores every visible compressed entry with
//! `I(t, w) = Σ_h wgt[t,h] · ReLU(q_I[t,h] · K_I[w])` and keeps the top `index_topk`.
//!
//! Tie rule (the reference leaves ties arbitrary): entries are ordered by score, highest
//! first, and equal scores by entry index, lowest (oldest) first. NaN scores rank last.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::cache::{LayerCache, SeqSpan, row_owners};
use crate::compressor::Compressor;
use crate::config::ModelConfig;
use crate::loader::LoadError;
use crate::rope::Rope;
use crate::weights::{Weight, WeightLoader};

/// `layers.{i}.attn.indexer.*`
pub struct Indexer {
    pub compressor: Compressor,
    wq_b: Weight,
    weights_proj: Weight,
    heads: usize,
    head_dim: usize,
    pub topk: usize,
    ratio: usize,
}

impl Indexer {
    pub fn load(
        w: &WeightLoader<'_>,
        cfg: &ModelConfig,
        prefix: &str,
        ratio: usize,
    ) -> Result<Self, LoadError> {
        let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
        Ok(Self {
            compressor: Compressor::load(
                w,
                &format!("{prefix}.compressor"),
                ratio,
                id,
                cfg.hidden_size,
            )?,
            wq_b: w.matrix(&format!("{prefix}.wq_b.weight"), ih * id, cfg.q_lora_rank)?,
            weights_proj: w.matrix(
                &format!("{prefix}.weights_proj.weight"),
                ih,
                cfg.hidden_size,
            )?,
            heads: ih,
            head_dim: id,
            topk: cfg.index_topk,
            ratio,
        })
    }

    pub fn weight_bytes(&self) -> usize {
        self.wq_b.bytes()
            + self.weights_proj.bytes()
            + self.compressor.wkv.bytes()
            + self.compressor.wgate.bytes()
    }

    /// Extend every sequence's indexer keys with this call's tokens, then pick, for each
    /// query row, the compressed entries it attends to (best first).
    #[allow(clippy::too_many_arguments)]
    pub fn select(
        &self,
        x: &[f32],
        qr: &[f32],
        spans: &[SeqSpan],
        caches: &mut [&mut LayerCache],
        positions: &[usize],
        rope: &Rope,
        eps: f32,
    ) -> Vec<Vec<usize>> {
        let rows = positions.len();
        let states = caches
            .iter_mut()
            .map(|c| c.indexer.as_mut().expect("CSA layer has indexer state"));
        self.compressor.absorb(x, spans, states, rope, eps);

        let (ih, id) = (self.heads, self.head_dim);
        let mut q = self.wq_b.forward(qr, rows);
        q.par_chunks_mut(ih * id)
            .zip(positions)
            .for_each(|(qt, &pos)| rope.apply_heads(qt, id, pos, false));
        let mut wgt = self.weights_proj.forward(x, rows);
        let head_scale = 1.0 / (ih as f32).sqrt();
        wgt.iter_mut().for_each(|v| *v *= head_scale);
        let score_scale = 1.0 / (id as f32).sqrt();

        let row_seq = row_owners(spans);
        let keys: Vec<&[f32]> = caches
            .iter()
            .map(|c| {
                c.indexer
                    .as_ref()
                    .expect("indexer state")
                    .entries
                    .as_slice()
            })
            .collect();
        (0..rows)
            .into_par_iter()
            .map(|row| {
                let entries = keys[row_seq[row]];
                let visible = ((positions[row] + 1) / self.ratio).min(entries.len() / id);
                let qt = &q[row * ih * id..(row + 1) * ih * id];
                let wt = &wgt[row * ih..(row + 1) * ih];
                let scores: Vec<f32> = (0..visible)
                    .map(|w| {
                        let k = &entries[w * id..(w + 1) * id];
                        qt.chunks_exact(id)
                            .zip(wt)
                            .map(|(qh, &g)| v4_kernels::vec::dot(qh, k).max(0.0) * score_scale * g)
                            .sum()
                    })
                    .collect();
                top_k(&scores, self.topk)
            })
            .collect()
    }
}

/// Indices of the `k` largest scores, best first; ties by lower index; NaN last.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let cmp = |&a: &usize, &b: &usize| -> Ordering {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => sb
                .partial_cmp(&sa)
                .unwrap_or(Ordering::Equal)
                .then(a.cmp(&b)),
        }
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_orders_by_score_then_index() {
        let s = [0.0, 2.0, 0.0, 2.0, 1.0, f32::NAN];
        assert_eq!(top_k(&s, 3), vec![1, 3, 4]);
        assert_eq!(top_k(&s, 5), vec![1, 3, 4, 0, 2]);
        assert_eq!(top_k(&s, 10), vec![1, 3, 4, 0, 2, 5]);
        assert_eq!(top_k(&[], 4), Vec::<usize>::new());
    }
}
