//! Bad input through the real binary: each case exits non-zero, names the file and tensor, and
//! leaves nothing that looks like a finished output.

mod common;

use std::path::Path;

use common::*;
use safetensors::Dtype;

/// Runs a conversion that must fail; returns stderr.
fn convert_fails(from: &Path, to: &Path) -> String {
    let o = v4convert(&[
        "convert",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--experts",
        "int4",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "conversion should fail: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!to.exists(), "{} exists after a failure", to.display());
    let parent = to.parent().unwrap();
    let leftovers: Vec<String> = entries(parent)
        .into_iter()
        .filter(|e| e.starts_with(to.file_name().unwrap().to_str().unwrap()))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    err
}

fn edited(edit: impl FnMut(Tensor) -> Option<Tensor>, extra: Vec<Tensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rewrite_checkpoint(&fixture("ckpt-fp8-fp4"), dir.path(), edit, extra);
    dir
}

#[test]
fn truncated_shard() {
    let src = tempfile::tempdir().unwrap();
    for f in entries(&fixture("ckpt-fp8-fp4")) {
        std::fs::copy(fixture("ckpt-fp8-fp4").join(&f), src.path().join(&f)).unwrap();
    }
    let shard = src.path().join("model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(len - 1000).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(src.path(), &out.path().join("o"));
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn wrong_dtype() {
    let name = "layers.1.attn.wq_b.weight";
    let src = edited(
        |mut t| {
            if t.name == name {
                t.dtype = Dtype::U16;
                t.shape[1] /= 2;
            }
            Some(t)
        },
        vec![],
    );
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(src.path(), &out.path().join("o"));
    assert!(err.contains(name) && err.contains("U16"), "{err}");
    assert!(err.contains("model-00001-of-00001.safetensors"), "{err}");
}

#[test]
fn missing_scale_tensor() {
    let src = edited(
        |t| (t.name != "layers.2.ffn.experts.3.w2.scale").then_some(t),
        vec![],
    );
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(src.path(), &out.path().join("o"));
    assert!(
        err.contains("layers.2.ffn.experts.3.w2.weight") && err.contains("scale"),
        "{err}"
    );
}

#[test]
fn shape_mismatch() {
    let name = "layers.0.attn.wkv.weight";
    let src = edited(
        |mut t| {
            if t.name == name {
                let n = t.shape[0] * t.shape[1];
                t.shape = vec![t.shape[1], t.shape[0]];
                assert_eq!(n, t.data.len());
            }
            Some(t)
        },
        vec![],
    );
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(src.path(), &out.path().join("o"));
    assert!(err.contains(name) && err.contains("shape"), "{err}");
}

#[test]
fn unknown_tensor_name() {
    let extra = Tensor {
        name: "layers.0.attn.mystery.weight".into(),
        dtype: Dtype::BF16,
        shape: vec![2, 2],
        data: vec![0; 8],
    };
    let src = edited(Some, vec![extra]);
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(src.path(), &out.path().join("o"));
    assert!(
        err.contains("layers.0.attn.mystery.weight") && err.contains("unknown tensor"),
        "{err}"
    );
}

#[test]
fn missing_source_directory_and_bad_options() {
    let out = tempfile::tempdir().unwrap();
    let err = convert_fails(Path::new("/nonexistent/v4-model"), &out.path().join("o"));
    assert!(err.contains("/nonexistent/v4-model"), "{err}");
    let o = v4convert(&[
        "convert",
        "--from",
        fixture("ckpt-fp8-fp4").to_str().unwrap(),
        "--to",
        out.path().join("o").to_str().unwrap(),
        "--experts",
        "int3",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("int3"), "{}", stderr(&o));
}

/// A full disk, simulated with a file-size limit (`ulimit -f`): writes fail with EFBIG, which
/// the converter must report like ENOSPC, naming the file, leaving only the `.partial` directory.
#[test]
fn disk_full_while_writing() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("o");
    let script = format!(
        "ulimit -f 64; trap '' XFSZ; exec {} convert --from {} --to {} --experts int4",
        env!("CARGO_BIN_EXE_v4convert"),
        fixture("ckpt-fp8-fp4").display(),
        to.display()
    );
    let o = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(".safetensors") && err.contains("large"),
        "{err}"
    );
    assert!(!to.exists());
    // What is left is clearly unfinished and resumable.
    let partial = out.path().join("o.partial");
    assert!(partial.is_dir());
    assert!(!partial.join("v4convert-manifest.json").exists());
    // With room again, --resume finishes it.
    let o = v4convert(&[
        "convert",
        "--from",
        fixture("ckpt-fp8-fp4").to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--experts",
        "int4",
        "--resume",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(to.join("v4convert-manifest.json").is_file());
}

/// `convert --format gguf` and `inspect FILE.gguf` through the binary.
#[test]
fn gguf_through_the_cli() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("tiny.gguf");
    let o = v4convert(&[
        "convert",
        "--from",
        fixture("ckpt-fp8-fp4").to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--format",
        "gguf",
        "--tokenizer",
        fixture("gguf/tokenizer-512.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::metadata(fixture("gguf/tiny-v4-mxfp4moe.gguf"))
        .unwrap()
        .len();
    let got = std::fs::metadata(&to).unwrap().len();
    // Same tensors and metadata as llama.cpp's file except its chat template.
    assert!(got <= want && got > want - 16_384, "{got} vs {want}");
    let o = v4convert(&["inspect", to.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("general.architecture = \"deepseek4\""),
        "{text}"
    );
    assert!(text.contains("blk.0.ffn_gate_exps.weight") && text.contains("MXFP4"));
    let o = v4convert(&[
        "inspect",
        "--summary",
        fixture("gguf/tiny-v4-q8_0.gguf").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Q8_0"));
    // A GGUF conversion that fails leaves nothing behind.
    let bad = out.path().join("bad.gguf");
    let o = v4convert(&[
        "convert",
        "--from",
        "/nonexistent/m",
        "--to",
        bad.to_str().unwrap(),
        "--format",
        "gguf",
    ]);
    assert!(!o.status.success());
    assert!(!bad.exists());
}
