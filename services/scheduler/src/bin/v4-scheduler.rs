//! `v4-scheduler`: admission and worker placement over NATS.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_scheduler::SchedulerConfig;

/// Configuration, resolved once at start-up: flags, else environment, else defaults.
#[derive(Debug, Parser)]
#[command(name = "v4-scheduler", version, about = "DeepSeek-V4 scheduler (NATS)")]
struct Config {
    #[arg(long, env = "V4_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, env = "V4_NATS_NAMESPACE")]
    namespace: Option<String>,
    /// Milliseconds a worker may take to accept a forwarded request.
    #[arg(long, env = "V4_SCHEDULER_FORWARD_TIMEOUT_MS", default_value_t = 5000)]
    forward_timeout_ms: u64,
    /// Workers tried per request.
    #[arg(long, env = "V4_SCHEDULER_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: usize,
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
    eprintln!("v4-scheduler: config {c:?}");
    let mut bus = Bus::connect(&c.nats_url, "v4-scheduler")
        .await
        .context("connecting to NATS")?;
    if let Some(ns) = &c.namespace {
        bus = bus.with_namespace(ns).context("--namespace")?;
    }
    let handle = v4_scheduler::start(
        SchedulerConfig {
            forward_timeout: Duration::from_millis(c.forward_timeout_ms),
            max_attempts: c.max_attempts,
            ..SchedulerConfig::default()
        },
        bus.clone(),
    )
    .await?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("v4-scheduler: draining");
    handle.drain().await;
    bus.flush().await.ok();
    Ok(())
}
