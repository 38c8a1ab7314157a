//! Scheduler + decode workers on the tiny fixture model, over the in-process bus and over the
//! real NATS server of `scripts/services.sh` (`V4_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4333`): the generate protocol gives exactly the engine's in-process
//! tokens, batches really form, cancellation frees sequences, refusals are typed.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use v4_bus::{Bus, CallError, Headers};
use v4_engine::generate::{GenerateOptions, generate};
use v4_protocol::ErrorKind;
use v4_protocol::generate::{
    CancelGeneration, FinishReason, GenerateAccepted, GenerateRequest, GenerationEvent,
    ModelsReply, ModelsRequest, Sampling,
};
use v4_protocol::subject::{scheduler, worker};
use v4_scheduler::SchedulerConfig;
use v4_worker::{WorkerConfig, WorkerModel};

const MODEL: &str = "tiny";

fn fixture() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tiny-v4/ckpt-bf16");
    assert!(
        dir.join("config.json").exists(),
        "fixture missing: {} (../shared must sit beside the project)",
        dir.display()
    );
    dir
}

fn model() -> WorkerModel {
    static M: OnceLock<WorkerModel> = OnceLock::new();
    M.get_or_init(|| WorkerModel::load(&fixture()).expect("load the tiny fixture"))
        .clone()
}

async fn nats_bus() -> Bus {
    let url =
        std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
    let bus = match tokio::time::timeout(
        Duration::from_secs(10),
        Bus::connect(&url, "worker-tests"),
    )
    .await
    {
        Ok(Ok(bus)) => bus,
        Ok(Err(e)) => panic!(
            "the NATS test server is unreachable ({e}); start it with `source scripts/services.sh` \
             or point V4_TEST_NATS_URL at one"
        ),
        Err(_) => panic!("connecting to the NATS test server at {url} timed out"),
    };
    bus.with_namespace(&format!("test{}", v4_bus::short_token()))
        .unwrap()
}

fn config(max_batch: usize, max_waiting: usize) -> WorkerConfig {
    WorkerConfig {
        model_id: MODEL.to_string(),
        max_batch,
        max_waiting,
        prefill_chunk: 7,
        heartbeat_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

fn request(id: &str, prompt: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        request_id: id.to_string(),
        model: MODEL.to_string(),
        prompt: prompt.into(),
        sampling: Sampling::greedy(),
        max_tokens,
        stop_token_ids: vec![],
        ignore_eos: true,
        logprobs: None,
        events: String::new(),
        mode: Default::default(),
        key_id: None,
    }
}

/// Sends `req` through the scheduler and collects its events.
struct Run {
    accepted: GenerateAccepted,
    sub: v4_bus::Subscription,
    /// The next expected event number.
    seq: u64,
}

async fn submit(bus: &Bus, mut req: GenerateRequest) -> Result<Run, CallError> {
    req.events = bus.new_inbox();
    let sub = bus.subscribe(&req.events).await.unwrap();
    let accepted: GenerateAccepted = bus
        .request_json(scheduler::GENERATE, &req, Duration::from_secs(10))
        .await?;
    Ok(Run {
        accepted,
        sub,
        seq: 0,
    })
}

impl Run {
    async fn next(&mut self) -> GenerationEvent {
        let msg = tokio::time::timeout(Duration::from_secs(60), self.sub.next())
            .await
            .expect("an event within 60 s")
            .expect("subscription open");
        let e: GenerationEvent = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(e.seq, self.seq, "events arrive in order without gaps");
        self.seq += 1;
        e
    }

    /// All tokens and the final event.
    async fn finish(mut self) -> (Vec<u32>, GenerationEvent) {
        let mut tokens = Vec::new();
        loop {
            let e = self.next().await;
            tokens.extend_from_slice(e.token_ids.as_slice());
            if e.finished.is_some() {
                return (tokens, e);
            }
        }
    }
}

fn reference(prompt: &[u32], n: usize) -> Vec<u32> {
    let m = model();
    generate(&m.model, prompt, &GenerateOptions::greedy(n), |_| {})
        .unwrap()
        .tokens
}

fn prompts() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|i| {
            (0..(3 + 5 * i))
                .map(|j| (j * 37 + i * 11 + 5) % 500)
                .collect()
        })
        .collect()
}

