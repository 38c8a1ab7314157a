//! The tokenizer service: every subject of `v4_protocol::subject::tokenizer`, served over a
//! [`v4_bus::Bus`] (NATS in the mesh, in process in the all-in-one binary), and
//! [`TokenizerClient`], its typed client.
//!
//! * Stateless requests (chat/text encoding, counting, decoding, info) are served in the queue
//!   group [`QUEUE_GROUP`], so instances share the load; the CPU work runs on blocking threads,
//!   at most `max_in_flight` at once (beyond that: `overloaded`).
//! * Streaming decode sessions live in an actor on a dedicated thread. A session is pinned to
//!   the instance that opened it: `DecodeOpened` names the instance's own feed and close
//!   subjects (`v4.v1.tokenizer.session.<instance>.{feed,close}`), which only that instance
//!   subscribes to. Idle sessions expire after `session_ttl`.
//! * [`ServiceHandle::drain`] stops every subscription, answers the requests already received,
//!   and waits for them.

mod client;
mod handlers;
mod sessions;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use v4_bus::{Bus, BusError, RequestContext, Server};
use v4_protocol::ServiceError;
use v4_protocol::subject::{self, tokenizer as subjects};
use v4_protocol::tokenizer::{
    CountTokensReply, CountTokensRequest, DecodeClose, DecodeFeed, DecodeIdsRequest, DecodeOpen,
    EncodeChatRequest, EncodeTextRequest, InfoRequest,
};

use crate::Tokenizer;
pub use client::{DecodeSession, TokenizerClient};
use sessions::{SessionConfig, Sessions};
pub use settings::TokenizerSettings;
pub use subjects::QUEUE_GROUP;

