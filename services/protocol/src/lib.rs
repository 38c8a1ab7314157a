//! Wire types and NATS subjects of the DeepSeek-V4 serving mesh: the one place where message
//! shapes and subject names are defined. Every service (and the all-in-one binary, which runs
//! the same services over an in-process bus) speaks exactly these types.
//!
//! # Subjects
//!
//! Subjects are versioned: `v4.v<PROTOCOL_VERSION>.<service>.<operation>` (today `v4.v1.…`,
//! see [`subject`]). A breaking change to a message bumps the version, so old and new services
//! can share one NATS account while a deployment rolls. Request subjects are served by a queue
//! group per service ([`subject::tokenizer::QUEUE_GROUP`]) so that instances share the load;
//! state that lives on one instance (a streaming decode session) is reached through an
//! instance-specific subject that the instance hands out ([`subject::tokenizer::session_feed`]).
//! A deployment may put the whole mesh under a namespace prefix (`<ns>.v4.v1.…`, v4-bus
//! `Bus::with_namespace`) so that several stacks or test runs share one NATS server.
//!
//! | subject | request → reply | served by |
//! |---|---|---|
//! | `v4.v1.tokenizer.info` | [`tokenizer::InfoRequest`] → [`tokenizer::TokenizerInfo`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.encode.chat` | [`tokenizer::EncodeChatRequest`] → [`tokenizer::EncodeChatReply`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.encode.text` | [`tokenizer::EncodeTextRequest`] → [`tokenizer::EncodeTextReply`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.count` | [`tokenizer::CountTokensRequest`] → [`tokenizer::CountTokensReply`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.decode.ids` | [`tokenizer::DecodeIdsRequest`] → [`tokenizer::DecodeIdsReply`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.decode.open` | [`tokenizer::DecodeOpen`] → [`tokenizer::DecodeOpened`] | tokenizer (queue group) |
//! | `v4.v1.tokenizer.session.<instance>.feed` | [`tokenizer::DecodeFeed`] → [`tokenizer::DecodeDeltas`] | the instance that opened the session |
//! | `v4.v1.tokenizer.session.<instance>.close` | [`tokenizer::DecodeClose`] → [`tokenizer::DecodeClosed`] | the instance that opened the session |
//! | `v4.v1.scheduler.generate` | [`generate::GenerateRequest`] → [`generate::GenerateAccepted`] | scheduler (queue group) |
//! | `v4.v1.scheduler.models` | [`generate::ModelsRequest`] → [`generate::ModelsReply`] | scheduler (queue group) |
//! | `v4.v1.worker.<instance>.generate` | [`generate::GenerateRequest`] → [`generate::GenerateAccepted`] | that decode worker |
//! | `v4.v1.worker.<instance>.prefill` | [`generate::PrefillRequest`] → [`generate::GenerateAccepted`] | that prefill worker |
//! | `v4.v1.worker.<instance>.handoff` | [`generate::KvHandoff`] → [`generate::GenerateAccepted`] | that decode worker |
//! | `v4.v1.worker.cancel` | [`generate::CancelGeneration`] (publish) | every worker |
//! | `v4.v1.worker.heartbeat` | [`generate::WorkerHeartbeat`] (publish) | workers → scheduler, gateway |
//! | *caller's inbox* | [`generate::GenerationEvent`] stream (publish) | worker → gateway |
//!
//! # Messages
//!
//! Messages are JSON objects (serde). Evolution is additive: a field added later is an
//! `Option` or has a `#[serde(default)]`, and readers ignore fields they do not know, so a
//! newer sender never breaks an older reader of the same protocol version. No message uses an
//! internally tagged or untagged enum (those break under serde_json's `arbitrary_precision`,
//! which another crate of the workspace may switch on).
//!
//! A failed request is answered with a [`ServiceError`] (`{"kind", "message", "param"?,
//! "code"?}`) and the header `V4-Status: error` ([`chunk::STATUS_HEADER`]), never with a
//! timeout.
//!
//! # Size budget
//!
//! NATS refuses messages over the server's `max_payload` (1 MiB by default; headers count).
//! [`SizeBudget`] is the per-message budget: the payload may use `max_payload` minus a fixed
//! header room ([`HEADER_ROOM`]), and anything larger is the typed [`PayloadTooLarge`] error
//! before it reaches the wire — never a timeout.
//!
//! # Long token-id lists and long prompts
//!
//! A 1M-token prompt is 4 MB of ids as little-endian `u32` and ~4 MB of text. Two mechanisms
//! keep that on NATS:
//!
//! 1. **Compact ids.** Token-id lists are [`TokenIds`]: inside the JSON they travel as one
//!    base64 string of the little-endian `u32`s (5.33 bytes per token instead of up to 7 for a
//!    JSON number list, and no per-number parsing). Readers also accept a plain JSON array of
//!    numbers, for hand-written requests.
//! 2. **Chunked transfer.** A JSON body larger than the per-message budget is split into
//!    numbered frames ([`chunk`]): frame `i` of `n` carries the header `V4-Chunk: i/n` and a
//!    transfer id. The first request frame goes to the service subject (so the queue group
//!    picks an instance); the instance answers with a private upload subject (`V4-Upload`) and
//!    the remaining frames are sent there as acknowledged requests, so they all reach that
//!    instance. A reply larger than the budget comes back the same way: the first frame plus a
//!    private download subject (`V4-Download`) from which the caller pulls the other frames.
//!    The receiver reassembles with [`chunk::Reassembler`], which rejects gaps, duplicates,
//!    frames of another transfer and transfers over the total limit
//!    ([`DEFAULT_MAX_TRANSFER`]). `v4-bus` implements this under `request_json`/`serve_json`,
//!    so services see whole messages.
//!
//! So a 1M-token prompt's ids (5.3 MB as base64) take 6 frames of ≤1 MiB each.

pub mod budget;
pub mod chunk;
pub mod error;
pub mod generate;
pub mod ids;
pub mod subject;
pub mod tokenizer;
pub mod usage;

pub use budget::{
    DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_TRANSFER, HEADER_ROOM, PayloadTooLarge, SizeBudget,
};
pub use error::{ErrorKind, ServiceError};
pub use ids::TokenIds;
pub use subject::{PROTOCOL_VERSION, Subject, SubjectError};
