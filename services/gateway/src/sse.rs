//! Server-sent events: a task per stream drives the [`Driver`] and writes the frames of an
//! [`SseFormat`] into a bounded channel that is the response body.
//!
//! * While no update arrives for [`crate::GatewayConfig::keep_alive`], the format's keep-alive
//!   frame is sent (an SSE comment for OpenAI, a `ping` event for Anthropic).
//! * The client going away drops the response body, and so the channel's receiver: the task
//!   notices at once (also while it waits for the next token), stops, and dropping the driver
//!   cancels the generation.
//! * The body is never compressed (the gateway has no compression middleware) and proxies are
//!   asked not to buffer it (`X-Accel-Buffering: no`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::driver::{Delta, Driver, Outcome, Update};
use crate::metrics::Metrics;

/// Frames queued for a slow client before the generation waits.
const CHANNEL_FRAMES: usize = 64;

/// The frames of one API's stream.
pub(crate) trait SseFormat: Send + 'static {
    /// Sent as soon as the stream starts.
    fn start(&mut self) -> Vec<Bytes>;
    fn delta(&mut self, d: &Delta) -> Vec<Bytes>;
    /// The last frames (finish, usage, error, terminator).
    fn finish(&mut self, o: &Outcome) -> Vec<Bytes>;
    fn keep_alive(&self) -> Bytes;
}

/// `data: <json>\n\n`
pub(crate) fn data_frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// `event: <name>\ndata: <json>\n\n`
pub(crate) fn event_frame(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// Starts the stream task and returns the streaming response.
pub(crate) fn response(
    driver: Driver,
    format: impl SseFormat,
    keep_alive: Duration,
    metrics: Arc<Metrics>,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_FRAMES);
    metrics.stream_started();
    actix_web::rt::spawn(async move {
        pump(driver, format, &tx, keep_alive).await;
        metrics.stream_ended();
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// Sends frames; `false` when the client is gone.
async fn send(tx: &mpsc::Sender<Bytes>, frames: Vec<Bytes>) -> bool {
    for f in frames {
        if tx.send(f).await.is_err() {
            return false;
        }
    }
    true
}

async fn pump(
    mut driver: Driver,
    mut format: impl SseFormat,
    tx: &mpsc::Sender<Bytes>,
    keep_alive: Duration,
) {
    if !send(tx, format.start()).await {
        return;
    }
    loop {
        let update = {
            let next = driver.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    u = &mut next => break u,
                    _ = tokio::time::sleep(keep_alive) => {
                        if !send(tx, vec![format.keep_alive()]).await {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        };
        match update {
            Update::Delta(d) => {
                if !send(tx, format.delta(&d)).await {
                    return;
                }
            }
            Update::Done(o) => {
                send(tx, format.finish(&o)).await;
                return;
            }
        }
    }
}
