//! `info`, `logits`, `generate` and `init`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use v4_engine::generate::{GenerateOptions, generate as run_generate};
use v4_engine::init::{InitOptions, Preset, WeightFormat, preset_config, write_random_checkpoint};
use v4_engine::sampling::{SamplingParams, StopCriteria};
use v4_engine::{Logits, Model, ModelConfig};

pub fn info(model: &Path) -> anyhow::Result<()> {
    let cfg = ModelConfig::from_path(model)?;
    print!("{}", v4_engine::stats::describe(&cfg));
    Ok(())
}

fn load(model: &Path) -> anyhow::Result<Model> {
    Model::load(model).with_context(|| format!("loading the model in {}", model.display()))
}

pub fn logits(model: &Path, ids: &[u32], out: &Path, mtp: bool) -> anyhow::Result<()> {
    let m = load(model)?;
    let mut cache = m.new_cache();
    let res = m.forward(&mut [(&mut cache, ids)], Logits::All, mtp)?;
    let v = m.cfg.vocab_size;
    let mut tensors = vec![(
        "logits".to_string(),
        f32_bytes(&res.logits[0]),
        vec![ids.len(), v],
    )];
    if mtp && ids.len() > 1 {
        let (n, d) = (m.cfg.hc_mult, m.cfg.hidden_size);
        let streams = &res.streams.as_ref().expect("streams kept")[0];
        let mut mcache = m.new_mtp_cache().context("this model has no MTP block")?;
        let rows = ids.len() - 1;
        let l = m.mtp_logits(&mut mcache, 0, &streams[..rows * n * d], &ids[1..])?;
        tensors.push(("mtp_logits".to_string(), f32_bytes(&l), vec![rows, v]));
    }
    write_f32_safetensors(out, &tensors)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_f32_safetensors(
    out: &Path,
    tensors: &[(String, Vec<u8>, Vec<usize>)],
) -> anyhow::Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, bytes, shape)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, out)
        .with_context(|| format!("writing {}", out.display()))
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Model directory. Without it, a small random model with the real vocabulary is
    /// generated once (offline) under --models-dir and used.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the generated demo model is kept.
    #[arg(long, env = "V4_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Prompt token ids, comma-separated (default: BOS only).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub ids: Vec<u32>,
    #[arg(long, default_value_t = 16)]
    pub max_new: usize,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    pub greedy: bool,
    /// Prefill chunk size in tokens (0 = the whole prompt at once).
    #[arg(long, default_value_t = 0)]
    pub chunk: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Extra token ids that end generation.
    #[arg(long, value_delimiter = ',')]
    pub stop_ids: Vec<u32>,
    /// Do not stop at the model's EOS id.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print each id as soon as it is generated (comma-separated, same line).
    #[arg(long)]
    pub stream: bool,
}

/// The model to use: the given directory, or the demo model (generated on first use).
fn model_or_demo(model: &Option<PathBuf>, models_dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.clone());
    }
    let dir = models_dir.join("small-random-seed0");
    if !dir.join("model.safetensors.index.json").is_file() {
        eprintln!(
            "no --model given: generating a small random model (real vocabulary) in {}",
            dir.display()
        );
        init(Preset::Small, &dir, WeightFormat::Bf16, 0, 2048)?;
    }
    Ok(dir)
}

pub fn generate(a: &GenerateArgs) -> anyhow::Result<()> {
    let model = model_or_demo(&a.model, &a.models_dir)?;
    let m = load(&model)?;
    let sampling = SamplingParams {
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        seed: a.seed,
    };
    sampling.validate()?;
    let eos_ids = if a.ignore_eos {
        Vec::new()
    } else {
        m.cfg.eos_ids()
    };
    if a.max_new == 0 {
        bail!("--max-new must be at least 1");
    }
    let opts = GenerateOptions {
        chunk: a.chunk,
        sampling,
        stop: StopCriteria {
            eos_ids,
            stop_ids: a.stop_ids.clone(),
            max_new_tokens: a.max_new,
        },
        keep_logits: false,
    };
    let stdout = std::io::stdout();
    let mut first = true;
    let out = run_generate(&m, &a.ids, &opts, |id| {
        if a.stream {
            let mut lock = stdout.lock();
            let _ = write!(lock, "{}{id}", if first { "" } else { "," });
            let _ = lock.flush();
            first = false;
        }
    })?;
    if a.stream {
        println!();
    } else {
        let line: Vec<String> = out.tokens.iter().map(u32::to_string).collect();
        println!("{}", line.join(","));
    }
    Ok(())
}

pub fn init(
    preset: Preset,
    out: &Path,
    format: WeightFormat,
    seed: u64,
    shard_mib: u64,
) -> anyhow::Result<()> {
    let cfg = preset_config(preset);
    let opts = InitOptions {
        seed,
        format,
        max_shard_bytes: shard_mib.max(1) << 20,
    };
    let summary = write_random_checkpoint(&cfg, out, &opts)?;
    eprintln!(
        "wrote a random {preset} model ({format}) to {}: {} tensors in {} shard(s), {:.1} MB",
        out.display(),
        summary.tensors,
        summary.shards,
        summary.file_bytes as f64 / 1e6
    );
    Ok(())
}
