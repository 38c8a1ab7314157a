//! The `--format gguf` and GGUF `inspect` paths of the CLI (over `v4convert::gguf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use v4convert::gguf::{GgufFile, GgufOptions, GgufTypes, GgufValue, convert_to_gguf};
use v4convert::inspect::{human_bytes, human_params};

pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gguf")
}

pub fn convert(
    from: &Path,
    to: &Path,
    types: &str,
    tokenizer: Option<PathBuf>,
    progress: bool,
) -> Result<ExitCode> {
    let types: GgufTypes = types
        .parse()
        .map_err(|e| anyhow::anyhow!("--gguf-types: {e}"))?;
    let opts = GgufOptions {
        types,
        tokenizer,
        ..Default::default()
    };
    let bar = v4convert::progress::Progress::new(progress);
    bar.start("gguf", 0);
    let last = std::cell::Cell::new(0u64);
    let started = std::time::Instant::now();
    let summary = convert_to_gguf(from, to, &opts, &|done, total| {
        if last.get() == 0 {
            bar.start("gguf", total);
        }
        bar.advance(done.saturating_sub(last.get()));
        last.set(done);
    })?;
    bar.finish();
    println!("{summary}");
    println!("in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn value_text(v: &GgufValue) -> String {
    match v {
        GgufValue::Array { values, .. } if values.len() > 8 => {
            format!("[{} values]", values.len())
        }
        GgufValue::Array { values, .. } => {
            let parts: Vec<String> = values.iter().map(value_text).collect();
            format!("[{}]", parts.join(", "))
        }
        GgufValue::String(s) if s.len() > 80 => {
            format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(60)], s.len())
        }
        GgufValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}")
            .split_once('(')
            .map(|(_, v)| v.trim_end_matches(')').to_string())
            .unwrap_or_default(),
    }
}

pub fn inspect(path: &Path, summary: bool, filter: Option<&str>, json: bool) -> Result<ExitCode> {
    let f = GgufFile::open(path)?;
    let mut by_type: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ty.to_string()).or_default();
        e.0 += 1;
        e.1 += t.nbytes;
        e.2 += t.n_elements();
    }
    if json {
        let tensors: Vec<_> = f
            .tensors()
            .iter()
            .filter(|t| filter.is_none_or(|s| t.name.contains(s)))
            .map(|t| {
                serde_json::json!({"name": t.name, "type": t.ty.to_string(), "dims": t.dims,
                                   "offset": t.offset, "bytes": t.nbytes})
            })
            .collect();
        let meta: serde_json::Map<String, serde_json::Value> = f
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(value_text(v))))
            .collect();
        let v = serde_json::json!({"path": path, "version": f.version(), "metadata": meta,
                                   "tensors": tensors});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !summary {
        for (k, v) in f.metadata() {
            println!("{k} = {}", value_text(v));
        }
        println!();
        let w = f
            .tensors()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!(
            "{:<w$}  {:<8}  {:<24}  {:>12}",
            "name", "type", "dims (ne0 first)", "bytes"
        );
        for t in f.tensors() {
            if filter.is_some_and(|s| !t.name.contains(s)) {
                continue;
            }
            println!(
                "{:<w$}  {:<8}  {:<24}  {:>12}",
                t.name,
                t.ty.to_string(),
                format!("{:?}", t.dims),
                t.nbytes
            );
        }
        println!();
    }
    println!(
        "{} (GGUF v{}, {} metadata keys, {} tensors, {})",
        path.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        human_bytes(f.file_len())
    );
    println!(
        "{:<10} {:>8} {:>12} {:>10}",
        "type", "tensors", "bytes", "elements"
    );
    for (k, (n, b, e)) in &by_type {
        println!(
            "{k:<10} {n:>8} {:>12} {:>10}",
            human_bytes(*b),
            human_params(*e)
        );
    }
    Ok(ExitCode::SUCCESS)
}
