//! End-to-end conversions of the tiny-v4 fixture: formats, losslessness, the engine on the
//! output, quality, resume, manifest and verify.

mod common;

use std::path::Path;

use common::*;
use v4_engine::model::{Logits, Model};
use v4convert::convert::{ConvertOptions, convert, partial_dir};
use v4convert::manifest::{MANIFEST_FILE, Manifest, sha256_file};
use v4convert::plan::{ExpertFormat, LinearFormat, TargetOptions};
use v4convert::progress::Progress;
use v4convert::quality::{QualityOptions, quality};
use v4convert::source::SourceCheckpoint;
use v4convert::verify::verify;

fn opts(from: &Path, to: &Path, linears: LinearFormat, experts: ExpertFormat) -> ConvertOptions {
    ConvertOptions {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        target: TargetOptions {
            linears,
            experts,
            int4_group: 32,
        },
        shard_bytes: 0,
        resume: false,
        force: false,
        stop_after_shards: None,
    }
}

/// Max |logit - golden| over the full prefill of every golden sequence.
fn max_err_vs_golden(model_dir: &Path) -> f32 {
    let model = Model::load(model_dir).expect("converted model loads");
    let bytes = std::fs::read(golden()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut worst = 0f32;
    for i in 0..5 {
        let ids: Vec<u32> = st
            .tensor(&format!("seq{i}.input_ids"))
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        let want: Vec<f32> = st
            .tensor(&format!("seq{i}.logits"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut cache = model.new_cache();
        let out = model
            .forward(&mut [(&mut cache, &ids[..])], Logits::All, false)
            .unwrap();
        for (a, b) in out.logits[0].iter().zip(&want) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn fp4_experts_to_fp8_is_lossless_and_matches_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fp8");
    let r = convert(
        &opts(
            &fixture("ckpt-fp8-fp4"),
            &out,
            LinearFormat::Fp8,
            ExpertFormat::Fp8,
        ),
        &Progress::hidden(),
    )
    .unwrap();
    for class in ["linears", "routed_experts", "other"] {
        assert!(r.classes[class].lossless, "{class}: {:?}", r.classes[class]);
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["expert_dtype"], "fp8");
    assert_eq!(cfg["quantization"]["routed_experts"]["format"], "fp8_e4m3");
    assert_eq!(
        cfg["quantization_config"]["weight_block_size"],
        serde_json::json!([128, 128])
    );
    let ins = v4convert::inspect::inspect(&out).unwrap();
    assert!(
        ins.tensors
            .iter()
            .any(|t| t.name == "layers.0.ffn.experts.0.w1.weight" && t.dtype == "F8_E4M3")
    );
    let err = max_err_vs_golden(&out);
    assert!(err <= 1e-3, "FP8-expert logits vs golden: {err}");
}

#[test]
fn fp4_copy_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fp4");
    let src_dir = fixture("ckpt-fp8-fp4");
    convert(
        &opts(&src_dir, &out, LinearFormat::Fp8, ExpertFormat::Fp4),
        &Progress::hidden(),
    )
    .unwrap();
    let a = SourceCheckpoint::open(&src_dir).unwrap();
    let b = SourceCheckpoint::open(&out).unwrap();
    assert_eq!(a.len(), b.len());
    for t in a.tensors() {
        let u = b
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{}", t.name);
        assert_eq!(a.read_all(t).unwrap(), b.read_all(u).unwrap(), "{}", t.name);
    }
}

#[test]
fn bf16_checkpoint_to_fp8_fp4_reproduces_the_official_values() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let r = convert(
        &opts(
            &fixture("ckpt-bf16"),
            &out,
            LinearFormat::Fp8,
            ExpertFormat::Fp4,
        ),
        &Progress::hidden(),
    )
    .unwrap();
    // The BF16 fixture holds the dequantized FP8/FP4 values: requantizing is exact.
    assert!(r.classes["linears"].lossless, "{:?}", r.classes["linears"]);
    assert!(r.classes["routed_experts"].lossless);
    let err = max_err_vs_golden(&out);
    assert!(err <= 1e-3, "{err}");
}

/// INT4 cannot represent FP4 groups exactly (FP4's grid is not uniform), and this random fixture
/// sits within 1e-4 of ties in its router/indexer decisions (see its manifest), so any 4-bit
/// re-quantization flips some greedy steps: llama.cpp's own Q8_0 and MXFP4 files of it keep
/// 65/80 and 60/80 (shared/fixtures/tiny-v4/gguf/README.md). This test pins the quality we
/// reach (a regression guard, measured 0.5875 = 47/80, KL 0.13) and checks the report's fields;
/// the 0.95 target is not reachable on this fixture with a uniform 4-bit grid.
#[test]
fn int4_experts_quality_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int4");
    let r = convert(
        &opts(
            &fixture("ckpt-fp8-fp4"),
            &out,
            LinearFormat::Fp8,
            ExpertFormat::Int4,
        ),
        &Progress::hidden(),
    )
    .unwrap();
    assert!(!r.classes["routed_experts"].lossless);
    assert!(r.classes["linears"].lossless);
    // The engine computes on the INT4 experts directly, bit-identical to the dequantized model.
    let native = Model::load(&out).unwrap();
    let expanded =
        Model::load_with(&out, v4_engine::weights::LoadOptions { dequantize: true }).unwrap();
    let ids = [0u32, 17, 42, 300, 5, 9, 11];
    let run = |m: &Model| {
        let mut c = m.new_cache();
        m.forward(&mut [(&mut c, &ids[..])], Logits::All, false)
            .unwrap()
            .logits
            .remove(0)
    };
    let (a, b) = (run(&native), run(&expanded));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        a == b,
        "native INT4 differs from the dequantized model by {diff}"
    );
    let q = quality(
        &out,
        &fixture("ckpt-bf16"),
        &QualityOptions {
            golden: Some(golden()),
            random_sequences: 0,
            random_len: 0,
            greedy_steps: 0,
            seed: 0,
        },
    )
    .unwrap();
    eprintln!(
        "int4: greedy {:.4} top-1 {:.4} KL mean {:.3e} max {:.3e} max|dlogit| {:.3e}",
        q.greedy_agreement, q.top1_agreement, q.mean_kl, q.max_kl, q.max_abs_err
    );
    assert_eq!(q.greedy_steps, 80);
    eprintln!(
        "int4 expert rel-rms error {:.4}",
        r.classes["routed_experts"].stats.rel_rms()
    );
    assert!(
        q.greedy_agreement >= 0.55,
        "greedy-path agreement {}",
        q.greedy_agreement
    );
    assert!(q.mean_kl > 0.0 && q.mean_kl < 0.3, "{}", q.mean_kl);
    for s in &q.sequences {
        assert!(s.reference_vs_golden_max_abs.unwrap() <= 1e-3);
    }
}

