//! Sharded safetensors checkpoints, memory-mapped.
//!
//! `model.safetensors.index.json` maps each tensor to its shard; every shard is mapped
//! read-only and validated once at open (header, offsets, file length), so a truncated
//! or corrupt shard is an error naming the file before any tensor is read. Tensors are
//! borrowed from the mapping: nothing is copied unless it must be converted.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

/// Errors opening a checkpoint or fetching a tensor from it. Every variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid index: {message}")]
    Index { path: PathBuf, message: String },
    #[error("{path}: corrupt or truncated safetensors shard: {message}")]
    Shard { path: PathBuf, message: String },
    #[error("no model.safetensors.index.json or model.safetensors in {0}")]
    NoWeights(PathBuf),
    #[error("tensor `{name}` is missing from the checkpoint{}", hint_file(.file))]
    Missing { name: String, file: Option<PathBuf> },
    #[error("tensor `{name}` ({file}): expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` ({file}): expected dtype {expected}, found {found}")]
    Dtype {
        name: String,
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error("tensor `{name}` ({file}): {message}")]
    Value {
        name: String,
        file: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

fn hint_file(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!(" (the index names {})", f.display()),
        None => String::new(),
    }
}

/// Where one tensor lives inside a mapped shard.
#[derive(Debug, Clone)]
struct TensorInfo {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Arc<Mmap>,
}

/// A borrowed view of one tensor of the checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
    pub file: &'a Path,
    map: &'a Arc<Mmap>,
    offset: usize,
}

impl<'a> TensorView<'a> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The mapping that holds this tensor and the byte offset of its data in it.
    pub fn mapping(&self) -> (Arc<Mmap>, usize) {
        (Arc::clone(self.map), self.offset)
    }

    pub fn expect_shape(&self, expected: &[usize]) -> Result<(), LoadError> {
        if self.shape != expected {
            return Err(LoadError::Shape {
                name: self.name.to_string(),
                file: self.file.to_path_buf(),
                expected: expected.to_vec(),
                found: self.shape.to_vec(),
            });
        }
        Ok(())
    }

    pub fn dtype_error(&self, expected: &str) -> LoadError {
        LoadError::Dtype {
            name: self.name.to_string(),
            file: self.file.to_path_buf(),
            expected: expected.to_string(),
            found: dtype_name(self.dtype).to_string(),
        }
    }
}

/// The safetensors spelling of a dtype (`BF16`, `F8_E4M3`, ...).
pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::BOOL => "BOOL",
        Dtype::U8 => "U8",
        Dtype::I8 => "I8",
        Dtype::F8_E5M2 => "F8_E5M2",
        Dtype::F8_E4M3 => "F8_E4M3",
        Dtype::F8_E8M0 => "F8_E8M0",
        Dtype::I16 => "I16",
        Dtype::U16 => "U16",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I32 => "I32",
        Dtype::U32 => "U32",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        Dtype::U64 => "U64",
        _ => "other",
    }
}

/// An opened checkpoint directory.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorInfo>,
}

#[derive(serde::Deserialize)]
struct IndexFile {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Open `dir` through `model.safetensors.index.json` (or a single `model.safetensors`).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (shard_names, weight_map) = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|err| LoadError::Io {
                path: index_path.clone(),
                err,
            })?;
            let index: IndexFile = serde_json::from_str(&text).map_err(|e| LoadError::Index {
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let mut names: Vec<String> = index.weight_map.values().cloned().collect();
            names.sort();
            names.dedup();
            for n in &names {
                if n.contains('/') || n.contains("..") {
                    return Err(LoadError::Index {
                        path: index_path.clone(),
                        message: format!("shard name {n:?} must be a plain file name"),
                    });
                }
            }
            (names, Some(index.weight_map))
        } else if single.is_file() {
            (vec!["model.safetensors".to_string()], None)
        } else {
            return Err(LoadError::NoWeights(dir.to_path_buf()));
        };

        let mut shards = Vec::with_capacity(shard_names.len());
        let mut tensors = BTreeMap::new();
        for (si, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let map = map_file(&path)?;
            for (tname, info) in scan_shard(&path, &map, si)? {
                if let Some(wm) = &weight_map {
                    // Tensors not listed in the index are ignored, as other loaders do.
                    if wm.get(&tname).map(String::as_str) != Some(name.as_str()) {
                        continue;
                    }
                }
                tensors.insert(tname, info);
            }
            shards.push(Shard {
                path,
                map: Arc::new(map),
            });
        }
        if let Some(wm) = &weight_map {
            for (tname, file) in wm {
                if !tensors.contains_key(tname) {
                    return Err(LoadError::Shard {
                        path: dir.join(file),
                        message: format!(
                            "the index lists tensor `{tname}` but the shard does not contain it"
                        ),
                    });
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            tensors,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, or [`LoadError::Missing`].
    pub fn get(&self, name: &str) -> Result<TensorView<'_>, LoadError> {
        let (key, info) = self
            .tensors
            .get_key_value(name)
            .ok_or_else(|| LoadError::Missing {
                name: name.to_string(),
                file: None,
            })?;
        let shard = &self.shards[info.shard];
        Ok(TensorView {
            name: key,
            dtype: info.dtype,
            shape: &info.shape,
            bytes: &shard.map[info.start..info.end],
            file: &shard.path,
            map: &shard.map,
            offset: info.start,
        })
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }
}

fn map_file(path: &Path) -> Result<Mmap, LoadError> {
    let file = File::open(path).map_err(|err| LoadError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    // SAFETY: the mapping is read-only; like every safetensors loader we assume the file is
    // not truncated or rewritten by another process while the model is loaded.
    unsafe { Mmap::map(&file) }.map_err(|err| LoadError::Io {
        path: path.to_path_buf(),
        err,
    })
}

/// Validate a shard (header, offsets, length) and list its tensors.
fn scan_shard(
    path: &Path,
    map: &Mmap,
    shard: usize,
) -> Result<Vec<(String, TensorInfo)>, LoadError> {
    let st = SafeTensors::deserialize(&map[..]).map_err(|e| LoadError::Shard {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = map.as_ptr() as usize;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let start = view.data().as_ptr() as usize - base;
        let end = start + view.data().len();
        if end > map.len() {
            return Err(LoadError::Shard {
                path: path.to_path_buf(),
                message: format!("tensor `{name}` extends past the end of the file"),
            });
        }
        out.push((
            name,
            TensorInfo {
                shard,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                start,
                end,
            },
        ));
    }
    Ok(out)
}
