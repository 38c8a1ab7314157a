//! The gateway's test stack, all in process on one `Bus::in_process()`: the real tokenizer
//! service with the official DeepSeek-V4 tokenizer, a fake scheduler + decode worker that
//! replays a [`Script`] (recording every generate request and every cancellation), and the
//! gateway on 127.0.0.1:0.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use v4_bus::{Bus, Headers};
use v4_gateway::{GatewayConfig, GatewayHandle};
use v4_protocol::ServiceError;
use v4_protocol::generate::{
    CancelGeneration, FinishReason, Finished, GenerateAccepted, GenerateRequest, GenerationEvent,
    ModelsReply, ModelsRequest, ServedModel, TokenLogprob, TopLogprob, WorkerHeartbeat, WorkerRole,
};
use v4_protocol::subject::{scheduler, worker};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::service::{ServiceHandle, ServiceOptions, TokenizerService};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

pub const WORKER: &str = "fake-worker-1";
pub const MODEL: &str = "deepseek-v4-flash";

/// The official DeepSeek-V4 tokenizer, loaded once per test binary; a missing file fails.
pub fn tokenizer() -> Arc<Tokenizer> {
    static TOK: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = PathBuf::from(SHARED).join("tokenizer/deepseek-v4/tokenizer.json");
        assert!(
            path.exists(),
            "required fixture is missing: {}",
            path.display()
        );
        Arc::new(Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}")))
    })
    .clone()
}

/// What the fake worker answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// The reply text (encoded with the tokenizer; EOS appended when `eos`).
    pub text: String,
    pub eos: bool,
    pub ids_per_event: usize,
    pub first_delay: Duration,
    pub delay: Duration,
    /// Reported as `cached_prompt_tokens`.
    pub cached: u64,
    /// End with `reason: error` and this message after the text.
    pub error: Option<String>,
    /// After this many events, stop heartbeating and go silent.
    pub die_after: Option<usize>,
    /// Answer every generate request with `overloaded`.
    pub overloaded: bool,
    /// The scheduler takes this long to accept.
    pub accept_delay: Duration,
}

impl Script {
    pub fn reply(text: &str) -> Script {
        Script {
            text: text.to_string(),
            eos: true,
            ids_per_event: 2,
            first_delay: Duration::ZERO,
            delay: Duration::ZERO,
            cached: 0,
            error: None,
            die_after: None,
            overloaded: false,
            accept_delay: Duration::ZERO,
        }
    }

    /// The ids the fake sends (before `max_tokens`).
    pub fn ids(&self) -> Vec<u32> {
        let tok = tokenizer();
        let mut ids = tok.encode(&self.text);
        if self.eos {
            ids.push(tok.eos_id());
        }
        ids
    }
}

/// The fake scheduler + worker.
pub struct Fake {
    pub script: Mutex<Script>,
    pub max_context: u64,
    pub requests: Mutex<Vec<GenerateRequest>>,
    pub cancels: Mutex<Vec<(CancelGeneration, Instant)>>,
    pub alive: AtomicBool,
}

impl Fake {
    pub fn requests(&self) -> Vec<GenerateRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn cancels(&self) -> Vec<(CancelGeneration, Instant)> {
        self.cancels.lock().unwrap().clone()
    }

    fn cancelled(&self, id: &str) -> bool {
        self.cancels
            .lock()
            .unwrap()
            .iter()
            .any(|(c, _)| c.request_id == id)
    }

