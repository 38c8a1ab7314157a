//! One message bus for the mesh and for the all-in-one binary: [`Bus`] is either a NATS
//! connection or an [`InProcBus`], with the same API and the same semantics, so services run
//! unchanged over both.
//!
//! * Raw messaging: [`Bus::publish`], [`Bus::request`] (timeout and "no responders" are typed
//!   errors), [`Bus::subscribe`] / [`Bus::queue_subscribe`] returning a [`Subscription`]
//!   stream of [`Message`]s, and [`Bus::respond`] to answer one. Headers ([`Headers`]) carry
//!   tracing (`traceparent`) and protocol metadata.
//! * Every message is checked against the protocol's [`SizeBudget`] before it is sent: an
//!   oversized one is [`BusError::PayloadTooLarge`], never a timeout.
//! * Typed calls: [`Bus::request_json`] and [`Bus::serve_json`] exchange serde JSON, answer
//!   failures with a typed [`ServiceError`], and carry bodies larger than one message with the
//!   chunked transfer of [`v4_protocol::chunk`] (transparently for both sides).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use v4_bus::Bus;
//! use v4_protocol::ServiceError;
//!
//! let bus = Bus::in_process(); // or Bus::connect("nats://127.0.0.1:4222", "gateway").await?
//! let server = bus
//!     .serve_json("demo.echo", Some("demo"), |req: String, _ctx| async move {
//!         Ok::<_, ServiceError>(req.to_uppercase())
//!     })
//!     .await?;
//! let reply: String = bus.request_json("demo.echo", &"hi", Duration::from_secs(1)).await?;
//! assert_eq!(reply, "HI");
//! server.drain().await;
//! # Ok(()) }
//! ```

mod error;
mod headers;
mod ids;
mod inproc;
mod json;
mod message;
mod signal;
pub mod subject;
mod transfer;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use error::{BusError, CallError};
pub use headers::Headers;
pub use ids::{short_token, unique_token};
pub use inproc::InProcBus;
pub use json::{RequestContext, Server};
pub use message::{Message, Subscription};
pub use signal::shutdown_signal;
pub use v4_protocol::{PayloadTooLarge, ServiceError, SizeBudget};

use message::SubInner;

/// How long a chunked transfer waits for its next frame before giving up.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Transport {
    Nats(async_nats::Client),
    InProc(InProcBus),
}

/// A cloneable bus handle: NATS or in process.
#[derive(Clone)]
pub struct Bus {
    transport: Transport,
    budget: SizeBudget,
    transfer_timeout: Duration,
    /// Prepended to every subject this handle publishes, requests or subscribes to.
    namespace: Option<Arc<str>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("kind", &self.kind())
            .field("namespace", &self.namespace)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Bus {
    /// A fresh in-process bus (clones of the returned handle share it).
    pub fn in_process() -> Bus {
        Bus::from_in_process(InProcBus::new())
    }

    pub fn from_in_process(bus: InProcBus) -> Bus {
        Bus {
            transport: Transport::InProc(bus),
            budget: SizeBudget::default(),
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            namespace: None,
        }
    }

    /// Connects to NATS at `url`; `name` identifies the connection in the server's monitoring.
    /// Fails (does not retry) if the server is unreachable.
    pub async fn connect(url: &str, name: &str) -> Result<Bus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(Bus::from_nats(client))
    }

    /// Wraps a connected client; the budget follows the server's `max_payload`.
    pub fn from_nats(client: async_nats::Client) -> Bus {
        let budget = SizeBudget::with_max_payload(client.max_payload());
        Bus {
            transport: Transport::Nats(client),
            budget,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            namespace: None,
        }
    }

