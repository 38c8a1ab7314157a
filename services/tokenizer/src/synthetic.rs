//! A small tokenizer with DeepSeek-V4's structure, generated in code, so that the stack (and a
//! model generated for tests) can run offline without the official 129,280-id `tokenizer.json`.
//!
//! The generated `tokenizer.json` has the official file's pipeline, section by section: the
//! empty normalizer, the three `Split` pre-tokenizers with the official regexes followed by
//! `ByteLevel`, the `ByteLevel` post-processor and decoder, and a byte-level BPE model with the
//! same options. [`Tokenizer`] therefore loads it through the same code path as the official
//! file (the lean encoder of `tokenizer/fast.rs` and parallel encoding are enabled), and encode
//! / decode round-trip any UTF-8 text exactly. Only the vocabulary is smaller. With `V` the
//! [`SyntheticOptions::vocab_size`] (default [`DEFAULT_VOCAB_SIZE`]) and `R = V − 65`:
//!
//! | ids | tokens |
//! |---|---|
//! | 0, 1, 2 | BOS, EOS, pad: special added tokens that are also in the model vocabulary, as in the official file (same ids) |
//! | 3–258 | the 256 byte-level symbols in code-point order (the official ids 3–258 are the same) |
//! | 259 … R−1 | tokens learned by byte-level BPE from a built-in English/code sample text (`synthetic/corpus.txt`) |
//! | R … V−1 | the other 65 named added tokens of the official file ([`ADDED_TOKENS`]), in its order and with its `special` / `normalized` flags |
//!
//! Left out are only the official file's numbered placeholders (`<｜place▁holder▁no▁N｜>`, ids
//! 128000–128799, and `<|place_holder_mm_span_NNNN|>`, ids 128847–129261), which nothing uses.
//! So every token the chat encoder, the output parser and [`crate::tokenizer::SpecialIds`]
//! look up by text exists, with the official flags (`<｜User｜>`, `<think>`, `｜DSML｜` … are
//! non-special and survive `skip_special`; BOS and EOS are special).
//!
//! `V` ranges from [`MIN_VOCAB_SIZE`] (324: no learned token) to [`MAX_VOCAB_SIZE`] (4096: the
//! sample text has nothing left to merge). The default, 2048, has 1,983 regular ids (1,724
//! learned tokens). A model made for a synthetic tokenizer must have exactly
//! [`SyntheticTokenizer::vocab_size`] (= `V`) embedding rows.
//!
//! Generation is deterministic: the same options give a byte-identical file (and so the same
//! sha256, the tokenizer's identity in `TokenizerInfo`). The learned merges depend on the sample
//! text, so editing `synthetic/corpus.txt` or the trainer changes every generated tokenizer.
//!
//! ```
//! use v4_tokenizer::synthetic::{SyntheticOptions, SyntheticTokenizer};
//!
//! let synth = SyntheticTokenizer::generate(&SyntheticOptions::default()).unwrap();
//! assert_eq!(synth.vocab_size(), 2048);
//! let tok = synth.load().unwrap(); // or synth.write(dir) + Tokenizer::from_file
//! assert_eq!(tok.vocab_size(), 2048);
//! assert_eq!(tok.decode(&tok.encode("Hi 🙂"), false).unwrap(), "Hi 🙂");
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Tokenizer, TokenizerError};

/// Total number of ids of the default synthetic tokenizer (regular vocabulary plus added tokens).
pub const DEFAULT_VOCAB_SIZE: usize = 2048;

/// Number of ids before the learned tokens: BOS, EOS, pad, then the 256 byte-level symbols.
pub const BASE_VOCAB_SIZE: usize = 3 + 256;

/// The smallest valid [`SyntheticOptions::vocab_size`]: no learned token at all.
pub const MIN_VOCAB_SIZE: usize = BASE_VOCAB_SIZE + ADDED_TOKENS.len() - 3;

