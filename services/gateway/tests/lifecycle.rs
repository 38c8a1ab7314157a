//! Models, health and readiness, authentication, overload, client disconnects, lost workers,
//! counters and stopping.

mod common;

use std::time::{Duration, Instant};

use common::{Script, Stack, chat_body, data_values, test_config};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_ready() {
    let stack = Stack::start(Script::reply("Hi")).await;
    for path in ["/v1/models", "/models"] {
        let r = stack.http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        // Only the served model is listed (deepseek-v4-pro has no worker).
        assert_eq!(
            v,
            json!({"object": "list", "data": [{"id": "deepseek-v4-flash", "object": "model", "owned_by": "deepseek"}]})
        );
    }
    let r = stack.http.get(stack.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = stack.http.get(stack.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready");
    // A model that is configured but not served is a 503, not a 400.
    let (status, v) = stack
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "deepseek-v4-pro", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scheduler_not_ready_and_503() {
    let stack = Stack::with(Script::reply("Hi"), test_config(), false).await;
    let r = stack.http.get(stack.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = stack.http.get(stack.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "not_ready");
    assert!(v["reason"].as_str().unwrap().contains("scheduler"), "{v}");
    let r = stack
        .post("/v1/chat/completions", &chat_body(false, json!({})))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_is_503_with_retry_after() {
    let mut script = Script::reply("Hi");
    script.overloaded = true;
    let stack = Stack::start(script).await;
    let r = stack
        .post(
            "/v1/chat/completions",
            &chat_body(false, json!({"stream": true})),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no worker has room")
    );
    let body = json!({"model": "deepseek-v4-flash", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = stack.post("/v1/messages", &body).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_when_configured() {
    let config = v4_gateway::GatewayConfig {
        api_keys: vec!["sk-test-1234".into()],
        ..test_config()
    };
    let stack = Stack::with(Script::reply("Hi"), config, true).await;
    let body = chat_body(false, json!({}));
    let r = stack.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong-9999")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("****9999"),
        "{v}"
    );
    let r = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .bearer_auth("sk-test-1234")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ab = json!({"model": "deepseek-v4-flash", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = stack.post("/v1/messages", &ab).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = stack
        .http
        .post(stack.url("/v1/messages"))
        .header("x-api-key", "sk-test-1234")
        .json(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = stack
        .http
        .get(stack.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health and readiness need no key.
    let r = stack.http.get(stack.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stack.fake.requests().len(), 2);
    stack.stop().await;
}

fn slow_script() -> Script {
    let mut s = Script::reply(&"word ".repeat(200));
    s.ids_per_event = 1;
    s.delay = Duration::from_millis(50);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_the_generation() {
    let stack = Stack::start(slow_script()).await;
    let mut r = stack
        .post(
            "/v1/chat/completions",
            &chat_body(false, json!({"stream": true})),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Read until some content arrived, then hang up.
    let mut seen = String::new();
    while !seen.contains("word") {
        let chunk = r.chunk().await.unwrap().expect("stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(r);
    let hung_up = Instant::now();
    let id = stack.fake.requests()[0].request_id.clone();
    let cancel = stack
        .fake
        .wait_cancel(&id, Duration::from_secs(2))
        .await
        .expect("no CancelGeneration within 2 s of the disconnect");
    assert_eq!(cancel.reason, "client_disconnected");
    assert!(hung_up.elapsed() < Duration::from_secs(2));
    // The stream task is gone too.
    let deadline = Instant::now() + Duration::from_secs(2);
    while stack.gateway().metrics().streams_active != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stack.gateway().metrics().streams_active, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_while_waiting_for_a_non_streaming_answer_cancels() {
    let stack = Stack::start(slow_script()).await;
    let r = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .json(&chat_body(false, json!({})))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(
        r.is_err(),
        "the answer should take longer than the client waits"
    );
    let id = stack.fake.requests()[0].request_id.clone();
    let cancel = stack.fake.wait_cancel(&id, Duration::from_secs(2)).await;
    assert_eq!(
        cancel.expect("no cancellation").reason,
        "client_disconnected"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_before_the_scheduler_answers_cancels() {
    let mut script = slow_script();
    script.accept_delay = Duration::from_millis(600);
    let stack = Stack::start(script).await;
    let r = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .json(&chat_body(false, json!({"stream": true})))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    if let Ok(r) = r {
        panic!("answered before the scheduler did: {}", r.status());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = stack.fake.requests()[0].request_id.clone();
    let cancel = stack.fake.wait_cancel(&id, Duration::from_secs(2)).await;
    assert_eq!(
        cancel.expect("no cancellation").reason,
        "client_disconnected"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_heartbeats_ends_the_stream_with_an_error() {
    let mut script = slow_script();
    script.die_after = Some(3);
    let stack = Stack::start(script).await;
    let started = Instant::now();
    let body = chat_body(false, json!({"stream": true}));
    let r = stack.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let raw = tokio::time::timeout(Duration::from_secs(5), r.text())
        .await
        .expect("the stream did not end within 5 s")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(raw.ends_with("data: [DONE]\n\n"), "{raw}");
    let values = data_values(&raw);
    let err = values.last().unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped responding"),
        "{raw}"
    );
    let finish = &values[values.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "insufficient_system_resource");
    assert!(raw.contains("word"), "{raw}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_graceful_stop() {
    let stack = Stack::start(Script::reply("Hi")).await;
    let (status, _) = stack
        .post_json("/v1/chat/completions", &chat_body(false, json!({})))
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack.post_json("/v1/chat/completions", &json!({})).await;
    assert_eq!(status, 400);
    let m = stack.gateway().metrics();
    assert_eq!(m.by_status.get(&200), Some(&1));
    assert_eq!(m.by_status.get(&400), Some(&1));
    assert_eq!(m.requests, 2);
    assert_eq!(m.generations, 1);
    assert_eq!(m.in_flight, 0);
    let mut stack = stack;
    let gateway = stack.gateway.take().unwrap();
    let url = gateway.url();
    tokio::time::timeout(Duration::from_secs(10), gateway.stop(true))
        .await
        .expect("graceful stop hung");
    assert!(reqwest::get(format!("{url}/health")).await.is_err());
}
