//! The worker's async side: the generate subject, the cancel broadcast, heartbeats and the
//! event publisher around the engine thread ([`crate::batcher`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use v4_bus::{Bus, BusError, Headers, Server};
use v4_engine::Model;
use v4_engine::cache_codec;
use v4_engine::sampling::{Sampler, SamplingParams};
use v4_protocol::generate::{
    Blob, CancelGeneration, FinishReason, Finished, GenerateAccepted, GenerateRequest,
    GenerationEvent, KvHandoff, MAX_TOP_LOGPROBS, PrefillRequest, Sampling, WorkerHeartbeat,
    WorkerRole,
};
use v4_protocol::subject::{self, worker as subjects};
use v4_protocol::{PROTOCOL_VERSION, ServiceError};

use crate::batcher::{Arrival, Batcher, Command, HandoffJob, Limits, Outbound};
use crate::config::WorkerConfig;
use crate::stats::{StatsSnapshot, WorkerStats};

/// A loaded model and its identity.
#[derive(Clone)]
pub struct WorkerModel {
    pub model: Arc<Model>,
    /// sha256 (hex) of the checkpoint's `config.json`.
    pub fingerprint: String,
}

impl WorkerModel {
    /// Loads the checkpoint in `dir` (config + weights).
    pub fn load(dir: &Path) -> Result<WorkerModel, WorkerError> {
        let config = std::fs::read(dir.join("config.json")).map_err(|e| WorkerError::Model {
            dir: dir.display().to_string(),
            message: format!("cannot read config.json: {e}"),
        })?;
        let model = Model::load(dir).map_err(|e| WorkerError::Model {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(WorkerModel {
            model: Arc::new(model),
            fingerprint: hex_sha256(&config),
        })
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("model {dir}: {message}")]
    Model { dir: String, message: String },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("invalid instance id: {0}")]
    Instance(#[from] subject::SubjectError),
    #[error("cannot start the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The static part of this worker's heartbeat.
#[derive(Clone)]
struct Identity {
    instance: String,
    role: WorkerRole,
    model_id: String,
    fingerprint: String,
    vocab_size: u64,
    limits: Limits,
    interval: Duration,
    description: Option<String>,
}

impl Identity {
    fn heartbeat(&self, s: StatsSnapshot) -> WorkerHeartbeat {
        WorkerHeartbeat {
            instance: self.instance.clone(),
            role: self.role,
            protocol_version: PROTOCOL_VERSION,
            model: self.model_id.clone(),
            model_fingerprint: self.fingerprint.clone(),
            vocab_size: self.vocab_size,
            max_context: self.limits.max_context,
            max_batch: self.limits.max_batch as u32,
            running: s.running,
            waiting: s.waiting,
            max_waiting: self.limits.max_waiting as u32,
            kv_capacity_tokens: self.limits.kv_capacity_tokens,
            kv_reserved_tokens: s.kv_reserved_tokens,
            draining: s.draining,
            interval_ms: self.interval.as_millis() as u64,
            steps: s.steps,
            batch_size_sum: s.batch_size_sum,
            max_batch_seen: s.max_batch_seen,
            generated_tokens: s.generated_tokens,
            description: self.description.clone(),
        }
    }
}

/// A running decode worker.
pub struct WorkerHandle {
    identity: Identity,
    stats: Arc<WorkerStats>,
    commands: std_mpsc::Sender<Command>,
    bus: Bus,
    servers: Vec<Server>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
    engine: Option<std::thread::JoinHandle<()>>,
}

/// Starts a decode worker for `model` on `bus`; returns once it is subscribed and has sent
/// its first heartbeat.
pub async fn start(
    model: WorkerModel,
    config: WorkerConfig,
    bus: Bus,
) -> Result<WorkerHandle, WorkerError> {
    let instance = format!(
        "{}-{}",
        subject::sanitize_token(&config.instance_name),
        v4_bus::short_token()
    );
    v4_engine::alloc::keep_freed_memory();
    let cfg = &model.model.cfg;
    let max_context = config
        .max_context
        .unwrap_or(cfg.max_position_embeddings as u64)
        .min(cfg.max_position_embeddings as u64)
        .max(2);
    let max_batch = config.max_batch.max(1);
    let limits = Limits {
        max_batch,
        max_waiting: config.max_waiting,
        prefill_chunk: config.prefill_chunk.max(1),
        step_token_budget: config.step_token_budget.max(max_batch),
        kv_capacity_tokens: config
            .kv_capacity_tokens
            .unwrap_or(max_batch as u64 * max_context),
        max_context,
    };
    let identity = Identity {
        instance: instance.clone(),
        role: config.role,
        model_id: config.model_id.clone(),
        fingerprint: model.fingerprint.clone(),
        vocab_size: cfg.vocab_size as u64,
        limits,
        interval: config.heartbeat_interval,
        description: config.description.clone(),
    };
    let stats = Arc::new(WorkerStats::default());

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = std_mpsc::channel();
    let batcher = Batcher::new(
        instance.clone(),
        model.model.clone(),
        limits,
        stats.clone(),
        out_tx,
    );
    let engine = std::thread::Builder::new()
        .name(format!("engine-{instance}"))
        .spawn(move || batcher.run(cmd_rx))?;
    let publisher = tokio::spawn(publish_events(
        bus.clone(),
        out_rx,
        identity.clone(),
        config.handoff_timeout,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let cancels = bus.subscribe(subjects::CANCEL).await?;
    tasks.push(tokio::spawn(forward_cancels(
        cancels,
        cmd_tx.clone(),
        stop_rx.clone(),
    )));

    let state = Arc::new(HandlerState {
        identity: identity.clone(),
        commands: std::sync::Mutex::new(cmd_tx.clone()),
        stats: stats.clone(),
        model: model.model.clone(),
    });
    let mut servers = Vec::new();
    match config.role {
        WorkerRole::Prefill => {
            let st = state.clone();
            servers.push(
                bus.serve_json(
                    subjects::prefill(&instance)?.as_str(),
                    None,
                    move |req: PrefillRequest, _ctx| {
                        let st = st.clone();
                        async move { st.accept_prefill(req).await }
                    },
                )
                .await?,
            );
        }
        _ => {
            let st = state.clone();
            servers.push(
                bus.serve_json(
                    subjects::generate(&instance)?.as_str(),
                    None,
                    move |req: GenerateRequest, _ctx| {
                        let st = st.clone();
                        async move { st.accept(req, Arrival::Generate).await }
                    },
                )
                .await?,
            );
            let st = state.clone();
            servers.push(
                bus.serve_json(
                    subjects::handoff(&instance)?.as_str(),
                    None,
                    move |h: KvHandoff, _ctx| {
                        let st = st.clone();
                        async move { st.accept_handoff(h).await }
                    },
                )
                .await?,
            );
        }
    }

    let first = identity.heartbeat(stats.snapshot());
    publish_heartbeat(&bus, &first).await;
    tasks.push(tokio::spawn(heartbeats(
        bus.clone(),
        identity.clone(),
        stats.clone(),
        stop_rx,
    )));
    tracing::info!(
        instance = %instance,
        model = %identity.model_id,
        max_batch,
        max_context,
        "decode worker started"
    );
    Ok(WorkerHandle {
        identity,
        stats,
        commands: cmd_tx,
        bus,
        servers,
        stop: stop_tx,
        tasks,
        publisher: Some(publisher),
        engine: Some(engine),
    })
}

struct HandlerState {
    identity: Identity,
    commands: std::sync::Mutex<std_mpsc::Sender<Command>>,
    stats: Arc<WorkerStats>,
    model: Arc<Model>,
}

impl HandlerState {
    async fn accept_prefill(&self, p: PrefillRequest) -> Result<GenerateAccepted, ServiceError> {
        subject::check_token(&p.decode_worker).map_err(|e| {
            ServiceError::bad_request(format!("decode_worker: {e}")).with_param("decode_worker")
        })?;
        self.accept(
            p.request,
            Arrival::Prefill {
                decode_worker: p.decode_worker,
            },
        )
        .await
    }

    async fn accept_handoff(&self, h: KvHandoff) -> Result<GenerateAccepted, ServiceError> {
        if h.model_fingerprint != self.identity.fingerprint {
            return Err(ServiceError::bad_request(format!(
                "handoff from {} runs another checkpoint ({}) than this worker ({})",
                h.prefill_worker, h.model_fingerprint, self.identity.fingerprint
            ))
            .with_code("model_mismatch"));
        }
        let vocab = self.identity.vocab_size as usize;
        if h.last_logits.0.len() != vocab * 4 {
            return Err(ServiceError::bad_request(format!(
                "last_logits has {} bytes, expected {} ({vocab} f32)",
                h.last_logits.0.len(),
                vocab * 4
            )));
        }
        let last_logits: Vec<f32> = h
            .last_logits
            .0
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let model = self.model.clone();
        let bytes = h.cache.0;
        let cache = tokio::task::spawn_blocking(move || {
            cache_codec::decode_for(&bytes, &model.new_cache())
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?
        .map_err(|e| ServiceError::bad_request(format!("handoff cache: {e}")))?;
        if cache.pos != h.request.prompt.len() {
            return Err(ServiceError::bad_request(format!(
                "handoff cache holds {} positions, the prompt has {}",
                cache.pos,
                h.request.prompt.len()
            )));
        }
        self.accept(
            h.request,
            Arrival::Handoff {
                cache: Box::new(cache),
                last_logits,
            },
        )
        .await
    }

    async fn accept(
        &self,
        req: GenerateRequest,
        arrival: Arrival,
    ) -> Result<GenerateAccepted, ServiceError> {
        if self.stats.draining.load(Relaxed) {
            return Err(ServiceError::unavailable(format!(
                "worker {} is draining",
                self.identity.instance
            )));
        }
        let sampler = validate(&req, &self.identity)?;
        let request_id = req.request_id.clone();
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Add {
            req: Box::new(req),
            sampler: Box::new(sampler),
            arrival,
            reply: tx,
        };
        if self
            .commands
            .lock()
            .expect("not poisoned")
            .send(cmd)
            .is_err()
        {
            return Err(ServiceError::unavailable("the engine thread has stopped"));
        }
        let queue_position = rx
            .await
            .map_err(|_| ServiceError::unavailable("the engine thread has stopped"))??;
        Ok(GenerateAccepted {
            request_id,
            worker: self.identity.instance.clone(),
            queue_position,
        })
    }
}

/// Checks a request against this worker's model and limits; builds its sampler.
fn validate(req: &GenerateRequest, id: &Identity) -> Result<Sampler, ServiceError> {
    let bad = |msg: String, param: &str| Err(ServiceError::bad_request(msg).with_param(param));
    if req.model != id.model_id {
        return bad(
            format!("this worker serves {:?}, not {:?}", id.model_id, req.model),
            "model",
        );
    }
    if req.prompt.is_empty() {
        return bad("the prompt is empty".into(), "prompt");
    }
    if let Some(&bad_id) = req
        .prompt
        .as_slice()
        .iter()
        .find(|&&t| t as u64 >= id.vocab_size)
    {
        return bad(
            format!(
                "token id {bad_id} is outside the model's vocabulary ({})",
                id.vocab_size
            ),
            "prompt",
        );
    }
    if req.max_tokens == 0 {
        return bad("max_tokens must be at least 1".into(), "max_tokens");
    }
    let total = req.prompt.len() as u64 + req.max_tokens as u64;
    if total > id.limits.max_context {
        return Err(ServiceError::bad_request(format!(
            "prompt ({} tokens) + max_tokens ({}) exceeds the context of {} tokens",
            req.prompt.len(),
            req.max_tokens,
            id.limits.max_context
        ))
        .with_param("max_tokens")
        .with_code("context_length_exceeded"));
    }
    if req.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
        return bad(
            format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
            "top_logprobs",
        );
    }
    if req.events.is_empty() {
        return bad("no events subject".into(), "events");
    }
    let mut sampler = Sampler::new(sampling_params(&req.sampling))
        .map_err(|e| ServiceError::bad_request(e.to_string()).with_param("sampling"))?;
    sampler.observe_prompt(req.prompt.as_slice());
    Ok(sampler)
}

fn sampling_params(s: &Sampling) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k as usize,
        top_p: s.top_p,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed,
    }
}

async fn publish_events(
    bus: Bus,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    identity: Identity,
    handoff_timeout: Duration,
) {
    let mut handoffs = tokio::task::JoinSet::new();
    while let Some(o) = rx.recv().await {
        match o {
            Outbound::Event { subject, event } => publish_event(&bus, &subject, &event).await,
            Outbound::Handoff(job) => {
                handoffs.spawn(hand_off(
                    bus.clone(),
                    identity.clone(),
                    *job,
                    handoff_timeout,
                ));
            }
        }
    }
    // Every handoff in flight ends (accepted, or a final error event) before the worker stops.
    while handoffs.join_next().await.is_some() {}
}

async fn publish_event(bus: &Bus, subject: &str, event: &GenerationEvent) {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a generation event");
            return;
        }
    };
    if let Err(e) = bus.publish(subject, &Headers::new(), body.into()).await {
        tracing::warn!(error = %e, request_id = %event.request_id, "cannot publish event");
    }
}

/// The prefill side of the handoff state machine: the job owns the cache until the decode
/// worker accepts it; on any refusal or failure the generation ends here with one final
/// event (cancelled or error), and a timeout also broadcasts a cancel in case the decode
/// worker did take it. A cache too large for the bus's transfer limit is not lost either: the
/// request goes to the decode worker's generate subject instead, and it prefills itself.
async fn hand_off(bus: Bus, identity: Identity, job: HandoffJob, timeout: Duration) {
    let HandoffJob {
        request,
        decode_worker,
        cache,
        last_logits,
    } = job;
    let prompt_tokens = request.prompt.len() as u64;
    let request_id = request.request_id.clone();
    let events = request.events.clone();
    let encoded = tokio::task::spawn_blocking(move || cache_codec::encode(&cache)).await;
    let outcome: Result<(), ServiceError> = async {
        let cache = encoded.map_err(|e| ServiceError::internal(e.to_string()))?;
        let mut logits = Vec::with_capacity(last_logits.len() * 4);
        for x in &last_logits {
            logits.extend_from_slice(&x.to_le_bytes());
        }
        let fallback = request.clone();
        let handoff = KvHandoff {
            request,
            model_fingerprint: identity.fingerprint.clone(),
            prefill_worker: identity.instance.clone(),
            cache: Blob(cache),
            last_logits: Blob(logits),
        };
        let subject =
            subjects::handoff(&decode_worker).map_err(|e| ServiceError::internal(e.to_string()))?;
        match bus
            .request_json::<_, GenerateAccepted>(subject.as_str(), &handoff, timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_payload_too_large() => {
                tracing::info!(request_id = %request_id, error = %e,
                    "cache too large to hand off; the decode worker prefills itself");
                let subject = subjects::generate(&decode_worker)
                    .map_err(|e| ServiceError::internal(e.to_string()))?;
                match bus
                    .request_json::<_, GenerateAccepted>(subject.as_str(), &fallback, timeout)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(v4_bus::CallError::Service(e)) => Err(e),
                    Err(e) => Err(ServiceError::unavailable(format!(
                        "decode worker {decode_worker} did not take the request: {e}"
                    ))),
                }
            }
            Err(v4_bus::CallError::Service(e)) => Err(e),
            Err(e) => {
                if e.kind() == v4_protocol::ErrorKind::Timeout {
                    let cancel = CancelGeneration {
                        request_id: request_id.clone(),
                        reason: "handoff_timeout".into(),
                    };
                    if let Ok(body) = serde_json::to_vec(&cancel) {
                        let _ = bus
                            .publish(subjects::CANCEL, &Headers::new(), body.into())
                            .await;
                    }
                }
                Err(ServiceError::unavailable(format!(
                    "handing the prefilled cache to decode worker {decode_worker} failed: {e}"
                )))
            }
        }
    }
    .await;
    if let Err(e) = outcome {
        let cancelled = e.code.as_deref() == Some("cancelled");
        tracing::warn!(request_id = %request_id, error = %e, "prefill handoff refused");
        let event = GenerationEvent {
            request_id,
            seq: 0,
            token_ids: Default::default(),
            logprobs: vec![],
            finished: Some(Finished {
                reason: if cancelled {
                    FinishReason::Cancelled
                } else {
                    FinishReason::Error
                },
                prompt_tokens,
                cached_prompt_tokens: 0,
                completion_tokens: 0,
                error: (!cancelled).then_some(e),
            }),
            worker: Some(identity.instance.clone()),
        };
        publish_event(&bus, &events, &event).await;
    }
}

async fn forward_cancels(
    mut sub: v4_bus::Subscription,
    commands: std_mpsc::Sender<Command>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                match serde_json::from_slice::<CancelGeneration>(&msg.payload) {
                    Ok(c) => {
                        if commands.send(Command::Cancel { request_id: c.request_id }).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed cancel message"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn publish_heartbeat(bus: &Bus, hb: &WorkerHeartbeat) {
    match serde_json::to_vec(hb) {
        Ok(body) => {
            if let Err(e) = bus
                .publish(subjects::HEARTBEAT, &Headers::new(), body.into())
                .await
            {
                tracing::warn!(error = %e, "cannot publish a heartbeat");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a heartbeat"),
    }
}

async fn heartbeats(
    bus: Bus,
    identity: Identity,
    stats: Arc<WorkerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(identity.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => publish_heartbeat(&bus, &identity.heartbeat(stats.snapshot())).await,
            _ = stop.changed() => return,
        }
    }
}

impl WorkerHandle {
    /// The unique instance id (also in heartbeats and [`GenerateAccepted::worker`]).
    pub fn instance(&self) -> &str {
        &self.identity.instance
    }

    /// Load and lifetime counters (running batch, steps, batch-size sum, …).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The heartbeat this worker would send now.
    pub fn heartbeat(&self) -> WorkerHeartbeat {
        self.identity.heartbeat(self.stats.snapshot())
    }

    /// Graceful drain: refuse new work (heartbeats say `draining`), let running and waiting
    /// generations finish until `deadline`, cancel what is left (each gets its final event),
    /// then stop. In-flight events are all published before this returns.
    pub async fn drain(mut self, deadline: Duration) {
        self.stats.draining.store(true, Relaxed);
        publish_heartbeat(&self.bus, &self.heartbeat()).await;
        for s in self.servers.drain(..) {
            s.drain().await;
        }
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            let s = self.stats.snapshot();
            if s.running == 0 && s.waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.commands.send(Command::CancelAll);
        self.shutdown(false).await;
    }

    /// Stops at once without final events or a last heartbeat: what a crashed worker looks
    /// like to the rest of the mesh (fault tests).
    pub async fn kill(mut self) {
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
        let _ = self.commands.send(Command::Abort);
        self.shutdown(true).await;
    }

    async fn shutdown(&mut self, abort: bool) {
        let _ = self.stop.send(true);
        for s in self.servers.drain(..) {
            if abort {
                drop(s);
            } else {
                s.drain().await;
            }
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // Closing the command channel ends the engine thread.
        let (dead, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.commands, dead));
        if let Some(e) = self.engine.take() {
            let _ = tokio::task::spawn_blocking(move || e.join()).await;
        }
        if let Some(p) = self.publisher.take() {
            let _ = p.await;
        }
        if !abort {
            publish_heartbeat(&self.bus, &self.heartbeat()).await;
            let _ = self.bus.flush().await;
        }
    }
}
