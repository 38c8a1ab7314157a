//! The HTTP gateway: DeepSeek's OpenAI-compatible and Anthropic-compatible APIs over the mesh.
//!
//! [`start`] binds and serves on any tokio runtime (actix-web's workers run on their own
//! threads); [`GatewayHandle`] gives the address, counters and [`GatewayHandle::stop`].
//!
//! # Endpoints
//!
//! | route | what it does |
//! |---|---|
//! | `POST /v1/chat/completions`, `POST /chat/completions` | OpenAI ChatCompletions (stream or not) |
//! | `POST /v1/messages`, `POST /anthropic/v1/messages` | Anthropic Messages (stream or not) |
//! | `GET /v1/models`, `GET /models` | the API model ids whose served model a live worker serves |
//! | `GET /health` | 200 while the process is up |
//! | `GET /ready` | 200 when the scheduler lists a served model and the tokenizer answers; else 503 with `{"status": "not_ready", "reason"}` |
//!
//! A chat request goes through these steps; everything before step 5 happens before any
//! byte of the answer is sent, so any failure there is a plain HTTP error, and bad input never
//! reaches a worker:
//!
//! 1. API key (when [`GatewayConfig::api_keys`] is set), content type (JSON), body size
//!    (413 above [`GatewayConfig::max_body_bytes`]), UTF-8 and JSON.
//! 2. Validation into a [`ValidChatRequest`] (`openai.rs`, `anthropic.rs`): the model id
//!    (unknown ids and the retired `deepseek-chat` / `deepseek-reasoner` are 400s that say
//!    what to send), the messages (the tokenizer's API guards), every sampling field (a wrong
//!    type or range is a 422 naming the field; Anthropic answers 400), `n` = 1 only, logprobs
//!    only in non-thinking mode, stop strings (≤ 16), tools and `tool_choice`.
//! 3. The prompt is encoded by the tokenizer service; `prompt + max_tokens` beyond the served
//!    model's `max_context` (from the scheduler) is a 400 in DeepSeek's words. Without
//!    `max_tokens` the generation may use what the context leaves, up to
//!    [`GatewayConfig::max_tokens_limit`].
//! 4. The generation is sent to the scheduler (`overloaded` → 503 with `Retry-After`).
//! 5. The answer: for a non-streaming request the whole message; for a stream, `200` with
//!    `text/event-stream` at once, then the events (keep-alives while waiting).
//!
//! Output: the worker's token ids are decoded by a tokenizer decode session into
//! `reasoning_content`, `content` and tool calls; stop strings cut the content (the
//! generation is cancelled, `finish_reason` `stop` / `stop_reason` `stop_sequence`);
//! `usage` comes from the worker's final counts, `reasoning_tokens` counts the generated ids
//! up to and including `</think>`. With `tool_choice: "none"` (or no tools) the tools are not
//! declared in the prompt and any tool-call markup the model produces anyway is dropped;
//! `"required"` and a named tool are accepted but not enforced (no constrained decoding).
//! Logprob token strings come from the tokenizer's `decode_ids` (cached); `bytes` are the
//! UTF-8 bytes of that text (a token holding part of a character shows U+FFFD).
//!
//! # Errors
//!
//! `error.rs` maps every failure to status, body and `Retry-After` in one place; the table is
//! in [`error`]. OpenAI bodies are `{"error": {"message", "type", "param", "code"}}`,
//! Anthropic bodies `{"type": "error", "error": {"type", "message"}}`. After a stream has
//! started, a failure is sent inside it: OpenAI gets a final chunk with `finish_reason`
//! `insufficient_system_resource` (and usage if asked), then `data: {"error": …}` and
//! `data: [DONE]`; Anthropic gets `event: error`. A non-streaming OpenAI answer whose
//! generation failed is a 200 with `finish_reason: "insufficient_system_resource"`, an
//! Anthropic one the error (500).
//!
//! # Disconnects and cancellation
//!
//! A client that goes away cancels its generation: the SSE body's channel closes (or the
//! non-streaming handler's future is dropped; HTTP/1 half-closed connections are not allowed,
//! so a client EOF ends the request at once), the generation's driver is dropped, and its
//! drop guard hands `CancelGeneration` (reason `client_disconnected`) and the decode session's
//! close to the gateway's cleanup task. A generation whose worker stops sending heartbeats
//! (for the worker's `expires_after`), whose events have a gap, or that produces no first
//! event within [`GatewayConfig::first_event_timeout`] ends with an error within a
//! [`GatewayConfig::liveness_check`]; a stream never hangs.

