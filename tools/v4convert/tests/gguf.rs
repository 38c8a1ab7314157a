//! GGUF output of `v4convert`: golden comparisons with llama.cpp's own files, reader robustness,
//! cross-checks with llama.cpp's Python reader (PyPI `gguf`), and error cases.
//!
//! Needs `../shared/fixtures/tiny-v4` (relative to the workspace root) and `python3` with the
//! `gguf` package (`scripts/services.sh` installs it); a missing prerequisite fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::Dtype;
use serde_json::Value;
use v4_engine::loader::Checkpoint;
use v4_kernels::quant::{dequant_fp4_groups, dequant_int4_groups, quant_int4_groups};
use v4convert::gguf::{
    GgmlType, GgufError, GgufFile, GgufOptions, GgufSummary, GgufTypes, GgufValue, GgufWriter,
    TensorDecl, convert_to_gguf,
};

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn fixture(rel: &str) -> PathBuf {
    let p = shared().join("fixtures/tiny-v4").join(rel);
    assert!(
        p.exists(),
        "missing test fixture {}: these tests need the shared fixtures checked out at \
         ../shared relative to the workspace root",
        p.display()
    );
    p
}

fn tokenizer_config() -> PathBuf {
    let p = shared().join("tokenizer/deepseek-v4/tokenizer_config.json");
    assert!(p.is_file(), "missing {}", p.display());
    p
}

fn partial(out: &Path) -> PathBuf {
    let mut n = out.file_name().unwrap().to_os_string();
    n.push(".partial");
    out.with_file_name(n)
}

struct Converted {
    _dir: tempfile::TempDir,
    path: PathBuf,
    summary: GgufSummary,
}

fn convert(src: &Path, types: GgufTypes, with_tc: bool) -> Converted {
    let opts = GgufOptions {
        types,
        tokenizer: Some(fixture("gguf/tokenizer-512.json")),
        tokenizer_config: with_tc.then(tokenizer_config),
        ..Default::default()
    };
    convert_with(src, &opts)
}

fn convert_with(src: &Path, opts: &GgufOptions) -> Converted {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    let calls = std::cell::Cell::new(0u64);
    let last = std::cell::Cell::new((0u64, 0u64));
    let summary = convert_to_gguf(src, &path, opts, &|w, t| {
        calls.set(calls.get() + 1);
        assert!(w <= t, "progress {w} > total {t}");
        assert!(w >= last.get().0, "progress went backwards");
        last.set((w, t));
    })
    .unwrap_or_else(|e| panic!("converting {}: {e}", src.display()));
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(summary.file_bytes, len);
    assert_eq!(last.get(), (len, len), "final progress call");
    assert!(calls.get() > summary.tensors as u64);
    assert!(!partial(&path).exists());
    Converted {
        _dir: dir,
        path,
        summary,
    }
}

/// Runs `tests/gguf_py/dump_gguf.py` on `path` (dequantizing into `dequant` if given).
fn py_dump(path: &Path, dequant: Option<&Path>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gguf_py/dump_gguf.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(path);
    if let Some(d) = dequant {
        cmd.arg(d);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run python3 ({e}): the GGUF tests cross-check files with llama.cpp's Python \
             reader; install python3 and `pip install gguf==0.19.0` (scripts/services.sh does)"
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python gguf reader failed on {} (status {}): {stderr}\nInstall it with `pip install \
         gguf==0.19.0` (scripts/services.sh does).",
        path.display(),
        out.status
    );
    serde_json::from_slice(&out.stdout).expect("dump_gguf.py prints JSON")
}

fn meta_map(f: &GgufFile) -> BTreeMap<&str, &GgufValue> {
    f.metadata().iter().map(|(k, v)| (k.as_str(), v)).collect()
}

