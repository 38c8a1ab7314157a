//! The DeepSeek-V4 model on CPU: one struct per checkpoint block, a batched forward over
//! any mix of sequences and chunk sizes (prefill chunks and decode steps alike), and the
//! MTP block.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::attention::{Attention, AttnTrace};
use crate::cache::{LayerCache, SeqSpan, SequenceCache};
use crate::config::{AttnKind, ModelConfig};
use crate::loader::{Checkpoint, LoadError};
use crate::mhc::{HcDims, HcHead, HcSite, hc_post};
use crate::moe::Moe;
use crate::ops::rms_norm_rows;
use crate::rope::Rope;
use crate::weights::{ActivationMode, LoadOptions, Weight, WeightLoader};

/// Errors of a forward call (bad input, not bugs).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForwardError {
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("sequence {index} has no tokens in this call")]
    EmptySequence { index: usize },
    #[error("position {pos} exceeds max_position_embeddings ({max})")]
    TooLong { pos: usize, max: usize },
    #[error("this model has no MTP block")]
    NoMtp,
    #[error("MTP needs one next token per stream row: {streams} rows, {tokens} tokens")]
    MtpShape { streams: usize, tokens: usize },
}

/// Named intermediate tensors of a single-sequence forward, for layer-level golden tests.
pub type Trace = BTreeMap<String, Vec<f32>>;

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// One row per input token.
    All,
    /// Only the last token of each sequence.
    Last,
    /// None (intermediate prefill chunks).
    None,
}

/// Result of a forward call.
pub struct ForwardOutput {
    /// Per sequence: `[rows, vocab]` row-major.
    pub logits: Vec<Vec<f32>>,
    /// Per sequence: the final residual streams `[len, hc_mult, hidden]` (before `hc_head`),
    /// kept only when asked for (the MTP block's input).
    pub streams: Option<Vec<Vec<f32>>>,
}

/// One decoder layer (`layers.{i}.*`, or `mtp.0.*`).
pub struct Block {
    pub index: usize,
    hc_attn: HcSite,
    hc_ffn: HcSite,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    pub attn: Attention,
    pub ffn: Moe,
}

impl Block {
    fn load(
        w: &WeightLoader<'_>,
        cfg: &ModelConfig,
        prefix: &str,
        index: usize,
        hash: bool,
    ) -> Result<Self, LoadError> {
        let dims = hc_dims(cfg);
        let kind = cfg.attn_kind(index);
        Ok(Self {
            index,
            hc_attn: HcSite::load(w, &format!("{prefix}.hc_attn"), dims)?,
            hc_ffn: HcSite::load(w, &format!("{prefix}.hc_ffn"), dims)?,
            attn_norm: w.vector(&format!("{prefix}.attn_norm.weight"), &[cfg.hidden_size])?,
            ffn_norm: w.vector(&format!("{prefix}.ffn_norm.weight"), &[cfg.hidden_size])?,
            attn: Attention::load(w, cfg, &format!("{prefix}.attn"), kind)?,
            ffn: Moe::load(w, cfg, &format!("{prefix}.ffn"), hash)?,
        })
    }

    /// One layer over the batch's streams `[rows, n, d]`, in place.
    fn forward(
        &self,
        streams: &mut [f32],
        token_ids: &[u32],
        spans: &[SeqSpan],
        caches: &mut [&mut LayerCache],
        ctx: &Ctx<'_>,
        mut trace: Option<&mut Trace>,
    ) {
        let rows = token_ids.len();
        let dims = ctx.dims;
        let (mut u, mix) = self.hc_attn.pre(streams, rows, dims);
        let collapsed = trace.as_ref().map(|_| u.clone());
        rms_norm_rows(&mut u, &self.attn_norm, dims.norm_eps);
        let rope = if self.attn.kind.is_compressed() {
            ctx.rope_compress
        } else {
            ctx.rope_main
        };
        let mut atrace = AttnTrace::default();
        let a = self
            .attn
            .forward(&u, spans, caches, rope, trace.as_ref().map(|_| &mut atrace));
        hc_post(streams, &a, &mix, dims);
        if let Some(t) = trace.as_deref_mut() {
            let p = format!("layer{}", self.index);
            t.insert(format!("{p}.attn_hc.post"), mix.post.clone());
            t.insert(format!("{p}.attn_hc.comb"), mix.comb.clone());
            t.insert(
                format!("{p}.attn_hc.collapsed"),
                collapsed.unwrap_or_default(),
            );
            t.insert(format!("{p}.attn_out"), a);
            if let Some(state) = caches[0].compressor.as_ref() {
                t.insert(format!("{p}.compressed_kv"), state.entries.clone());
            }
            if !atrace.indexer_topk.is_empty() {
                let flat = atrace
                    .indexer_topk
                    .iter()
                    .flatten()
                    .map(|&v| v as f32)
                    .collect();
                t.insert(format!("{p}.indexer_topk"), flat);
            }
        }
        let (mut u, mix) = self.hc_ffn.pre(streams, rows, dims);
        rms_norm_rows(&mut u, &self.ffn_norm, dims.norm_eps);
        let f = self.ffn.forward(&u, rows, token_ids);
        hc_post(streams, &f, &mix, dims);
        if let Some(t) = trace {
            let p = format!("layer{}", self.index);
            t.insert(format!("{p}.moe_out"), f);
            t.insert(format!("{p}.out_streams"), streams.to_vec());
        }
    }
}