/// The largest valid [`SyntheticOptions::vocab_size`]: beyond it the built-in sample text has no
/// pair left to merge (every word is one token). Checked by a test.
pub const MAX_VOCAB_SIZE: usize = 4096;

/// The sample text the merges are learned from.
const CORPUS: &str = include_str!("synthetic/corpus.txt");

/// The pre-tokenizer `Split` patterns of the official `tokenizer.json`, in order.
const SPLITS: [&str; 3] = [
    r"\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

/// `tokenizer_config.json`, byte for byte the official one (no vocabulary in it).
pub const TOKENIZER_CONFIG_JSON: &str = r#"{
  "add_bos_token": false,
  "add_eos_token": false,
  "bos_token": {
    "__type": "AddedToken",
    "content": "<｜begin▁of▁sentence｜>",
    "lstrip": false,
    "normalized": true,
    "rstrip": false,
    "single_word": false
  },
  "clean_up_tokenization_spaces": false,
  "eos_token": {
    "__type": "AddedToken",
    "content": "<｜end▁of▁sentence｜>",
    "lstrip": false,
    "normalized": true,
    "rstrip": false,
    "single_word": false
  },
  "legacy": true,
  "model_max_length": 1048576,
  "pad_token": {
    "__type": "AddedToken",
    "content": "<｜end▁of▁sentence｜>",
    "lstrip": false,
    "normalized": true,
    "rstrip": false,
    "single_word": false
  },
  "sp_model_kwargs": {},
  "unk_token": null,
  "tokenizer_class": "PreTrainedTokenizerFast"
}"#;

/// One added token of the official `tokenizer.json` (`lstrip`, `rstrip` and `single_word` are
/// false for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedTokenSpec {
    /// The exact text.
    pub content: &'static str,
    /// Dropped by `decode(…, skip_special = true)`.
    pub special: bool,
    /// Matched in the normalized text (the normalizer is empty, so only the matching order
    /// differs: non-normalized tokens first).
    pub normalized: bool,
    /// The token's id in the official DeepSeek-V4 tokenizer.
    pub official_id: u32,
}

const fn added(
    content: &'static str,
    special: bool,
    normalized: bool,
    official_id: u32,
) -> AddedTokenSpec {
    AddedTokenSpec {
        content,
        special,
        normalized,
        official_id,
    }
}

