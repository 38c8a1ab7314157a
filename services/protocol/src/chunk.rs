//! Chunked transfer of bodies larger than one message.
//!
//! # Frames
//!
//! A body of `len` bytes that does not fit the payload budget is cut into `n =
//! ceil(len / payload_limit)` frames ([`split`]); frame `i` carries `body[i*limit..]` (at most
//! `limit` bytes) and the headers
//!
//! * `V4-Chunk: <i>/<n>` ([`CHUNK_HEADER`], [`ChunkHeader`]), `0 <= i < n`, `n >= 2`;
//! * `V4-Transfer: <id>` ([`TRANSFER_HEADER`]): the same unique id on every frame of one body.
//!
//! # Requests (upload)
//!
//! 1. The caller sends frame 0 as a request to the service subject, with its own headers
//!    (e.g. `traceparent`).
//! 2. The instance that receives it subscribes to a private subject and answers with an empty
//!    message carrying `V4-Upload: <subject>` ([`UPLOAD_HEADER`]).
//! 3. The caller sends frames `1..n` as requests to that subject, in order. The instance
//!    acknowledges each with an empty message, except the last, which it answers with the
//!    reply to the whole request (see below).
//!
//! # Replies (download)
//!
//! A reply body larger than the budget is answered with frame 0, `V4-Chunk: 0/<n>`,
//! `V4-Transfer` and `V4-Download: <subject>` ([`DOWNLOAD_HEADER`]). The caller requests frame
//! `i` by sending an empty request with `V4-Chunk: <i>/<n>` to that subject; the instance
//! answers with the frame. The instance stops serving the download when every frame was sent
//! once, or after an idle timeout.
//!
//! # Errors
//!
//! Any answer may instead be an error: header `V4-Status: error` ([`STATUS_HEADER`]) and a
//! [`crate::ServiceError`] JSON body. [`Reassembler`] rejects frames of another transfer, a
//! changed frame count, an index out of range, duplicates, a missing frame at the end (a gap)
//! and a body over the transfer limit, each with a typed [`ChunkError`].

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// `V4-Chunk: <index>/<total>`.
pub const CHUNK_HEADER: &str = "V4-Chunk";
/// `V4-Transfer: <id>`, the same on every frame of one body.
pub const TRANSFER_HEADER: &str = "V4-Transfer";
/// `V4-Upload: <subject>`: where the remaining request frames go.
pub const UPLOAD_HEADER: &str = "V4-Upload";
/// `V4-Download: <subject>`: where the remaining reply frames are fetched.
pub const DOWNLOAD_HEADER: &str = "V4-Download";
/// `V4-Status: error`: the body is a [`crate::ServiceError`].
pub const STATUS_HEADER: &str = "V4-Status";
/// The value of [`STATUS_HEADER`] on error replies.
pub const STATUS_ERROR: &str = "error";

/// The position of a frame: `index` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub index: u32,
    pub total: u32,
}

impl fmt::Display for ChunkHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

impl FromStr for ChunkHeader {
    type Err = ChunkError;

    fn from_str(s: &str) -> Result<ChunkHeader, ChunkError> {
        let bad = || ChunkError::BadHeader(s.chars().take(40).collect());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let total: u32 = n.trim().parse().map_err(|_| bad())?;
        if total == 0 || index >= total {
            return Err(bad());
        }
        Ok(ChunkHeader { index, total })
    }
}

/// A transfer that cannot be reassembled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("malformed {CHUNK_HEADER} header {0:?}: expected <index>/<total> with index < total")]
    BadHeader(String),
    #[error("frame of transfer {found:?} in transfer {expected:?}")]
    WrongTransfer { expected: String, found: String },
    #[error("frame says {found} frames, the transfer has {expected}")]
    TotalMismatch { expected: u32, found: u32 },
    #[error("frame {index} received twice")]
    Duplicate { index: u32 },
    #[error("transfer incomplete: {missing} of {total} frames missing (first missing: {first})")]
    Gap {
        missing: u32,
        total: u32,
        first: u32,
    },
    #[error("transfer of more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("a chunked transfer needs at least 2 frames, got {0}")]
    TooFewFrames(u32),
}

/// Cuts `body` into frames of at most `limit` bytes (one frame for an empty body).
pub fn split(body: &[u8], limit: usize) -> Vec<&[u8]> {
    if body.is_empty() {
        return vec![body];
    }
    body.chunks(limit.max(1)).collect()
}

/// Collects the frames of one transfer in any order and returns the body once all arrived.
#[derive(Debug)]
pub struct Reassembler {
    transfer: String,
    total: u32,
    frames: Vec<Option<Vec<u8>>>,
    received: u32,
    bytes: usize,
    max_bytes: usize,
}

