//! Attention shared by the three layer types (spec §2.5): low-rank queries, one shared K=V
//! head, a sliding window, compressed entries (all of them for HCA, the indexer's top-k for
//! CSA), a per-head sink logit, de-rotation of the output and the grouped low-rank output
//! projection.

use rayon::prelude::*;

use crate::cache::{LayerCache, SeqSpan, row_owners};
use crate::compressor::{Compressor, CompressorState};
use crate::config::{AttnKind, ModelConfig};
use crate::indexer::Indexer;
use crate::loader::LoadError;
use crate::ops::{rms_norm_rows, rms_norm_unweighted};
use crate::rope::Rope;
use crate::weights::{Weight, WeightLoader};

/// `layers.{i}.attn.*`
pub struct Attention {
    pub kind: AttnKind,
    heads: usize,
    head_dim: usize,
    window: usize,
    groups: usize,
    eps: f32,
    wq_a: Weight,
    q_norm: Vec<f32>,
    wq_b: Weight,
    wkv: Weight,
    kv_norm: Vec<f32>,
    /// `wo_a` split into its `o_groups` row blocks.
    wo_a: Vec<Weight>,
    wo_b: Weight,
    sink: Vec<f32>,
    pub compressor: Option<Compressor>,
    pub indexer: Option<Indexer>,
}

/// What a traced forward records of one attention call (single sequence only).
#[derive(Debug, Default)]
pub struct AttnTrace {
    /// Per query: the indexer's picks, best first, `-1` padded to `index_topk`.
    pub indexer_topk: Vec<Vec<i64>>,
}

impl Attention {
    pub fn load(
        w: &WeightLoader<'_>,
        cfg: &ModelConfig,
        prefix: &str,
        kind: AttnKind,
    ) -> Result<Self, LoadError> {
        let (d, h, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim);
        let (g, r) = (cfg.o_groups, cfg.o_lora_rank);
        let wo_a = w.matrix_bf16(&format!("{prefix}.wo_a.weight"), g * r, h * hd / g)?;
        let compressor = match kind {
            AttnKind::Sliding => None,
            AttnKind::Csa { ratio } | AttnKind::Hca { ratio } => Some(Compressor::load(
                w,
                &format!("{prefix}.compressor"),
                ratio,
                hd,
                d,
            )?),
        };
        let indexer = match kind {
            AttnKind::Csa { ratio } => {
                Some(Indexer::load(w, cfg, &format!("{prefix}.indexer"), ratio)?)
            }
            _ => None,
        };
        Ok(Self {
            kind,
            heads: h,
            head_dim: hd,
            window: cfg.sliding_window,
            groups: g,
            eps: cfg.rms_norm_eps as f32,
            wq_a: w.matrix(&format!("{prefix}.wq_a.weight"), cfg.q_lora_rank, d)?,
            q_norm: w.vector(&format!("{prefix}.q_norm.weight"), &[cfg.q_lora_rank])?,
            wq_b: w.matrix(&format!("{prefix}.wq_b.weight"), h * hd, cfg.q_lora_rank)?,
            wkv: w.matrix(&format!("{prefix}.wkv.weight"), hd, d)?,
            kv_norm: w.vector(&format!("{prefix}.kv_norm.weight"), &[hd])?,
            wo_a: (0..g).map(|i| wo_a.row_block(i * r, r)).collect(),
            wo_b: w.matrix(&format!("{prefix}.wo_b.weight"), d, g * r)?,
            sink: w.vector(&format!("{prefix}.attn_sink"), &[h])?,
            compressor,
            indexer,
        })
    }

    /// A fresh per-sequence cache for this layer.
    pub fn new_cache(&self) -> LayerCache {
        LayerCache {
            window: crate::cache::WindowRing::new(self.window, self.head_dim),
            compressor: self.compressor.as_ref().map(Compressor::new_state),
            indexer: self.indexer.as_ref().map(|i| i.compressor.new_state()),
        }
    }

    /// Bytes of weights one token's pass reads.
    pub fn weight_bytes(&self) -> usize {
        let mut b = self.wq_a.bytes() + self.wq_b.bytes() + self.wkv.bytes() + self.wo_b.bytes();
        b += self.wo_a.iter().map(Weight::bytes).sum::<usize>();
        if let Some(c) = &self.compressor {
            b += c.wkv.bytes() + c.wgate.bytes();
        }
        if let Some(i) = &self.indexer {
            b += i.weight_bytes();
        }
        b
    }