/// Every named added token of the official `tokenizer.json`, in its order (official ids
/// ascending), with its flags. The first three (BOS, EOS, pad) keep ids 0–2; the others follow
/// the learned vocabulary in this order.
pub const ADDED_TOKENS: [AddedTokenSpec; 68] = [
    added("<｜begin▁of▁sentence｜>", true, false, 0),
    added("<｜end▁of▁sentence｜>", true, false, 1),
    added("<｜▁pad▁｜>", true, false, 2),
    added("<｜fim▁hole｜>", false, true, 128800),
    added("<｜fim▁begin｜>", false, true, 128801),
    added("<｜fim▁end｜>", false, true, 128802),
    added("<｜User｜>", false, true, 128803),
    added("<｜Assistant｜>", false, true, 128804),
    added("<|EOT|>", false, true, 128805),
    added("<｜tool▁calls▁begin｜>", false, true, 128806),
    added("<｜tool▁calls▁end｜>", false, true, 128807),
    added("<｜tool▁call▁begin｜>", false, true, 128808),
    added("<｜tool▁call▁end｜>", false, true, 128809),
    added("<｜tool▁outputs▁begin｜>", false, true, 128810),
    added("<｜tool▁outputs▁end｜>", false, true, 128811),
    added("<｜tool▁output▁begin｜>", false, true, 128812),
    added("<｜tool▁output▁end｜>", false, true, 128813),
    added("<｜tool▁sep｜>", false, true, 128814),
    added("<｜begin▁of▁repo▁name｜>", false, true, 128815),
    added("<｜end▁of▁repo▁name｜>", false, true, 128816),
    added("<｜begin▁of▁file▁name｜>", false, true, 128817),
    added("<｜end▁of▁file▁name｜>", false, true, 128818),
    added("<｜begin▁of▁file｜>", false, true, 128819),
    added("<｜end▁of▁file｜>", false, true, 128820),
    added("<think>", false, true, 128821),
    added("</think>", false, true, 128822),
    added("<｜place▁holder▁for▁copy｜>", false, true, 128823),
    added(
        "<｜place▁holder▁for▁pointer▁replace｜>",
        false,
        true,
        128824,
    ),
    added("｜DSML｜", false, true, 128825),
    added("<｜begin▁sys｜>", false, true, 128826),
    added("<｜end▁sys｜>", false, true, 128827),
    added("<｜latest_reminder｜>", false, true, 128828),
    added("<｜action｜>", false, true, 128829),
    added("<｜query｜>", false, true, 128830),
    added("<｜authority｜>", false, true, 128831),
    added("<｜domain｜>", false, true, 128832),
    added("<｜task｜>", false, true, 128833),
    added("<｜political｜>", false, true, 128834),
    added("<｜entity｜>", false, true, 128835),
    added("<｜title｜>", false, true, 128836),
    added("<｜safety｜>", false, true, 128837),
    added("<｜answer｜>", false, true, 128838),
    added("<｜search｜>", false, true, 128839),
    added("<dsml:", false, true, 128840),
    added("</dsml:", false, true, 128841),
    added("<｜search▁begin｜>", false, true, 128842),
    added("<｜search▁end｜>", false, true, 128843),
    added("<｜extracted_url｜>", false, true, 128844),
    added("<｜read_url｜>", false, true, 128845),
    added("<｜end_of_query｜>", true, false, 128846),
    added("<｜rl_image_pad｜>", true, false, 129262),
    added("<｜rl_image_start｜>", true, false, 129263),
    added("<｜image2｜>", false, false, 129264),
    added("<｜/table>｜", false, false, 129265),
    added("<｜table｜>", false, false, 129266),
    added("<｜/td｜>", false, false, 129267),
    added("<｜td｜>", false, false, 129268),
    added("<｜/tr｜>", false, false, 129269),
    added("<｜tr｜>", false, false, 129270),
    added("<｜/polygon｜>", true, false, 129271),
    added("<｜polygon｜>", true, false, 129272),
    added("<｜/point｜>", true, false, 129273),
    added("<｜point｜>", true, false, 129274),
    added("<｜/box｜>", true, false, 129275),
    added("<｜box｜>", true, false, 129276),
    added("<｜/ref｜>", true, false, 129277),
    added("<｜ref｜>", true, false, 129278),
    added("<｜image｜>", true, false, 129279),
];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// Total number of ids, added tokens included: the `vocab_size` of a model made for this
    /// tokenizer. From [`MIN_VOCAB_SIZE`] (324) to [`MAX_VOCAB_SIZE`] (4096); the learned tokens
    /// are `vocab_size − 324`.
    pub vocab_size: usize,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            vocab_size: DEFAULT_VOCAB_SIZE,
        }
    }
}

impl SyntheticOptions {
    /// Options for a tokenizer with `vocab_size` ids in total.
    pub fn with_vocab_size(vocab_size: usize) -> Self {
        SyntheticOptions { vocab_size }
    }
}

/// Why a synthetic tokenizer cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntheticError {
    /// Fewer ids than the special, byte and added tokens need.
    #[error(
        "vocab_size {requested} is too small: the special, byte-level and added tokens alone take {min}"
    )]
    TooSmall { requested: usize, min: usize },
    /// More learned tokens than the sample text has pairs to merge.
    #[error(
        "vocab_size {requested} is too large: the built-in sample text yields at most {max} ids"
    )]
    TooLarge { requested: usize, max: usize },
}

