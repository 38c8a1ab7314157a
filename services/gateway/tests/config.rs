//! The `v4-gateway` binary resolves its configuration (defaults < `--config` file <
//! environment < flags) before it connects to anything: a wrong key or value ends it at once
//! with a message naming the key. No NATS is needed: the URL points at a closed port.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on (connecting fails at once).
const NO_NATS: &str = "nats://127.0.0.1:1";

/// Runs the binary with exactly `env` (plus PATH) and `args`; returns (success, stderr).
fn run(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_v4-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("V4_NATS_URL", NO_NATS)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start v4-gateway");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("v4-gateway {args:?} still running after 60 s");
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
    let (ok, err) = run(&[("V4_GATEWAY_LISTN", "x")], &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("V4_GATEWAY_LISTN") && err.contains("V4_GATEWAY_LISTEN"),
        "{err}"
    );
    assert!(
        !err.contains("connecting to NATS"),
        "resolved after connecting: {err}"
    );
}

#[test]
fn unknown_key_in_the_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "gateway.toml", "listn = \"0.0.0.0:8000\"\n");
    let (ok, err) = run(&[], &["--config", &file]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("\"listn\"") && err.contains("gateway.toml"),
        "{err}"
    );
    // The same file through V4_CONFIG.
    let (ok, err) = run(&[("V4_CONFIG", &file)], &[]);
    assert!(!ok && err.contains("\"listn\""), "{err}");
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    let (ok, err) = run(&[], &["--listen", "nowhere"]);
    assert!(!ok && err.contains("listen"), "{err}");
    let (ok, err) = run(&[("V4_GATEWAY_MAX_TOKENS", "lots")], &[]);
    assert!(!ok && err.contains("max_tokens_limit"), "{err}");
    let (ok, err) = run(&[], &["--set", "max_body_byte=1"]);
    assert!(!ok && err.contains("max_body_byte"), "{err}");
    let (ok, err) = run(&[], &["--models", "=served"]);
    assert!(!ok && err.contains("models"), "{err}");
    assert!(!err.contains("connecting to NATS"), "{err}");
}

#[test]
fn layers_stack_and_the_effective_line_masks_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "gateway.yaml",
        "instance: from-file\nmax_body_bytes: 1\nliveness_check_ms: 100\n",
    );
    let (ok, err) = run(
        &[
            ("V4_GATEWAY_INSTANCE", "from-env"),
            ("V4_GATEWAY_MAX_BODY_BYTES", "5"),
            ("V4_GATEWAY_API_KEYS", "sk-secret-1,sk-secret-2"),
        ],
        &[
            "--config",
            &file,
            "--max-body-bytes",
            "7",
            "--set",
            "max_tokens_limit=9",
        ],
    );
    // Configuration is fine: the start fails only at NATS, after the effective line.
    assert!(!ok, "{err}");
    assert!(err.contains("connecting to NATS"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("gateway config: "))
        .unwrap_or_else(|| panic!("no effective line: {err}"));
    assert_eq!(err.matches("gateway config: ").count(), 1, "{err}");
    assert!(line.contains(r#""instance":"from-env""#), "{line}");
    assert!(line.contains(r#""max_body_bytes":7"#), "{line}");
    assert!(line.contains(r#""max_tokens_limit":9"#), "{line}");
    assert!(line.contains(r#""liveness_check_ms":100"#), "{line}");
    assert!(line.contains(NO_NATS), "{line}");
    assert!(
        line.contains("<2 set>") && !err.contains("sk-secret"),
        "{line}"
    );
}