/// Shared per-call constants.
struct Ctx<'a> {
    dims: HcDims,
    rope_main: &'a Rope,
    rope_compress: &'a Rope,
}

fn hc_dims(cfg: &ModelConfig) -> HcDims {
    HcDims {
        n: cfg.hc_mult,
        d: cfg.hidden_size,
        norm_eps: cfg.rms_norm_eps as f32,
        hc_eps: cfg.hc_eps as f32,
        sinkhorn_iters: cfg.hc_sinkhorn_iters,
    }
}

/// The multi-token-prediction block (`mtp.0.*`), sharing `embed` and `head` with the model.
pub struct Mtp {
    e_proj: Weight,
    h_proj: Weight,
    enorm: Vec<f32>,
    hnorm: Vec<f32>,
    norm: Vec<f32>,
    hc_head: HcHead,
    pub block: Block,
}

/// A loaded model.
pub struct Model {
    pub cfg: ModelConfig,
    dims: HcDims,
    embed: Weight,
    head: Weight,
    norm: Vec<f32>,
    hc_head: HcHead,
    pub blocks: Vec<Block>,
    pub mtp: Option<Mtp>,
    pub rope_main: Rope,
    pub rope_compress: Rope,
}

impl Model {
    /// Load `dir/config.json` and the checkpoint's weights (BF16 mapped; FP8/FP4 dequantized).
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// [`Model::load`] with explicit options (e.g. dequantize FP8/FP4 at load).
    pub fn load_with(dir: &Path, opts: LoadOptions) -> Result<Self, LoadError> {
        Self::load_with_mode(dir, opts, ActivationMode::Exact)
    }

