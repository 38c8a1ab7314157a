//! `v4-worker`: a decode or prefill worker over NATS (continuous batching on the CPU engine).
//!
//! Serves until SIGTERM or Ctrl-C, then drains: no new work, in-flight generations finish
//! until the drain deadline (what is left is cancelled with a final event), exit 0.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_protocol::generate::WorkerRole;
use v4_worker::{WorkerConfig, WorkerModel};

/// Configuration, resolved once at start-up: flags, else environment, else defaults.
#[derive(Debug, Parser)]
#[command(
    name = "v4-worker",
    version,
    about = "DeepSeek-V4 decode worker (NATS)"
)]
struct Config {
    /// NATS server.
    #[arg(long, env = "V4_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject namespace (several stacks on one NATS).
    #[arg(long, env = "V4_NATS_NAMESPACE")]
    namespace: Option<String>,
    /// Model directory (config.json + safetensors, BF16 or FP8/FP4/INT4).
    #[arg(long, env = "V4_MODEL")]
    model: PathBuf,
    /// The served model id this worker answers for.
    #[arg(long, env = "V4_MODEL_ID", default_value = "deepseek-v4-flash")]
    model_id: String,
    #[arg(long, env = "V4_WORKER_INSTANCE", default_value = "decode")]
    instance: String,
    /// decode (prefills its own prompts, takes handoffs) or prefill (hands caches to decode
    /// workers).
    #[arg(long, env = "V4_WORKER_ROLE", default_value = "decode", value_parser = ["decode", "prefill"])]
    role: String,
    /// Milliseconds a decode worker may take to accept a prefill handoff.
    #[arg(long, env = "V4_WORKER_HANDOFF_TIMEOUT_MS", default_value_t = 30000)]
    handoff_timeout_ms: u64,
    /// Sequences in the running batch at most.
    #[arg(long, env = "V4_WORKER_MAX_BATCH", default_value_t = 32)]
    max_batch: usize,
    /// Accepted sequences waiting for a slot at most.
    #[arg(long, env = "V4_WORKER_MAX_WAITING", default_value_t = 256)]
    max_waiting: usize,
    /// Prompt tokens per sequence per step (chunked prefill).
    #[arg(long, env = "V4_WORKER_PREFILL_CHUNK", default_value_t = 256)]
    prefill_chunk: usize,
    /// Tokens per forward step at most.
    #[arg(long, env = "V4_WORKER_STEP_TOKENS", default_value_t = 512)]
    step_tokens: usize,
    /// KV capacity in tokens (default: max batch × max context).
    #[arg(long, env = "V4_WORKER_KV_CAPACITY_TOKENS")]
    kv_capacity_tokens: Option<u64>,
    /// Longest prompt + output (default: the model's max_position_embeddings).
    #[arg(long, env = "V4_WORKER_MAX_CONTEXT")]
    max_context: Option<u64>,
    #[arg(long, env = "V4_WORKER_HEARTBEAT_MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Seconds in-flight generations may run after SIGTERM.
    #[arg(long, env = "V4_WORKER_DRAIN_SECS", default_value_t = 30)]
    drain_secs: u64,
    /// Engine threads (0 = one per core).
    #[arg(long, env = "V4_THREADS", default_value_t = 0)]
    threads: usize,
}

async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT").context("waiting for Ctrl-C"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let c = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    eprintln!("v4-worker: config {c:?}");
    if c.threads > 0 {
        rayon_threads(c.threads)?;
    }
    let dir = c.model.clone();
    let model = tokio::task::spawn_blocking(move || WorkerModel::load(&dir))
        .await
        .context("loading the model")??;
    let mut bus = Bus::connect(&c.nats_url, "v4-worker")
        .await
        .context("connecting to NATS")?;
    if let Some(ns) = &c.namespace {
        bus = bus.with_namespace(ns).context("--namespace")?;
    }
    let config = WorkerConfig {
        instance_name: c.instance.clone(),
        model_id: c.model_id.clone(),
        max_batch: c.max_batch,
        max_waiting: c.max_waiting,
        prefill_chunk: c.prefill_chunk,
        step_token_budget: c.step_tokens,
        kv_capacity_tokens: c.kv_capacity_tokens,
        max_context: c.max_context,
        heartbeat_interval: Duration::from_millis(c.heartbeat_ms.max(50)),
        role: if c.role == "prefill" {
            WorkerRole::Prefill
        } else {
            WorkerRole::Decode
        },
        handoff_timeout: Duration::from_millis(c.handoff_timeout_ms),
        description: None,
    };
    let handle = v4_worker::start(model, config, bus).await?;
    eprintln!(
        "v4-worker: instance {} serving {}",
        handle.instance(),
        c.model_id
    );
    let signal = shutdown_signal().await?;
    eprintln!("v4-worker: {signal}: draining");
    handle.drain(Duration::from_secs(c.drain_secs)).await;
    eprintln!("v4-worker: drained, exiting");
    Ok(())
}

fn rayon_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {n} engine threads: {e}"))
}
