//! The gateway's side of the mesh: calls to the tokenizer and the scheduler, one generation's
//! event stream ([`Generation`]), the worker heartbeat watch, and the cleanup task that cancels
//! abandoned generations.
//!
//! A generation is: subscribe a private inbox, send the [`GenerateRequest`] to the scheduler,
//! then read [`GenerationEvent`]s in `seq` order from the inbox. A gap in `seq`, a worker
//! without a heartbeat for its `expires_after` (or, for a worker never heard of, for
//! [`GatewayConfig::unknown_worker_grace`]), no first event within
//! [`GatewayConfig::first_event_timeout`], or a closed subscription ends the generation with
//! an error: a stream never hangs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::{OnceCell, mpsc};
use v4_bus::{Bus, Headers, Subscription};
use v4_protocol::generate::{
    CancelGeneration, Finished, GenerateAccepted, GenerateRequest, GenerationEvent, ModelsReply,
    ModelsRequest, ServedModel, WorkerHeartbeat,
};
use v4_protocol::subject::{scheduler, worker};
use v4_protocol::tokenizer::{EncodeChatReply, EncodeChatRequest, SpecialTokenIds};
use v4_tokenizer::service::{DecodeSession, TokenizerClient};

use crate::config::GatewayConfig;
use crate::error::Failure;
use crate::metrics::Metrics;

/// Token strings kept for logprobs before the cache is cleared.
const TOKEN_CACHE_MAX: usize = 200_000;

/// When the gateway last heard from each worker.
#[derive(Clone, Default)]
pub(crate) struct WorkerWatch {
    seen: Arc<Mutex<HashMap<String, (Instant, Duration)>>>,
}

impl WorkerWatch {
    pub(crate) fn record(&self, hb: &WorkerHeartbeat) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(hb.instance.clone(), (Instant::now(), hb.expires_after()));
        // Forget workers gone for long (bounded memory across restarts).
        if seen.len() > 1024 {
            seen.retain(|_, (at, exp)| at.elapsed() < *exp * 100);
        }
    }

    /// Whether `worker`, which accepted a generation at `since`, is gone.
    pub(crate) fn is_gone(&self, worker: &str, since: Instant, grace: Duration) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(worker) {
            Some((at, expires)) => at.elapsed() > *expires,
            None => since.elapsed() > grace,
        }
    }
}

