//! The `--format gguf` and GGUF `inspect` paths of the CLI (wired to `v4convert::gguf`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gguf")
}

pub fn convert(
    _from: &Path,
    _to: &Path,
    _types: &str,
    _tokenizer: Option<PathBuf>,
    _progress: bool,
) -> Result<ExitCode> {
    bail!("GGUF output is not wired yet")
}

pub fn inspect(
    _path: &Path,
    _summary: bool,
    _filter: Option<&str>,
    _json: bool,
) -> Result<ExitCode> {
    bail!("GGUF inspection is not wired yet")
}
