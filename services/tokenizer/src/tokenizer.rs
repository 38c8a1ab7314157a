//! The DeepSeek-V4 tokenizer: a thin, typed wrapper around the HF `tokenizers` crate loaded from
//! the official `tokenizer.json`.
//!
//! Behaviour is that of PyPI `tokenizers` 0.23.3 (the reference the fixtures were made with):
//!
//! * [`Tokenizer::encode`] never adds special tokens. DeepSeek has no BOS post-processor anyway
//!   (crates.md G9): the chat encoder writes `<｜begin▁of▁sentence｜>` into the prompt text.
//! * Every added token (special or not) is matched as one id wherever its exact text appears.
//! * [`Tokenizer::decode`] is lossy UTF-8 (U+FFFD per maximal invalid subpart). With
//!   `skip_special = true` only tokens flagged `special` (BOS, EOS, pad, multimodal …) are
//!   dropped; `<｜User｜>`, `<think>`, `｜DSML｜` … stay.
//! * **Deliberate difference:** the reference silently ignores ids outside the vocabulary
//!   (≥ 129,280); here they are an error ([`TokenizerError::UnknownId`]) because in this stack they
//!   can only come from a bug or a hostile client.
//!
//! Long inputs are encoded in parallel at split points that provably cannot change the result
//! (see [`Tokenizer::encode`]).

mod fast;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `<｜begin▁of▁sentence｜>`: BOS, written by the chat encoder at the start of every prompt.
pub const BOS_TEXT: &str = "<｜begin▁of▁sentence｜>";
/// `<｜end▁of▁sentence｜>`: EOS, ends every assistant turn; the stop token.
pub const EOS_TEXT: &str = "<｜end▁of▁sentence｜>";
/// `<｜▁pad▁｜>`.
pub const PAD_TEXT: &str = "<｜▁pad▁｜>";
/// `<｜User｜>`: starts a user turn (non-special added token).
pub const USER_TEXT: &str = "<｜User｜>";
/// `<｜Assistant｜>`: starts an assistant turn (non-special added token).
pub const ASSISTANT_TEXT: &str = "<｜Assistant｜>";
/// `<think>`: starts the reasoning (non-special added token).
pub const THINK_START_TEXT: &str = "<think>";
/// `</think>`: ends the reasoning (non-special added token).
pub const THINK_END_TEXT: &str = "</think>";
/// `｜DSML｜`: DSML tool-call markup (non-special added token).
pub const DSML_TEXT: &str = "｜DSML｜";

/// Texts below this size are encoded on the calling thread by [`Tokenizer::encode`]. One thread
/// does 7–15 MB/s in release; on 2 busy cores, splitting a 1 MB text was slower than not (each
/// thread repeats the BPE of the words it has not seen), and a 4.6 MB one gained little.
pub const PARALLEL_MIN_BYTES: usize = 2 * 1024 * 1024;

/// Errors of the tokenizer and of streaming detokenization.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.json` could not be read or parsed.
    #[error("cannot load tokenizer from {}: {message}", path.display())]
    Load {
        /// The file that was being loaded.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// In-memory tokenizer JSON could not be parsed.
    #[error("cannot parse tokenizer JSON: {0}")]
    Parse(String),
    /// The file parsed but is not a usable DeepSeek-style byte-level tokenizer.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    /// A token id that is not in the vocabulary.
    #[error("unknown token id {id} (vocabulary size {vocab_size})")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// Number of ids the tokenizer knows (valid ids are `0..vocab_size`).
        vocab_size: usize,
    },
    /// The underlying `tokenizers` crate reported an error.
    #[error("tokenizer error: {0}")]
    Internal(String),
}

/// Ids of the special tokens the serving stack needs, looked up in the file at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<｜begin▁of▁sentence｜>` (0 in DeepSeek-V4).
    pub bos: u32,
    /// `<｜end▁of▁sentence｜>` (1).
    pub eos: u32,
    /// `<｜▁pad▁｜>` (2), if present.
    pub pad: Option<u32>,
    /// `<｜User｜>` (128803).
    pub user: u32,
    /// `<｜Assistant｜>` (128804).
    pub assistant: u32,
    /// `<think>` (128821).
    pub think_start: u32,
    /// `</think>` (128822).
    pub think_end: u32,
    /// `｜DSML｜` (128825).
    pub dsml: u32,
}