mod anthropic;
pub mod config;
mod driver;
pub mod error;
mod fields;
mod mesh;
pub mod metrics;
mod openai;
mod request;
mod routes;
pub mod settings;
mod sse;
mod stop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpServer, web};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use v4_bus::Bus;
use v4_protocol::subject::worker;

pub use config::{GatewayConfig, ModelMap};
pub use error::{Failure, Flavor, GatewayError};
pub use metrics::{Metrics, MetricsSnapshot};
pub use request::{ToolCalls, ValidChatRequest};
pub use settings::GatewaySettings;

use mesh::{Mesh, WorkerWatch};
use routes::AppState;

/// A running gateway.
pub struct GatewayHandle {
    local_addr: SocketAddr,
    server: ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    heartbeat_task: JoinHandle<()>,
    cleanup_task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    mesh: Arc<Mesh>,
}

impl GatewayHandle {
    /// The address it listens on (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Stops serving. `graceful`: stop accepting, let in-flight requests finish (at most
    /// [`GatewayConfig::shutdown_timeout`]); otherwise drop them at once (their generations
    /// are cancelled). Returns when the server and the cleanup of dropped requests are done.
    pub async fn stop(self, graceful: bool) {
        self.server.stop(graceful).await;
        let _ = self.server_task.await;
        self.heartbeat_task.abort();
        // The cleanup task ends when the last sender (in the shared mesh) is gone.
        drop(self.mesh);
        if tokio::time::timeout(Duration::from_secs(5), self.cleanup_task)
            .await
            .is_err()
        {
            tracing::warn!("cleanup of cancelled generations did not finish in 5 s");
        }
    }
}

/// Binds `config.listen` and serves the APIs over `bus` until [`GatewayHandle::stop`].
/// Call it from inside a tokio runtime; the background tasks (heartbeat watch, cleanup of
/// cancelled generations) run on that runtime.
pub async fn start(config: GatewayConfig, bus: Bus) -> Result<GatewayHandle, GatewayError> {
    if config.workers == 0 || config.keep_alive.is_zero() || config.liveness_check.is_zero() {
        return Err(GatewayError::Config(
            "workers, keep_alive and liveness_check must be positive".into(),
        ));
    }
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let watch = WorkerWatch::default();
    let heartbeats = bus.subscribe(worker::HEARTBEAT).await?;
    let heartbeat_task = tokio::spawn(mesh::run_heartbeat_watch(heartbeats, watch.clone()));
    let (cleanup_tx, cleanup_rx) = mpsc::unbounded_channel();
    let cleanup_task = tokio::spawn(mesh::run_cleanup(bus.clone(), metrics.clone(), cleanup_rx));
    let mesh = Arc::new(Mesh::new(
        bus,
        config.clone(),
        metrics.clone(),
        watch,
        cleanup_tx,
    ));

    let addr = config.listen;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| GatewayError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, source })?;
    let state = web::Data::new(AppState {
        mesh: mesh.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
    });
    let counters = metrics.clone();
    let server = HttpServer::new(move || {
        let counters = counters.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(move |req, srv| {
                let in_flight = counters.request_started();
                let counters = counters.clone();
                srv.call(req).map(move |res| {
                    drop(in_flight);
                    let status = res.as_ref().map_or(500, |r| r.status().as_u16());
                    counters.answered(status);
                    res
                })
            })
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    // Small SSE frames go out at once: without TCP_NODELAY, Nagle's algorithm holds a frame
    // until the client acknowledges the previous one (up to its 40 ms delayed-ACK timer).
    .on_connect(|conn, _ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .workers(config.workers)
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .h1_allow_half_closed(false)
    .listen(listener)
    .map_err(|source| GatewayError::Bind { addr, source })?
    .run();
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(addr = %local_addr, instance = %config.instance, "gateway listening");
    Ok(GatewayHandle {
        local_addr,
        server: server_handle,
        server_task,
        heartbeat_task,
        cleanup_task,
        metrics,
        mesh,
    })
}
