//! The engine thread: it owns the model's sequences and runs one forward step at a time over
//! the running batch (continuous batching). Every step, sequences that are decoding feed
//! their last token and sequences that are still prefilling feed their next prompt chunk —
//! all in one [`Model::forward`] call — so a long prompt never stalls the batch for more than
//! one chunk. Sequences join as soon as a slot and KV room are free, and leave the step they
//! finish.
//!
//! The thread is driven by [`Command`]s over a channel and emits [`Outbound`] events; it never
//! blocks on the bus. When the command channel closes, every sequence is cancelled (each gets
//! its final event) and the thread ends.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};

use tokio::sync::{mpsc, oneshot};
use v4_engine::SequenceCache;
use v4_engine::model::{Logits, Model};
use v4_engine::sampling::{Sampler, StopCriteria, StopReason};
use v4_protocol::ServiceError;
use v4_protocol::generate::{
    FinishReason, Finished, GenerateRequest, GenerationEvent, TokenLogprob,
};

use crate::logprobs::token_logprob;
use crate::stats::WorkerStats;

/// How a sequence arrives.
pub(crate) enum Arrival {
    /// Prefill and decode here.
    Generate,
    /// Prefill here, then hand the cache to this decode worker (prefill role).
    Prefill { decode_worker: String },
    /// Prefilled elsewhere: the cache after the whole prompt and its last logits.
    Handoff {
        cache: Box<SequenceCache>,
        last_logits: Vec<f32>,
    },
}

/// What the engine thread is asked to do.
pub(crate) enum Command {
    /// Queue a validated request; the reply is its position in the waiting queue.
    Add {
        req: Box<GenerateRequest>,
        sampler: Box<Sampler>,
        arrival: Arrival,
        reply: oneshot::Sender<Result<u32, ServiceError>>,
    },
    /// End one generation early (it still gets its final event).
    Cancel { request_id: String },
    /// End every generation (drain deadline).
    CancelAll,
    /// Stop without sending anything more (a simulated crash, for fault tests).
    Abort,
}

/// What the engine thread hands to the async side.
pub(crate) enum Outbound {
    /// Publish `event` on `subject`.
    Event {
        subject: String,
        event: GenerationEvent,
    },
    /// A prefilled sequence to send to its decode worker (prefill role).
    Handoff(Box<HandoffJob>),
}

/// A finished prefill, owned by the async side until the decode worker has taken it (or the
/// generation is ended with a final error event).
pub(crate) struct HandoffJob {
    pub request: GenerateRequest,
    pub decode_worker: String,
    pub cache: SequenceCache,
    pub last_logits: Vec<f32>,
}

/// Cancelled request ids remembered for a generation that has not arrived yet (a cancel can
/// overtake a prefill handoff).
const REMEMBER_CANCELLED: usize = 4096;

/// Limits of the batcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_batch: usize,
    pub max_waiting: usize,
    pub prefill_chunk: usize,
    pub step_token_budget: usize,
    pub kv_capacity_tokens: u64,
    pub max_context: u64,
}

struct Seq {
    request_id: String,
    events: String,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    cache: Option<SequenceCache>,
    sampler: Sampler,
    stop: StopCriteria,
    logprobs: Option<usize>,
    generated: usize,
    next_event: u64,
    /// The last sampled token, fed at the next step.
    pending: Option<u32>,
    reserved: u64,
    /// Handed-off sequences: the first token is sampled from these.
    handed_logits: Option<Vec<f32>>,
    /// Prefill role: where the cache goes, and the request to send along.
    handoff: Option<(String, Box<GenerateRequest>)>,
}

