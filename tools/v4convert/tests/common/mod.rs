//! Shared helpers of the converter tests: fixture paths and checkpoint surgery.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::Dtype;
use v4_engine::st_writer::{ShardWriter, TensorSpec, write_index};
use v4convert::source::SourceCheckpoint;

pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        dir.join("fixtures/tiny-v4/golden.safetensors").is_file(),
        "fixtures missing: expected {} (the ../shared folder beside the project root)",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures/tiny-v4").join(name)
}

pub fn golden() -> PathBuf {
    fixture("golden.safetensors")
}

/// One tensor of a rewritten checkpoint.
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Copies checkpoint `src` into `dst` as one shard, passing every tensor through `edit`
/// (return `None` to drop it) and appending `extra`.
pub fn rewrite_checkpoint(
    src: &Path,
    dst: &Path,
    mut edit: impl FnMut(Tensor) -> Option<Tensor>,
    extra: Vec<Tensor>,
) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let ck = SourceCheckpoint::open(src).unwrap();
    let mut tensors: Vec<Tensor> = ck
        .tensors()
        .filter_map(|t| {
            edit(Tensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: ck.read_all(t).unwrap(),
            })
        })
        .collect();
    tensors.extend(extra);
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, t.dtype, t.shape.clone()))
        .collect();
    let file = "model-00001-of-00001.safetensors";
    let mut w = ShardWriter::create(dst.join(file), specs).unwrap();
    let mut map = std::collections::BTreeMap::new();
    let mut total = 0;
    for t in &tensors {
        w.write_tensor(&t.name, &t.data).unwrap();
        map.insert(t.name.clone(), file.to_string());
        total += t.data.len() as u64;
    }
    w.finish().unwrap();
    write_index(dst, &map, total).unwrap();
}

pub fn v4convert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_v4convert"))
        .args(args)
        .env("V4_THREADS", "2")
        .output()
        .expect("v4convert runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Directory entries of `dir` (names), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
