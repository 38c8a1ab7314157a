//! `v4convert-manifest.json`: what a converted model directory holds and where it came from.
//!
//! Written last (just before the output directory gets its final name), it lists every file of
//! the output with its size and sha256, the converter's version, the options, the source's
//! identity (Hugging Face repo and commit when converted from a hub snapshot, the sha256 of the
//! source index and config, every source shard's size and, when the hub cache provides it for
//! free, its sha256) and the conversion's error report. `v4convert verify` checks a directory
//! against it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::ErrorStats;
use crate::error::ConvertError;
use crate::plan::TargetOptions;
use crate::source::hex;

pub const MANIFEST_FILE: &str = "v4convert-manifest.json";
pub const MANIFEST_FORMAT: &str = "v4convert-manifest/1";
pub const CONVERTER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub converter: Converter,
    pub created_unix: u64,
    pub source: SourceIdentity,
    pub options: TargetOptions,
    /// The `quantization` section also written into `config.json`.
    pub quantization: serde_json::Value,
    /// Every file of the output directory except the manifest itself.
    pub files: Vec<FileEntry>,
    pub tensors: usize,
    /// Per tensor class: error of the conversion (decoded output vs source).
    pub report: BTreeMap<String, ClassReport>,
    /// Source tensors not carried over, with the reason.
    #[serde(default)]
    pub dropped: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Converter {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceIdentity {
    pub path: PathBuf,
    #[serde(default)]
    pub hf_repo: Option<String>,
    #[serde(default)]
    pub hf_commit: Option<String>,
    pub index_sha256: String,
    pub config_sha256: String,
    pub shards: Vec<SourceShardEntry>,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceShardEntry {
    pub file: String,
    pub bytes: u64,
    /// Known without reading the file (hub cache blob name), else absent.
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassReport {
    pub tensors: usize,
    /// Encodings written, e.g. `int4 (bf16 1x32)`.
    pub encodings: Vec<String>,
    pub source_bytes: u64,
    pub output_bytes: u64,
    pub lossless: bool,
    pub stats: ErrorStats,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, ConvertError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| ConvertError::io(&path, e))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| ConvertError::Output {
            path: path.clone(),
            message: format!("not a v4convert manifest: {e}"),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(ConvertError::Output {
                path,
                message: format!(
                    "manifest format `{}` (this v4convert reads `{MANIFEST_FORMAT}`)",
                    m.format
                ),
            });
        }
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> Result<(), ConvertError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ConvertError::Output {
            path: dir.join(MANIFEST_FILE),
            message: e.to_string(),
        })?;
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

/// sha256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ConvertError> {
    let mut f = std::fs::File::open(path).map_err(|e| ConvertError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| ConvertError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex(&h.finalize()), n_total))
}

/// Writes `path` through `<path>.tmp` + rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConvertError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| ConvertError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ConvertError::io(path, e))
}