    /// Waits up to `timeout` for a cancellation of `id`.
    pub async fn wait_cancel(&self, id: &str, timeout: Duration) -> Option<CancelGeneration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((c, _)) = self.cancels().into_iter().find(|(c, _)| c.request_id == id) {
                return Some(c);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

/// Everything a test talks to.
pub struct Stack {
    pub bus: Bus,
    pub fake: Arc<Fake>,
    pub gateway: Option<GatewayHandle>,
    pub http: reqwest::Client,
    _tokenizer: ServiceHandle,
    _servers: Vec<v4_bus::Server>,
}

/// The test defaults: one HTTP worker, fast liveness checks.
pub fn test_config() -> GatewayConfig {
    GatewayConfig {
        workers: 1,
        liveness_check: Duration::from_millis(50),
        unknown_worker_grace: Duration::from_secs(2),
        cancel_grace: Duration::from_secs(1),
        bus_timeout: Duration::from_secs(10),
        ..GatewayConfig::local()
    }
}

impl Stack {
    pub async fn start(script: Script) -> Stack {
        Stack::with(script, test_config(), true).await
    }

    /// `scheduler`: whether the fake scheduler and worker run at all.
    pub async fn with(script: Script, config: GatewayConfig, scheduler: bool) -> Stack {
        let bus = Bus::in_process();
        let tokenizer = TokenizerService::new(tokenizer(), ServiceOptions::default())
            .serve(&bus)
            .await
            .unwrap();
        let fake = Arc::new(Fake {
            script: Mutex::new(script),
            max_context: 4096,
            requests: Mutex::new(Vec::new()),
            cancels: Mutex::new(Vec::new()),
            alive: AtomicBool::new(true),
        });
        let servers = if scheduler {
            run_fake(&bus, fake.clone()).await
        } else {
            Vec::new()
        };
        let gateway = v4_gateway::start(config, bus.clone()).await.unwrap();
        Stack {
            bus,
            fake,
            gateway: Some(gateway),
            http: reqwest::Client::new(),
            _tokenizer: tokenizer,
            _servers: servers,
        }
    }

    pub fn gateway(&self) -> &GatewayHandle {
        self.gateway.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway().url())
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST, then the status and the JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop(false).await;
        }
    }
}