async fn greedy_equals_engine(bus: Bus) {
    let sched = v4_scheduler::start(SchedulerConfig::default(), bus.clone())
        .await
        .unwrap();
    let w = v4_worker::start(model(), config(8, 16), bus.clone())
        .await
        .unwrap();
    for (i, p) in prompts().into_iter().enumerate().take(3) {
        let run = submit(&bus, request(&format!("r{i}"), p.clone(), 9))
            .await
            .unwrap();
        assert_eq!(run.accepted.worker, w.instance());
        let (tokens, last) = run.finish().await;
        assert_eq!(tokens, reference(&p, 9), "prompt {i}");
        let f = last.finished.unwrap();
        assert_eq!(f.reason, FinishReason::Length);
        assert_eq!(f.prompt_tokens, p.len() as u64);
        assert_eq!(f.completion_tokens, 9);
    }
    // The served model list.
    let models: ModelsReply = bus
        .request_json(scheduler::MODELS, &ModelsRequest {}, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(models.models.len(), 1);
    assert_eq!(models.models[0].id, MODEL);
    assert_eq!(models.models[0].workers, 1);
    assert_eq!(models.models[0].max_context, 4096);
    w.drain(Duration::from_secs(5)).await;
    sched.drain().await;
}

#[tokio::test]
async fn greedy_equals_engine_in_process() {
    greedy_equals_engine(Bus::in_process()).await;
}

#[tokio::test]
async fn greedy_equals_engine_over_nats() {
    greedy_equals_engine(nats_bus().await).await;
}

/// Concurrent requests over two workers: every output equals the engine's, both workers
/// take work, and batches of more than one sequence really run.
#[tokio::test]
async fn concurrent_requests_batch_on_two_workers() {
    let bus = nats_bus().await;
    let sched = v4_scheduler::start(SchedulerConfig::default(), bus.clone())
        .await
        .unwrap();
    let w1 = v4_worker::start(model(), config(8, 32), bus.clone())
        .await
        .unwrap();
    let w2 = v4_worker::start(model(), config(8, 32), bus.clone())
        .await
        .unwrap();
    let ps = prompts();
    let mut runs = Vec::new();
    for i in 0..12 {
        let p = ps[i % ps.len()].clone();
        let run = submit(&bus, request(&format!("c{i}"), p.clone(), 8))
            .await
            .unwrap();
        runs.push((p, run));
    }
    let workers: std::collections::HashSet<String> = runs
        .iter()
        .map(|(_, r)| r.accepted.worker.clone())
        .collect();
    assert_eq!(workers.len(), 2, "the scheduler spreads load: {workers:?}");
    let results = futures::future::join_all(runs.into_iter().map(|(p, r)| async move {
        let (tokens, _) = r.finish().await;
        (p, tokens)
    }))
    .await;
    for (p, tokens) in results {
        assert_eq!(tokens, reference(&p, 8));
    }
    let seen = w1.stats().max_batch_seen.max(w2.stats().max_batch_seen);
    assert!(
        seen >= 2,
        "a batch of several sequences ran (largest {seen})"
    );
    for w in [w1, w2] {
        assert_eq!(w.stats().running, 0);
        w.drain(Duration::from_secs(5)).await;
    }
    sched.drain().await;
}

#[tokio::test]
async fn cancel_frees_the_sequence_and_ends_with_a_final_event() {
    let bus = Bus::in_process();
    let sched = v4_scheduler::start(SchedulerConfig::default(), bus.clone())
        .await
        .unwrap();
    let w = v4_worker::start(model(), config(4, 4), bus.clone())
        .await
        .unwrap();
    let mut run = submit(&bus, request("long", vec![0, 5, 7, 9], 3000))
        .await
        .unwrap();
    let first = run.next().await;
    assert_eq!(first.token_ids.len(), 1);
    let cancel = CancelGeneration {
        request_id: "long".into(),
        reason: "client_disconnected".into(),
    };
    bus.publish(
        worker::CANCEL,
        &Headers::new(),
        serde_json::to_vec(&cancel).unwrap().into(),
    )
    .await
    .unwrap();
    let (_, last) = run.finish().await;
    let f = last.finished.unwrap();
    assert_eq!(f.reason, FinishReason::Cancelled);
    assert!(f.completion_tokens >= 1 && f.completion_tokens < 3000);
    assert_eq!(w.stats().running, 0);
    assert_eq!(w.stats().kv_reserved_tokens, 0);
    assert_eq!(w.stats().cancelled, 1);
    w.drain(Duration::from_secs(1)).await;
    sched.drain().await;
}

#[tokio::test]
async fn refusals_are_typed() {
    let bus = Bus::in_process();
    let sched = v4_scheduler::start(SchedulerConfig::default(), bus.clone())
        .await
        .unwrap();
    let w = v4_worker::start(model(), config(1, 0), bus.clone())
        .await
        .unwrap();
    // Longer than the context.
    let err = submit(&bus, request("big", vec![0; 4000], 200))
        .await
        .err()
        .unwrap();
    let e = err.service_error().expect("a service error").clone();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    // Unknown model.
    let mut r = request("m", vec![0, 1], 2);
    r.model = "nope".into();
    let e = submit(&bus, r).await.err().unwrap();
    assert_eq!(
        e.service_error().unwrap().code.as_deref(),
        Some("model_not_served")
    );
    // Token outside the vocabulary: refused by the worker.
    let e = submit(&bus, request("v", vec![0, 100_000], 2))
        .await
        .err()
        .unwrap();
    assert_eq!(e.service_error().unwrap().kind, ErrorKind::BadRequest);
    // One slot, no queue: a second request while the first runs is overloaded.
    let running = submit(&bus, request("a", vec![0, 3, 4], 3000))
        .await
        .unwrap();
    let e = submit(&bus, request("b", vec![0, 3, 4], 5))
        .await
        .err()
        .unwrap();
    assert_eq!(e.service_error().unwrap().kind, ErrorKind::Overloaded);
    w.drain(Duration::from_millis(100)).await;
    let (_, last) = running.finish().await;
    assert_eq!(last.finished.unwrap().reason, FinishReason::Cancelled);
    sched.drain().await;
}

/// A killed worker stops heartbeating: the scheduler stops choosing it within the expiry
/// and requests go to the survivor.
#[tokio::test]
async fn a_killed_worker_is_dropped_from_placement() {
    let bus = nats_bus().await;
    let sched = v4_scheduler::start(SchedulerConfig::default(), bus.clone())
        .await
        .unwrap();
    let w1 = v4_worker::start(model(), config(4, 4), bus.clone())
        .await
        .unwrap();
    let w2 = v4_worker::start(model(), config(4, 4), bus.clone())
        .await
        .unwrap();
    let survivor = w2.instance().to_string();
    w1.kill().await;
    let started = std::time::Instant::now();
    for i in 0..4 {
        let run = submit(&bus, request(&format!("k{i}"), vec![0, 9, 8], 3))
            .await
            .unwrap();
        assert_eq!(run.accepted.worker, survivor);
        run.finish().await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let live = sched.registry().live_workers().await;
    assert!(live.len() <= 2);
    w2.drain(Duration::from_secs(1)).await;
    sched.drain().await;
}

fn prefill_config() -> WorkerConfig {
    WorkerConfig {
        instance_name: "prefill".into(),
        role: v4_protocol::generate::WorkerRole::Prefill,
        ..config(4, 8)
    }
}

fn prefill_scheduler() -> SchedulerConfig {
    SchedulerConfig {
        prefill_min_tokens: 8,
        ..SchedulerConfig::default()
    }
}

/// Long prompts go through the prefill worker, whose cache the decode worker continues:
/// the output is exactly the engine's, events come from the decode worker, counts are exact.
#[tokio::test]
async fn prefill_worker_hands_off_to_the_decode_worker() {
    let bus = nats_bus().await;
    let sched = v4_scheduler::start(prefill_scheduler(), bus.clone())
        .await
        .unwrap();
    let p = v4_worker::start(model(), prefill_config(), bus.clone())
        .await
        .unwrap();
    let d = v4_worker::start(model(), config(4, 8), bus.clone())
        .await
        .unwrap();
    for (i, prompt) in prompts().into_iter().enumerate() {
        let run = submit(&bus, request(&format!("p{i}"), prompt.clone(), 6))
            .await
            .unwrap();
        let expected_worker = if prompt.len() >= 8 {
            p.instance()
        } else {
            d.instance()
        };
        assert_eq!(
            run.accepted.worker,
            expected_worker,
            "prompt of {}",
            prompt.len()
        );
        let mut run = run;
        let first = run.next().await;
        assert_eq!(first.worker.as_deref(), Some(d.instance()));
        let (mut tokens, last) = run.finish().await;
        tokens.splice(0..0, first.token_ids.as_slice().iter().copied());
        assert_eq!(tokens, reference(&prompt, 6), "prompt {i}");
        let f = last.finished.unwrap();
        assert_eq!(
            (f.prompt_tokens, f.completion_tokens),
            (prompt.len() as u64, 6)
        );
    }
    let handed = prompts().iter().filter(|p| p.len() >= 8).count() as u64;
    assert_eq!(p.stats().finished, handed);
    assert_eq!(
        p.stats().generated_tokens,
        0,
        "the prefill worker samples nothing"
    );
    assert_eq!(p.stats().running, 0);
    d.drain(Duration::from_secs(2)).await;
    p.drain(Duration::from_secs(2)).await;
    sched.drain().await;
}

/// Every failure path of the handoff ends the generation with one final event: a cancel
/// during the prefill, and a decode worker that is gone when the cache is ready.
#[tokio::test]
async fn handoff_failures_end_with_one_final_event() {
    let bus = nats_bus().await;
    let sched = v4_scheduler::start(prefill_scheduler(), bus.clone())
        .await
        .unwrap();
    let p = v4_worker::start(model(), prefill_config(), bus.clone())
        .await
        .unwrap();
    let d = v4_worker::start(model(), config(4, 8), bus.clone())
        .await
        .unwrap();
    let long: Vec<u32> = (0..1500u32).map(|i| (i * 7 + 1) % 500).collect();

    // Cancelled while prefilling.
    let run = submit(&bus, request("cx", long.clone(), 4)).await.unwrap();
    assert_eq!(run.accepted.worker, p.instance());
    let cancel = CancelGeneration {
        request_id: "cx".into(),
        reason: "client_disconnected".into(),
    };
    bus.publish(
        worker::CANCEL,
        &Headers::new(),
        serde_json::to_vec(&cancel).unwrap().into(),
    )
    .await
    .unwrap();
    let (tokens, last) = run.finish().await;
    assert!(tokens.is_empty());
    assert_eq!(last.finished.unwrap().reason, FinishReason::Cancelled);
    assert_eq!(p.stats().running, 0);

    // The decode worker dies before the handoff: the prefill worker ends the generation.
    let run = submit(&bus, request("gone", long.clone(), 4))
        .await
        .unwrap();
    assert_eq!(run.accepted.worker, p.instance());
    d.kill().await;
    let (tokens, last) = run.finish().await;
    assert!(tokens.is_empty());
    let f = last.finished.unwrap();
    assert_eq!(f.reason, FinishReason::Error);
    assert!(f.error.is_some());
    assert_eq!(last.worker.as_deref(), Some(p.instance()));
    p.drain(Duration::from_secs(2)).await;
    sched.drain().await;
}

/// Every worker heartbeats at its interval (the gateway and scheduler rely on it).
#[tokio::test]
async fn every_worker_heartbeats_at_its_interval() {
    let bus = nats_bus().await;
    let mut sub = bus.subscribe(worker::HEARTBEAT).await.unwrap();
    let w1 = v4_worker::start(model(), config(4, 4), bus.clone())
        .await
        .unwrap();
    let w2 = v4_worker::start(model(), config(4, 4), bus.clone())
        .await
        .unwrap();
    let mut counts = std::collections::HashMap::<String, u32>::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
        let hb: v4_protocol::generate::WorkerHeartbeat =
            serde_json::from_slice(&m.payload).unwrap();
        *counts.entry(hb.instance).or_default() += 1;
    }
    for w in [&w1, &w2] {
        let n = counts.get(w.instance()).copied().unwrap_or(0);
        assert!(
            n >= 5,
            "{} sent {n} heartbeats in 1.5 s: {counts:?}",
            w.instance()
        );
    }
    w1.drain(Duration::from_secs(1)).await;
    w2.drain(Duration::from_secs(1)).await;
}

/// A cache over the bus's transfer limit is not lost: the decode worker prefills itself and
/// the output is still exactly the engine's.
#[tokio::test]
async fn a_cache_too_large_to_hand_off_falls_back_to_the_decode_worker() {
    let bus = Bus::in_process();
    let small = bus.clone().with_budget(v4_bus::SizeBudget {
        max_transfer: 8 * 1024,
        ..v4_bus::SizeBudget::default()
    });
    let sched = v4_scheduler::start(prefill_scheduler(), bus.clone())
        .await
        .unwrap();
    let p = v4_worker::start(model(), prefill_config(), small)
        .await
        .unwrap();
    let d = v4_worker::start(model(), config(4, 8), bus.clone())
        .await
        .unwrap();
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 13 + 2) % 500).collect();
    let run = submit(&bus, request("big-cache", prompt.clone(), 5))
        .await
        .unwrap();
    assert_eq!(run.accepted.worker, p.instance());
    let (tokens, last) = run.finish().await;
    assert_eq!(tokens, reference(&prompt, 5));
    let f = last.finished.unwrap();
    assert_eq!((f.reason, f.prompt_tokens), (FinishReason::Length, 40));
    assert_eq!(last.worker.as_deref(), Some(d.instance()));
    // The decode worker prefilled the 40 tokens itself (chunks of 7) before its 4 decode steps.
    assert!(d.stats().steps >= 6 + 4, "{:?}", d.stats());
    d.drain(Duration::from_secs(1)).await;
    p.drain(Duration::from_secs(1)).await;
    sched.drain().await;
}