/// Settings of one service instance.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Instance name; a random suffix makes the instance id unique (`<name>-<8 hex>`).
    pub instance_name: String,
    /// A decode session without a feed for this long is dropped.
    pub session_ttl: Duration,
    /// Open decode sessions per instance; beyond that, opening is `overloaded`.
    pub max_sessions: usize,
    /// Stateless requests computed at once; beyond that, `overloaded`.
    pub max_in_flight: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            instance_name: "tokenizer".to_string(),
            session_ttl: Duration::from_secs(300),
            max_sessions: 100_000,
            max_in_flight: 256,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("invalid instance id: {0}")]
    Instance(#[from] subject::SubjectError),
    #[error("cannot start the decode session thread: {0}")]
    Thread(#[from] std::io::Error),
}

struct Inner {
    tok: Arc<Tokenizer>,
    instance: String,
    options: ServiceOptions,
    permits: Arc<Semaphore>,
}

/// One tokenizer service instance. Cheap to clone.
#[derive(Clone)]
pub struct TokenizerService {
    inner: Arc<Inner>,
}

impl TokenizerService {
    pub fn new(tokenizer: impl Into<Arc<Tokenizer>>, options: ServiceOptions) -> TokenizerService {
        let instance = format!(
            "{}-{}",
            subject::sanitize_token(&options.instance_name),
            v4_bus::short_token()
        );
        TokenizerService {
            inner: Arc::new(Inner {
                tok: tokenizer.into(),
                permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
                instance,
                options,
            }),
        }
    }

    /// The unique instance id (a subject token).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.inner.tok
    }

    /// Subscribes to every tokenizer subject on `bus` and serves until
    /// [`ServiceHandle::drain`]. Returns once all subscriptions are live.
    pub async fn serve(&self, bus: &Bus) -> Result<ServiceHandle, ServeError> {
        let feed = subjects::session_feed(self.instance())?;
        let close = subjects::session_close(self.instance())?;
        let sessions = Sessions::start(
            self.inner.tok.clone(),
            SessionConfig {
                instance: self.instance().to_string(),
                feed_subject: feed.to_string(),
                close_subject: close.to_string(),
                ttl: self.inner.options.session_ttl,
                max_sessions: self.inner.options.max_sessions,
            },
        )?;
        let group = Some(QUEUE_GROUP);
        let mut servers = Vec::new();

        let instance = self.instance().to_string();
        servers.push(
            self.stateless(bus, subjects::INFO, move |tok, _: InfoRequest| {
                Ok(handlers::info(tok, &instance))
            })
            .await?,
        );
        servers.push(
            self.stateless(bus, subjects::ENCODE_CHAT, |tok, req: EncodeChatRequest| {
                handlers::encode_chat(tok, &req)
            })
            .await?,
        );
        servers.push(
            self.stateless(bus, subjects::ENCODE_TEXT, |tok, req: EncodeTextRequest| {
                Ok(handlers::encode_text(tok, &req))
            })
            .await?,
        );
        servers.push(
            self.stateless(
                bus,
                subjects::COUNT_TOKENS,
                |tok, req: CountTokensRequest| {
                    handlers::count_tokens(tok, &req).map(|tokens| CountTokensReply { tokens })
                },
            )
            .await?,
        );
        servers.push(
            self.stateless(bus, subjects::DECODE_IDS, |tok, req: DecodeIdsRequest| {
                handlers::decode_ids(tok, &req)
            })
            .await?,
        );
        let s = sessions.clone();
        let open = move |req: DecodeOpen, _: RequestContext| {
            let s = s.clone();
            async move { s.open(req).await }
        };
        servers.push(bus.serve_json(subjects::DECODE_OPEN, group, open).await?);
        let s = sessions.clone();
        let feed_fn = move |req: DecodeFeed, _: RequestContext| {
            let s = s.clone();
            async move { s.feed(req).await }
        };
        servers.push(bus.serve_json(feed.as_str(), None, feed_fn).await?);
        let s = sessions.clone();
        let close_fn = move |req: DecodeClose, _: RequestContext| {
            let s = s.clone();
            async move { s.close(req.session).await }
        };
        servers.push(bus.serve_json(close.as_str(), None, close_fn).await?);

        Ok(ServiceHandle {
            instance: self.instance().to_string(),
            servers,
            sessions,
        })
    }

    /// Serves one stateless subject in the queue group: decode the request, run `f` on a
    /// blocking thread (bounded by `max_in_flight`), encode the reply.
    async fn stateless<Req, Rep, F>(
        &self,
        bus: &Bus,
        subject: &str,
        f: F,
    ) -> Result<Server, BusError>
    where
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        F: Fn(&Tokenizer, Req) -> Result<Rep, ServiceError> + Send + Sync + 'static,
    {
        let inner = self.inner.clone();
        let f = Arc::new(f);
        let handler = move |req: Req, _ctx: RequestContext| {
            let inner = inner.clone();
            let f = f.clone();
            blocking(inner, move |tok| f(tok, req))
        };
        bus.serve_json(subject, Some(QUEUE_GROUP), handler).await
    }
}

/// Runs `f` on a blocking thread, if one of the `max_in_flight` permits is free.
async fn blocking<T, F>(inner: Arc<Inner>, f: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce(&Tokenizer) -> Result<T, ServiceError> + Send + 'static,
{
    let permit = inner.permits.clone().try_acquire_owned().map_err(|_| {
        ServiceError::overloaded(format!(
            "tokenizer instance {} is at its limit of {} requests in flight",
            inner.instance, inner.options.max_in_flight
        ))
    })?;
    let tok = inner.tok.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&tok)
    })
    .await
    .map_err(|e| ServiceError::internal(format!("tokenizer task failed: {e}")))?
}

/// A serving instance.
pub struct ServiceHandle {
    instance: String,
    servers: Vec<Server>,
    sessions: Sessions,
}

impl ServiceHandle {
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Open decode sessions of this instance.
    pub async fn session_count(&self) -> Result<usize, ServiceError> {
        self.sessions.count().await
    }

    /// Stops all subscriptions, finishes the requests already received, and returns when none
    /// is left in flight. Open decode sessions are dropped.
    pub async fn drain(self) {
        futures::future::join_all(self.servers.into_iter().map(Server::drain)).await;
    }
}
