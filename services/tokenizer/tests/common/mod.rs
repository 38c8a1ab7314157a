//! Fixture access shared by the tokenizer tests: `../shared` beside the project root; a
//! missing fixture fails the test loudly, it is never skipped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use v4_tokenizer::Tokenizer;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

pub fn shared(rel: &str) -> PathBuf {
    let path = PathBuf::from(SHARED).join(rel);
    assert!(
        path.exists(),
        "required fixture is missing: {}",
        path.display()
    );
    path
}

/// The official DeepSeek-V4 tokenizer, loaded once per test binary.
pub fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = shared("tokenizer/deepseek-v4/tokenizer.json");
        Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}