    /// `"nats"` or `"in-process"`.
    pub fn kind(&self) -> &'static str {
        match self.transport {
            Transport::Nats(_) => "nats",
            Transport::InProc(_) => "in-process",
        }
    }

    /// The size budget every message is checked against.
    pub fn budget(&self) -> SizeBudget {
        self.budget
    }

    /// This handle with another budget. On NATS, `max_payload` never exceeds the server's.
    pub fn with_budget(mut self, budget: SizeBudget) -> Bus {
        let mut budget = budget;
        if let Transport::Nats(c) = &self.transport {
            budget.max_payload = budget.max_payload.min(c.max_payload());
        }
        self.budget = budget;
        self
    }

    /// How long either side of a chunked transfer waits for the next frame.
    pub fn transfer_timeout(&self) -> Duration {
        self.transfer_timeout
    }

    pub fn with_transfer_timeout(mut self, timeout: Duration) -> Bus {
        self.transfer_timeout = timeout;
        self
    }

    /// This handle inside namespace `ns` (one or more subject tokens): every subject it
    /// publishes, requests or subscribes to gets the prefix `<ns>.`, and received subjects are
    /// reported without it. Reply subjects are absolute. Handles in different namespaces never
    /// see each other's messages: several stacks (or test runs) can share one NATS server.
    pub fn with_namespace(mut self, ns: &str) -> Result<Bus, BusError> {
        subject::check_publish(ns)?;
        self.namespace = Some(Arc::from(ns));
        Ok(self)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The NATS client, when this bus is NATS (JetStream users need it).
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        match &self.transport {
            Transport::Nats(c) => Some(c),
            Transport::InProc(_) => None,
        }
    }

    /// `subject` as it appears on the wire (with this handle's namespace).
    pub fn wire_subject(&self, subject: &str) -> String {
        self.scoped(subject).into_owned()
    }

    fn scoped<'a>(&self, subject: &'a str) -> Cow<'a, str> {
        match &self.namespace {
            Some(ns) => Cow::Owned(format!("{ns}.{subject}")),
            None => Cow::Borrowed(subject),
        }
    }

    /// A unique subject for replies (`_INBOX.…`).
    pub fn new_inbox(&self) -> String {
        match &self.transport {
            Transport::Nats(c) => c.new_inbox(),
            Transport::InProc(_) => format!("_INBOX.{}", unique_token()),
        }
    }

    fn check(&self, subject: &str, headers: &Headers, payload: &Bytes) -> Result<(), BusError> {
        subject::check_publish(subject)?;
        headers.validate()?;
        self.budget
            .check(subject, payload.len(), headers.wire_len())
            .map_err(BusError::from)
    }

    /// Publishes one message (no reply expected).
    pub async fn publish(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.check(subject, headers, &payload)?;
        self.publish_raw(&self.scoped(subject), None, headers, payload)
            .await
    }

    /// Publishes to an absolute subject (budget and subject already checked).
    async fn publish_raw(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: &Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match &self.transport {
            Transport::Nats(c) => {
                let subject = subject.to_string();
                let result = match (reply, headers.is_empty()) {
                    (None, true) => c.publish(subject, payload).await,
                    (None, false) => {
                        c.publish_with_headers(subject, headers.to_nats()?, payload)
                            .await
                    }
                    (Some(r), true) => c.publish_with_reply(subject, r.to_string(), payload).await,
                    (Some(r), false) => {
                        c.publish_with_reply_and_headers(
                            subject,
                            r.to_string(),
                            headers.to_nats()?,
                            payload,
                        )
                        .await
                    }
                };
                result.map_err(|e| BusError::Nats(e.to_string()))
            }
            Transport::InProc(b) => {
                b.publish(Message {
                    subject: subject.to_string(),
                    reply: reply.map(String::from),
                    headers: headers.clone(),
                    payload,
                });
                Ok(())
            }
        }
    }

    /// Answers `msg` on its reply subject.
    pub async fn respond(
        &self,
        msg: &Message,
        headers: &Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let reply = msg
            .reply
            .as_deref()
            .ok_or_else(|| BusError::NoReplySubject {
                subject: msg.subject.clone(),
            })?;
        self.check(reply, headers, &payload)?;
        self.publish_raw(reply, None, headers, payload).await
    }

    /// Sends a request and waits up to `timeout` for the first reply.
    pub async fn request(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        self.check(subject, headers, &payload)?;
        let timed_out = || BusError::Timeout {
            subject: subject.to_string(),
            timeout,
        };
        let no_responders = || BusError::NoResponders {
            subject: subject.to_string(),
        };
        let target = self.scoped(subject).into_owned();
        match &self.transport {
            Transport::Nats(c) => {
                let mut req = async_nats::Request::new()
                    .payload(payload)
                    .timeout(Some(timeout));
                if !headers.is_empty() {
                    req = req.headers(headers.to_nats()?);
                }
                match c.send_request(target, req).await {
                    Ok(m) => Ok(Message::from_nats(m, None)),
                    Err(e) => Err(match e.kind() {
                        async_nats::RequestErrorKind::TimedOut => timed_out(),
                        async_nats::RequestErrorKind::NoResponders => no_responders(),
                        _ => BusError::Nats(e.to_string()),
                    }),
                }
            }
            Transport::InProc(b) => {
                let inbox = self.new_inbox();
                let mut sub = b.subscribe(&inbox, None);
                let delivered = b.publish(Message {
                    subject: target,
                    reply: Some(inbox),
                    headers: headers.clone(),
                    payload,
                });
                if delivered == 0 {
                    return Err(no_responders());
                }
                let next = std::future::poll_fn(|cx| sub.poll_recv(cx));
                match tokio::time::timeout(timeout, next).await {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(BusError::Closed),
                    Err(_) => Err(timed_out()),
                }
            }
        }
    }

    /// Subscribes to `subject` (wildcards allowed). When this returns the subscription is
    /// live (on NATS the server has confirmed it).
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.subscribe_impl(subject, None).await
    }

    /// Joins queue group `group` on `subject`: each message goes to one member of the group.
    pub async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<Subscription, BusError> {
        self.subscribe_impl(subject, Some(group)).await
    }

    async fn subscribe_impl(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        subject::check_pattern(subject)?;
        if let Some(g) = group {
            subject::check_queue_group(g)?;
        }
        let pattern = self.scoped(subject).into_owned();
        let inner = match &self.transport {
            Transport::Nats(c) => {
                let s = match group {
                    None => c.subscribe(pattern).await,
                    Some(g) => c.queue_subscribe(pattern, g.to_string()).await,
                }
                .map_err(|e| BusError::Nats(e.to_string()))?;
                round_trip(c).await?;
                SubInner::Nats(s)
            }
            Transport::InProc(b) => SubInner::InProc(b.subscribe(&pattern, group)),
        };
        Ok(Subscription {
            inner,
            subject: subject.to_string(),
            strip: self.namespace.as_ref().map(|ns| format!("{ns}.")),
        })
    }

    /// Waits until the server has processed everything sent on this connection so far
    /// (publishes, subscriptions, unsubscriptions); a no-op in process.
    pub async fn flush(&self) -> Result<(), BusError> {
        match &self.transport {
            Transport::Nats(c) => round_trip(c).await,
            Transport::InProc(_) => Ok(()),
        }
    }
}

/// A request to a subject nobody listens on: the server answers "no responders" after it has
/// processed every earlier operation of this connection. (`async_nats::Client::flush` only
/// writes the socket, so a subscription may not be registered yet when it returns.)
async fn round_trip(c: &async_nats::Client) -> Result<(), BusError> {
    let probe = async_nats::Request::new().timeout(Some(Duration::from_secs(10)));
    match c.send_request(c.new_inbox(), probe).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(BusError::Nats(format!("server round trip failed: {e}"))),
    }
}