/// Differences between two GGUF files: metadata (except `ignore_keys`; key order too when
/// `ordered`), tensor names (order too when `ordered`), types, dims and data bytes.
fn compare(ours: &GgufFile, golden: &GgufFile, ignore_keys: &[&str], ordered: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let keys = |f: &GgufFile| -> Vec<String> {
        f.metadata()
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !ignore_keys.contains(&k.as_str()))
            .collect()
    };
    let (ko, kg) = (keys(ours), keys(golden));
    if ordered && ko != kg {
        diffs.push(format!(
            "metadata key order differs:\n ours   {ko:?}\n golden {kg:?}"
        ));
    }
    let (mo, mg) = (meta_map(ours), meta_map(golden));
    for k in kg.iter().chain(ko.iter()) {
        match (mo.get(k.as_str()), mg.get(k.as_str())) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                let short = |v: Option<&&GgufValue>| {
                    let s = format!("{v:?}");
                    s.chars().take(200).collect::<String>()
                };
                diffs.push(format!(
                    "metadata `{k}`: ours {} golden {}",
                    short(a),
                    short(b)
                ));
            }
        }
    }
    let names = |f: &GgufFile| -> Vec<String> {
        let mut v: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
        if !ordered {
            v.sort();
        }
        v
    };
    if names(ours) != names(golden) {
        diffs.push(format!(
            "tensor names differ:\n ours   {:?}\n golden {:?}",
            names(ours),
            names(golden)
        ));
    }
    for g in golden.tensors() {
        let Some(o) = ours.tensor(&g.name) else {
            continue;
        };
        if (o.ty, &o.dims) != (g.ty, &g.dims) {
            diffs.push(format!(
                "tensor `{}`: ours {} {:?}, golden {} {:?}",
                g.name, o.ty, o.dims, g.ty, g.dims
            ));
            continue;
        }
        let (a, b) = (
            ours.tensor_data(&g.name).unwrap(),
            golden.tensor_data(&g.name).unwrap(),
        );
        if a != b {
            let first = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
            let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
            diffs.push(format!(
                "tensor `{}` ({}): {n} of {} bytes differ, first at byte {first}",
                g.name,
                g.ty,
                a.len()
            ));
        }
    }
    diffs
}

