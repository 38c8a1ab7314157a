//! The scheduler service: heartbeats in, `generate` and `models` served (queue group).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use v4_bus::{Bus, BusError, CallError, Server};
use v4_protocol::generate::{
    GenerateAccepted, GenerateRequest, ModelsReply, ModelsRequest, PrefillRequest, WorkerHeartbeat,
};
use v4_protocol::subject::{scheduler as subjects, worker};
use v4_protocol::{ErrorKind, ServiceError};

use crate::registry::{NoWorker, Registry};

/// Settings of one scheduler instance.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a worker may take to accept a forwarded request.
    pub forward_timeout: Duration,
    /// Workers tried per request (each refusal with `overloaded`/`unavailable` moves on).
    pub max_attempts: usize,
    /// How long to wait for a first heartbeat before answering that nobody serves a model
    /// (a scheduler that just started has not heard from the workers yet).
    pub warmup: Duration,
    /// Prompts at least this long go through a prefill worker when one serves the model
    /// (shorter ones are prefilled by the decode worker itself).
    pub prefill_min_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            forward_timeout: Duration::from_secs(5),
            max_attempts: 3,
            warmup: Duration::from_secs(3),
            prefill_min_tokens: 64,
        }
    }
}

/// A running scheduler.
pub struct SchedulerHandle {
    registry: Registry,
    servers: Vec<Server>,
    stop: watch::Sender<bool>,
    heartbeats: JoinHandle<()>,
}

impl SchedulerHandle {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops taking requests, finishes the ones in flight.
    pub async fn drain(self) {
        for s in self.servers {
            s.drain().await;
        }
        let _ = self.stop.send(true);
        let _ = self.heartbeats.await;
    }
}

/// Starts a scheduler on `bus`; returns once its subscriptions are live.
pub async fn start(config: SchedulerConfig, bus: Bus) -> Result<SchedulerHandle, BusError> {
    let registry = Registry::start();
    let (stop, stop_rx) = watch::channel(false);
    let beats = bus.subscribe(worker::HEARTBEAT).await?;
    let heartbeats = tokio::spawn(feed_heartbeats(beats, registry.clone(), stop_rx));
    let started = tokio::time::Instant::now();

    let (r, b, c) = (registry.clone(), bus.clone(), config.clone());
    let generate = bus
        .serve_json(
            subjects::GENERATE,
            Some(subjects::QUEUE_GROUP),
            move |req: GenerateRequest, _ctx| {
                let (r, b, c) = (r.clone(), b.clone(), c.clone());
                async move { schedule(&r, &b, &c, started, req).await }
            },
        )
        .await?;
    let r = registry.clone();
    let models = bus
        .serve_json(
            subjects::MODELS,
            Some(subjects::QUEUE_GROUP),
            move |_: ModelsRequest, _ctx| {
                let r = r.clone();
                async move { Ok::<ModelsReply, ServiceError>(r.models().await) }
            },
        )
        .await?;
    Ok(SchedulerHandle {
        registry,
        servers: vec![generate, models],
        stop,
        heartbeats,
    })
}

