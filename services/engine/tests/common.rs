//! Shared helpers of the golden tests: the fixture paths (`../shared` beside the project
//! root) and readers for the golden safetensors files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use safetensors::{Dtype, SafeTensors};
use v4_engine::Model;

pub fn fixture_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tiny-v4");
    assert!(
        dir.join("golden.safetensors").is_file(),
        "golden fixtures missing: expected {} (the ../shared folder beside the project root)",
        dir.display()
    );
    dir
}

pub fn model(kind: &str) -> &'static Model {
    static BF16: OnceLock<Model> = OnceLock::new();
    static FP8: OnceLock<Model> = OnceLock::new();
    let cell = match kind {
        "ckpt-bf16" => &BF16,
        "ckpt-fp8-fp4" => &FP8,
        other => panic!("unknown checkpoint {other}"),
    };
    cell.get_or_init(|| Model::load(&fixture_dir().join(kind)).expect("fixture checkpoint loads"))
}

/// A safetensors file of golden tensors, read fully (they are small).
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    pub fn open(name: &str) -> Self {
        let path = fixture_dir().join(name);
        Self {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("golden file parses")
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    }

    pub fn ints(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        match t.dtype() {
            Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        }
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.ints(name).into_iter().map(|v| v as u32).collect()
    }
}

pub const SEQUENCES: usize = 5;

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
    eprintln!("{what}: max abs diff {d:e}");
}
