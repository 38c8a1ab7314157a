//! [`Message`] and [`Subscription`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::error::BusError;
use crate::headers::Headers;
use crate::inproc::InProcSubscriber;

/// A received (or published) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    /// Where a reply goes ([`crate::Bus::respond`]); `None` for a plain publish.
    pub reply: Option<String>,
    pub headers: Headers,
    pub payload: Bytes,
}

impl Message {
    /// `strip`: the namespace prefix (`"<ns>."`) to remove from the subject.
    pub(crate) fn from_nats(m: async_nats::Message, strip: Option<&str>) -> Message {
        let subject = m.subject.to_string();
        Message {
            subject: unscope(subject, strip),
            reply: m.reply.map(|r| r.to_string()),
            headers: Headers::from_nats(m.headers.as_ref()),
            payload: m.payload,
        }
    }
}

fn unscope(subject: String, strip: Option<&str>) -> String {
    match strip.and_then(|p| subject.strip_prefix(p)) {
        Some(rest) => rest.to_string(),
        None => subject,
    }
}

pub(crate) enum SubInner {
    Nats(async_nats::Subscriber),
    InProc(InProcSubscriber),
}

/// A stream of the messages of one subscription (plain or queue group). Dropping it
/// unsubscribes; [`Subscription::unsubscribe`] stops delivery but lets buffered messages be
/// read to the end of the stream (a drain).
pub struct Subscription {
    pub(crate) inner: SubInner,
    pub(crate) subject: String,
    /// The namespace prefix removed from received subjects.
    pub(crate) strip: Option<String>,
}

impl Subscription {
    /// The subject (pattern) subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Stops new deliveries. The stream then yields what is already buffered and ends.
    pub async fn unsubscribe(&mut self) -> Result<(), BusError> {
        match &mut self.inner {
            SubInner::Nats(s) => s
                .unsubscribe()
                .await
                .map_err(|e| BusError::Nats(e.to_string())),
            SubInner::InProc(s) => {
                s.unsubscribe();
                Ok(())
            }
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        let strip = this.strip.as_deref();
        match &mut this.inner {
            SubInner::Nats(s) => loop {
                match Pin::new(&mut *s).poll_next(cx) {
                    // Status messages (e.g. "no responders") are client-internal.
                    Poll::Ready(Some(m)) if m.status.is_some() => continue,
                    Poll::Ready(Some(m)) => {
                        return Poll::Ready(Some(Message::from_nats(m, strip)));
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
            SubInner::InProc(s) => s.poll_recv(cx).map(|m| {
                m.map(|mut m| {
                    m.subject = unscope(std::mem::take(&mut m.subject), strip);
                    m
                })
            }),
        }
    }
}
