use std::time::Instant;
use v4_kernels::matmul::{WeightsRef, matmul};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (rows, in_dim, out_dim, f32w) =
        (args[0], args[1], args[2], args.get(3).copied().unwrap_or(0));
    let x: Vec<f32> = (0..rows * in_dim)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let wf: Vec<f32> = (0..out_dim * in_dim)
        .map(|i| ((i * 104729) % 1000) as f32 * 1e-3)
        .collect();
    let wb: Vec<u16> = wf
        .iter()
        .map(|&v| v4_kernels::bf16::f32_to_bf16(v))
        .collect();
    let w = if f32w == 1 {
        WeightsRef::F32(&wf)
    } else {
        WeightsRef::Bf16(&wb)
    };
    let mut y = vec![0.0f32; rows * out_dim];
    let mut best = f64::INFINITY;
    for _ in 0..30 {
        let t = Instant::now();
        matmul(&x, rows, in_dim, w, out_dim, &mut y);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{rows}x{in_dim}x{out_dim}: {:.2} ms {:.1} GFLOP/s",
        best * 1e3,
        2.0 * (rows * in_dim * out_dim) as f64 / best / 1e9
    );
}
