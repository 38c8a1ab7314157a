//! The safetensors conversion driver.
//!
//! 1. Plan everything up front ([`crate::plan`]): a bad source fails before the output exists.
//! 2. Write into `<to>.partial/`, shard by shard. Each shard is itself written as
//!    `<shard>.partial` and renamed when complete; after each shard the state file
//!    `.v4convert-state.json` records its sha256. An interrupted run therefore leaves only a
//!    directory whose name ends in `.partial`, and `--resume` continues with the first shard not
//!    recorded (after re-hashing the recorded ones).
//! 3. Finally write the index, `config.json` (with the `quantization` section), the other files
//!    of the source (tokenizer, generation config...), the manifest, and rename `<to>.partial`
//!    to `<to>`.
//!
//! Memory: one row block batch per tensor in flight (see [`crate::codec`]) plus the scale
//! tensor being assembled and a 1 MiB write buffer, independent of the model's size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use v4_engine::config::ModelConfig;
use v4_engine::st_writer::{ShardWriter, TensorSpec, plan_shards, shard_file_name, write_index};

use crate::codec::{ErrorStats, TensorSink, convert_tensor};
use crate::error::ConvertError;
use crate::manifest::{
    CONVERTER_VERSION, ClassReport, Converter, FileEntry, MANIFEST_FILE, MANIFEST_FORMAT, Manifest,
    SourceIdentity, SourceShardEntry, sha256_file, write_atomic,
};
use crate::plan::{Encoding, Plan, TargetOptions, TensorClass, TensorPlan, build_plan};
use crate::progress::Progress;
use crate::quant_config::{config_with_quantization, quantization_section};
use crate::source::{SourceCheckpoint, hex, hub_identity};

const STATE_FILE: &str = ".v4convert-state.json";

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub from: PathBuf,
    pub to: PathBuf,
    pub target: TargetOptions,
    /// Upper bound of a shard's data bytes (0 = one shard).
    pub shard_bytes: u64,
    /// Continue an interrupted conversion found at `<to>.partial`.
    pub resume: bool,
    /// Remove an existing output (or interrupted conversion) first.
    pub force: bool,
    /// Stop (as if killed) after writing this many shards: exercises `--resume`.
    pub stop_after_shards: Option<usize>,
}

/// What a conversion did (also printed by the CLI).
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub shards: usize,
    pub shards_resumed: usize,
    pub tensors: usize,
    pub seconds: f64,
    pub classes: BTreeMap<String, ClassReport>,
    pub dropped: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    plan_id: String,
    /// Shard file name → sha256, for shards already complete.
    done: BTreeMap<String, (u64, String)>,
    /// Per-class error statistics of the completed shards.
    stats: BTreeMap<String, ErrorStats>,
}

/// `<to>.partial` beside `to`.
pub fn partial_dir(to: &Path) -> PathBuf {
    let mut s = to.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

pub fn class_key(c: TensorClass) -> &'static str {
    match c {
        TensorClass::Linear => "linears",
        TensorClass::RoutedExpert => "routed_experts",
        TensorClass::Other => "other",
    }
}

