//! Streaming decode sessions: an actor on a dedicated thread owns every session of this
//! instance (detokenizer state + streaming parser) and is reached through typed commands with
//! `oneshot` replies over a bounded channel.
//!
//! * The thread does the CPU work (detokenizing, parsing), so async tasks never block on it.
//! * A full command channel is `overloaded`; a gone actor (shutting down) is `unavailable`; a
//!   dropped reply channel means the requester gave up, and is ignored.
//! * A session idle for longer than the TTL is gone: feeding it is `not_found`, and a periodic
//!   sweep frees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use v4_protocol::ServiceError;
use v4_protocol::tokenizer::{
    DecodeClosed, DecodeDeltas, DecodeFeed, DecodeOpen, DecodeOpened, ToolCallDelta,
};

use crate::Tokenizer;
use crate::chat::stream_parse::{Delta, StreamParser};
use crate::stream::DecodeStream;

/// Commands queued for the actor before senders are told it is overloaded.
const COMMAND_QUEUE: usize = 4096;

/// Fixed facts of the instance, for sessions it opens.
pub(crate) struct SessionConfig {
    pub instance: String,
    pub feed_subject: String,
    pub close_subject: String,
    pub ttl: Duration,
    pub max_sessions: usize,
}

enum Command {
    Open(
        DecodeOpen,
        oneshot::Sender<Result<DecodeOpened, ServiceError>>,
    ),
    Feed(
        DecodeFeed,
        oneshot::Sender<Result<DecodeDeltas, ServiceError>>,
    ),
    Close(String, oneshot::Sender<DecodeClosed>),
    Count(oneshot::Sender<usize>),
}

/// The handle to the session actor; clones share it. The thread ends when the last handle is
/// dropped.
#[derive(Clone)]
pub(crate) struct Sessions {
    tx: SyncSender<Command>,
}

impl Sessions {
    /// Starts the actor thread.
    pub(crate) fn start(tok: Arc<Tokenizer>, config: SessionConfig) -> std::io::Result<Sessions> {
        let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        std::thread::Builder::new()
            .name(format!("decode-sessions-{}", config.instance))
            .spawn(move || Actor::new(tok, config).run(rx))?;
        Ok(Sessions { tx })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ServiceError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(make(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ServiceError::overloaded(
                    "too many decode requests queued on this tokenizer instance",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServiceError::unavailable(
                    "the tokenizer instance is shutting down",
                ));
            }
        }
        rx.await
            .map_err(|_| ServiceError::unavailable("the decode session actor stopped"))
    }

    pub(crate) async fn open(&self, req: DecodeOpen) -> Result<DecodeOpened, ServiceError> {
        self.call(|r| Command::Open(req, r)).await?
    }

    pub(crate) async fn feed(&self, req: DecodeFeed) -> Result<DecodeDeltas, ServiceError> {
        self.call(|r| Command::Feed(req, r)).await?
    }

    pub(crate) async fn close(&self, session: String) -> Result<DecodeClosed, ServiceError> {
        self.call(|r| Command::Close(session, r)).await
    }

    /// Number of live sessions (expired ones not yet swept included).
    pub(crate) async fn count(&self) -> Result<usize, ServiceError> {
        self.call(Command::Count).await
    }
}

struct Session {
    /// The caller's id of the generation, for error messages.
    request_id: String,
    stream: DecodeStream,
    parser: StreamParser,
    next_seq: u64,
    /// The reply to `next_seq - 1`, returned again when that feed is retried.
    last_reply: Option<DecodeDeltas>,
    tokens_fed: u64,
    last_used: Instant,
}

struct Actor {
    tok: Arc<Tokenizer>,
    config: SessionConfig,
    sessions: HashMap<String, Session>,
    next_id: u64,
}

impl Actor {
    fn new(tok: Arc<Tokenizer>, config: SessionConfig) -> Actor {
        Actor {
            tok,
            config,
            sessions: HashMap::new(),
            next_id: 0,
        }
    }

    fn sweep_interval(&self) -> Duration {
        (self.config.ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(10))
    }

