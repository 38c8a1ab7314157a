//! The `v4-tokenizer` binary resolves its configuration (defaults < `--config` file <
//! environment < flags) before it loads the tokenizer or connects to NATS: a wrong key or a
//! missing tokenizer ends it at once with a message naming the key.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on (connecting fails at once).
const NO_NATS: &str = "nats://127.0.0.1:1";

/// Runs the binary with exactly `env` (plus PATH) and `args`; returns (success, stderr).
fn run(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_v4-tokenizer"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("V4_NATS_URL", NO_NATS)
        .env("HF_HUB_OFFLINE", "1")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start v4-tokenizer");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("v4-tokenizer {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn misspelt_environment_variable_is_an_error_naming_it() {
    let (ok, err) = run(
        &[
            ("V4_TOKENIZER_INSTANC", "x"),
            ("V4_TOKENIZER", "/nonexistent"),
        ],
        &[],
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("V4_TOKENIZER_INSTANC") && err.contains("V4_TOKENIZER_INSTANCE"),
        "{err}"
    );
}

#[test]
fn unknown_key_in_the_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "tokenizer.toml", "max_sesions = 5\n");
    let (ok, err) = run(&[("V4_TOKENIZER", "/nonexistent")], &["--config", &file]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("\"max_sesions\"") && err.contains("tokenizer.toml"),
        "{err}"
    );
}

#[test]
fn a_missing_tokenizer_is_a_clear_error() {
    let (ok, err) = run(&[], &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("tokenizer is not set") && err.contains("V4_TOKENIZER"),
        "{err}"
    );
    assert!(!err.contains("connecting to NATS"), "{err}");
}

#[test]
fn the_tokenizer_comes_from_any_layer() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let file = write(
        dir.path(),
        "tokenizer.yaml",
        &format!("tokenizer: {missing}\ninstance: from-file\n"),
    );
    // From the file; the flag wins over the environment for the instance.
    let (ok, err) = run(
        &[("V4_TOKENIZER_INSTANCE", "from-env")],
        &["--config", &file, "--instance", "from-flag"],
    );
    assert!(!ok, "{err}");
    assert_eq!(err.matches("tokenizer config: ").count(), 1, "{err}");
    assert!(err.contains(r#""instance":"from-flag""#), "{err}");
    assert!(err.contains(missing), "{err}");
    assert!(!err.contains("connecting to NATS"), "{err}");
    // `--tokenizer` over `V4_TOKENIZER`.
    let (ok, err) = run(
        &[("V4_TOKENIZER", "/from/env.json")],
        &["--tokenizer", missing],
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains(missing) && !err.contains("/from/env.json\""),
        "{err}"
    );
}
