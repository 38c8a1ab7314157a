//! Streaming safetensors writer with bounded memory.
//!
//! A shard is declared up front from the full list of its tensors ([`TensorSpec`]), so the
//! JSON header with every `data_offsets` pair can be written first; tensor bytes then follow
//! in exactly that order, either whole ([`ShardWriter::write_tensor`]) or in pieces
//! ([`ShardWriter::begin_tensor`] / [`ShardWriter::write_chunk`] / [`ShardWriter::end_tensor`]),
//! so that a multi-gigabyte tensor never has to be held in memory. The file is written as
//! `<file>.partial` and renamed into place by [`ShardWriter::finish`]; a writer dropped before
//! `finish` removes its partial file.
//!
//! Layout (the format of the `safetensors` crate): 8-byte little-endian header length N, N
//! bytes of JSON (`__metadata__: {"format": "pt"}` first, then the tensors in file order),
//! padded with spaces so that N is a multiple of 8 and the data section is 8-aligned, then the
//! tensor bytes back to back.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use sha2::{Digest, Sha256};

/// Errors writing a shard or an index. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum StWriteError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid tensor list: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("{path}: tensors out of order: expected {expected}, got `{found}`")]
    Order {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: tensor `{name}` needs {expected} bytes, got {found}")]
    Length {
        path: PathBuf,
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("{path}: finished with {remaining} tensor(s) not written, next is `{next}`")]
    Incomplete {
        path: PathBuf,
        remaining: usize,
        next: String,
    },
}

/// Name, dtype and shape of one tensor of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// Number of elements (1 for a scalar of shape `[]`).
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of the tensor's data (sub-byte dtypes rounded up to whole bytes).
    pub fn byte_len(&self) -> u64 {
        (self.numel() * self.dtype.bitsize() as u64).div_ceil(8)
    }
}

/// What [`ShardWriter::finish`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSummary {
    /// Final path of the shard.
    pub path: PathBuf,
    /// Size of the whole file (length prefix + header + data).
    pub file_bytes: u64,
    /// Sum of the tensors' data bytes.
    pub data_bytes: u64,
    /// Tensor names in file order.
    pub tensors: Vec<String>,
    /// Lower-case hex sha256 of the whole file, computed while writing.
    pub sha256: String,
}

/// State of the tensor currently being streamed.
#[derive(Debug)]
struct OpenTensor {
    index: usize,
    written: u64,
}

/// Writes one safetensors file whose tensor list is fixed at creation.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<File>>,
    specs: Vec<TensorSpec>,
    next: usize,
    open: Option<OpenTensor>,
    header_bytes: u64,
    data_bytes: u64,
    /// sha256 of everything written so far (the finished file's hash at `finish`).
    hasher: Sha256,
}

/// `model-0000i-of-0000N.safetensors`, with `index` counted from 1.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("model-{index:05}-of-{count:05}.safetensors")
}

/// Build the padded header JSON for `specs` (in file order).
fn header_json(specs: &[TensorSpec]) -> Vec<u8> {
    let mut s = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0u64;
    for spec in specs {
        let end = offset + spec.byte_len();
        // serde_json quoting escapes any odd character in the name.
        let name = serde_json::Value::String(spec.name.clone()).to_string();
        let shape: Vec<String> = spec.shape.iter().map(|d| d.to_string()).collect();
        s.push_str(&format!(
            ",{name}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            spec.dtype,
            shape.join(",")
        ));
        offset = end;
    }
    s.push('}');
    let mut bytes = s.into_bytes();
    let padded = bytes.len().next_multiple_of(8);
    bytes.resize(padded, b' ');
    bytes
}

