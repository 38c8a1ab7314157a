//! Errors of the bus ([`BusError`]) and of typed calls over it ([`CallError`]).

use std::time::Duration;

use thiserror::Error;
use v4_protocol::chunk::ChunkError;
use v4_protocol::{ErrorKind, PayloadTooLarge, ServiceError};

/// A failure of the transport itself (the same variants for NATS and in process).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// The message is over the size budget (checked before it is sent).
    #[error(transparent)]
    PayloadTooLarge(#[from] PayloadTooLarge),
    /// Nobody is subscribed to the request subject.
    #[error("no responders on {subject}")]
    NoResponders { subject: String },
    /// No reply within the timeout.
    #[error("request to {subject} timed out after {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        subject: String,
        reason: &'static str,
    },
    #[error("invalid queue group {group:?}")]
    InvalidQueueGroup { group: String },
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    /// [`crate::Bus::respond`] on a message that was published without a reply subject.
    #[error("message on {subject} has no reply subject")]
    NoReplySubject { subject: String },
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// The connection (or in-process bus) is gone.
    #[error("bus connection closed")]
    Closed,
    /// Any other NATS client error.
    #[error("NATS: {0}")]
    Nats(String),
}

impl BusError {
    /// The service-error kind a caller reports for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            BusError::NoResponders { .. } | BusError::Closed | BusError::Connect { .. } => {
                ErrorKind::Unavailable
            }
            BusError::Timeout { .. } => ErrorKind::Timeout,
            BusError::InvalidSubject { .. }
            | BusError::InvalidQueueGroup { .. }
            | BusError::InvalidHeader { .. }
            | BusError::NoReplySubject { .. } => ErrorKind::BadRequest,
            BusError::Nats(_) => ErrorKind::Internal,
        }
    }
}

/// A failed typed call ([`crate::Bus::request_json`]): the transport failed, the service
/// answered with an error, or the exchange itself was malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The service's typed error reply.
    #[error("service error: {0}")]
    Service(#[from] ServiceError),
    /// The request could not be serialized.
    #[error("cannot encode request for {subject}: {message}")]
    Encode { subject: String, message: String },
    /// The reply is not what the protocol says it should be.
    #[error("bad reply from {subject}: {message}")]
    BadReply { subject: String, message: String },
    /// A chunked reply could not be reassembled.
    #[error("chunked transfer from {subject}: {source}")]
    Transfer { subject: String, source: ChunkError },
}

impl CallError {
    /// The service's error reply, if that is what this is.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            CallError::Service(e) => Some(e),
            _ => None,
        }
    }

    /// The size error, whether it was raised here or by the service.
    pub fn is_payload_too_large(&self) -> bool {
        self.kind() == ErrorKind::PayloadTooLarge
    }

    /// One kind for every failure, for mapping to HTTP.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::Bus(e) => e.kind(),
            CallError::Service(e) => e.kind,
            CallError::Encode { .. } => ErrorKind::BadRequest,
            CallError::BadReply { .. } | CallError::Transfer { .. } => ErrorKind::Internal,
        }
    }
}