#[test]
fn interrupted_conversion_resumes_to_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("ckpt-fp8-fp4");
    // Reference: uninterrupted.
    let full = tmp.path().join("full");
    let mut o = opts(&src, &full, LinearFormat::Fp8, ExpertFormat::Int4);
    o.shard_bytes = 200_000;
    let r = convert(&o, &Progress::hidden()).unwrap();
    assert!(r.shards >= 4, "{} shards", r.shards);

    let out = tmp.path().join("resumed");
    let mut o2 = o.clone();
    o2.to = out.clone();
    o2.stop_after_shards = Some(2);
    let e = convert(&o2, &Progress::hidden()).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    assert!(
        !out.exists(),
        "no finished-looking output after an interruption"
    );
    assert!(partial_dir(&out).is_dir());

    // Without --resume the leftover is refused, with a hint.
    o2.stop_after_shards = None;
    let e = convert(&o2, &Progress::hidden()).unwrap_err().to_string();
    assert!(e.contains("--resume") && e.contains(".partial"), "{e}");

    // Different options must not resume someone else's partial output.
    let mut o3 = o2.clone();
    o3.resume = true;
    o3.target.int4_group = 64;
    let e = convert(&o3, &Progress::hidden()).unwrap_err().to_string();
    assert!(e.contains("other options"), "{e}");

    o2.resume = true;
    let r2 = convert(&o2, &Progress::hidden()).unwrap();
    assert_eq!(r2.shards_resumed, 2);
    assert!(!partial_dir(&out).exists());
    let (m1, m2) = (
        Manifest::read(&full).unwrap(),
        Manifest::read(&out).unwrap(),
    );
    assert_eq!(
        m1.files, m2.files,
        "resumed output differs from a fresh one"
    );
}