impl From<SyntheticError> for io::Error {
    fn from(e: SyntheticError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// A generated tokenizer: the `tokenizer.json` text and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticTokenizer {
    json: String,
    vocab_size: usize,
    regular_vocab_size: usize,
    merges: usize,
}

impl SyntheticTokenizer {
    /// Generates the tokenizer described by `opts` (deterministic).
    pub fn generate(opts: &SyntheticOptions) -> Result<Self, SyntheticError> {
        let requested = opts.vocab_size;
        if requested < MIN_VOCAB_SIZE {
            return Err(SyntheticError::TooSmall {
                requested,
                min: MIN_VOCAB_SIZE,
            });
        }
        let regular_vocab_size = requested - (ADDED_TOKENS.len() - 3);
        let corpus = CORPUS.replace("\r\n", "\n");
        let Trained { vocab, merges } =
            train(&corpus, regular_vocab_size).map_err(|max_regular| SyntheticError::TooLarge {
                requested,
                max: max_regular + ADDED_TOKENS.len() - 3,
            })?;
        Ok(SyntheticTokenizer {
            json: render_json(&vocab, &merges),
            vocab_size: requested,
            regular_vocab_size,
            merges: merges.len(),
        })
    }

    /// The `tokenizer.json` text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The `tokenizer.json` text, owned.
    pub fn into_json(self) -> String {
        self.json
    }

    /// Total number of ids (`0..vocab_size` are all valid): the model's `vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Ids below this are the BPE model's vocabulary (BOS, EOS, pad, bytes, learned tokens);
    /// the added tokens of [`ADDED_TOKENS`] after the first three follow it.
    pub fn regular_vocab_size(&self) -> usize {
        self.regular_vocab_size
    }

    /// Number of BPE merges in the file.
    pub fn merges(&self) -> usize {
        self.merges
    }

