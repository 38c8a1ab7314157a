//! The tokenizer service end to end, over the in-process bus and over the real NATS server
//! (`V4_TEST_NATS_URL`, default `nats://127.0.0.1:4333`; unreachable = failure, never a skip),
//! with the official tokenizer and the chat-v4 goldens. Each NATS test runs in its own subject
//! namespace, so parallel tests (and other runs on the same server) never answer each other.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use v4_bus::{Bus, BusError, CallError, SizeBudget};
use v4_protocol::ErrorKind;
use v4_protocol::subject::tokenizer as subjects;
use v4_protocol::tokenizer::{
    CountTokensRequest, DecodeDeltas, DecodeFeed, DecodeOpen, EncodeChatRequest, ReasoningEffort,
    ThinkingMode,
};
use v4_tokenizer::Tokenizer;
use v4_tokenizer::chat::encode::{self, EncodeOptions, Message};
use v4_tokenizer::chat::parse::parse_completion;
use v4_tokenizer::service::{ServiceHandle, ServiceOptions, TokenizerClient, TokenizerService};

const TOKENIZER: &str = "tokenizer/deepseek-v4/tokenizer.json";

fn tokenizer() -> Arc<Tokenizer> {
    static TOK: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = common::shared(TOKENIZER);
        Arc::new(Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}")))
    })
    .clone()
}