/// Runs a conversion.
pub fn convert(opts: &ConvertOptions, progress: &Progress) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let cfg_path = opts.from.join("config.json");
    let cfg = ModelConfig::from_path(&cfg_path).map_err(|e| ConvertError::Config {
        path: cfg_path.clone(),
        message: e.to_string(),
    })?;
    let src = SourceCheckpoint::open(&opts.from)?;
    let plan = build_plan(&src, &cfg, &opts.target)?;

    // Shard layout: a weight and its scale always share a shard.
    let units: Vec<Vec<TensorSpec>> = plan.tensors.iter().map(|t| t.out.clone()).collect();
    let shards = plan_shards(units, opts.shard_bytes);
    let n = shards.len();
    let by_name: BTreeMap<&str, &TensorPlan> =
        plan.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let plan_id = plan_id(&src, opts, &shards)?;

    let out = &opts.to;
    let partial = partial_dir(out);
    prepare_output(opts, out, &partial)?;

    let state_path = partial.join(STATE_FILE);
    let mut state = if partial.is_dir() {
        let s = read_state(&state_path)?;
        if s.plan_id != plan_id {
            return Err(ConvertError::Output {
                path: partial.clone(),
                message: "this interrupted conversion was made from another source or with \
                          other options; rerun with --force to start over"
                    .into(),
            });
        }
        s
    } else {
        std::fs::create_dir_all(&partial).map_err(|e| ConvertError::io(&partial, e))?;
        let s = State {
            plan_id: plan_id.clone(),
            done: BTreeMap::new(),
            stats: BTreeMap::new(),
        };
        save_state(&state_path, &s)?;
        s
    };

    let total_src: u64 = plan.tensors.iter().map(TensorPlan::src_bytes).sum();
    progress.start("converting", total_src);
    let mut resumed = 0;
    let mut written = 0;
    let mut weight_map = BTreeMap::new();
    for (i, specs) in shards.iter().enumerate() {
        let file = shard_file_name(i + 1, n);
        for s in specs {
            weight_map.insert(s.name.clone(), file.clone());
        }
        let tensors: Vec<&TensorPlan> = specs
            .iter()
            .filter_map(|s| by_name.get(s.name.as_str()).copied())
            .collect();
        let shard_src: u64 = tensors.iter().map(|t| t.src_bytes()).sum();
        if let Some((bytes, sha)) = state.done.get(&file) {
            let path = partial.join(&file);
            let (got, got_bytes) = sha256_file(&path)?;
            if got == *sha && got_bytes == *bytes {
                resumed += 1;
                progress.advance(shard_src);
                continue;
            }
            progress.note(&format!(
                "{}: does not match the recorded sha256; converting it again",
                path.display()
            ));
        }
        let mut w = ShardWriter::create(partial.join(&file), specs.clone())?;
        let mut shard_stats: BTreeMap<String, ErrorStats> = BTreeMap::new();
        for t in tensors {
            let st = {
                let mut sink = ShardSink {
                    w: &mut w,
                    t,
                    begun: false,
                };
                let st = convert_tensor(&src, t, &mut sink)?;
                sink.close()?;
                st
            };
            shard_stats
                .entry(class_key(t.class).to_string())
                .or_default()
                .merge(&st);
            progress.advance(t.src_bytes());
        }
        let summary = w.finish()?;
        state
            .done
            .insert(file.clone(), (summary.file_bytes, summary.sha256));
        for (k, v) in shard_stats {
            state.stats.entry(k).or_default().merge(&v);
        }
        save_state(&state_path, &state)?;
        written += 1;
        if opts.stop_after_shards == Some(written) && i + 1 < n {
            progress.finish();
            return Err(ConvertError::Interrupted {
                path: partial.clone(),
                done: state.done.len(),
                total: n,
            });
        }
    }
    progress.finish();

    let output_data: u64 = shards.iter().flatten().map(TensorSpec::byte_len).sum();
    write_index(&partial, &weight_map, output_data)?;
    let quant = quantization_section(&plan, &opts.target);
    let cfg_json = config_with_quantization(&cfg_path, &plan, &quant)?;
    write_atomic(&partial.join("config.json"), cfg_json.as_bytes())?;
    copy_aux_files(&opts.from, &partial)?;

    let classes = class_reports(&plan, &state);
    let manifest = build_manifest(&src, &cfg_path, opts, &partial, &state, quant, &plan)?;
    let output_bytes = manifest.files.iter().map(|f| f.bytes).sum();
    manifest.write(&partial)?;
    std::fs::remove_file(&state_path).map_err(|e| ConvertError::io(&state_path, e))?;
    std::fs::rename(&partial, out).map_err(|e| ConvertError::io(out, e))?;
    Ok(ConvertReport {
        output: out.clone(),
        input_bytes: src.data_bytes(),
        output_bytes,
        shards: n,
        shards_resumed: resumed,
        tensors: plan.tensors.len(),
        seconds: started.elapsed().as_secs_f64(),
        classes,
        dropped: plan.dropped.clone(),
    })
}

