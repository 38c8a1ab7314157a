//! Mesh overhead and throughput benchmark.
//!
//! ```sh
//! source scripts/services.sh     # a NATS server (V4_TEST_NATS_URL), unless --in-process
//! cargo run --release -p v4-e2e --example mesh_bench -- [--in-process] [--requests 20] [--tokens 32] [--model DIR]
//! ```
//!
//! 1. The engine in process on the same model and prompt: prefill + first token (time to first
//!    token) and each further decode step (inter-token latency), medians over `--requests`
//!    runs.
//! 2. The same greedy generation as a streaming chat completion through the full mesh
//!    (gateway → tokenizer → scheduler → decode worker, NATS or in-process bus): time from
//!    sending the request to the first content chunk, and the gaps between token chunks.
//!    The difference of the medians is what the mesh adds per request and per token.
//! 3. Aggregate tokens/s with 1 and with `--concurrency` simultaneous streams.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use v4_e2e::{MODEL_ID, Stack, StackOptions};
use v4_engine::model::Logits;
use v4_engine::sampling::argmax;
use v4_protocol::tokenizer::{EncodeChatRequest, ThinkingMode};

struct Args {
    model: Option<std::path::PathBuf>,
    in_process: bool,
    requests: usize,
    tokens: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        model: None,
        in_process: false,
        requests: 20,
        tokens: 32,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).expect("a number");
        match x.as_str() {
            "--in-process" => a.in_process = true,
            "--model" => a.model = it.next().map(Into::into),
            "--requests" => a.requests = num(),
            "--tokens" => a.tokens = num(),
            "--concurrency" => a.concurrency = num(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn body(user: &str, tokens: usize) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": user}],
        "thinking": {"type": "disabled"},
        "temperature": 0,
        "max_tokens": tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// One streamed request: (time to first content chunk, gaps between content chunks,
/// completion tokens, total time).
async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    tokens: usize,
) -> (f64, Vec<f64>, u64, f64) {
    let start = Instant::now();
    let r = http
        .post(url)
        .json(&body(user, tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut buf = String::new();
    let mut first = None;
    let mut last = start;
    let mut gaps = Vec::new();
    let mut completion = 0;
    while let Some(chunk) = s.next().await {
        buf += &String::from_utf8_lossy(&chunk.unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let Some(data) = frame.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                completion = u["completion_tokens"].as_u64().unwrap_or(0);
            }
            let has_content = v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty());
            if has_content {
                let now = Instant::now();
                match first {
                    None => first = Some(now.duration_since(start).as_secs_f64()),
                    Some(_) => gaps.push(now.duration_since(last).as_secs_f64()),
                }
                last = now;
            }
        }
    }
    (
        first.unwrap_or(f64::NAN),
        gaps,
        completion,
        start.elapsed().as_secs_f64(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let stack = if a.in_process {
        Stack::start_in_process(StackOptions {
            max_batch: a.concurrency.max(1),
            model: a.model.clone(),
            ..StackOptions::default()
        })
        .await
    } else {
        Stack::start(StackOptions {
            max_batch: a.concurrency.max(1),
            model: a.model.clone(),
            ..StackOptions::default()
        })
        .await
    };
    let user = "Write a short poem about the sea.";
    let enc = stack
        .tokenizer_client()
        .encode_chat(&EncodeChatRequest::new(
            vec![json!({"role": "user", "content": user})],
            ThinkingMode::Chat,
        ))
        .await
        .unwrap();
    let prompt = enc.token_ids.as_slice().to_vec();

    // 1. The engine in process.
    let model = stack.model.clone();
    let (n, steps) = (a.requests, a.tokens);
    let (engine_ttft, engine_itl) = tokio::task::spawn_blocking(move || {
        let m = &model.model;
        let mut ttft = Vec::new();
        let mut itl = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let mut cache = m.new_cache();
            let out = m
                .forward(&mut [(&mut cache, &prompt[..])], Logits::Last, false)
                .unwrap();
            let mut next = argmax(&out.logits[0]);
            ttft.push(t.elapsed().as_secs_f64());
            for _ in 1..steps {
                let t = Instant::now();
                let out = m
                    .forward(&mut [(&mut cache, &[next][..])], Logits::Last, false)
                    .unwrap();
                next = argmax(&out.logits[0]);
                itl.push(t.elapsed().as_secs_f64());
            }
        }
        (median(ttft), median(itl))
    })
    .await
    .unwrap();

    // 2. Through the mesh, one request at a time.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", stack.base);
    stream_once(&http, &url, user, a.tokens).await; // warm-up
    let mut ttft = Vec::new();
    let mut gaps = Vec::new();
    let mut single_tps = Vec::new();
    for _ in 0..a.requests {
        let (t, g, c, total) = stream_once(&http, &url, user, a.tokens).await;
        ttft.push(t);
        gaps.extend(g);
        single_tps.push(c as f64 / total);
    }
    let (mesh_ttft, mesh_itl) = (median(ttft), median(gaps));

    // 3. Many streams at once.
    let start = Instant::now();
    let results = futures::future::join_all((0..a.concurrency).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move { stream_once(&http, &url, &format!("{user} ({i})"), a.tokens).await }
    }))
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let total: u64 = results.iter().map(|r| r.2).sum();
    let many_tps = total as f64 / elapsed;
    let one_tps = median(single_tps);
    let largest = stack
        .decode
        .iter()
        .map(|w| w.stats().max_batch_seen)
        .max()
        .unwrap_or(0);

    println!("bus: {}", if a.in_process { "in-process" } else { "NATS" });
    println!(
        "prompt {} tokens, {} new tokens, {} requests",
        enc.token_ids.len(),
        a.tokens,
        a.requests
    );
    println!(
        "time to first token p50: engine {:.3} ms, mesh {:.3} ms, mesh adds {:.3} ms",
        engine_ttft * 1e3,
        mesh_ttft * 1e3,
        (mesh_ttft - engine_ttft) * 1e3
    );
    println!(
        "inter-token latency p50: engine {:.3} ms, mesh {:.3} ms, mesh adds {:.3} ms",
        engine_itl * 1e3,
        mesh_itl * 1e3,
        (mesh_itl - engine_itl) * 1e3
    );
    println!(
        "throughput: 1 stream {:.1} tok/s, {} streams {:.1} tok/s aggregate = {:.2}x (largest batch {largest})",
        one_tps,
        a.concurrency,
        many_tps,
        many_tps / one_tps
    );
    stack.stop().await;
}
