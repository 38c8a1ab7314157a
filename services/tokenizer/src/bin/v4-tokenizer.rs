//! `v4-tokenizer`: the tokenizer service over NATS.
//!
//! Serves every `v4.v1.tokenizer.*` subject until SIGTERM or Ctrl-C, then drains: stops the
//! subscriptions, finishes the requests already received, and exits 0.
//!
//! Configuration: `TokenizerSettings` (defaults < `--config FILE` / `V4_CONFIG` < environment
//! < flags and `--set KEY=VALUE`), logged once at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_config::Layers;
use v4_tokenizer::Tokenizer;
use v4_tokenizer::service::{TokenizerService, TokenizerSettings};

/// Flags. Configuration is layered: built-in defaults < config file (`--config` or
/// `V4_CONFIG`) < environment (`V4_TOKENIZER_<KEY>`, `V4_TOKENIZER`, `V4_NATS_URL`,
/// `V4_NATS_NAMESPACE`) < flags (these and `--set KEY=VALUE`). A flag only overrides when it
/// is given.
#[derive(Debug, Parser)]
#[command(
    name = "v4-tokenizer",
    version,
    about = "DeepSeek-V4 tokenizer service (NATS)"
)]
struct Args {
    /// Configuration file (TOML, JSON or YAML, by extension); default: `V4_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sets any configuration key (repeatable); wins over every other layer.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// NATS server to serve on [key nats_url].
    #[arg(long)]
    nats_url: Option<String>,
    /// Subject namespace: serve `<namespace>.v4.v1.tokenizer.*` (several stacks on one NATS)
    /// [key namespace].
    #[arg(long)]
    namespace: Option<String>,
    /// The model's tokenizer.json, a model directory holding one, or a Hugging Face repo id
    /// (`deepseek-ai/DeepSeek-V4-Flash`; fetched into the HF cache, `HF_*` variables honoured)
    /// [key tokenizer, required].
    #[arg(long)]
    tokenizer: Option<String>,
    /// Instance name; a random suffix makes the instance id unique [key instance].
    #[arg(long)]
    instance: Option<String>,
    /// Seconds an idle streaming-decode session is kept [key session_ttl_secs].
    #[arg(long)]
    session_ttl_secs: Option<u64>,
    /// Open streaming-decode sessions per instance [key max_sessions].
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Encode/count/decode requests computed at once [key max_in_flight].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Seconds to wait for in-flight requests when shutting down [key drain_timeout_secs].
    #[arg(long)]
    drain_timeout_secs: Option<u64>,
}

impl Args {
    /// The layers above the defaults: the file, the process environment, then the flags.
    fn layers(&self) -> Result<Layers> {
        let mut l = Layers::from_process(v4_config::config_path(self.config.as_deref()));
        l.flag("nats_url", self.nats_url.as_ref())
            .flag("namespace", self.namespace.as_ref())
            .flag("tokenizer", self.tokenizer.as_ref())
            .flag("instance", self.instance.as_ref())
            .flag("session_ttl_secs", self.session_ttl_secs)
            .flag("max_sessions", self.max_sessions)
            .flag("max_in_flight", self.max_in_flight)
            .flag("drain_timeout_secs", self.drain_timeout_secs);
        l.sets(&self.set).map_err(anyhow::Error::msg)?;
        Ok(l)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Everything is resolved and checked before the tokenizer is fetched or NATS is reached.
    let settings: TokenizerSettings =
        v4_config::load(&args.layers()?).context("configuration of v4-tokenizer")?;
    eprintln!("v4-tokenizer: {}", v4_config::effective_line(&settings));
    settings
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration of the tokenizer service")?;
    let source = settings.tokenizer_source().map_err(anyhow::Error::msg)?;
    let hub = v4_hub::HubOptions::from_env();
    let path = v4_hub::resolve_file(source, "tokenizer.json", &hub)
        .await
        .with_context(|| format!("tokenizer {source}"))?;
    let tokenizer = tokio::task::spawn_blocking(move || Tokenizer::from_file(&path))
        .await
        .context("loading the tokenizer")??;
    let service = TokenizerService::new(Arc::new(tokenizer), settings.to_options());
    let mut bus = Bus::connect(
        &settings.nats_url,
        &format!("v4-tokenizer {}", service.instance()),
    )
    .await
    .with_context(|| format!("connecting to NATS at {}", settings.nats_url))?;
    if let Some(ns) = settings.nats_namespace() {
        bus = bus.with_namespace(ns).context("namespace")?;
    }
    let handle = service.serve(&bus).await.context("subscribing")?;
    eprintln!(
        "v4-tokenizer: instance {} serving on {} (tokenizer sha256 {})",
        handle.instance(),
        settings.nats_url,
        service.tokenizer().sha256_hex()
    );
    let signal = v4_bus::shutdown_signal()
        .await
        .context("installing the signal handlers")?;
    eprintln!("v4-tokenizer: {signal}: draining");
    let timeout = Duration::from_secs(settings.drain_timeout_secs);
    if tokio::time::timeout(timeout, handle.drain()).await.is_err() {
        anyhow::bail!("requests still in flight after {timeout:?}; exiting anyway");
    }
    bus.flush().await.context("flushing the last replies")?;
    eprintln!("v4-tokenizer: drained, exiting");
    Ok(())
}
