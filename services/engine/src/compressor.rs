//! Token-level KV compressor (spec §2.6): every `ratio` tokens become one compressed entry,
//! a per-channel softmax-gated sum of the tokens' projections. CSA (ratio 4) overlaps
//! windows: entry `w` mixes the A halves of window `w-1` with the B halves of window `w`.
//! HCA (any other ratio) does not overlap. The same code serves the attention compressor
//! (entry width `head_dim`) and the indexer's compressor (width `index_head_dim`).

use crate::cache::SeqSpan;
use crate::loader::LoadError;
use crate::ops::rms_norm;
use crate::rope::Rope;
use crate::weights::{Weight, WeightLoader};

/// Weights of one compressor (`…compressor.{wkv,wgate,ape,norm}`).
pub struct Compressor {
    pub ratio: usize,
    pub overlap: bool,
    /// Entry width `c`.
    pub dim: usize,
    pub wkv: Weight,
    pub wgate: Weight,
    /// `[ratio, coff·c]` learned bias of the gate, by position in the window.
    ape: Vec<f32>,
    norm: Vec<f32>,
}

impl Compressor {
    pub fn load(
        w: &WeightLoader<'_>,
        prefix: &str,
        ratio: usize,
        dim: usize,
        hidden: usize,
    ) -> Result<Self, LoadError> {
        let overlap = ratio == 4;
        let width = if overlap { 2 * dim } else { dim };
        Ok(Self {
            ratio,
            overlap,
            dim,
            wkv: w.matrix(&format!("{prefix}.wkv.weight"), width, hidden)?,
            wgate: w.matrix(&format!("{prefix}.wgate.weight"), width, hidden)?,
            ape: w.vector(&format!("{prefix}.ape"), &[ratio, width])?,
            norm: w.vector(&format!("{prefix}.norm.weight"), &[dim])?,
        })
    }

    /// Projection width per token (`2c` when overlapping, else `c`).
    pub fn width(&self) -> usize {
        if self.overlap { 2 * self.dim } else { self.dim }
    }

    pub fn new_state(&self) -> CompressorState {
        let width = self.width();
        CompressorState {
            cur_kv: Vec::with_capacity(self.ratio * width),
            cur_gate: Vec::with_capacity(self.ratio * width),
            prev_kv: Vec::new(),
            prev_gate: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Project the batch rows `x` (`[rows, hidden]`) and feed each sequence's rows to its
    /// state (`states` in the order of `spans`).
    pub fn absorb<'a>(
        &self,
        x: &[f32],
        spans: &[SeqSpan],
        states: impl Iterator<Item = &'a mut CompressorState>,
        rope: &Rope,
        eps: f32,
    ) {
        let rows: usize = spans.iter().map(|s| s.len).sum();
        let kv = self.wkv.forward(x, rows);
        let gate = self.wgate.forward(x, rows);
        let width = self.width();
        for (span, state) in spans.iter().zip(states) {
            let r = span.row * width..(span.row + span.len) * width;
            self.push(state, &kv[r.clone()], &gate[r], span.pos, rope, eps);
        }
    }

    /// Feed the projections `kv`, `gate` (`[tokens, width]`) of tokens at positions
    /// `first_pos..`, emitting an entry each time a window completes.
    pub fn push(
        &self,
        state: &mut CompressorState,
        kv: &[f32],
        gate: &[f32],
        first_pos: usize,
        rope: &Rope,
        eps: f32,
    ) {
        let width = self.width();
        for (j, (k, z)) in kv
            .chunks_exact(width)
            .zip(gate.chunks_exact(width))
            .enumerate()
        {
            let pos = first_pos + j;
            let slot = pos % self.ratio;
            debug_assert_eq!(
                slot * width,
                state.cur_kv.len(),
                "compressor fed out of order"
            );
            state.cur_kv.extend_from_slice(k);
            let ape = &self.ape[slot * width..(slot + 1) * width];
            state.cur_gate.extend(z.iter().zip(ape).map(|(z, a)| z + a));
            if slot + 1 == self.ratio {
                self.emit(state, pos + 1 - self.ratio, rope, eps);
            }
        }
    }

    fn emit(&self, state: &mut CompressorState, window_start: usize, rope: &Rope, eps: f32) {
        let (c, m, width) = (self.dim, self.ratio, self.width());
        let mut entry = vec![0f32; c];
        let mut logits = Vec::with_capacity(2 * m);
        let mut values = Vec::with_capacity(2 * m);
        for (ch, e) in entry.iter_mut().enumerate() {
            logits.clear();
            values.clear();
            if self.overlap {
                // A halves of the previous window (absent before the first window).
                for s in 0..state.prev_kv.len() / c {
                    logits.push(state.prev_gate[s * c + ch]);
                    values.push(state.prev_kv[s * c + ch]);
                }
            }
            let off = if self.overlap { c } else { 0 };
            for s in 0..m {
                logits.push(state.cur_gate[s * width + off + ch]);
                values.push(state.cur_kv[s * width + off + ch]);
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            let mut acc = 0f32;
            for (&l, &v) in logits.iter().zip(&values) {
                let p = (l - max).exp();
                sum += p;
                acc += p * v;
            }
            *e = acc / sum;
        }
        rms_norm(&mut entry, &self.norm, eps);
        rope.apply(&mut entry, window_start, false);
        state.entries.extend_from_slice(&entry);
        if self.overlap {
            state.prev_kv.clear();
            state.prev_gate.clear();
            for s in 0..m {
                state
                    .prev_kv
                    .extend_from_slice(&state.cur_kv[s * width..s * width + c]);
                state
                    .prev_gate
                    .extend_from_slice(&state.cur_gate[s * width..s * width + c]);
            }
        }
        state.cur_kv.clear();
        state.cur_gate.clear();
    }
}

/// Per-sequence compressor state: the incomplete window, the previous window's A halves
/// (CSA only) and every entry emitted so far.
#[derive(Debug, Clone, Default)]
pub struct CompressorState {
    cur_kv: Vec<f32>,
    cur_gate: Vec<f32>,
    prev_kv: Vec<f32>,
    prev_gate: Vec<f32>,
    /// `[n_entries, c]`, RMS-normed and rotated at each window's first position.
    pub entries: Vec<f32>,
}

impl CompressorState {
    /// The five buffers, in the order of [`CompressorState::from_parts`] (cache transfer).
    pub fn parts(&self) -> [&[f32]; 5] {
        [
            &self.cur_kv,
            &self.cur_gate,
            &self.prev_kv,
            &self.prev_gate,
            &self.entries,
        ]
    }

    /// Rebuilds a state from [`CompressorState::parts`].
    pub fn from_parts(parts: [Vec<f32>; 5]) -> CompressorState {
        let [cur_kv, cur_gate, prev_kv, prev_gate, entries] = parts;
        CompressorState {
            cur_kv,
            cur_gate,
            prev_kv,
            prev_gate,
            entries,
        }
    }

    pub fn n_entries(&self, c: usize) -> usize {
        self.entries.len() / c
    }

    /// Bytes held (entries + pending window state).
    pub fn bytes(&self) -> usize {
        4 * (self.cur_kv.capacity()
            + self.cur_gate.capacity()
            + self.prev_kv.capacity()
            + self.prev_gate.capacity()
            + self.entries.len())
    }
}
