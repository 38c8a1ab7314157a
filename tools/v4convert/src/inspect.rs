//! `v4convert inspect PATH`: the tensor table of a checkpoint directory or a single safetensors
//! file (name, dtype, shape, bytes), totals per tensor class and dtype, and parameter counts.
//!
//! Parameters count logical weights: a packed 4-bit byte holds two, scale tensors and the
//! `tid2eid` routing table hold none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use safetensors::Dtype;
use serde::Serialize;

use crate::error::ConvertError;
use crate::source::{SourceCheckpoint, dtype_name};

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
    pub params: u64,
    pub class: &'static str,
    pub file: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub tensors: usize,
    pub bytes: u64,
    pub params: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    pub files: usize,
    pub tensors: Vec<TensorRow>,
    pub by_class: BTreeMap<&'static str, Totals>,
    pub by_dtype: BTreeMap<String, Totals>,
    pub total: Totals,
}

/// Class of a tensor by its official name.
pub fn class_of_name(name: &str) -> &'static str {
    let scale = name.ends_with(".scale") || name.ends_with(".weight_scale_inv");
    if name.starts_with("mtp.") {
        "mtp"
    } else if scale {
        "scales"
    } else if name.contains(".ffn.experts.") {
        "routed_experts"
    } else if name.contains(".ffn.shared_experts.") {
        "shared_experts"
    } else if name.contains(".attn.compressor.") || name.contains(".attn.indexer.") {
        "compressor_indexer"
    } else if name.contains(".attn.") {
        "attention"
    } else if name.contains(".ffn.gate.") {
        "router"
    } else if name.starts_with("embed.") {
        "embedding"
    } else if name.starts_with("head.") {
        "head"
    } else {
        "norms_hc"
    }
}

fn params_of(name: &str, dtype: Dtype, numel: u64) -> u64 {
    let scale = name.ends_with(".scale") || name.ends_with(".weight_scale_inv");
    if scale || name.ends_with(".tid2eid") {
        0
    } else if matches!(dtype, Dtype::I8 | Dtype::U8) {
        numel * 2
    } else {
        numel
    }
}

/// Inspects a checkpoint directory or a `.safetensors` file.
pub fn inspect(path: &Path) -> Result<Inspection, ConvertError> {
    let src = if path.is_file() {
        SourceCheckpoint::open_file(path)?
    } else {
        SourceCheckpoint::open(path)?
    };
    let mut rows = Vec::with_capacity(src.len());
    let mut by_class: BTreeMap<&'static str, Totals> = BTreeMap::new();
    let mut by_dtype: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for t in src.tensors() {
        let params = params_of(&t.name, t.dtype, t.numel());
        let class = class_of_name(&t.name);
        let row = TensorRow {
            name: t.name.clone(),
            dtype: dtype_name(t.dtype).to_string(),
            shape: t.shape.clone(),
            bytes: t.len,
            params,
            class,
            file: src
                .shard_path(t)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        for tot in [
            by_class.entry(class).or_default(),
            by_dtype.entry(row.dtype.clone()).or_default(),
            &mut total,
        ] {
            tot.tensors += 1;
            tot.bytes += t.len;
            tot.params += params;
        }
        rows.push(row);
    }
    Ok(Inspection {
        path: path.display().to_string(),
        files: src.shards.len(),
        tensors: rows,
        by_class,
        by_dtype,
        total,
    })
}

/// Human-readable number of bytes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Human-readable parameter count.
pub fn human_params(p: u64) -> String {
    match p {
        p if p >= 1_000_000_000 => format!("{:.2}B", p as f64 / 1e9),
        p if p >= 1_000_000 => format!("{:.2}M", p as f64 / 1e6),
        p if p >= 1_000 => format!("{:.1}K", p as f64 / 1e3),
        p => p.to_string(),
    }
}

/// The text report: the table (unless `summary_only`), then the totals.
pub fn render(ins: &Inspection, summary_only: bool, filter: Option<&str>) -> String {
    let mut s = String::new();
    if !summary_only {
        let w = ins
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "{:<w$}  {:<8}  {:<18}  {:>12}  {:>10}",
            "name", "dtype", "shape", "bytes", "params"
        );
        for t in &ins.tensors {
            if filter.is_some_and(|f| !t.name.contains(f)) {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<w$}  {:<8}  {:<18}  {:>12}  {:>10}",
                t.name,
                t.dtype,
                format!("{:?}", t.shape),
                t.bytes,
                human_params(t.params)
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "{} ({} file(s))", ins.path, ins.files);
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>12} {:>10}",
        "class", "tensors", "bytes", "params"
    );
    for (k, t) in &ins.by_class {
        let _ = writeln!(
            s,
            "{:<20} {:>8} {:>12} {:>10}",
            k,
            t.tensors,
            human_bytes(t.bytes),
            human_params(t.params)
        );
    }
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>12} {:>10}",
        "dtype", "tensors", "bytes", "params"
    );
    for (k, t) in &ins.by_dtype {
        let _ = writeln!(
            s,
            "{:<20} {:>8} {:>12} {:>10}",
            k,
            t.tensors,
            human_bytes(t.bytes),
            human_params(t.params)
        );
    }
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>12} {:>10}",
        "total",
        ins.total.tensors,
        human_bytes(ins.total.bytes),
        human_params(ins.total.params)
    );
    s
}