fn jsonl(rel: &str) -> Vec<Value> {
    let path = common::shared(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

fn nats_url() -> String {
    std::env::var("V4_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4333".to_string())
}

/// Where a test's services and clients meet: one in-process bus, or one NATS namespace
/// (every handle its own connection).
enum Env {
    InProc(Bus),
    Nats { url: String, ns: String },
}

impl Env {
    fn in_process() -> Env {
        Env::InProc(Bus::in_process())
    }

    fn nats() -> Env {
        Env::Nats {
            url: nats_url(),
            ns: format!("test.{}", v4_bus::unique_token()),
        }
    }

    async fn bus(&self) -> Bus {
        match self {
            Env::InProc(b) => b.clone(),
            Env::Nats { url, ns } => {
                let bus = match tokio::time::timeout(
                    Duration::from_secs(10),
                    Bus::connect(url, "v4-tokenizer-tests"),
                )
                .await
                {
                    Ok(Ok(bus)) => bus,
                    Ok(Err(e)) => panic!(
                        "the NATS test server is unreachable ({e}); start it with \
                         `source scripts/services.sh` or point V4_TEST_NATS_URL at one"
                    ),
                    Err(_) => panic!("connecting to the NATS test server at {url} timed out"),
                };
                bus.with_namespace(ns).unwrap()
            }
        }
    }

    async fn client(&self) -> TokenizerClient {
        TokenizerClient::new(self.bus().await).with_timeout(Duration::from_secs(60))
    }

    async fn start(&self, options: ServiceOptions) -> ServiceHandle {
        self.start_on(self.bus().await, options).await
    }

    async fn start_on(&self, bus: Bus, options: ServiceOptions) -> ServiceHandle {
        TokenizerService::new(tokenizer(), options)
            .serve(&bus)
            .await
            .unwrap()
    }
}

fn named(name: &str) -> ServiceOptions {
    ServiceOptions {
        instance_name: name.to_string(),
        ..ServiceOptions::default()
    }
}

/// The service request for a golden encoder input, when the protocol can express it (valid
/// mode and effort, boolean flags).
fn golden_request(r: &Value) -> Option<EncodeChatRequest> {
    let kw = &r["input"]["kwargs"];
    let mode = match kw["thinking_mode"].as_str()? {
        "chat" => ThinkingMode::Chat,
        "thinking" => ThinkingMode::Thinking,
        _ => return None,
    };
    let flag = |k: &str| match kw.get(k) {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    };
    let mut req = EncodeChatRequest::new(r["input"]["messages"].as_array()?.clone(), mode);
    req.reasoning_effort = match kw.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(v) if v == "high" => Some(ReasoningEffort::High),
        Some(v) if v == "max" => Some(ReasoningEffort::Max),
        Some(_) => return None,
    };
    req.drop_thinking = flag("drop_thinking")?;
    req.add_bos = flag("add_default_bos_token")?;
    req.context = match kw.get("context") {
        None | Some(Value::Null) => None,
        Some(Value::Array(c)) => Some(c.clone()),
        Some(_) => return None,
    };
    Some(req)
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Equality of long id lists without printing megabytes on failure.
fn assert_same_ids(got: &[u32], want: &[u32], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} ids vs {} expected; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

async fn encode_golden_chats(env: Env) {
    let handle = env.start(named("golden")).await;
    let client = env.client().await;
    let (mut ok, mut errors) = (0, 0);
    for r in jsonl("fixtures/chat-v4/encode.jsonl") {
        let id = r["id"].as_str().unwrap();
        let Some(mut req) = golden_request(&r) else {
            continue;
        };
        req.return_prompt = true;
        let result = client.encode_chat(&req).await;
        if r.get("error_type").is_some() {
            let e = result.expect_err(id);
            assert_eq!(
                e.service_error().map(|e| e.kind),
                Some(ErrorKind::BadRequest),
                "{id}: {e}"
            );
            errors += 1;
            continue;
        }
        let reply = result.unwrap_or_else(|e| panic!("{id}: {e}"));
        let want = ids_of(&r["token_ids"]);
        assert_same_ids(reply.token_ids.as_slice(), &want, id);
        assert_eq!(reply.prompt_tokens, want.len() as u64, "{id}");
        assert_eq!(reply.prompt.as_deref(), r["prompt"].as_str(), "{id}");
        assert_eq!(reply.reasoning_open, want.last() == Some(&128_821), "{id}");
        ok += 1;
    }
    assert!(
        ok >= 120 && errors >= 5,
        "{ok} goldens encoded, {errors} errors checked"
    );
    handle.drain().await;
}

async fn count_tokens(env: Env) {
    let handle = env.start(named("count")).await;
    let client = env.client().await;
    let text = "Hello! 毕老师！1 + 1 = 2 深度求索的模型很强大。";
    let n = client
        .count_tokens(&CountTokensRequest::text(text))
        .await
        .unwrap()
        .tokens;
    assert_eq!(n, tokenizer().encode(text).len() as u64);
    let golden = jsonl("fixtures/chat-v4/encode.jsonl")
        .into_iter()
        .find(|r| r["id"] == "official-1")
        .unwrap();
    let req = CountTokensRequest::chat(golden_request(&golden).unwrap());
    let n = client.count_tokens(&req).await.unwrap().tokens;
    assert_eq!(n, ids_of(&golden["token_ids"]).len() as u64);
    for bad in [
        CountTokensRequest::default(),
        CountTokensRequest {
            text: Some("x".into()),
            ..req.clone()
        },
    ] {
        let e = client.count_tokens(&bad).await.unwrap_err();
        assert_eq!(
            e.service_error().map(|e| e.kind),
            Some(ErrorKind::BadRequest),
            "{e}"
        );
    }
    handle.drain().await;
}

async fn encode_decode_and_info(env: Env) {
    let handle = env.start(named("text")).await;
    let client = env.client().await;
    let tok = tokenizer();
    let info = client.info().await.unwrap();
    assert_eq!(info.instance, handle.instance());
    assert_eq!(info.protocol_version, v4_protocol::PROTOCOL_VERSION);
    assert_eq!(info.tokenizer_sha256, tok.sha256_hex());
    assert_eq!(
        (info.vocab_size, info.special.bos, info.special.think_start),
        (129_280, 0, 128_821)
    );
    let text = "<｜User｜>写一个快速排序<｜Assistant｜><think>好的</think>def qsort(a): return a";
    let reply = client.encode_text(text).await.unwrap();
    assert_eq!(
        reply.token_ids.as_slice(),
        &[
            128803, 2935, 1057, 9789, 23758, 128804, 128821, 3648, 128822, 3465, 5618, 34670, 6036,
            2605, 1354, 260
        ]
    );
    assert_eq!(reply.tokens, 16);
    let back = client
        .decode_ids(reply.token_ids.as_slice(), false)
        .await
        .unwrap();
    assert_eq!(back.text, text);
    let with_eos = [0, 23166, 1];
    let skipped = client.decode_ids(&with_eos, true).await.unwrap().text;
    assert_eq!(skipped, "Hi");
    let e = client.decode_ids(&[5, 200_000], false).await.unwrap_err();
    let e = e.service_error().expect("service error");
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::BadRequest, Some("token_ids"))
    );
    assert!(e.message.contains("200000"), "{e}");
    handle.drain().await;
}

/// What a whole decode session produced.
#[derive(Debug, Default, PartialEq)]
struct Collected {
    reasoning: String,
    content: String,
    calls: Vec<(String, String)>,
}

