//! The end-to-end harness: a whole mesh — tokenizer service (the official tokenizer),
//! scheduler, prefill and decode workers, gateway on `127.0.0.1:0` — on the real NATS server
//! of `scripts/services.sh` (`V4_TEST_NATS_URL`), in its own subject namespace, serving a
//! small generated model with the real 129,280-token vocabulary. The in-process engine on the
//! same model is the reference.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use v4_bus::Bus;
use v4_engine::config::TokenIds as CfgIds;
use v4_engine::generate::{GenerateOptions, generate};
use v4_engine::init::{InitOptions, Preset, WeightFormat, preset_config, write_random_checkpoint};
use v4_engine::sampling::{SamplingParams, StopCriteria};
use v4_protocol::tokenizer::{DecodeOpen, EncodeChatRequest, ThinkingMode};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::service::{ServiceHandle, ServiceOptions, TokenizerClient, TokenizerService};
use v4_worker::{WorkerConfig, WorkerHandle, WorkerModel};

/// The API model id the harness serves.
pub const MODEL_ID: &str = "deepseek-v4-flash";

/// `../shared` beside the project root.
pub fn shared() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(
        dir.join("tokenizer/deepseek-v4/tokenizer.json").is_file(),
        "the official tokenizer is missing: expected {} (../shared beside the project root)",
        dir.display()
    );
    dir
}

pub fn official_tokenizer() -> Arc<Tokenizer> {
    static T: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        Arc::new(
            Tokenizer::from_file(&shared().join("tokenizer/deepseek-v4/tokenizer.json"))
                .expect("the official tokenizer loads"),
        )
    })
    .clone()
}

/// A small random model (tiny dimensions) with the real vocabulary, generated once into the
/// system temp dir (atomically: concurrent test binaries may race to create it).
pub fn real_vocab_model() -> WorkerModel {
    static M: OnceLock<WorkerModel> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::temp_dir().join("v4-e2e-tiny-real-vocab-v1");
        if !dir.join("config.json").is_file() {
            let tmp = std::env::temp_dir().join(format!("v4-e2e-gen-{}", v4_bus::unique_token()));
            let mut cfg = preset_config(Preset::Tiny);
            cfg.vocab_size = 129280;
            cfg.bos_token_id = Some(0);
            cfg.eos_token_id = Some(CfgIds::One(1));
            write_random_checkpoint(
                &cfg,
                &tmp,
                &InitOptions {
                    seed: 7,
                    format: WeightFormat::Bf16,
                    max_shard_bytes: 1 << 30,
                },
            )
            .expect("generate the e2e model");
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp); // another process won the race
            }
        }
        WorkerModel::load(&dir).expect("load the e2e model")
    })
    .clone()
}

/// The bus of one test: real NATS, a fresh namespace.
pub async fn nats_bus(name: &str) -> Bus {
    let url =
        std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string());
    let bus = match tokio::time::timeout(Duration::from_secs(10), Bus::connect(&url, name)).await {
        Ok(Ok(bus)) => bus,
        Ok(Err(e)) => panic!(
            "the NATS test server is unreachable ({e}); start it with `source scripts/services.sh` \
             or point V4_TEST_NATS_URL at one"
        ),
        Err(_) => panic!("connecting to the NATS test server at {url} timed out"),
    };
    bus.with_namespace(&format!("e2e{}", v4_bus::short_token()))
        .expect("namespace")
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub decode_workers: usize,
    pub prefill_workers: usize,
    pub max_batch: usize,
    pub heartbeat: Duration,
    /// Serve this checkpoint instead of the generated real-vocabulary model.
    pub model: Option<PathBuf>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            decode_workers: 1,
            prefill_workers: 0,
            max_batch: 8,
            heartbeat: Duration::from_millis(250),
            model: None,
        }
    }
}

/// A running mesh.
pub struct Stack {
    pub bus: Bus,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub decode: Vec<WorkerHandle>,
    pub prefill: Vec<WorkerHandle>,
    pub gateway: v4_gateway::GatewayHandle,
    /// The model the workers serve.
    pub model: WorkerModel,
    scheduler: v4_scheduler::SchedulerHandle,
    tokenizer: ServiceHandle,
}

impl Stack {
    /// The mesh on the real NATS server.
    pub async fn start(opts: StackOptions) -> Stack {
        Stack::start_on(nats_bus("v4-e2e").await, opts).await
    }

