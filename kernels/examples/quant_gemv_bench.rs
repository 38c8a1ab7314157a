//! Decode GEMV on quantized weights versus measured memory read bandwidth.
//!
//! Quantizes one random `[32768, 2048]` matrix to bf16, FP8 E4M3 (128x128 E8M0 block scales), FP4
//! E2M1 (E8M0 scale per 32 columns) and INT4 (bf16 scale per 32 columns), then multiplies it by 1
//! and by 8 input rows, with the exact kernels and (quantized formats) in
//! `ComputeMode::Int8Activations`. For each case it reports the best and the median time of 60 runs
//! (interleaved over the formats in rounds, after a warm-up, so that load from other processes
//! hits all of them alike), the bytes one pass reads (weights + scales, `WeightsRef::bytes`), the
//! resulting GB/s (from the best and from the median time) and its share of the read bandwidth measured by
//! `measure_read_bandwidth` in the same run (the best of the measurements taken before and after
//! the GEMVs).
//!
//! `cargo run --release -p v4-kernels --example quant_gemv_bench`

use std::time::Instant;
use v4_kernels::bandwidth::measure_read_bandwidth;
use v4_kernels::bf16::f32_to_bf16;
use v4_kernels::matmul::{ComputeMode, WeightsRef, matmul_mode};
use v4_kernels::quant::{quant_fp4_groups, quant_fp8_blocks, quant_int4_groups};

const OUT_DIM: usize = 32768;
const IN_DIM: usize = 2048;
/// Rounds over all formats, and runs per format and round.
const ROUNDS: usize = 12;
const RUNS: usize = 5;

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

/// Appends the wall times in seconds of `runs` calls of `f`, after one warm-up call.
fn time_runs(runs: usize, times: &mut Vec<f64>, mut f: impl FnMut()) {
    f();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
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

    type Case<'a> = (usize, &'a str, ComputeMode, WeightsRef<'a>, Vec<f32>);
    let cases: Vec<Case<'_>> = [1usize, 8]
        .iter()
        .flat_map(|&rows| {
            let x: Vec<f32> = (0..rows * IN_DIM).map(|_| rng.next_f32()).collect();
            formats
                .iter()
                .flat_map(|&(name, wr)| {
                    let modes: &[ComputeMode] = if name == "bf16" {
                        &[ComputeMode::Exact]
                    } else {
                        &[ComputeMode::Exact, ComputeMode::Int8Activations]
                    };
                    modes.iter().map(move |&m| (rows, name, m, wr))
                })
                .map(|(rows, name, m, wr)| (rows, name, m, wr, x.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut times = vec![Vec::new(); cases.len()];
    let mut y = vec![0.0f32; 8 * OUT_DIM];
    for _ in 0..ROUNDS {
        for ((rows, _, mode, wr, x), times) in cases.iter().zip(&mut times) {
            let y = &mut y[..rows * OUT_DIM];
            time_runs(RUNS, times, || {
                matmul_mode(*mode, x, *rows, IN_DIM, *wr, OUT_DIM, y)
            });
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
    println!(
        "| rows | format | mode | best (ms) | median (ms) | bytes/pass (MiB) | GB/s | % of read bw | median GB/s | median % | GFLOP/s |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((rows, name, mode, wr, _), times) in cases.iter().zip(&mut times) {
        let mode = match mode {
            ComputeMode::Exact => "exact",
            ComputeMode::Int8Activations => "int8",
        };
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        let bytes = wr.bytes() as f64;
        let rate = bytes / best;
        println!(
            "| {rows} | {name} | {mode} | {:.3} | {:.3} | {:.1} | {:.2} | {:.1}% | {:.2} | {:.1}% | {:.1} |",
            best * 1e3,
            median * 1e3,
            bytes / (1 << 20) as f64,
            rate / 1e9,
            100.0 * rate / bw,
            bytes / median / 1e9,
            100.0 * bytes / median / bw,
            2.0 * (rows * OUT_DIM * IN_DIM) as f64 / best / 1e9
        );
    }
}
