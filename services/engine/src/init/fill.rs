//! Chunked, parallel, deterministic generation of one logical tensor into a shard writer.
//!
//! Every row is drawn from its own [`Xoshiro256StarStar`] stream, seeded from the checkpoint
//! seed, the tensor name and the row index, so the bytes do not depend on the thread count.

use rayon::prelude::*;
use v4_kernels::bf16::f32_to_bf16;
use v4_kernels::quant::{
    dequant_fp4_groups, dequant_fp8_blocks, quant_fp4_groups, quant_fp8_blocks,
};

use super::{
    FP4_GROUP, FP8_BLOCK, InitDist, InitError, LogicalTensor, Storage, WeightFormat, stored_specs,
};
use crate::rng::{Xoshiro256StarStar, splitmix64};
use crate::st_writer::ShardWriter;

/// Target elements per generated chunk (64 MiB of f32).
const CHUNK_ELEMS: usize = 16 << 20;

/// Seed of one tensor: FNV-1a of its name mixed with the checkpoint seed.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut s = seed ^ h.rotate_left(17);
    splitmix64(&mut s)
}

/// The stream of row `row` of the tensor with seed `tensor_seed`.
fn row_rng(tensor_seed: u64, row: u64) -> Xoshiro256StarStar {
    Xoshiro256StarStar::seed_from_u64(tensor_seed ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// `(rows, cols)` of a tensor viewed as a matrix (1-D: one row).
fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

fn bf16_bytes(vals: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; vals.len() * 2];
    out.par_chunks_mut(2)
        .zip(vals.par_iter())
        .for_each(|(o, &v)| o.copy_from_slice(&f32_to_bf16(v).to_le_bytes()));
    out
}

fn f32_bytes(vals: &[f32]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `tid2eid` rows `row0..row0+rows`: `k` distinct expert ids per row (partial Fisher-Yates).
fn tid2eid_bytes(seed: u64, row0: usize, rows: usize, k: usize, experts: usize) -> Vec<u8> {
    let mut out = vec![0u8; rows * k * 8];
    out.par_chunks_mut((k * 8).max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut rng = row_rng(seed, (row0 + i) as u64);
            let mut ids: Vec<i64> = (0..experts as i64).collect();
            for j in 0..k.min(experts) {
                let pick = j + rng.below((experts - j) as u64) as usize;
                ids.swap(j, pick);
                row[j * 8..j * 8 + 8].copy_from_slice(&ids[j].to_le_bytes());
            }
        });
    out
}

/// Quantize `vals [_, cols]` in parallel slabs of `slab` rows (a multiple of the FP8 block,
/// so the per-slab scale rows concatenate); the result does not depend on the thread count.
fn quantize(vals: &[f32], cols: usize, storage: Storage) -> (Vec<u8>, Vec<u8>) {
    let slab = FP8_BLOCK;
    let parts: Vec<(Vec<u8>, Vec<u8>)> = vals
        .par_chunks((slab * cols).max(1))
        .map(|part| {
            // `vals` is empty when `cols == 0`, so no part reaches here then.
            let r = part.len() / cols.max(1);
            match storage {
                Storage::Fp8Linear => quant_fp8_blocks(part, r, cols, FP8_BLOCK),
                _ => quant_fp4_groups(part, r, cols, FP4_GROUP),
            }
        })
        .collect();
    let mut q = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
    let mut s = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum());
    for (pq, ps) in parts {
        q.extend_from_slice(&pq);
        s.extend_from_slice(&ps);
    }
    (q, s)
}

/// Generate `t` and write its stored tensor(s) (weight, then `.scale`) to `w`.
pub(super) fn write_tensor(
    w: &mut ShardWriter,
    t: &LogicalTensor,
    seed: u64,
    format: WeightFormat,
    n_experts: usize,
) -> Result<(), InitError> {
    let specs = stored_specs(t, format);
    let tseed = tensor_seed(seed, &t.name);
    let (rows, cols) = rows_cols(&t.shape);
    let chunk_rows = if rows * cols <= CHUNK_ELEMS {
        rows.max(1)
    } else {
        ((CHUNK_ELEMS / cols.max(1)) / FP8_BLOCK * FP8_BLOCK).max(FP8_BLOCK)
    };
    let quantized = match t.storage {
        Storage::Fp8Linear => true,
        Storage::Fp4Expert => cols % FP4_GROUP == 0,
        _ => false,
    };
    let keep_quantized = format == WeightFormat::Fp8Fp4 && quantized;
    let mut scales: Vec<u8> = Vec::new();
    w.begin_tensor(&t.name)?;
    let mut row0 = 0;
    while row0 < rows {
        let r = chunk_rows.min(rows - row0);
        if let InitDist::Tid2Eid = t.init {
            w.write_chunk(&tid2eid_bytes(tseed, row0, r, cols, n_experts))?;
            row0 += r;
            continue;
        }
        let mut vals = vec![0f32; r * cols];
        match t.init {
            InitDist::Normal { std } => {
                vals.par_chunks_mut(cols.max(1))
                    .enumerate()
                    .for_each(|(i, row)| row_rng(tseed, (row0 + i) as u64).fill_normal(row, std));
            }
            InitDist::Const(c) => vals.fill(c),
            InitDist::Tid2Eid => {}
        }
        let bytes = match t.storage {
            Storage::F32 => f32_bytes(&vals),
            Storage::I64 => vals
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect(),
            _ if !quantized => bf16_bytes(&vals),
            storage => {
                let (q, s) = quantize(&vals, cols, storage);
                if keep_quantized {
                    scales.extend_from_slice(&s);
                    q
                } else {
                    // Store the dequantized model (exact in BF16).
                    match storage {
                        Storage::Fp8Linear => {
                            dequant_fp8_blocks(&q, &s, r, cols, FP8_BLOCK, &mut vals)
                        }
                        _ => dequant_fp4_groups(&q, &s, r, cols, FP4_GROUP, &mut vals),
                    }
                    bf16_bytes(&vals)
                }
            }
        };
        w.write_chunk(&bytes)?;
        row0 += r;
    }
    w.end_tensor()?;
    if let Some(scale) = specs.get(1) {
        w.write_tensor(&scale.name, &scales)?;
    }
    Ok(())
}
