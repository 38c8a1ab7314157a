use std::collections::BTreeMap;

use safetensors::SafeTensors;

use super::*;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tiny-v4")
        .join(name)
}

/// `name -> (dtype, shape)` of every tensor of a checkpoint directory, read from the shards.
fn read_headers(dir: &Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let mut files: Vec<String> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    files.sort();
    files.dedup();
    let mut out = BTreeMap::new();
    for f in files {
        let buf = std::fs::read(dir.join(&f)).unwrap();
        let st = SafeTensors::deserialize(&buf).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(
                index["weight_map"][&name],
                f.as_str(),
                "index entry of {name}"
            );
            out.insert(name, (view.dtype().to_string(), view.shape().to_vec()));
        }
    }
    out
}

fn write(
    format: WeightFormat,
    seed: u64,
    max_shard_bytes: u64,
) -> (tempfile::TempDir, InitSummary) {
    let dir = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        seed,
        format,
        max_shard_bytes,
    };
    let summary = write_random_checkpoint(&preset_config(Preset::Tiny), dir.path(), &opts).unwrap();
    (dir, summary)
}

fn check_against_fixture(format: WeightFormat, fixture: &str) {
    let (dir, summary) = write(format, 7, 0);
    let ours = read_headers(dir.path());
    let theirs = read_headers(&fixture_dir(fixture));
    assert_eq!(summary.tensors, ours.len());
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty(), "missing from ours: {missing:?}");
    assert!(extra.is_empty(), "extra in ours: {extra:?}");
    for (name, spec) in &theirs {
        assert_eq!(&ours[name], spec, "{name}");
    }
    let cfg = ModelConfig::from_path(dir.path()).unwrap();
    assert_eq!(cfg.is_fp8(), format == WeightFormat::Fp8Fp4);
    let generation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        generation,
        serde_json::json!({"bos_token_id": 0, "eos_token_id": 1, "do_sample": false})
    );
}

#[test]
fn tiny_fp8_fp4_matches_fixture_layout() {
    check_against_fixture(WeightFormat::Fp8Fp4, "ckpt-fp8-fp4");
}

#[test]
fn tiny_bf16_matches_fixture_layout() {
    check_against_fixture(WeightFormat::Bf16, "ckpt-bf16");
}

#[test]
fn tiny_preset_has_fixture_shapes() {
    let text = std::fs::read_to_string(fixture_dir("ckpt-bf16").join("config.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ours = serde_json::to_value(preset_config(Preset::Tiny)).unwrap();
    for (k, v) in ours.as_object().unwrap() {
        match k.as_str() {
            "swiglu_limit" => assert_eq!(v.as_f64(), Some(10.0)),
            "rope_scaling" => {
                for f in [
                    "factor",
                    "original_max_position_embeddings",
                    "beta_fast",
                    "beta_slow",
                ] {
                    assert_eq!(v[f].as_f64(), fixture[k][f].as_f64(), "rope_scaling.{f}");
                }
            }
            _ => match (v.as_f64(), fixture[k].as_f64()) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{k}"),
                _ => assert_eq!(v, &fixture[k], "{k}"),
            },
        }
    }
    for p in [Preset::Tiny, Preset::Small, Preset::Bench] {
        preset_config(p)
            .validate(Path::new(&p.to_string()))
            .unwrap();
        assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
    }
    assert!(
        "huge"
            .parse::<Preset>()
            .unwrap_err()
            .to_string()
            .contains("huge")
    );
    let bench = preset_config(Preset::Bench);
    assert_eq!(bench.compress_ratios.len(), bench.num_hidden_layers + 1);
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let (a, sa) = write(WeightFormat::Fp8Fp4, 42, 0);
    let (b, _) = write(WeightFormat::Fp8Fp4, 42, 0);
    let (c, _) = write(WeightFormat::Fp8Fp4, 43, 0);
    let shard = |d: &tempfile::TempDir| {
        std::fs::read(d.path().join(st_writer::shard_file_name(1, 1))).unwrap()
    };
    assert_eq!(sa.shards, 1);
    assert_eq!(shard(&a), shard(&b));
    assert_ne!(shard(&a), shard(&c));
    // Same result with a single-threaded pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (d, _) = pool.install(|| write(WeightFormat::Fp8Fp4, 42, 0));
    assert_eq!(shard(&a), shard(&d));
}

#[test]
fn shards_split_and_index_is_consistent() {
    let (dir, summary) = write(WeightFormat::Bf16, 1, 256 << 10);
    assert!(summary.shards > 3, "{} shards", summary.shards);
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let mut total = 0u64;
    for i in 1..=summary.shards {
        let name = st_writer::shard_file_name(i, summary.shards);
        let buf = std::fs::read(dir.path().join(&name)).unwrap();
        let st = SafeTensors::deserialize(&buf).unwrap();
        for (t, view) in st.tensors() {
            assert_eq!(index["weight_map"][&t], name.as_str());
            total += view.data().len() as u64;
        }
    }
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
    assert_eq!(summary.data_bytes, total);
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        summary.tensors
    );
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));
}

