//! The whole mesh over real NATS: gateway → tokenizer → scheduler → (prefill →) decode, the
//! official tokenizer, a generated model with the real vocabulary. Greedy output equals the
//! engine run in process; stream and non-stream agree; usage is exact; batches form; a
//! disconnect frees the sequence; a killed worker ends its streams with an error event.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use v4_e2e::{MODEL_ID, Stack, StackOptions, expected};
use v4_protocol::tokenizer::ThinkingMode;

fn chat_body(user: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": user}],
        "thinking": {"type": "disabled"},
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .flat_map(|frame| frame.lines())
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

/// Content, reasoning, finish reason and usage of an OpenAI stream.
struct Streamed {
    content: String,
    reasoning: String,
    finish: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
    done: bool,
}

fn collect_stream(text: &str) -> Streamed {
    let mut s = Streamed {
        content: String::new(),
        reasoning: String::new(),
        finish: None,
        usage: None,
        error: None,
        done: false,
    };
    for d in sse_data(text) {
        if d == "[DONE]" {
            s.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}"));
        if let Some(e) = v.get("error") {
            s.error = Some(e.clone());
            continue;
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            s.usage = Some(u.clone());
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let delta = &c["delta"];
            s.content += delta["content"].as_str().unwrap_or("");
            s.reasoning += delta["reasoning_content"].as_str().unwrap_or("");
            if let Some(f) = c["finish_reason"].as_str() {
                s.finish = Some(f.to_string());
            }
        }
    }
    s
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_equals_the_in_process_engine() {
    let stack = Stack::start(StackOptions::default()).await;
    let http = client();
    let url = format!("{}/v1/chat/completions", stack.base);
    let user = "Write one sentence about the sea.";
    let exp = expected(
        &stack.tokenizer_client(),
        json!([{"role": "user", "content": user}]),
        ThinkingMode::Chat,
        12,
    )
    .await;

    let r = http
        .post(&url)
        .json(&chat_body(user, 12, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"].as_str().unwrap(), exp.content, "{v}");
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], exp.prompt_tokens as u64);
    assert_eq!(u["completion_tokens"], exp.tokens.len() as u64);
    assert_eq!(
        u["total_tokens"],
        (exp.prompt_tokens + exp.tokens.len()) as u64
    );
    assert_eq!(u["prompt_cache_hit_tokens"], 0);
    assert_eq!(u["prompt_cache_miss_tokens"], exp.prompt_tokens as u64);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert_eq!(
        finish,
        if exp.tokens.len() < 12 {
            "stop"
        } else {
            "length"
        }
    );

    // The same request streamed.
    let r = http
        .post(&url)
        .json(&chat_body(user, 12, true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let s = collect_stream(&r.text().await.unwrap());
    assert!(s.done && s.error.is_none());
    assert_eq!(s.content, exp.content);
    assert_eq!(s.finish.as_deref(), Some(finish));
    assert_eq!(s.usage.as_ref().unwrap(), u);

    // Thinking mode (the default): the output is reasoning, counted as reasoning tokens.
    let exp = expected(
        &stack.tokenizer_client(),
        json!([{"role": "user", "content": user}]),
        ThinkingMode::Thinking,
        10,
    )
    .await;
    let body = json!({"model": MODEL_ID, "messages": [{"role": "user", "content": user}],
        "temperature": 0, "max_tokens": 10});
    let v: Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msg = &v["choices"][0]["message"];
    assert_eq!(
        msg["reasoning_content"].as_str().unwrap_or(""),
        exp.reasoning,
        "{v}"
    );
    assert_eq!(msg["content"].as_str().unwrap_or(""), exp.content);
    let think_end = stack
        .tokenizer_client()
        .info()
        .await
        .unwrap()
        .special
        .think_end;
    let reasoning_tokens = exp
        .tokens
        .iter()
        .position(|&t| t == think_end)
        .map_or(exp.tokens.len(), |p| p + 1);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        reasoning_tokens as u64
    );

    // Anthropic Messages on the same mesh.
    let exp = expected(
        &stack.tokenizer_client(),
        json!([{"role": "user", "content": user}]),
        ThinkingMode::Chat,
        8,
    )
    .await;
    let body = json!({"model": MODEL_ID, "max_tokens": 8, "temperature": 0,
        "thinking": {"type": "disabled"},
        "messages": [{"role": "user", "content": user}]});
    let r = http
        .post(format!("{}/v1/messages", stack.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text: String = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, exp.content, "{v}");
    assert_eq!(v["usage"]["input_tokens"], exp.prompt_tokens as u64);
    assert_eq!(v["usage"]["output_tokens"], exp.tokens.len() as u64);
    stack.stop().await;
}

/// A long prompt goes through the prefill worker and its cache to the decode worker; the
/// answer is still exactly the engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_worker_in_the_path_changes_nothing() {
    let stack = Stack::start(StackOptions {
        prefill_workers: 1,
        ..StackOptions::default()
    })
    .await;
    let user =
        "Summarize: ".to_string() + &"the quick brown fox jumps over the lazy dog. ".repeat(8);
    let exp = expected(
        &stack.tokenizer_client(),
        json!([{"role": "user", "content": user}]),
        ThinkingMode::Chat,
        10,
    )
    .await;
    assert!(exp.prompt_tokens >= 16);
    let v: Value = client()
        .post(format!("{}/v1/chat/completions", stack.base))
        .json(&chat_body(&user, 10, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str().unwrap(),
        exp.content
    );
    assert_eq!(v["usage"]["prompt_tokens"], exp.prompt_tokens as u64);
    assert_eq!(
        stack.prefill[0].stats().finished,
        1,
        "the prefill worker handed it off"
    );
    stack.stop().await;
}

/// 32 simultaneous streams through two decode workers: all correct, and batches form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_streams_on_two_workers() {
    let stack = Stack::start(StackOptions {
        decode_workers: 2,
        max_batch: 16,
        ..StackOptions::default()
    })
    .await;
    let http = client();
    let url = format!("{}/v1/chat/completions", stack.base);
    let n = 32;
    let users: Vec<String> = (0..n).map(|i| format!("Count to {i}, please.")).collect();
    let mut expectations = Vec::new();
    for u in &users {
        expectations.push(
            expected(
                &stack.tokenizer_client(),
                json!([{"role": "user", "content": u}]),
                ThinkingMode::Chat,
                8,
            )
            .await,
        );
    }
    let results = futures::future::join_all(users.iter().map(|u| {
        let http = http.clone();
        let url = url.clone();
        let body = chat_body(u, 8, true);
        async move {
            let r = http.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            collect_stream(&r.text().await.unwrap())
        }
    }))
    .await;
    for (s, exp) in results.iter().zip(&expectations) {
        assert!(s.done && s.error.is_none());
        assert_eq!(s.content, exp.content);
        assert_eq!(
            s.usage.as_ref().unwrap()["completion_tokens"],
            exp.tokens.len() as u64
        );
    }
    let stats: Vec<_> = stack.decode.iter().map(|w| w.stats()).collect();
    assert!(
        stats.iter().all(|s| s.generated_tokens > 0),
        "both workers served: {stats:?}"
    );
    let largest = stats.iter().map(|s| s.max_batch_seen).max().unwrap();
    assert!(
        largest >= 4,
        "the batch really formed (largest batch {largest})"
    );
    stack.stop().await;
}

fn w_generated(stack: &Stack) -> u64 {
    stack.decode[0].stats().generated_tokens
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_frees_the_sequence() {
    let stack = Stack::start(StackOptions::default()).await;
    let r = client()
        .post(format!("{}/v1/chat/completions", stack.base))
        .json(&chat_body("Tell me a long story.", 3000, true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while w_generated(&stack) == 0 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("a chunk")
            .expect("stream open")
            .unwrap();
        seen += &String::from_utf8_lossy(&chunk);
    }
    let w = &stack.decode[0];
    assert_eq!(w.stats().running, 1, "{:?} {seen}", w.stats());
    drop(body);
    wait_until(
        "the worker frees the sequence",
        Duration::from_secs(5),
        || w.stats().running == 0 && w.stats().cancelled == 1,
    )
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_ends_its_streams_with_an_error_and_the_others_continue() {
    let mut stack = Stack::start(StackOptions {
        decode_workers: 2,
        max_batch: 8,
        ..StackOptions::default()
    })
    .await;
    let http = client();
    let url = format!("{}/v1/chat/completions", stack.base);
    let mut streams = Vec::new();
    for i in 0..4 {
        let r = http
            .post(&url)
            .json(&chat_body(&format!("Story number {i}."), 150, true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    // Both workers run streams; kill one.
    wait_until("both workers are busy", Duration::from_secs(10), || {
        stack.decode.iter().all(|w| w.stats().running > 0)
    })
    .await;
    let victim = stack.decode.remove(0);
    let killed_at = Instant::now();
    victim.kill().await;
    let results = futures::future::join_all(streams.into_iter().map(|r| async move {
        let text = r.text().await.unwrap();
        (collect_stream(&text), Instant::now())
    }))
    .await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| s.error.is_some()).collect();
    let ok: Vec<_> = results.iter().filter(|(s, _)| s.error.is_none()).collect();
    assert!(
        !failed.is_empty() && !ok.is_empty(),
        "some streams failed, some finished"
    );
    for (s, at) in &results {
        eprintln!(
            "stream: error {:?} after {:?}",
            s.error.as_ref().map(|e| e["message"].clone()),
            at.duration_since(killed_at)
        );
    }
    for (s, at) in &failed {
        assert!(s.done, "an error stream still ends with [DONE]");
        assert!(
            at.duration_since(killed_at) < Duration::from_secs(5),
            "error event within 5 s, took {:?}",
            at.duration_since(killed_at)
        );
    }
    for (s, _) in &ok {
        assert!(s.done);
        assert_eq!(s.usage.as_ref().unwrap()["completion_tokens"], 150);
    }
    stack.stop().await;
}

/// Bad input through the whole mesh: 4xx with an error body, the workers never see it and
/// keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_and_never_reaches_a_worker() {
    let stack = Stack::start(StackOptions::default()).await;
    let http = client();
    let url = format!("{}/v1/chat/completions", stack.base);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("malformed JSON", http.post(&url).header("content-type", "application/json").body("{\"model\":"), 400),
        ("wrong type", http.post(&url).json(&json!({"model": MODEL_ID, "messages": "hi"})), 400),
        ("unknown model", http.post(&url).json(&json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})), 400),
        ("retired alias", http.post(&url).json(&json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]})), 400),
        ("empty messages", http.post(&url).json(&json!({"model": MODEL_ID, "messages": []})), 400),
        ("max_tokens over the limit", http.post(&url).json(&json!({"model": MODEL_ID, "max_tokens": 10_000_000, "messages": [{"role": "user", "content": "x"}]})), 422),
        ("longer than the context", http.post(&url).json(&json!({"model": MODEL_ID, "max_tokens": 10, "messages": [{"role": "user", "content": "word ".repeat(5000)}]})), 400),
        ("invalid UTF-8", http.post(&url).header("content-type", "application/json").body(vec![b'{', 0xff, 0xfe, b'}']), 400),
        ("oversized body", http.post(&url).header("content-type", "application/json").body(vec![b' '; 33 * 1024 * 1024]), 413),
    ];
    for (what, req, status) in cases {
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    let w = &stack.decode[0];
    assert_eq!(w.stats().steps, 0, "no bad request reached the worker");
    // The mesh still serves.
    let r = http
        .post(&url)
        .json(&chat_body("hello", 3, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stack.stop().await;
}