    /// SHA-256 of the `tokenizer.json` bytes, as 64 lowercase hex digits (what
    /// [`Tokenizer::sha256_hex`] reports once loaded).
    pub fn sha256_hex(&self) -> String {
        Sha256::digest(self.json.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Loads the generated file with the normal loader ([`Tokenizer::from_bytes`]).
    pub fn load(&self) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_bytes(self.json.as_bytes())
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (the official one) into `dir`
    /// (created if missing). Returns the path of `tokenizer.json`.
    pub fn write(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, self.json.as_bytes())?;
        std::fs::write(
            dir.join("tokenizer_config.json"),
            TOKENIZER_CONFIG_JSON.as_bytes(),
        )?;
        Ok(path)
    }
}

/// The `tokenizer.json` text of the synthetic tokenizer for `opts`.
pub fn synthetic_tokenizer_json(opts: &SyntheticOptions) -> Result<String, SyntheticError> {
    SyntheticTokenizer::generate(opts).map(SyntheticTokenizer::into_json)
}

/// Generates the synthetic tokenizer for `opts` and writes `tokenizer.json` and
/// `tokenizer_config.json` into `dir`; returns the path of `tokenizer.json`. Invalid options are
/// an [`io::ErrorKind::InvalidInput`] error.
pub fn write_synthetic_tokenizer(dir: &Path, opts: &SyntheticOptions) -> io::Result<PathBuf> {
    SyntheticTokenizer::generate(opts)?.write(dir)
}

/// Generates the synthetic tokenizer for `opts` and loads it (no file is written).
pub fn synthetic_tokenizer(opts: &SyntheticOptions) -> Result<Tokenizer, TokenizerError> {
    SyntheticTokenizer::generate(opts)
        .map_err(|e| TokenizerError::Unsupported(e.to_string()))?
        .load()
}

/// The GPT-2 byte → character table of the ByteLevel pre-tokenizer: printable Latin-1 bytes map
/// to themselves, the others to U+0100 upwards in byte order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    table
}

/// Cuts `text` into the pieces the tokenizer's BPE sees: added tokens removed (leftmost,
/// longest), then the three `Split` stages, each piece mapped to its byte-level form.
fn pre_tokenize(text: &str, splits: &[fancy_regex::Regex], out: &mut Vec<String>) {
    let chars = byte_chars();
    let mut by_len: Vec<&str> = ADDED_TOKENS.iter().map(|t| t.content).collect();
    by_len.sort_by_key(|t| Reverse(t.len()));
    let mut gap_start = 0;
    let mut i = 0;
    let mut gaps = Vec::new();
    while i < text.len() {
        if let Some(t) = by_len.iter().find(|t| text[i..].starts_with(**t)) {
            gaps.push(&text[gap_start..i]);
            i += t.len();
            gap_start = i;
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    gaps.push(&text[gap_start..]);
    let mut emit = |piece: &str| out.push(piece.bytes().map(|b| chars[usize::from(b)]).collect());
    for gap in gaps {
        split_stage(splits, 0, gap, &mut emit);
    }
}

/// One `Split` stage (`Isolated`): matches and the gaps between them are pieces; empty pieces are
/// dropped; a regex error leaves the rest of the piece whole (as `tokenizers` does).
fn split_stage(splits: &[fancy_regex::Regex], stage: usize, piece: &str, f: &mut impl FnMut(&str)) {
    if piece.is_empty() {
        return;
    }
    let Some(re) = splits.get(stage) else {
        f(piece);
        return;
    };
    let mut prev = 0;
    for m in re.find_iter(piece) {
        let Ok(m) = m else { break };
        split_stage(splits, stage + 1, &piece[prev..m.start()], f);
        split_stage(splits, stage + 1, m.as_str(), f);
        prev = m.end();
    }
    split_stage(splits, stage + 1, &piece[prev..], f);
}

/// The result of [`train`].
struct Trained {
    /// Token strings (byte-level form) in id order.
    vocab: Vec<String>,
    /// Merges in rank order, as pairs of ids.
    merges: Vec<(u32, u32)>,
}

/// Byte-level BPE training on `corpus` until the model vocabulary (BOS, EOS, pad, the 256 byte
/// symbols and the learned tokens) has `regular_size` entries. Each step merges the most
/// frequent adjacent pair (ties: the pair of smaller ids), like `tokenizers`' `BpeTrainer`;
/// a merge whose result is already in the vocabulary adds no entry. Returns the vocabulary in
/// id order and the merges in rank order, or `Err(largest reachable size)` when the corpus runs
/// out of pairs.
fn train(corpus: &str, regular_size: usize) -> Result<Trained, usize> {
    let splits: Vec<fancy_regex::Regex> = SPLITS
        .iter()
        .map(|p| fancy_regex::Regex::new(p).expect("the official split patterns compile"))
        .collect();
    let mut pieces = Vec::new();
    pre_tokenize(corpus, &splits, &mut pieces);
    let mut word_counts: BTreeMap<String, u64> = BTreeMap::new();
    for p in pieces {
        *word_counts.entry(p).or_insert(0) += 1;
    }

    let mut vocab: Vec<String> = ADDED_TOKENS[..3]
        .iter()
        .map(|t| t.content.to_string())
        .collect();
    let mut alphabet: Vec<char> = byte_chars().to_vec();
    alphabet.sort_unstable();
    vocab.extend(alphabet.iter().map(char::to_string));
    let mut index: HashMap<String, u32> = vocab
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let added: HashSet<&str> = ADDED_TOKENS.iter().map(|t| t.content).collect();

    let mut words: Vec<(Vec<u32>, u64)> = word_counts
        .into_iter()
        .map(|(w, n)| (w.chars().map(|c| index[&c.to_string()]).collect(), n))
        .collect();
    let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
    for (syms, n) in &words {
        for w in syms.windows(2) {
            *pairs.entry((w[0], w[1])).or_insert(0) += n;
        }
    }
    // Max-heap of (count, smaller pair first). Every change of a pair's count pushes its new
    // count, so the live count of every pair is in the heap; stale entries are skipped.
    let mut heap: BinaryHeap<(u64, Reverse<(u32, u32)>)> =
        pairs.iter().map(|(&p, &n)| (n, Reverse(p))).collect();
    let mut merges = Vec::new();
    let mut touched = Vec::new();
    while vocab.len() < regular_size {
        let (a, b) = loop {
            let Some((n, Reverse(p))) = heap.pop() else {
                return Err(vocab.len());
            };
            if pairs.get(&p) == Some(&n) {
                break p;
            }
        };
        let token = format!("{}{}", vocab[a as usize], vocab[b as usize]);
        assert!(
            !added.contains(token.as_str()),
            "learned token {token:?} collides with an added token"
        );
        let new_id = match index.get(&token) {
            Some(&id) => id,
            None => {
                let id = vocab.len() as u32;
                index.insert(token.clone(), id);
                vocab.push(token);
                id
            }
        };
        merges.push((a, b));
        touched.clear();
        for (syms, n) in &mut words {
            if !syms.windows(2).any(|w| w[0] == a && w[1] == b) {
                continue;
            }
            for w in syms.windows(2) {
                let p = (w[0], w[1]);
                if let Some(c) = pairs.get_mut(&p) {
                    *c -= *n;
                    if *c == 0 {
                        pairs.remove(&p);
                    }
                }
                touched.push(p);
            }
            let mut merged = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(syms[i]);
                    i += 1;
                }
            }
            *syms = merged;
            for w in syms.windows(2) {
                let p = (w[0], w[1]);
                *pairs.entry(p).or_insert(0) += *n;
                touched.push(p);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for p in &touched {
            if let Some(&n) = pairs.get(p) {
                heap.push((n, Reverse(*p)));
            }
        }
    }
    Ok(Trained { vocab, merges })
}

/// A JSON string literal (serde_json's escaping: `"`, `\` and control characters; everything
/// else verbatim, as in the official file).
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The `tokenizer.json` text, laid out like the official file (two-space indentation, the
/// official key order), written by hand so the bytes do not depend on serde_json features.
fn render_json(vocab: &[String], merges: &[(u32, u32)]) -> String {
    let mut s = String::with_capacity(64 * 1024);
    s.push_str("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    s.push_str("  \"added_tokens\": [");
    let later_ids = vocab.len() as u32..;
    let ids = (0..3).chain(later_ids);
    for (i, (token, id)) in ADDED_TOKENS.iter().zip(ids).enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            s,
            "{sep}\n    {{\n      \"id\": {id},\n      \"content\": {},\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n      \"normalized\": {},\n      \"special\": {}\n    }}",
            quote(token.content),
            token.normalized,
            token.special
        );
    }
    s.push_str("\n  ],\n");
    s.push_str("  \"normalizer\": {\n    \"type\": \"Sequence\",\n    \"normalizers\": []\n  },\n");
    s.push_str("  \"pre_tokenizer\": {\n    \"type\": \"Sequence\",\n    \"pretokenizers\": [\n");
    for pattern in SPLITS {
        let _ = write!(
            s,
            "      {{\n        \"type\": \"Split\",\n        \"pattern\": {{\n          \"Regex\": {}\n        }},\n        \"behavior\": \"Isolated\",\n        \"invert\": false\n      }},\n",
            quote(pattern)
        );
    }
    s.push_str(
        "      {\n        \"type\": \"ByteLevel\",\n        \"add_prefix_space\": false,\n        \"trim_offsets\": true,\n        \"use_regex\": false\n      }\n    ]\n  },\n",
    );
    s.push_str(
        "  \"post_processor\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n    \"trim_offsets\": false,\n    \"use_regex\": true\n  },\n",
    );
    s.push_str(
        "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n",
    );
    s.push_str(
        "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {",
    );
    for (id, token) in vocab.iter().enumerate() {
        let sep = if id == 0 { "" } else { "," };
        let _ = write!(s, "{sep}\n      {}: {id}", quote(token));
    }
    s.push_str("\n    },\n    \"merges\": [");
    for (i, &(a, b)) in merges.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let merge = format!("{} {}", vocab[a as usize], vocab[b as usize]);
        let _ = write!(s, "{sep}\n      {}", quote(&merge));
    }
    s.push_str("\n    ]\n  }\n}");
    s
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    fn default_tokenizer() -> &'static (SyntheticTokenizer, Tokenizer) {
        static TOK: OnceLock<(SyntheticTokenizer, Tokenizer)> = OnceLock::new();
        TOK.get_or_init(|| {
            let synth = SyntheticTokenizer::generate(&SyntheticOptions::default()).unwrap();
            let tok = synth.load().unwrap();
            (synth, tok)
        })
    }

