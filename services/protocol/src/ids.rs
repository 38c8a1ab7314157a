//! [`TokenIds`]: token-id lists in compact form.
//!
//! On the wire a `TokenIds` is one JSON string: standard base64 (RFC 4648 alphabet, `=`
//! padding) of the ids as consecutive little-endian `u32`s. 1M tokens take 5.33 MB instead of
//! ~7 MB as a JSON number array, and decoding is a straight byte copy. Readers also accept a
//! JSON array of non-negative integers (`[0, 128803, …]`), so requests can be written by hand;
//! writers always produce the string.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A list of token ids, serialized as base64 of little-endian `u32`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TokenIds(pub Vec<u32>);

impl TokenIds {
    pub fn new(ids: Vec<u32>) -> TokenIds {
        TokenIds(ids)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<u32> {
        self.0
    }

    /// The wire string (base64 of the little-endian ids).
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for id in &self.0 {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        base64::encode(&bytes)
    }

    /// Parses the wire string.
    pub fn from_base64(s: &str) -> Result<TokenIds, IdsError> {
        let bytes = base64::decode(s)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(IdsError::Length(bytes.len()));
        }
        Ok(TokenIds(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

impl From<Vec<u32>> for TokenIds {
    fn from(ids: Vec<u32>) -> TokenIds {
        TokenIds(ids)
    }
}

impl From<&[u32]> for TokenIds {
    fn from(ids: &[u32]) -> TokenIds {
        TokenIds(ids.to_vec())
    }
}

/// A malformed id string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdsError {
    #[error("invalid base64 in token ids at byte {0}")]
    Base64(usize),
    #[error("token ids must be a multiple of 4 bytes, got {0}")]
    Length(usize),
}

impl Serialize for TokenIds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TokenIds, D::Error> {
        d.deserialize_any(IdsVisitor)
    }
}

struct IdsVisitor;

impl<'de> Visitor<'de> for IdsVisitor {
    type Value = TokenIds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string of little-endian u32 token ids, or an array of ids")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenIds, E> {
        TokenIds::from_base64(v).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TokenIds, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(id) = seq.next_element::<u32>()? {
            ids.push(id);
        }
        Ok(TokenIds(ids))
    }
}

/// Minimal standard base64 (RFC 4648 §4, with padding).
pub(crate) mod base64 {
    use super::IdsError;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let sym = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
            out.push(sym(18));
            out.push(sym(12));
            out.push(if chunk.len() > 1 { sym(6) } else { '=' });
            out.push(if chunk.len() > 2 { sym(0) } else { '=' });
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, IdsError> {
        let bytes = s.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return Err(IdsError::Base64(bytes.len()));
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        let quads = bytes.len() / 4;
        for (q, quad) in bytes.chunks_exact(4).enumerate() {
            let last = q + 1 == quads;
            let pad = if last {
                quad.iter().rev().take_while(|&&c| c == b'=').count()
            } else {
                0
            };
            if pad > 2 {
                return Err(IdsError::Base64(q * 4 + 1));
            }
            let mut n = 0u32;
            for (k, &c) in quad.iter().enumerate() {
                let v = if k >= 4 - pad {
                    0
                } else {
                    value(c).ok_or(IdsError::Base64(q * 4 + k))?
                };
                n = (n << 6) | v;
            }
            out.push((n >> 16) as u8);
            if pad < 2 {
                out.push((n >> 8) as u8);
            }
            if pad < 1 {
                out.push(n as u8);
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc4648_vectors() {
            for (plain, enc) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(encode(plain.as_bytes()), enc);
                assert_eq!(decode(enc).unwrap(), plain.as_bytes());
            }
            let all: Vec<u8> = (0..=255).collect();
            assert_eq!(decode(&encode(&all)).unwrap(), all);
        }

        #[test]
        fn rejects_garbage() {
            for bad in ["Zg=", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg==", "Zm9v\n"] {
                assert!(decode(bad).is_err(), "{bad:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_as_json_string() {
        let ids = TokenIds(vec![0, 1, 128803, 129279, u32::MAX]);
        let json = serde_json::to_string(&ids).unwrap();
        assert!(json.starts_with('"'), "{json}");
        assert_eq!(serde_json::from_str::<TokenIds>(&json).unwrap(), ids);
        let empty = serde_json::to_string(&TokenIds::default()).unwrap();
        assert_eq!(empty, "\"\"");
        assert!(serde_json::from_str::<TokenIds>(&empty).unwrap().is_empty());
    }

    #[test]
    fn accepts_a_number_array() {
        let ids: TokenIds = serde_json::from_str("[0, 128803, 7]").unwrap();
        assert_eq!(ids.as_slice(), &[0, 128803, 7]);
        assert!(serde_json::from_str::<TokenIds>("[-1]").is_err());
        assert!(serde_json::from_str::<TokenIds>("[1.5]").is_err());
        assert!(serde_json::from_str::<TokenIds>("{}").is_err());
    }

    #[test]
    fn rejects_partial_ids() {
        // 3 bytes: not a whole u32.
        assert_eq!(
            TokenIds::from_base64("AAAA").unwrap_err(),
            IdsError::Length(3)
        );
        assert!(serde_json::from_str::<TokenIds>("\"AAAA\"").is_err());
    }

    #[test]
    fn a_million_ids_are_compact() {
        let ids = TokenIds((0..1_000_000u32).map(|i| i % 129_280).collect());
        let json = serde_json::to_vec(&ids).unwrap();
        assert_eq!(json.len(), 4_000_000usize.div_ceil(3) * 4 + 2);
        assert_eq!(serde_json::from_slice::<TokenIds>(&json).unwrap(), ids);
    }
}
