//! Decode GEMV on quantized weights versus measured memory read bandwidth.
//!
//! Quantizes one random `[32768, 2048]` matrix to bf16, FP8 E4M3 (128x128 E8M0 block scales), FP4
//! E2M1 (E8M0 scale per 32 columns) and INT4 (bf16 scale per 32 columns), then multiplies it by 1
//! and by 8 input rows. For each format it reports the best time of several runs (after a
//! warm-up), the bytes one pass reads (weights + scales, `WeightsRef::bytes`), the resulting GB/s
//! and its share of the read bandwidth measured by `measure_read_bandwidth` in the same run (best
//! of the measurements taken before and after the GEMVs, since other processes may share the
//! machine).
//!
//! `cargo run --release -p v4-kernels --example quant_gemv_bench`

use std::time::Instant;
use v4_kernels::bandwidth::measure_read_bandwidth;
use v4_kernels::bf16::f32_to_bf16;
use v4_kernels::matmul::{WeightsRef, matmul};
use v4_kernels::quant::{quant_fp4_groups, quant_fp8_blocks, quant_int4_groups};

const OUT_DIM: usize = 32768;
const IN_DIM: usize = 2048;
const RUNS: usize = 20;

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

    /// Roughly bell-shaped values (sum of three uniforms), like trained weights.
    fn weight(&mut self) -> f32 {
        (self.next_f32() + self.next_f32() + self.next_f32()) * 0.02
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
    let bw_before = measure_read_bandwidth(1 << 30, 10);

    let t = Instant::now();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let w: Vec<f32> = (0..OUT_DIM * IN_DIM).map(|_| rng.weight()).collect();
    let bf16: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
    let (fp8, fp8_s) = quant_fp8_blocks(&w, OUT_DIM, IN_DIM, 128);
    let (fp4, fp4_s) = quant_fp4_groups(&w, OUT_DIM, IN_DIM, 32);
    let (int4, int4_s) = quant_int4_groups(&w, OUT_DIM, IN_DIM, 32);
    drop(w);
    println!(
        "weights [{OUT_DIM}, {IN_DIM}] quantized in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let formats = [
        ("bf16", WeightsRef::Bf16(&bf16)),
        (
            "fp8",
            WeightsRef::Fp8 {
                w: &fp8,
                scale: &fp8_s,
                block: 128,
            },
        ),
        (
            "fp4",
            WeightsRef::Fp4 {
                w: &fp4,
                scale: &fp4_s,
                group: 32,
            },
        ),
        (
            "int4",
            WeightsRef::Int4 {
                w: &int4,
                scale: &int4_s,
                group: 32,
            },
        ),
    ];

    let mut results = Vec::new();
    for rows in [1usize, 8] {
        let x: Vec<f32> = (0..rows * IN_DIM).map(|_| rng.next_f32()).collect();
        let mut y = vec![0.0f32; rows * OUT_DIM];
        for &(name, wr) in &formats {
            let secs = best_secs(RUNS, || matmul(&x, rows, IN_DIM, wr, OUT_DIM, &mut y));
            results.push((rows, name, secs, wr.bytes()));
        }
    }
    let bw_after = measure_read_bandwidth(1 << 30, 10);
    let bw = bw_before.max(bw_after);
    println!(
        "read bandwidth (1 GiB, best of 10): {:.2} GB/s before, {:.2} GB/s after; using {:.2} GB/s",
        bw_before / 1e9,
        bw_after / 1e9,
        bw / 1e9
    );
    println!("| rows | format | time (ms) | bytes/pass (MiB) | GB/s | % of read bw | GFLOP/s |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (rows, name, secs, bytes) in results {
        let rate = bytes as f64 / secs;
        println!(
            "| {rows} | {name} | {:.3} | {:.1} | {:.2} | {:.1}% | {:.1} |",
            secs * 1e3,
            bytes as f64 / (1 << 20) as f64,
            rate / 1e9,
            100.0 * rate / bw,
            2.0 * (rows * OUT_DIM * IN_DIM) as f64 / secs / 1e9
        );
    }
}