    #[test]
    fn default_layout() {
        let (synth, tok) = default_tokenizer();
        assert_eq!(synth.vocab_size(), DEFAULT_VOCAB_SIZE);
        assert_eq!(tok.vocab_size(), DEFAULT_VOCAB_SIZE);
        assert_eq!(synth.regular_vocab_size(), DEFAULT_VOCAB_SIZE - 65);
        assert_eq!(MIN_VOCAB_SIZE, 324);
        assert!(synth.merges() >= synth.regular_vocab_size() - BASE_VOCAB_SIZE);
        assert_eq!(tok.sha256_hex(), synth.sha256_hex());
        // Same loader path as the official file: lean encoder and safe newline cuts.
        assert!(tok.has_fast_path());
        assert!(tok.parallel_encode_enabled());
        let s = tok.special_ids();
        assert_eq!((s.bos, s.eos, s.pad), (0, 1, Some(2)));
        let first_added = synth.regular_vocab_size() as u32;
        assert_eq!(tok.token_to_id("<｜fim▁hole｜>"), Some(first_added));
        assert_eq!(
            tok.token_to_id("<｜image｜>"),
            Some(DEFAULT_VOCAB_SIZE as u32 - 1)
        );
        assert_eq!(tok.token_to_id("!"), Some(3));
        assert_eq!(tok.token_to_id("Ġ"), Some(3 + 188 + 32));
    }

