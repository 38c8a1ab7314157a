//! The checkpoint being converted, read with positioned reads (`pread`) rather than a memory map:
//! a mapping's touched pages count towards the process' resident set, so converting a 865 GB
//! checkpoint through one would make peak RSS grow with the model. Here every byte read lands in
//! a buffer the converter owns and frees, which keeps memory bounded.
//!
//! Opening validates every shard's header (JSON, dtypes, offsets inside the file, file length)
//! before anything is converted, so a truncated or corrupt shard is reported up front, naming the
//! file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ConvertError;

/// Where one source tensor lives.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Index into [`SourceCheckpoint::shards`].
    pub shard: usize,
    /// Absolute byte offset of the data in the shard file.
    pub offset: u64,
    pub len: u64,
}

impl SourceTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// One shard file of the source.
#[derive(Debug)]
pub struct SourceShard {
    pub path: PathBuf,
    pub file: File,
    pub bytes: u64,
    /// The sha256 of the file when it is known without reading it: a Hugging Face cache blob is
    /// named by its LFS sha256, which the hub verified at download.
    pub known_sha256: Option<String>,
}

/// A source checkpoint directory (`config.json` + `model.safetensors.index.json` + shards, or a
/// single `model.safetensors`).
#[derive(Debug)]
pub struct SourceCheckpoint {
    pub dir: PathBuf,
    pub shards: Vec<SourceShard>,
    tensors: BTreeMap<String, SourceTensor>,
    /// sha256 of the index file (or of the single shard's header).
    pub index_sha256: String,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: HashMap<String, String>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl SourceCheckpoint {
    /// A single safetensors file, as a checkpoint of one shard (for `inspect`).
    pub fn open_file(path: &Path) -> Result<Self, ConvertError> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::open_shards(&dir, vec![name], None, String::new())
    }

    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (files, weight_map, index_sha256): (Vec<String>, Option<HashMap<String, String>>, _) =
            if index_path.is_file() {
                let text =
                    std::fs::read(&index_path).map_err(|e| ConvertError::io(&index_path, e))?;
                let index: IndexFile =
                    serde_json::from_slice(&text).map_err(|e| ConvertError::Source {
                        path: index_path.clone(),
                        message: format!("invalid index JSON: {e}"),
                    })?;
                let mut files: Vec<String> = index.weight_map.values().cloned().collect();
                files.sort();
                files.dedup();
                (files, Some(index.weight_map), hex(&Sha256::digest(&text)))
            } else if single.is_file() {
                (vec!["model.safetensors".to_string()], None, String::new())
            } else {
                return Err(ConvertError::Source {
                    path: dir.to_path_buf(),
                    message: "no model.safetensors.index.json or model.safetensors here".into(),
                });
            };
        Self::open_shards(dir, files, weight_map, index_sha256)
    }

    fn open_shards(
        dir: &Path,
        files: Vec<String>,
        weight_map: Option<HashMap<String, String>>,
        index_sha256: String,
    ) -> Result<Self, ConvertError> {
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        let mut header_hash = Sha256::new();
        for (si, f) in files.iter().enumerate() {
            let path = dir.join(f);
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            let bytes = file
                .metadata()
                .map_err(|e| ConvertError::io(&path, e))?
                .len();
            let (header, data_start) = read_header(&file, &path, bytes)?;
            header_hash.update(&header);
            let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| ConvertError::Source {
                    path: path.clone(),
                    message: format!("corrupt safetensors header: {e}"),
                })?;
            let mut data_end = 0u64;
            for (name, v) in entries {
                if name == "__metadata__" {
                    continue;
                }
                let e: HeaderEntry =
                    serde_json::from_value(v).map_err(|err| ConvertError::Tensor {
                        path: path.clone(),
                        tensor: name.clone(),
                        message: format!("bad header entry: {err}"),
                    })?;
                let dtype = parse_dtype(&e.dtype).ok_or_else(|| ConvertError::Tensor {
                    path: path.clone(),
                    tensor: name.clone(),
                    message: format!("unknown dtype {}", e.dtype),
                })?;
                let numel: u64 = e.shape.iter().map(|&d| d as u64).product();
                let need = (numel * dtype.bitsize() as u64).div_ceil(8);
                let (a, b) = e.data_offsets;
                if b < a || b - a != need {
                    return Err(ConvertError::Tensor {
                        path: path.clone(),
                        tensor: name,
                        message: format!(
                            "data_offsets {a}..{b} hold {} bytes but {:?} {:?} needs {need}",
                            b.saturating_sub(a),
                            dtype,
                            e.shape
                        ),
                    });
                }
                if data_start + b > bytes {
                    return Err(ConvertError::Source {
                        path: path.clone(),
                        message: format!(
                            "truncated: tensor `{name}` ends at byte {} but the file has {bytes}",
                            data_start + b
                        ),
                    });
                }
                data_end = data_end.max(b);
                if let Some(map) = &weight_map
                    && map.get(&name).map(String::as_str) != Some(f.as_str())
                {
                    return Err(ConvertError::Tensor {
                        path: path.clone(),
                        tensor: name,
                        message: "tensor is in this shard but the index does not map it here"
                            .into(),
                    });
                }
                let t = SourceTensor {
                    name: name.clone(),
                    dtype,
                    shape: e.shape,
                    shard: si,
                    offset: data_start + a,
                    len: need,
                };
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(ConvertError::Tensor {
                        path: path.clone(),
                        tensor: name,
                        message: "tensor appears in more than one shard".into(),
                    });
                }
            }
            if data_start + data_end != bytes {
                return Err(ConvertError::Source {
                    path: path.clone(),
                    message: format!(
                        "file has {bytes} bytes but its header describes {}",
                        data_start + data_end
                    ),
                });
            }
            let known_sha256 = hub_blob_sha256(&path);
            shards.push(SourceShard {
                path,
                file,
                bytes,
                known_sha256,
            });
        }
        if let Some(map) = &weight_map {
            for (name, f) in map {
                if !tensors.contains_key(name) {
                    return Err(ConvertError::Tensor {
                        path: dir.join(f),
                        tensor: name.clone(),
                        message: "the index maps this tensor to the shard, which lacks it".into(),
                    });
                }
            }
        }
        let index_sha256 = if index_sha256.is_empty() {
            hex(&header_hash.finalize())
        } else {
            index_sha256
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            tensors,
            index_sha256,
        })
    }

    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.get(name)
    }

    pub fn tensors(&self) -> impl Iterator<Item = &SourceTensor> {
        self.tensors.values()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn shard_path(&self, t: &SourceTensor) -> &Path {
        &self.shards[t.shard].path
    }

    /// Total bytes of all shard files.
    pub fn data_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Reads `len` bytes of tensor `t` starting `start` bytes into its data.
    pub fn read_range(
        &self,
        t: &SourceTensor,
        start: u64,
        out: &mut [u8],
    ) -> Result<(), ConvertError> {
        let shard = &self.shards[t.shard];
        debug_assert!(start + out.len() as u64 <= t.len);
        shard
            .file
            .read_exact_at(out, t.offset + start)
            .map_err(|e| ConvertError::Tensor {
                path: shard.path.clone(),
                tensor: t.name.clone(),
                message: format!("read failed: {e}"),
            })
    }

    /// The whole data of tensor `t`.
    pub fn read_all(&self, t: &SourceTensor) -> Result<Vec<u8>, ConvertError> {
        let mut v = vec![0u8; t.len as usize];
        self.read_range(t, 0, &mut v)?;
        Ok(v)
    }
}