impl Collected {
    fn add(&mut self, d: DecodeDeltas) {
        self.reasoning.push_str(&d.reasoning_content);
        self.content.push_str(&d.content);
        for c in d.tool_calls {
            assert_eq!(c.index as usize, self.calls.len(), "tool-call index");
            assert!(c.id.starts_with("call_"), "{}", c.id);
            self.calls.push((c.name, c.arguments));
        }
    }
}

async fn decode_stream(
    client: &TokenizerClient,
    ids: &[u32],
    thinking: bool,
    one_by_one: bool,
) -> Collected {
    let mut session = client
        .open_decode(&DecodeOpen::new("req-1", thinking))
        .await
        .unwrap();
    let mut got = Collected::default();
    if one_by_one {
        for &id in ids {
            got.add(session.feed(&[id]).await.unwrap());
        }
        let last = session.finish(&[]).await.unwrap();
        assert!(last.finished && last.tokens_fed == ids.len() as u64);
        got.add(last);
    } else {
        got.add(session.finish(ids).await.unwrap());
    }
    got
}

/// Arguments compared as JSON values (the streaming parser re-renders them as strict JSON;
/// the reference copies `string="false"` values verbatim).
fn same_args(got: &str, want: &str) -> bool {
    match (
        serde_json::from_str::<Value>(got),
        serde_json::from_str::<Value>(want),
    ) {
        (Ok(a), Ok(b)) => a == b,
        (Ok(_), Err(_)) => true, // reference arguments that are not JSON (documented leniency)
        _ => false,
    }
}

async fn streaming_decode_matches_the_parser(env: Env) {
    let handle = env.start(named("stream")).await;
    let client = env.client().await;
    let mut checked = 0;
    for r in jsonl("fixtures/chat-v4/parse.jsonl") {
        if r.get("expected").is_none() {
            continue;
        }
        let id = r["id"].as_str().unwrap();
        let text = r["input"]["text"].as_str().unwrap();
        let mode = r["input"]["thinking_mode"].as_str().unwrap();
        let want = parse_completion(text, mode).unwrap_or_else(|e| panic!("{id}: {e}"));
        let ids = ids_of(&r["completion_token_ids"]);
        let got = decode_stream(&client, &ids, mode == "thinking", true).await;
        assert_eq!(got.reasoning, want.reasoning_content, "{id}: reasoning");
        assert_eq!(got.content, want.content, "{id}: content");
        assert_eq!(got.calls.len(), want.tool_calls.len(), "{id}: tool calls");
        for ((name, args), call) in got.calls.iter().zip(&want.tool_calls) {
            assert_eq!(name, &call.function.name, "{id}");
            assert!(
                same_args(args, &call.function.arguments),
                "{id}: {args} vs {}",
                call.function.arguments
            );
        }
        if checked % 8 == 0 {
            let batch = decode_stream(&client, &ids, mode == "thinking", false).await;
            assert_eq!(batch, got, "{id}: one feed vs token by token");
        }
        checked += 1;
    }
    assert!(checked >= 30, "{checked} completions");
    assert_eq!(
        handle.session_count().await.unwrap(),
        0,
        "finished sessions are freed"
    );
    handle.drain().await;
}

async fn two_instances_share_the_queue_group(env: Env) {
    let a = env.start(named("alpha")).await;
    let b = env.start(named("beta")).await;
    let client = env.client().await;
    let mut served = BTreeSet::new();
    for _ in 0..40 {
        served.insert(client.info().await.unwrap().instance);
    }
    let both: BTreeSet<String> = [a.instance().to_string(), b.instance().to_string()].into();
    assert_eq!(served, both, "both instances answer");
    // Sessions are pinned to the instance that opened them.
    let ids = tokenizer().encode("Hello there, friend.");
    let mut opened_on = BTreeSet::new();
    for k in 0..12 {
        let mut s = client
            .open_decode(&DecodeOpen::new(format!("r{k}"), false))
            .await
            .unwrap();
        let opened = s.opened().clone();
        opened_on.insert(opened.instance.clone());
        assert_eq!(
            opened.feed_subject,
            subjects::session_feed(&opened.instance)
                .unwrap()
                .to_string()
        );
        let first = s.feed(&ids).await.unwrap();
        assert_eq!(first.content, "Hello there, friend.");
        // The other instance does not know the session.
        let other = if opened.instance == a.instance() {
            b.instance()
        } else {
            a.instance()
        };
        let feed = DecodeFeed {
            session: opened.session.clone(),
            seq: 1,
            token_ids: vec![].into(),
            finished: false,
        };
        let e = client
            .feed(subjects::session_feed(other).unwrap().as_str(), &feed)
            .await
            .unwrap_err();
        assert_eq!(
            e.service_error().map(|e| e.kind),
            Some(ErrorKind::NotFound),
            "{e}"
        );
        assert!(s.finish(&[]).await.unwrap().finished);
    }
    assert_eq!(opened_on, both, "sessions opened on both instances");
    // One instance drains: the other serves everything, the drained one's sessions are gone.
    let a_feed = subjects::session_feed(a.instance()).unwrap().to_string();
    a.drain().await;
    for _ in 0..10 {
        assert_eq!(client.info().await.unwrap().instance, b.instance());
    }
    let feed = DecodeFeed {
        session: "x".into(),
        seq: 0,
        token_ids: vec![].into(),
        finished: false,
    };
    let e = client.feed(&a_feed, &feed).await.unwrap_err();
    assert!(
        matches!(e, CallError::Bus(BusError::NoResponders { .. })),
        "{e:?}"
    );
    b.drain().await;
}

