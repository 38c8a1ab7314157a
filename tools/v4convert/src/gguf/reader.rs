//! A memory-mapped GGUF v2/v3 reader.
//!
//! The whole header is parsed and validated when the file is opened: magic, version, every
//! metadata entry (lengths checked against the bytes left before anything is allocated), every
//! tensor info (known, non-removed type; 1-4 dimensions; row length a multiple of the block size;
//! size without overflow; offset aligned; data inside the file), unique names and keys. After
//! that, tensor data is a bounds-checked slice of the mapping.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::types::{GgmlType, GgufValue, GgufValueType};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, quants};

/// Deepest nesting of metadata arrays accepted (the format allows arrays of arrays).
const MAX_ARRAY_DEPTH: usize = 8;
/// Longest metadata array accepted (the real DeepSeek-V4 vocabulary has 129,280 entries).
const MAX_ARRAY_LEN: u64 = 1 << 24;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions fastest-first (`ne0, ne1, ...`), as stored in the file.
    pub dims: Vec<u64>,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub nbytes: u64,
}

impl GgufTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor over the header bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!(
                "truncated: {what} at offset {} needs {n} bytes, {left} left",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("{what} at offset {at} is not valid UTF-8")))
    }

    fn value(
        &mut self,
        ty: GgufValueType,
        key: &str,
        depth: usize,
    ) -> Result<GgufValue, GgufError> {
        use GgufValueType as T;
        Ok(match ty {
            T::U8 => GgufValue::U8(self.array::<1>(key)?[0]),
            T::I8 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            T::U16 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            T::I16 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            T::U32 => GgufValue::U32(self.u32(key)?),
            T::I32 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            T::F32 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            T::Bool => {
                let b = self.array::<1>(key)?[0];
                if b > 1 {
                    return Err(self.meta_err(key, format!("bool value {b} is neither 0 nor 1")));
                }
                GgufValue::Bool(b == 1)
            }
            T::String => GgufValue::String(self.string(key)?),
            T::U64 => GgufValue::U64(self.u64(key)?),
            T::I64 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            T::F64 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            T::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.meta_err(key, "arrays nested too deeply".into()));
                }
                let id = self.u32(key)?;
                let elem = GgufValueType::from_id(id).ok_or_else(|| {
                    self.meta_err(key, format!("unknown array element type {id}"))
                })?;
                let len = self.u64(key)?;
                // Refuse lengths the file cannot hold (each element takes at least `min` bytes)
                // or that no real file uses, before allocating anything.
                let min = match elem {
                    T::U8 | T::I8 | T::Bool => 1,
                    T::U16 | T::I16 => 2,
                    T::U32 | T::I32 | T::F32 => 4,
                    T::String | T::U64 | T::I64 | T::F64 => 8,
                    T::Array => 12,
                };
                if len > MAX_ARRAY_LEN || len.saturating_mul(min) > self.remaining() {
                    return Err(self.meta_err(
                        key,
                        format!(
                            "array of {len} elements does not fit in the {} bytes left (or \
                             exceeds {MAX_ARRAY_LEN} elements)",
                            self.remaining()
                        ),
                    ));
                }
                let mut values = Vec::with_capacity((len as usize).min(1 << 16));
                for _ in 0..len {
                    values.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array { elem, values }
            }
        })
    }

    fn meta_err(&self, key: &str, message: String) -> GgufError {
        GgufError::Metadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message,
        }
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        if len < 24 {
            return Err(GgufError::Format {
                path: path.to_path_buf(),
                message: format!("truncated: {len} bytes, a GGUF header needs at least 24"),
            });
        }
        // SAFETY: read-only mapping; like every model loader we assume the file is not truncated
        // or rewritten by another process while it is open. All accesses are bounds-checked
        // against the mapping's length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        let parsed = parse(path, &map)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version: parsed.version,
            metadata: parsed.metadata,
            by_name: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// `general.alignment` (32 when absent).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The bytes of tensor `name` (validated at open).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8], GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let start = (self.data_offset + t.offset) as usize;
        self.map
            .get(start..start + t.nbytes as usize)
            .ok_or_else(|| GgufError::BadTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                message: "data lies outside the file".into(),
            })
    }

    /// Tensor `name` as f32 (see [`quants::dequantize`] for the supported types).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let data = self.tensor_data(name)?;
        let t = &self.tensors[self.by_name[name]];
        quants::dequantize(t.ty, data, t.n_elements() as usize).ok_or_else(|| {
            GgufError::TensorType {
                path: self.path.clone(),
                tensor: name.to_string(),
                message: format!("cannot dequantize type {}", t.ty),
            }
        })
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_offset: u64,
}

fn parse(path: &Path, buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    let magic: [u8; 4] = c.array("magic")?;
    if magic != GGUF_MAGIC {
        return Err(c.err(format!(
            "bad magic {magic:02x?} (expected \"GGUF\" = 47 47 55 46)"
        )));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() <= 3 {
            " (a big-endian file?)"
        } else {
            ""
        };
        return Err(c.err(format!(
            "unsupported version {version}{hint}; this reader handles GGUF v2 and v3 (little-endian)"
        )));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Each entry needs well over one byte; refuse counts the file cannot hold.
    if n_kv > c.remaining() || n_tensors > c.remaining() {
        return Err(c.err(format!(
            "{n_tensors} tensors and {n_kv} metadata entries cannot fit in {} bytes",
            buf.len()
        )));
    }

    let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity((n_kv as usize).min(1 << 12));
    let mut keys = HashMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("key of metadata entry {i}"))?;
        let id = c.u32(&key)?;
        let ty = GgufValueType::from_id(id)
            .ok_or_else(|| c.meta_err(&key, format!("unknown value type {id}")))?;
        let value = c.value(ty, &key, 0)?;
        if keys.insert(key.clone(), i).is_some() {
            return Err(c.meta_err(&key, "duplicate key".into()));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some((k, v)) => {
            return Err(c.meta_err(
                k,
                format!("must be a non-zero power of two UINT32, found {v:?}"),
            ));
        }
    };

    let mut tensors = Vec::with_capacity((n_tensors as usize).min(1 << 16));
    let mut names = HashMap::new();
    for i in 0..n_tensors {
        let name = c.string(&format!("name of tensor info {i}"))?;
        let bad = |message: String| GgufError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message,
        };
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!(
                "{n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let type_id = c.u32(&name)?;
        let offset = c.u64(&name)?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::TensorType {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message: format!("unknown ggml type id {type_id} (known: 0-41)"),
        })?;
        if ty.is_removed() {
            return Err(GgufError::TensorType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message: format!("ggml type {ty} (id {type_id}) was removed from GGUF"),
            });
        }
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("element count of {dims:?} overflows")))?;
        let nbytes = ty.nbytes(dims[0], n).ok_or_else(|| {
            bad(format!(
                "type {ty} needs ne0 ({}) to be a multiple of {}",
                dims[0],
                ty.block_size()
            ))
        })?;
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if names.insert(name.clone(), i).is_some() {
            return Err(bad("duplicate tensor name".into()));
        }
        tensors.push(GgufTensorInfo {
            name,
            ty,
            dims,
            offset,
            nbytes,
        });
    }

    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.nbytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    message: format!(
                        "data ({} bytes at data offset {}) extends past the end of the file \
                         ({file_len} bytes; truncated?)",
                        t.nbytes, t.offset
                    ),
                });
            }
        }
    }
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
