//! Conversion throughput and peak memory, against the time to just read the input (same run).
//!
//! ```sh
//! cargo run --release -p v4convert --example convert_bench -- --from models/bench-fp8 \
//!     [--generate bench|small] [--experts int4|fp8|fp4] [--linears fp8|bf16] \
//!     [--to /tmp/v4convert-bench] [--json]
//! ```
//!
//! `--generate P` first writes a random checkpoint of preset `P` in the official FP8/FP4 layout
//! to `--from` if that directory does not exist yet (`bench`: 3.4 GB, `small`: ~80 MB).
//!
//! 1. read every shard of the source once, sequentially, into one 16 MiB buffer (the I/O
//!    baseline: what any converter must at least do);
//! 2. convert (the real `v4convert::convert::convert`, same code as the CLI);
//! 3. report MB/s of input for both, their ratio, and the peak resident set size (`VmHWM`)
//!    after each step. The output is removed at the end.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use v4convert::convert::{ConvertOptions, convert, partial_dir};
use v4convert::plan::{ExpertFormat, LinearFormat, TargetOptions};
use v4convert::progress::Progress;
use v4convert::source::SourceCheckpoint;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let from = PathBuf::from(arg(&args, "--from").unwrap_or_else(|| "models/bench-fp8".into()));
    let to = PathBuf::from(arg(&args, "--to").unwrap_or_else(|| {
        std::env::temp_dir()
            .join("v4convert-bench")
            .display()
            .to_string()
    }));
    let experts: ExpertFormat = arg(&args, "--experts").unwrap_or("int4".into()).parse()?;
    let linears: LinearFormat = arg(&args, "--linears").unwrap_or("fp8".into()).parse()?;
    let json = args.iter().any(|a| a == "--json");
    if let Some(preset) = arg(&args, "--generate")
        && !from.join("config.json").is_file()
    {
        use v4_engine::init::{
            InitOptions, Preset, WeightFormat, preset_config, write_random_checkpoint,
        };
        let p = match preset.as_str() {
            "bench" => Preset::Bench,
            "small" => Preset::Small,
            other => return Err(format!("unknown preset {other}").into()),
        };
        let opts = InitOptions {
            seed: 0,
            format: WeightFormat::Fp8Fp4,
            max_shard_bytes: 1_000_000_000,
        };
        eprintln!("generating {preset} checkpoint in {}", from.display());
        write_random_checkpoint(&preset_config(p), &from, &opts)?;
    }

    let src = SourceCheckpoint::open(&from)?;
    let input = src.data_bytes();
    drop(src);

    // 1. Read baseline.
    let t = Instant::now();
    let mut buf = vec![0u8; 16 << 20];
    let mut n = 0u64;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&from)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    for f in &files {
        let mut fh = std::fs::File::open(f)?;
        loop {
            let k = fh.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
    }
    let read_s = t.elapsed().as_secs_f64();
    drop(buf);
    let rss_read = vm_hwm_kib();

    // 2. Convert.
    for p in [to.clone(), partial_dir(&to)] {
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
    }
    let opts = ConvertOptions {
        from: from.clone(),
        to: to.clone(),
        target: TargetOptions {
            linears,
            experts,
            int4_group: 32,
        },
        shard_bytes: 5_000_000_000,
        resume: false,
        force: true,
        stop_after_shards: None,
    };
    let t = Instant::now();
    let r = convert(&opts, &Progress::hidden())?;
    let conv_s = t.elapsed().as_secs_f64();
    let rss_conv = vm_hwm_kib();
    std::fs::remove_dir_all(&to)?;

    let mbps = |b: u64, s: f64| b as f64 / 1e6 / s.max(1e-9);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "from": from, "input_bytes": input, "output_bytes": r.output_bytes,
                "linears": linears.to_string(), "experts": experts.to_string(),
                "threads": rayon::current_num_threads(),
                "read_s": read_s, "read_mb_s": mbps(n, read_s),
                "convert_s": conv_s, "convert_mb_s": mbps(input, conv_s),
                "convert_vs_read": read_s / conv_s,
                "peak_rss_after_read_mib": rss_read / 1024,
                "peak_rss_after_convert_mib": rss_conv / 1024,
            })
        );
    } else {
        println!(
            "{}: {:.2} GB in {} files -> {:.2} GB (linears {linears}, experts {experts}), {} threads",
            from.display(),
            input as f64 / 1e9,
            files.len(),
            r.output_bytes as f64 / 1e9,
            rayon::current_num_threads()
        );
        println!("read only : {read_s:7.2} s  {:8.1} MB/s", mbps(n, read_s));
        println!(
            "convert   : {conv_s:7.2} s  {:8.1} MB/s of input  ({:.2}x the read-only time)",
            mbps(input, conv_s),
            conv_s / read_s
        );
        println!(
            "peak RSS  : {} MiB after reading, {} MiB after converting",
            rss_read / 1024,
            rss_conv / 1024
        );
    }
    Ok(())
}