/// Feeds one tensor's converted bytes into the shard writer.
struct ShardSink<'a> {
    w: &'a mut ShardWriter,
    t: &'a TensorPlan,
    begun: bool,
}

impl ShardSink<'_> {
    fn begin(&mut self) -> Result<(), ConvertError> {
        if !self.begun {
            self.w.begin_tensor(&self.t.out[0].name)?;
            self.begun = true;
        }
        Ok(())
    }

    /// Closes the weight tensor (and checks a scale was written when one was declared).
    fn close(&mut self) -> Result<(), ConvertError> {
        if !self.begun {
            // A zero-sized tensor gets no chunks.
            self.begin()?;
        }
        if self.w.next_tensor().map(|s| s.name.as_str()) == Some(self.t.out[0].name.as_str()) {
            self.w.end_tensor()?;
        }
        Ok(())
    }
}

impl TensorSink for ShardSink<'_> {
    fn weight_chunk(&mut self, bytes: &[u8]) -> Result<(), ConvertError> {
        self.begin()?;
        Ok(self.w.write_chunk(bytes)?)
    }

    fn scale(&mut self, bytes: &[u8]) -> Result<(), ConvertError> {
        self.begin()?;
        self.w.end_tensor()?;
        let name = &self.t.out[1].name;
        Ok(self.w.write_tensor(name, bytes)?)
    }
}

fn prepare_output(opts: &ConvertOptions, out: &Path, partial: &Path) -> Result<(), ConvertError> {
    if out.exists() {
        if !opts.force {
            return Err(ConvertError::Output {
                path: out.to_path_buf(),
                message: "already exists; choose another --to or pass --force to replace it".into(),
            });
        }
        remove_path(out)?;
    }
    if partial.exists() {
        if opts.force {
            remove_path(partial)?;
        } else if !opts.resume {
            return Err(ConvertError::Output {
                path: partial.to_path_buf(),
                message: "an interrupted conversion is here; pass --resume to continue it or \
                          --force to start over"
                    .into(),
            });
        }
    }
    if let Some(parent) = out.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| ConvertError::io(parent, e))?;
    }
    Ok(())
}

fn remove_path(p: &Path) -> Result<(), ConvertError> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    r.map_err(|e| ConvertError::io(p, e))
}

fn read_state(path: &Path) -> Result<State, ConvertError> {
    let text = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| ConvertError::Output {
        path: path.to_path_buf(),
        message: format!("unreadable conversion state ({e}); rerun with --force"),
    })
}

fn save_state(path: &Path, s: &State) -> Result<(), ConvertError> {
    let text = serde_json::to_vec_pretty(s).map_err(|e| ConvertError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &text)
}

