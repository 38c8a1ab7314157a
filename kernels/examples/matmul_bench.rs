//! Times `matmul` for one shape: `cargo run --release -p v4-kernels --example matmul_bench -- ROWS
//! IN OUT [f32]`.
//!
//! Prints the best of 20 runs (after a warm-up) in milliseconds and GFLOP/s, with bf16 weights
//! unless `f32` is given. Set `RAYON_NUM_THREADS` to choose the thread count.

use std::time::Instant;
use v4_kernels::bf16::f32_to_bf16;
use v4_kernels::matmul::{WeightsRef, matmul};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dims: Vec<usize> = args.iter().take(3).filter_map(|a| a.parse().ok()).collect();
    let [rows, in_dim, out_dim] = dims[..] else {
        eprintln!("usage: matmul_bench ROWS IN_DIM OUT_DIM [f32]");
        std::process::exit(2);
    };
    let f32_weights = args.get(3).is_some_and(|a| a == "f32");
    // Cheap deterministic data in [0, 1).
    let x: Vec<f32> = (0..rows * in_dim)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let wf: Vec<f32> = (0..out_dim * in_dim)
        .map(|i| ((i * 104_729) % 1000) as f32 * 1e-3)
        .collect();
    let wb: Vec<u16> = if f32_weights {
        Vec::new()
    } else {
        wf.iter().map(|&v| f32_to_bf16(v)).collect()
    };
    let w = if f32_weights {
        WeightsRef::F32(&wf)
    } else {
        WeightsRef::Bf16(&wb)
    };
    let mut y = vec![0.0f32; rows * out_dim];
    matmul(&x, rows, in_dim, w, out_dim, &mut y);
    let best = (0..20)
        .map(|_| {
            let t = Instant::now();
            matmul(&x, rows, in_dim, w, out_dim, &mut y);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let flops = 2.0 * (rows * in_dim * out_dim) as f64;
    println!(
        "rows={rows} in={in_dim} out={out_dim} {}: {:.3} ms, {:.1} GFLOP/s ({} threads)",
        if f32_weights { "f32" } else { "bf16" },
        best * 1e3,
        flops / best / 1e9,
        rayon::current_num_threads()
    );
}
