//! `v4 serve`: the whole mesh in one process — tokenizer service, scheduler, decode workers
//! and the HTTP gateway — over an in-process bus (or a NATS server with `--nats-url`).
//!
//! With no `--model` it serves a small random V4 model with a small generated tokenizer,
//! generated into `--models-dir` on first use, so it runs offline on a fresh machine; the
//! `/v1/models` entry says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use v4_bus::Bus;
use v4_config::Layers;
use v4_engine::config::TokenIds;
use v4_engine::init::{InitOptions, Preset, WeightFormat, preset_config, write_random_checkpoint};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::service::{ServiceOptions, TokenizerService};
use v4_tokenizer::synthetic::{SyntheticOptions, SyntheticTokenizer};
use v4_worker::{WorkerConfig, WorkerModel};

/// The note `/v1/models` shows for the generated demo model.
pub const DEMO_DESCRIPTION: &str = "random weights and a small generated tokenizer, generated \
     offline by `v4 serve` for a demo: the output is meaningless text";

v4_config::settings! {
    /// `v4 serve`: tokenizer service, scheduler, decode workers and gateway in one process.
    pub struct ServeSettings("serve") {
        /// Model directory or Hugging Face repo id; empty: a small random demo model (generated
        /// into `models_dir` on first use, with a small generated tokenizer).
        model: String = String::new(); env = "V4_MODEL",
        /// tokenizer.json, a directory holding one, or a repo id; empty: the model's.
        tokenizer: String = String::new(); env = "V4_SERVE_TOKENIZER",
        /// Where the demo model is generated.
        models_dir: String = "models".into(),
        /// HTTP address of the gateway.
        listen: String = "127.0.0.1:8000".into(),
        /// The API model id the model answers to.
        model_id: String = "deepseek-v4-flash".into(); env = "V4_MODEL_ID",
        /// Decode workers (each has its own engine thread and batch).
        decode_workers: usize = 1,
        /// Sequences per running batch.
        max_batch: usize = 16,
        /// Longest prompt + output (0: the model's).
        max_context: u64 = 0,
        /// Run the services over this NATS server instead of the in-process bus.
        nats_url: Option<String> = None; env = "V4_NATS_URL",
        /// Static API keys; empty: no authentication.
        api_keys: Vec<String> = vec![]; secret = true,
    }
}

/// Flags of `v4 serve` (they override the environment, the config file and the defaults).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML, JSON or YAML); default: $V4_CONFIG.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set any key: `--set max_batch=8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Model directory or Hugging Face repo id (default: the generated demo model).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json, a directory holding one, or a repo id (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Where the demo model is generated (default `models`).
    #[arg(long)]
    pub models_dir: Option<String>,
    /// HTTP address (default 127.0.0.1:8000).
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub model_id: Option<String>,
    #[arg(long)]
    pub decode_workers: Option<usize>,
    #[arg(long)]
    pub max_batch: Option<usize>,
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Run over this NATS server instead of in process.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Static API keys, comma-separated.
    #[arg(long)]
    pub api_keys: Option<String>,
}

impl ServeArgs {
    fn settings(&self) -> Result<ServeSettings> {
        let mut l = Layers::from_process(v4_config::config_path(self.config.as_deref()));
        l.flag("model", self.model.as_ref())
            .flag("tokenizer", self.tokenizer.as_ref())
            .flag("models_dir", self.models_dir.as_ref())
            .flag("listen", self.listen.as_ref())
            .flag("model_id", self.model_id.as_ref())
            .flag("decode_workers", self.decode_workers)
            .flag("max_batch", self.max_batch)
            .flag("max_context", self.max_context)
            .flag("nats_url", self.nats_url.as_ref())
            .flag("api_keys", self.api_keys.as_ref());
        l.sets(&self.set).map_err(|e| anyhow::anyhow!(e))?;
        Ok(v4_config::load(&l)?)
    }
}

/// The demo model directory: the generated tokenizer and a small random model whose
/// vocabulary is exactly the tokenizer's.
pub fn demo_model(models_dir: &Path) -> Result<PathBuf> {
    let dir = models_dir.join("serve-demo-seed0");
    if dir.join("model.safetensors.index.json").is_file() && dir.join("tokenizer.json").is_file() {
        return Ok(dir);
    }
    eprintln!(
        "v4 serve: no --model given: generating a small random model and tokenizer in {}",
        dir.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let synth = SyntheticTokenizer::generate(&SyntheticOptions::default())?;
    let tok = synth.load()?;
    let mut cfg = preset_config(Preset::Small);
    cfg.vocab_size = synth.vocab_size();
    cfg.bos_token_id = Some(tok.bos_id());
    cfg.eos_token_id = Some(TokenIds::One(tok.eos_id()));
    cfg.max_position_embeddings = 16384;
    write_random_checkpoint(
        &cfg,
        &dir,
        &InitOptions {
            seed: 0,
            format: WeightFormat::Bf16,
            max_shard_bytes: 2 << 30,
        },
    )?;
    // The tokenizer goes last: its presence marks a complete demo directory.
    synth
        .write(&dir)
        .with_context(|| format!("writing the tokenizer into {}", dir.display()))?;
    Ok(dir)
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    let a = args.settings()?;
    eprintln!("v4 serve: {}", v4_config::effective_line(&a));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("v4-serve")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve_async(&a))
}