fn assert_no_diffs(what: &str, diffs: &[String]) {
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 1, 2: golden files made by llama.cpp

/// Keys we intentionally do not write: llama.cpp's own Jinja chat template.
const NOT_WRITTEN: &[&str] = &["tokenizer.chat_template"];

#[test]
fn stock_matches_llamacpp_converter() {
    let golden = GgufFile::open(&fixture("gguf/tiny-v4-mxfp4moe.gguf")).unwrap();
    // With the real tokenizer_config.json (what the golden file was made with) and without it
    // (our DeepSeek-V4 defaults): identical metadata either way.
    for with_tc in [true, false] {
        let c = convert(&fixture("ckpt-fp8-fp4"), GgufTypes::Stock, with_tc);
        let ours = GgufFile::open(&c.path).unwrap();
        assert_no_diffs(
            &format!("stock vs tiny-v4-mxfp4moe.gguf (tokenizer_config: {with_tc})"),
            &compare(&ours, &golden, NOT_WRITTEN, true),
        );
        assert!(ours.get("tokenizer.chat_template").is_none());
        assert_eq!(c.summary.tensors, 126);
        assert_eq!(c.summary.type_counts["MXFP4"], 12);
        assert_eq!(c.summary.type_counts["Q8_0"], 34);
        assert_eq!(
            c.summary
                .skipped
                .iter()
                .filter(|s| s.starts_with("mtp."))
                .count(),
            53
        );
    }
}

#[test]
fn stock_with_llamacpp_template_is_byte_identical() {
    // Given llama.cpp's chat template (taken from the golden file), the whole file is the same.
    let golden_path = fixture("gguf/tiny-v4-mxfp4moe.gguf");
    let golden = GgufFile::open(&golden_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("deepseek-ai-DeepSeek-V4.jinja");
    let text = golden
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .unwrap();
    std::fs::write(&template, text).unwrap();
    let opts = GgufOptions {
        tokenizer: Some(fixture("gguf/tokenizer-512.json")),
        chat_template: Some(template),
        ..Default::default()
    };
    let c = convert_with(&fixture("ckpt-fp8-fp4"), &opts);
    let ours = GgufFile::open(&c.path).unwrap();
    assert_no_diffs("stock + template", &compare(&ours, &golden, &[], true));
    let (a, b) = (
        std::fs::read(&c.path).unwrap(),
        std::fs::read(&golden_path).unwrap(),
    );
    assert!(a == b, "files differ ({} vs {} bytes)", a.len(), b.len());
}

#[test]
fn f32_matches_llamacpp_f32_file() {
    let golden = GgufFile::open(&fixture("gguf/tiny-v4-f32.gguf")).unwrap();
    let c = convert(&fixture("ckpt-fp8-fp4"), GgufTypes::F32, true);
    let ours = GgufFile::open(&c.path).unwrap();
    // llama.cpp's converter stamps file_type 38 on every deepseek4 file; ours says ALL_F32.
    let ignore = [NOT_WRITTEN, &["general.file_type"]].concat();
    assert_no_diffs(
        "f32 vs tiny-v4-f32.gguf",
        &compare(&ours, &golden, &ignore, true),
    );
    assert_eq!(ours.get("general.file_type"), Some(&GgufValue::U32(0)));
    assert_eq!(golden.get("general.file_type"), Some(&GgufValue::U32(38)));
}

#[test]
fn bf16_checkpoint_f32_matches_llamacpp_f32_file() {
    // The BF16 checkpoint holds the same weights (FP8/FP4 values are BF16 numbers).
    let golden = GgufFile::open(&fixture("gguf/tiny-v4-f32.gguf")).unwrap();
    let c = convert(&fixture("ckpt-bf16"), GgufTypes::F32, true);
    let ours = GgufFile::open(&c.path).unwrap();
    let ignore = [NOT_WRITTEN, &["general.file_type", "general.name"]].concat();
    assert_no_diffs(
        "bf16 ckpt f32 vs tiny-v4-f32.gguf",
        &compare(&ours, &golden, &ignore, true),
    );
    assert_eq!(
        ours.get("general.name"),
        Some(&GgufValue::String("Ckpt Bf16".into()))
    );
}

#[test]
fn q8_0_matches_llama_quantize() {
    let golden = GgufFile::open(&fixture("gguf/tiny-v4-q8_0.gguf")).unwrap();
    let c = convert(&fixture("ckpt-fp8-fp4"), GgufTypes::Q8_0, true);
    let ours = GgufFile::open(&c.path).unwrap();
    // llama-quantize reorders tensors and moves two keys to the end: compare as sets.
    assert_no_diffs(
        "q8_0 vs tiny-v4-q8_0.gguf",
        &compare(&ours, &golden, NOT_WRITTEN, false),
    );
}

#[test]
fn bf16_checkpoint_stock_keeps_bf16_experts() {
    let c = convert(&fixture("ckpt-bf16"), GgufTypes::Stock, true);
    let ours = GgufFile::open(&c.path).unwrap();
    let golden = GgufFile::open(&fixture("gguf/tiny-v4-f32.gguf")).unwrap();
    for t in ours.tensors() {
        let g = golden.tensor(&t.name).unwrap();
        assert_eq!(t.dims, g.dims, "{}", t.name);
        if t.name.contains("_exps.") {
            assert_eq!(t.ty, GgmlType::Bf16, "{}", t.name);
        }
        // Lossless: every source tensor is BF16 or F32 and Stock keeps its type, so the values
        // are exactly the F32 golden ones.
        assert_eq!(
            ours.tensor_f32(&t.name).unwrap(),
            golden.tensor_f32(&t.name).unwrap(),
            "{}",
            t.name
        );
    }
    assert!(
        c.summary.notes.iter().any(|n| n.contains("kept as BF16")),
        "{:?}",
        c.summary.notes
    );
}

// ---------------------------------------------------------------------------------------------
// 3: reader

#[test]
fn reader_opens_the_fixture_files() {
    for name in [
        "tiny-v4-mxfp4moe.gguf",
        "tiny-v4-f32.gguf",
        "tiny-v4-q8_0.gguf",
    ] {
        let f = GgufFile::open(&fixture(&format!("gguf/{name}"))).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        assert_eq!(f.tensors().len(), 126, "{name}");
        assert_eq!(f.metadata().len(), 55, "{name}");
        assert_eq!(
            f.get("general.architecture").and_then(GgufValue::as_str),
            Some("deepseek4")
        );
        let mut end = 0;
        for t in f.tensors() {
            let data = f.tensor_data(&t.name).unwrap();
            assert_eq!(data.len() as u64, t.nbytes);
            end = end.max(f.data_offset() + t.offset + t.nbytes);
            if t.ty != GgmlType::I32 {
                assert_eq!(f.tensor_f32(&t.name).unwrap().len() as u64, t.n_elements());
            }
        }
        assert_eq!(end, f.file_len(), "{name}");
        // llama.cpp's Python reader agrees with ours on llama.cpp's files.
        let deq = tempfile::tempdir().unwrap();
        check_against_python(&f, Some(deq.path()));
        match f.tensor_data("no.such.tensor") {
            Err(GgufError::NoSuchTensor { tensor, .. }) => assert_eq!(tensor, "no.such.tensor"),
            other => panic!("{other:?}"),
        }
    }
}

/// A small hand-made GGUF: one metadata entry of each kind and one F32 tensor `t` of 4 values.
fn tiny_gguf(type_id: u32, n_dims: u32, offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&2u64.to_le_bytes()); // kv
    s(&mut b, "a.string");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "hello");
    s(&mut b, "a.array");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&(-3i32).to_le_bytes());
    b.extend_from_slice(&7i32.to_le_bytes());
    s(&mut b, "t");
    b.extend_from_slice(&n_dims.to_le_bytes());
    for _ in 0..n_dims.min(8) {
        b.extend_from_slice(&4u64.to_le_bytes());
    }
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    for x in [1.0f32, 2.0, 3.0, 4.0] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    GgufFile::open(&p)
}

