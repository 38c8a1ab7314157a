//! [`ServiceError`]: the typed error reply of every service.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure a [`ServiceError`] reports. Unknown kinds (from a newer peer) read as
/// [`ErrorKind::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or invalid; retrying it unchanged fails again.
    BadRequest,
    /// The addressed thing (a decode session) does not exist, or expired.
    NotFound,
    /// The request or its reply is over a size limit.
    PayloadTooLarge,
    /// The service is at capacity; retry later or elsewhere.
    Overloaded,
    /// The service is shutting down or a dependency is missing.
    Unavailable,
    /// The service gave up waiting (e.g. for the next frame of a chunked request).
    Timeout,
    /// A bug or an unexpected failure inside the service.
    Internal,
    /// A kind this build does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The wire name (`"bad_request"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// The HTTP status a gateway answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Overloaded => 529,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal | ErrorKind::Unknown => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request, as the reply body (with header `V4-Status: error`).
///
/// ```json
/// {"kind": "bad_request", "message": "messages[2]: unknown role \"robot\" …", "param": "messages[2].role"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// Written for the API client (the gateway may pass it on).
    pub message: String,
    /// The request field at fault (`messages[2].role`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A machine-readable code more specific than `kind`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Internal, message)
    }

    pub fn overloaded(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Overloaded, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unavailable, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ServiceError {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> ServiceError {
        self.code = Some(code.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_and_forward_compatibility() {
        let e = ServiceError::not_found("no session abc").with_param("session");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"not_found","message":"no session abc","param":"session"}"#
        );
        assert_eq!(serde_json::from_str::<ServiceError>(&json).unwrap(), e);
        let newer: ServiceError =
            serde_json::from_str(r#"{"kind":"quota_exceeded","message":"m","retry_after_ms":5}"#)
                .unwrap();
        assert_eq!(newer.kind, ErrorKind::Unknown);
        assert_eq!(newer.to_string(), "unknown: m");
        assert_eq!(ErrorKind::Overloaded.http_status(), 529);
    }
}
