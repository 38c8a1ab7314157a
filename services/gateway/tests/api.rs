//! Both APIs end to end against the fake worker: streaming and non-streaming answers agree
//! (content, reasoning, tool calls, usage), stop strings, logprobs, keep-alives, the Anthropic
//! event sequence, and failed generations.

mod common;

use std::time::Duration;

use common::{Script, Stack, chat_body, data_values, events, test_config, tokenizer};
use serde_json::{Value, json};

const THINKING_REPLY: &str = "Let me think.</think>Hello there!";
const TOOL_REPLY: &str = "I should call the tool.</think>\n\n<｜DSML｜tool_calls>\n\
    <｜DSML｜invoke name=\"get_weather\">\n\
    <｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n\
    </｜DSML｜invoke>\n</｜DSML｜tool_calls>";

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}])
}

/// Ids of the reasoning: the encoded text before `</think>`, plus `</think>`.
fn reasoning_tokens(reasoning: &str) -> u64 {
    tokenizer().encode(reasoning).len() as u64 + 1
}

/// Streams `body` and returns the concatenated reasoning, content, tool calls, the
/// finish_reason, the usage chunk and the raw text.
struct Streamed {
    reasoning: String,
    content: String,
    tool_calls: Vec<Value>,
    finish: Value,
    usage: Value,
    logprobs: Vec<Value>,
    raw: String,
}

