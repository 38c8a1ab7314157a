//! The checkpoint → GGUF driver: plan (validate everything, before any output exists), build the
//! metadata, then stream every tensor through [`GgufWriter`] a chunk of rows (at most one expert)
//! at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use v4_engine::config::ModelConfig;
use v4_engine::loader::Checkpoint;
use v4_kernels::bf16::f32_to_bf16;

use super::GgufError;
use super::mapping::{self, Encoding, PlannedTensor};
use super::metadata;
use super::quants::{self, MXFP4_BYTES, Q4_0_BYTES, Q8_0_BYTES, QK};
use super::source::{SourceKind, SourceSpec};
use super::tokenizer_meta::{find_tokenizer_config, tokenizer_metadata};
use super::types::{GgufValue, file_type};
use super::writer::GgufWriter;

pub use super::mapping::GgufTypes;

/// f32 values decoded per chunk (16 MiB): bounds the converter's working memory.
const CHUNK_ELEMS: usize = 1 << 22;

/// Options of [`convert_to_gguf`].
#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    pub types: GgufTypes,
    /// `tokenizer.json`; `None`: `<src>/tokenizer.json` if present, else no tokenizer metadata.
    pub tokenizer: Option<PathBuf>,
    /// `tokenizer_config.json` (special tokens, `add_bos_token`); `None`: the one beside the
    /// tokenizer or in `<src>`, else DeepSeek-V4's values (see `docs/GGUF.md`).
    pub tokenizer_config: Option<PathBuf>,
    /// A Jinja chat template to store as `tokenizer.chat_template` (llama.cpp's converter uses
    /// its own `models/templates/deepseek-ai-DeepSeek-V4.jinja`; we ship none). `None`: not
    /// written.
    pub chat_template: Option<PathBuf>,
    /// Write the MTP block (llama.cpp's separate `mtp-*.gguf`): not supported, refused.
    pub include_mtp: bool,
}

/// What [`convert_to_gguf`] wrote.
#[derive(Debug, Clone)]
pub struct GgufSummary {
    pub out_file: PathBuf,
    pub file_bytes: u64,
    pub tensors: usize,
    pub metadata_keys: usize,
    /// Number of tensors per ggml type name.
    pub type_counts: BTreeMap<String, usize>,
    /// The tokenizer files used (`None`: no tokenizer metadata was written).
    pub tokenizer: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    /// Source tensors deliberately not converted (`mtp.*`, hash-layer router biases).
    pub skipped: Vec<String>,
    /// Remarks worth showing the user (lossy conversions, defaults applied, omissions).
    pub notes: Vec<String>,
}

impl fmt::Display for GgufSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} ({} bytes): {} tensors, {} metadata keys",
            self.out_file.display(),
            self.file_bytes,
            self.tensors,
            self.metadata_keys
        )?;
        let types: Vec<String> = self
            .type_counts
            .iter()
            .map(|(t, n)| format!("{t} x{n}"))
            .collect();
        writeln!(f, "  types: {}", types.join(", "))?;
        match &self.tokenizer {
            Some(t) => writeln!(f, "  tokenizer: {}", t.display())?,
            None => writeln!(f, "  tokenizer: none (no tokenizer metadata written)")?,
        }
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped {} source tensors", self.skipped.len())?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// `general.name` from the source directory name (a Hugging Face cache snapshot directory
/// `models--org--name/snapshots/<sha>` gives `name`).
fn model_name(src_dir: &Path) -> String {
    let dir = std::fs::canonicalize(src_dir).unwrap_or_else(|_| src_dir.to_path_buf());
    let leaf = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_sha = leaf.len() == 40 && leaf.bytes().all(|b| b.is_ascii_hexdigit());
    let repo = dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    let id = match repo {
        Some(r) if is_sha && r.starts_with("models--") => {
            r.rsplit("--").next().unwrap_or(&leaf).to_string()
        }
        _ => leaf,
    };
    metadata::id_to_title(&id)
}