/// Identifies source + options + shard layout: a resumed run must match it exactly.
fn plan_id(
    src: &SourceCheckpoint,
    opts: &ConvertOptions,
    shards: &[Vec<TensorSpec>],
) -> Result<String, ConvertError> {
    let mut h = Sha256::new();
    h.update(CONVERTER_VERSION.as_bytes());
    h.update(src.index_sha256.as_bytes());
    for s in &src.shards {
        h.update(s.bytes.to_le_bytes());
    }
    let cfg = opts.from.join("config.json");
    h.update(std::fs::read(&cfg).map_err(|e| ConvertError::io(&cfg, e))?);
    h.update(serde_json::to_vec(&opts.target).unwrap_or_default());
    for shard in shards {
        h.update(b"|shard|");
        for t in shard {
            h.update(format!("{}:{}:{:?};", t.name, t.dtype, t.shape).as_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

/// Copies the source's other files (tokenizer, generation config, docs...) into the output.
fn copy_aux_files(from: &Path, to: &Path) -> Result<(), ConvertError> {
    copy_dir_filtered(from, to, true)
}

fn copy_dir_filtered(from: &Path, to: &Path, top: bool) -> Result<(), ConvertError> {
    let rd = std::fs::read_dir(from).map_err(|e| ConvertError::io(from, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| ConvertError::io(from, e))?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        let path = entry.path();
        let skip = name_s.ends_with(".safetensors")
            || name_s.starts_with('.')
            || (top
                && matches!(
                    name_s.as_ref(),
                    "config.json" | "model.safetensors.index.json" | MANIFEST_FILE
                ));
        if skip {
            continue;
        }
        let dst = to.join(&name);
        if path.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| ConvertError::io(&dst, e))?;
            copy_dir_filtered(&path, &dst, false)?;
        } else if path.is_file() {
            std::fs::copy(&path, &dst).map_err(|e| ConvertError::io(&dst, e))?;
        }
    }
    Ok(())
}

fn class_reports(plan: &Plan, state: &State) -> BTreeMap<String, ClassReport> {
    let mut out: BTreeMap<String, ClassReport> = BTreeMap::new();
    for t in &plan.tensors {
        let r = out.entry(class_key(t.class).to_string()).or_default();
        r.tensors += 1;
        r.source_bytes += t.src_bytes();
        r.output_bytes += t.out_bytes();
        let label = match t.dst_enc {
            Encoding::Raw => "as in source".to_string(),
            e => e.label(),
        };
        if !r.encodings.contains(&label) {
            r.encodings.push(label);
        }
    }
    for (k, r) in out.iter_mut() {
        if let Some(s) = state.stats.get(k) {
            r.stats = *s;
        }
        r.lossless = r.stats.lossless();
    }
    out
}

fn build_manifest(
    src: &SourceCheckpoint,
    cfg_path: &Path,
    opts: &ConvertOptions,
    dir: &Path,
    state: &State,
    quantization: serde_json::Value,
    plan: &Plan,
) -> Result<Manifest, ConvertError> {
    let (cfg_sha, _) = sha256_file(cfg_path)?;
    let hub = hub_identity(&opts.from);
    let source = SourceIdentity {
        path: std::fs::canonicalize(&opts.from).unwrap_or_else(|_| opts.from.clone()),
        hf_repo: hub.as_ref().map(|h| h.0.clone()),
        hf_commit: hub.map(|h| h.1),
        index_sha256: src.index_sha256.clone(),
        config_sha256: cfg_sha,
        shards: src
            .shards
            .iter()
            .map(|s| SourceShardEntry {
                file: s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: s.bytes,
                sha256: s.known_sha256.clone(),
            })
            .collect(),
        total_bytes: src.data_bytes(),
    };
    let mut files = Vec::new();
    collect_files(dir, dir, state, &mut files)?;
    files.sort();
    Ok(Manifest {
        format: MANIFEST_FORMAT.to_string(),
        converter: Converter {
            name: "v4convert".into(),
            version: CONVERTER_VERSION.into(),
        },
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        source,
        options: opts.target,
        quantization,
        files,
        tensors: plan.tensors.len(),
        report: class_reports(plan, state),
        dropped: plan.dropped.clone(),
    })
}

/// Every file under `dir` (relative paths), hashing those the state does not already know.
fn collect_files(
    root: &Path,
    dir: &Path,
    state: &State,
    out: &mut Vec<FileEntry>,
) -> Result<(), ConvertError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ConvertError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| ConvertError::io(dir, e))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if rel == MANIFEST_FILE || rel == STATE_FILE {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, state, out)?;
            continue;
        }
        let (sha256, bytes) = match state.done.get(&rel) {
            Some((bytes, sha)) => (sha.clone(), *bytes),
            None => sha256_file(&path)?,
        };
        out.push(FileEntry {
            path: rel,
            bytes,
            sha256,
        });
    }
    Ok(())
}
