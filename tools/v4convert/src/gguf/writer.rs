//! A streaming GGUF v3 writer with bounded memory.
//!
//! [`GgufWriter::create`] takes the complete metadata and the list of tensor declarations (name,
//! type, dimensions), computes every tensor's size and aligned offset, and writes the header,
//! metadata, tensor infos and padding to `<out>.partial`. The caller then streams each tensor's
//! bytes in declaration order ([`GgufWriter::write`], any number of pieces, then
//! [`GgufWriter::end_tensor`]), and [`GgufWriter::finish`] checks that everything was written,
//! syncs and renames the file to `<out>`. Dropping an unfinished writer (an error anywhere)
//! removes the partial file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::types::{GgmlType, GgufValue};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError};

/// One tensor to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions fastest-first (`ne0, ne1, ...`).
    pub dims: Vec<u64>,
}

#[derive(Debug)]
struct Slot {
    decl: TensorDecl,
    nbytes: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct GgufWriter {
    out: Option<BufWriter<File>>,
    partial: PathBuf,
    target: PathBuf,
    slots: Vec<Slot>,
    alignment: u64,
    /// Index of the tensor being written.
    current: usize,
    /// Bytes of the current tensor written so far.
    in_tensor: u64,
    written: u64,
    total: u64,
}

/// `<out>.partial` next to `out`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn pad_len(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment - n
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => buf.push(*x),
        GgufValue::I8(x) => buf.push(*x as u8),
        GgufValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => buf.push(u8::from(*x)),
        GgufValue::String(s) => put_string(buf, s),
        GgufValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array { elem, values } => {
            buf.extend_from_slice(&elem.id().to_le_bytes());
            buf.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                put_value(buf, v);
            }
        }
    }
}

impl GgufWriter {
    /// Validates the declarations, creates `<out>.partial` and writes everything up to the data
    /// section. The alignment is `general.alignment` when the metadata sets it (a power-of-two
    /// `U32`), else 32.
    pub fn create(
        out: &Path,
        metadata: &[(String, GgufValue)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, GgufError> {
        let meta_err = |key: &str, message: String| GgufError::Metadata {
            path: out.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let mut alignment = DEFAULT_ALIGNMENT;
        for (i, (k, v)) in metadata.iter().enumerate() {
            if metadata[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(meta_err(k, "duplicate key".into()));
            }
            if let GgufValue::Array { elem, values } = v
                && let Some(bad) = values.iter().find(|x| x.value_type() != *elem)
            {
                return Err(meta_err(
                    k,
                    format!(
                        "array of {} holds a {}",
                        elem.name(),
                        bad.value_type().name()
                    ),
                ));
            }
            if k == "general.alignment" {
                match v {
                    GgufValue::U32(a) if *a != 0 && a.is_power_of_two() => {
                        alignment = u64::from(*a)
                    }
                    _ => return Err(meta_err(k, "must be a non-zero power-of-two UINT32".into())),
                }
            }
        }

        let mut slots: Vec<Slot> = Vec::with_capacity(tensors.len());
        for decl in tensors {
            let bad = |message: String| GgufError::Writer {
                path: out.to_path_buf(),
                tensor: decl.name.clone(),
                message,
            };
            if decl.dims.is_empty() || decl.dims.len() > 4 {
                return Err(bad(format!(
                    "{} dimensions (1 to 4 allowed)",
                    decl.dims.len()
                )));
            }
            if slots.iter().any(|s| s.decl.name == decl.name) {
                return Err(bad("duplicate tensor name".into()));
            }
            let n = decl
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad("element count overflows".into()))?;
            let nbytes = decl.ty.nbytes(decl.dims[0], n).ok_or_else(|| {
                bad(format!(
                    "type {} needs ne0 ({}) to be a multiple of {}",
                    decl.ty,
                    decl.dims[0],
                    decl.ty.block_size()
                ))
            })?;
            slots.push(Slot { decl, nbytes });
        }

        // Header, metadata and tensor infos, offsets computed before anything is written.
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(slots.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_string(&mut head, k);
            head.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        for s in &slots {
            put_string(&mut head, &s.decl.name);
            head.extend_from_slice(&(s.decl.dims.len() as u32).to_le_bytes());
            for d in &s.decl.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&s.decl.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += s.nbytes + pad_len(s.nbytes, alignment);
        }
        head.resize(
            head.len() + pad_len(head.len() as u64, alignment) as usize,
            0,
        );
        let total = head.len() as u64 + offset;

        let partial = partial_path(out);
        let file = File::create(&partial).map_err(|e| GgufError::io(&partial, e))?;
        let mut w = GgufWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            partial,
            target: out.to_path_buf(),
            slots,
            alignment,
            current: 0,
            in_tensor: 0,
            written: 0,
            total,
        };
        w.raw(&head)?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let out = self.out.as_mut().ok_or_else(|| GgufError::Writer {
            path: self.target.clone(),
            tensor: String::new(),
            message: "writer already finished".into(),
        })?;
        out.write_all(bytes)
            .map_err(|e| GgufError::io(&self.partial, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn misuse(&self, message: String) -> GgufError {
        GgufError::Writer {
            path: self.target.clone(),
            tensor: self
                .slots
                .get(self.current)
                .map(|s| s.decl.name.clone())
                .unwrap_or_default(),
            message,
        }
    }

    /// Bytes written so far (header included).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Size of the finished file.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The declaration of the tensor being written, if any is left.
    pub fn current_tensor(&self) -> Option<&TensorDecl> {
        self.slots.get(self.current).map(|s| &s.decl)
    }

    /// Appends bytes to the current tensor.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let Some(slot) = self.slots.get(self.current) else {
            return Err(self.misuse("all tensors are already written".into()));
        };
        if self.in_tensor + bytes.len() as u64 > slot.nbytes {
            return Err(self.misuse(format!(
                "{} bytes written, more than its size {}",
                self.in_tensor + bytes.len() as u64,
                slot.nbytes
            )));
        }
        self.raw(bytes)?;
        self.in_tensor += bytes.len() as u64;
        Ok(())
    }

    /// Completes the current tensor (which must have received exactly its size) and pads.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        let Some(slot) = self.slots.get(self.current) else {
            return Err(self.misuse("all tensors are already written".into()));
        };
        if self.in_tensor != slot.nbytes {
            return Err(self.misuse(format!(
                "{} bytes written, its size is {}",
                self.in_tensor, slot.nbytes
            )));
        }
        let pad = pad_len(slot.nbytes, self.alignment) as usize;
        self.raw(&vec![0u8; pad])?;
        self.current += 1;
        self.in_tensor = 0;
        Ok(())
    }

    /// Checks that every tensor was written, flushes, syncs and renames `<out>.partial` to
    /// `<out>`. Returns the file size.
    pub fn finish(mut self) -> Result<u64, GgufError> {
        if self.current != self.slots.len() {
            return Err(self.misuse(format!(
                "finished after {} of {} tensors",
                self.current,
                self.slots.len()
            )));
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| self.misuse("already finished".into()))?;
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io(&self.partial, e.into_error()))?;
        file.sync_all()
            .map_err(|e| GgufError::io(&self.partial, e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.target).map_err(|e| GgufError::io(&self.target, e))?;
        // Renamed: nothing left for `Drop` to clean up.
        self.partial = PathBuf::new();
        Ok(self.written)
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            self.out = None;
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
