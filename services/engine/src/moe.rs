//! Mixture of experts (spec §2.8): sqrt-softplus router (learned top-k with a selection-only
//! bias, or hash routing by token id), normalised and scaled weights, clamped SwiGLU experts
//! and the shared expert.

use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::indexer::top_k;
use crate::loader::LoadError;
use crate::ops::{silu, softplus};
use crate::weights::{Weight, WeightLoader};

/// One SwiGLU expert: `w2 · (silu(min(w1·x, L)) ⊙ clamp(w3·x, -L, L))`.
pub struct Expert {
    pub w1: Weight,
    pub w2: Weight,
    pub w3: Weight,
}

impl Expert {
    fn load(
        w: &WeightLoader<'_>,
        prefix: &str,
        hidden: usize,
        inter: usize,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            w1: w.matrix(&format!("{prefix}.w1.weight"), inter, hidden)?,
            w2: w.matrix(&format!("{prefix}.w2.weight"), hidden, inter)?,
            w3: w.matrix(&format!("{prefix}.w3.weight"), inter, hidden)?,
        })
    }

    pub fn bytes(&self) -> usize {
        self.w1.bytes() + self.w2.bytes() + self.w3.bytes()
    }

    /// `[rows, hidden]` -> `[rows, hidden]`.
    pub fn forward(&self, x: &[f32], rows: usize, limit: f32) -> Vec<f32> {
        let mut a = self.w1.forward(x, rows);
        let b = self.w3.forward(x, rows);
        for (a, &b) in a.iter_mut().zip(&b) {
            *a = silu(a.min(limit)) * b.clamp(-limit, limit);
        }
        self.w2.forward(&a, rows)
    }
}

enum Routing {
    /// Learned: top-k of `score + bias`.
    Learned { bias: Vec<f32> },
    /// Hash: fixed experts per token id, `tid2eid[vocab, k]`.
    Hash { tid2eid: Vec<u32> },
}

/// `layers.{i}.ffn.*`
pub struct Moe {
    gate: Weight,
    routing: Routing,
    pub experts: Vec<Expert>,
    pub shared: Option<Expert>,
    k: usize,
    scaling: f32,
    normalize: bool,
    limit: f32,
}

impl Moe {
    pub fn load(
        w: &WeightLoader<'_>,
        cfg: &ModelConfig,
        prefix: &str,
        hash: bool,
    ) -> Result<Self, LoadError> {
        let (d, e, k, inter) = (
            cfg.hidden_size,
            cfg.n_routed_experts,
            cfg.num_experts_per_tok,
            cfg.moe_intermediate_size,
        );
        let routing = if hash {
            Routing::Hash {
                tid2eid: w.expert_table(
                    &format!("{prefix}.gate.tid2eid"),
                    &[cfg.vocab_size, k],
                    e,
                )?,
            }
        } else {
            Routing::Learned {
                bias: w.vector(&format!("{prefix}.gate.bias"), &[e])?,
            }
        };
        let experts = (0..e)
            .map(|i| Expert::load(w, &format!("{prefix}.experts.{i}"), d, inter))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = if cfg.n_shared_experts > 0 {
            Some(Expert::load(
                w,
                &format!("{prefix}.shared_experts"),
                d,
                inter,
            )?)
        } else {
            None
        };
        Ok(Self {
            gate: w.matrix(&format!("{prefix}.gate.weight"), e, d)?,
            routing,
            experts,
            shared,
            k,
            scaling: cfg.routed_scaling_factor as f32,
            normalize: cfg.norm_topk_prob,
            limit: cfg.swiglu_limit as f32,
        })
    }

    /// Bytes of weights one token reads: router, `k` routed experts and the shared one.
    pub fn token_bytes(&self) -> usize {
        self.gate.bytes()
            + self.k * self.experts.first().map_or(0, Expert::bytes)
            + self.shared.as_ref().map_or(0, Expert::bytes)
    }

    /// Experts and weights chosen for each row: `[rows][k]` of `(expert, weight)`.
    pub fn route(&self, x: &[f32], rows: usize, token_ids: &[u32]) -> Vec<Vec<(usize, f32)>> {
        let e = self.experts.len();
        let logits = self.gate.forward(x, rows);
        (0..rows)
            .into_par_iter()
            .map(|t| {
                let scores: Vec<f32> = logits[t * e..(t + 1) * e]
                    .iter()
                    .map(|&l| softplus(l).sqrt())
                    .collect();
                let chosen: Vec<usize> = match &self.routing {
                    Routing::Learned { bias } => {
                        let biased: Vec<f32> =
                            scores.iter().zip(bias).map(|(s, b)| s + b).collect();
                        top_k(&biased, self.k)
                    }
                    Routing::Hash { tid2eid } => {
                        let id = token_ids[t] as usize;
                        tid2eid[id * self.k..(id + 1) * self.k]
                            .iter()
                            .map(|&x| x as usize)
                            .collect()
                    }
                };
                let mut g: Vec<f32> = chosen.iter().map(|&i| scores[i]).collect();
                if self.normalize {
                    let sum: f32 = g.iter().sum::<f32>() + 1e-20;
                    g.iter_mut().for_each(|v| *v /= sum);
                }
                chosen
                    .into_iter()
                    .zip(g)
                    .map(|(i, g)| (i, g * self.scaling))
                    .collect()
            })
            .collect()
    }

    /// `[rows, hidden]` (already `ffn_norm`-ed) -> `[rows, hidden]`.
    pub fn forward(&self, x: &[f32], rows: usize, token_ids: &[u32]) -> Vec<f32> {
        let d = self.gate.cols;
        let routes = self.route(x, rows, token_ids);
        // Group rows by expert; each row's contributions are then summed in expert order,
        // so a row's result does not depend on what else is in the batch.
        let mut by_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); self.experts.len()];
        for (t, r) in routes.iter().enumerate() {
            for &(e, g) in r {
                by_expert[e].push((t, g));
            }
        }
        let active: Vec<usize> = (0..self.experts.len())
            .filter(|&e| !by_expert[e].is_empty())
            .collect();
        let outputs: Vec<Vec<f32>> = active
            .par_iter()
            .map(|&e| {
                let rows_e = &by_expert[e];
                let mut xs = Vec::with_capacity(rows_e.len() * d);
                for &(t, _) in rows_e {
                    xs.extend_from_slice(&x[t * d..(t + 1) * d]);
                }
                self.experts[e].forward(&xs, rows_e.len(), self.limit)
            })
            .collect();
        let mut out = vec![0f32; rows * d];
        for (&e, y) in active.iter().zip(&outputs) {
            for (i, &(t, g)) in by_expert[e].iter().enumerate() {
                v4_kernels::vec::axpy(&mut out[t * d..(t + 1) * d], g, &y[i * d..(i + 1) * d]);
            }
        }
        if let Some(shared) = &self.shared {
            let s = shared.forward(x, rows, self.limit);
            out.iter_mut().zip(&s).for_each(|(o, s)| *o += s);
        }
        out
    }
}
