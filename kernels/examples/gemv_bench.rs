//! Decode GEMV throughput versus measured memory read bandwidth.
//!
//! Multiplies a `[32768, 2048]` bf16 weight matrix (128 MiB) by 1 and by 8 input rows and reports
//! the weight bytes streamed per second (best of several runs after a warm-up), next to the read
//! bandwidth measured by `v4_kernels::bandwidth::measure_read_bandwidth` on the same rayon pool.
//! Also reports prefill throughput in GFLOP/s for a 256-row batch.
//!
//! `cargo run --release -p v4-kernels --example gemv_bench`

use std::time::Instant;
use v4_kernels::bandwidth::measure_read_bandwidth;
use v4_kernels::bf16::f32_to_bf16;
use v4_kernels::matmul::{WeightsRef, matmul};

const OUT_DIM: usize = 32768;
const IN_DIM: usize = 2048;
const RUNS: usize = 10;

/// Small deterministic generator (xorshift64*) for the test data.
struct XorShift(u64);

impl XorShift {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Best wall time in seconds of `runs` calls of `f`, after one warm-up call.
fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("rayon threads: {threads}");

    let bw = measure_read_bandwidth(1 << 30, 10);
    println!("read bandwidth (1 GiB, best of 10): {:.2} GB/s", bw / 1e9);

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let w: Vec<u16> = (0..OUT_DIM * IN_DIM)
        .map(|_| f32_to_bf16(rng.next_f32() * 0.05))
        .collect();
    let weight_bytes = (w.len() * 2) as f64;
    println!(
        "weights: [{OUT_DIM}, {IN_DIM}] bf16 = {:.0} MiB",
        weight_bytes / (1 << 20) as f64
    );

    for rows in [1usize, 8] {
        let x: Vec<f32> = (0..rows * IN_DIM).map(|_| rng.next_f32()).collect();
        let mut y = vec![0.0f32; rows * OUT_DIM];
        let secs = best_secs(RUNS, || {
            matmul(&x, rows, IN_DIM, WeightsRef::Bf16(&w), OUT_DIM, &mut y)
        });
        let rate = weight_bytes / secs;
        println!(
            "gemv rows={rows}: {:.3} ms, {:.2} GB/s of weights, {:.1}% of read bandwidth, {:.1} GFLOP/s",
            secs * 1e3,
            rate / 1e9,
            100.0 * rate / bw,
            2.0 * (rows * OUT_DIM * IN_DIM) as f64 / secs / 1e9
        );
    }

    let rows = 256;
    let x: Vec<f32> = (0..rows * IN_DIM).map(|_| rng.next_f32()).collect();
    let mut y = vec![0.0f32; rows * OUT_DIM];
    let secs = best_secs(3, || {
        matmul(&x, rows, IN_DIM, WeightsRef::Bf16(&w), OUT_DIM, &mut y)
    });
    println!(
        "prefill rows={rows}: {:.1} ms, {:.1} GFLOP/s",
        secs * 1e3,
        2.0 * (rows * OUT_DIM * IN_DIM) as f64 / secs / 1e9
    );
}