impl Seq {
    fn new(req: GenerateRequest, sampler: Sampler, eos: &[u32], arrival: Arrival) -> Seq {
        let reserved = req.prompt.len() as u64 + req.max_tokens as u64;
        let (cache, handed_logits, handoff) = match arrival {
            Arrival::Generate => (None, None, None),
            Arrival::Prefill { decode_worker } => {
                (None, None, Some((decode_worker, Box::new(req.clone()))))
            }
            Arrival::Handoff { cache, last_logits } => (Some(*cache), Some(last_logits), None),
        };
        let prefilled = if cache.is_some() { req.prompt.len() } else { 0 };
        Seq {
            handed_logits,
            handoff,
            stop: StopCriteria {
                eos_ids: if req.ignore_eos { vec![] } else { eos.to_vec() },
                stop_ids: req.stop_token_ids,
                max_new_tokens: req.max_tokens as usize,
            },
            request_id: req.request_id,
            events: req.events,
            prompt: req.prompt.into_vec(),
            prefilled,
            cache,
            sampler,
            logprobs: req.logprobs.map(|k| k as usize),
            generated: 0,
            next_event: 0,
            pending: None,
            reserved,
        }
    }

    fn event(
        &mut self,
        worker: &str,
        token_ids: Vec<u32>,
        logprobs: Vec<TokenLogprob>,
    ) -> GenerationEvent {
        let seq = self.next_event;
        self.next_event += 1;
        GenerationEvent {
            request_id: self.request_id.clone(),
            seq,
            token_ids: token_ids.into(),
            logprobs,
            finished: None,
            worker: Some(worker.to_string()),
        }
    }

    fn finished(&self, reason: FinishReason, error: Option<ServiceError>) -> Finished {
        Finished {
            reason,
            prompt_tokens: self.prefilled as u64,
            cached_prompt_tokens: 0,
            completion_tokens: self.generated as u64,
            error,
        }
    }
}

/// The batcher's state on the engine thread.
pub(crate) struct Batcher {
    instance: String,
    model: Arc<Model>,
    limits: Limits,
    eos: Vec<u32>,
    stats: Arc<WorkerStats>,
    out: mpsc::UnboundedSender<Outbound>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    cancelled: VecDeque<String>,
    /// Events of this step or command, sent after the load counters are updated (so a
    /// client that sees a final event also sees the sequence gone from the counters).
    outbox: Vec<Outbound>,
}

impl Batcher {
    pub(crate) fn new(
        instance: String,
        model: Arc<Model>,
        limits: Limits,
        stats: Arc<WorkerStats>,
        out: mpsc::UnboundedSender<Outbound>,
    ) -> Batcher {
        let eos = model.cfg.eos_ids();
        Batcher {
            instance,
            model,
            limits,
            eos,
            stats,
            out,
            waiting: VecDeque::new(),
            running: Vec::new(),
            cancelled: VecDeque::new(),
            outbox: Vec::new(),
        }
    }