/// Work left behind by a generation that ended early (client gone, stop string, failure).
pub(crate) struct Cleanup {
    /// Cancel this generation (request id, reason).
    pub cancel: Option<(String, &'static str)>,
    /// Close this decode session.
    pub session: Option<DecodeSession>,
}

/// Clients of the mesh shared by every request.
pub(crate) struct Mesh {
    pub bus: Bus,
    pub tokenizer: TokenizerClient,
    pub config: Arc<GatewayConfig>,
    pub metrics: Arc<Metrics>,
    pub watch: WorkerWatch,
    cleanup: mpsc::UnboundedSender<Cleanup>,
    models: Mutex<Option<(Instant, ModelsReply)>>,
    special: OnceCell<SpecialTokenIds>,
    tokens: Mutex<HashMap<u32, String>>,
}

impl Mesh {
    pub(crate) fn new(
        bus: Bus,
        config: Arc<GatewayConfig>,
        metrics: Arc<Metrics>,
        watch: WorkerWatch,
        cleanup: mpsc::UnboundedSender<Cleanup>,
    ) -> Mesh {
        Mesh {
            tokenizer: TokenizerClient::new(bus.clone()).with_timeout(config.bus_timeout),
            bus,
            config,
            metrics,
            watch,
            cleanup,
            models: Mutex::new(None),
            special: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Hands cleanup work to the cleanup task (never blocks; usable from `Drop`).
    pub(crate) fn cleanup(&self, c: Cleanup) {
        let _ = self.cleanup.send(c);
    }

    /// The served models, from the scheduler (reused for `models_cache_ttl`).
    pub(crate) async fn models(&self) -> Result<ModelsReply, Failure> {
        {
            let cached = self.models.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, reply)) = &*cached
                && at.elapsed() < self.config.models_cache_ttl
            {
                return Ok(reply.clone());
            }
        }
        let reply: ModelsReply = self
            .bus
            .request_json(
                scheduler::MODELS,
                &ModelsRequest {},
                self.config.bus_timeout,
            )
            .await
            .map_err(|e| Failure::from_call("scheduler", &e))?;
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), reply.clone()));
        Ok(reply)
    }

    /// The served model `id` with at least one live worker.
    pub(crate) async fn served_model(&self, id: &str) -> Result<ServedModel, Failure> {
        let reply = self.models().await?;
        reply
            .models
            .into_iter()
            .find(|m| m.id == id && m.workers > 0)
            .ok_or_else(|| {
                Failure::Overloaded(format!(
                    "the model {id} is not being served right now; retry later"
                ))
            })
    }

    /// The tokenizer's special token ids (asked once).
    pub(crate) async fn special(&self) -> Result<SpecialTokenIds, Failure> {
        self.special
            .get_or_try_init(|| async {
                self.tokenizer
                    .info()
                    .await
                    .map(|i| i.special)
                    .map_err(|e| Failure::from_call("tokenizer", &e))
            })
            .await
            .copied()
    }

    pub(crate) async fn encode_chat(
        &self,
        req: &EncodeChatRequest,
    ) -> Result<EncodeChatReply, Failure> {
        self.tokenizer
            .encode_chat(req)
            .await
            .map_err(|e| Failure::from_call("tokenizer", &e))
    }

    /// The text of each id (for logprobs), from the cache or the tokenizer.
    pub(crate) async fn token_strings(&self, ids: &[u32]) -> Result<HashMap<u32, String>, Failure> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            for &id in ids {
                match cache.get(&id) {
                    Some(s) => {
                        out.insert(id, s.clone());
                    }
                    None if !missing.contains(&id) => missing.push(id),
                    None => {}
                }
            }
        }
        let fetched = futures::future::join_all(
            missing
                .iter()
                .map(|&id| async move { (id, self.tokenizer.decode_ids(&[id], false).await) }),
        )
        .await;
        let mut cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() + fetched.len() > TOKEN_CACHE_MAX {
            cache.clear();
        }
        for (id, r) in fetched {
            let text = r.map_err(|e| Failure::from_call("tokenizer", &e))?.text;
            cache.insert(id, text.clone());
            out.insert(id, text);
        }
        Ok(out)
    }

    /// Publishes a [`CancelGeneration`].
    pub(crate) async fn cancel(&self, request_id: &str, reason: &str) {
        publish_cancel(&self.bus, request_id, reason).await;
        self.metrics.cancelled();
    }

    /// Sends `req` to the scheduler with a fresh events inbox; on success the events of the
    /// generation can be read from the returned [`Generation`]. Dropped while waiting for the
    /// scheduler (the client went away), it cancels the generation in case it was accepted.
    pub(crate) async fn start_generation(
        &self,
        mut req: GenerateRequest,
    ) -> Result<Generation, Failure> {
        req.events = self.bus.new_inbox();
        let sub = self
            .bus
            .subscribe(&req.events)
            .await
            .map_err(|e| Failure::Internal(format!("subscribing the events inbox: {e}")))?;
        let mut pending = PendingCancel {
            cleanup: Some(self.cleanup.clone()),
            request_id: req.request_id.clone(),
            reason: "client_disconnected",
        };
        let accepted: Result<GenerateAccepted, _> = self
            .bus
            .request_json(scheduler::GENERATE, &req, self.config.bus_timeout)
            .await;
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                let failure = Failure::from_call("scheduler", &e);
                // The scheduler may have accepted it after all (timeout): make sure it stops.
                if matches!(failure, Failure::Timeout(_) | Failure::Internal(_)) {
                    pending.reason = "gateway_error";
                } else {
                    pending.cleanup = None;
                }
                return Err(failure);
            }
        };
        pending.cleanup = None;
        self.metrics.generation_started();
        Ok(Generation {
            request_id: req.request_id,
            worker: accepted.worker,
            sub,
            next_seq: 0,
            accepted_at: Instant::now(),
            worker_since: Instant::now(),
            seen_event: false,
            watch: self.watch.clone(),
            config: self.config.clone(),
        })
    }
}

/// Cancels a generation whose acceptance is unknown when dropped armed.
struct PendingCancel {
    cleanup: Option<mpsc::UnboundedSender<Cleanup>>,
    request_id: String,
    reason: &'static str,
}

impl Drop for PendingCancel {
    fn drop(&mut self) {
        if let Some(tx) = self.cleanup.take() {
            let _ = tx.send(Cleanup {
                cancel: Some((std::mem::take(&mut self.request_id), self.reason)),
                session: None,
            });
        }
    }
}

pub(crate) async fn publish_cancel(bus: &Bus, request_id: &str, reason: &str) {
    let msg = CancelGeneration {
        request_id: request_id.to_string(),
        reason: reason.to_string(),
    };
    let payload = Bytes::from(serde_json::to_vec(&msg).unwrap_or_default());
    if let Err(e) = bus.publish(worker::CANCEL, &Headers::new(), payload).await {
        tracing::warn!(request_id, "cannot publish the cancellation: {e}");
    }
}

