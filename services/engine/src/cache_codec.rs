//! A [`SequenceCache`] as bytes: what a prefill worker hands to a decode worker.
//!
//! Layout (all little-endian): magic `V4KV`, format version `u32` (1), `pos: u64`,
//! `layers: u32`, then per layer the window ring (`window: u32`, `width: u32`, `len: u64`,
//! `len` f32s), and the attention compressor and the indexer compressor, each a presence
//! byte (0/1) followed by five f32 arrays (`len: u64` + data). Decoding checks the result
//! against the receiving model's empty cache ([`decode_for`]): same number of layers, same
//! window shapes, the same compressor presence per layer — a cache from another model is an
//! error, not a wrong answer.

use crate::cache::{LayerCache, SequenceCache, WindowRing};
use crate::compressor::CompressorState;

const MAGIC: &[u8; 4] = b"V4KV";
const VERSION: u32 = 1;

/// Why bytes are not a cache of this model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheCodecError {
    #[error("not a V4 cache (bad magic)")]
    Magic,
    #[error("cache format version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("the cache bytes end early at offset {0}")]
    Truncated(usize),
    #[error("{0} bytes after the end of the cache")]
    Trailing(usize),
    #[error("the cache does not fit this model: {0}")]
    Mismatch(String),
}

/// Serializes `cache`.
pub fn encode(cache: &SequenceCache) -> Vec<u8> {
    let mut out = Vec::with_capacity(cache.bytes() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(cache.pos as u64).to_le_bytes());
    out.extend_from_slice(&(cache.layers.len() as u32).to_le_bytes());
    for l in &cache.layers {
        let (window, width, buf) = l.window.raw();
        out.extend_from_slice(&(window as u32).to_le_bytes());
        out.extend_from_slice(&(width as u32).to_le_bytes());
        put_f32s(&mut out, buf);
        for c in [&l.compressor, &l.indexer] {
            match c {
                None => out.push(0),
                Some(state) => {
                    out.push(1);
                    for part in state.parts() {
                        put_f32s(&mut out, part);
                    }
                }
            }
        }
    }
    out
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.extend_from_slice(&(v.len() as u64).to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CacheCodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(CacheCodecError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CacheCodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CacheCodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CacheCodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32s(&mut self) -> Result<Vec<f32>, CacheCodecError> {
        let n = self.u64()? as usize;
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or(CacheCodecError::Truncated(self.at))?,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Deserializes a cache and checks it against `empty`, an empty cache of the receiving model
/// (`Model::new_cache`).
pub fn decode_for(bytes: &[u8], empty: &SequenceCache) -> Result<SequenceCache, CacheCodecError> {
    let mut r = Reader { b: bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(CacheCodecError::Magic);
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(CacheCodecError::Version(version));
    }
    let pos = r.u64()? as usize;
    let n = r.u32()? as usize;
    if n != empty.layers.len() {
        return Err(CacheCodecError::Mismatch(format!(
            "{n} layers, the model has {}",
            empty.layers.len()
        )));
    }
    let mut layers = Vec::with_capacity(n);
    for (i, model_layer) in empty.layers.iter().enumerate() {
        let window = r.u32()? as usize;
        let width = r.u32()? as usize;
        let (mw, mwidth, _) = model_layer.window.raw();
        if (window, width) != (mw, mwidth) {
            return Err(CacheCodecError::Mismatch(format!(
                "layer {i}: window {window}x{width}, the model has {mw}x{mwidth}"
            )));
        }
        let buf = r.f32s()?;
        let ring = WindowRing::from_raw(window, width, buf).ok_or_else(|| {
            CacheCodecError::Mismatch(format!("layer {i}: window buffer of the wrong size"))
        })?;
        let mut states = Vec::with_capacity(2);
        for (what, expected) in [
            ("compressor", model_layer.compressor.is_some()),
            ("indexer", model_layer.indexer.is_some()),
        ] {
            let present = match r.u8()? {
                0 => false,
                1 => true,
                b => {
                    return Err(CacheCodecError::Mismatch(format!(
                        "layer {i}: {what} flag {b}"
                    )));
                }
            };
            if present != expected {
                return Err(CacheCodecError::Mismatch(format!(
                    "layer {i}: {what} {}, the model {}",
                    if present { "present" } else { "absent" },
                    if expected { "has one" } else { "has none" }
                )));
            }
            states.push(if present {
                Some(CompressorState::from_parts([
                    r.f32s()?,
                    r.f32s()?,
                    r.f32s()?,
                    r.f32s()?,
                    r.f32s()?,
                ]))
            } else {
                None
            });
        }
        let indexer = states.pop().expect("two states");
        let compressor = states.pop().expect("two states");
        layers.push(LayerCache {
            window: ring,
            compressor,
            indexer,
        });
    }
    if r.at != bytes.len() {
        return Err(CacheCodecError::Trailing(bytes.len() - r.at));
    }
    Ok(SequenceCache { pos, layers })
}
