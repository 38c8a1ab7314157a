//! `v4convert`: download, convert, inspect and verify DeepSeek-V4 checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use v4convert::convert::{ConvertOptions, convert};
use v4convert::inspect::{human_bytes, inspect, render};
use v4convert::plan::{ExpertFormat, LinearFormat, TargetOptions};
use v4convert::progress::Progress;
use v4convert::quality::{QualityOptions, quality};
use v4convert::verify::verify;

mod gguf_cmd;

#[derive(Parser)]
#[command(
    name = "v4convert",
    version,
    about = "Download and convert DeepSeek-V4 checkpoints (FP8 / FP4 / INT4 safetensors, GGUF)"
)]
struct Cli {
    /// Worker threads (default: one per core).
    #[arg(long, global = true, env = "V4_THREADS")]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download a checkpoint from the Hugging Face hub into the local cache (resumable; honours
    /// HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE).
    Download {
        /// Repository id, e.g. deepseek-ai/DeepSeek-V4-Flash.
        repo: String,
        #[arg(long)]
        revision: Option<String>,
        /// Only files matching this glob (repeatable), e.g. --include '*.json'.
        #[arg(long)]
        include: Vec<String>,
        /// Ask the hub which commit the revision points to now (default: a complete cached
        /// selection is used without any request).
        #[arg(long)]
        refresh: bool,
    },
    /// Convert a checkpoint (official FP8/FP4, BF16, or a v4convert output).
    Convert(ConvertArgs),
    /// Tensor table, per-class totals and parameter counts of a checkpoint, shard or GGUF file.
    Inspect {
        path: PathBuf,
        /// Only the totals.
        #[arg(long)]
        summary: bool,
        /// Only tensors whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a model directory against its manifest (sizes, sha256) and its config (shapes,
    /// dtypes, quantization section).
    Verify {
        #[arg(long)]
        model: PathBuf,
    },
    /// Logits error, KL divergence and top-1 agreement of a converted model vs a reference.
    Quality {
        #[arg(long)]
        model: PathBuf,
        /// The unquantized (or original) model.
        #[arg(long)]
        reference: PathBuf,
        /// Golden file in the tiny-v4 format (prompts + greedy tokens); random prompts otherwise.
        #[arg(long)]
        golden: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        sequences: usize,
        #[arg(long, default_value_t = 64)]
        len: usize,
        #[arg(long, default_value_t = 16)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fail (exit 1) when greedy-path top-1 agreement is below this.
        #[arg(long)]
        min_greedy_agreement: Option<f64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Source checkpoint directory, or a Hugging Face repo id (downloaded first).
    #[arg(long)]
    from: String,
    /// Output directory (safetensors) or file (gguf).
    #[arg(long)]
    to: PathBuf,
    /// Output format.
    #[arg(long, default_value = "safetensors", value_parser = ["safetensors", "gguf"])]
    format: String,
    /// Attention / shared-expert / MTP projections: fp8 (E4M3, E8M0 128x128) or bf16.
    #[arg(long, default_value = "fp8")]
    linears: LinearFormat,
    /// Routed experts: fp4 (official), fp8 (lossless from fp4), int4 (ours) or bf16.
    #[arg(long, default_value = "int4")]
    experts: ExpertFormat,
    /// INT4 group size along the input dimension.
    #[arg(long, default_value_t = 32)]
    group: usize,
    /// Maximum shard size in MB (0 = a single shard).
    #[arg(long, default_value_t = 5000)]
    shard_mb: u64,
    /// Continue an interrupted conversion (`<to>.partial`).
    #[arg(long)]
    resume: bool,
    /// Replace an existing output or interrupted conversion.
    #[arg(long)]
    force: bool,
    /// Testing aid: stop after writing this many shards, as if interrupted.
    #[arg(long, hide = true)]
    stop_after_shards: Option<usize>,
    /// GGUF only: tensor types (stock = llama.cpp converter's choices, f32, q8_0).
    #[arg(long, default_value = "stock")]
    gguf_types: String,
    /// GGUF only: tokenizer.json for the tokenizer metadata (default: the source's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Only fails if a pool already exists, which cannot happen this early.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let progress = !cli.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let hub = v4_hub::HubOptions::from_env();
    match cli.cmd {
        Cmd::Download {
            repo,
            revision,
            include,
            refresh,
        } => {
            let mut hub = hub;
            hub.progress = hub.progress && progress;
            hub.refresh = refresh;
            let snap = v4_hub::download_blocking(&repo, revision.as_deref(), &include, &hub)?;
            println!(
                "{}@{} ({} files) -> {}",
                snap.repo,
                snap.commit,
                snap.files.len(),
                snap.dir.display()
            );
        }
        Cmd::Convert(a) => {
            let from = if std::path::Path::new(&a.from).exists() {
                PathBuf::from(&a.from)
            } else if v4_hub::looks_like_repo_id(&a.from) {
                let mut hub = hub;
                hub.progress = hub.progress && progress;
                v4_hub::resolve_dir_blocking(&a.from, &[], &hub)
                    .with_context(|| format!("fetching {}", a.from))?
            } else {
                bail!("--from {}: no such directory (nor a repo id)", a.from);
            };
            if a.format == "gguf" {
                return gguf_cmd::convert(&from, &a.to, &a.gguf_types, a.tokenizer, progress);
            }
            let opts = ConvertOptions {
                from,
                to: a.to,
                target: TargetOptions {
                    linears: a.linears,
                    experts: a.experts,
                    int4_group: a.group,
                },
                shard_bytes: a.shard_mb * 1_000_000,
                resume: a.resume,
                force: a.force,
                stop_after_shards: a.stop_after_shards,
            };
            let r = convert(&opts, &Progress::new(progress))?;
            println!(
                "{}: {} tensors in {} shard(s){}, {} -> {} in {:.1} s ({:.0} MB/s of input)",
                r.output.display(),
                r.tensors,
                r.shards,
                if r.shards_resumed > 0 {
                    format!(" ({} resumed)", r.shards_resumed)
                } else {
                    String::new()
                },
                human_bytes(r.input_bytes),
                human_bytes(r.output_bytes),
                r.seconds,
                r.input_bytes as f64 / 1e6 / r.seconds.max(1e-9)
            );
            for (class, c) in &r.classes {
                println!(
                    "  {class:<15} {:>6} tensors  {:<28} {}  rel-rms-err {:.3e}  max-abs-err {:.3e}",
                    c.tensors,
                    c.encodings.join(", "),
                    if c.lossless { "lossless" } else { "lossy   " },
                    c.stats.rel_rms(),
                    c.stats.max_abs_err
                );
            }
            for (name, why) in &r.dropped {
                println!("  dropped {name}: {why}");
            }
        }
        Cmd::Inspect {
            path,
            summary,
            filter,
            json,
        } => {
            if gguf_cmd::is_gguf(&path) {
                return gguf_cmd::inspect(&path, summary, filter.as_deref(), json);
            }
            let ins = inspect(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ins)?);
            } else {
                print!("{}", render(&ins, summary, filter.as_deref()));
            }
        }
        Cmd::Verify { model } => {
            let r = verify(&model)?;
            for p in &r.passed {
                println!("ok      {p}");
            }
            for n in &r.notes {
                println!("note    {n}");
            }
            for f in &r.failed {
                println!("FAILED  {f}");
            }
            if !r.ok() {
                eprintln!("error: {}: verification failed", model.display());
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Quality {
            model,
            reference,
            golden,
            sequences,
            len,
            steps,
            seed,
            min_greedy_agreement,
            json,
        } => {
            let opts = QualityOptions {
                golden,
                random_sequences: sequences,
                random_len: len,
                greedy_steps: steps,
                seed,
            };
            let r = quality(&model, &reference, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for (i, s) in r.sequences.iter().enumerate() {
                    println!(
                        "seq{i}: {} positions  max|dlogit| {:.3e}  KL mean {:.3e} max {:.3e}  top-1 {}/{}  greedy {}/{}{}",
                        s.positions,
                        s.max_abs_err,
                        s.mean_kl,
                        s.max_kl,
                        s.top1_agree,
                        s.positions,
                        s.greedy_agree,
                        s.greedy_steps,
                        s.reference_vs_golden_max_abs
                            .map(|m| format!("  (reference vs golden {m:.1e})"))
                            .unwrap_or_default()
                    );
                }
                println!(
                    "all: {} positions  max|dlogit| {:.3e}  KL mean {:.3e} max {:.3e}  top-1 agreement {:.4}  greedy-path agreement {:.4} ({} steps)",
                    r.positions,
                    r.max_abs_err,
                    r.mean_kl,
                    r.max_kl,
                    r.top1_agreement,
                    r.greedy_agreement,
                    r.greedy_steps
                );
            }
            if let Some(min) = min_greedy_agreement
                && r.greedy_agreement < min
            {
                eprintln!(
                    "error: greedy-path agreement {:.4} is below --min-greedy-agreement {min}",
                    r.greedy_agreement
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