    /// The mesh on an in-process bus (what `v4 serve` runs).
    pub async fn start_in_process(opts: StackOptions) -> Stack {
        Stack::start_on(Bus::in_process(), opts).await
    }

    pub async fn start_on(bus: Bus, opts: StackOptions) -> Stack {
        let model = match &opts.model {
            Some(dir) => WorkerModel::load(dir).expect("load the model"),
            None => real_vocab_model(),
        };
        let tokenizer = TokenizerService::new(official_tokenizer(), ServiceOptions::default())
            .serve(&bus)
            .await
            .expect("tokenizer service");
        let scheduler = v4_scheduler::start(
            v4_scheduler::SchedulerConfig {
                prefill_min_tokens: 16,
                ..Default::default()
            },
            bus.clone(),
        )
        .await
        .expect("scheduler");
        let worker = |name: &str, role| WorkerConfig {
            instance_name: name.to_string(),
            model_id: MODEL_ID.to_string(),
            role,
            max_batch: opts.max_batch,
            heartbeat_interval: opts.heartbeat,
            ..WorkerConfig::default()
        };
        let mut decode = Vec::new();
        for i in 0..opts.decode_workers {
            let cfg = worker(
                &format!("decode{i}"),
                v4_protocol::generate::WorkerRole::Decode,
            );
            decode.push(
                v4_worker::start(model.clone(), cfg, bus.clone())
                    .await
                    .expect("decode worker"),
            );
        }
        let mut prefill = Vec::new();
        for i in 0..opts.prefill_workers {
            let cfg = worker(
                &format!("prefill{i}"),
                v4_protocol::generate::WorkerRole::Prefill,
            );
            prefill.push(
                v4_worker::start(model.clone(), cfg, bus.clone())
                    .await
                    .expect("prefill worker"),
            );
        }
        let config = v4_gateway::GatewayConfig {
            keep_alive: Duration::from_millis(500),
            ..v4_gateway::GatewayConfig::local()
        };
        let gateway = v4_gateway::start(config, bus.clone())
            .await
            .expect("gateway");
        let base = format!("http://{}", gateway.local_addr());
        Stack {
            bus,
            base,
            decode,
            prefill,
            gateway,
            model,
            scheduler,
            tokenizer,
        }
    }

    pub async fn stop(self) {
        self.gateway.stop(false).await;
        for w in self.decode.into_iter().chain(self.prefill) {
            w.drain(Duration::from_secs(2)).await;
        }
        self.scheduler.drain().await;
        self.tokenizer.drain().await;
    }

    pub fn tokenizer_client(&self) -> TokenizerClient {
        TokenizerClient::new(self.bus.clone())
    }
}

/// What the engine generates in process for `messages`: prompt ids, output ids, and the
/// output decoded by the tokenizer service as the gateway decodes it.
#[derive(Debug, Clone)]
pub struct Expected {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub content: String,
    pub reasoning: String,
}

pub async fn expected(
    client: &TokenizerClient,
    messages: serde_json::Value,
    mode: ThinkingMode,
    max_tokens: usize,
) -> Expected {
    let msgs = messages.as_array().expect("messages array").clone();
    let enc = client
        .encode_chat(&EncodeChatRequest::new(msgs, mode))
        .await
        .expect("encode");
    let prompt = enc.token_ids.as_slice().to_vec();
    let model = real_vocab_model();
    let tokens = tokio::task::spawn_blocking(move || {
        let opts = GenerateOptions {
            chunk: 0,
            sampling: SamplingParams::greedy(),
            stop: StopCriteria {
                eos_ids: model.model.cfg.eos_ids(),
                stop_ids: vec![],
                max_new_tokens: max_tokens,
            },
            keep_logits: false,
        };
        generate(&model.model, &prompt, &opts, |_| {})
            .unwrap()
            .tokens
    })
    .await
    .unwrap();
    let session = client
        .open_decode(&DecodeOpen::new(
            format!("ref-{}", v4_bus::short_token()),
            enc.reasoning_open,
        ))
        .await
        .expect("open decode");
    let d = session.finish(&tokens).await.expect("decode");
    Expected {
        prompt_tokens: enc.token_ids.len(),
        tokens,
        content: d.content,
        reasoning: d.reasoning_content,
    }
}
