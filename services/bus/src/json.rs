//! Typed JSON calls: [`Bus::request_json`] and [`Bus::serve_json`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinSet;
use v4_protocol::ServiceError;

use crate::error::{BusError, CallError};
use crate::headers::Headers;
use crate::message::Subscription;
use crate::{Bus, transfer};

/// What a handler learns about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The subject the request arrived on.
    pub subject: String,
    /// The request's headers (e.g. `traceparent`), without transfer headers.
    pub headers: Headers,
}

impl Bus {
    /// Sends `req` as JSON and decodes the reply; a [`ServiceError`] reply is
    /// [`CallError::Service`]. Bodies over one message's budget are chunked both ways; a body
    /// over the transfer limit is [`BusError::PayloadTooLarge`].
    pub async fn request_json<Req, Rep>(
        &self,
        subject: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, CallError>
    where
        Req: Serialize + ?Sized,
        Rep: DeserializeOwned,
    {
        self.request_json_with_headers(subject, Headers::new(), req, timeout)
            .await
    }

    /// [`Bus::request_json`] with request headers (tracing).
    pub async fn request_json_with_headers<Req, Rep>(
        &self,
        subject: &str,
        headers: Headers,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, CallError>
    where
        Req: Serialize + ?Sized,
        Rep: DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Encode {
            subject: subject.to_string(),
            message: e.to_string(),
        })?;
        let reply = transfer::call(self, subject, headers, body, timeout).await?;
        serde_json::from_slice(&reply).map_err(|e| CallError::BadReply {
            subject: subject.to_string(),
            message: format!("cannot decode reply: {e}"),
        })
    }

    /// Serves `subject` (in queue group `group`, if given) with a JSON handler, each request on
    /// its own task. A body that does not decode as `Req` is answered with a `bad_request`
    /// error; a handler's `Err` is sent as the typed error reply. Returns once the
    /// subscription is live; [`Server::drain`] stops it.
    pub async fn serve_json<Req, Rep, F, Fut>(
        &self,
        subject: &str,
        group: Option<&str>,
        handler: F,
    ) -> Result<Server, BusError>
    where
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, ServiceError>> + Send + 'static,
    {
        let sub = match group {
            Some(g) => self.queue_subscribe(subject, g).await?,
            None => self.subscribe(subject).await?,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let bus = self.clone();
        let handler = Arc::new(handler);
        let task = tokio::spawn(run(bus, sub, stop_rx, handler));
        Ok(Server {
            subject: subject.to_string(),
            stop: stop_tx,
            task,
        })
    }
}

/// A running [`Bus::serve_json`] loop. Dropping it stops receiving requests (in-flight ones
/// still finish); [`Server::drain`] does the same and waits for them.
pub struct Server {
    subject: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Stops the subscription, answers the requests already received, waits for every
    /// in-flight request (including chunked transfers) to finish.
    pub async fn drain(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run<Req, Rep, F, Fut>(
    bus: Bus,
    mut sub: Subscription,
    mut stop: watch::Receiver<bool>,
    handler: Arc<F>,
) where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, ServiceError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    let bus = bus.clone();
                    let handler = handler.clone();
                    tasks.spawn(async move {
                        let subject = msg.subject.clone();
                        let serve = |headers, body: bytes::Bytes| {
                            call_handler(handler, subject, headers, body)
                        };
                        transfer::serve_message(bus.clone(), msg, serve).await;
                    });
                }
                None => break,
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Buffered requests are still delivered, then the stream ends.
                let _ = sub.unsubscribe().await;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    // The unsubscription has reached the server: requests now see "no responders".
    let _ = bus.flush().await;
}

async fn call_handler<Req, Rep, F, Fut>(
    handler: Arc<F>,
    subject: String,
    headers: Headers,
    body: bytes::Bytes,
) -> Result<Vec<u8>, ServiceError>
where
    Req: DeserializeOwned,
    Rep: Serialize,
    F: Fn(Req, RequestContext) -> Fut,
    Fut: Future<Output = Result<Rep, ServiceError>>,
{
    let req: Req = serde_json::from_slice(&body).map_err(|e| {
        ServiceError::bad_request(format!("invalid request body for {subject}: {e}"))
    })?;
    let rep = handler(req, RequestContext { subject, headers }).await?;
    serde_json::to_vec(&rep)
        .map_err(|e| ServiceError::internal(format!("cannot encode reply: {e}")))
}