    /// [`Model::load_with`] with the compute mode of the quantized matrices
    /// ([`ActivationMode::Int8`]: the fast, non-exact kernels).
    pub fn load_with_mode(
        dir: &Path,
        opts: LoadOptions,
        activations: ActivationMode,
    ) -> Result<Self, LoadError> {
        let cfg = ModelConfig::from_path(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint_with_mode(cfg, &ckpt, opts, activations)
    }

    pub fn from_checkpoint(
        cfg: ModelConfig,
        ckpt: &Checkpoint,
        opts: LoadOptions,
    ) -> Result<Self, LoadError> {
        Self::from_checkpoint_with_mode(cfg, ckpt, opts, ActivationMode::Exact)
    }

    /// [`Model::from_checkpoint`] with the compute mode of the quantized matrices.
    pub fn from_checkpoint_with_mode(
        cfg: ModelConfig,
        ckpt: &Checkpoint,
        opts: LoadOptions,
        activations: ActivationMode,
    ) -> Result<Self, LoadError> {
        let w = WeightLoader {
            ckpt,
            fp8_block: cfg.fp8_block(),
            opts,
            activations,
        };
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        let dims = hc_dims(&cfg);
        let blocks = (0..cfg.num_hidden_layers)
            .into_par_iter()
            .map(|i| Block::load(&w, &cfg, &format!("layers.{i}"), i, cfg.is_hash_layer(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mtp = if cfg.num_nextn_predict_layers > 0 {
            let l = cfg.num_hidden_layers;
            Some(Mtp {
                e_proj: w.matrix("mtp.0.e_proj.weight", d, d)?,
                h_proj: w.matrix("mtp.0.h_proj.weight", d, d)?,
                enorm: w.vector("mtp.0.enorm.weight", &[d])?,
                hnorm: w.vector("mtp.0.hnorm.weight", &[d])?,
                norm: w.vector("mtp.0.norm.weight", &[d])?,
                hc_head: HcHead::load(&w, "mtp.0.", dims)?,
                block: Block::load(&w, &cfg, "mtp.0", l, false)?,
            })
        } else {
            None
        };
        let (rope_main, rope_compress) = Rope::for_model(&cfg);
        Ok(Self {
            dims,
            embed: w.matrix("embed.weight", v, d)?,
            head: w.matrix("head.weight", v, d)?,
            norm: w.vector("norm.weight", &[d])?,
            hc_head: HcHead::load(&w, "", dims)?,
            blocks,
            mtp,
            rope_main,
            rope_compress,
            cfg,
        })
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> SequenceCache {
        SequenceCache {
            pos: 0,
            layers: self.blocks.iter().map(|b| b.attn.new_cache()).collect(),
        }
    }

    /// An empty cache for the MTP block of a new sequence.
    pub fn new_mtp_cache(&self) -> Option<LayerCache> {
        self.mtp.as_ref().map(|m| m.block.attn.new_cache())
    }

    /// Bytes of weights one decode step of one token reads (attention, routed experts
    /// actually used, shared expert, router, head; the embedding row is negligible).
    pub fn decode_weight_bytes(&self) -> usize {
        let layers: usize = self
            .blocks
            .iter()
            .map(|b| b.attn.weight_bytes() + b.ffn.token_bytes())
            .sum();
        layers + self.head.bytes()
    }

    /// Run `tokens[i]` through sequence `i` for every sequence of the batch, extending the
    /// caches. Any chunk sizes may be mixed (prefill chunks, single decode tokens).
    pub fn forward(
        &self,
        batch: &mut [(&mut SequenceCache, &[u32])],
        logits: Logits,
        keep_streams: bool,
    ) -> Result<ForwardOutput, ForwardError> {
        self.forward_traced(batch, logits, keep_streams, None)
    }

    /// [`Model::forward`] recording intermediates (single-sequence batches only).
    pub fn forward_traced(
        &self,
        batch: &mut [(&mut SequenceCache, &[u32])],
        logits: Logits,
        keep_streams: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<ForwardOutput, ForwardError> {
        let (n, d) = (self.dims.n, self.dims.d);
        let mut spans = Vec::with_capacity(batch.len());
        let mut ids: Vec<u32> = Vec::new();
        for (i, (cache, toks)) in batch.iter().enumerate() {
            if toks.is_empty() {
                return Err(ForwardError::EmptySequence { index: i });
            }
            if let Some(&id) = toks.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(ForwardError::TokenOutOfRange {
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
            let last = cache.pos + toks.len();
            if last > self.cfg.max_position_embeddings {
                return Err(ForwardError::TooLong {
                    pos: last,
                    max: self.cfg.max_position_embeddings,
                });
            }
            spans.push(SeqSpan {
                row: ids.len(),
                len: toks.len(),
                pos: cache.pos,
            });
            ids.extend_from_slice(toks);
        }
        let rows = ids.len();
        let mut streams = vec![0f32; rows * n * d];
        streams
            .par_chunks_mut(n * d)
            .zip(&ids)
            .for_each(|(s, &id)| {
                self.embed.row_f32(id as usize, &mut s[..d]);
                let (first, rest) = s.split_at_mut(d);
                for c in rest.chunks_exact_mut(d) {
                    c.copy_from_slice(first);
                }
            });
        if let Some(t) = trace.as_deref_mut() {
            t.insert(
                "embed".into(),
                streams
                    .chunks_exact(n * d)
                    .flat_map(|s| &s[..d])
                    .copied()
                    .collect(),
            );
        }
        let ctx = Ctx {
            dims: self.dims,
            rope_main: &self.rope_main,
            rope_compress: &self.rope_compress,
        };
        for (l, block) in self.blocks.iter().enumerate() {
            let mut caches: Vec<&mut LayerCache> =
                batch.iter_mut().map(|(c, _)| &mut c.layers[l]).collect();
            block.forward(
                &mut streams,
                &ids,
                &spans,
                &mut caches,
                &ctx,
                trace.as_deref_mut(),
            );
        }
        for (cache, toks) in batch.iter_mut() {
            cache.pos += toks.len();
        }
        let streams_out = keep_streams.then(|| {
            spans
                .iter()
                .map(|s| streams[s.row * n * d..(s.row + s.len) * n * d].to_vec())
                .collect()
        });
        let out_rows: Vec<usize> = match logits {
            Logits::All => (0..rows).collect(),
            Logits::Last => spans.iter().map(|s| s.row + s.len - 1).collect(),
            Logits::None => {
                return Ok(ForwardOutput {
                    logits: vec![Vec::new(); spans.len()],
                    streams: streams_out,
                });
            }
        };
        let picked: Vec<f32> = out_rows
            .iter()
            .flat_map(|&r| &streams[r * n * d..(r + 1) * n * d])
            .copied()
            .collect();
        let mut h = self.hc_head.collapse(&picked, out_rows.len(), self.dims);
        if let Some(t) = trace.as_deref_mut() {
            t.insert("hc_head_out".into(), h.clone());
        }
        rms_norm_rows(&mut h, &self.norm, self.dims.norm_eps);
        if let Some(t) = trace {
            t.insert("final_norm_out".into(), h.clone());
        }
        let all = self.head.forward(&h, out_rows.len());
        let v = self.cfg.vocab_size;
        let logits_out = match logits {
            Logits::All => spans
                .iter()
                .map(|s| all[s.row * v..(s.row + s.len) * v].to_vec())
                .collect(),
            // One sequence: its row is the whole buffer (no copy).
            Logits::Last if spans.len() == 1 => vec![all],
            Logits::Last => all.chunks_exact(v).map(<[f32]>::to_vec).collect(),
            Logits::None => unreachable!("returned above"),
        };
        Ok(ForwardOutput {
            logits: logits_out,
            streams: streams_out,
        })
    }

    /// MTP logits for one sequence: row `t` combines the main model's final streams at
    /// position `start + t` with the embedding of the token at `start + t + 1` and predicts
    /// the token after that. `cache` is the MTP block's own cache for this sequence.
    pub fn mtp_logits(
        &self,
        cache: &mut LayerCache,
        start: usize,
        streams: &[f32],
        next_ids: &[u32],
    ) -> Result<Vec<f32>, ForwardError> {
        let mtp = self.mtp.as_ref().ok_or(ForwardError::NoMtp)?;
        let (n, d) = (self.dims.n, self.dims.d);
        let rows = next_ids.len();
        if streams.len() != rows * n * d || rows == 0 {
            return Err(ForwardError::MtpShape {
                streams: streams.len() / (n * d),
                tokens: rows,
            });
        }
        if let Some(&id) = next_ids
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(ForwardError::TokenOutOfRange {
                id,
                vocab: self.cfg.vocab_size,
            });
        }
        let mut e = vec![0f32; rows * d];
        for (row, &id) in e.chunks_exact_mut(d).zip(next_ids) {
            self.embed.row_f32(id as usize, row);
        }
        rms_norm_rows(&mut e, &mtp.enorm, self.dims.norm_eps);
        let e = mtp.e_proj.forward(&e, rows);
        let mut h = streams.to_vec();
        rms_norm_rows(&mut h, &mtp.hnorm, self.dims.norm_eps);
        let mut x = mtp.h_proj.forward(&h, rows * n);
        x.par_chunks_mut(n * d)
            .zip(e.par_chunks(d))
            .for_each(|(xs, e)| {
                for s in xs.chunks_exact_mut(d) {
                    s.iter_mut().zip(e).for_each(|(a, b)| *a += b);
                }
            });
        let spans = [SeqSpan {
            row: 0,
            len: rows,
            pos: start,
        }];
        let ctx = Ctx {
            dims: self.dims,
            rope_main: &self.rope_main,
            rope_compress: &self.rope_compress,
        };
        mtp.block
            .forward(&mut x, next_ids, &spans, &mut [cache], &ctx, None);
        let mut y = mtp.hc_head.collapse(&x, rows, self.dims);
        rms_norm_rows(&mut y, &mtp.norm, self.dims.norm_eps);
        Ok(self.head.forward(&y, rows))
    }

    /// Layer types in order, for reports.
    pub fn layer_kinds(&self) -> Vec<AttnKind> {
        self.blocks.iter().map(|b| b.attn.kind).collect()
    }
}