impl ShardWriter {
    /// Create `<path>.partial` and write the header for `specs` (file order = slice order).
    /// Rejects empty or duplicate names and the reserved name `__metadata__`.
    pub fn create(path: impl AsRef<Path>, specs: Vec<TensorSpec>) -> Result<Self, StWriteError> {
        let path = path.as_ref().to_path_buf();
        let mut seen = HashSet::new();
        for spec in &specs {
            let message = if spec.name.is_empty() {
                Some("empty tensor name".to_string())
            } else if spec.name == "__metadata__" {
                Some("`__metadata__` is reserved".to_string())
            } else if !seen.insert(spec.name.as_str()) {
                Some(format!("duplicate tensor `{}`", spec.name))
            } else {
                None
            };
            if let Some(message) = message {
                return Err(StWriteError::Spec { path, message });
            }
        }
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let io = |source| StWriteError::Io {
            path: partial.clone(),
            source,
        };
        let file = File::create(&partial).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let header = header_json(&specs);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&header).map_err(io)?;
        let mut hasher = Sha256::new();
        hasher.update((header.len() as u64).to_le_bytes());
        hasher.update(&header);
        let data_bytes = specs.iter().map(TensorSpec::byte_len).sum();
        Ok(Self {
            header_bytes: 8 + header.len() as u64,
            path,
            partial,
            out: Some(out),
            specs,
            next: 0,
            open: None,
            data_bytes,
            hasher,
        })
    }

    /// Final path of the shard (the file is at `<path>.partial` until `finish`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor the writer expects next, if any.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.specs.get(self.next)
    }

    /// Total size the finished file will have.
    pub fn file_bytes(&self) -> u64 {
        self.header_bytes + self.data_bytes
    }

    fn io_err(&self, source: std::io::Error) -> StWriteError {
        StWriteError::Io {
            path: self.partial.clone(),
            source,
        }
    }

    fn raw_write(&mut self, data: &[u8]) -> Result<(), StWriteError> {
        self.hasher.update(data);
        let res = match self.out.as_mut() {
            Some(out) => out.write_all(data),
            None => Err(std::io::Error::other("writer already closed")),
        };
        res.map_err(|e| self.io_err(e))
    }

    /// Write a whole tensor: `name` must be the next one and `data` exactly its byte length.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), StWriteError> {
        self.begin_tensor(name)?;
        self.write_chunk(data)?;
        self.end_tensor()
    }

    /// Start streaming tensor `name`, which must be the next one in the declared order.
    pub fn begin_tensor(&mut self, name: &str) -> Result<(), StWriteError> {
        if let Some(open) = &self.open {
            return Err(StWriteError::Order {
                path: self.path.clone(),
                expected: format!("end of `{}`", self.specs[open.index].name),
                found: name.to_string(),
            });
        }
        match self.specs.get(self.next) {
            Some(spec) if spec.name == name => {
                self.open = Some(OpenTensor {
                    index: self.next,
                    written: 0,
                });
                Ok(())
            }
            other => Err(StWriteError::Order {
                path: self.path.clone(),
                expected: other
                    .map(|s| format!("`{}`", s.name))
                    .unwrap_or_else(|| "no more tensors".to_string()),
                found: name.to_string(),
            }),
        }
    }

    /// Append bytes to the tensor opened by `begin_tensor`; never past its declared length.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), StWriteError> {
        let Some(open) = &self.open else {
            return Err(StWriteError::Order {
                path: self.path.clone(),
                expected: "begin_tensor before write_chunk".to_string(),
                found: format!("{} bytes", data.len()),
            });
        };
        let spec = &self.specs[open.index];
        let after = open.written + data.len() as u64;
        if after > spec.byte_len() {
            return Err(StWriteError::Length {
                path: self.path.clone(),
                name: spec.name.clone(),
                expected: spec.byte_len(),
                found: after,
            });
        }
        self.raw_write(data)?;
        if let Some(open) = self.open.as_mut() {
            open.written = after;
        }
        Ok(())
    }

    /// Close the tensor being streamed; its byte count must be complete.
    pub fn end_tensor(&mut self) -> Result<(), StWriteError> {
        let Some(open) = self.open.take() else {
            return Err(StWriteError::Order {
                path: self.path.clone(),
                expected: "begin_tensor before end_tensor".to_string(),
                found: "end_tensor".to_string(),
            });
        };
        let spec = &self.specs[open.index];
        if open.written != spec.byte_len() {
            return Err(StWriteError::Length {
                path: self.path.clone(),
                name: spec.name.clone(),
                expected: spec.byte_len(),
                found: open.written,
            });
        }
        self.next += 1;
        Ok(())
    }

    /// Check that every tensor was written, flush, sync and rename `<file>.partial` to `<file>`.
    pub fn finish(mut self) -> Result<ShardSummary, StWriteError> {
        if self.open.is_some() || self.next < self.specs.len() {
            let index = self.open.as_ref().map_or(self.next, |o| o.index);
            return Err(StWriteError::Incomplete {
                path: self.path.clone(),
                remaining: self.specs.len() - index,
                next: self.specs[index].name.clone(),
            });
        }
        let Some(out) = self.out.take() else {
            return Err(self.io_err(std::io::Error::other("writer already closed")));
        };
        let file = out.into_inner().map_err(|e| self.io_err(e.into_error()))?;
        file.sync_all().map_err(|e| self.io_err(e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|source| StWriteError::Io {
            path: self.path.clone(),
            source,
        })?;
        let sha256 = self
            .hasher
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(ShardSummary {
            sha256,
            path: self.path.clone(),
            file_bytes: self.file_bytes(),
            data_bytes: self.data_bytes,
            tensors: self.specs.iter().map(|s| s.name.clone()).collect(),
        })
    }
}

