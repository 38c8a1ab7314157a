//! `v4 bench`: prefill and decode throughput on the CPU engine, the weight bytes one decode
//! step reads, and how much of the machine's measured memory read bandwidth that achieves.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use v4_engine::sampling::argmax;
use v4_engine::weights::{ActivationMode, weight_bytes_read};
use v4_engine::{Logits, Model, SequenceCache};

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Prompt length of each sequence before decode is timed.
    #[arg(long, default_value_t = 64)]
    pub context: usize,
    /// Timed decode steps per batch size.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Decode batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Size of the buffer of the bandwidth probe, MiB.
    #[arg(long, default_value_t = 2048)]
    pub probe_mib: usize,
    /// Expand FP8/FP4 weights to BF16 at load instead of computing on them directly.
    #[arg(long)]
    pub dequantize: bool,
    /// Compute mode of the quantized (FP8/FP4/INT4) matrices: `exact` (bit-identical to BF16 on
    /// the dequantized weights) or `int8` (int8 activations for the 4-bit experts, FP8 decoded
    /// once per batch; `docs/FORMATS.md`).
    #[arg(long, default_value = "exact", value_parser = ["exact", "int8"])]
    pub activations: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

struct DecodeResult {
    batch: usize,
    median_step_s: f64,
    tokens_per_s: f64,
    bytes_per_step: f64,
    bandwidth: f64,
}

fn prompt_ids(len: usize, vocab: usize, salt: u64) -> Vec<u32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as usize % (vocab - 3) + 3) as u32
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn decode(m: &Model, batch: usize, context: usize, steps: usize) -> anyhow::Result<DecodeResult> {
    let vocab = m.cfg.vocab_size;
    let mut caches: Vec<SequenceCache> = Vec::with_capacity(batch);
    let mut next: Vec<u32> = Vec::with_capacity(batch);
    for b in 0..batch {
        let mut c = m.new_cache();
        let ids = prompt_ids(context, vocab, b as u64 + 1);
        let out = m.forward(&mut [(&mut c, &ids[..])], Logits::Last, false)?;
        next.push(argmax(&out.logits[0]));
        caches.push(c);
    }
    let mut times = Vec::with_capacity(steps);
    let mut bytes = Vec::with_capacity(steps);
    // One untimed step first: it faults the mapped weights in.
    for step in 0..=steps {
        let b0 = weight_bytes_read();
        let t0 = Instant::now();
        let mut items: Vec<(&mut SequenceCache, &[u32])> = caches
            .iter_mut()
            .zip(next.iter())
            .map(|(c, id)| (c, std::slice::from_ref(id)))
            .collect();
        let out = m.forward(&mut items, Logits::Last, false)?;
        let dt = t0.elapsed().as_secs_f64();
        let db = (weight_bytes_read() - b0) as f64;
        next = out.logits.iter().map(|l| argmax(l)).collect();
        if step > 0 {
            times.push(dt);
            bytes.push(db);
        }
    }
    let med = median(&mut times);
    let bytes_per_step = median(&mut bytes);
    Ok(DecodeResult {
        batch,
        median_step_s: med,
        tokens_per_s: batch as f64 / med,
        bytes_per_step,
        bandwidth: bytes_per_step / med,
    })
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let opts = v4_engine::weights::LoadOptions {
        dequantize: a.dequantize,
    };
    let mode = match a.activations.as_str() {
        "int8" => ActivationMode::Int8,
        _ => ActivationMode::Exact,
    };
    let m = Model::load_with_mode(&a.model, opts, mode)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();

    let probe = v4_kernels::bandwidth::measure_read_bandwidth(a.probe_mib << 20, 5);

    // Prefill: untimed warm-up on a short prompt, then the timed prompt.
    let mut warm = m.new_cache();
    m.forward(
        &mut [(&mut warm, &prompt_ids(16, m.cfg.vocab_size, 99)[..])],
        Logits::Last,
        false,
    )?;
    let ids = prompt_ids(a.prompt, m.cfg.vocab_size, 0);
    let mut cache = m.new_cache();
    let t = Instant::now();
    m.forward(&mut [(&mut cache, &ids[..])], Logits::Last, false)?;
    let prefill_s = t.elapsed().as_secs_f64();

    let mut decodes = Vec::new();
    for &b in &a.batch {
        decodes.push(decode(&m, b.max(1), a.context, a.steps.max(1))?);
    }

    if a.json {
        let d: Vec<serde_json::Value> = decodes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "batch": r.batch, "median_step_s": r.median_step_s, "tokens_per_s": r.tokens_per_s,
                    "weight_bytes_per_step": r.bytes_per_step, "weight_bytes_per_token": r.bytes_per_step / r.batch as f64,
                    "achieved_read_bandwidth": r.bandwidth, "fraction_of_probe": r.bandwidth / probe,
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": a.model, "activations": a.activations, "threads": threads, "load_s": load_s,
            "probe_read_bandwidth": probe,
            "prefill": {"tokens": a.prompt, "seconds": prefill_s, "tokens_per_s": a.prompt as f64 / prefill_s},
            "decode": d,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "model        {}  ({} layers, hidden {}, vocab {})",
        a.model.display(),
        m.cfg.num_hidden_layers,
        m.cfg.hidden_size,
        m.cfg.vocab_size
    );
    println!(
        "threads      {threads}   load {load_s:.2} s   activations {}",
        a.activations
    );
    println!(
        "memory read  {:.2} GB/s (probe: {} MiB buffer, best of 5)",
        probe / 1e9,
        a.probe_mib
    );
    println!(
        "prefill      {} tokens in {:.3} s = {:.1} tokens/s",
        a.prompt,
        prefill_s,
        a.prompt as f64 / prefill_s
    );
    for r in &decodes {
        println!(
            "decode b={:<3} {:.1} tokens/s  (median step {:.1} ms over {} steps after a {}-token context)",
            r.batch,
            r.tokens_per_s,
            r.median_step_s * 1e3,
            a.steps,
            a.context
        );
        println!(
            "             weights read {:.1} MB/step = {:.1} MB/token; {:.2} GB/s = {:.0}% of measured read bandwidth",
            r.bytes_per_step / 1e6,
            r.bytes_per_step / r.batch as f64 / 1e6,
            r.bandwidth / 1e9,
            100.0 * r.bandwidth / probe
        );
    }
    Ok(())
}
