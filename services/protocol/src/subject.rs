//! Versioned subject names.
//!
//! Every subject of the mesh starts with [`PREFIX`] (`v4.v1`): the product, then the protocol
//! version. [`Subject`] builds and checks names; the per-service modules list the subjects and
//! queue groups.

use std::fmt;

use thiserror::Error;

/// The protocol version carried in every subject (`v4.v<N>.…`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The prefix of every subject of this protocol version.
pub const PREFIX: &str = "v4.v1";

/// A subject (or one token of it) that NATS would refuse or misroute.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid subject {subject:?}: {reason}")]
pub struct SubjectError {
    pub subject: String,
    pub reason: &'static str,
}

/// A subject name of this protocol version: `v4.v1.<rest>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// `v4.v1.` + the given tokens joined by `.`; each token must be a valid subject token
    /// ([`check_token`]).
    pub fn new(tokens: &[&str]) -> Result<Subject, SubjectError> {
        let mut s = String::from(PREFIX);
        for t in tokens {
            check_token(t)?;
            s.push('.');
            s.push_str(t);
        }
        Ok(Subject(s))
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks one subject token: non-empty, no `.`, no wildcard (`*`, `>`), no whitespace or
/// control characters.
pub fn check_token(token: &str) -> Result<(), SubjectError> {
    let bad = |reason| {
        Err(SubjectError {
            subject: token.to_string(),
            reason,
        })
    };
    if token.is_empty() {
        return bad("empty token");
    }
    if token.contains('.') {
        return bad("a token cannot contain '.'");
    }
    if token == "*" || token == ">" || token.contains(['*', '>']) {
        return bad("a token cannot contain a wildcard");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("a token cannot contain whitespace or control characters");
    }
    Ok(())
}

/// Turns any name (an instance or host name) into a valid subject token: characters that are
/// not ASCII alphanumerics, `-` or `_` become `_`; an empty name becomes `_`.
pub fn sanitize_token(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".to_string() } else { s }
}

/// Subjects of the tokenizer service.
pub mod tokenizer {
    use super::{Subject, SubjectError};

    /// Queue group of all tokenizer instances: each request goes to one of them.
    pub const QUEUE_GROUP: &str = "v4-tokenizer";

    /// Capability handshake: tokenizer hash, vocabulary, instance.
    pub const INFO: &str = "v4.v1.tokenizer.info";
    /// Chat messages → prompt token ids.
    pub const ENCODE_CHAT: &str = "v4.v1.tokenizer.encode.chat";
    /// Raw text → token ids.
    pub const ENCODE_TEXT: &str = "v4.v1.tokenizer.encode.text";
    /// Token count of a text or a chat prompt.
    pub const COUNT_TOKENS: &str = "v4.v1.tokenizer.count";
    /// Token ids → text.
    pub const DECODE_IDS: &str = "v4.v1.tokenizer.decode.ids";
    /// Opens a streaming decode session (answered by one instance, which keeps the session).
    pub const DECODE_OPEN: &str = "v4.v1.tokenizer.decode.open";
    /// Every tokenizer subject (for monitoring).
    pub const ALL: &str = "v4.v1.tokenizer.>";

    /// `v4.v1.tokenizer.session.<instance>.feed`: where the sessions of one instance are fed.
    pub fn session_feed(instance: &str) -> Result<Subject, SubjectError> {
        Subject::new(&["tokenizer", "session", instance, "feed"])
    }

    /// `v4.v1.tokenizer.session.<instance>.close`: where the sessions of one instance are closed.
    pub fn session_close(instance: &str) -> Result<Subject, SubjectError> {
        Subject::new(&["tokenizer", "session", instance, "close"])
    }

    /// `v4.v1.tokenizer.session.<instance>.*`: both session subjects of one instance.
    pub fn session_wildcard(instance: &str) -> Result<String, SubjectError> {
        super::check_token(instance)?;
        Ok(format!("{}.tokenizer.session.{instance}.*", super::PREFIX))
    }
}

/// Subjects of the scheduler.
pub mod scheduler {
    /// Queue group of all scheduler instances.
    pub const QUEUE_GROUP: &str = "v4-scheduler";
    /// [`crate::generate::GenerateRequest`] → [`crate::generate::GenerateAccepted`].
    pub const GENERATE: &str = "v4.v1.scheduler.generate";
    /// [`crate::generate::ModelsRequest`] → [`crate::generate::ModelsReply`].
    pub const MODELS: &str = "v4.v1.scheduler.models";
}

/// Subjects of the prefill and decode workers.
pub mod worker {
    use super::{Subject, SubjectError};

    /// [`crate::generate::WorkerHeartbeat`], published by every worker (plain subscribe).
    pub const HEARTBEAT: &str = "v4.v1.worker.heartbeat";
    /// [`crate::generate::CancelGeneration`], broadcast to every worker.
    pub const CANCEL: &str = "v4.v1.worker.cancel";

    /// `v4.v1.worker.<instance>.generate`: a [`crate::generate::GenerateRequest`] for this
    /// worker (sent by the scheduler).
    pub fn generate(instance: &str) -> Result<Subject, SubjectError> {
        Subject::new(&["worker", instance, "generate"])
    }

    /// `v4.v1.worker.<instance>.prefill`: a [`crate::generate::PrefillRequest`] for this
    /// prefill worker.
    pub fn prefill(instance: &str) -> Result<Subject, SubjectError> {
        Subject::new(&["worker", instance, "prefill"])
    }

    /// `v4.v1.worker.<instance>.handoff`: a [`crate::generate::KvHandoff`] for this decode
    /// worker.
    pub fn handoff(instance: &str) -> Result<Subject, SubjectError> {
        Subject::new(&["worker", instance, "handoff"])
    }
}

/// Usage metering.
pub mod usage {
    /// [`crate::usage::UsageEvent`]s are published here (one per request, message id = the
    /// request id).
    pub const SUBJECT: &str = "v4.v1.usage.events";
    /// The JetStream stream that keeps them until the ledger writer has applied them.
    pub const STREAM: &str = "V4_USAGE";
    /// The ledger writers' durable consumer.
    pub const CONSUMER: &str = "ledger-writer";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_the_version_prefix() {
        assert_eq!(
            Subject::new(&["tokenizer", "info"]).unwrap().as_str(),
            tokenizer::INFO
        );
        for s in [
            tokenizer::INFO,
            tokenizer::ENCODE_CHAT,
            tokenizer::ENCODE_TEXT,
            tokenizer::COUNT_TOKENS,
            tokenizer::DECODE_IDS,
            tokenizer::DECODE_OPEN,
        ] {
            assert!(s.starts_with("v4.v1.tokenizer."), "{s}");
        }
        assert_eq!(PREFIX, format!("v4.v{PROTOCOL_VERSION}"));
        assert_eq!(
            tokenizer::session_feed("tok-1").unwrap().as_str(),
            "v4.v1.tokenizer.session.tok-1.feed"
        );
        assert_eq!(
            worker::generate("w-1").unwrap().as_str(),
            "v4.v1.worker.w-1.generate"
        );
        assert!(scheduler::GENERATE.starts_with(PREFIX) && worker::CANCEL.starts_with(PREFIX));
        assert_eq!(
            tokenizer::session_wildcard("tok-1").unwrap(),
            "v4.v1.tokenizer.session.tok-1.*"
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        for t in ["", "a.b", "*", ">", "a b", "x>", "\n"] {
            assert!(check_token(t).is_err(), "{t:?}");
            assert!(Subject::new(&["tokenizer", t]).is_err(), "{t:?}");
        }
        assert_eq!(sanitize_token("host.local:1 x"), "host_local_1_x");
        assert_eq!(sanitize_token(""), "_");
        assert!(check_token(&sanitize_token("a.*>b")).is_ok());
    }
}
