//! Bad checkpoints give errors that name the file and tensor, never a panic or a read past
//! the end of a file.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use v4_engine::{LoadError, Model};

/// A copy of the bf16 fixture checkpoint in a temporary directory.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture_dir().join("ckpt-bf16");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let dir = tmp.path().to_path_buf();
    (tmp, dir)
}

fn shard_of(dir: &Path, tensor: &str) -> PathBuf {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    dir.join(index["weight_map"][tensor].as_str().unwrap())
}

/// Rewrite the shard holding `tensor` with `edit` applied to its (dtype, shape, bytes);
/// `None` drops it.
fn rewrite(
    dir: &Path,
    tensor: &str,
    edit: impl Fn(Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = shard_of(dir, tensor);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let (d, s, b) = (view.dtype(), view.shape().to_vec(), view.data().to_vec());
        if name == tensor {
            if let Some((d, s, b)) = edit(d, s, b) {
                owned.push((name, d, s, b));
            }
        } else {
            owned.push((name, d, s, b));
        }
    }
    let views: HashMap<String, TensorView<'_>> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("loading a broken checkpoint succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_shard_names_the_file() {
    let (_tmp, dir) = copy_fixture();
    let shard = shard_of(&dir, "head.weight");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(len - 1000).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains(&shard.display().to_string()), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn corrupt_header_names_the_file() {
    let (_tmp, dir) = copy_fixture();
    let shard = shard_of(&dir, "head.weight");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[10..40].copy_from_slice(&[b'#'; 30]);
    std::fs::write(&shard, &bytes).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains(&shard.display().to_string()), "{msg}");
    // A header length pointing past the end of the file.
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains(&shard.display().to_string()), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = copy_fixture();
    let name = "layers.1.attn.indexer.wq_b.weight";
    rewrite(&dir, name, |_, _, _| None);
    // Drop it from the index too, as a checkpoint that simply lacks it would.
    let ipath = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ipath).unwrap()).unwrap();
    index["weight_map"].as_object_mut().unwrap().remove(name);
    std::fs::write(&ipath, index.to_string()).unwrap();
    let err = Model::load(&dir).err().expect("must fail");
    assert!(
        matches!(&err, LoadError::Missing { name: n, .. } if n == name),
        "{err}"
    );
}

#[test]
fn index_entry_without_tensor_names_shard_and_tensor() {
    let (_tmp, dir) = copy_fixture();
    let name = "layers.2.attn.compressor.ape";
    let shard = shard_of(&dir, name);
    rewrite(&dir, name, |_, _, _| None);
    let msg = load_err(&dir);
    assert!(
        msg.contains(name) && msg.contains(&shard.display().to_string()),
        "{msg}"
    );
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let (_tmp, dir) = copy_fixture();
    let name = "layers.0.attn.q_norm.weight";
    rewrite(&dir, name, |d, _, b| Some((d, vec![32], b[..64].to_vec())));
    let msg = load_err(&dir);
    assert!(
        msg.contains(name) && msg.contains("[64]") && msg.contains("[32]"),
        "{msg}"
    );
}

#[test]
fn wrong_dtype_names_tensor_expected_and_found() {
    let (_tmp, dir) = copy_fixture();
    let name = "layers.0.attn.attn_sink";
    rewrite(&dir, name, |_, s, b| Some((Dtype::I32, s, b)));
    let msg = load_err(&dir);
    assert!(
        msg.contains(name) && msg.contains("I32") && msg.contains("F32"),
        "{msg}"
    );
}

#[test]
fn out_of_range_expert_id_is_an_error() {
    let (_tmp, dir) = copy_fixture();
    let name = "layers.0.ffn.gate.tid2eid";
    rewrite(&dir, name, |d, s, mut b| {
        b[..8].copy_from_slice(&99i64.to_le_bytes());
        Some((d, s, b))
    });
    let msg = load_err(&dir);
    assert!(msg.contains(name) && msg.contains("99"), "{msg}");
}

#[test]
fn missing_shard_file_names_it() {
    let (_tmp, dir) = copy_fixture();
    let shard = shard_of(&dir, "embed.weight");
    std::fs::remove_file(&shard).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains(&shard.display().to_string()), "{msg}");
}

#[test]
fn bad_config_names_file_and_field() {
    let (_tmp, dir) = copy_fixture();
    let cpath = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
    cfg["o_groups"] = serde_json::json!(3);
    std::fs::write(&cpath, cfg.to_string()).unwrap();
    let msg = load_err(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("o_groups"),
        "{msg}"
    );
}
