//! Simple counters of the gateway (a Prometheus exporter comes later and reads the same).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Live counters, shared by every HTTP worker.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    in_flight: AtomicI64,
    streams_active: AtomicI64,
    generations: AtomicU64,
    cancellations: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// HTTP requests answered (any status).
    pub requests: u64,
    /// Requests whose handler is running (a stream counts until its headers are sent).
    pub in_flight: i64,
    /// SSE streams still sending.
    pub streams_active: i64,
    /// Generations accepted by the scheduler.
    pub generations: u64,
    /// Cancellations published (client gone, stop string, failure).
    pub cancellations: u64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            streams_active: self.streams_active.load(Ordering::Relaxed),
            generations: self.generations.load(Ordering::Relaxed),
            cancellations: self.cancellations.load(Ordering::Relaxed),
            by_status: self
                .by_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn answered(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    pub(crate) fn stream_started(&self) {
        self.streams_active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_ended(&self) {
        self.streams_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn generation_started(&self) {
        self.generations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cancelled(&self) {
        self.cancellations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements the in-flight count when dropped (also when the request future is dropped).
pub(crate) struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
