//! `tokenizer.*` metadata from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`), as
//! llama.cpp's converter writes it for DeepSeek-V4 (`shared/design/gguf-deepseek4.md` §2):
//! byte-level BPE (`gpt2`), pre-tokenizer `joyai-llm`, one token string and type per id up to the
//! model's `vocab_size`, the merges, and the special ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use v4_engine::config::ModelConfig;

use super::GgufError;
use super::types::{GgufValue, GgufValueType};

/// llama.cpp token types.
const NORMAL: i32 = 1;
const UNUSED: i32 = 5;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The three split regexes of the DeepSeek-V3/V4 pre-tokenizer (digits in runs of 1-3, CJK runs,
/// letters/punctuation/whitespace), followed by a byte-level step.
const DEEPSEEK_SPLITS: [&str; 3] = [
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

/// What llama.cpp's converter names the DeepSeek-V4 pre-tokenizer (its probe-text hash equals
/// the JoyAI-LLM-Flash entry; same regexes as `deepseek-v3` on the C++ side).
const PRE_NAME: &str = "joyai-llm";

/// The tokenizer keys plus remarks for the conversion summary.
#[derive(Debug)]
pub(crate) struct TokenizerMeta {
    pub kv: Vec<(String, GgufValue)>,
    pub notes: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value, GgufError> {
    let text = std::fs::read_to_string(path).map_err(|e| GgufError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| GgufError::Tokenizer {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// Whether an added token looks like a control token although not marked special
/// (`<|…|>`, `<｜…｜>` and a few names some models forget to mark).
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>") && t.len() >= 4)
        || (t.starts_with("<｜") && t.ends_with("｜>") && t.chars().count() >= 4)
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// The Split regexes of a pre-tokenizer (a `Sequence` or a single step), and whether it ends in
/// a byte-level step.
fn split_patterns(pre: &Value) -> (Vec<String>, bool) {
    let steps: Vec<&Value> = match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![pre],
    };
    let mut patterns = Vec::new();
    let mut byte_level = false;
    for s in steps {
        match s.get("type").and_then(Value::as_str) {
            Some("Split") => {
                if let Some(r) = s.pointer("/pattern/Regex").and_then(Value::as_str) {
                    patterns.push(r.to_string());
                }
            }
            Some("ByteLevel") => byte_level = true,
            _ => {}
        }
    }
    (patterns, byte_level)
}

/// The content of a special-token entry of `tokenizer_config.json` (a string or an
/// `AddedToken` object).
fn token_content(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// Builds the tokenizer metadata from `tokenizer_json`; `tokenizer_config` supplies the special
/// tokens and `add_*_token` flags when given (see `docs/GGUF.md` for the defaults otherwise).
pub(crate) fn tokenizer_metadata(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
    cfg: &ModelConfig,
) -> Result<TokenizerMeta, GgufError> {
    let path = tokenizer_json.to_path_buf();
    let bad = |message: String| GgufError::Tokenizer {
        path: path.clone(),
        message,
    };
    let tok = read_json(tokenizer_json)?;
    let model = tok
        .get("model")
        .ok_or_else(|| bad("no `model` section".into()))?;
    let mtype = model.get("type").and_then(Value::as_str).unwrap_or("");
    if mtype != "BPE" {
        return Err(bad(format!(
            "model type {mtype:?}: only byte-level BPE (DeepSeek-V4) is supported"
        )));
    }
    let (patterns, byte_level) = split_patterns(tok.get("pre_tokenizer").unwrap_or(&Value::Null));
    if !byte_level || patterns != DEEPSEEK_SPLITS {
        return Err(bad(format!(
            "pre-tokenizer is not the DeepSeek-V3/V4 one (split regexes {patterns:?}, byte-level \
             {byte_level}); llama.cpp would need another `tokenizer.ggml.pre` name"
        )));
    }

    // id -> (text, type)
    let n_vocab = cfg.vocab_size;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; n_vocab];
    let mut by_content: HashMap<String, u32> = HashMap::new();
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`model.vocab` is not an object".into()))?;
    let slot = |id: u64, what: &str| -> Result<usize, GgufError> {
        if id >= n_vocab as u64 {
            return Err(bad(format!(
                "{what} has id {id}, not below the model's vocab_size {n_vocab}"
            )));
        }
        Ok(id as usize)
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("vocab entry {text:?} has a non-integer id")))?;
        let i = slot(id, &format!("vocab entry {text:?}"))?;
        tokens[i] = Some((text.clone(), NORMAL));
        by_content.insert(text.clone(), id as u32);
    }
    let added = tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in &added {
        let (Some(id), Some(text)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            return Err(bad(format!("malformed added token {a}")));
        };
        let i = slot(id, &format!("added token {text:?}"))?;
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        let entry = if special || looks_special(text) {
            (text.to_string(), CONTROL)
        } else {
            // llama.cpp expects user-defined tokens pre-normalized (`▁` as a space).
            (text.replace('\u{2581}', " "), USER_DEFINED)
        };
        tokens[i] = Some(entry);
        by_content.insert(text.to_string(), id as u32);
    }
    let mut notes = Vec::new();
    let padded = tokens.iter().filter(|t| t.is_none()).count();
    if padded > 0 {
        notes.push(format!(
            "tokenizer has {} ids for vocab_size {n_vocab}: {padded} `[PAD<id>]` tokens added",
            n_vocab - padded
        ));
    }
    let (texts, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .unzip();

    let mut merges = Vec::new();
    for m in model
        .get("merges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let text = match m {
            Value::String(s) => s.clone(),
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => format!("{a} {b}"),
                _ => return Err(bad(format!("malformed merge {m}"))),
            },
            _ => return Err(bad(format!("malformed merge {m}"))),
        };
        merges.push(text);
    }

    // Special tokens.
    let tc = match tokenizer_config {
        Some(p) => Some((p.to_path_buf(), read_json(p)?)),
        None => None,
    };
    let lookup = |key: &str| -> Result<Option<u32>, GgufError> {
        let Some((tc_path, tc)) = &tc else {
            return Ok(None);
        };
        let Some(content) = tc.get(key).and_then(token_content) else {
            return Ok(None);
        };
        by_content
            .get(content)
            .copied()
            .map(Some)
            .ok_or_else(|| GgufError::Tokenizer {
                path: tc_path.clone(),
                message: format!("`{key}` {content:?} is not a token of {}", path.display()),
            })
    };
    let bos = lookup("bos_token")?.or(cfg.bos_token_id);
    let eos = lookup("eos_token")?.or_else(|| cfg.eos_ids().first().copied());
    let pad = match lookup("pad_token")? {
        Some(p) => Some(p),
        None => {
            notes.push(
                "no pad token in tokenizer_config.json: padding id = EOS (DeepSeek-V4's choice)"
                    .into(),
            );
            eos
        }
    };
    let flag = |key: &str| {
        tc.as_ref()
            .and_then(|(_, tc)| tc.get(key))
            .and_then(Value::as_bool)
    };
    let add_bos = flag("add_bos_token").unwrap_or_else(|| {
        notes.push("add_bos_token not given: false (DeepSeek-V4's choice)".into());
        false
    });
    let add_eos = flag("add_eos_token").unwrap_or(false);

    let mut kv: Vec<(String, GgufValue)> = vec![
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            GgufValue::String(PRE_NAME.into()),
        ),
        ("tokenizer.ggml.tokens".into(), GgufValue::strings(texts)),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array {
                elem: GgufValueType::I32,
                values: types.into_iter().map(GgufValue::I32).collect(),
            },
        ),
        ("tokenizer.ggml.merges".into(), GgufValue::strings(merges)),
    ];
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.padding_token_id", pad),
    ] {
        if let Some(id) = id {
            kv.push((key.into(), GgufValue::U32(id)));
        }
    }
    kv.push((
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(add_bos),
    ));
    kv.push((
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(add_eos),
    ));
    Ok(TokenizerMeta { kv, notes })
}

