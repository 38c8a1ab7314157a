//! The chunked transfer of `v4_protocol::chunk` on bytes: [`call`] (the requesting side) and
//! [`serve_message`] (the serving side). Bodies within one message's budget go as one plain
//! request and reply; larger ones are split into frames that all reach the same instance.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use v4_protocol::chunk::{
    self, CHUNK_HEADER, ChunkError, ChunkHeader, DOWNLOAD_HEADER, Reassembler, STATUS_ERROR,
    STATUS_HEADER, TRANSFER_HEADER, UPLOAD_HEADER,
};
use v4_protocol::{ErrorKind, ServiceError};

use crate::error::CallError;
use crate::headers::Headers;
use crate::message::{Message, Subscription};
use crate::{Bus, unique_token};

fn frame_headers(index: usize, total: usize, transfer: &str) -> Headers {
    Headers::new()
        .with(
            CHUNK_HEADER,
            ChunkHeader {
                index: index as u32,
                total: total as u32,
            }
            .to_string(),
        )
        .with(TRANSFER_HEADER, transfer)
}

fn is_error(msg: &Message) -> bool {
    msg.headers.get(STATUS_HEADER) == Some(STATUS_ERROR)
}

fn bad_reply(subject: &str, message: impl Into<String>) -> CallError {
    CallError::BadReply {
        subject: subject.to_string(),
        message: message.into(),
    }
}

/// A reply that is a [`ServiceError`] becomes `Err`.
fn check_error(subject: &str, msg: &Message) -> Result<(), CallError> {
    if !is_error(msg) {
        return Ok(());
    }
    match serde_json::from_slice::<ServiceError>(&msg.payload) {
        Ok(e) => Err(CallError::Service(e)),
        Err(e) => Err(bad_reply(subject, format!("unreadable error reply: {e}"))),
    }
}

