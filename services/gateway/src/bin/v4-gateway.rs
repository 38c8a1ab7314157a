//! `v4-gateway`: DeepSeek's OpenAI and Anthropic APIs over the NATS mesh.
//!
//! Serves until SIGTERM or Ctrl-C, then stops gracefully: no new connections, in-flight
//! requests may finish (at most `--shutdown-timeout-secs`), and exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use v4_bus::Bus;
use v4_gateway::{GatewayConfig, ModelMap};

/// Configuration, resolved once at start-up: flags, else environment, else defaults.
#[derive(Debug, Parser)]
#[command(
    name = "v4-gateway",
    version,
    about = "DeepSeek-V4 HTTP gateway (OpenAI and Anthropic APIs)"
)]
struct Args {
    /// NATS server of the mesh.
    #[arg(long, env = "V4_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject namespace: talk to `<namespace>.v4.v1.*` (several stacks on one NATS).
    #[arg(long, env = "V4_NATS_NAMESPACE")]
    namespace: Option<String>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "V4_GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Instance name (logs).
    #[arg(long, env = "V4_GATEWAY_INSTANCE", default_value = "gateway")]
    instance: String,
    /// HTTP worker threads (default: CPUs, at most 8).
    #[arg(long, env = "V4_GATEWAY_WORKERS")]
    workers: Option<usize>,
    /// API model ids and the served model each runs on: `API_ID=SERVED_ID` (or `ID`),
    /// comma-separated. Default: deepseek-v4-flash and deepseek-v4-pro, each on itself.
    #[arg(long, env = "V4_GATEWAY_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "V4_GATEWAY_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, env = "V4_GATEWAY_MAX_TOKENS", default_value_t = 384 * 1024)]
    max_tokens_limit: u32,
    /// Seconds between SSE keep-alives while a stream waits.
    #[arg(long, env = "V4_GATEWAY_KEEP_ALIVE_SECS", default_value_t = 10.0)]
    keep_alive_secs: f64,
    /// Seconds to wait for the tokenizer and the scheduler per request.
    #[arg(long, env = "V4_GATEWAY_BUS_TIMEOUT_SECS", default_value_t = 30.0)]
    bus_timeout_secs: f64,
    /// Seconds an accepted generation may take to produce its first tokens.
    #[arg(
        long,
        env = "V4_GATEWAY_FIRST_EVENT_TIMEOUT_SECS",
        default_value_t = 600.0
    )]
    first_event_timeout_secs: f64,
    /// Static API keys, comma-separated (empty: no authentication).
    #[arg(
        long,
        env = "V4_GATEWAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Seconds a graceful stop waits for in-flight requests.
    #[arg(long, env = "V4_GATEWAY_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    shutdown_timeout_secs: u64,
}

fn secs(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name} {s}: not a duration"))
}

impl Args {
    fn config(&self) -> Result<GatewayConfig> {
        let mut c = GatewayConfig {
            listen: self.listen,
            instance: self.instance.clone(),
            max_body_bytes: self.max_body_bytes,
            max_tokens_limit: self.max_tokens_limit,
            keep_alive: secs("keep-alive-secs", self.keep_alive_secs)?,
            bus_timeout: secs("bus-timeout-secs", self.bus_timeout_secs)?,
            first_event_timeout: secs("first-event-timeout-secs", self.first_event_timeout_secs)?,
            api_keys: self
                .api_keys
                .iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            ..GatewayConfig::default()
        };
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if !self.models.is_empty() {
            let pairs = self
                .models
                .iter()
                .map(|m| ModelMap::parse_entry(m).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()
                .context("--models")?;
            c.models = ModelMap::new(pairs);
        }
        Ok(c)
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = args.config()?;
    let mut bus = Bus::connect(&args.nats_url, &format!("v4-gateway {}", config.instance))
        .await
        .context("connecting to NATS")?;
    if let Some(ns) = &args.namespace {
        bus = bus.with_namespace(ns).context("--namespace")?;
    }
    let summary = config.summary();
    let gateway = v4_gateway::start(config, bus.clone())
        .await
        .context("starting the gateway")?;
    eprintln!(
        "v4-gateway: serving on http://{} (nats {}{}) {summary}",
        gateway.local_addr(),
        args.nats_url,
        args.namespace
            .as_deref()
            .map(|n| format!(", namespace {n}"))
            .unwrap_or_default(),
    );
    let signal = shutdown_signal().await?;
    eprintln!("v4-gateway: {signal}: stopping gracefully");
    gateway.stop(true).await;
    bus.flush().await.context("flushing the last messages")?;
    eprintln!("v4-gateway: stopped");
    Ok(())
}