    /// Attention over `x` (`[rows, hidden]`, already `attn_norm`-ed) for every sequence of the
    /// batch, reading and then extending each sequence's cache.
    pub fn forward(
        &self,
        x: &[f32],
        spans: &[SeqSpan],
        caches: &mut [&mut LayerCache],
        rope: &Rope,
        trace: Option<&mut AttnTrace>,
    ) -> Vec<f32> {
        let rows: usize = spans.iter().map(|s| s.len).sum();
        let (h, hd) = (self.heads, self.head_dim);
        let positions: Vec<usize> = spans.iter().flat_map(|s| s.pos..s.pos + s.len).collect();

        let mut qr = self.wq_a.forward(x, rows);
        rms_norm_rows(&mut qr, &self.q_norm, self.eps);
        let mut q = self.wq_b.forward(&qr, rows);
        q.par_chunks_mut(h * hd)
            .zip(&positions)
            .for_each(|(qt, &pos)| {
                for head in qt.chunks_exact_mut(hd) {
                    rms_norm_unweighted(head, self.eps);
                    rope.apply(head, pos, false);
                }
            });
        let mut kv = self.wkv.forward(x, rows);
        rms_norm_rows(&mut kv, &self.kv_norm, self.eps);
        kv.par_chunks_mut(hd)
            .zip(&positions)
            .for_each(|(k, &pos)| rope.apply(k, pos, false));

        // Compressed entries first: a query may read the entries its own chunk completes.
        if let Some(comp) = &self.compressor {
            let states = caches.iter_mut().map(|c| {
                c.compressor
                    .as_mut()
                    .expect("compressed layer has compressor state")
            });
            comp.absorb(x, spans, states, rope, self.eps);
        }
        let picks = self
            .indexer
            .as_ref()
            .map(|idx| idx.select(x, &qr, spans, caches, &positions, rope, self.eps));
        if let (Some(t), Some(p)) = (trace, &picks) {
            let k = self.indexer.as_ref().map_or(0, |i| i.topk);
            t.indexer_topk = p
                .iter()
                .map(|sel| {
                    let mut v: Vec<i64> = sel.iter().map(|&w| w as i64).collect();
                    v.resize(k.max(v.len()), -1);
                    v
                })
                .collect();
        }

        // Core attention, one query row at a time (rows of all sequences in parallel).
        let mut o = vec![0f32; rows * h * hd];
        let row_seq = row_owners(spans);
        {
            let caches_ro: Vec<&LayerCache> = caches.iter().map(|c| &**c).collect();
            o.par_chunks_mut(h * hd).enumerate().for_each(|(row, out)| {
                let span = &spans[row_seq[row]];
                let cache = caches_ro[row_seq[row]];
                let t = positions[row];
                let mut keys: Vec<&[f32]> = Vec::with_capacity(self.window + 64);
                for p in (t + 1).saturating_sub(self.window)..=t {
                    keys.push(if p >= span.pos {
                        &kv[(span.row + p - span.pos) * hd..(span.row + p - span.pos + 1) * hd]
                    } else {
                        cache.window.get(p)
                    });
                }
                if let Some(state) = &cache.compressor {
                    self.compressed_keys(
                        state,
                        t,
                        picks.as_ref().map(|p| p[row].as_slice()),
                        &mut keys,
                    );
                }
                let qt = &q[row * h * hd..(row + 1) * h * hd];
                attend(qt, &keys, &self.sink, hd, out);
                for head in out.chunks_exact_mut(hd) {
                    rope.apply(head, t, true);
                }
            });
        }
        for (span, cache) in spans.iter().zip(caches.iter_mut()) {
            let first = span.len.saturating_sub(self.window);
            for j in first..span.len {
                let r = span.row + j;
                cache.window.put(span.pos + j, &kv[r * hd..(r + 1) * hd]);
            }
        }
        self.output_projection(&o, rows)
    }

    /// Compressed entries visible to the query at position `t`.
    fn compressed_keys<'a>(
        &self,
        state: &'a CompressorState,
        t: usize,
        picks: Option<&[usize]>,
        keys: &mut Vec<&'a [f32]>,
    ) {
        let hd = self.head_dim;
        match (self.kind, picks) {
            (AttnKind::Csa { .. }, Some(sel)) => {
                keys.extend(sel.iter().map(|&w| &state.entries[w * hd..(w + 1) * hd]));
            }
            (AttnKind::Hca { ratio }, _) => {
                let visible = ((t + 1) / ratio).min(state.n_entries(hd));
                keys.extend(state.entries[..visible * hd].chunks_exact(hd));
            }
            _ => {}
        }
    }

    /// Grouped low-rank output projection: `wo_b · concat_g(wo_a[g] · o_g)`.
    fn output_projection(&self, o: &[f32], rows: usize) -> Vec<f32> {
        let (g, hd) = (self.groups, self.head_dim);
        let gw = self.heads * hd / g;
        let r = self.wo_a[0].rows;
        let mut z = vec![0f32; rows * g * r];
        let mut og = vec![0f32; rows * gw];
        let mut zg = vec![0f32; rows * r];
        for (gi, wo) in self.wo_a.iter().enumerate() {
            for t in 0..rows {
                let src = &o[t * g * gw + gi * gw..t * g * gw + (gi + 1) * gw];
                og[t * gw..(t + 1) * gw].copy_from_slice(src);
            }
            wo.forward_into(&og, rows, &mut zg);
            for t in 0..rows {
                z[t * g * r + gi * r..t * g * r + (gi + 1) * r]
                    .copy_from_slice(&zg[t * r..(t + 1) * r]);
            }
        }
        self.wo_b.forward(&z, rows)
    }
}

/// Multi-head attention of one query row against shared K=V vectors, with a sink logit per
/// head in the softmax denominator: `o_h = Σ_j softmax(q_h·k_j/√d ∪ sink_h)_j · k_j`.
pub fn attend(q: &[f32], keys: &[&[f32]], sink: &[f32], hd: usize, out: &mut [f32]) {
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; keys.len()];
    for (h, (qh, oh)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let mut max = sink[h];
        for (s, k) in scores.iter_mut().zip(keys) {
            *s = v4_kernels::vec::dot(qh, k) * scale;
            max = max.max(*s);
        }
        let mut denom = (sink[h] - max).exp();
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            denom += *s;
        }
        oh.iter_mut().for_each(|v| *v = 0.0);
        for (s, k) in scores.iter().zip(keys) {
            v4_kernels::vec::axpy(oh, s / denom, k);
        }
    }
}
