//! Usage events through JetStream to the ledger, exactly once.
//!
//! * [`UsageStream::publish`] sends an event to the `V4_USAGE` stream with the request id as
//!   JetStream message id (a republish within the stream's duplicate window is dropped by the
//!   server) and waits for the stream's acknowledgement: once it returns, the event is durable.
//! * [`run_writer`] pulls batches from the durable consumer `ledger-writer`, applies each batch
//!   in one database transaction ([`Ledger::apply_usage`]: a request id is recorded at most
//!   once) and acknowledges the messages only after the commit. A writer that dies between
//!   commit and ack has its messages redelivered after `ack_wait`; they are duplicates and
//!   change nothing. While the database is unreachable nothing is acknowledged: the events
//!   wait in the stream and are applied when it is back.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use tokio::sync::watch;
use v4_bus::Bus;
use v4_protocol::subject::usage;
use v4_protocol::usage::UsageEvent;

use crate::error::LedgerError;
use crate::store::{Applied, Ledger};

/// The usage stream of one bus (namespace-aware: `<ns>_V4_USAGE` on `<ns>.v4.v1.usage.events`).
#[derive(Clone)]
pub struct UsageStream {
    js: jetstream::Context,
    subject: String,
    stream: String,
}

fn js_err(what: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Stream(format!("{what}: {e}"))
}

impl UsageStream {
    /// Opens (creating if needed) the stream on a NATS bus.
    pub async fn open(bus: &Bus) -> Result<UsageStream, LedgerError> {
        let client = bus.nats_client().ok_or_else(|| {
            LedgerError::Stream("usage events need NATS JetStream (this bus is in-process)".into())
        })?;
        let js = jetstream::new(client.clone());
        let subject = bus.wire_subject(usage::SUBJECT);
        let stream = match bus.namespace() {
            Some(ns) => format!("{}_{}", ns.replace(['.', '*', '>'], "_"), usage::STREAM),
            None => usage::STREAM.to_string(),
        };
        js.get_or_create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("creating the usage stream", e))?;
        Ok(UsageStream {
            js,
            subject,
            stream,
        })
    }

    /// Publishes one event and waits until the stream has stored it.
    pub async fn publish(&self, event: &UsageEvent) -> Result<(), LedgerError> {
        let payload = serde_json::to_vec(event).map_err(|e| js_err("encoding", e))?;
        let ack = self
            .js
            .send_publish(
                self.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(&event.request_id),
            )
            .await
            .map_err(|e| js_err("publishing a usage event", e))?;
        ack.await
            .map_err(|e| js_err("waiting for the stream's acknowledgement", e))?;
        Ok(())
    }

    /// Events stored but not yet acknowledged by a ledger writer (the ledger's lag).
    pub async fn pending(&self) -> Result<u64, LedgerError> {
        let mut c = self.consumer(Duration::from_secs(30)).await?;
        let info = c.info().await.map_err(|e| js_err("consumer info", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn consumer(
        &self,
        ack_wait: Duration,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, LedgerError> {
        let s = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| js_err("opening the usage stream", e))?;
        s.get_or_create_consumer(
            usage::CONSUMER,
            consumer::pull::Config {
                durable_name: Some(usage::CONSUMER.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| js_err("opening the ledger-writer consumer", e))
    }
}

/// Settings of a ledger writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Events per transaction at most.
    pub batch: usize,
    /// How long one fetch waits for events.
    pub fetch_wait: Duration,
    /// How long an unacknowledged event waits before redelivery (a writer that died).
    pub ack_wait: Duration,
    /// Pause after a failed transaction (database down) before the next try.
    pub retry_backoff: Duration,
    /// Fault injection for tests: after this many committed batches, stop without
    /// acknowledging the last one (what a crash between commit and ack looks like).
    pub crash_after_batches: Option<u64>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch: 1000,
            fetch_wait: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            crash_after_batches: None,
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub batches: u64,
    pub recorded: u64,
    pub duplicates: u64,
    /// Events whose key is unknown or that do not decode (acknowledged and logged).
    pub rejected: u64,
    pub failed_transactions: u64,
}

/// Applies usage events from `stream` to `ledger` until `stop` turns true.
pub async fn run_writer(
    stream: UsageStream,
    ledger: Ledger,
    config: WriterConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<WriterStats, LedgerError> {
    let consumer = stream.consumer(config.ack_wait).await?;
    let mut stats = WriterStats::default();
    while !*stop.borrow() {
        let fetched = consumer
            .fetch()
            .max_messages(config.batch.max(1))
            .expires(config.fetch_wait)
            .messages()
            .await;
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "fetching usage events failed; retrying");
                sleep_or_stop(config.retry_backoff, &mut stop).await;
                continue;
            }
        };
        let mut msgs = Vec::new();
        let mut events = Vec::new();
        while let Some(m) = messages.next().await {
            let Ok(m) = m else { continue };
            match serde_json::from_slice::<UsageEvent>(&m.payload) {
                Ok(e) => {
                    events.push(e);
                    msgs.push(m);
                }
                Err(e) => {
                    tracing::error!(error = %e, "dropping a malformed usage event");
                    stats.rejected += 1;
                    let _ = m.ack_with(AckKind::Term).await;
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        match ledger.apply_usage(&events).await {
            Ok(applied) => {
                stats.batches += 1;
                for (a, e) in applied.iter().zip(&events) {
                    match a {
                        Applied::Recorded { .. } => stats.recorded += 1,
                        Applied::Duplicate => stats.duplicates += 1,
                        Applied::UnknownKey => {
                            stats.rejected += 1;
                            tracing::error!(request_id = %e.request_id, key = %e.key_id,
                                "usage event of an unknown key: not billed");
                        }
                    }
                }
                if config.crash_after_batches == Some(stats.batches) {
                    return Ok(stats);
                }
                for m in &msgs {
                    if let Err(e) = m.ack().await {
                        // Redelivered later as a duplicate: harmless.
                        tracing::warn!(error = %e, "acknowledging a usage event failed");
                    }
                }
            }
            Err(e) => {
                stats.failed_transactions += 1;
                tracing::warn!(error = %e, events = events.len(),
                    "the ledger database refused a batch; the events stay in the stream");
                for m in &msgs {
                    let _ = m.ack_with(AckKind::Nak(Some(config.retry_backoff))).await;
                }
                sleep_or_stop(config.retry_backoff, &mut stop).await;
            }
        }
    }
    Ok(stats)
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}
