//! Every way a request fails, and the one place that turns a failure into an HTTP answer:
//! status, OpenAI or Anthropic error body, `Retry-After`, and the metric label.
//!
//! | failure | status | OpenAI `error.type` | Anthropic `error.type` |
//! |---|---|---|---|
//! | malformed JSON, invalid UTF-8, bad messages, unknown/retired model, context too long | 400 | `invalid_request_error` | `invalid_request_error` |
//! | a field of the wrong type or out of range (`param` names it) | 422 (Anthropic: 400) | `invalid_request_error` | `invalid_request_error` |
//! | missing or unknown API key | 401 | `authentication_error` | `authentication_error` |
//! | unknown path | 404 | `not_found_error` | `not_found_error` |
//! | wrong method | 405 | `invalid_request_error` | `invalid_request_error` |
//! | body over the limit | 413 | `invalid_request_error` | `request_too_large` |
//! | content type not JSON | 415 | `invalid_request_error` | `invalid_request_error` |
//! | no capacity (`overloaded`), model not served now, a service not running | 503 + `Retry-After` | `server_error` | `overloaded_error` |
//! | a service timed out | 504 | `api_error` | `api_error` |
//! | a service failed unexpectedly | 500 | `api_error` | `api_error` |
//!
//! A failure after a stream started is sent inside the stream instead
//! ([`Failure::stream_body`]): OpenAI `data: {"error": …}` then `data: [DONE]`, Anthropic
//! `event: error`. A generation that fails after it was accepted (worker error, worker gone,
//! events lost) ends an OpenAI answer with `finish_reason: "insufficient_system_resource"`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::Value;
use v4_bus::{BusError, CallError};
use v4_protocol::ErrorKind;
pub use v4_tokenizer::chat::validate::{ApiError, ApiErrorKind};

/// Which API's error shape a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Bad input, as the API reports it (status inside: 400 or 422).
    Invalid(ApiError),
    /// Missing or unknown API key.
    Unauthorized(String),
    BodyTooLarge {
        limit: usize,
    },
    UnsupportedMediaType(String),
    NotFound(String),
    MethodNotAllowed(String),
    /// No capacity right now; retry later (503 + `Retry-After`).
    Overloaded(String),
    /// A service did not answer in time.
    Timeout(String),
    /// A generation failed after it was accepted.
    Generation(String),
    /// A bug or an unexpected failure; the detail is logged, not sent.
    Internal(String),
}

