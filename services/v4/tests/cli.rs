//! The `v4` commands other teams and reviewers rely on, run as a user would run them.

use std::path::PathBuf;
use std::process::Command;

use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tiny-v4");
    assert!(
        dir.is_dir(),
        "fixtures missing at {} (../shared beside the project root)",
        dir.display()
    );
    dir
}

fn v4(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_v4"))
        .args(args)
        .output()
        .expect("run v4")
}

fn golden() -> Vec<u8> {
    std::fs::read(fixtures().join("golden.safetensors")).unwrap()
}

fn tensor_f32(bytes: &[u8], name: &str) -> Vec<f32> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn tensor_ids(bytes: &[u8], name: &str) -> Vec<i64> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn logits_command_writes_reference_logits() {
    let g = golden();
    let ids = join(&tensor_ids(&g, "seq3.input_ids"));
    let want = tensor_f32(&g, "seq3.logits");
    let tmp = tempfile::tempdir().unwrap();
    for ckpt in ["ckpt-bf16", "ckpt-fp8-fp4"] {
        let out = tmp.path().join(format!("{ckpt}.safetensors"));
        let model = fixtures().join(ckpt);
        let o = v4(&[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            &ids,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(t.shape(), &[101, 512]);
        let got = tensor_f32(&bytes, "logits");
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-3, "{ckpt}: max abs diff {d}");
    }
}

#[test]
fn generate_command_prints_reference_greedy_tokens() {
    let g = golden();
    for (seq, chunk) in [(0, "0"), (2, "7"), (4, "1")] {
        let ids = join(&tensor_ids(&g, &format!("seq{seq}.input_ids")));
        let want = join(&tensor_ids(&g, &format!("seq{seq}.greedy_tokens")));
        let model = fixtures().join("ckpt-fp8-fp4");
        let o = v4(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            &ids,
            "--max-new",
            "16",
            "--greedy",
            "--chunk",
            chunk,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8(o.stdout).unwrap().trim(),
            want,
            "seq{seq} chunk {chunk}"
        );
    }
}

#[test]
fn info_reports_flash_and_pro_parameter_counts() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/configs");
    let o = v4(&[
        "info",
        "--model",
        root.join("deepseek-v4-flash").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("csa(m=4): 21")
            && text.contains("hca(m=128): 20")
            && text.contains("sliding: 2"),
        "{text}"
    );
    assert!(
        text.contains("total 284.") && text.contains("active 13."),
        "{text}"
    );
    let o = v4(&[
        "info",
        "--model",
        root.join("deepseek-v4-pro").to_str().unwrap(),
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("csa(m=4): 30") && text.contains("hca(m=128): 31"),
        "{text}"
    );
    assert!(
        text.contains("total 1.6T") || text.contains("total 1.5"),
        "{text}"
    );
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let model = fixtures().join("ckpt-bf16");
    let o = v4(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "0,9999",
        "--greedy",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("9999") && err.contains("vocabulary"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = v4(&[
        "logits",
        "--model",
        "/nonexistent/model",
        "--ids",
        "0",
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn init_then_generate_runs_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let o = v4(&[
        "init",
        "--preset",
        "tiny",
        "--out",
        dir.to_str().unwrap(),
        "--format",
        "fp8",
        "--seed",
        "7",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = v4(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        "0,5,6,7",
        "--max-new",
        "8",
        "--greedy",
        "--ignore-eos",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8(o.stdout).unwrap();
    assert_eq!(line.trim().split(',').count(), 8, "{line}");
    // Same seed, sampled: reproducible.
    let run = || {
        let o = v4(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            "0,5,6,7",
            "--max-new",
            "8",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            "3",
            "--ignore-eos",
        ]);
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(run(), run());
}
