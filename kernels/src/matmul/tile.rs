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
    /// Input rows per group in the multi-row schedules for format `F` (3 or 4; 3 fits the 16 ymm
    /// registers of AVX2). Only the grouping depends on it, not the arithmetic.
    #[inline(always)]
    fn rows<F: Format>() -> usize {
        3
    }

    /// `out[a][r] = dot(w[a], x[r])` over one `i`-block (all segments and slices of one common
    /// length, at most `KC`). Supported shapes: `W <= 4` with `R = 1`, and `W <= 2` with
    /// `R <= rows()`.
    fn block<S: Seg, const W: usize, const R: usize>(
        self,
        w: [S; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W];

    /// Computes a tile into its output window `c`. Backends override this to compile the tile
    /// loops, with the kernel inlined, under their target features.
    ///
    /// # Safety
    /// `c` must describe a window of the output that is valid for writes and that no other thread
    /// accesses during the call (see [`OutWin`]).
    unsafe fn tile<F: Format>(self, t: Tile<'_, F>, c: OutWin) {
        // SAFETY: forwarded from the caller.
        unsafe { compute(self, t, c) }
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

/// A task's output window in `y`: element `[s - s0][o - o0]` of the tile (for `s_len` input rows
/// and `o_len` weight rows) is at `ptr + (s - s0) * ld + (o - o0)`.
///
/// Tasks write straight into their disjoint windows of `y` (no staging copy); a raw pointer
/// because a window of several rows is not one contiguous slice.
#[derive(Clone, Copy)]
pub(super) struct OutWin {
    pub ptr: *mut f32,
    /// Row stride (`out_dim`).
    pub ld: usize,
    /// Weight rows in the tile.
    pub o_len: usize,
}

impl OutWin {
    /// The window of `o_len` columns from `[s, o]` on.
    ///
    /// # Safety
    /// `[s, o]` must lie inside the window.
    #[inline(always)]
    pub(super) unsafe fn sub(self, s: usize, o: usize, o_len: usize) -> OutWin {
        OutWin {
            // SAFETY: forwarded from the caller.
            ptr: unsafe { self.ptr.add(s * self.ld + o) },
            ld: self.ld,
            o_len,
        }
    }
}

// SAFETY: an `OutWin` is only a description of a window; `run_with` hands disjoint windows of one
// `&mut` output to concurrent tasks, and nothing else accesses them meanwhile.
unsafe impl Send for OutWin {}
unsafe impl Sync for OutWin {}

/// The tile loops. Always inlined so that a backend's `tile` can compile them with its target
/// features.
///
/// # Safety
/// As [`Kernel::tile`].
#[inline(always)]
pub(super) unsafe fn compute<F: Format, K: Kernel>(k: K, t: Tile<'_, F>, c: OutWin) {
    let o_len = c.o_len;
    let out = c;
    let x_tile = &t.x[t.s0 * t.in_dim..][..t.s_len * t.in_dim];
    let block = |kb: usize| (kb * KC, KC.min(t.in_dim - kb * KC));
    let k_blocks = t.in_dim.div_ceil(KC);
    let rows = K::rows::<F>();
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
                for sg in (0..t.s_len).step_by(rows) {
                    group(k, w, x, out, og, wn, sg, rows.min(t.s_len - sg), kb);
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
            for sg in (0..t.s_len).step_by(rows) {
                let rn = rows.min(t.s_len - sg);
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
    out: OutWin,
    og: usize,
    wn: usize,
    sg: usize,
    rn: usize,
    kb: usize,
) {
    match (wn, rn) {
        (2, 4) => fixed::<F, K, 2, 4>(k, w, x, out, og, sg, kb),
        (1, 4) => fixed::<F, K, 1, 4>(k, w, x, out, og, sg, kb),
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
    out: OutWin,
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
            debug_assert!(og + a < out.o_len);
            // SAFETY: og + a < o_len and sg + r < s_len, inside the window the caller of
            // `compute` guarantees exclusive access to.
            let dst = unsafe { &mut *out.ptr.add((sg + r) * out.ld + og + a) };
            // Block sums are added in block order; the first one initialises the output.
            *dst = if kb == 0 { sum } else { *dst + sum };
        }
    }
}