/// Converts the checkpoint in `src_dir` to a GGUF file `out_file` (written as
/// `<out_file>.partial` and renamed when complete; on error nothing is left behind).
/// `progress(written, total)` is called as bytes are written.
pub fn convert_to_gguf(
    src_dir: &Path,
    out_file: &Path,
    opts: &GgufOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<GgufSummary, GgufError> {
    if opts.include_mtp {
        return Err(GgufError::Unsupported(
            "writing the MTP block to GGUF (llama.cpp's separate mtp-*.gguf) is not supported; \
             convert without it"
                .into(),
        ));
    }
    let cfg = ModelConfig::from_path(&src_dir.join("config.json"))?;
    let ckpt = Checkpoint::open(src_dir)?;
    let plan = mapping::plan(&ckpt, &cfg, opts.types)?;
    let mut notes = Vec::new();

    // Tokenizer.
    let tokenizer = match &opts.tokenizer {
        Some(p) if !p.is_file() => {
            return Err(GgufError::Tokenizer {
                path: p.clone(),
                message: "no such file".into(),
            });
        }
        Some(p) => Some(p.clone()),
        None => Some(src_dir.join("tokenizer.json")).filter(|p| p.is_file()),
    };
    let mut tokenizer_config = None;
    let tok_kv = match &tokenizer {
        Some(t) => {
            tokenizer_config = opts
                .tokenizer_config
                .clone()
                .or_else(|| find_tokenizer_config(t, src_dir));
            let meta = tokenizer_metadata(t, tokenizer_config.as_deref(), &cfg)?;
            notes.extend(meta.notes);
            meta.kv
        }
        None => {
            notes.push(format!(
                "no tokenizer.json given or found in {}: no tokenizer metadata written",
                src_dir.display()
            ));
            Vec::new()
        }
    };

    let decls: Vec<_> = plan.tensors.iter().map(|t| t.decl.clone()).collect();
    let ftype = match opts.types {
        GgufTypes::Stock => file_type::MOSTLY_MXFP4_MOE,
        GgufTypes::F32 => file_type::ALL_F32,
        GgufTypes::Q8_0 => file_type::MOSTLY_Q8_0,
    };
    let mut meta = metadata::model_metadata(
        &cfg,
        &model_name(src_dir),
        &metadata::size_label(&decls),
        ftype,
    );
    meta.extend(tok_kv);
    match &opts.chat_template {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| GgufError::io(p, e))?;
            // Where llama.cpp's converter puts it: right after `general.architecture`.
            meta.insert(
                1,
                ("tokenizer.chat_template".into(), GgufValue::String(text)),
            );
        }
        None => notes.push(
            "tokenizer.chat_template not written (llama.cpp ships its own Jinja template; \
             pass one to include it)"
                .into(),
        ),
    }

    let mut type_counts = BTreeMap::new();
    for d in &decls {
        *type_counts.entry(d.ty.name().to_string()).or_insert(0) += 1;
    }
    describe_plan(&plan.tensors, &plan.skipped, &mut notes);

    let mut w = GgufWriter::create(out_file, &meta, decls)?;
    progress(w.bytes_written(), w.total_bytes());
    let mut inexact_q4 = 0u64;
    for t in &plan.tensors {
        inexact_q4 += write_tensor(&ckpt, &cfg, t, &mut w, progress)?;
    }
    if inexact_q4 > 0 {
        notes.push(format!(
            "{inexact_q4} Q4_0 blocks: the INT4 bf16 scale is not an f16 number and was rounded"
        ));
    }
    let file_bytes = w.finish()?;
    progress(file_bytes, file_bytes);
    Ok(GgufSummary {
        out_file: out_file.to_path_buf(),
        file_bytes,
        tensors: plan.tensors.len(),
        metadata_keys: meta.len(),
        type_counts,
        tokenizer,
        tokenizer_config,
        skipped: plan.skipped,
        notes,
    })
}

/// Summary notes about lossy or unusual choices.
fn describe_plan(tensors: &[PlannedTensor], skipped: &[String], notes: &mut Vec<String>) {
    let count = |f: &dyn Fn(&PlannedTensor) -> bool| tensors.iter().filter(|t| f(t)).count();
    let fp8_q8 = count(&|t| {
        t.encoding == Encoding::Q8_0 && matches!(t.pieces[0].kind, SourceKind::Fp8 { .. })
    });
    if fp8_q8 > 0 {
        notes.push(format!(
            "{fp8_q8} FP8 matrices requantized to Q8_0 (lossy; llama.cpp's converter does the same)"
        ));
    }
    let other_q8 = count(&|t| {
        t.encoding == Encoding::Q8_0 && !matches!(t.pieces[0].kind, SourceKind::Fp8 { .. })
    });
    if other_q8 > 0 {
        notes.push(format!("{other_q8} matrices quantized to Q8_0 (lossy)"));
    }
    let bf16_experts = count(&|t| {
        t.pieces.len() > 1 && t.encoding == Encoding::Copy && t.pieces[0].kind == SourceKind::Bf16
    });
    if bf16_experts > 0 {
        notes.push(format!(
            "{bf16_experts} stacked expert tensors kept as BF16 (BF16 source; MXFP4 would be lossy)"
        ));
    }
    let mtp = skipped.iter().filter(|s| s.starts_with("mtp.")).count();
    if mtp > 0 {
        notes.push(format!(
            "{mtp} mtp.* tensors skipped (MTP block not converted)"
        ));
    }
}