async fn stream(stack: &Stack, path: &str, body: &Value) -> Streamed {
    let r = stack.post(path, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().get("content-encoding").is_none());
    let raw = r.text().await.unwrap();
    assert!(raw.ends_with("data: [DONE]\n\n"), "{raw}");
    let chunks = data_values(&raw);
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{raw}"
    );
    let mut s = Streamed {
        reasoning: String::new(),
        content: String::new(),
        tool_calls: Vec::new(),
        finish: Value::Null,
        usage: Value::Null,
        logprobs: Vec::new(),
        raw: raw.clone(),
    };
    for c in &chunks {
        if c.get("error").is_some() {
            continue;
        }
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            assert_eq!(c["choices"], json!([]), "{c}");
            s.usage = u.clone();
            continue;
        }
        let choice = &c["choices"][0];
        let d = &choice["delta"];
        s.reasoning += d["reasoning_content"].as_str().unwrap_or("");
        s.content += d["content"].as_str().unwrap_or("");
        if let Some(calls) = d["tool_calls"].as_array() {
            s.tool_calls.extend(calls.iter().cloned());
        }
        if let Some(lp) = choice["logprobs"]["content"].as_array() {
            s.logprobs.extend(lp.iter().cloned());
        }
        if !choice["finish_reason"].is_null() {
            assert!(s.finish.is_null(), "two finish reasons: {raw}");
            s.finish = choice["finish_reason"].clone();
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_answers_agree_streaming_or_not() {
    let mut script = Script::reply(THINKING_REPLY);
    script.cached = 3;
    let completion = script.ids().len() as u64;
    let stack = Stack::start(script).await;

    let (status, v) = stack
        .post_json("/v1/chat/completions", &chat_body(true, json!({})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "deepseek-v4-flash");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["reasoning_content"], "Let me think.");
    assert_eq!(choice["message"]["content"], "Hello there!");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());

    let prompt = stack.fake.requests()[0].prompt.len() as u64;
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 3},
        "prompt_cache_hit_tokens": 3,
        "prompt_cache_miss_tokens": prompt - 3,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens("Let me think.")},
    });
    assert_eq!(v["usage"], usage);

    let body = chat_body(
        true,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let s = stream(&stack, "/chat/completions", &body).await;
    assert_eq!(s.reasoning, "Let me think.");
    assert_eq!(s.content, "Hello there!");
    assert_eq!(s.finish, "stop");
    assert_eq!(s.usage, usage);
    // The same prompt both times; the fake saw exactly two generations.
    let reqs = stack.fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].prompt, reqs[1].prompt);
    assert_eq!(
        reqs[0].mode,
        v4_protocol::generate::ReasoningMode::ThinkHigh
    );

    // Without include_usage there is no usage chunk.
    let s = stream(
        &stack,
        "/v1/chat/completions",
        &chat_body(true, json!({"stream": true})),
    )
    .await;
    assert!(
        s.usage.is_null() && !s.raw.contains("\"usage\""),
        "{}",
        s.raw
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_in_chat_mode() {
    let stack = Stack::start(Script::reply("Hello there!")).await;
    let body = chat_body(
        false,
        json!({"logprobs": true, "top_logprobs": 2, "temperature": 0}),
    );
    let (status, v) = stack.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["content"], "Hello there!");
    assert!(choice["message"].get("reasoning_content").is_none());
    let lp = choice["logprobs"]["content"].as_array().unwrap();
    // One entry per generated token except EOS.
    assert_eq!(lp.len(), tokenizer().encode("Hello there!").len());
    let text: String = lp.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(text, "Hello there!");
    for e in lp {
        assert_eq!(e["logprob"], -0.25);
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            e["token"].as_str().unwrap()
        );
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], e["token"]);
        assert!(top[1]["bytes"].is_array());
    }
    assert_eq!(stack.fake.requests()[0].logprobs, Some(2));
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    let body = chat_body(
        false,
        json!({"logprobs": true, "top_logprobs": 2, "stream": true}),
    );
    let s = stream(&stack, "/v1/chat/completions", &body).await;
    assert_eq!(s.content, "Hello there!");
    assert_eq!(Value::Array(s.logprobs), choice["logprobs"]["content"]);

    // Thinking mode refuses logprobs, before any worker sees the request.
    let (status, v) = stack
        .post_json(
            "/v1/chat/completions",
            &chat_body(true, json!({"logprobs": true})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "logprobs");
    assert_eq!(stack.fake.requests().len(), 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_agree_streaming_or_not() {
    let script = Script::reply(TOOL_REPLY);
    let completion = script.ids().len() as u64;
    let stack = Stack::start(script).await;
    let body = chat_body(true, json!({"tools": weather_tool()}));
    let (status, v) = stack.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["reasoning_content"],
        "I should call the tool."
    );
    assert_eq!(choice["message"]["content"], "");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(v["usage"]["completion_tokens"], completion);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        reasoning_tokens("I should call the tool.")
    );

    let mut body = body;
    body["stream"] = json!(true);
    let s = stream(&stack, "/v1/chat/completions", &body).await;
    assert_eq!(s.finish, "tool_calls");
    assert_eq!(s.reasoning, "I should call the tool.");
    assert_eq!(s.content, "");
    assert_eq!(s.tool_calls.len(), 1);
    assert_eq!(s.tool_calls[0]["index"], 0);
    assert_eq!(s.tool_calls[0]["function"], calls[0]["function"]);

    // tool_choice "none": the tools are not declared, markup is dropped.
    body["stream"] = json!(false);
    body["tool_choice"] = json!("none");
    let (status, v) = stack.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    let reqs = stack.fake.requests();
    assert!(
        reqs[2].prompt.len() < reqs[0].prompt.len(),
        "tools still declared"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_content_and_cancel() {
    let mut script = Script::reply("Hello there! How are you today? Fine, thanks.");
    script.ids_per_event = 1;
    script.delay = Duration::from_millis(20);
    let total = script.ids().len() as u64;
    let stack = Stack::start(script).await;
    let body = chat_body(false, json!({"stop": ["How", "never"]}));
    let (status, v) = stack.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there! ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let id = stack.fake.requests()[0].request_id.clone();
    let cancel = stack
        .fake
        .wait_cancel(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(cancel.reason, "stop_sequence");
    // Usage is the worker's count at cancellation: more than was shown, less than all.
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        completion >= 4 && completion < total,
        "{completion} of {total}"
    );

    let mut body = body;
    body["stream"] = json!(true);
    let s = stream(&stack, "/v1/chat/completions", &body).await;
    assert_eq!(s.content, "Hello there! ");
    assert_eq!(s.finish, "stop");
    let id = stack.fake.requests()[1].request_id.clone();
    assert!(
        stack
            .fake
            .wait_cancel(&id, Duration::from_secs(1))
            .await
            .is_some()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_while_waiting_for_the_first_token() {
    let mut script = Script::reply("Hello there!");
    script.first_delay = Duration::from_millis(600);
    let config = v4_gateway::GatewayConfig {
        keep_alive: Duration::from_millis(100),
        ..test_config()
    };
    let stack = Stack::with(script, config, true).await;
    let s = stream(
        &stack,
        "/v1/chat/completions",
        &chat_body(false, json!({"stream": true})),
    )
    .await;
    assert_eq!(s.content, "Hello there!");
    let first_content = s.raw.find("Hello").unwrap();
    let keep_alive = s
        .raw
        .find(": keep-alive\n\n")
        .expect("no keep-alive comment");
    assert!(keep_alive < first_content, "{}", s.raw);
    // Anthropic: `ping` events.
    let body = anthropic_body(false, json!({"stream": true}));
    let raw = stack
        .post("/v1/messages", &body)
        .await
        .text()
        .await
        .unwrap();
    let evs = events(&raw);
    let ping = evs
        .iter()
        .position(|(n, _)| n == "ping")
        .expect("no ping event");
    let text = evs
        .iter()
        .position(|(n, _)| n == "content_block_delta")
        .unwrap();
    assert!(ping < text, "{raw}");
    assert_eq!(evs[0].0, "message_start");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_generation_reports_insufficient_system_resource() {
    let mut script = Script::reply("Hello");
    script.error = Some("CUDA out of memory".into());
    let stack = Stack::start(script).await;
    let (status, v) = stack
        .post_json("/v1/chat/completions", &chat_body(false, json!({})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["finish_reason"],
        "insufficient_system_resource"
    );
    let body = chat_body(
        false,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let s = stream(&stack, "/v1/chat/completions", &body).await;
    assert_eq!(s.finish, "insufficient_system_resource");
    let values = data_values(&s.raw);
    let err = values.last().unwrap();
    assert_eq!(err["error"]["type"], "api_error", "{}", s.raw);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CUDA out of memory")
    );
    // Anthropic: the error itself.
    let (status, v) = stack
        .post_json("/v1/messages", &anthropic_body(false, json!({})))
        .await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    stack.stop().await;
}

fn anthropic_body(thinking: bool, extra: Value) -> Value {
    let mut body = json!({
        "model": "deepseek-v4-flash",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        "thinking": if thinking { json!({"type": "enabled", "budget_tokens": 1024}) } else { json!({"type": "disabled"}) },
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// The event names without pings, and the concatenated deltas by kind.
fn anthropic_stream(raw: &str) -> (Vec<String>, String, String, Vec<Value>, Value) {
    let evs = events(raw);
    let mut names = Vec::new();
    let (mut thinking, mut text, mut tools, mut delta) =
        (String::new(), String::new(), Vec::new(), Value::Null);
    for (name, data) in &evs {
        assert_eq!(data["type"], name.as_str(), "{raw}");
        if name == "ping" {
            continue;
        }
        if names.last() != Some(name) || name != "content_block_delta" {
            names.push(name.clone());
        }
        match name.as_str() {
            "content_block_delta" => match data["delta"]["type"].as_str().unwrap() {
                "thinking_delta" => thinking += data["delta"]["thinking"].as_str().unwrap(),
                "text_delta" => text += data["delta"]["text"].as_str().unwrap(),
                "input_json_delta" => tools.push(
                    json!({"partial_json": data["delta"]["partial_json"], "index": data["index"]}),
                ),
                other => panic!("unexpected delta {other}"),
            },
            "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                tools.push(data["content_block"].clone())
            }
            "message_delta" => delta = data.clone(),
            _ => {}
        }
    }
    (names, thinking, text, tools, delta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_message_and_event_sequence() {
    let mut script = Script::reply(THINKING_REPLY);
    script.cached = 2;
    let completion = script.ids().len() as u64;
    let stack = Stack::start(script).await;
    let (status, v) = stack
        .post_json("/anthropic/v1/messages", &anthropic_body(true, json!({})))
        .await;
    assert_eq!(status, 200, "{v}");
    let prompt = stack.fake.requests()[0].prompt.len() as u64;
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "deepseek-v4-flash");
    assert_eq!(
        v["content"],
        json!([
            {"type": "thinking", "thinking": "Let me think.", "signature": ""},
            {"type": "text", "text": "Hello there!"}
        ])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let usage = json!({"input_tokens": prompt - 2, "output_tokens": completion,
                       "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0});
    assert_eq!(v["usage"], usage);

    let r = stack
        .post(
            "/v1/messages",
            &anthropic_body(true, json!({"stream": true})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let raw = r.text().await.unwrap();
    let (names, thinking, text, _, delta) = anthropic_stream(&raw);
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{raw}"
    );
    assert_eq!(thinking, "Let me think.");
    assert_eq!(text, "Hello there!");
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"], usage);
    let start = &events(&raw)[0].1;
    assert_eq!(start["message"]["usage"]["input_tokens"], prompt);
    assert_eq!(start["message"]["content"], json!([]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_tool_use_and_stop_sequences() {
    let stack = Stack::start(Script::reply(TOOL_REPLY)).await;
    let tools = json!([{"name": "get_weather", "description": "Weather of a city",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let body = anthropic_body(true, json!({"tools": tools}));
    let (status, v) = stack.post_json("/v1/messages", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use");
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "{v}");
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(content[1]["type"], "tool_use");
    assert_eq!(content[1]["name"], "get_weather");
    assert_eq!(content[1]["input"], json!({"city": "Paris"}));
    assert!(content[1]["id"].as_str().unwrap().starts_with("toolu_"));

    let mut body = body;
    body["stream"] = json!(true);
    let raw = stack
        .post("/v1/messages", &body)
        .await
        .text()
        .await
        .unwrap();
    let (names, thinking, _, tools, delta) = anthropic_stream(&raw);
    assert_eq!(thinking, "I should call the tool.");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(tools[0]["type"], "tool_use");
    assert_eq!(tools[0]["input"], json!({}));
    let args: Value = serde_json::from_str(tools[1]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(
        names.iter().filter(|n| *n == "content_block_stop").count(),
        2,
        "{raw}"
    );

    // A stop sequence in the text.
    *stack.fake.script.lock().unwrap() = Script::reply("One, two, three.");
    let body = anthropic_body(false, json!({"stop_sequences": ["three"]}));
    let (status, v) = stack.post_json("/v1/messages", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "One, two, "}])
    );
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "three");
    stack.stop().await;
}