    #[test]
    fn deterministic_and_sized_by_the_option() {
        let a = synthetic_tokenizer_json(&SyntheticOptions::default()).unwrap();
        assert_eq!(a, default_tokenizer().0.json());
        let small = SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(1024)).unwrap();
        assert_eq!(small.load().unwrap().vocab_size(), 1024);
        assert_ne!(small.sha256_hex(), default_tokenizer().0.sha256_hex());
        // The smaller vocabulary is a prefix of the larger (greedy training).
        let big = &default_tokenizer().1;
        let small_tok = small.load().unwrap();
        for id in 0..small.regular_vocab_size() as u32 {
            let t = small_tok.id_to_token(id).unwrap();
            assert_eq!(big.token_to_id(&t), Some(id), "{t}");
        }
    }

    #[test]
    fn minimum_and_rejected_sizes() {
        let min = SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(MIN_VOCAB_SIZE))
            .unwrap();
        assert_eq!(min.merges(), 0);
        let tok = min.load().unwrap();
        let text = "Hello, 世界 🙂\n\t  x";
        assert_eq!(tok.decode(&tok.encode(text), false).unwrap(), text);
        assert_eq!(
            SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(MIN_VOCAB_SIZE - 1)),
            Err(SyntheticError::TooSmall {
                requested: MIN_VOCAB_SIZE - 1,
                min: MIN_VOCAB_SIZE
            })
        );
        let e =
            SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(1 << 20)).unwrap_err();
        let SyntheticError::TooLarge { max, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(max, MAX_VOCAB_SIZE);
        let at_max = SyntheticTokenizer::generate(&SyntheticOptions::with_vocab_size(max))
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(at_max.vocab_size(), max);
        let err = io::Error::from(e);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