#[test]
fn reader_rejects_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = tiny_gguf(0, 1, 0);
    let f = open_bytes(dir.path(), "good.gguf", &good).unwrap();
    assert_eq!(f.tensor_f32("t").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(f.get("a.string").and_then(GgufValue::as_str), Some("hello"));

    let expect = |name: &str, bytes: &[u8], needle: &str| {
        let err = open_bytes(dir.path(), name, bytes)
            .expect_err(name)
            .to_string();
        assert!(err.contains(name), "error does not name the file: {err}");
        assert!(
            err.contains(needle),
            "{name}: expected `{needle}` in: {err}"
        );
    };
    let mut bad = good.clone();
    bad[0] = b'X';
    expect("magic.gguf", &bad, "bad magic");
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&3u32.to_be_bytes());
    expect("bigendian.gguf", &bad, "big-endian");
    expect(
        "type42.gguf",
        &tiny_gguf(42, 1, 0),
        "unknown ggml type id 42",
    );
    expect("type4.gguf", &tiny_gguf(4, 1, 0), "Q4_2");
    expect("type8.gguf", &tiny_gguf(8, 1, 0), "multiple of 32");
    expect("dims5.gguf", &tiny_gguf(0, 5, 0), "5 dimensions");
    expect(
        "offset.gguf",
        &tiny_gguf(0, 1, 4),
        "not a multiple of the alignment",
    );
    expect("pastend.gguf", &tiny_gguf(0, 1, 32), "past the end");
    // Huge string length and array length.
    let mut bad = good.clone();
    bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    expect("hugestr.gguf", &bad, "truncated");
    let mut bad = good.clone();
    let at = good.windows(7).position(|w| w == b"a.array").unwrap() + 7 + 4 + 4;
    bad[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    expect("hugearray.gguf", &bad, "does not fit");

    // Every truncation of the small file and of a real one is an error, never a panic.
    for len in 0..good.len() {
        assert!(
            open_bytes(dir.path(), "cut.gguf", &good[..len]).is_err(),
            "{len}"
        );
    }
    let real = std::fs::read(fixture("gguf/tiny-v4-mxfp4moe.gguf")).unwrap();
    for len in [
        0,
        3,
        4,
        8,
        23,
        24,
        100,
        5000,
        28255,
        28256,
        30000,
        real.len() - 1,
    ] {
        let err = open_bytes(dir.path(), "cut-real.gguf", &real[..len]).expect_err("truncated");
        assert!(err.to_string().contains("cut-real.gguf"), "{err}");
    }
    // Any single corrupted header byte: an error or a consistent file, no panic.
    for i in 0..good.len() - 16 {
        for v in [0x00u8, 0x7F, 0xFF] {
            let mut bad = good.clone();
            bad[i] = v;
            if let Ok(f) = open_bytes(dir.path(), "flip.gguf", &bad) {
                for t in f.tensors() {
                    let _ = f.tensor_data(&t.name).unwrap();
                }
            }
        }
    }
}

