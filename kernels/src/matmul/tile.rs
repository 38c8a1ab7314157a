//! Tile schedule shared by all backends: which dots are computed together, and in which order the
//! `i`-blocks run.
//!
//! Nothing here changes the arithmetic of a dot product: a [`Kernel::block`] call computes
//! complete, canonical block sums, and the block sums of each output are added in ascending block
//! order whatever the schedule.

use super::format::{Format, Seg};
use super::{DECODE_MAX_ROWS, KC};

/// One task: input rows `s0..s0 + s_len` against weight rows `o0..`, with the full operands.
#[derive(Clone, Copy)]
pub(super) struct Tile<'a, F> {
    pub x: &'a [f32],
    pub w: F,
    pub in_dim: usize,
    pub s0: usize,
    pub s_len: usize,
    pub o0: usize,
}

/// A block kernel: the canonical per-block dot products for a fixed `W x R` group of weight and
/// input rows.
pub(super) trait Kernel: Copy + Send + Sync {
    /// `out[a][r] = dot(w[a], x[r])` over one `i`-block (all segments and slices of one common
    /// length, at most `KC`). Supported shapes: `W <= 4` with `R = 1`, and `W <= 2` with `R <= 3`.
    fn block<S: Seg, const W: usize, const R: usize>(
        self,
        w: [S; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W];

    /// Computes a tile into `c` (laid out `[s - s0][o - o0]`, `c.len() / s_len` weight rows).
    /// Backends override this to compile the tile loops, with the kernel inlined, under their
    /// target features.
    fn tile<F: Format>(self, t: Tile<'_, F>, c: &mut [f32]) {
        compute(self, t, c)
    }
}

/// Input rows restricted to one `i`-block: row `j` is `data[j * stride + off..][..len]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    off: usize,
    len: usize,
}

impl<'a> Rows<'a> {
    #[inline(always)]
    fn row(&self, j: usize) -> &'a [f32] {
        &self.data[j * self.stride + self.off..][..self.len]
    }
}

/// Weight rows `o0..` restricted to one `i`-block.
#[derive(Clone, Copy)]
struct WRows<F> {
    w: F,
    o0: usize,
    off: usize,
    len: usize,
}

impl<F: Format> WRows<F> {
    #[inline(always)]
    fn row(&self, j: usize) -> F::Seg {
        self.w.seg(self.o0 + j, self.off, self.len)
    }
}

/// A task's output, laid out `[input row][weight row]` with `o_len` weight rows.
struct Out<'a> {
    c: &'a mut [f32],
    o_len: usize,
}

/// The tile loops. Always inlined so that a backend's `tile` can compile them with its target
/// features.
#[inline(always)]
pub(super) fn compute<F: Format, K: Kernel>(k: K, t: Tile<'_, F>, c: &mut [f32]) {
    let o_len = c.len() / t.s_len;
    let out = &mut Out { c, o_len };
    let x_tile = &t.x[t.s0 * t.in_dim..][..t.s_len * t.in_dim];
    let block = |kb: usize| (kb * KC, KC.min(t.in_dim - kb * KC));
    let k_blocks = t.in_dim.div_ceil(KC);
    if t.s_len <= DECODE_MAX_ROWS {
        // Decode: each group of weight rows is streamed front to back once; per i-block it serves
        // all input rows while it is in L1.
        let wg = if t.s_len == 1 { F::SINGLE_ROW_GROUP } else { 2 };
        for og in (0..o_len).step_by(wg) {
            let wn = wg.min(o_len - og);
            for kb in 0..k_blocks {
                let (off, len) = block(kb);
                let x = Rows {
                    data: x_tile,
                    stride: t.in_dim,
                    off,
                    len,
                };
                let w = WRows {
                    w: t.w,
                    o0: t.o0,
                    off,
                    len,
                };
                for sg in (0..t.s_len).step_by(3) {
                    group(k, w, x, out, og, wn, sg, 3.min(t.s_len - sg), kb);
                }
            }
        }
    } else {
        // Prefill: the tile's i-block slice stays in cache while triples of input rows sweep over
        // it, pairs of weight rows at a time (each weight chunk loaded once per three input rows,
        // each input chunk once per two weight rows).
        for kb in 0..k_blocks {
            let (off, len) = block(kb);
            let x = Rows {
                data: x_tile,
                stride: t.in_dim,
                off,
                len,
            };
            let w = WRows {
                w: t.w,
                o0: t.o0,
                off,
                len,
            };
            for sg in (0..t.s_len).step_by(3) {
                let rn = 3.min(t.s_len - sg);
                for og in (0..o_len).step_by(2) {
                    group(k, w, x, out, og, 2.min(o_len - og), sg, rn, kb);
                }
            }
        }
    }
}

/// Runs the `wn x rn` group of weight rows `og..` and input rows `sg..` (tile-relative) over
/// i-block `kb`, accumulating into `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group<F: Format, K: Kernel>(
    k: K,
    w: WRows<F>,
    x: Rows<'_>,
    out: &mut Out<'_>,
    og: usize,
    wn: usize,
    sg: usize,
    rn: usize,
    kb: usize,
) {
    match (wn, rn) {
        (2, 3) => fixed::<F, K, 2, 3>(k, w, x, out, og, sg, kb),
        (4, 1) => fixed::<F, K, 4, 1>(k, w, x, out, og, sg, kb),
        (2, 2) => fixed::<F, K, 2, 2>(k, w, x, out, og, sg, kb),
        (2, 1) => fixed::<F, K, 2, 1>(k, w, x, out, og, sg, kb),
        (1, 3) => fixed::<F, K, 1, 3>(k, w, x, out, og, sg, kb),
        (1, 2) => fixed::<F, K, 1, 2>(k, w, x, out, og, sg, kb),
        (3, 1) => fixed::<F, K, 3, 1>(k, w, x, out, og, sg, kb),
        (1, 1) => fixed::<F, K, 1, 1>(k, w, x, out, og, sg, kb),
        _ => unreachable!("no block kernel for {wn} weight rows x {rn} input rows"),
    }
}

#[inline(always)]
fn fixed<F: Format, K: Kernel, const W: usize, const R: usize>(
    k: K,
    w: WRows<F>,
    x: Rows<'_>,
    out: &mut Out<'_>,
    og: usize,
    sg: usize,
    kb: usize,
) {
    // Plain loops rather than `std::array::from_fn`, whose closure calls do not always inline into
    // the (large) tile loops.
    let mut ws = [w.row(og); W];
    for (a, s) in ws.iter_mut().enumerate().skip(1) {
        *s = w.row(og + a);
    }
    let mut xs = [x.row(sg); R];
    for (r, s) in xs.iter_mut().enumerate().skip(1) {
        *s = x.row(sg + r);
    }
    let sums = k.block::<F::Seg, W, R>(ws, xs);
    for (a, sums) in sums.iter().enumerate() {
        for (r, &sum) in sums.iter().enumerate() {
            let dst = &mut out.c[(sg + r) * out.o_len + og + a];
            // Block sums are added in block order; the first one initialises the output.
            *dst = if kb == 0 { sum } else { *dst + sum };
        }
    }
}
