//! `v4 serve` with no model: it generates the demo model and tokenizer offline, serves the
//! OpenAI and Anthropic APIs over the in-process bus, says in `/v1/models` that the model is a
//! random demo, and drains and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "-m",
            "60",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
        ])
        .arg("-d")
        .arg(body)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn serve_with_no_arguments_runs_offline_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["serve", "--listen", "127.0.0.1:0", "--models-dir"])
        .arg(dir.path())
        .env_remove("V4_NATS_URL")
        .env("HF_HUB_OFFLINE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("v4 serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let addr = loop {
        let line = lines
            .next()
            .expect("v4 serve printed its address before exiting")
            .unwrap();
        if let Some(rest) = line.split("API on http://").nth(1) {
            break rest.trim().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no address printed"
        );
    };
    // The rest of stderr is drained in the background (so the child never blocks on it).
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let models = Command::new("curl")
        .args(["-sS", "-m", "10"])
        .arg(format!("http://{addr}/v1/models"))
        .output()
        .unwrap();
    let models: serde_json::Value = serde_json::from_slice(&models.stdout).unwrap();
    assert_eq!(models["data"][0]["id"], "deepseek-v4-flash");
    assert!(
        models["data"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("random")),
        "{models}"
    );

    let (code, body) = post(
        &addr,
        "/v1/chat/completions",
        r#"{"model":"deepseek-v4-flash","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"thinking":{"type":"disabled"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let (code, body) = post(
        &addr,
        "/v1/chat/completions",
        r#"{"model":"deepseek-v4-flash","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"thinking":{"type":"disabled"},"stream":true}"#,
    );
    assert_eq!(code, 200);
    let streamed: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(streamed, content, "stream and non-stream agree");
    assert!(body.trim_end().ends_with("data: [DONE]"));

    let (code, body) = post(
        &addr,
        "/v1/messages",
        r#"{"model":"deepseek-v4-flash","max_tokens":4,"messages":[{"role":"user","content":"Hi"}]}"#,
    );
    assert_eq!(code, 200, "{body}");

    // SIGTERM: drain and exit 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "v4 serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log.join().unwrap().join("\n");
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
}