    /// Runs until the command channel closes or [`Command::Abort`].
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.cancel_all();
                        self.flush();
                        return;
                    }
                }
            }
            self.admit();
            self.step();
            self.flush();
        }
    }

    /// Applies one command; false = stop the thread now.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add {
                req,
                sampler,
                arrival,
                reply,
            } => {
                let answer = self.add(*req, *sampler, arrival);
                let _ = reply.send(answer);
            }
            Command::Cancel { request_id } => self.cancel(&request_id),
            Command::CancelAll => self.cancel_all(),
            Command::Abort => return false,
        }
        self.flush();
        true
    }

    fn add(
        &mut self,
        req: GenerateRequest,
        sampler: Sampler,
        arrival: Arrival,
    ) -> Result<u32, ServiceError> {
        let id = &req.request_id;
        if self.cancelled.contains(id) {
            return Err(
                ServiceError::bad_request(format!("request {id:?} was cancelled"))
                    .with_code("cancelled"),
            );
        }
        if self
            .running
            .iter()
            .chain(&self.waiting)
            .any(|s| &s.request_id == id)
        {
            return Err(ServiceError::bad_request(format!(
                "request id {id:?} is already running on this worker"
            ))
            .with_param("request_id"));
        }
        let free_slots = self.limits.max_batch.saturating_sub(self.running.len());
        if self.waiting.len() >= self.limits.max_waiting + free_slots {
            return Err(ServiceError::overloaded(format!(
                "decode worker full: {} running, {} waiting",
                self.running.len(),
                self.waiting.len()
            )));
        }
        self.waiting
            .push_back(Seq::new(req, sampler, &self.eos, arrival));
        Ok((self.waiting.len() - 1) as u32)
    }

    fn reserved(&self) -> u64 {
        self.running.iter().map(|s| s.reserved).sum()
    }

    /// Moves waiting sequences into the batch while there are slots and KV room.
    fn admit(&mut self) {
        let mut reserved = self.reserved();
        while self.running.len() < self.limits.max_batch {
            let Some(front) = self.waiting.front() else {
                break;
            };
            // A sequence larger than the whole capacity still runs alone.
            if reserved + front.reserved > self.limits.kv_capacity_tokens
                && !self.running.is_empty()
            {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            if seq.cache.is_none() {
                seq.cache = Some(self.model.new_cache());
            }
            reserved += seq.reserved;
            self.running.push(seq);
        }
    }

    /// One forward step over the running batch.
    fn step(&mut self) {
        // Handed-off sequences sample their first token from the prefill worker's logits.
        let mut done = Vec::new();
        for i in 0..self.running.len() {
            if let Some(logits) = self.running[i].handed_logits.take()
                && self.sample(i, &logits).is_some()
            {
                done.push(i);
            }
        }
        self.leave(done, Vec::new());
        if self.running.is_empty() {
            return;
        }
        // Decoding sequences first (one token each), then prompt chunks within the budget.
        let mut budget = self.limits.step_token_budget.max(self.running.len());
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (index, from, to) of the prompt
        for (i, s) in self.running.iter().enumerate() {
            if s.pending.is_some() {
                plan.push((i, 0, 0));
                budget -= 1;
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            if s.pending.is_none() && budget > 0 {
                let n = (s.prompt.len() - s.prefilled)
                    .min(self.limits.prefill_chunk.max(1))
                    .min(budget);
                if n == 0 {
                    continue;
                }
                plan.push((i, s.prefilled, s.prefilled + n));
                budget -= n;
            }
        }
        plan.sort_unstable_by_key(|p| p.0);
        if plan.is_empty() {
            return;
        }
        self.stats.record_step(plan.len());

        let model = Arc::clone(&self.model);
        let result = {
            let mut batch: Vec<(&mut SequenceCache, &[u32])> = Vec::with_capacity(plan.len());
            let mut next = plan.iter().peekable();
            for (i, s) in self.running.iter_mut().enumerate() {
                let Some(&&(_, from, to)) = next.peek().filter(|p| p.0 == i) else {
                    continue;
                };
                next.next();
                let Seq {
                    cache,
                    prompt,
                    pending,
                    ..
                } = s;
                let tokens: &[u32] = match pending {
                    Some(t) => std::slice::from_ref(t),
                    None => &prompt[from..to],
                };
                batch.push((
                    cache.as_mut().expect("running sequences have a cache"),
                    tokens,
                ));
            }
            catch_unwind(AssertUnwindSafe(|| {
                model.forward(&mut batch, Logits::Last, false)
            }))
        };
        let logits = match result {
            Ok(Ok(out)) => out.logits,
            Ok(Err(e)) => return self.fail(&plan, ServiceError::internal(format!("forward: {e}"))),
            Err(_) => {
                return self.fail(
                    &plan,
                    ServiceError::internal("the engine panicked in a forward step"),
                );
            }
        };

        let mut done = Vec::new();
        let mut handoffs = Vec::new();
        for (&(i, from, to), logits) in plan.iter().zip(logits) {
            let s = &mut self.running[i];
            if s.pending.is_none() {
                debug_assert!(from == s.prefilled);
                s.prefilled = to;
                if s.prefilled < s.prompt.len() {
                    continue; // more prompt chunks to go
                }
                if s.handoff.is_some() {
                    handoffs.push((i, logits));
                    continue;
                }
            }
            if self.sample(i, &logits).is_some() {
                done.push(i);
            }
        }
        self.leave(done, handoffs);
    }

    /// Removes finished sequences (their caches are freed here) and hands prefilled ones to
    /// the async side (which then owns the cache).
    fn leave(&mut self, done: Vec<usize>, handoffs: Vec<(usize, Vec<f32>)>) {
        let mut leaving: Vec<(usize, Option<Vec<f32>>)> =
            done.into_iter().map(|i| (i, None)).collect();
        leaving.extend(handoffs.into_iter().map(|(i, l)| (i, Some(l))));
        leaving.sort_unstable_by_key(|l| std::cmp::Reverse(l.0));
        for (i, logits) in leaving {
            let s = self.running.remove(i);
            self.stats.finished.fetch_add(1, Relaxed);
            if let (Some(last_logits), Some((decode_worker, request)), Some(cache)) =
                (logits, s.handoff, s.cache)
            {
                self.outbox.push(Outbound::Handoff(Box::new(HandoffJob {
                    request: *request,
                    decode_worker,
                    cache,
                    last_logits,
                })));
            }
        }
    }

    /// Samples the next token of running sequence `i` from `logits` and sends it; returns why
    /// the sequence ended (its final event is already sent) or `None`.
    fn sample(&mut self, i: usize, logits: &[f32]) -> Option<FinishReason> {
        let max_context = self.limits.max_context as usize;
        let s = &mut self.running[i];
        let token = s.sampler.sample(logits);
        let lps = s
            .logprobs
            .map(|k| vec![token_logprob(logits, token, k)])
            .unwrap_or_default();
        s.generated += 1;
        self.stats.generated_tokens.fetch_add(1, Relaxed);
        let reason = match s.stop.check(token, s.generated) {
            Some(StopReason::Eos | StopReason::StopId) => Some(FinishReason::Stop),
            Some(StopReason::Length) => Some(FinishReason::Length),
            None if s.prompt.len() + s.generated >= max_context => Some(FinishReason::Length),
            None => None,
        };
        let mut event = s.event(&self.instance, vec![token], lps);
        match reason {
            Some(r) => event.finished = Some(s.finished(r, None)),
            None => s.pending = Some(token),
        }
        self.outbox.push(Outbound::Event {
            subject: s.events.clone(),
            event,
        });
        reason
    }

    /// Ends every sequence of `plan` with an error event.
    fn fail(&mut self, plan: &[(usize, usize, usize)], error: ServiceError) {
        tracing::error!(error = %error, sequences = plan.len(), "forward step failed");
        for &(i, _, _) in plan.iter().rev() {
            let mut s = self.running.remove(i);
            let mut event = s.event(&self.instance, vec![], vec![]);
            event.finished = Some(s.finished(FinishReason::Error, Some(error.clone())));
            self.outbox.push(Outbound::Event {
                subject: s.events.clone(),
                event,
            });
        }
    }

    fn cancel(&mut self, request_id: &str) {
        let s = if let Some(i) = self.running.iter().position(|s| s.request_id == request_id) {
            self.running.remove(i)
        } else if let Some(i) = self.waiting.iter().position(|s| s.request_id == request_id) {
            self.waiting.remove(i).expect("index is valid")
        } else {
            // Not here (yet): a handoff of it may still arrive.
            if self.cancelled.len() >= REMEMBER_CANCELLED {
                self.cancelled.pop_front();
            }
            self.cancelled.push_back(request_id.to_string());
            return;
        };
        self.send_cancelled(s);
    }

    fn cancel_all(&mut self) {
        let all: Vec<Seq> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        for s in all {
            self.send_cancelled(s);
        }
        self.publish_load();
    }

    fn send_cancelled(&mut self, mut s: Seq) {
        self.stats.cancelled.fetch_add(1, Relaxed);
        let mut event = s.event(&self.instance, vec![], vec![]);
        event.finished = Some(s.finished(FinishReason::Cancelled, None));
        self.outbox.push(Outbound::Event {
            subject: s.events.clone(),
            event,
        });
    }

    /// Publishes the load counters, then hands this round's events to the publisher.
    fn flush(&mut self) {
        self.publish_load();
        for o in self.outbox.drain(..) {
            let _ = self.out.send(o);
        }
    }

    fn publish_load(&self) {
        self.stats.running.store(self.running.len() as u32, Relaxed);
        self.stats.waiting.store(self.waiting.len() as u32, Relaxed);
        self.stats
            .kv_reserved_tokens
            .store(self.reserved(), Relaxed);
    }
}