impl Drop for ShardWriter {
    /// An unfinished writer leaves no `.partial` file behind (best effort).
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            drop(out);
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Split `units` (groups of tensors that must share a shard, e.g. a weight and its scale) into
/// shards of at most `max_shard_bytes` data bytes each, keeping order. A unit larger than the
/// limit gets a shard of its own; `max_shard_bytes == 0` means one shard.
pub fn plan_shards(units: Vec<Vec<TensorSpec>>, max_shard_bytes: u64) -> Vec<Vec<TensorSpec>> {
    let mut shards: Vec<Vec<TensorSpec>> = Vec::new();
    let mut current: Vec<TensorSpec> = Vec::new();
    let mut current_bytes = 0u64;
    for unit in units {
        let bytes: u64 = unit.iter().map(TensorSpec::byte_len).sum();
        if max_shard_bytes > 0 && !current.is_empty() && current_bytes + bytes > max_shard_bytes {
            shards.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.extend(unit);
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    shards
}

/// Write `dir/model.safetensors.index.json`:
/// `{"metadata": {"total_size": N}, "weight_map": {tensor name: shard file name}}`.
/// Written to a `.partial` file first and renamed. Returns the index path.
pub fn write_index(
    dir: &Path,
    weight_map: &BTreeMap<String, String>,
    total_size: u64,
) -> Result<PathBuf, StWriteError> {
    let path = dir.join("model.safetensors.index.json");
    let partial = dir.join("model.safetensors.index.json.partial");
    let value = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    let mut text = serde_json::to_string_pretty(&value).map_err(|e| StWriteError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    text.push('\n');
    std::fs::write(&partial, text).map_err(|source| StWriteError::Io {
        path: partial.clone(),
        source,
    })?;
    std::fs::rename(&partial, &path).map_err(|source| StWriteError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    fn specs() -> Vec<TensorSpec> {
        vec![
            TensorSpec::new("b.weight", Dtype::BF16, vec![3, 5]),
            TensorSpec::new("a.scale", Dtype::F8_E8M0, vec![1, 3]),
            TensorSpec::new("ids", Dtype::I64, vec![2]),
            TensorSpec::new("x", Dtype::F32, vec![]),
            TensorSpec::new("q", Dtype::F8_E4M3, vec![7]),
            TensorSpec::new("n", Dtype::I8, vec![0, 4]),
        ]
    }

    fn bytes_for(spec: &TensorSpec, seed: u8) -> Vec<u8> {
        (0..spec.byte_len())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn round_trip_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model-00001-of-00001.safetensors");
        let specs = specs();
        let mut w = ShardWriter::create(&path, specs.clone()).unwrap();
        for (i, s) in specs.iter().enumerate() {
            let data = bytes_for(s, i as u8);
            if i == 0 {
                // stream the first one in uneven pieces
                w.begin_tensor(&s.name).unwrap();
                w.write_chunk(&data[..7]).unwrap();
                w.write_chunk(&[]).unwrap();
                w.write_chunk(&data[7..]).unwrap();
                w.end_tensor().unwrap();
            } else {
                w.write_tensor(&s.name, &data).unwrap();
            }
        }
        assert!(
            dir.path()
                .join("model-00001-of-00001.safetensors.partial")
                .exists()
        );
        let summary = w.finish().unwrap();
        assert!(
            !dir.path()
                .join("model-00001-of-00001.safetensors.partial")
                .exists()
        );
        let buf = std::fs::read(&path).unwrap();
        assert_eq!(buf.len() as u64, summary.file_bytes);
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
        assert_eq!(n % 8, 0, "data section must be 8-aligned");
        let st = SafeTensors::deserialize(&buf).unwrap();
        assert_eq!(st.len(), specs.len());
        for (i, s) in specs.iter().enumerate() {
            let t = st.tensor(&s.name).unwrap();
            assert_eq!(t.dtype(), s.dtype, "{}", s.name);
            assert_eq!(t.shape(), s.shape.as_slice(), "{}", s.name);
            assert_eq!(t.data(), bytes_for(s, i as u8).as_slice(), "{}", s.name);
        }
        let (_, meta) = SafeTensors::read_metadata(&buf).unwrap();
        let md = meta.metadata().as_ref().unwrap();
        assert_eq!(md.get("format").map(String::as_str), Some("pt"));
    }

    #[test]
    fn order_length_and_completeness_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let specs = specs();
        let mut w = ShardWriter::create(&path, specs.clone()).unwrap();
        let err = w.write_tensor("ids", &[0; 16]).unwrap_err().to_string();
        assert!(
            err.contains("b.weight") && err.contains("x.safetensors"),
            "{err}"
        );
        let err = w
            .write_tensor("b.weight", &[0; 29])
            .unwrap_err()
            .to_string();
        assert!(err.contains("30") && err.contains("29"), "{err}");
        drop(w);
        assert!(
            !dir.path().join("x.safetensors.partial").exists(),
            "dropped writer cleans up"
        );

        let mut w = ShardWriter::create(&path, specs.clone()).unwrap();
        w.begin_tensor("b.weight").unwrap();
        let err = w.write_chunk(&[0; 31]).unwrap_err();
        assert!(matches!(err, StWriteError::Length { .. }), "{err}");
        w.write_chunk(&[0; 30]).unwrap();
        w.end_tensor().unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(
            err.contains("5 tensor(s)") && err.contains("a.scale"),
            "{err}"
        );
        assert!(!path.exists());

        let dup = vec![specs[0].clone(), specs[0].clone()];
        assert!(matches!(
            ShardWriter::create(&path, dup),
            Err(StWriteError::Spec { .. })
        ));
    }

    #[test]
    fn empty_shard_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        ShardWriter::create(&path, vec![])
            .unwrap()
            .finish()
            .unwrap();
        let buf = std::fs::read(&path).unwrap();
        assert_eq!(SafeTensors::deserialize(&buf).unwrap().len(), 0);
    }

    #[test]
    fn shard_plan_and_index() {
        let unit = |name: &str, n: usize| vec![TensorSpec::new(name, Dtype::I8, vec![n])];
        let plan = plan_shards(
            vec![unit("a", 6), unit("b", 6), unit("c", 20), unit("d", 1)],
            12,
        );
        let names: Vec<Vec<&str>> = plan
            .iter()
            .map(|s| s.iter().map(|t| t.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
        assert_eq!(plan_shards(vec![unit("a", 6), unit("b", 6)], 0).len(), 1);
        assert_eq!(plan_shards(vec![], 10).len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), shard_file_name(1, 2));
        map.insert("c".to_string(), shard_file_name(2, 2));
        let p = write_index(dir.path(), &map, 26).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(v["metadata"]["total_size"], 26);
        assert_eq!(v["weight_map"]["c"], "model-00002-of-00002.safetensors");
    }
}
