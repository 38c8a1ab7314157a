//! [`Driver`]: one accepted generation turned into API output. It reads the generation's
//! events, feeds their ids to a tokenizer decode session (opened in the background as soon as the generation is accepted, reopened once if it expired before the first event), applies
//! the stop strings and the tool-call policy, converts logprobs, counts reasoning tokens, and
//! yields [`Update`]s: deltas, then one [`Outcome`]. The streaming and the non-streaming
//! answers of both APIs are built from the same updates, so they always agree.
//!
//! Cancellation: a driver dropped before its generation finished (the client went away, the
//! server stopped) hands a `CancelGeneration` and the decode session's close to the cleanup
//! task from its `Drop`. A stop string cancels at once and waits up to
//! [`crate::GatewayConfig::cancel_grace`] for the worker's final event, whose counts are the
//! usage; without it, the gateway's own counts are reported.

use std::sync::Arc;

use serde::Serialize;
use v4_protocol::generate::{FinishReason, Finished, TokenLogprob};
use v4_protocol::tokenizer::{
    DecodeDeltas, DecodeOpen, EncodeChatReply, SpecialTokenIds, ToolCallDelta,
};
use v4_tokenizer::service::DecodeSession;

use crate::error::Failure;
use crate::mesh::{Cleanup, Generation, Mesh};
use crate::request::{ToolCalls, ValidChatRequest};
use crate::stop::StopMatcher;

/// OpenAI's stand-in for a logprob of minus infinity.
const NEG_INF_LOGPROB: f32 = -9999.0;

/// New output since the previous update.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Delta {
    pub reasoning: String,
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub logprobs: Vec<LogprobEntry>,
}

impl Delta {
    pub(crate) fn is_empty(&self) -> bool {
        self.reasoning.is_empty()
            && self.content.is_empty()
            && self.tool_calls.is_empty()
            && self.logprobs.is_empty()
    }
}

/// One token's logprob in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprobEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TopLogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// How the answer ended.
#[derive(Debug, Clone)]
pub(crate) enum Finish {
    /// EOS.
    Stop,
    /// `max_tokens` or the context.
    Length,
    /// EOS after tool calls.
    ToolCalls,
    /// A stop string matched (the content is cut before it).
    StopSequence(String),
    /// The generation failed after it started.
    Failed(Failure),
}

/// Token counts of a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Generated ids up to and including `</think>` (thinking mode).
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub finish: Finish,
    pub usage: Usage,
}

pub(crate) enum Update {
    Delta(Delta),
    Done(Outcome),
}

/// Sends the cleanup of a generation that did not end normally when dropped.
struct Guard {
    mesh: Arc<Mesh>,
    request_id: String,
    /// The worker may still be generating.
    running: bool,
    session: Option<DecodeSession>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.running || self.session.is_some() {
            self.mesh.cleanup(Cleanup {
                cancel: self
                    .running
                    .then(|| (self.request_id.clone(), "client_disconnected")),
                session: self.session.take(),
            });
        }
    }
}

/// Counts reasoning tokens: the ids before and including the first `</think>` when the prompt
/// opened the reasoning. A tool-call block (`｜DSML｜`) or EOS ends the reasoning without being
/// counted.
#[derive(Debug, Clone, Copy)]
struct ReasoningCounter {
    active: bool,
    count: u64,
}

impl ReasoningCounter {
    fn add(&mut self, ids: &[u32], special: &SpecialTokenIds) {
        for &id in ids {
            if !self.active {
                return;
            }
            if id == special.eos || id == special.dsml {
                self.active = false;
                return;
            }
            self.count += 1;
            if id == special.think_end {
                self.active = false;
            }
        }
    }
}

/// Drives one accepted generation; see the module docs.
pub(crate) struct Driver {
    mesh: Arc<Mesh>,
    generation: Generation,
    /// Set until the first event: the session request, and its answer being fetched in the
    /// background meanwhile (so the first token does not wait for a round trip).
    open: Option<(DecodeOpen, PendingOpen)>,
    guard: Guard,
    stop: StopMatcher,
    tool_calls: ToolCalls,
    logprobs: bool,
    special: SpecialTokenIds,
    reasoning: ReasoningCounter,
    ids_received: u64,
    prompt_tokens: u64,
    tool_calls_sent: usize,
    done: Option<Outcome>,
    /// The session request, kept until the first feed succeeded (to reopen an expired one).
    reopen: Option<DecodeOpen>,
}

/// A decode session being opened in the background.
type PendingOpen = tokio::task::JoinHandle<Result<DecodeSession, v4_bus::CallError>>;

impl Drop for Driver {
    /// A session opened for a generation that ended before its first event is closed.
    fn drop(&mut self) {
        if let Some((_, pending)) = self.open.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Ok(Ok(session)) = pending.await {
                    let _ = session.close().await;
                }
            });
        }
    }
}