fn read_header(file: &File, path: &Path, bytes: u64) -> Result<(Vec<u8>, u64), ConvertError> {
    let corrupt = |message: String| ConvertError::Source {
        path: path.to_path_buf(),
        message,
    };
    if bytes < 8 {
        return Err(corrupt(format!(
            "truncated: {bytes} bytes, shorter than the 8-byte header length"
        )));
    }
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0)
        .map_err(|e| ConvertError::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 {
        return Err(corrupt(format!(
            "header length {n} is over the 100 MB limit (corrupt file?)"
        )));
    }
    if 8 + n > bytes {
        return Err(corrupt(format!(
            "truncated: header of {n} bytes does not fit in {bytes} bytes"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| ConvertError::io(path, e))?;
    Ok((header, 8 + n))
}

/// Parses a safetensors dtype name.
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::BOOL,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "F8_E4M3" => Dtype::F8_E4M3,
        "F8_E5M2" => Dtype::F8_E5M2,
        "F8_E8M0" => Dtype::F8_E8M0,
        "I16" => Dtype::I16,
        "U16" => Dtype::U16,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I32" => Dtype::I32,
        "U32" => Dtype::U32,
        "F32" => Dtype::F32,
        "I64" => Dtype::I64,
        "U64" => Dtype::U64,
        "F64" => Dtype::F64,
        _ => return None,
    })
}

/// The name safetensors uses for a dtype.
pub fn dtype_name(d: Dtype) -> &'static str {
    v4_engine::loader::dtype_name(d)
}

/// A Hugging Face cache snapshot file is a symlink to `blobs/<sha256>` for LFS files.
fn hub_blob_sha256(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    let name = target.file_name()?.to_str()?;
    let is_sha = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let in_blobs = target
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == "blobs");
    (is_sha && in_blobs).then(|| name.to_ascii_lowercase())
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hugging Face identity of a checkpoint directory inside a hub cache
/// (`.../models--owner--name/snapshots/<commit>`): `(repo id, commit)`.
pub fn hub_identity(dir: &Path) -> Option<(String, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let commit = dir.file_name()?.to_str()?.to_string();
    let snapshots = dir.parent()?;
    if snapshots.file_name()? != "snapshots" {
        return None;
    }
    let repo_dir = snapshots.parent()?.file_name()?.to_str()?;
    let rest = repo_dir.strip_prefix("models--")?;
    Some((rest.replacen("--", "/", 1), commit))
}