#[test]
fn manifest_lists_every_file_and_verify_catches_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let mut o = opts(
        &fixture("ckpt-fp8-fp4"),
        &out,
        LinearFormat::Fp8,
        ExpertFormat::Int4,
    );
    o.shard_bytes = 500_000;
    convert(&o, &Progress::hidden()).unwrap();
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.converter.name, "v4convert");
    assert_eq!(m.source.shards.len(), 2);
    assert!(m.files.iter().any(|f| f.path == "config.json"));
    assert!(m.files.iter().any(|f| f.path == "generation_config.json"));
    assert!(
        m.files
            .iter()
            .any(|f| f.path == "model.safetensors.index.json")
    );
    for f in &m.files {
        let (sha, n) = sha256_file(&out.join(&f.path)).unwrap();
        assert_eq!(
            (sha.as_str(), n),
            (f.sha256.as_str(), f.bytes),
            "{}",
            f.path
        );
    }
    let r = verify(&out).unwrap();
    assert!(r.ok(), "{:?}", r.failed);

    // Flip one byte in the middle of a shard.
    let shard = out.join(
        &m.files
            .iter()
            .find(|f| f.path.ends_with(".safetensors"))
            .unwrap()
            .path,
    );
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let r = verify(&out).unwrap();
    assert!(!r.ok());
    assert!(
        r.failed
            .iter()
            .any(|f| f.contains(shard.file_name().unwrap().to_str().unwrap())),
        "{:?}",
        r.failed
    );
    let o = v4convert(&["verify", "--model", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));
}

#[test]
fn verify_accepts_the_official_fixture_without_manifest() {
    let r = verify(&fixture("ckpt-fp8-fp4")).unwrap();
    assert!(r.ok(), "{:?}", r.failed);
    assert!(r.notes.iter().any(|n| n.contains(MANIFEST_FILE)));
}

#[test]
fn inspect_counts_the_parameters_of_the_config() {
    for ck in ["ckpt-fp8-fp4", "ckpt-bf16"] {
        let ins = v4convert::inspect::inspect(&fixture(ck)).unwrap();
        let cfg = v4_engine::config::ModelConfig::from_path(&fixture(ck)).unwrap();
        let want = v4_engine::stats::parameter_counts(&cfg).total_with_mtp();
        assert_eq!(ins.total.params, want, "{ck}");
        assert!(ins.by_class.contains_key("routed_experts"));
    }
    let o = v4convert(&["inspect", fixture("ckpt-fp8-fp4").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("layers.0.ffn.experts.0.w1.weight"));
    assert!(text.contains("routed_experts") && text.contains("total"));
}

/// `--from owner/name` resolves through the Hugging Face cache (offline here: a cache laid out as
/// Python's, blobs named by their sha256), and the manifest records the repo and commit.
#[test]
fn converts_from_a_repo_id_in_the_hub_cache() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.path().join("models--deepseek-ai--tiny-v4");
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let src = fixture("ckpt-fp8-fp4");
    let mut shard_shas = Vec::new();
    for f in entries(&src) {
        let (sha, _) = sha256_file(&src.join(&f)).unwrap();
        std::fs::copy(src.join(&f), repo_dir.join("blobs").join(&sha)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), snap.join(&f)).unwrap();
        if f.ends_with(".safetensors") {
            shard_shas.push(sha);
        }
    }
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("o");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_v4convert"))
        .args(["convert", "--from", "deepseek-ai/tiny-v4", "--to"])
        .arg(&to)
        .args(["--experts", "fp8"])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m = Manifest::read(&to).unwrap();
    assert_eq!(m.source.hf_repo.as_deref(), Some("deepseek-ai/tiny-v4"));
    assert_eq!(m.source.hf_commit.as_deref(), Some(commit));
    let mut got: Vec<String> = m
        .source
        .shards
        .iter()
        .map(|s| s.sha256.clone().expect("hub blob sha256 known"))
        .collect();
    got.sort();
    shard_shas.sort();
    assert_eq!(got, shard_shas);

    // A repo that is not cached, offline: a clear error, nothing written.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_v4convert"))
        .args(["convert", "--from", "deepseek-ai/not-here", "--to"])
        .arg(out.path().join("o2"))
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));
    assert!(!out.path().join("o2").exists());
}
