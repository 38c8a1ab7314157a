//! `docs/CONFIG.md` is exactly what `v4 config docs` generates from the code.

use std::path::Path;
use std::process::Command;

#[test]
fn config_md_matches_the_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["config", "docs"])
        .output()
        .expect("run v4 config docs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIG.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == on_disk,
        "docs/CONFIG.md is out of date: run `cargo run -p v4 -- config docs > docs/CONFIG.md`"
    );
    for key in [
        "`listen`",
        "`V4_NATS_URL`",
        "`max_batch`",
        "`prefill_min_tokens`",
    ] {
        assert!(generated.contains(key), "{key}");
    }
}

#[test]
fn serve_rejects_unknown_keys_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_bach = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_bach") && err.contains("serve.toml"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(["serve"])
        .env("V4_SERVE_MAX_BACH", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("V4_SERVE_MAX_BACH"));
}