/// The DeepSeek-V4 tokenizer. Cheap to share (`&Tokenizer` is `Sync`); load it once.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    special: SpecialIds,
    /// `special[id]`: the id is an added token flagged `special` (dropped by `skip_special`).
    special_flags: Vec<bool>,
    /// Whether texts may be split after a `'\n'` for parallel encoding (DeepSeek-V4's
    /// pre-tokenizer, and no added token contains a line break).
    splittable: bool,
    /// The lean encode path, when the file has the supported shape (see `fast`).
    fast: Option<fast::FastEncoder>,
    sha256: [u8; 32],
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("special", &self.special)
            .field("fast_path", &self.fast.is_some())
            .field("sha256", &self.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from `path`. The error names the file.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| TokenizerError::Parse(e.to_string()))?;
        let vocab_size = inner.get_vocab_size(true);
        let lookup = |text: &str| {
            inner.token_to_id(text).ok_or_else(|| {
                TokenizerError::Unsupported(format!("token {text:?} is not in the vocabulary"))
            })
        };
        let special = SpecialIds {
            bos: lookup(BOS_TEXT)?,
            eos: lookup(EOS_TEXT)?,
            pad: inner.token_to_id(PAD_TEXT),
            user: lookup(USER_TEXT)?,
            assistant: lookup(ASSISTANT_TEXT)?,
            think_start: lookup(THINK_START_TEXT)?,
            think_end: lookup(THINK_END_TEXT)?,
            dsml: lookup(DSML_TEXT)?,
        };
        let added = inner.get_added_tokens_decoder();
        let mut special_flags = vec![false; vocab_size];
        let mut splittable = true;
        for (&id, token) in &added {
            if token.special
                && let Some(flag) = special_flags.get_mut(id as usize)
            {
                *flag = true;
            }
            if token.content.contains(['\n', '\r']) {
                splittable = false;
            }
        }
        // Every id below vocab_size must exist, so that "id < vocab_size" is the exact validity
        // test and decode never silently drops an id.
        if let Some(hole) = (0..vocab_size as u32).find(|&id| inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::Unsupported(format!(
                "id {hole} has no token although the vocabulary has {vocab_size} ids"
            )));
        }
        // Byte-level BPE must cover all 256 bytes, or encoding could fail on some input.
        if let Err(e) = inner.encode_fast("\u{0}\u{7f}\u{ff}\u{10ffff}", false) {
            return Err(TokenizerError::Unsupported(format!(
                "cannot encode bytes: {e}"
            )));
        }
        let fast = fast::FastEncoder::new(&inner).ok();
        let splittable = splittable && fast.as_ref().is_some_and(|f| f.newline_cuts_are_safe());
        Ok(Self {
            inner,
            vocab_size,
            special,
            special_flags,
            splittable,
            fast,
            sha256: Sha256::digest(bytes).into(),
        })
    }

    /// Encodes `text` into ids, without adding special tokens (the prompt text carries BOS).
    ///
    /// Texts of [`PARALLEL_MIN_BYTES`] or more are cut after a `'\n'` that is followed by a non-whitespace
    /// character and the pieces are encoded on several threads. Such a cut can never change
    /// the ids (cutting is enabled only for DeepSeek-V4's exact pre-tokenizer patterns): no added
    /// token contains a line break (checked at load), the digit and CJK splits
    /// stop at the newline, and no alternative of the pre-tokenizer regex matches a line break
    /// followed by a non-space, so the cut is always a pre-token boundary.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !self.splittable || threads < 2 || text.len() < PARALLEL_MIN_BYTES {
            return self.encode_one(text);
        }
        let pieces = split_at_safe_points(text, threads * 8);
        if pieces.len() < 2 {
            return self.encode_one(text);
        }
        // One contiguous run of pieces per thread, each thread with one word cache, so that a
        // word is run through the BPE at most once per thread.
        let per_thread = pieces.len().div_ceil(threads);
        let parts: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = pieces
                .chunks(per_thread)
                .map(|run| {
                    scope.spawn(move || {
                        let mut cache = fast::WordCache::new();
                        let mut ids = Vec::new();
                        for piece in run {
                            self.encode_into(piece, &mut cache, &mut ids);
                        }
                        ids
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        parts.concat()
    }

    /// Encodes on the calling thread, without cutting the text. Uses the lean pipeline of
    /// `fast.rs` when the file has the supported shape (DeepSeek-V4's has), else `tokenizers`.
    pub fn encode_one(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut fast::WordCache::new(), &mut ids);
        ids
    }

    /// Appends the ids of `text` to `ids`, sharing `cache` with earlier pieces of the same text.
    fn encode_into<'t>(&self, text: &'t str, cache: &mut fast::WordCache<'t>, ids: &mut Vec<u32>) {
        let Some(fast) = &self.fast else {
            ids.extend(self.encode_reference(text));
            return;
        };
        if let Err(e) = fast.encode(self.inner.get_model(), text, cache, ids) {
            // Unreachable: byte-level BPE covers every byte (checked at load).
            panic!("BPE failed on a {}-byte text: {e}", text.len());
        }
    }

    /// Whether [`Tokenizer::encode`] may cut long texts and encode the pieces in parallel.
    pub fn parallel_encode_enabled(&self) -> bool {
        self.splittable
    }

    /// Whether [`Tokenizer::encode_one`] uses the lean pipeline rather than `tokenizers`'.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Encodes with `tokenizers::Tokenizer::encode_fast` itself (no cutting, no fast path): the
    /// reference the other paths are tested against.
    pub fn encode_reference(&self, text: &str) -> Vec<u32> {
        match self.inner.encode_fast(text, false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            // Unreachable for a tokenizer accepted by `from_bytes` (no truncation, padding or
            // byte gaps); kept loud rather than silently returning wrong ids.
            Err(e) => panic!(
                "tokenizers failed to encode a {}-byte text: {e}",
                text.len()
            ),
        }
    }

    /// Number of tokens of `text` (same as `encode(text).len()`).
    pub fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// Decodes `ids` (lossy UTF-8). `skip_special` drops tokens flagged `special`.
    /// An id outside the vocabulary is an error naming the id.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Internal(e.to_string()))
    }

    /// Errors with the first id that is not in the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), TokenizerError> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(&id) => Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Number of ids, added tokens included (129,280 for DeepSeek-V4).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token given by its vocabulary string (byte-level form for ordinary tokens,
    /// literal text for added tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary string of an id (byte-level form, e.g. `"Ġthe"`, or the added token text).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is an added token flagged `special` (removed by `skip_special`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special_flags
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The special-token ids, as found in the file.
    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// BOS id (`<｜begin▁of▁sentence｜>`).
    pub fn bos_id(&self) -> u32 {
        self.special.bos
    }

    /// EOS id (`<｜end▁of▁sentence｜>`), the stop token.
    pub fn eos_id(&self) -> u32 {
        self.special.eos
    }

    /// `<｜User｜>` id.
    pub fn user_id(&self) -> u32 {
        self.special.user
    }

    /// `<｜Assistant｜>` id.
    pub fn assistant_id(&self) -> u32 {
        self.special.assistant
    }

    /// `<think>` id.
    pub fn think_start_id(&self) -> u32 {
        self.special.think_start
    }

    /// `</think>` id.
    pub fn think_end_id(&self) -> u32 {
        self.special.think_end
    }

    /// `｜DSML｜` id.
    pub fn dsml_id(&self) -> u32 {
        self.special.dsml
    }

    /// SHA-256 of the `tokenizer.json` bytes: a stable identity for capability handshakes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// [`Tokenizer::sha256`] as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The wrapped `tokenizers` object, for anything this API does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Cuts `text` into about `target` pieces, only directly after a `'\n'` that is followed by a
/// character that is not whitespace. Returns the whole text as one piece if there is no such
/// point. Public for tests; see [`Tokenizer::encode`] for why these points are safe.
pub fn split_at_safe_points(text: &str, target: usize) -> Vec<&str> {
    let step = (text.len() / target.max(1)).max(1);
    let mut pieces = Vec::with_capacity(target + 1);
    let mut start = 0;
    let mut from = step;
    while let Some(cut) = next_safe_cut(text, from) {
        pieces.push(&text[start..cut]);
        start = cut;
        from = cut + step;
    }
    pieces.push(&text[start..]);
    pieces
}

/// The first position `p >= from` (byte index) such that `text[p - 1] == '\n'` and the char at
/// `p` exists and is not whitespace.
fn next_safe_cut(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut search = from.checked_sub(1)?;
    loop {
        let nl = search + bytes.get(search..)?.iter().position(|&b| b == b'\n')?;
        let cut = nl + 1;
        // `cut` follows an ASCII byte, so it is a char boundary.
        let c = text[cut..].chars().next()?;
        if !c.is_whitespace() {
            return Some(cut);
        }
        search = cut;
    }
}