async fn feed_heartbeats(
    mut sub: v4_bus::Subscription,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                match serde_json::from_slice::<WorkerHeartbeat>(&msg.payload) {
                    Ok(hb) => registry.heartbeat(hb).await,
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed heartbeat"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Admission and placement of one request.
async fn schedule(
    registry: &Registry,
    bus: &Bus,
    config: &SchedulerConfig,
    started: tokio::time::Instant,
    req: GenerateRequest,
) -> Result<GenerateAccepted, ServiceError> {
    if req.prompt.is_empty() {
        return Err(ServiceError::bad_request("the prompt is empty").with_param("prompt"));
    }
    if req.max_tokens == 0 {
        return Err(
            ServiceError::bad_request("max_tokens must be at least 1").with_param("max_tokens")
        );
    }
    let tokens = req.prompt.len() as u64 + req.max_tokens as u64;
    let mut tried = HashSet::new();
    let mut last_refusal: Option<ServiceError> = None;
    for _ in 0..config.max_attempts.max(1) {
        let pick = loop {
            match registry.pick(&req.model, tokens, &tried).await {
                Err(NoWorker::UnknownModel { .. }) if started.elapsed() < config.warmup => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other,
            }
        };
        let pick = match pick {
            Ok(p) => p,
            Err(NoWorker::UnknownModel { served }) => {
                return Err(ServiceError::unavailable(format!(
                    "no decode worker serves model {:?} (served: {})",
                    req.model,
                    if served.is_empty() {
                        "none".to_string()
                    } else {
                        served.join(", ")
                    }
                ))
                .with_param("model")
                .with_code("model_not_served"));
            }
            Err(NoWorker::TooLong {
                needed,
                max_context,
            }) => {
                return Err(ServiceError::bad_request(format!(
                    "This model's maximum context length is {max_context} tokens. However, you \
                     requested {needed} tokens ({} in the messages, {} in the completion). \
                     Please reduce the length of the messages or completion.",
                    req.prompt.len(),
                    req.max_tokens
                ))
                .with_param("messages")
                .with_code("context_length_exceeded"));
            }
            Err(NoWorker::Busy { workers }) => {
                return Err(last_refusal.unwrap_or_else(|| {
                    ServiceError::overloaded(format!(
                        "all {workers} decode workers of {:?} are at capacity; retry later",
                        req.model
                    ))
                }));
            }
        };
        if req.prompt.len() >= config.prefill_min_tokens
            && let Some(accepted) = via_prefill(registry, bus, config, &req, &pick.instance).await
        {
            return Ok(accepted);
        }
        let subject =
            worker::generate(&pick.instance).map_err(|e| ServiceError::internal(e.to_string()))?;
        let answer = bus
            .request_json::<_, GenerateAccepted>(subject.as_str(), &req, config.forward_timeout)
            .await;
        if answer.is_err() {
            registry.release(&pick.instance, tokens).await;
        }
        match answer {
            Ok(accepted) => return Ok(accepted),
            Err(CallError::Service(e))
                if matches!(e.kind, ErrorKind::Overloaded | ErrorKind::Unavailable) =>
            {
                tried.insert(pick.instance);
                last_refusal = Some(e);
            }
            Err(CallError::Service(e)) => return Err(e),
            Err(CallError::Bus(BusError::NoResponders { .. })) => {
                // The worker is gone (its heartbeat has not expired yet): try another.
                tried.insert(pick.instance);
            }
            Err(e) => {
                // A timeout may mean the worker accepted: retrying elsewhere could run the
                // generation twice, so give up.
                return Err(ServiceError::unavailable(format!(
                    "decode worker {} did not answer: {e}",
                    pick.instance
                )));
            }
        }
    }
    Err(last_refusal.unwrap_or_else(|| {
        ServiceError::overloaded(format!(
            "no decode worker of {:?} took the request",
            req.model
        ))
    }))
}

/// Sends `req` to a prefill worker that hands the cache to `decode_worker`; `None` when no
/// prefill worker takes it (the decode worker then prefills itself).
async fn via_prefill(
    registry: &Registry,
    bus: &Bus,
    config: &SchedulerConfig,
    req: &GenerateRequest,
    decode_worker: &str,
) -> Option<GenerateAccepted> {
    let tokens = req.prompt.len() as u64;
    let pick = registry.pick_prefill(&req.model, tokens).await.ok()?;
    let subject = worker::prefill(&pick.instance).ok()?;
    let prefill = PrefillRequest {
        request: req.clone(),
        decode_worker: decode_worker.to_string(),
    };
    match bus
        .request_json::<_, GenerateAccepted>(subject.as_str(), &prefill, config.forward_timeout)
        .await
    {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            registry.release(&pick.instance, tokens).await;
            tracing::info!(prefill_worker = %pick.instance, error = %e,
                "prefill worker refused; the decode worker prefills");
            None
        }
    }
}
