//! Errors of the converter. Every variant names the file (and the tensor, where there is one)
//! so that a user converting hundreds of shards knows exactly what to look at.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("{path}: stopped after {done} of {total} shards; rerun with --resume to continue")]
    Interrupted {
        path: PathBuf,
        done: usize,
        total: usize,
    },
    #[error("invalid option: {0}")]
    Options(String),
    #[error(transparent)]
    Write(#[from] v4_engine::st_writer::StWriteError),
    #[error(transparent)]
    Engine(#[from] v4_engine::loader::LoadError),
}

impl ConvertError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
