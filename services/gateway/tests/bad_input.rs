//! Bad input never yields a 5xx and never reaches a worker: each case's status, error body
//! shape and `param`, and afterwards the fake scheduler has seen no request at all.

mod common;

use common::{Script, Stack, test_config};
use serde_json::{Value, json};

/// How a case is sent.
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: Body,
    status: u16,
    /// OpenAI `error.param` (checked when set).
    param: Option<&'static str>,
    /// A piece of the message.
    message: &'static str,
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn chat(extra: Value) -> Body {
    let mut b = json!({"model": "deepseek-v4-flash", "messages": user("hi"),
                       "thinking": {"type": "disabled"}});
    if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    Body::Json(b)
}

fn messages(extra: Value) -> Body {
    let mut b = json!({"model": "deepseek-v4-flash", "max_tokens": 16, "messages": user("hi")});
    if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    Body::Json(b)
}

fn cases() -> Vec<Case> {
    let c = |name, path, body, status, param, message| Case {
        name,
        path,
        body,
        status,
        param,
        message,
    };
    let oa = "/v1/chat/completions";
    let an = "/v1/messages";
    let long_prompt = "lorem ipsum dolor sit amet ".repeat(40);
    vec![
        c(
            "malformed json",
            oa,
            Body::Raw("application/json", b"{\"model\": ".to_vec()),
            400,
            None,
            "not valid JSON",
        ),
        c(
            "not an object",
            oa,
            Body::Raw("application/json", b"[1, 2]".to_vec()),
            400,
            None,
            "JSON object",
        ),
        c(
            "invalid utf-8",
            oa,
            Body::Raw("application/json", b"{\"model\": \"\xff\xfe\"}".to_vec()),
            400,
            None,
            "UTF-8",
        ),
        c(
            "empty body",
            oa,
            Body::Raw("application/json", Vec::new()),
            400,
            None,
            "empty",
        ),
        c(
            "too large",
            oa,
            Body::Raw("application/json", vec![b' '; 80 * 1024]),
            413,
            None,
            "limit",
        ),
        c(
            "far too large",
            an,
            Body::Raw("application/json", vec![b' '; 8 << 20]),
            413,
            None,
            "limit",
        ),
        c(
            "text/plain",
            oa,
            Body::Raw("text/plain", b"{}".to_vec()),
            415,
            None,
            "application/json",
        ),
        c(
            "form",
            an,
            Body::Raw("application/x-www-form-urlencoded", b"a=b".to_vec()),
            415,
            None,
            "application/json",
        ),
        c(
            "no model",
            oa,
            Body::Json(json!({"messages": user("hi")})),
            400,
            Some("model"),
            "model is required",
        ),
        c(
            "unknown model",
            oa,
            chat(json!({"model": "gpt-4o"})),
            400,
            Some("model"),
            "deepseek-v4-flash",
        ),
        c(
            "retired chat",
            oa,
            chat(json!({"model": "deepseek-chat"})),
            400,
            Some("model"),
            "disabled",
        ),
        c(
            "retired reasoner",
            oa,
            chat(json!({"model": "deepseek-reasoner"})),
            400,
            Some("model"),
            "retired",
        ),
        c(
            "no messages",
            oa,
            Body::Json(json!({"model": "deepseek-v4-flash"})),
            400,
            Some("messages"),
            "required",
        ),
        c(
            "empty messages",
            oa,
            chat(json!({"messages": []})),
            400,
            Some("messages"),
            "at least one",
        ),
        c(
            "messages not a list",
            oa,
            chat(json!({"messages": "hi"})),
            400,
            Some("messages"),
            "array",
        ),
        c(
            "unknown role",
            oa,
            chat(json!({"messages": [{"role": "robot", "content": "x"}]})),
            400,
            Some("messages[0].role"),
            "robot",
        ),
        c(
            "image part",
            oa,
            chat(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            400,
            Some("messages[0].content[0].type"),
            "text-only",
        ),
        c(
            "temperature type",
            oa,
            chat(json!({"temperature": "hot"})),
            422,
            Some("temperature"),
            "number",
        ),
        c(
            "temperature range",
            oa,
            chat(json!({"temperature": 2.5})),
            422,
            Some("temperature"),
            "between",
        ),
        c(
            "top_p range",
            oa,
            chat(json!({"top_p": 1.5})),
            422,
            Some("top_p"),
            "between",
        ),
        c(
            "max_tokens zero",
            oa,
            chat(json!({"max_tokens": 0})),
            422,
            Some("max_tokens"),
            "between 1",
        ),
        c(
            "max_tokens over limit",
            oa,
            chat(json!({"max_tokens": 1_000_000})),
            422,
            Some("max_tokens"),
            "between 1",
        ),
        c(
            "max_tokens negative",
            oa,
            chat(json!({"max_tokens": -5})),
            422,
            Some("max_tokens"),
            "non-negative",
        ),
        c(
            "n = 2",
            oa,
            chat(json!({"n": 2})),
            422,
            Some("n"),
            "n must be 1",
        ),
        c(
            "stream type",
            oa,
            chat(json!({"stream": "yes"})),
            422,
            Some("stream"),
            "boolean",
        ),
        c(
            "stop too many",
            oa,
            chat(json!({"stop": vec!["x"; 17]})),
            422,
            Some("stop"),
            "at most 16",
        ),
        c(
            "top_logprobs range",
            oa,
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            422,
            Some("top_logprobs"),
            "between 0 and 20",
        ),
        c(
            "logprobs in thinking mode",
            oa,
            chat(json!({"logprobs": true, "thinking": {"type": "enabled"}})),
            400,
            Some("logprobs"),
            "thinking mode",
        ),
        c(
            "thinking type",
            oa,
            chat(json!({"thinking": {"type": "on"}})),
            422,
            Some("thinking.type"),
            "disabled",
        ),
        c(
            "response_format",
            oa,
            chat(json!({"response_format": {"type": "json_schema"}})),
            422,
            Some("response_format.type"),
            "json_object",
        ),
        c(
            "tools type",
            oa,
            chat(json!({"tools": {"name": "f"}})),
            422,
            Some("tools"),
            "array",
        ),
        c(
            "tool name",
            oa,
            chat(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})),
            422,
            Some("tools[0].function.name"),
            "1-64",
        ),
        c(
            "tool_choice unknown",
            oa,
            chat(json!({"tool_choice": "required"})),
            422,
            Some("tool_choice"),
            "tool_choice",
        ),
        c(
            "context too long",
            oa,
            chat(json!({"messages": user(&long_prompt), "max_tokens": 4000})),
            400,
            Some("messages"),
            "maximum context length is 4096 tokens",
        ),
        c(
            "anthropic malformed",
            an,
            Body::Raw("application/json", b"{".to_vec()),
            400,
            None,
            "not valid JSON",
        ),
        c(
            "anthropic no max_tokens",
            an,
            Body::Json(json!({"model": "deepseek-v4-flash", "messages": user("hi")})),
            400,
            None,
            "max_tokens is required",
        ),
        c(
            "anthropic bad role",
            an,
            messages(json!({"messages": [{"role": "system", "content": "x"}]})),
            400,
            None,
            "system",
        ),
        c(
            "anthropic temperature",
            an,
            messages(json!({"temperature": "x"})),
            400,
            None,
            "temperature",
        ),
        c(
            "anthropic unknown tool_use_id",
            an,
            messages(
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}]}),
            ),
            400,
            None,
            "t9",
        ),
        c(
            "anthropic server tool",
            an,
            messages(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            400,
            None,
            "server tools",
        ),
        c(
            "anthropic unknown model",
            an,
            messages(json!({"model": "claude-3-opus"})),
            400,
            None,
            "Model Not Exist",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_worker() {
    let config = v4_gateway::GatewayConfig {
        max_body_bytes: 64 * 1024,
        ..test_config()
    };
    let stack = Stack::with(Script::reply("Hi"), config, true).await;
    for case in cases() {
        let req = stack.http.post(stack.url(case.path));
        let req = match &case.body {
            Body::Json(v) => req.json(v),
            Body::Raw(ct, bytes) => req.header("content-type", *ct).body(bytes.clone()),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            r.headers().get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{}",
            case.name
        );
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {text}", case.name));
        assert_eq!(status, case.status, "{}: {v}", case.name);
        let message = if case.path == "/v1/messages" {
            assert_eq!(v["type"], "error", "{}: {v}", case.name);
            let t = v["error"]["type"].as_str().unwrap();
            assert!(
                t == "invalid_request_error" || t == "request_too_large",
                "{}: {v}",
                case.name
            );
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            let e = &v["error"];
            assert_eq!(e["type"], "invalid_request_error", "{}: {v}", case.name);
            assert!(
                e.get("code").is_some() && e.get("param").is_some(),
                "{}: {v}",
                case.name
            );
            if let Some(p) = case.param {
                assert_eq!(e["param"], p, "{}: {v}", case.name);
            }
            e["message"].as_str().unwrap().to_string()
        };
        assert!(
            message.contains(case.message),
            "{}: {message:?} lacks {:?}",
            case.name,
            case.message
        );
    }
    assert!(
        stack.fake.requests().is_empty(),
        "bad input reached the scheduler: {:?}",
        stack.fake.requests()
    );
    // Wrong method and unknown path: JSON too.
    let r = stack
        .http
        .get(stack.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = stack
        .http
        .get(stack.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    // And the stack still serves a good request.
    let (status, v) = stack
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "deepseek-v4-flash", "messages": user("hi")}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    stack.stop().await;
}