impl Driver {
    pub(crate) fn new(
        mesh: Arc<Mesh>,
        generation: Generation,
        req: &ValidChatRequest,
        prompt: &EncodeChatReply,
        special: SpecialTokenIds,
        tool_call_id_prefix: String,
    ) -> Driver {
        let open = DecodeOpen {
            request_id: req.id.clone(),
            thinking: prompt.reasoning_open,
            tools_present: req.tool_calls == ToolCalls::Allowed,
            skip_special_tokens: false,
            tool_call_id_prefix: Some(tool_call_id_prefix),
        };
        let pending = {
            let (mesh, open) = (mesh.clone(), open.clone());
            tokio::spawn(async move { mesh.tokenizer.open_decode(&open).await })
        };
        Driver {
            guard: Guard {
                mesh: mesh.clone(),
                request_id: generation.request_id.clone(),
                running: true,
                session: None,
            },
            mesh,
            generation,
            open: Some((open, pending)),
            stop: StopMatcher::new(req.stop.clone()),
            tool_calls: req.tool_calls,
            logprobs: req.logprobs.is_some(),
            special,
            reasoning: ReasoningCounter {
                active: prompt.reasoning_open,
                count: 0,
            },
            ids_received: 0,
            prompt_tokens: prompt.prompt_tokens,
            tool_calls_sent: 0,
            done: None,
            reopen: None,
        }
    }

    /// The next non-empty delta, or the outcome (repeated on later calls).
    pub(crate) async fn next(&mut self) -> Update {
        loop {
            if let Some(o) = &self.done {
                return Update::Done(o.clone());
            }
            match self.step().await {
                Ok(d) if !d.is_empty() => return Update::Delta(d),
                Ok(_) => {}
                Err(f) => self.fail(f).await,
            }
        }
    }

    /// Runs the generation to its end and returns everything at once.
    pub(crate) async fn collect(mut self) -> (Delta, Outcome) {
        let mut all = Delta::default();
        loop {
            match self.next().await {
                Update::Delta(d) => {
                    all.reasoning.push_str(&d.reasoning);
                    all.content.push_str(&d.content);
                    all.tool_calls.extend(d.tool_calls);
                    all.logprobs.extend(d.logprobs);
                }
                Update::Done(o) => return (all, o),
            }
        }
    }

    async fn step(&mut self) -> Result<Delta, Failure> {
        let batch = self.generation.next_batch().await?;
        let mut ids = Vec::new();
        let mut logprobs = Vec::new();
        let mut finished = None;
        for e in batch {
            ids.extend_from_slice(e.token_ids.as_slice());
            logprobs.extend(e.logprobs);
            if e.finished.is_some() {
                finished = e.finished;
            }
        }
        self.ids_received += ids.len() as u64;
        self.reasoning.add(&ids, &self.special);
        if finished.is_some() {
            self.guard.running = false;
        }
        let decoded = self.decode(&ids, finished.is_some()).await?;
        let mut out = Delta {
            reasoning: decoded.reasoning_content,
            ..Delta::default()
        };
        if self.logprobs {
            out.logprobs = self.logprob_entries(&logprobs).await?;
        }
        let (text, hit) = self.stop.push(&decoded.content);
        out.content = text;
        if let Some(stop) = hit {
            self.stopped(stop, finished).await;
            return Ok(out);
        }
        if !decoded.tool_calls.is_empty() || finished.is_some() {
            out.content.push_str(&self.stop.flush());
        }
        if self.tool_calls == ToolCalls::Allowed {
            self.tool_calls_sent += decoded.tool_calls.len();
            out.tool_calls = decoded.tool_calls;
        }
        if let Some(f) = finished {
            self.done = Some(self.outcome(&f));
        }
        Ok(out)
    }

    /// Feeds ids to the decode session (opening it first if needed).
    async fn decode(&mut self, ids: &[u32], last: bool) -> Result<DecodeDeltas, Failure> {
        let tokenizer_failed =
            |e: v4_bus::CallError| Failure::Generation(format!("the tokenizer failed: {e}"));
        let mut fresh = false;
        if let Some((open, pending)) = self.open.take() {
            let session = match pending.await {
                Ok(opened) => opened,
                Err(_) => self.mesh.tokenizer.open_decode(&open).await,
            };
            self.guard.session = Some(session.map_err(tokenizer_failed)?);
            self.reopen = Some(open);
            fresh = true;
        }
        let result = self.feed_session(ids, last).await;
        // A session opened before a long prefill may have expired before its first feed
        // (nothing was fed yet, so nothing is lost): open it again once.
        let expired = matches!(&result, Err(v4_bus::CallError::Service(e))
            if e.kind == v4_protocol::ErrorKind::NotFound);
        match (fresh, expired, self.reopen.take()) {
            (true, true, Some(open)) => {
                let session = self
                    .mesh
                    .tokenizer
                    .open_decode(&open)
                    .await
                    .map_err(tokenizer_failed)?;
                self.guard.session = Some(session);
                self.feed_session(ids, last).await.map_err(tokenizer_failed)
            }
            _ => result.map_err(tokenizer_failed),
        }
    }

