//! The official `openai` and `anthropic` Python SDKs (installed by `scripts/services.sh` into
//! a virtual environment, `V4_TEST_PYTHON`) run chat, streaming, tools, thinking and logprobs
//! against the gateway of a full mesh and parse every response (`tests/python/sdk_check.py`).

use std::time::Duration;

use v4_e2e::{MODEL_ID, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_parse_every_response() {
    let python = std::env::var("V4_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "V4_TEST_PYTHON is not set: `source scripts/services.sh` creates the virtual \
             environment with the openai and anthropic SDKs and exports it"
        )
    });
    let stack = Stack::start(StackOptions::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/sdk_check.py");
    let base = stack.base.clone();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .args([script, "--base-url", &base, "--model", MODEL_ID])
            .output(),
    )
    .await
    .expect("the SDK checks finish within 5 minutes")
    .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all SDK checks passed"));
    stack.stop().await;
}