impl Failure {
    /// A 422 for a request field of the wrong type or out of range.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Failure {
        let mut e = ApiError::invalid_request("invalid_parameter", param, message);
        e.status = 422;
        Failure::Invalid(e)
    }

    /// A 400 with a code and (optionally) the field at fault.
    pub fn invalid(code: &str, param: Option<&str>, message: impl Into<String>) -> Failure {
        let mut e = ApiError::invalid_request(code, param.unwrap_or(""), message);
        e.param = param.map(String::from);
        Failure::Invalid(e)
    }

    /// The failure of a call to a service (`what`: "tokenizer", "scheduler").
    pub fn from_call(what: &str, e: &CallError) -> Failure {
        if let CallError::Service(se) = e {
            return match se.kind {
                ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::PayloadTooLarge => {
                    let mut api = ApiError::from_service_error(se);
                    if se.kind == ErrorKind::NotFound {
                        api.kind = ApiErrorKind::InvalidRequest;
                        api.status = 400;
                    }
                    Failure::Invalid(api)
                }
                ErrorKind::Overloaded | ErrorKind::Unavailable => {
                    Failure::Overloaded(se.message.clone())
                }
                ErrorKind::Timeout => Failure::Timeout(format!("the {what} timed out")),
                _ => Failure::Internal(format!("{what}: {e}")),
            };
        }
        match e {
            CallError::Bus(BusError::NoResponders { .. } | BusError::Closed) => {
                Failure::Overloaded(format!("the {what} service is not available"))
            }
            CallError::Bus(BusError::Timeout { .. }) => {
                Failure::Timeout(format!("the {what} service did not answer in time"))
            }
            CallError::Bus(BusError::PayloadTooLarge(p)) => Failure::Invalid(ApiError::new(
                ApiErrorKind::RequestTooLarge,
                format!("the request is too large for the {what} service: {p}"),
            )),
            other => Failure::Internal(format!("{what}: {other}")),
        }
    }

    /// The error as the API reports it.
    pub fn api_error(&self) -> ApiError {
        let new = ApiError::new;
        match self {
            Failure::Invalid(e) => e.clone(),
            Failure::Unauthorized(m) => new(ApiErrorKind::Authentication, m.clone()),
            Failure::BodyTooLarge { limit } => new(
                ApiErrorKind::RequestTooLarge,
                format!("the request body is larger than the limit of {limit} bytes"),
            ),
            Failure::UnsupportedMediaType(m) => ApiError {
                status: 415,
                ..new(ApiErrorKind::InvalidRequest, m.clone())
            },
            Failure::NotFound(m) => new(ApiErrorKind::NotFound, m.clone()),
            Failure::MethodNotAllowed(m) => ApiError {
                status: 405,
                ..new(ApiErrorKind::InvalidRequest, m.clone())
            },
            Failure::Overloaded(m) => new(ApiErrorKind::Overloaded, m.clone()),
            Failure::Timeout(m) => ApiError {
                status: 504,
                ..new(ApiErrorKind::Internal, m.clone())
            },
            Failure::Generation(m) => new(ApiErrorKind::Internal, m.clone()),
            Failure::Internal(_) => new(
                ApiErrorKind::Internal,
                "the server had an error while processing your request; please retry".to_string(),
            ),
        }
    }

    /// Whether the answer carries `Retry-After`.
    pub fn retry_after(&self) -> bool {
        matches!(self, Failure::Overloaded(_))
    }

    /// The status for `flavor` (Anthropic has no 422: it answers 400).
    pub fn status(&self, flavor: Flavor) -> u16 {
        let s = self.api_error().status;
        match (flavor, s) {
            (Flavor::Anthropic, 422) => 400,
            _ => s,
        }
    }

    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Invalid(_) => "invalid_request",
            Failure::Unauthorized(_) => "unauthorized",
            Failure::BodyTooLarge { .. } => "body_too_large",
            Failure::UnsupportedMediaType(_) => "unsupported_media_type",
            Failure::NotFound(_) => "not_found",
            Failure::MethodNotAllowed(_) => "method_not_allowed",
            Failure::Overloaded(_) => "overloaded",
            Failure::Timeout(_) => "timeout",
            Failure::Generation(_) => "generation_failed",
            Failure::Internal(_) => "internal",
        }
    }

    /// The JSON error body in `flavor`'s shape.
    pub fn body(&self, flavor: Flavor) -> Value {
        let e = self.api_error();
        match flavor {
            Flavor::OpenAi => e.to_openai_body(),
            Flavor::Anthropic => e.to_anthropic_body(),
        }
    }

    /// The complete HTTP answer. Internal details go to the log, not to the client.
    pub fn response(&self, flavor: Flavor, retry_after_secs: u64) -> HttpResponse {
        match self {
            Failure::Internal(detail) => tracing::error!(detail = %detail, "internal error"),
            Failure::Timeout(m) | Failure::Overloaded(m) | Failure::Generation(m) => {
                tracing::warn!(kind = self.label(), "{m}")
            }
            _ => tracing::debug!(kind = self.label(), "request refused"),
        }
        let status =
            StatusCode::from_u16(self.status(flavor)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut b = HttpResponse::build(status);
        if self.retry_after() {
            b.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        b.content_type("application/json")
            .body(self.body(flavor).to_string())
    }

    /// The error body sent inside an already started stream.
    pub fn stream_body(&self, flavor: Flavor) -> Value {
        self.body(flavor)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.label(), self.api_error().message)
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot subscribe to worker heartbeats: {0}")]
    Bus(#[from] BusError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use v4_protocol::ServiceError;

    use super::*;

    #[test]
    fn service_errors_map_to_api_errors() {
        let e = Failure::from_call(
            "scheduler",
            &CallError::Service(ServiceError::overloaded("busy")),
        );
        assert!(e.retry_after());
        assert_eq!(e.status(Flavor::OpenAi), 503);
        assert_eq!(e.body(Flavor::OpenAi)["error"]["type"], "server_error");
        assert_eq!(
            e.body(Flavor::Anthropic)["error"]["type"],
            "overloaded_error"
        );
        let e = Failure::from_call(
            "tokenizer",
            &CallError::Service(ServiceError::bad_request("bad").with_param("messages")),
        );
        assert_eq!(e.status(Flavor::OpenAi), 400);
        assert_eq!(e.body(Flavor::OpenAi)["error"]["param"], "messages");
        let e = Failure::from_call(
            "scheduler",
            &CallError::Bus(BusError::NoResponders {
                subject: "x".into(),
            }),
        );
        assert_eq!(e.status(Flavor::OpenAi), 503);
        let e = Failure::Internal("secret detail".into());
        assert!(!e.body(Flavor::OpenAi).to_string().contains("secret"));
    }

    #[test]
    fn param_errors_are_422_for_openai_and_400_for_anthropic() {
        let e = Failure::param("temperature", "temperature must be a number");
        assert_eq!(e.status(Flavor::OpenAi), 422);
        assert_eq!(e.status(Flavor::Anthropic), 400);
        let b = e.body(Flavor::OpenAi);
        assert_eq!(b["error"]["param"], "temperature");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        let b = e.body(Flavor::Anthropic);
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        let e = Failure::invalid("bad_json", None, "x");
        assert_eq!(e.body(Flavor::OpenAi)["error"]["param"], Value::Null);
    }
}