async fn sessions_expire_close_and_check_order(env: Env) {
    let ttl = Duration::from_millis(300);
    let handle = env
        .start(ServiceOptions {
            session_ttl: ttl,
            ..named("ttl")
        })
        .await;
    let client = env.client().await;
    let not_found = |r: Result<DecodeDeltas, CallError>| {
        let e = r.expect_err("expected not_found");
        let e = e.service_error().cloned().expect("a service error");
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(e.param.as_deref(), Some("session"));
        e
    };
    let ids = tokenizer().encode("Hi there");
    let opened = client
        .open_decode(&DecodeOpen::new("r", false))
        .await
        .unwrap()
        .opened()
        .clone();
    assert_eq!(opened.idle_ttl_ms, 300);
    let feed = |seq: u64| DecodeFeed {
        session: opened.session.clone(),
        seq,
        token_ids: ids.clone().into(),
        finished: false,
    };
    let first = client.feed(&opened.feed_subject, &feed(0)).await.unwrap();
    assert_eq!(first.content, "Hi there");
    // A retry of the last feed gets the same answer; a gap is refused.
    let again = client.feed(&opened.feed_subject, &feed(0)).await.unwrap();
    assert_eq!(again, first);
    let e = client
        .feed(&opened.feed_subject, &feed(5))
        .await
        .unwrap_err();
    let e = e.service_error().unwrap();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::BadRequest, Some("seq"))
    );
    // Idle past the TTL: gone.
    tokio::time::sleep(ttl * 2).await;
    let e = not_found(client.feed(&opened.feed_subject, &feed(1)).await);
    assert!(e.message.contains("expired"), "{e}");
    // Unknown.
    let unknown = DecodeFeed {
        session: "no-such-session".into(),
        ..feed(0)
    };
    not_found(client.feed(&opened.feed_subject, &unknown).await);
    // Closed.
    let s = client
        .open_decode(&DecodeOpen::new("r2", true))
        .await
        .unwrap();
    let opened2 = s.opened().clone();
    assert!(s.close().await.unwrap());
    let closed = DecodeFeed {
        session: opened2.session.clone(),
        ..feed(0)
    };
    not_found(client.feed(&opened2.feed_subject, &closed).await);
    let again = client
        .close(&opened2.close_subject, &opened2.session)
        .await
        .unwrap();
    assert!(!again.found);
    // The sweep frees idle sessions without any feed.
    client
        .open_decode(&DecodeOpen::new("r3", false))
        .await
        .unwrap();
    assert_eq!(handle.session_count().await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.session_count().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "idle session never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.drain().await;
}

/// A conversation whose prompt has over a million tokens: (user text, prompt, prompt ids).
fn million_token_prompt() -> &'static (String, String, Vec<u32>) {
    static BIG: OnceLock<(String, String, Vec<u32>)> = OnceLock::new();
    BIG.get_or_init(|| {
        let paragraph = "The quick brown fox jumps over the lazy dog; 深度求索的模型很强大。\n\
                         fn main() { let v: Vec<u32> = (0..12345).collect(); println!(\"{}\", v.len()); }\n";
        let tok = tokenizer();
        let per = tok.encode(paragraph).len();
        let text = paragraph.repeat(1_000_000 / per + 10);
        let msgs = [Message::user(text.clone())];
        let prompt =
            encode::encode_messages(&msgs, &EncodeOptions::new(encode::ThinkingMode::Thinking))
                .unwrap();
        let ids = tok.encode(&prompt);
        assert!(ids.len() > 1_000_000, "{} tokens", ids.len());
        (text, prompt, ids)
    })
}