#[test]
fn writer_round_trips_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.gguf");
    let meta = vec![
        ("k.u8".to_string(), GgufValue::U8(7)),
        ("k.i8".to_string(), GgufValue::I8(-7)),
        ("k.u16".to_string(), GgufValue::U16(700)),
        ("k.i16".to_string(), GgufValue::I16(-700)),
        ("k.u32".to_string(), GgufValue::U32(70000)),
        ("k.i32".to_string(), GgufValue::I32(-70000)),
        ("k.f32".to_string(), GgufValue::F32(0.1)),
        ("k.bool".to_string(), GgufValue::Bool(true)),
        (
            "k.str".to_string(),
            GgufValue::String("ｄｅｅｐ▁seek".into()),
        ),
        ("k.u64".to_string(), GgufValue::U64(1 << 40)),
        ("k.i64".to_string(), GgufValue::I64(-(1 << 40))),
        ("k.f64".to_string(), GgufValue::F64(0.1)),
        (
            "k.strs".to_string(),
            GgufValue::strings(["a".into(), "b c".into()]),
        ),
        ("general.alignment".to_string(), GgufValue::U32(64)),
    ];
    let decls = vec![
        TensorDecl {
            name: "a".into(),
            ty: GgmlType::F32,
            dims: vec![3],
        },
        TensorDecl {
            name: "b".into(),
            ty: GgmlType::Q8_0,
            dims: vec![32, 2],
        },
    ];
    let mut w = GgufWriter::create(&out, &meta, decls.clone()).unwrap();
    assert!(partial(&out).exists());
    let a: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    w.write(&a[..4]).unwrap();
    w.write(&a[4..]).unwrap();
    w.end_tensor().unwrap();
    let mut q = vec![0u8; 68];
    v4convert::gguf::quants::quantize_q8_0(&(0..64).map(|i| i as f32).collect::<Vec<_>>(), &mut q);
    assert!(
        w.write(&[0u8; 69]).is_err(),
        "more bytes than the tensor holds"
    );
    w.write(&q).unwrap();
    w.end_tensor().unwrap();
    let total = w.total_bytes();
    assert_eq!(w.finish().unwrap(), total);
    assert!(!partial(&out).exists());
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.metadata(), meta.as_slice());
    assert_eq!(f.tensor_f32("a").unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(f.tensor("b").unwrap().offset, 64);
    check_against_python(&f, None);

    // Dropping an unfinished writer removes the partial file; finishing early is an error.
    let w = GgufWriter::create(&out, &meta, decls.clone()).unwrap();
    drop(w);
    assert!(!partial(&out).exists());
    let w = GgufWriter::create(&dir.path().join("x.gguf"), &meta, decls).unwrap();
    assert!(w.finish().is_err());
    assert!(!dir.path().join("x.gguf").exists() && !partial(&dir.path().join("x.gguf")).exists());
}

// ---------------------------------------------------------------------------------------------
// 4: Python gguf reads our files

fn value_json(v: &GgufValue) -> Value {
    match v {
        GgufValue::U8(x) => (*x).into(),
        GgufValue::I8(x) => (*x).into(),
        GgufValue::U16(x) => (*x).into(),
        GgufValue::I16(x) => (*x).into(),
        GgufValue::U32(x) => (*x).into(),
        GgufValue::I32(x) => (*x).into(),
        GgufValue::U64(x) => (*x).into(),
        GgufValue::I64(x) => (*x).into(),
        GgufValue::F32(x) => f64::from(*x).into(),
        GgufValue::F64(x) => (*x).into(),
        GgufValue::Bool(x) => (*x).into(),
        GgufValue::String(s) => s.clone().into(),
        GgufValue::Array { values, .. } => values.iter().map(value_json).collect(),
    }
}

