//! GGUF (llama.cpp `deepseek4`) reader and writer.
//!
//! * [`GgufFile`] — a memory-mapped GGUF v2/v3 reader that validates the whole header (metadata,
//!   tensor infos, types, offsets, bounds) at open, so a corrupt file is an error, never a panic.
//! * [`GgufWriter`] — a streaming writer: all offsets are computed up front, each tensor's bytes
//!   are written once, in order, into `<out>.partial`, renamed when complete.
//! * [`convert_to_gguf`] — a DeepSeek-V4 safetensors checkpoint (official FP8/FP4, plain BF16, or
//!   our own INT4 output) to the layout llama.cpp's converter writes (`docs/GGUF.md`).

mod convert;
mod mapping;
mod metadata;
pub mod quants;
mod reader;
mod source;
mod tokenizer_meta;
mod types;
mod writer;

use std::path::PathBuf;

pub use convert::{GgufOptions, GgufSummary, GgufTypes, convert_to_gguf};
pub use mapping::gguf_tensor_name;
pub use metadata::id_to_title;
pub use reader::{GgufFile, GgufTensorInfo};
pub use types::{GgmlType, GgufValue, GgufValueType, file_type};
pub use writer::{GgufWriter, TensorDecl};

/// Default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// `GGUF` in little-endian byte order.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Errors of the GGUF reader, writer and converter. Every variant names the file concerned and,
/// where there is one, the tensor or metadata key.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A malformed GGUF file (bad magic, truncated, inconsistent header).
    #[error("{path}: not a valid GGUF file: {message}")]
    Format { path: PathBuf, message: String },
    /// A GGUF tensor info with a type id this reader cannot use.
    #[error("{path}: tensor `{tensor}`: {message}")]
    TensorType {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// A GGUF tensor info whose shape, offset or size is invalid.
    #[error("{path}: tensor `{tensor}`: {message}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// A metadata entry that is malformed or has the wrong type.
    #[error("{path}: metadata key `{key}`: {message}")]
    Metadata {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: no tensor named `{tensor}`")]
    NoSuchTensor { path: PathBuf, tensor: String },
    /// `config.json` could not be read or is invalid (the message names the file and field).
    #[error(transparent)]
    Config(#[from] v4_engine::config::ConfigError),
    /// The checkpoint could not be opened or a tensor could not be fetched (names file, tensor).
    #[error(transparent)]
    Checkpoint(#[from] v4_engine::loader::LoadError),
    /// A source tensor the layout needs is absent (`file` is the shard or index that should hold
    /// it).
    #[error("{file}: tensor `{tensor}` is missing{}", needed_by.as_ref().map(|n| format!(" (needed by `{n}`)")).unwrap_or_default())]
    MissingTensor {
        file: PathBuf,
        tensor: String,
        needed_by: Option<String>,
    },
    /// A source tensor with a dtype the converter cannot use there.
    #[error("{file}: tensor `{tensor}`: expected dtype {expected}, found {found}")]
    SourceDtype {
        file: PathBuf,
        tensor: String,
        expected: String,
        found: String,
    },
    /// A source tensor with the wrong shape.
    #[error("{file}: tensor `{tensor}`: expected shape {expected:?}, found {found:?}")]
    SourceShape {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A source tensor whose name has no GGUF mapping.
    #[error(
        "{file}: tensor `{tensor}` is not part of the DeepSeek-V4 layout (no GGUF name for it)"
    )]
    UnknownTensor { file: PathBuf, tensor: String },
    /// A source tensor with invalid contents (e.g. an out-of-range expert id).
    #[error("{file}: tensor `{tensor}`: {message}")]
    SourceValue {
        file: PathBuf,
        tensor: String,
        message: String,
    },
    /// `tokenizer.json` / `tokenizer_config.json` could not be used.
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A requested feature this converter does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The writer was driven inconsistently (a bug in the caller); names the output file.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Writer {
        path: PathBuf,
        tensor: String,
        message: String,
    },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}