    fn run(mut self, rx: Receiver<Command>) {
        let interval = self.sweep_interval();
        let mut last_sweep = Instant::now();
        loop {
            match rx.recv_timeout(interval) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_sweep.elapsed() >= interval {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        // A dropped receiver means the requester gave up: nothing to do.
        match cmd {
            Command::Open(req, reply) => {
                let _ = reply.send(self.open(req));
            }
            Command::Feed(req, reply) => {
                let _ = reply.send(self.feed(req));
            }
            Command::Close(session, reply) => {
                let found = self.sessions.remove(&session).is_some();
                let _ = reply.send(DecodeClosed { session, found });
            }
            Command::Count(reply) => {
                let _ = reply.send(self.sessions.len());
            }
        }
    }

    fn sweep(&mut self) {
        let ttl = self.config.ttl;
        self.sessions.retain(|_, s| s.last_used.elapsed() <= ttl);
    }

    fn open(&mut self, req: DecodeOpen) -> Result<DecodeOpened, ServiceError> {
        if self.sessions.len() >= self.config.max_sessions {
            self.sweep();
            if self.sessions.len() >= self.config.max_sessions {
                return Err(ServiceError::overloaded(format!(
                    "this tokenizer instance has {} open decode sessions (the maximum)",
                    self.sessions.len()
                )));
            }
        }
        self.next_id += 1;
        let session = format!("{}-{}", v4_bus::short_token(), self.next_id);
        let prefix = req
            .tool_call_id_prefix
            .clone()
            .unwrap_or_else(|| format!("call_{session}_"));
        self.sessions.insert(
            session.clone(),
            Session {
                request_id: req.request_id,
                stream: DecodeStream::new(req.skip_special_tokens),
                parser: StreamParser::with_id_prefix(req.thinking, prefix),
                next_seq: 0,
                last_reply: None,
                tokens_fed: 0,
                last_used: Instant::now(),
            },
        );
        Ok(DecodeOpened {
            session,
            feed_subject: self.config.feed_subject.clone(),
            close_subject: self.config.close_subject.clone(),
            instance: self.config.instance.clone(),
            idle_ttl_ms: self.config.ttl.as_millis() as u64,
        })
    }

    fn not_found(&self, session: &str) -> ServiceError {
        ServiceError::not_found(format!(
            "decode session {session:?} does not exist on instance {} (unknown, closed, finished, \
             or expired after {} ms idle)",
            self.config.instance,
            self.config.ttl.as_millis()
        ))
        .with_param("session")
    }

    fn feed(&mut self, req: DecodeFeed) -> Result<DecodeDeltas, ServiceError> {
        let ttl = self.config.ttl;
        let expired = match self.sessions.get(&req.session) {
            None => true,
            Some(s) => s.last_used.elapsed() > ttl,
        };
        if expired {
            self.sessions.remove(&req.session);
            return Err(self.not_found(&req.session));
        }
        let tok = self.tok.clone();
        let Some(s) = self.sessions.get_mut(&req.session) else {
            return Err(self.not_found(&req.session));
        };
        if req.seq + 1 == s.next_seq
            && let Some(last) = &s.last_reply
        {
            s.last_used = Instant::now();
            return Ok(last.clone());
        }
        if req.seq != s.next_seq {
            return Err(ServiceError::bad_request(format!(
                "feed seq {} out of order: session {} (request {}) expects seq {}",
                req.seq, req.session, s.request_id, s.next_seq
            ))
            .with_param("seq"));
        }
        if let Err(e) = tok.check_ids(req.token_ids.as_slice()) {
            return Err(ServiceError::bad_request(e.to_string()).with_param("token_ids"));
        }
        s.last_used = Instant::now();
        match step(&tok, s, &req) {
            Ok(deltas) if deltas.finished => {
                self.sessions.remove(&req.session);
                Ok(deltas)
            }
            Ok(deltas) => {
                s.next_seq += 1;
                s.last_reply = Some(deltas.clone());
                Ok(deltas)
            }
            Err(e) => {
                self.sessions.remove(&req.session);
                Err(e)
            }
        }
    }
}

/// Runs one feed through the detokenizer and the parser.
fn step(tok: &Tokenizer, s: &mut Session, req: &DecodeFeed) -> Result<DecodeDeltas, ServiceError> {
    let internal = |e: crate::TokenizerError| ServiceError::internal(e.to_string());
    let mut out = DecodeDeltas {
        session: req.session.clone(),
        seq: req.seq,
        finished: req.finished,
        ..DecodeDeltas::default()
    };
    for &id in req.token_ids.as_slice() {
        if let Some(text) = s.stream.step(tok, id).map_err(internal)? {
            add(&mut out, s.parser.push(&text));
        }
    }
    s.tokens_fed += req.token_ids.len() as u64;
    if req.finished {
        if let Some(text) = s.stream.finish(tok).map_err(internal)? {
            add(&mut out, s.parser.push(&text));
        }
        add(&mut out, s.parser.finish());
    }
    out.tokens_fed = s.tokens_fed;
    Ok(out)
}

fn add(out: &mut DecodeDeltas, deltas: Vec<Delta>) {
    for d in deltas {
        match d {
            Delta::Reasoning(t) => out.reasoning_content.push_str(&t),
            Delta::Content(t) => out.content.push_str(&t),
            Delta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => out.tool_calls.push(ToolCallDelta {
                index: index as u32,
                id,
                name,
                arguments,
            }),
        }
    }
}