/// Writes one planned tensor; returns the number of Q4_0 blocks whose scale was rounded.
fn write_tensor(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    t: &PlannedTensor,
    w: &mut GgufWriter,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, GgufError> {
    let mut inexact = 0;
    let mut f32_buf: Vec<f32> = Vec::new();
    let mut out_buf: Vec<u8> = Vec::new();
    for p in &t.pieces {
        if t.encoding == Encoding::I32 {
            let bytes = p.int_table_i32(ckpt, cfg.n_routed_experts as u64)?;
            w.write(&bytes)?;
            continue;
        }
        let v = ckpt.get(&p.name)?;
        let step = p.chunk_rows(CHUNK_ELEMS);
        let mut r0 = 0;
        while r0 < p.rows {
            let r1 = (r0 + step).min(p.rows);
            let n = (r1 - r0) * p.cols;
            match t.encoding {
                Encoding::Copy => w.write(p.raw_rows(&v, r0, r1))?,
                Encoding::Mxfp4 | Encoding::Q4_0 => {
                    inexact += repack_rows(ckpt, p, t.encoding, r0, r1, &mut out_buf)?;
                    w.write(&out_buf)?;
                }
                Encoding::F32 | Encoding::Bf16 | Encoding::Q8_0 => {
                    f32_buf.resize(n, 0.0);
                    p.decode_rows(ckpt, r0, r1, &mut f32_buf)?;
                    encode_f32(&f32_buf, t.encoding, &mut out_buf);
                    w.write(&out_buf)?;
                }
                Encoding::I32 => {}
            }
            progress(w.bytes_written(), w.total_bytes());
            r0 = r1;
        }
    }
    w.end_tensor()?;
    progress(w.bytes_written(), w.total_bytes());
    Ok(inexact)
}

/// Encodes f32 values as F32, BF16 or Q8_0 bytes into `out`.
fn encode_f32(x: &[f32], enc: Encoding, out: &mut Vec<u8>) {
    out.clear();
    match enc {
        Encoding::Bf16 => {
            out.reserve(2 * x.len());
            for &v in x {
                out.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        Encoding::Q8_0 => {
            out.resize(x.len() / QK * Q8_0_BYTES, 0);
            quants::quantize_q8_0(x, out);
        }
        _ => {
            out.reserve(4 * x.len());
            for &v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Repacks rows `r0..r1` of an FP4 (→ MXFP4) or INT4 (→ Q4_0) source into `out`.
fn repack_rows(
    ckpt: &Checkpoint,
    p: &SourceSpec,
    enc: Encoding,
    r0: usize,
    r1: usize,
    out: &mut Vec<u8>,
) -> Result<u64, GgufError> {
    let v = ckpt.get(&p.name)?;
    let s = p.scale_view(ckpt)?;
    let codes = p.raw_rows(&v, r0, r1);
    let scales = p.raw_scale_rows(&s, r0, r1);
    let blocks = p.cols / QK;
    let code_row = p.cols / 2;
    let mut inexact = 0;
    out.clear();
    match (enc, p.kind) {
        (Encoding::Mxfp4, SourceKind::Fp4 { group }) => {
            let groups = p.cols / group;
            out.resize((r1 - r0) * blocks * MXFP4_BYTES, 0);
            out.par_chunks_mut(blocks * MXFP4_BYTES)
                .enumerate()
                .for_each(|(i, o)| {
                    let c = &codes[i * code_row..][..code_row];
                    let sc = &scales[i * groups..][..groups];
                    quants::fp4_row_to_mxfp4(c, sc, p.cols, group, o);
                });
        }
        (Encoding::Q4_0, SourceKind::Int4 { group }) => {
            let groups = p.cols / group;
            out.resize((r1 - r0) * blocks * Q4_0_BYTES, 0);
            inexact = out
                .par_chunks_mut(blocks * Q4_0_BYTES)
                .enumerate()
                .map(|(i, o)| {
                    let c = &codes[i * code_row..][..code_row];
                    let sc: Vec<u16> = scales[i * 2 * groups..][..2 * groups]
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    quants::int4_row_to_q4_0(c, &sc, p.cols, group, o)
                })
                .sum();
        }
        _ => {
            return Err(GgufError::SourceValue {
                file: p.file.clone(),
                tensor: p.name.clone(),
                message: format!("cannot repack {} as {enc:?}", p.kind.describe()),
            });
        }
    }
    Ok(inexact)
}