/// Both formats describe the same model, and the values follow the documented init.
#[test]
fn formats_agree_and_values_are_tame() {
    let (q, _) = write(WeightFormat::Fp8Fp4, 5, 0);
    let (b, _) = write(WeightFormat::Bf16, 5, 0);
    let qb = std::fs::read(q.path().join(st_writer::shard_file_name(1, 1))).unwrap();
    let bb = std::fs::read(b.path().join(st_writer::shard_file_name(1, 1))).unwrap();
    let (qs, bs) = (
        SafeTensors::deserialize(&qb).unwrap(),
        SafeTensors::deserialize(&bb).unwrap(),
    );
    let bf = |name: &str| -> Vec<f32> {
        bs.tensor(name)
            .unwrap()
            .data()
            .chunks(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect()
    };
    // FP8: dequantized FP8 bytes equal the BF16 checkpoint's values.
    let w = qs.tensor("layers.1.attn.wq_b.weight").unwrap();
    let s = qs.tensor("layers.1.attn.wq_b.scale").unwrap();
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let bc = cols.div_ceil(FP8_BLOCK);
    let ref_vals = bf("layers.1.attn.wq_b.weight");
    assert_eq!(ref_vals.len(), rows * cols);
    for (i, (&q, &want)) in w.data().iter().zip(&ref_vals).enumerate() {
        let sc = s.data()[(i / cols / FP8_BLOCK) * bc + (i % cols) / FP8_BLOCK];
        let v = v4_kernels::quant::e4m3_to_f32(q) * v4_kernels::quant::e8m0_to_f32(sc);
        assert_eq!(v, want, "element {i}");
    }
    // std ~ 1/sqrt(in) for linears, 1 for the embedding, norms 1, sinks 0.
    let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let wq_a = bf("layers.0.attn.wq_a.weight");
    assert!(
        (std(&wq_a) * (128f32).sqrt() - 1.0).abs() < 0.1,
        "{}",
        std(&wq_a)
    );
    let emb = bf("embed.weight");
    assert!((std(&emb) - 1.0).abs() < 0.05);
    let expert = bf("layers.1.ffn.experts.3.w2.weight");
    assert!((std(&expert) * 8.0 - 1.0).abs() < 0.2, "{}", std(&expert));
    assert!(bf("layers.2.attn_norm.weight").iter().all(|&x| x == 1.0));
    let sink = bs.tensor("layers.0.attn.attn_sink").unwrap();
    assert!(sink.data().iter().all(|&x| x == 0));
    // tid2eid: distinct ids in range on every row.
    let t = bs.tensor("layers.0.ffn.gate.tid2eid").unwrap();
    let ids: Vec<i64> = t
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for row in ids.chunks(2) {
        assert!(
            row.iter().all(|&e| (0..8).contains(&e)) && row[0] != row[1],
            "{row:?}"
        );
    }
    assert_eq!(
        t.data(),
        qs.tensor("layers.0.ffn.gate.tid2eid").unwrap().data()
    );
}

#[test]
fn bad_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = preset_config(Preset::Tiny);
    cfg.moe_intermediate_size = 48; // w2 input 48 is not a multiple of 32
    let opts = InitOptions {
        format: WeightFormat::Fp8Fp4,
        ..InitOptions::default()
    };
    let err = write_random_checkpoint(&cfg, dir.path(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("w2.weight") && err.contains("48"), "{err}");
    // BF16 stores such experts unquantized.
    let opts = InitOptions {
        format: WeightFormat::Bf16,
        ..InitOptions::default()
    };
    write_random_checkpoint(&cfg, dir.path(), &opts).unwrap();
    // An unwritable output directory is named.
    let file = dir.path().join("config.json");
    let err = write_random_checkpoint(&cfg, &file.join("sub"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    assert_eq!("fp8-fp4".parse::<WeightFormat>(), Ok(WeightFormat::Fp8Fp4));
    assert!("int4".parse::<WeightFormat>().is_err());
}
