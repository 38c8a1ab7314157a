//! `v4-gateway`: DeepSeek's OpenAI and Anthropic APIs over the NATS mesh.
//!
//! Serves until SIGTERM or Ctrl-C, then stops gracefully: no new connections, in-flight
//! requests may finish (at most `shutdown_timeout_secs`), and exits 0.
//!
//! Configuration: `GatewaySettings` (defaults < `--config FILE` / `V4_CONFIG` < environment
//! < flags and `--set KEY=VALUE`), logged once at start with the API keys masked.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_config::Layers;
use v4_gateway::GatewaySettings;

/// Flags. Configuration is layered: built-in defaults < config file (`--config` or
/// `V4_CONFIG`) < environment (`V4_GATEWAY_<KEY>`, `V4_NATS_URL`, `V4_NATS_NAMESPACE`) <
/// flags (these and `--set KEY=VALUE`). A flag only overrides when it is given.
#[derive(Debug, Parser)]
#[command(
    name = "v4-gateway",
    version,
    about = "DeepSeek-V4 HTTP gateway (OpenAI and Anthropic APIs)"
)]
struct Args {
    /// Configuration file (TOML, JSON or YAML, by extension); default: `V4_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sets any configuration key (repeatable); wins over every other layer.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// NATS server of the mesh [key nats_url].
    #[arg(long)]
    nats_url: Option<String>,
    /// Subject namespace: talk to `<namespace>.v4.v1.*` (several stacks on one NATS)
    /// [key namespace].
    #[arg(long)]
    namespace: Option<String>,
    /// Address to listen on (port 0: any free port) [key listen].
    #[arg(long)]
    listen: Option<String>,
    /// Instance name (logs) [key instance].
    #[arg(long)]
    instance: Option<String>,
    /// HTTP worker threads (default: CPUs, at most 8) [key workers].
    #[arg(long)]
    workers: Option<usize>,
    /// API model ids and the served model each runs on: `API_ID=SERVED_ID` (or `ID`),
    /// comma-separated. Default: deepseek-v4-flash and deepseek-v4-pro, each on itself
    /// [key models].
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Largest request body in bytes [key max_body_bytes].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Largest max_tokens a request may ask for [key max_tokens_limit].
    #[arg(long)]
    max_tokens_limit: Option<u32>,
    /// Seconds between SSE keep-alives while a stream waits [key keep_alive_secs].
    #[arg(long)]
    keep_alive_secs: Option<f64>,
    /// Seconds to wait for the tokenizer and the scheduler per request [key bus_timeout_secs].
    #[arg(long)]
    bus_timeout_secs: Option<f64>,
    /// Seconds an accepted generation may take to produce its first tokens
    /// [key first_event_timeout_secs].
    #[arg(long)]
    first_event_timeout_secs: Option<f64>,
    /// Static API keys, comma-separated (empty: no authentication) [key api_keys].
    #[arg(long, value_delimiter = ',')]
    api_keys: Option<Vec<String>>,
    /// Seconds a graceful stop waits for in-flight requests [key shutdown_timeout_secs].
    #[arg(long)]
    shutdown_timeout_secs: Option<u64>,
}

impl Args {
    /// The layers above the defaults: the file, the process environment, then the flags.
    fn layers(&self) -> Result<Layers> {
        let mut l = Layers::from_process(v4_config::config_path(self.config.as_deref()));
        l.flag("nats_url", self.nats_url.as_ref())
            .flag("namespace", self.namespace.as_ref())
            .flag("listen", self.listen.as_ref())
            .flag("instance", self.instance.as_ref())
            .flag("workers", self.workers)
            .flag("models", self.models.as_ref().map(|m| m.join(",")))
            .flag("max_body_bytes", self.max_body_bytes)
            .flag("max_tokens_limit", self.max_tokens_limit)
            .flag("keep_alive_secs", self.keep_alive_secs)
            .flag("bus_timeout_secs", self.bus_timeout_secs)
            .flag("first_event_timeout_secs", self.first_event_timeout_secs)
            .flag("api_keys", self.api_keys.as_ref().map(|k| k.join(",")))
            .flag("shutdown_timeout_secs", self.shutdown_timeout_secs);
        l.sets(&self.set).map_err(anyhow::Error::msg)?;
        Ok(l)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Everything is resolved and checked before anything connects.
    let settings: GatewaySettings =
        v4_config::load(&args.layers()?).context("configuration of v4-gateway")?;
    eprintln!("v4-gateway: {}", v4_config::effective_line(&settings));
    let config = settings
        .to_config()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration of the gateway")?;
    let mut bus = Bus::connect(
        &settings.nats_url,
        &format!("v4-gateway {}", config.instance),
    )
    .await
    .with_context(|| format!("connecting to NATS at {}", settings.nats_url))?;
    if let Some(ns) = settings.nats_namespace() {
        bus = bus.with_namespace(ns).context("namespace")?;
    }
    let summary = config.summary();
    let gateway = v4_gateway::start(config, bus.clone())
        .await
        .context("starting the gateway")?;
    eprintln!(
        "v4-gateway: serving on http://{} (nats {}{}) {summary}",
        gateway.local_addr(),
        settings.nats_url,
        settings
            .nats_namespace()
            .map(|n| format!(", namespace {n}"))
            .unwrap_or_default(),
    );
    let signal = v4_bus::shutdown_signal()
        .await
        .context("installing the signal handlers")?;
    eprintln!("v4-gateway: {signal}: stopping gracefully");
    gateway.stop(true).await;
    bus.flush().await.context("flushing the last messages")?;
    eprintln!("v4-gateway: stopped");
    Ok(())
}