impl Reassembler {
    /// A transfer `transfer` of `total` frames whose body may not exceed `max_bytes`.
    pub fn new(
        transfer: impl Into<String>,
        total: u32,
        max_bytes: usize,
    ) -> Result<Reassembler, ChunkError> {
        if total < 2 {
            return Err(ChunkError::TooFewFrames(total));
        }
        // Every frame but the last carries at least one byte.
        if (total as usize - 1) > max_bytes {
            return Err(ChunkError::TooLarge { limit: max_bytes });
        }
        Ok(Reassembler {
            transfer: transfer.into(),
            total,
            frames: vec![None; total as usize],
            received: 0,
            bytes: 0,
            max_bytes,
        })
    }

    pub fn transfer(&self) -> &str {
        &self.transfer
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Adds a frame. Returns whether all frames are now present.
    pub fn push(
        &mut self,
        transfer: &str,
        header: ChunkHeader,
        data: &[u8],
    ) -> Result<bool, ChunkError> {
        if transfer != self.transfer {
            return Err(ChunkError::WrongTransfer {
                expected: self.transfer.clone(),
                found: transfer.to_string(),
            });
        }
        if header.total != self.total {
            return Err(ChunkError::TotalMismatch {
                expected: self.total,
                found: header.total,
            });
        }
        let slot = &mut self.frames[header.index as usize];
        if slot.is_some() {
            return Err(ChunkError::Duplicate {
                index: header.index,
            });
        }
        self.bytes += data.len();
        if self.bytes > self.max_bytes {
            return Err(ChunkError::TooLarge {
                limit: self.max_bytes,
            });
        }
        *slot = Some(data.to_vec());
        self.received += 1;
        Ok(self.is_complete())
    }

    pub fn is_complete(&self) -> bool {
        self.received == self.total
    }

    /// The body, or [`ChunkError::Gap`] naming the missing frames.
    pub fn finish(self) -> Result<Vec<u8>, ChunkError> {
        if !self.is_complete() {
            let first = self.frames.iter().position(Option::is_none).unwrap_or(0) as u32;
            return Err(ChunkError::Gap {
                missing: self.total - self.received,
                total: self.total,
                first,
            });
        }
        let mut body = Vec::with_capacity(self.bytes);
        for frame in self.frames.into_iter().flatten() {
            body.extend_from_slice(&frame);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(index: u32, total: u32) -> ChunkHeader {
        ChunkHeader { index, total }
    }

    #[test]
    fn header_parses_and_prints() {
        let h: ChunkHeader = "3/7".parse().unwrap();
        assert_eq!(h, header(3, 7));
        assert_eq!(h.to_string(), "3/7");
        for bad in ["", "3", "7/3", "3/3", "0/0", "a/2", "-1/2", "1/2/3"] {
            assert!(bad.parse::<ChunkHeader>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_and_reassemble_in_any_order() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let frames = split(&body, 3000);
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.len() <= 3000));
        let mut r = Reassembler::new("t", 4, 1 << 20).unwrap();
        for &i in &[2u32, 0, 3] {
            assert!(!r.push("t", header(i, 4), frames[i as usize]).unwrap());
        }
        assert!(r.push("t", header(1, 4), frames[1]).unwrap());
        assert_eq!(r.finish().unwrap(), body);
        assert_eq!(split(b"", 10), vec![b"" as &[u8]]);
    }

    #[test]
    fn rejects_gaps_duplicates_and_strangers() {
        let mut r = Reassembler::new("t", 3, 100).unwrap();
        r.push("t", header(0, 3), b"ab").unwrap();
        assert_eq!(
            r.push("t", header(0, 3), b"ab").unwrap_err(),
            ChunkError::Duplicate { index: 0 }
        );
        assert!(matches!(
            r.push("u", header(1, 3), b"cd").unwrap_err(),
            ChunkError::WrongTransfer { .. }
        ));
        assert_eq!(
            r.push("t", header(1, 4), b"cd").unwrap_err(),
            ChunkError::TotalMismatch {
                expected: 3,
                found: 4
            }
        );
        r.push("t", header(2, 3), b"ef").unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            ChunkError::Gap {
                missing: 1,
                total: 3,
                first: 1
            }
        );
    }

    #[test]
    fn enforces_the_transfer_limit() {
        let mut r = Reassembler::new("t", 2, 5).unwrap();
        r.push("t", header(0, 2), b"abc").unwrap();
        assert_eq!(
            r.push("t", header(1, 2), b"def").unwrap_err(),
            ChunkError::TooLarge { limit: 5 }
        );
        assert!(Reassembler::new("t", 1, 5).is_err());
        assert!(Reassembler::new("t", 1000, 5).is_err());
    }
}