/// Serves `scheduler::GENERATE` / `MODELS`, listens to cancellations, heartbeats.
async fn run_fake(bus: &Bus, fake: Arc<Fake>) -> Vec<v4_bus::Server> {
    let f = fake.clone();
    let b = bus.clone();
    let generate = bus
        .serve_json(
            scheduler::GENERATE,
            Some(scheduler::QUEUE_GROUP),
            move |req: GenerateRequest, _| {
                let f = f.clone();
                let b = b.clone();
                async move {
                    f.requests.lock().unwrap().push(req.clone());
                    let script = f.script.lock().unwrap().clone();
                    if script.overloaded {
                        return Err(ServiceError::overloaded("no worker has room"));
                    }
                    tokio::time::sleep(script.accept_delay).await;
                    let accepted = GenerateAccepted {
                        request_id: req.request_id.clone(),
                        worker: WORKER.to_string(),
                        queue_position: 0,
                    };
                    tokio::spawn(generate(b, f, req, script));
                    Ok(accepted)
                }
            },
        )
        .await
        .unwrap();
    let max_context = fake.max_context;
    let models = bus
        .serve_json(
            scheduler::MODELS,
            Some(scheduler::QUEUE_GROUP),
            move |_: ModelsRequest, _| async move {
                Ok::<_, ServiceError>(ModelsReply {
                    models: vec![ServedModel {
                        id: MODEL.to_string(),
                        max_context,
                        vocab_size: 129_280,
                        workers: 1,
                        model_fingerprint: "fake".into(),
                        free_slots: 8,
                        description: None,
                    }],
                })
            },
        )
        .await
        .unwrap();
    let mut cancels = bus.subscribe(worker::CANCEL).await.unwrap();
    let f = fake.clone();
    tokio::spawn(async move {
        while let Some(m) = cancels.next().await {
            if let Ok(c) = serde_json::from_slice::<CancelGeneration>(&m.payload) {
                f.cancels.lock().unwrap().push((c, Instant::now()));
            }
        }
    });
    let f = fake.clone();
    let b = bus.clone();
    tokio::spawn(async move {
        while f.alive.load(Ordering::SeqCst) {
            let hb = heartbeat(f.max_context);
            let payload = Bytes::from(serde_json::to_vec(&hb).unwrap());
            let _ = b.publish(worker::HEARTBEAT, &Headers::new(), payload).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    vec![generate, models]
}

fn heartbeat(max_context: u64) -> WorkerHeartbeat {
    WorkerHeartbeat {
        instance: WORKER.to_string(),
        role: WorkerRole::Decode,
        protocol_version: 1,
        model: MODEL.to_string(),
        model_fingerprint: "fake".into(),
        vocab_size: 129_280,
        max_context,
        max_batch: 8,
        running: 0,
        waiting: 0,
        max_waiting: 8,
        kv_capacity_tokens: 1 << 20,
        kv_reserved_tokens: 0,
        draining: false,
        interval_ms: 100,
        steps: 0,
        batch_size_sum: 0,
        max_batch_seen: 0,
        generated_tokens: 0,
        description: None,
    }
}

fn logprobs(ids: &[u32], k: Option<u32>) -> Vec<TokenLogprob> {
    let Some(k) = k else { return Vec::new() };
    ids.iter()
        .map(|&id| TokenLogprob {
            token_id: id,
            logprob: -0.25,
            top: [id, 1000, 1001, 1002]
                .iter()
                .take(k as usize)
                .enumerate()
                .map(|(i, &t)| TopLogprob {
                    token_id: t,
                    logprob: -0.25 - i as f32,
                })
                .collect(),
        })
        .collect()
}

async fn publish(bus: &Bus, to: &str, e: &GenerationEvent) {
    let payload = Bytes::from(serde_json::to_vec(e).unwrap());
    bus.publish(to, &Headers::new(), payload).await.unwrap();
}

/// Replays `script` for `req` on its events inbox.
async fn generate(bus: Bus, fake: Arc<Fake>, req: GenerateRequest, script: Script) {
    let mut ids = script.ids();
    let mut reason = FinishReason::Stop;
    if ids.len() > req.max_tokens as usize {
        ids.truncate(req.max_tokens as usize);
        reason = FinishReason::Length;
    }
    if script.error.is_some() {
        reason = FinishReason::Error;
    }
    let finished = |reason: FinishReason, completion_tokens: u64| Finished {
        reason,
        prompt_tokens: req.prompt.len() as u64,
        cached_prompt_tokens: script.cached,
        completion_tokens,
        error: script
            .error
            .as_ref()
            .filter(|_| reason == FinishReason::Error)
            .map(|m| ServiceError::internal(m.clone())),
    };
    tokio::time::sleep(script.first_delay).await;
    let chunks: Vec<&[u32]> = ids.chunks(script.ids_per_event.max(1)).collect();
    let mut sent = 0u64;
    for (seq, chunk) in chunks.iter().enumerate() {
        if fake.cancelled(&req.request_id) {
            let e = GenerationEvent {
                request_id: req.request_id.clone(),
                seq: seq as u64,
                token_ids: Default::default(),
                logprobs: Vec::new(),
                finished: Some(finished(FinishReason::Cancelled, sent)),
                worker: Some(WORKER.to_string()),
            };
            publish(&bus, &req.events, &e).await;
            return;
        }
        if script.die_after == Some(seq) {
            fake.alive.store(false, Ordering::SeqCst);
            return;
        }
        sent += chunk.len() as u64;
        let last = seq + 1 == chunks.len();
        let e = GenerationEvent {
            request_id: req.request_id.clone(),
            seq: seq as u64,
            token_ids: chunk.to_vec().into(),
            logprobs: logprobs(chunk, req.logprobs),
            finished: last.then(|| finished(reason, sent)),
            worker: Some(WORKER.to_string()),
        };
        publish(&bus, &req.events, &e).await;
        tokio::time::sleep(script.delay).await;
    }
}

/// The frames of an SSE body (separated by a blank line).
pub fn frames(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(String::from)
        .collect()
}

/// The JSON of every `data:` frame, except `[DONE]`.
pub fn data_values(body: &str) -> Vec<Value> {
    frames(body)
        .iter()
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

/// `(event name, data)` of every Anthropic event.
pub fn events(body: &str) -> Vec<(String, Value)> {
    frames(body)
        .iter()
        .map(|f| {
            let name = f
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = f
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// A user turn in OpenAI shape.
pub fn chat_body(thinking: bool, extra: Value) -> Value {
    let mut body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "thinking": {"type": if thinking { "enabled" } else { "disabled" }},
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}