/// Sends `body` to `subject` and returns the reply body, chunking both ways as needed.
pub(crate) async fn call(
    bus: &Bus,
    subject: &str,
    headers: Headers,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, CallError> {
    let budget = bus.budget();
    budget
        .check_transfer(subject, body.len())
        .map_err(crate::BusError::from)?;
    let reply = if body.len() <= budget.payload_limit() {
        bus.request(subject, &headers, Bytes::from(body), timeout)
            .await?
    } else {
        upload(bus, subject, headers, body, timeout).await?
    };
    download(bus, subject, reply, timeout).await
}

async fn upload(
    bus: &Bus,
    subject: &str,
    mut headers: Headers,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Message, CallError> {
    let body = Bytes::from(body);
    let frames: Vec<Bytes> = chunk::split(&body, bus.budget().payload_limit())
        .into_iter()
        .map(|f| body.slice_ref(f))
        .collect();
    let total = frames.len();
    let transfer = unique_token();
    for (k, v) in frame_headers(0, total, &transfer).iter() {
        headers.insert(k, v);
    }
    let first = bus
        .request(subject, &headers, frames[0].clone(), timeout)
        .await?;
    check_error(subject, &first)?;
    let Some(target) = first.headers.get(UPLOAD_HEADER).map(String::from) else {
        return Err(bad_reply(
            subject,
            format!("the service did not accept a chunked request (no {UPLOAD_HEADER} header)"),
        ));
    };
    let mut last = first;
    for (i, frame) in frames.iter().enumerate().skip(1) {
        let h = frame_headers(i, total, &transfer);
        last = bus.request(&target, &h, frame.clone(), timeout).await?;
        if i + 1 < total {
            check_error(subject, &last)?;
        }
    }
    Ok(last)
}

/// The reply body of `reply`, fetching the remaining frames of a chunked reply.
async fn download(
    bus: &Bus,
    subject: &str,
    reply: Message,
    timeout: Duration,
) -> Result<Bytes, CallError> {
    check_error(subject, &reply)?;
    let Some(header) = reply.headers.get(CHUNK_HEADER) else {
        return Ok(reply.payload);
    };
    let transfer_err = |source: ChunkError| CallError::Transfer {
        subject: subject.to_string(),
        source,
    };
    let header: ChunkHeader = header.parse().map_err(transfer_err)?;
    let (Some(transfer), Some(source)) = (
        reply.headers.get(TRANSFER_HEADER),
        reply.headers.get(DOWNLOAD_HEADER),
    ) else {
        return Err(bad_reply(
            subject,
            format!("chunked reply without {TRANSFER_HEADER} or {DOWNLOAD_HEADER}"),
        ));
    };
    if header.index != 0 {
        return Err(bad_reply(
            subject,
            "a chunked reply must start with frame 0",
        ));
    }
    let mut parts = Reassembler::new(transfer, header.total, bus.budget().max_transfer)
        .map_err(transfer_err)?;
    parts
        .push(transfer, header, &reply.payload)
        .map_err(transfer_err)?;
    for i in 1..header.total as usize {
        let want = frame_headers(i, header.total as usize, transfer);
        let frame = bus.request(source, &want, Bytes::new(), timeout).await?;
        check_error(subject, &frame)?;
        let h: ChunkHeader = frame
            .headers
            .get(CHUNK_HEADER)
            .unwrap_or_default()
            .parse()
            .map_err(transfer_err)?;
        let t = frame.headers.get(TRANSFER_HEADER).unwrap_or_default();
        parts.push(t, h, &frame.payload).map_err(transfer_err)?;
    }
    parts.finish().map(Bytes::from).map_err(transfer_err)
}

/// What the serving side needs to know about one request.
pub(crate) struct Incoming {
    /// Headers of the request (of its first frame), without the transfer headers.
    pub headers: Headers,
    pub body: Bytes,
    /// The message to answer.
    pub reply_to: Message,
}

fn error_bytes(e: &ServiceError) -> Bytes {
    // A ServiceError always serializes (strings and an enum).
    Bytes::from(serde_json::to_vec(e).unwrap_or_default())
}

/// Answers `to` with a service error (best effort: the requester may be gone).
pub(crate) async fn respond_error(bus: &Bus, to: &Message, e: &ServiceError) {
    let h = Headers::new().with(STATUS_HEADER, STATUS_ERROR);
    let _ = bus.respond(to, &h, error_bytes(e)).await;
}

/// Serves one request message: reassembles a chunked request, runs `handler`, and answers
/// (chunking a large reply). Never fails: problems are answered as errors or, when the
/// requester is gone, dropped.
pub(crate) async fn serve_message<F, Fut>(bus: Bus, msg: Message, handler: F)
where
    F: FnOnce(Headers, Bytes) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, ServiceError>>,
{
    let incoming = match receive(&bus, msg).await {
        Ok(Some(incoming)) => incoming,
        Ok(None) => return,
        Err((to, e)) => {
            respond_error(&bus, &to, &e).await;
            return;
        }
    };
    let to = incoming.reply_to;
    match handler(incoming.headers, incoming.body).await {
        Ok(body) => send_reply(&bus, &to, body).await,
        Err(e) => respond_error(&bus, &to, &e).await,
    }
}

type ReceiveError = (Message, ServiceError);

fn transfer_error(e: ChunkError) -> ServiceError {
    let kind = match e {
        ChunkError::TooLarge { .. } => ErrorKind::PayloadTooLarge,
        _ => ErrorKind::BadRequest,
    };
    ServiceError::new(kind, format!("chunked request: {e}"))
}

/// The whole request: the message itself, or all frames of a chunked request.
/// `Ok(None)`: nothing to answer (the upload was abandoned).
async fn receive(bus: &Bus, msg: Message) -> Result<Option<Incoming>, ReceiveError> {
    let Some(header) = msg.headers.get(CHUNK_HEADER) else {
        return Ok(Some(Incoming {
            headers: msg.headers.clone(),
            body: msg.payload.clone(),
            reply_to: msg,
        }));
    };
    let header: ChunkHeader = match header.parse() {
        Ok(h) => h,
        Err(e) => return Err((msg, transfer_error(e))),
    };
    let transfer = msg
        .headers
        .get(TRANSFER_HEADER)
        .unwrap_or_default()
        .to_string();
    if header.index != 0 || transfer.is_empty() {
        let e = ServiceError::bad_request(format!(
            "chunked request must start with frame 0 and carry {TRANSFER_HEADER}"
        ));
        return Err((msg, e));
    }
    let mut parts = match Reassembler::new(&transfer, header.total, bus.budget().max_transfer) {
        Ok(p) => p,
        Err(e) => return Err((msg, transfer_error(e))),
    };
    if let Err(e) = parts.push(&transfer, header, &msg.payload) {
        return Err((msg, transfer_error(e)));
    }
    let upload = bus.new_inbox();
    let mut sub = match bus.subscribe(&upload).await {
        Ok(s) => s,
        Err(e) => return Err((msg, ServiceError::internal(e.to_string()))),
    };
    let ack = Headers::new().with(UPLOAD_HEADER, upload.as_str());
    if bus.respond(&msg, &ack, Bytes::new()).await.is_err() {
        return Ok(None);
    }
    let last = collect_frames(bus, &mut sub, &mut parts).await?;
    let _ = sub.unsubscribe().await;
    let Some(last) = last else {
        return Ok(None);
    };
    match parts.finish() {
        Ok(body) => {
            let mut headers = msg.headers;
            for h in [CHUNK_HEADER, TRANSFER_HEADER] {
                headers.remove(h);
            }
            Ok(Some(Incoming {
                headers,
                body: Bytes::from(body),
                reply_to: last,
            }))
        }
        Err(e) => Err((last, transfer_error(e))),
    }
}

/// Reads upload frames until the transfer is complete; returns the last frame (to be answered
/// with the reply), or `None` when the requester stopped sending.
async fn collect_frames(
    bus: &Bus,
    sub: &mut Subscription,
    parts: &mut Reassembler,
) -> Result<Option<Message>, ReceiveError> {
    loop {
        let frame = match tokio::time::timeout(bus.transfer_timeout(), sub.next()).await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return Ok(None),
        };
        let header = frame.headers.get(CHUNK_HEADER).unwrap_or_default();
        let transfer = frame.headers.get(TRANSFER_HEADER).unwrap_or_default();
        let pushed = header
            .parse::<ChunkHeader>()
            .and_then(|h| parts.push(transfer, h, &frame.payload));
        match pushed {
            Ok(true) => return Ok(Some(frame)),
            Ok(false) => {
                if bus
                    .respond(&frame, &Headers::new(), Bytes::new())
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            Err(e) => return Err((frame, transfer_error(e))),
        }
    }
}

/// Answers `to` with `body`, as a chunked download when it exceeds one message.
async fn send_reply(bus: &Bus, to: &Message, body: Vec<u8>) {
    let budget = bus.budget();
    if body.len() <= budget.payload_limit() {
        let _ = bus.respond(to, &Headers::new(), Bytes::from(body)).await;
        return;
    }
    if let Err(e) = budget.check_transfer(&to.subject, body.len()) {
        let e = ServiceError::new(ErrorKind::PayloadTooLarge, format!("reply: {e}"));
        respond_error(bus, to, &e).await;
        return;
    }
    let body = Bytes::from(body);
    let frames: Vec<Bytes> = chunk::split(&body, budget.payload_limit())
        .into_iter()
        .map(|f| body.slice_ref(f))
        .collect();
    let total = frames.len();
    let transfer = unique_token();
    let source = bus.new_inbox();
    let mut sub = match bus.subscribe(&source).await {
        Ok(s) => s,
        Err(e) => {
            respond_error(bus, to, &ServiceError::internal(e.to_string())).await;
            return;
        }
    };
    let first = frame_headers(0, total, &transfer).with(DOWNLOAD_HEADER, source.as_str());
    if bus.respond(to, &first, frames[0].clone()).await.is_err() {
        return;
    }
    serve_frames(bus, &mut sub, &frames, &transfer).await;
    let _ = sub.unsubscribe().await;
}

/// Answers frame requests until every frame after the first was sent once, or the requester
/// goes quiet.
async fn serve_frames(bus: &Bus, sub: &mut Subscription, frames: &[Bytes], transfer: &str) {
    let total = frames.len();
    let mut sent = vec![false; total];
    sent[0] = true;
    while sent.iter().any(|s| !s) {
        let req = match tokio::time::timeout(bus.transfer_timeout(), sub.next()).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let wanted = req
            .headers
            .get(CHUNK_HEADER)
            .unwrap_or_default()
            .parse::<ChunkHeader>();
        match wanted {
            Ok(h) if h.total as usize == total => {
                let i = h.index as usize;
                let headers = frame_headers(i, total, transfer);
                let _ = bus.respond(&req, &headers, frames[i].clone()).await;
                sent[i] = true;
            }
            Ok(_) => {
                let e = ServiceError::bad_request(format!("this download has {total} frames"));
                respond_error(bus, &req, &e).await;
            }
            Err(e) => respond_error(bus, &req, &transfer_error(e)).await,
        }
    }
}