fn type_names(v: &GgufValue) -> Vec<String> {
    match v {
        GgufValue::Array { elem, .. } => vec!["ARRAY".into(), elem.name().into()],
        _ => vec![v.value_type().name().into()],
    }
}

/// Compares what gguf-py reports for `f` with our reader: metadata (order, types, values),
/// tensor names, types, dims, absolute data offsets and sizes, and (with `deq`) dequantized data.
fn check_against_python(f: &GgufFile, deq: Option<&Path>) {
    let py = py_dump(f.path(), deq);
    assert_eq!(py["version"], 3);
    assert_eq!(py["alignment"].as_u64(), Some(f.alignment()));
    assert_eq!(py["data_offset"].as_u64(), Some(f.data_offset()));
    let pm = py["metadata"].as_array().unwrap();
    assert_eq!(pm.len(), f.metadata().len());
    for (p, (k, v)) in pm.iter().zip(f.metadata()) {
        assert_eq!(p["key"].as_str(), Some(k.as_str()));
        let types: Vec<String> = serde_json::from_value(p["types"].clone()).unwrap();
        assert_eq!(types, type_names(v), "{k}");
        assert_eq!(p["value"], value_json(v), "{k}");
    }
    let pt = py["tensors"].as_array().unwrap();
    assert_eq!(pt.len(), f.tensors().len());
    for (i, (p, t)) in pt.iter().zip(f.tensors()).enumerate() {
        assert_eq!(p["name"].as_str(), Some(t.name.as_str()));
        assert_eq!(p["type"].as_str(), Some(t.ty.name()), "{}", t.name);
        let dims: Vec<u64> = serde_json::from_value(p["dims"].clone()).unwrap();
        assert_eq!(dims, t.dims, "{}", t.name);
        assert_eq!(
            p["data_offset"].as_u64(),
            Some(f.data_offset() + t.offset),
            "{}",
            t.name
        );
        assert_eq!(p["n_bytes"].as_u64(), Some(t.nbytes), "{}", t.name);
        if let Some(d) = deq
            && t.ty != GgmlType::I32
        {
            let raw = std::fs::read(d.join(format!("{i}.f32"))).unwrap();
            let theirs: Vec<u32> = raw
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let ours: Vec<u32> = f
                .tensor_f32(&t.name)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert!(
                ours == theirs,
                "{}: gguf-py dequantizes differently",
                t.name
            );
        }
    }
}

/// The source values of a stacked expert tensor, dequantized from the FP4 checkpoint.
fn source_experts_f32(ckpt: &Checkpoint, layer: usize, w: usize, n: usize) -> Vec<f32> {
    let mut all = Vec::new();
    for e in 0..n {
        let name = format!("layers.{layer}.ffn.experts.{e}.w{w}.weight");
        let v = ckpt.get(&name).unwrap();
        let s = ckpt.get(&name.replace(".weight", ".scale")).unwrap();
        let (rows, cols) = (v.shape[0], v.shape[1] * 2);
        let mut out = vec![0f32; rows * cols];
        dequant_fp4_groups(v.bytes, s.bytes, rows, cols, cols / s.shape[1], &mut out);
        all.extend(out);
    }
    all
}