async fn serve_async(a: &ServeSettings) -> Result<()> {
    if a.decode_workers == 0 {
        bail!("--decode-workers must be at least 1");
    }
    let hub = v4_hub::HubOptions::from_env();
    let listen: SocketAddr = a
        .listen
        .parse()
        .with_context(|| format!("listen: {:?} is not an address", a.listen))?;
    let (model_dir, description) = match (!a.model.is_empty()).then_some(&a.model) {
        Some(m) => (
            v4_hub::resolve_dir(m, &["*.json", "*.safetensors", "tokenizer*"], &hub)
                .await
                .with_context(|| format!("--model {m}"))?,
            None,
        ),
        None => {
            let dir = PathBuf::from(&a.models_dir);
            let d = tokio::task::spawn_blocking(move || demo_model(&dir)).await??;
            (d, Some(DEMO_DESCRIPTION.to_string()))
        }
    };
    let tok_path = match (!a.tokenizer.is_empty()).then_some(&a.tokenizer) {
        Some(t) => v4_hub::resolve_file(t, "tokenizer.json", &hub)
            .await
            .with_context(|| format!("--tokenizer {t}"))?,
        None => {
            let p = model_dir.join("tokenizer.json");
            if !p.is_file() {
                bail!(
                    "{} has no tokenizer.json: pass --tokenizer (a file, directory or repo id)",
                    model_dir.display()
                );
            }
            p
        }
    };
    let tokenizer = tokio::task::spawn_blocking(move || Tokenizer::from_file(&tok_path))
        .await?
        .context("loading the tokenizer")?;
    let md = model_dir.clone();
    let model = tokio::task::spawn_blocking(move || WorkerModel::load(&md))
        .await?
        .context("loading the model")?;
    if tokenizer.vocab_size() > model.model.cfg.vocab_size {
        bail!(
            "the tokenizer has {} ids but the model's vocabulary is {}",
            tokenizer.vocab_size(),
            model.model.cfg.vocab_size
        );
    }

    let bus = match &a.nats_url {
        Some(url) => Bus::connect(url, "v4 serve")
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?,
        None => Bus::in_process(),
    };
    let tok_service = TokenizerService::new(Arc::new(tokenizer), ServiceOptions::default());
    let tok_handle = tok_service.serve(&bus).await?;
    let scheduler =
        v4_scheduler::start(v4_scheduler::SchedulerConfig::default(), bus.clone()).await?;
    let mut workers = Vec::new();
    for i in 0..a.decode_workers {
        let cfg = WorkerConfig {
            instance_name: format!("decode{i}"),
            model_id: a.model_id.clone(),
            max_batch: a.max_batch,
            max_context: (a.max_context > 0).then_some(a.max_context),
            description: description.clone(),
            ..WorkerConfig::default()
        };
        workers.push(v4_worker::start(model.clone(), cfg, bus.clone()).await?);
    }
    let mut gw = v4_gateway::GatewayConfig {
        listen,
        api_keys: a.api_keys.clone(),
        ..v4_gateway::GatewayConfig::default()
    };
    gw.models = v4_gateway::ModelMap::new([(a.model_id.clone(), a.model_id.clone())]);
    let gateway = v4_gateway::start(gw.clone(), bus.clone()).await?;
    eprintln!(
        "v4 serve: model {} ({}) as {:?}, {} decode worker(s), bus {}, API on http://{}",
        model_dir.display(),
        description.as_deref().unwrap_or("checkpoint"),
        a.model_id,
        workers.len(),
        bus.kind(),
        gateway.local_addr()
    );
    eprintln!("v4 serve: gateway config: {}", gw.summary());
    v4_bus::shutdown_signal()
        .await
        .context("installing the signal handlers")?;
    eprintln!("v4 serve: draining");
    gateway.stop(true).await;
    for w in workers {
        w.drain(Duration::from_secs(30)).await;
    }
    scheduler.drain().await;
    tok_handle.drain().await;
    eprintln!("v4 serve: stopped");
    Ok(())
}
