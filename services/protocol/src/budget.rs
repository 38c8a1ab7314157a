//! The per-message size budget.
//!
//! NATS counts headers and payload against the server's `max_payload` (1 MiB unless the server
//! is configured otherwise) and refuses bigger messages. A budget reserves [`HEADER_ROOM`]
//! bytes for headers (tracing, chunk and status headers are far smaller) and gives the rest to
//! the payload, so that a payload that passes [`SizeBudget::check`] is always publishable.

use serde::Serialize;
use thiserror::Error;

/// NATS' default `max_payload`: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Bytes of every message reserved for headers.
pub const HEADER_ROOM: usize = 8 * 1024;

/// Default limit of one chunked transfer (the reassembled JSON body): 64 MiB, room for a
/// 1M-token prompt's text and its ids many times over.
pub const DEFAULT_MAX_TRANSFER: usize = 64 * 1024 * 1024;

/// A message (or a chunked transfer) larger than allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("payload of {bytes} bytes for {subject} exceeds the limit of {limit} bytes")]
pub struct PayloadTooLarge {
    pub subject: String,
    pub bytes: usize,
    pub limit: usize,
}

/// Size limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBudget {
    /// The server's `max_payload` (headers + payload).
    pub max_payload: usize,
    /// Bytes reserved for headers.
    pub header_room: usize,
    /// Largest body a chunked transfer may carry.
    pub max_transfer: usize,
}

impl Default for SizeBudget {
    fn default() -> Self {
        SizeBudget {
            max_payload: DEFAULT_MAX_PAYLOAD,
            header_room: HEADER_ROOM,
            max_transfer: DEFAULT_MAX_TRANSFER,
        }
    }
}

impl SizeBudget {
    /// A budget for a server with the given `max_payload`, default header room and transfer
    /// limit.
    pub fn with_max_payload(max_payload: usize) -> SizeBudget {
        SizeBudget {
            max_payload,
            ..SizeBudget::default()
        }
    }

    /// Largest payload of one message: `max_payload - header_room` (at least 1).
    pub fn payload_limit(&self) -> usize {
        self.max_payload.saturating_sub(self.header_room).max(1)
    }

    /// Checks one message: the payload within [`SizeBudget::payload_limit`] and the headers
    /// within the header room. `header_bytes` is the headers' wire size (0 without headers).
    pub fn check(
        &self,
        subject: &str,
        payload_bytes: usize,
        header_bytes: usize,
    ) -> Result<(), PayloadTooLarge> {
        let limit = self.payload_limit();
        if payload_bytes > limit {
            return Err(PayloadTooLarge {
                subject: subject.to_string(),
                bytes: payload_bytes,
                limit,
            });
        }
        if header_bytes > self.header_room {
            return Err(PayloadTooLarge {
                subject: subject.to_string(),
                bytes: payload_bytes + header_bytes,
                limit: self.max_payload,
            });
        }
        Ok(())
    }

    /// Checks a whole body that may be chunked against [`SizeBudget::max_transfer`].
    pub fn check_transfer(&self, subject: &str, bytes: usize) -> Result<(), PayloadTooLarge> {
        if bytes > self.max_transfer {
            return Err(PayloadTooLarge {
                subject: subject.to_string(),
                bytes,
                limit: self.max_transfer,
            });
        }
        Ok(())
    }

    /// Number of frames a body of `bytes` takes (1 for an empty body).
    pub fn frames_for(&self, bytes: usize) -> usize {
        bytes.div_ceil(self.payload_limit()).max(1)
    }
}

/// Serializes `value` as JSON and checks it against one message's budget (no chunking).
pub fn to_json_checked<T: Serialize>(
    subject: &str,
    value: &T,
    budget: &SizeBudget,
) -> Result<Vec<u8>, JsonBudgetError> {
    let bytes = serde_json::to_vec(value).map_err(|e| JsonBudgetError::Encode(e.to_string()))?;
    budget.check(subject, bytes.len(), 0)?;
    Ok(bytes)
}

/// Why [`to_json_checked`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonBudgetError {
    #[error(transparent)]
    TooLarge(#[from] PayloadTooLarge),
    #[error("cannot serialize message: {0}")]
    Encode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_is_one_mib_minus_header_room() {
        let b = SizeBudget::default();
        assert_eq!(b.payload_limit(), 1024 * 1024 - HEADER_ROOM);
        assert!(b.check("s", b.payload_limit(), 100).is_ok());
        let err = b.check("s", b.payload_limit() + 1, 0).unwrap_err();
        assert_eq!(
            err,
            PayloadTooLarge {
                subject: "s".into(),
                bytes: b.payload_limit() + 1,
                limit: b.payload_limit()
            }
        );
        assert!(err.to_string().contains("exceeds the limit"));
        assert!(b.check("s", 10, HEADER_ROOM + 1).is_err());
    }

    #[test]
    fn frames_and_transfer_limit() {
        let b = SizeBudget {
            max_payload: 1000,
            header_room: 100,
            max_transfer: 5000,
        };
        assert_eq!(b.frames_for(0), 1);
        assert_eq!(b.frames_for(900), 1);
        assert_eq!(b.frames_for(901), 2);
        assert!(b.check_transfer("s", 5000).is_ok());
        assert_eq!(b.check_transfer("s", 5001).unwrap_err().limit, 5000);
        let big = "x".repeat(2000);
        assert!(matches!(
            to_json_checked("s", &big, &b),
            Err(JsonBudgetError::TooLarge(_))
        ));
        assert_eq!(to_json_checked("s", &"hi", &b).unwrap(), b"\"hi\"");
    }
}