#[test]
fn python_gguf_reads_our_files() {
    let src = fixture("ckpt-fp8-fp4");
    let ckpt = Checkpoint::open(&src).unwrap();
    for types in [GgufTypes::Stock, GgufTypes::F32, GgufTypes::Q8_0] {
        let c = convert(&src, types, true);
        let f = GgufFile::open(&c.path).unwrap();
        let deq = tempfile::tempdir().unwrap();
        check_against_python(&f, Some(deq.path()));
        if types != GgufTypes::Stock {
            continue;
        }
        // MXFP4 experts: exactly the FP4 values; Q8_0: within half a step of the FP8 values.
        for layer in 0..4 {
            for (w, proj) in [(1, "gate"), (2, "down"), (3, "up")] {
                let name = format!("blk.{layer}.ffn_{proj}_exps.weight");
                let want = source_experts_f32(&ckpt, layer, w, 8);
                assert!(
                    f.tensor_f32(&name).unwrap() == want,
                    "{name} is not lossless"
                );
            }
        }
        let exact = GgufFile::open(&fixture("gguf/tiny-v4-f32.gguf")).unwrap();
        for t in f.tensors().iter().filter(|t| t.ty == GgmlType::Q8_0) {
            let (q, x) = (
                f.tensor_f32(&t.name).unwrap(),
                exact.tensor_f32(&t.name).unwrap(),
            );
            for (qb, xb) in q.chunks(32).zip(x.chunks(32)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in qb.iter().zip(xb) {
                    assert!(
                        (a - b).abs() <= amax / 127.0 * 0.57,
                        "{}: {a} vs {b}",
                        t.name
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modified checkpoints: INT4 experts and error cases

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn load_all(dir: &Path) -> Tensors {
    let ckpt = Checkpoint::open(dir).unwrap();
    ckpt.names()
        .map(|n| {
            let v = ckpt.get(n).unwrap();
            (n.to_string(), (v.dtype, v.shape.to_vec(), v.bytes.to_vec()))
        })
        .collect()
}

/// Writes `tensors` as a single-shard checkpoint with the fixture's config into a new dir.
fn write_checkpoint(tensors: &Tensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("ckpt-fp8-fp4/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn int4_experts_become_lossless_q4_0() {
    let mut t = load_all(&fixture("ckpt-fp8-fp4"));
    let mut want: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let names: Vec<String> = t
        .keys()
        .filter(|n| n.contains(".experts.") && n.ends_with(".weight"))
        .cloned()
        .collect();
    for name in names {
        let sname = name.replace(".weight", ".scale");
        let (_, shape, codes) = t[&name].clone();
        let (rows, cols) = (shape[0], shape[1] * 2);
        let mut x = vec![0f32; rows * cols];
        dequant_fp4_groups(&codes, &t[&sname].2, rows, cols, 32, &mut x);
        let (q, s) = quant_int4_groups(&x, rows, cols, 32);
        let mut back = vec![0f32; rows * cols];
        dequant_int4_groups(&q, &s, rows, cols, 32, &mut back);
        want.insert(name.clone(), back);
        t.insert(name, (Dtype::I8, vec![rows, cols / 2], q));
        let sb: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.insert(sname, (Dtype::BF16, vec![rows, cols / 32], sb));
    }
    let dir = write_checkpoint(&t);
    for types in [GgufTypes::Stock, GgufTypes::F32] {
        let c = convert(dir.path(), types, true);
        let f = GgufFile::open(&c.path).unwrap();
        for layer in 0..4 {
            for (w, proj) in [(1, "gate"), (2, "down"), (3, "up")] {
                let name = format!("blk.{layer}.ffn_{proj}_exps.weight");
                let expect = if types == GgufTypes::Stock {
                    GgmlType::Q4_0
                } else {
                    GgmlType::F32
                };
                assert_eq!(f.tensor(&name).unwrap().ty, expect);
                let src: Vec<f32> = (0..8)
                    .flat_map(|e| {
                        want[&format!("layers.{layer}.ffn.experts.{e}.w{w}.weight")].clone()
                    })
                    .collect();
                assert!(
                    f.tensor_f32(&name).unwrap() == src,
                    "{name} is not lossless"
                );
            }
        }
        let deq = tempfile::tempdir().unwrap();
        check_against_python(&f, Some(deq.path()));
    }
}

/// Converts `tensors` and expects an error mentioning every needle; no output may be left.
fn expect_failure(tensors: &Tensors, needles: &[&str]) -> GgufError {
    let src = write_checkpoint(tensors);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.gguf");
    let opts = GgufOptions {
        tokenizer: Some(fixture("gguf/tokenizer-512.json")),
        ..Default::default()
    };
    let err =
        convert_to_gguf(src.path(), &out, &opts, &|_, _| {}).expect_err("conversion must fail");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in: {msg}");
    }
    assert!(!out.exists(), "output file left behind after: {msg}");
    assert!(
        !partial(&out).exists(),
        "partial file left behind after: {msg}"
    );
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
    err
}

#[test]
fn bad_sources_are_errors_naming_file_and_tensor() {
    let base = load_all(&fixture("ckpt-fp8-fp4"));
    let shard = "model.safetensors";

    let mut t = base.clone();
    t.remove("layers.0.attn.wq_a.scale");
    let e = expect_failure(
        &t,
        &[
            shard,
            "layers.0.attn.wq_a.scale",
            "layers.0.attn.wq_a.weight",
        ],
    );
    assert!(matches!(e, GgufError::MissingTensor { .. }), "{e:?}");

    let mut t = base.clone();
    t.get_mut("layers.2.ffn.experts.3.w1.scale").unwrap().0 = Dtype::U8;
    let e = expect_failure(&t, &[shard, "layers.2.ffn.experts.3.w1.scale", "U8"]);
    assert!(matches!(e, GgufError::SourceDtype { .. }), "{e:?}");

    let mut t = base.clone();
    t.get_mut("layers.1.attn.attn_sink").unwrap().0 = Dtype::I32;
    expect_failure(&t, &[shard, "layers.1.attn.attn_sink", "I32"]);

    let mut t = base.clone();
    t.get_mut("layers.1.attn.wkv.weight").unwrap().1 = vec![32, 256];
    expect_failure(&t, &[shard, "layers.1.attn.wkv.weight", "shape"]);

    let mut t = base.clone();
    t.insert(
        "layers.0.attn.bogus.weight".into(),
        (Dtype::F32, vec![4], vec![0; 16]),
    );
    let e = expect_failure(&t, &[shard, "layers.0.attn.bogus.weight"]);
    assert!(matches!(e, GgufError::UnknownTensor { .. }), "{e:?}");

    let mut t = base.clone();
    t.insert(
        "layers.9.attn_norm.weight".into(),
        (Dtype::BF16, vec![128], vec![0; 256]),
    );
    expect_failure(&t, &[shard, "layers.9.attn_norm.weight"]);

    let mut t = base.clone();
    t.remove("layers.3.ffn.experts.7.w2.weight");
    expect_failure(&t, &["layers.3.ffn.experts.7.w2"]);

    let mut t = base.clone();
    t.remove("layers.2.attn.compressor.ape");
    let e = expect_failure(&t, &["model.safetensors", "layers.2.attn.compressor.ape"]);
    assert!(matches!(e, GgufError::MissingTensor { .. }), "{e:?}");

    // Found only while writing (the partial file exists by then and must be removed).
    let mut t = base.clone();
    t.get_mut("layers.0.ffn.gate.tid2eid").unwrap().2[8..16].copy_from_slice(&99i64.to_le_bytes());
    let e = expect_failure(&t, &[shard, "layers.0.ffn.gate.tid2eid", "99"]);
    assert!(matches!(e, GgufError::SourceValue { .. }), "{e:?}");
}

#[test]
fn options_and_missing_tokenizer() {
    let src = fixture("ckpt-fp8-fp4");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let mtp = GgufOptions {
        include_mtp: true,
        ..Default::default()
    };
    assert!(matches!(
        convert_to_gguf(&src, &out, &mtp, &|_, _| {}),
        Err(GgufError::Unsupported(_))
    ));
    assert!(!out.exists() && !partial(&out).exists());

    let missing = GgufOptions {
        tokenizer: Some(dir.path().join("nope.json")),
        ..Default::default()
    };
    let err = convert_to_gguf(&src, &out, &missing, &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");

    // No tokenizer in the source directory: no tokenizer keys, and the summary says so.
    let s = convert_to_gguf(&src, &out, &GgufOptions::default(), &|_, _| {}).unwrap();
    assert!(s.tokenizer.is_none());
    assert!(
        s.notes.iter().any(|n| n.contains("no tokenizer metadata")),
        "{:?}",
        s.notes
    );
    let f = GgufFile::open(&out).unwrap();
    assert!(
        f.metadata()
            .iter()
            .all(|(k, _)| !k.starts_with("tokenizer."))
    );
    assert_eq!(f.metadata().len(), 44);
    assert!(s.to_string().contains("tokenizer: none"));
}