/// Runs the cleanup work handed over by [`Mesh::cleanup`] until every sender is gone.
pub(crate) async fn run_cleanup(
    bus: Bus,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Cleanup>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(c) = rx.recv().await {
        if c.cancel.is_some() {
            metrics.cancelled();
        }
        let bus = bus.clone();
        tasks.spawn(async move {
            if let Some((id, reason)) = &c.cancel {
                tracing::debug!(request_id = %id, reason, "cancelling generation");
                publish_cancel(&bus, id, reason).await;
            }
            if let Some(s) = c.session {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Records every worker heartbeat in `watch` until the subscription ends.
pub(crate) async fn run_heartbeat_watch(mut sub: Subscription, watch: WorkerWatch) {
    while let Some(m) = sub.next().await {
        match serde_json::from_slice::<WorkerHeartbeat>(&m.payload) {
            Ok(hb) => watch.record(&hb),
            Err(e) => tracing::debug!("ignoring a malformed heartbeat: {e}"),
        }
    }
}

/// The event stream of one accepted generation. The worker to watch is the one named in
/// [`GenerateAccepted`] until an event names another (`GenerationEvent::worker`: after a
/// prefill handoff the decode worker sends the events).
pub(crate) struct Generation {
    pub request_id: String,
    pub worker: String,
    sub: Subscription,
    next_seq: u64,
    accepted_at: Instant,
    /// When `worker` became the one to watch.
    worker_since: Instant,
    seen_event: bool,
    watch: WorkerWatch,
    config: Arc<GatewayConfig>,
}

impl Generation {
    /// The next events in order: at least one, plus every further one already received, up
    /// to and including the final one. An error ends the generation.
    pub(crate) async fn next_batch(&mut self) -> Result<Vec<GenerationEvent>, Failure> {
        let first = self.next_event().await?;
        let mut out = vec![first];
        while out.last().is_some_and(|e| e.finished.is_none()) {
            match self.sub.next().now_or_never() {
                Some(Some(msg)) => {
                    if let Some(e) = self.accept(&msg.payload)? {
                        out.push(e);
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Reads events until the final one (ids are dropped) for at most `grace`.
    pub(crate) async fn wait_finished(&mut self, grace: Duration) -> Option<(Finished, u64)> {
        let mut ids = 0;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let batch = tokio::time::timeout_at(deadline, self.next_batch()).await;
            let Ok(Ok(batch)) = batch else { return None };
            for e in batch {
                ids += e.token_ids.len() as u64;
                if let Some(f) = e.finished {
                    return Some((f, ids));
                }
            }
        }
    }

    async fn next_event(&mut self) -> Result<GenerationEvent, Failure> {
        let mut tick = tokio::time::interval(self.config.liveness_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = self.sub.next() => match msg {
                    Some(msg) => if let Some(e) = self.accept(&msg.payload)? {
                        return Ok(e);
                    },
                    None => return Err(Failure::Generation(
                        "the event stream of the generation closed".into(),
                    )),
                },
                _ = tick.tick() => self.check_alive()?,
            }
        }
    }

    fn check_alive(&self) -> Result<(), Failure> {
        let grace = self.config.unknown_worker_grace;
        if self.watch.is_gone(&self.worker, self.worker_since, grace) {
            return Err(Failure::Generation(format!(
                "the inference worker {} stopped responding",
                self.worker
            )));
        }
        if !self.seen_event && self.accepted_at.elapsed() > self.config.first_event_timeout {
            return Err(Failure::Generation(format!(
                "the generation produced no output within {:?}",
                self.config.first_event_timeout
            )));
        }
        Ok(())
    }

    /// The event in `payload` if it is the next one; `None` for a duplicate or another
    /// generation's event; an error for a gap or a malformed event.
    fn accept(&mut self, payload: &[u8]) -> Result<Option<GenerationEvent>, Failure> {
        let e: GenerationEvent = serde_json::from_slice(payload)
            .map_err(|e| Failure::Generation(format!("malformed generation event: {e}")))?;
        if e.request_id != self.request_id || e.seq < self.next_seq {
            return Ok(None);
        }
        if e.seq > self.next_seq {
            return Err(Failure::Generation(format!(
                "generation events were lost (expected event {}, got {})",
                self.next_seq, e.seq
            )));
        }
        self.next_seq += 1;
        self.seen_event = true;
        // After a prefill handoff the decode worker sends the events: watch that one.
        if let Some(w) = e.worker.as_deref()
            && w != self.worker
        {
            self.worker = w.to_string();
            self.worker_since = Instant::now();
        }
        Ok(Some(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_expiry() {
        let w = WorkerWatch::default();
        let long_ago = Instant::now() - Duration::from_secs(5);
        assert!(!w.is_gone("w1", Instant::now(), Duration::from_secs(1)));
        assert!(w.is_gone("w1", long_ago, Duration::from_secs(1)));
        let hb: WorkerHeartbeat = serde_json::from_value(serde_json::json!({
            "instance": "w1", "role": "decode", "protocol_version": 1, "model": "m",
            "model_fingerprint": "f", "vocab_size": 1, "max_context": 10, "max_batch": 1,
            "running": 0, "waiting": 0, "max_waiting": 0, "kv_capacity_tokens": 1,
            "kv_reserved_tokens": 0, "interval_ms": 100
        }))
        .unwrap();
        w.record(&hb);
        assert!(!w.is_gone("w1", long_ago, Duration::from_secs(1)));
    }
}