/// `tokenizer_config.json` beside `tokenizer_json`, else in `src_dir`.
pub(crate) fn find_tokenizer_config(tokenizer_json: &Path, src_dir: &Path) -> Option<PathBuf> {
    let beside = tokenizer_json
        .parent()
        .map(|d| d.join("tokenizer_config.json"));
    beside
        .into_iter()
        .chain(std::iter::once(src_dir.join("tokenizer_config.json")))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use v4_engine::init::{Preset, preset_config};

    #[test]
    fn full_deepseek_v4_tokenizer() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tokenizer/deepseek-v4");
        let tok = dir.join("tokenizer.json");
        assert!(tok.is_file(), "missing fixture {}", tok.display());
        let cfg = preset_config(Preset::Small); // vocab_size 129280
        assert_eq!(cfg.vocab_size, 129_280);
        let meta = tokenizer_metadata(&tok, Some(&dir.join("tokenizer_config.json")), &cfg)
            .expect("tokenizer metadata");
        let get = |k: &str| {
            meta.kv
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k}"))
        };
        assert_eq!(
            get("tokenizer.ggml.pre"),
            GgufValue::String("joyai-llm".into())
        );
        let GgufValue::Array { values: types, .. } = get("tokenizer.ggml.token_type") else {
            panic!("token_type is not an array");
        };
        let count = |t: i32| types.iter().filter(|v| **v == GgufValue::I32(t)).count();
        assert_eq!(
            (count(NORMAL), count(CONTROL), count(USER_DEFINED)),
            (127_997, 1_277, 6)
        );
        for id in [128821, 128822, 128825, 128840, 128841, 129265] {
            assert_eq!(types[id], GgufValue::I32(USER_DEFINED), "{id}");
        }
        for id in [0, 1, 128803, 128804] {
            assert_eq!(types[id], GgufValue::I32(CONTROL), "{id}");
        }
        let GgufValue::Array { values: merges, .. } = get("tokenizer.ggml.merges") else {
            panic!("merges is not an array");
        };
        assert_eq!(merges.len(), 127_741);
        assert_eq!(get("tokenizer.ggml.bos_token_id"), GgufValue::U32(0));
        assert_eq!(get("tokenizer.ggml.eos_token_id"), GgufValue::U32(1));
        assert_eq!(get("tokenizer.ggml.padding_token_id"), GgufValue::U32(1));
        assert!(meta.notes.is_empty(), "{:?}", meta.notes);

        // Ids at or above vocab_size are refused.
        let mut small = cfg.clone();
        small.vocab_size = 1000;
        let err = tokenizer_metadata(&tok, None, &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vocab_size 1000"), "{err}");
    }
}
