//! Tile schedule shared by all backends: which dots are computed together and in which order the `i`-blocks run.
//!
//! Nothing here changes the arithmetic of a dot product: a [`Kernel::block`] call computes complete, canonical
//! block sums, and the block sums of each output are added in ascending block order whatever the schedule.

use super::{DECODE_MAX_ROWS, KC, Weight};

/// Weight rows per band in the multi-row decode schedule.
const DECODE_BAND: usize = 16;

/// One task: input rows `s0..s0 + s_len` against weight rows `o0..`, with the full operands.
#[derive(Clone, Copy)]
pub(super) struct Tile<'a, E> {
    pub x: &'a [f32],
    pub w: &'a [E],
    pub in_dim: usize,
    pub s0: usize,
    pub s_len: usize,
    pub o0: usize,
}

/// A block kernel: the canonical per-block dot products for a fixed `W x R` group of weight and input rows.
pub(super) trait Kernel: Copy + Send + Sync {
    /// `out[a][r] = dot(w[a], x[r])` over one `i`-block (all slices of one common length, at most `KC`).
    /// Supported shapes: `W <= 4` with `R = 1`, and `W <= 2` with `R <= 3`.
    fn block<E: Weight, const W: usize, const R: usize>(
        self,
        w: [&[E]; W],
        x: [&[f32]; R],
    ) -> [[f32; R]; W];

    /// Computes a tile into `c` (laid out `[s - s0][o - o0]`, `c.len() / s_len` weight rows). Backends override
    /// this to compile the tile loops, with the kernel inlined, under their target features.
    fn tile<E: Weight>(self, t: Tile<'_, E>, c: &mut [f32]) {
        compute(self, t, c)
    }
}

/// The tile loops. Always inlined so that a backend's `tile` can compile them with its target features.
#[inline(always)]
pub(super) fn compute<E: Weight, K: Kernel>(k: K, t: Tile<'_, E>, c: &mut [f32]) {
    let o_len = c.len() / t.s_len;
    let k_blocks = t.in_dim.div_ceil(KC);
    if t.s_len <= DECODE_MAX_ROWS {
        // Decode: weight rows are streamed front to back in bands of `band` rows; within a band, each i-block of
        // the input rows (at most 8 x KC floats) stays in L1 while every weight-row group of the band passes
        // over it, serving all input rows. A single input row needs no reuse, so its band is one group.
        let wg = if t.s_len == 1 { 4 } else { 2 };
        let band = if t.s_len == 1 { wg } else { DECODE_BAND };
        for ob in (0..o_len).step_by(band) {
            let band_end = (ob + band).min(o_len);
            for kb in 0..k_blocks {
                for og in (ob..band_end).step_by(wg) {
                    let wn = wg.min(band_end - og);
                    for sg in (0..t.s_len).step_by(3) {
                        group(k, &t, c, og, wn, sg, 3.min(t.s_len - sg), kb);
                    }
                }
            }
        }
    } else {
        // Prefill: the tile's i-block slice stays in cache while triples of input rows sweep over it.
        for kb in 0..k_blocks {
            for sg in (0..t.s_len).step_by(3) {
                let rn = 3.min(t.s_len - sg);
                for og in (0..o_len).step_by(2) {
                    group(k, &t, c, og, 2.min(o_len - og), sg, rn, kb);
                }
            }
        }
    }
}

/// Runs the `wn x rn` group at weight row `og`, input row `sg` (tile-relative) over i-block `kb`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group<E: Weight, K: Kernel>(
    k: K,
    t: &Tile<'_, E>,
    c: &mut [f32],
    og: usize,
    wn: usize,
    sg: usize,
    rn: usize,
    kb: usize,
) {
    match (wn, rn) {
        (2, 3) => fixed::<E, K, 2, 3>(k, t, c, og, sg, kb),
        (4, 1) => fixed::<E, K, 4, 1>(k, t, c, og, sg, kb),
        (2, 2) => fixed::<E, K, 2, 2>(k, t, c, og, sg, kb),
        (2, 1) => fixed::<E, K, 2, 1>(k, t, c, og, sg, kb),
        (1, 3) => fixed::<E, K, 1, 3>(k, t, c, og, sg, kb),
        (1, 2) => fixed::<E, K, 1, 2>(k, t, c, og, sg, kb),
        (3, 1) => fixed::<E, K, 3, 1>(k, t, c, og, sg, kb),
        (1, 1) => fixed::<E, K, 1, 1>(k, t, c, og, sg, kb),
        _ => unreachable!("no block kernel for {wn} weight rows x {rn} input rows"),
    }
}

#[inline(always)]
fn fixed<E: Weight, K: Kernel, const W: usize, const R: usize>(
    k: K,
    t: &Tile<'_, E>,
    c: &mut [f32],
    og: usize,
    sg: usize,
    kb: usize,
) {
    let lo = kb * KC;
    let len = KC.min(t.in_dim - lo);
    let w: [&[E]; W] = std::array::from_fn(|a| &t.w[(t.o0 + og + a) * t.in_dim + lo..][..len]);
    let x: [&[f32]; R] = std::array::from_fn(|r| &t.x[(t.s0 + sg + r) * t.in_dim + lo..][..len]);
    let sums = k.block(w, x);
    let o_len = c.len() / t.s_len;
    for r in 0..R {
        let row = &mut c[(sg + r) * o_len + og..][..W];
        for (a, dst) in row.iter_mut().enumerate() {
            // Block sums are added in block order; the first one initialises the output.
            *dst = if kb == 0 {
                sums[a][r]
            } else {
                *dst + sums[a][r]
            };
        }
    }
}
