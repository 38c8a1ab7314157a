//! [`TokenizerClient`]: typed calls to the tokenizer service over any [`Bus`].

use std::time::Duration;

use v4_bus::{Bus, CallError};
use v4_protocol::subject::tokenizer as subjects;
use v4_protocol::tokenizer::{
    CountTokensReply, CountTokensRequest, DecodeClose, DecodeClosed, DecodeDeltas, DecodeFeed,
    DecodeIdsReply, DecodeIdsRequest, DecodeOpen, DecodeOpened, EncodeChatReply, EncodeChatRequest,
    EncodeTextReply, EncodeTextRequest, InfoRequest, TokenizerInfo,
};

/// Default time to wait for a reply (per message of a chunked transfer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Typed client of the tokenizer service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenizerClient {
    bus: Bus,
    timeout: Duration,
}

impl TokenizerClient {
    pub fn new(bus: Bus) -> TokenizerClient {
        TokenizerClient {
            bus,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> TokenizerClient {
        self.timeout = timeout;
        self
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    async fn call<Req: serde::Serialize, Rep: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
        req: &Req,
    ) -> Result<Rep, CallError> {
        self.bus.request_json(subject, req, self.timeout).await
    }

    /// The capability handshake of one instance.
    pub async fn info(&self) -> Result<TokenizerInfo, CallError> {
        self.call(subjects::INFO, &InfoRequest {}).await
    }

    pub async fn encode_chat(&self, req: &EncodeChatRequest) -> Result<EncodeChatReply, CallError> {
        self.call(subjects::ENCODE_CHAT, req).await
    }

    pub async fn count_tokens(
        &self,
        req: &CountTokensRequest,
    ) -> Result<CountTokensReply, CallError> {
        self.call(subjects::COUNT_TOKENS, req).await
    }

    pub async fn encode_text(&self, text: &str) -> Result<EncodeTextReply, CallError> {
        let req = EncodeTextRequest {
            text: text.to_string(),
        };
        self.call(subjects::ENCODE_TEXT, &req).await
    }

    pub async fn decode_ids(
        &self,
        ids: &[u32],
        skip_special_tokens: bool,
    ) -> Result<DecodeIdsReply, CallError> {
        let req = DecodeIdsRequest {
            token_ids: ids.into(),
            skip_special_tokens,
        };
        self.call(subjects::DECODE_IDS, &req).await
    }

    /// Opens a streaming decode session on one instance.
    pub async fn open_decode(&self, req: &DecodeOpen) -> Result<DecodeSession, CallError> {
        let opened: DecodeOpened = self.call(subjects::DECODE_OPEN, req).await?;
        Ok(DecodeSession {
            client: self.clone(),
            opened,
            next_seq: 0,
        })
    }

    /// Sends one raw feed to `feed_subject` (normally through [`DecodeSession::feed`]).
    pub async fn feed(
        &self,
        feed_subject: &str,
        feed: &DecodeFeed,
    ) -> Result<DecodeDeltas, CallError> {
        self.call(feed_subject, feed).await
    }

    /// Closes a session at `close_subject` (normally through [`DecodeSession::close`]).
    pub async fn close(
        &self,
        close_subject: &str,
        session: &str,
    ) -> Result<DecodeClosed, CallError> {
        let req = DecodeClose {
            session: session.to_string(),
        };
        self.call(close_subject, &req).await
    }
}

/// An open decode session: feeds go to the instance that opened it, numbered in order. A
/// failed feed can be retried (it is sent again with the same `seq`).
#[derive(Debug)]
pub struct DecodeSession {
    client: TokenizerClient,
    opened: DecodeOpened,
    next_seq: u64,
}

impl DecodeSession {
    pub fn id(&self) -> &str {
        &self.opened.session
    }

    pub fn opened(&self) -> &DecodeOpened {
        &self.opened
    }

    async fn send(&mut self, ids: &[u32], finished: bool) -> Result<DecodeDeltas, CallError> {
        let feed = DecodeFeed {
            session: self.opened.session.clone(),
            seq: self.next_seq,
            token_ids: ids.into(),
            finished,
        };
        let deltas = self.client.feed(&self.opened.feed_subject, &feed).await?;
        self.next_seq += 1;
        Ok(deltas)
    }

    /// Feeds the next output ids.
    pub async fn feed(&mut self, ids: &[u32]) -> Result<DecodeDeltas, CallError> {
        self.send(ids, false).await
    }

    /// Feeds the last ids (possibly none), flushes, and ends the session.
    pub async fn finish(mut self, ids: &[u32]) -> Result<DecodeDeltas, CallError> {
        self.send(ids, true).await
    }

    /// Ends the session early; `Ok(false)` if it was already gone.
    pub async fn close(self) -> Result<bool, CallError> {
        let closed = self
            .client
            .close(&self.opened.close_subject, &self.opened.session)
            .await?;
        Ok(closed.found)
    }
}
