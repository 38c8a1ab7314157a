//! `v4-tokenizer`: the tokenizer service over NATS.
//!
//! Serves every `v4.v1.tokenizer.*` subject until SIGTERM or Ctrl-C, then drains: stops the
//! subscriptions, finishes the requests already received, and exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_tokenizer::Tokenizer;
use v4_tokenizer::service::{ServiceOptions, TokenizerService};

/// Configuration, resolved once at start-up: flags, else environment, else defaults.
#[derive(Debug, Parser)]
#[command(
    name = "v4-tokenizer",
    version,
    about = "DeepSeek-V4 tokenizer service (NATS)"
)]
struct Config {
    /// NATS server to serve on.
    #[arg(long, env = "V4_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject namespace: serve `<namespace>.v4.v1.tokenizer.*` (several stacks on one NATS).
    #[arg(long, env = "V4_NATS_NAMESPACE")]
    namespace: Option<String>,
    /// The model's tokenizer.json, a model directory holding one, or a Hugging Face repo id
    /// (`deepseek-ai/DeepSeek-V4-Flash`; fetched into the HF cache, `HF_*` variables honoured).
    #[arg(long = "tokenizer", env = "V4_TOKENIZER")]
    tokenizer: String,
    /// Instance name; a random suffix makes the instance id unique.
    #[arg(long, env = "V4_TOKENIZER_INSTANCE", default_value = "tokenizer")]
    instance: String,
    /// Seconds an idle streaming-decode session is kept.
    #[arg(long, env = "V4_TOKENIZER_SESSION_TTL_SECS", default_value_t = 300)]
    session_ttl_secs: u64,
    /// Open streaming-decode sessions per instance.
    #[arg(long, env = "V4_TOKENIZER_MAX_SESSIONS", default_value_t = 100_000)]
    max_sessions: usize,
    /// Encode/count/decode requests computed at once.
    #[arg(long, env = "V4_TOKENIZER_MAX_IN_FLIGHT", default_value_t = 256)]
    max_in_flight: usize,
    /// Seconds to wait for in-flight requests when shutting down.
    #[arg(long, env = "V4_TOKENIZER_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
}

impl Config {
    fn service_options(&self) -> ServiceOptions {
        ServiceOptions {
            instance_name: self.instance.clone(),
            session_ttl: Duration::from_secs(self.session_ttl_secs),
            max_sessions: self.max_sessions,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT").context("waiting for Ctrl-C"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::parse();
    let hub = v4_hub::HubOptions::from_env();
    let path = v4_hub::resolve_file(&config.tokenizer, "tokenizer.json", &hub)
        .await
        .with_context(|| format!("--tokenizer {}", config.tokenizer))?;
    let tokenizer = tokio::task::spawn_blocking(move || Tokenizer::from_file(&path))
        .await
        .context("loading the tokenizer")??;
    let service = TokenizerService::new(Arc::new(tokenizer), config.service_options());
    let mut bus = Bus::connect(
        &config.nats_url,
        &format!("v4-tokenizer {}", service.instance()),
    )
    .await
    .context("connecting to NATS")?;
    if let Some(ns) = &config.namespace {
        bus = bus.with_namespace(ns).context("--namespace")?;
    }
    let handle = service.serve(&bus).await.context("subscribing")?;
    eprintln!(
        "v4-tokenizer: instance {} serving on {} (tokenizer sha256 {})",
        handle.instance(),
        config.nats_url,
        service.tokenizer().sha256_hex()
    );
    let signal = shutdown_signal().await?;
    eprintln!("v4-tokenizer: {signal}: draining");
    let timeout = Duration::from_secs(config.drain_timeout_secs);
    if tokio::time::timeout(timeout, handle.drain()).await.is_err() {
        anyhow::bail!("requests still in flight after {timeout:?}; exiting anyway");
    }
    bus.flush().await.context("flushing the last replies")?;
    eprintln!("v4-tokenizer: drained, exiting");
    Ok(())
}
