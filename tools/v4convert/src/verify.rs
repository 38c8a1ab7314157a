//! `v4convert verify --model DIR`: is this directory exactly what its manifest says, and does it
//! fit its config?
//!
//! * every file listed in `v4convert-manifest.json` exists with the listed size and sha256
//!   (hashed in parallel); files present but not listed are reported;
//! * every tensor the config's layout needs is there with the right shape and a dtype the engine
//!   reads, no unknown tensor is there (the same checks a conversion runs on its input);
//! * the encodings found agree with the config's `quantization` section / `expert_dtype`.
//!
//! Without a manifest (an official checkpoint, say) the hash step is skipped, except for shards
//! that are Hugging Face cache blobs, whose name is their sha256.

use std::path::Path;

use rayon::prelude::*;
use v4_engine::config::ModelConfig;

use crate::error::ConvertError;
use crate::manifest::{MANIFEST_FILE, Manifest, sha256_file};
use crate::plan::{Encoding, ExpertFormat, LinearFormat, TargetOptions, TensorClass, build_plan};
use crate::source::SourceCheckpoint;

#[derive(Debug, Default)]
pub struct VerifyReport {
    /// One line per check that passed.
    pub passed: Vec<String>,
    /// One line per problem found.
    pub failed: Vec<String>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

pub fn verify(dir: &Path) -> Result<VerifyReport, ConvertError> {
    let mut r = VerifyReport::default();
    let manifest = if dir.join(MANIFEST_FILE).is_file() {
        Some(Manifest::read(dir)?)
    } else {
        r.notes.push(format!(
            "no {MANIFEST_FILE}: file hashes not checked (not a v4convert output)"
        ));
        None
    };

    if let Some(m) = &manifest {
        let results: Vec<Result<(), String>> = m
            .files
            .par_iter()
            .map(|f| {
                let path = dir.join(&f.path);
                if !path.is_file() {
                    return Err(format!("{}: missing", path.display()));
                }
                match sha256_file(&path) {
                    Err(e) => Err(e.to_string()),
                    Ok((_, n)) if n != f.bytes => Err(format!(
                        "{}: {n} bytes, the manifest says {}",
                        path.display(),
                        f.bytes
                    )),
                    Ok((sha, _)) if sha != f.sha256 => Err(format!(
                        "{}: sha256 {sha}, the manifest says {}",
                        path.display(),
                        f.sha256
                    )),
                    Ok(_) => Ok(()),
                }
            })
            .collect();
        let bad: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if bad.is_empty() {
            r.passed.push(format!(
                "{} files match the manifest's sizes and sha256 (converted by {} {})",
                m.files.len(),
                m.converter.name,
                m.converter.version
            ));
        }
        r.failed.extend(bad);
        let mut listed: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        listed.sort();
        let mut extra = Vec::new();
        list_files(dir, dir, &mut extra);
        for e in extra {
            if e != MANIFEST_FILE && listed.binary_search(&e.as_str()).is_err() {
                r.notes.push(format!(
                    "{}: not listed in the manifest",
                    dir.join(e).display()
                ));
            }
        }
    }

    let cfg_path = dir.join("config.json");
    let cfg = match ModelConfig::from_path(&cfg_path) {
        Ok(c) => c,
        Err(e) => {
            r.failed.push(format!("{}: {e}", cfg_path.display()));
            return Ok(r);
        }
    };
    let src = match SourceCheckpoint::open(dir) {
        Ok(s) => s,
        Err(e) => {
            r.failed.push(e.to_string());
            return Ok(r);
        }
    };
    if manifest.is_none() {
        hub_blob_hashes(&src, &mut r);
    }
    // The target options do not matter here: only the source side of the plan is used.
    let any = TargetOptions {
        linears: LinearFormat::Fp8,
        experts: ExpertFormat::Fp4,
        int4_group: 32,
    };
    let plan = match build_plan(&src, &cfg, &any) {
        Ok(p) => p,
        Err(e) => {
            r.failed.push(e.to_string());
            return Ok(r);
        }
    };
    r.passed.push(format!(
        "{} tensors match the layout of config.json ({} layers, {} routed experts)",
        src.len(),
        cfg.num_hidden_layers,
        cfg.n_routed_experts
    ));
    check_quantization(dir, &plan, &mut r)?;
    Ok(r)
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            list_files(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn hub_blob_hashes(src: &SourceCheckpoint, r: &mut VerifyReport) {
    let known: Vec<_> = src
        .shards
        .iter()
        .filter_map(|s| s.known_sha256.as_ref().map(|h| (s.path.clone(), h.clone())))
        .collect();
    if known.is_empty() {
        return;
    }
    let bad: Vec<String> = known
        .par_iter()
        .filter_map(|(p, want)| match sha256_file(p) {
            Ok((got, _)) if &got == want => None,
            Ok((got, _)) => Some(format!(
                "{}: sha256 {got}, the hub cache blob says {want}",
                p.display()
            )),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    if bad.is_empty() {
        r.passed.push(format!(
            "{} shards match the sha256 of their Hugging Face cache blobs",
            known.len()
        ));
    }
    r.failed.extend(bad);
}

/// The encodings present must match what `config.json` declares.
fn check_quantization(
    dir: &Path,
    plan: &crate::plan::Plan,
    r: &mut VerifyReport,
) -> Result<(), ConvertError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read(&cfg_path).map_err(|e| ConvertError::io(&cfg_path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| ConvertError::Config {
        path: cfg_path.clone(),
        message: e.to_string(),
    })?;
    let declared = v.get("expert_dtype").and_then(|x| x.as_str());
    let experts: Vec<Encoding> = plan
        .tensors
        .iter()
        .filter(|t| t.class == TensorClass::RoutedExpert)
        .map(|t| t.src_enc)
        .collect();
    let mut kinds: Vec<&str> = experts
        .iter()
        .map(|e| match e {
            Encoding::Fp4 { .. } => "fp4",
            Encoding::Fp8 { .. } => "fp8",
            Encoding::Int4 { .. } => "int4",
            Encoding::F32 => "f32",
            _ => "bf16",
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    match (declared, kinds.as_slice()) {
        (_, []) => {}
        (Some(d), [k]) if d == *k => r.passed.push(format!(
            "routed experts are {k}, as config.json's expert_dtype says"
        )),
        (None, [k]) if *k == "bf16" => r
            .passed
            .push("routed experts are bf16 (no expert_dtype in config.json)".into()),
        (d, ks) => r.failed.push(format!(
            "{}: expert_dtype is {:?} but the routed experts are stored as {}",
            cfg_path.display(),
            d,
            ks.join(" + ")
        )),
    }
    if let Some(q) = v.get("quantization") {
        let want_group = q
            .pointer("/routed_experts/group_size")
            .and_then(|g| g.as_u64());
        if let Some(g) = want_group {
            let wrong = experts.iter().find(|e| match e {
                Encoding::Int4 { group } | Encoding::Fp4 { group } => *group as u64 != g,
                _ => false,
            });
            match wrong {
                None => r.passed.push(format!(
                    "routed expert group size {g}, as the quantization section says"
                )),
                Some(e) => r.failed.push(format!(
                    "{}: quantization.routed_experts.group_size is {g} but a routed expert is {}",
                    cfg_path.display(),
                    e.label()
                )),
            }
        }
    }
    Ok(())
}
