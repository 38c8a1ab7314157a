//! Per-sequence decoding state (spec §3): for every layer a ring buffer of the last
//! `sliding_window` K=V vectors, and for compressed layers the compressor states with their
//! emitted entries (plus the indexer's keys on CSA layers).

use crate::compressor::CompressorState;

/// The rows of one sequence inside a batched forward call.
#[derive(Debug, Clone, Copy)]
pub struct SeqSpan {
    /// Row of the batch where this sequence's tokens start.
    pub row: usize,
    /// Number of tokens of this sequence in the call.
    pub len: usize,
    /// Absolute position of its first token.
    pub pos: usize,
}

impl SeqSpan {
    /// The batch rows of this sequence.
    pub fn rows(&self) -> std::ops::Range<usize> {
        self.row..self.row + self.len
    }
}

/// Which sequence of the batch each row belongs to.
pub fn row_owners(spans: &[SeqSpan]) -> Vec<usize> {
    spans
        .iter()
        .enumerate()
        .flat_map(|(i, s)| std::iter::repeat_n(i, s.len))
        .collect()
}

/// Ring buffer of window K=V vectors: position `p` lives in slot `p % window`.
#[derive(Debug, Clone)]
pub struct WindowRing {
    window: usize,
    width: usize,
    buf: Vec<f32>,
}

impl WindowRing {
    pub fn new(window: usize, width: usize) -> Self {
        Self {
            window,
            width,
            buf: Vec::new(),
        }
    }

    /// The vector stored for position `pos` (valid for the last `window` positions written).
    pub fn get(&self, pos: usize) -> &[f32] {
        let s = (pos % self.window) * self.width;
        &self.buf[s..s + self.width]
    }

    /// `(window, width, buffer)`; the buffer is empty until the first `put`.
    pub fn raw(&self) -> (usize, usize, &[f32]) {
        (self.window, self.width, &self.buf)
    }

    /// Rebuilds a ring from [`WindowRing::raw`]; `None` if the buffer has the wrong size.
    pub fn from_raw(window: usize, width: usize, buf: Vec<f32>) -> Option<WindowRing> {
        (buf.is_empty() || buf.len() == window * width).then_some(WindowRing { window, width, buf })
    }

    pub fn put(&mut self, pos: usize, v: &[f32]) {
        if self.buf.is_empty() {
            self.buf = vec![0f32; self.window * self.width];
        }
        let s = (pos % self.window) * self.width;
        self.buf[s..s + self.width].copy_from_slice(v);
    }

    pub fn bytes(&self) -> usize {
        self.buf.len() * 4
    }
}

/// Cache of one decoder layer for one sequence.
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub window: WindowRing,
    /// Attention compressor (CSA/HCA layers).
    pub compressor: Option<CompressorState>,
    /// Indexer compressor: its entries are the indexer keys (CSA layers).
    pub indexer: Option<CompressorState>,
}

impl LayerCache {
    pub fn bytes(&self) -> usize {
        self.window.bytes()
            + self.compressor.as_ref().map_or(0, CompressorState::bytes)
            + self.indexer.as_ref().map_or(0, CompressorState::bytes)
    }
}

/// Everything one sequence carries between forward calls.
#[derive(Debug, Clone)]
pub struct SequenceCache {
    /// Number of tokens already processed (the next token's position).
    pub pos: usize,
    pub layers: Vec<LayerCache>,
}

impl SequenceCache {
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }
}