async fn million_token_prompt_round_trips(env: Env) {
    let handle = env.start(named("big")).await;
    let client = env.client().await;
    let (text, prompt, want) = million_token_prompt();
    let budget = client.bus().budget();
    let req = EncodeChatRequest::new(
        vec![json!({"role": "user", "content": text})],
        ThinkingMode::Thinking,
    );
    assert!(serde_json::to_vec(&req).unwrap().len() > 3 * budget.payload_limit());
    let reply = client.encode_chat(&req).await.unwrap();
    assert_same_ids(reply.token_ids.as_slice(), want, "1M-token prompt ids");
    assert!(reply.reasoning_open);
    let n = client
        .count_tokens(&CountTokensRequest::chat(req))
        .await
        .unwrap()
        .tokens;
    assert_eq!(n, want.len() as u64);
    let back = client.decode_ids(want, false).await.unwrap();
    assert!(
        back.text == *prompt,
        "decoded prompt differs ({} vs {} bytes)",
        back.text.len(),
        prompt.len()
    );
    handle.drain().await;
}

async fn oversize_payload_is_a_typed_error(env: Env) {
    let service_budget = SizeBudget {
        max_transfer: 512 * 1024,
        ..SizeBudget::default()
    };
    let bus = env.bus().await.with_budget(service_budget);
    let handle = env.start_on(bus, named("small")).await;
    let client = env.client().await;
    let text = "All work and no play makes Jack a dull boy. ".repeat(40_000); // 1.7 MB
    // Over the caller's own transfer limit: refused before anything is sent.
    let small_client = TokenizerClient::new(client.bus().clone().with_budget(SizeBudget {
        max_transfer: 1024 * 1024,
        ..SizeBudget::default()
    }));
    match small_client.encode_text(&text).await {
        Err(CallError::Bus(BusError::PayloadTooLarge(p))) => {
            assert_eq!(p.subject, subjects::ENCODE_TEXT);
            assert_eq!(p.limit, 1024 * 1024);
            assert!(p.bytes > p.limit);
        }
        other => panic!(
            "expected PayloadTooLarge, got {:?}",
            other.map(|r| r.tokens)
        ),
    }
    // Within the caller's limit but over the service's: the service's typed error.
    let e = client.encode_text(&text).await.unwrap_err();
    assert!(e.is_payload_too_large(), "{e}");
    assert_eq!(
        e.service_error().map(|e| e.kind),
        Some(ErrorKind::PayloadTooLarge)
    );
    // One raw message over the per-message budget.
    let raw = client
        .bus()
        .request(
            subjects::ENCODE_TEXT,
            &v4_bus::Headers::new(),
            bytes::Bytes::from(vec![b' '; 2 << 20]),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(raw, Err(BusError::PayloadTooLarge(_))), "{raw:?}");
    handle.drain().await;
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::in_process()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::nats()).await
                }
            )*
        }
    };
}

suite!(
    encode_golden_chats,
    count_tokens,
    encode_decode_and_info,
    streaming_decode_matches_the_parser,
    two_instances_share_the_queue_group,
    sessions_expire_close_and_check_order,
    million_token_prompt_round_trips,
    oversize_payload_is_a_typed_error,
);

/// The `v4-tokenizer` binary serves over NATS and, on SIGTERM, finishes the request in flight
/// and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_drains_on_sigterm() {
    let env = Env::nats();
    let Env::Nats { url, ns } = &env else {
        unreachable!()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_v4-tokenizer"))
        .args([
            "--nats-url",
            url,
            "--namespace",
            ns,
            "--instance",
            "bin-test",
        ])
        .arg("--tokenizer")
        .arg(common::shared(TOKENIZER))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start v4-tokenizer");
    let client = env.client().await.with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        match client.info().await {
            Ok(info) => break info,
            Err(e) => {
                assert!(Instant::now() < deadline, "binary never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(info.instance.starts_with("bin-test-"), "{}", info.instance);
    // A large request in flight when SIGTERM arrives still gets its answer.
    let text = "Draining must finish this request. ".repeat(100_000);
    let slow = {
        let client = env.client().await;
        let text = text.clone();
        tokio::spawn(async move { client.encode_text(&text).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = slow.await.unwrap().expect("in-flight request answered");
    assert_eq!(reply.tokens, tokenizer().encode(&text).len() as u64);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("binary did not exit after SIGTERM")
        .unwrap();
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut log).await;
    }
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("drained"), "{log}");
    let e = client.info().await.unwrap_err();
    assert!(
        matches!(e, CallError::Bus(BusError::NoResponders { .. })),
        "{e:?}"
    );
}