    async fn feed_session(
        &mut self,
        ids: &[u32],
        last: bool,
    ) -> Result<DecodeDeltas, v4_bus::CallError> {
        if last {
            match self.guard.session.take() {
                Some(s) => s.finish(ids).await,
                None => Ok(DecodeDeltas::default()),
            }
        } else {
            match self.guard.session.as_mut() {
                Some(s) => s.feed(ids).await,
                None => Ok(DecodeDeltas::default()),
            }
        }
    }

    async fn logprob_entries(&self, lps: &[TokenLogprob]) -> Result<Vec<LogprobEntry>, Failure> {
        let eos = self.special.eos;
        let lps: Vec<&TokenLogprob> = lps.iter().filter(|l| l.token_id != eos).collect();
        let ids: Vec<u32> = lps
            .iter()
            .flat_map(|l| std::iter::once(l.token_id).chain(l.top.iter().map(|t| t.token_id)))
            .collect();
        let strings = self.mesh.token_strings(&ids).await?;
        let text = |id: u32| strings.get(&id).cloned().unwrap_or_default();
        let finite = |x: f32| if x.is_finite() { x } else { NEG_INF_LOGPROB };
        Ok(lps
            .iter()
            .map(|l| {
                let token = text(l.token_id);
                LogprobEntry {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: finite(l.logprob),
                    top_logprobs: l
                        .top
                        .iter()
                        .map(|t| {
                            let token = text(t.token_id);
                            TopLogprobEntry {
                                bytes: token.as_bytes().to_vec(),
                                token,
                                logprob: finite(t.logprob),
                            }
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// A stop string matched: cancel, close the session, wait for the final counts.
    async fn stopped(&mut self, stop: String, finished: Option<Finished>) {
        if let Some(s) = self.guard.session.take() {
            self.mesh.cleanup(Cleanup {
                cancel: None,
                session: Some(s),
            });
        }
        let mut usage = self.local_usage();
        let finished = match finished {
            Some(f) => Some(f),
            None => {
                self.mesh
                    .cancel(&self.generation.request_id, "stop_sequence")
                    .await;
                self.guard.running = false;
                let grace = self.mesh.config.cancel_grace;
                let waited = self.generation.wait_finished(grace).await;
                if waited.is_none() {
                    tracing::warn!(
                        request_id = %self.generation.request_id,
                        "no final event within {grace:?} after cancelling; reporting own counts"
                    );
                }
                waited.map(|(f, _)| f)
            }
        };
        if let Some(f) = finished {
            usage = self.usage(&f);
        }
        self.done = Some(Outcome {
            finish: Finish::StopSequence(stop),
            usage,
        });
    }

    async fn fail(&mut self, f: Failure) {
        if self.guard.running {
            self.mesh
                .cancel(&self.generation.request_id, "gateway_error")
                .await;
            self.guard.running = false;
        }
        if let Some(s) = self.guard.session.take() {
            self.mesh.cleanup(Cleanup {
                cancel: None,
                session: Some(s),
            });
        }
        tracing::warn!(request_id = %self.generation.request_id, "generation failed: {f}");
        self.done = Some(Outcome {
            finish: Finish::Failed(f),
            usage: self.local_usage(),
        });
    }

    fn local_usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            cached_tokens: 0,
            completion_tokens: self.ids_received,
            reasoning_tokens: self.reasoning.count,
        }
    }

    fn usage(&self, f: &Finished) -> Usage {
        Usage {
            prompt_tokens: f.prompt_tokens,
            cached_tokens: f.cached_prompt_tokens.min(f.prompt_tokens),
            completion_tokens: f.completion_tokens,
            reasoning_tokens: self.reasoning.count,
        }
    }

    fn outcome(&self, f: &Finished) -> Outcome {
        let failed = |m: String| Finish::Failed(Failure::Generation(m));
        let finish = match f.reason {
            FinishReason::Stop if self.tool_calls_sent > 0 => Finish::ToolCalls,
            FinishReason::Stop => Finish::Stop,
            FinishReason::Length => Finish::Length,
            FinishReason::Cancelled => {
                failed("the inference worker cancelled the generation".into())
            }
            FinishReason::Error | FinishReason::Unknown => failed(match &f.error {
                Some(e) => format!("the inference worker failed: {}", e.message),
                None => "the inference worker failed".into(),
            }),
        };
        Outcome {
            finish,
            usage: self.usage(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_counts_up_to_and_including_think_end() {
        let special = SpecialTokenIds {
            bos: 0,
            eos: 1,
            user: 2,
            assistant: 3,
            think_start: 4,
            think_end: 5,
            dsml: 6,
        };
        let mut r = ReasoningCounter {
            active: true,
            count: 0,
        };
        r.add(&[10, 11], &special);
        r.add(&[12, 5, 13, 14], &special);
        r.add(&[15], &special);
        assert_eq!(r.count, 4);
        let mut r = ReasoningCounter {
            active: true,
            count: 0,
        };
        r.add(&[10, 6, 11, 1], &special);
        assert_eq!(r.count, 1);
        let mut r = ReasoningCounter {
            active: false,
            count: 0,
        };
        r.add(&[10, 5], &special);
        assert_eq!(r.count, 0);
    }
}
