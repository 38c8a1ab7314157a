//! `v4-scheduler`: admission and worker placement over NATS.
//!
//! Configuration: built-in defaults < `--config FILE` (or `V4_CONFIG`) < `V4_SCHEDULER_*` and
//! the shared variables < flags (`docs/CONFIG.md`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use v4_bus::Bus;
use v4_config::Layers;
use v4_scheduler::SchedulerSettings;

/// Flags override the environment, the config file and the defaults.
#[derive(Debug, Parser)]
#[command(name = "v4-scheduler", version, about = "DeepSeek-V4 scheduler (NATS)")]
struct Args {
    /// Config file (TOML, JSON or YAML); default: $V4_CONFIG.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Set any key: `--set max_attempts=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    nats_url: Option<String>,
    #[arg(long)]
    namespace: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let mut l = Layers::from_process(v4_config::config_path(a.config.as_deref()));
    l.flag("nats_url", a.nats_url.as_ref())
        .flag("namespace", a.namespace.as_ref());
    l.sets(&a.set).map_err(|e| anyhow!(e))?;
    let s: SchedulerSettings = v4_config::load(&l)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    eprintln!("v4-scheduler: {}", v4_config::effective_line(&s));
    let mut bus = Bus::connect(&s.nats_url, "v4-scheduler")
        .await
        .context("connecting to NATS")?;
    if let Some(ns) = &s.namespace {
        bus = bus.with_namespace(ns).context("namespace")?;
    }
    let handle = v4_scheduler::start(s.to_config(), bus.clone()).await?;
    let signal = v4_bus::shutdown_signal()
        .await
        .context("installing the signal handlers")?;
    eprintln!("v4-scheduler: {signal}: draining");
    handle.drain().await;
    bus.flush().await.ok();
    Ok(())
}
