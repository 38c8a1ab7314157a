//! `v4-worker`: a decode or prefill worker over NATS (continuous batching on the CPU engine).
//!
//! Configuration: built-in defaults < `--config FILE` (or `V4_CONFIG`) < `V4_WORKER_*` and the
//! shared variables < flags (`docs/CONFIG.md`). Serves until SIGTERM or Ctrl-C, then drains: no
//! new work, in-flight generations finish until the drain deadline (what is left is cancelled
//! with a final event), exit 0.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use v4_bus::Bus;
use v4_config::Layers;
use v4_worker::{WorkerModel, WorkerSettings};

/// Flags override the environment, the config file and the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "v4-worker",
    version,
    about = "DeepSeek-V4 decode / prefill worker (NATS)"
)]
struct Args {
    /// Config file (TOML, JSON or YAML); default: $V4_CONFIG.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Set any key: `--set max_batch=16` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    nats_url: Option<String>,
    #[arg(long)]
    namespace: Option<String>,
    /// Model directory.
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    model_id: Option<String>,
    /// decode or prefill.
    #[arg(long)]
    role: Option<String>,
    #[arg(long)]
    instance: Option<String>,
    #[arg(long)]
    max_batch: Option<usize>,
    #[arg(long)]
    max_context: Option<u64>,
    #[arg(long)]
    threads: Option<usize>,
}

fn settings(a: &Args) -> Result<WorkerSettings> {
    let mut l = Layers::from_process(v4_config::config_path(a.config.as_deref()));
    l.flag("nats_url", a.nats_url.as_ref())
        .flag("namespace", a.namespace.as_ref())
        .flag("model", a.model.as_ref())
        .flag("model_id", a.model_id.as_ref())
        .flag("role", a.role.as_ref())
        .flag("instance", a.instance.as_ref())
        .flag("max_batch", a.max_batch)
        .flag("max_context", a.max_context)
        .flag("threads", a.threads);
    l.sets(&a.set).map_err(|e| anyhow!(e))?;
    Ok(v4_config::load::<WorkerSettings>(&l)?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let s = settings(&Args::parse())?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    eprintln!("v4-worker: {}", v4_config::effective_line(&s));
    let config = s
        .to_config()
        .map_err(|e| anyhow!("invalid configuration: {e}"))?;
    let dir = s.model_dir().map_err(|e| anyhow!(e))?;
    if s.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(s.threads)
            .build_global()
            .map_err(|e| anyhow!("cannot start {} engine threads: {e}", s.threads))?;
    }
    let model = tokio::task::spawn_blocking(move || WorkerModel::load(&dir))
        .await
        .context("loading the model")??;
    let mut bus = Bus::connect(&s.nats_url, "v4-worker")
        .await
        .context("connecting to NATS")?;
    if let Some(ns) = &s.namespace {
        bus = bus.with_namespace(ns).context("namespace")?;
    }
    let handle = v4_worker::start(model, config, bus).await?;
    eprintln!(
        "v4-worker: instance {} serving {}",
        handle.instance(),
        s.model_id
    );
    let signal = v4_bus::shutdown_signal()
        .await
        .context("installing the signal handlers")?;
    eprintln!("v4-worker: {signal}: draining");
    handle.drain(Duration::from_secs(s.drain_secs)).await;
    eprintln!("v4-worker: drained, exiting");
    Ok(())
}
