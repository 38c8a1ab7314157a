//! The in-process bus: NATS core semantics inside one process (the all-in-one binary, tests).
//!
//! What it honours, as NATS does: subjects with `*`/`>` wildcards; every plain subscription
//! gets a copy of each matching message, each queue group once (to one member chosen at
//! random);
//! a request with no matching subscription fails at once with "no responders"; a slow
//! subscriber whose buffer is full loses messages (the publisher never blocks); unsubscribing
//! stops delivery but buffered messages can still be read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::message::Message;

/// Messages buffered per subscription before new ones are dropped (NATS: slow consumer).
const SUBSCRIPTION_BUFFER: usize = 65_536;

struct Entry {
    id: u64,
    pattern: Vec<String>,
    queue: Option<String>,
    tx: mpsc::Sender<Message>,
}

struct Registry {
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    /// xorshift64* state for picking queue-group members.
    rng: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        let seed = u64::from_str_radix(&crate::unique_token()[..16], 16).unwrap_or(1);
        Registry {
            entries: Mutex::default(),
            next_id: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1),
        }
    }
}

impl Registry {
    /// A pseudo-random index below `n` (n > 0).
    fn pick(&self, n: usize) -> usize {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock leaves the list consistent (every operation is a
        // single push/retain/iteration), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cloneable handle to one in-process bus; clones share the subscriptions.
#[derive(Clone, Default)]
pub struct InProcBus {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for InProcBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcBus")
            .field("subscriptions", &self.registry.lock().len())
            .finish()
    }
}

impl InProcBus {
    pub fn new() -> InProcBus {
        InProcBus::default()
    }

    /// Registers a subscription (pattern already validated).
    pub(crate) fn subscribe(&self, pattern: &str, queue: Option<&str>) -> InProcSubscriber {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry.lock().push(Entry {
            id,
            pattern: pattern.split('.').map(String::from).collect(),
            queue: queue.map(String::from),
            tx,
        });
        InProcSubscriber {
            id,
            rx,
            registry: Arc::downgrade(&self.registry),
        }
    }

    /// Delivers `msg` (subject already validated) and returns to how many subscriptions it
    /// was addressed (0 means no interest: "no responders" for a request).
    pub(crate) fn publish(&self, msg: Message) -> usize {
        let entries = self.registry.lock();
        let mut plain = Vec::new();
        let mut groups: HashMap<&str, Vec<&Entry>> = HashMap::new();
        for e in entries.iter() {
            if !crate::subject::matches(&e.pattern, &msg.subject) {
                continue;
            }
            match &e.queue {
                None => plain.push(e),
                Some(q) => groups.entry(q.as_str()).or_default().push(e),
            }
        }
        let chosen = groups
            .values()
            .map(|members| members[self.registry.pick(members.len())]);
        let targets: Vec<&Entry> = plain.into_iter().chain(chosen).collect();
        for e in &targets {
            // Full buffer: dropped, like a NATS slow consumer. Closed: being unsubscribed.
            let _ = e.tx.try_send(msg.clone());
        }
        targets.len()
    }

    /// Number of live subscriptions (diagnostics, tests).
    pub fn subscription_count(&self) -> usize {
        self.registry.lock().len()
    }
}

/// The receiving end of an in-process subscription; unsubscribes when dropped.
pub(crate) struct InProcSubscriber {
    id: u64,
    rx: mpsc::Receiver<Message>,
    registry: std::sync::Weak<Registry>,
}

impl InProcSubscriber {
    /// Stops delivery; messages already buffered can still be received.
    pub(crate) fn unsubscribe(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.lock().retain(|e| e.id != self.id);
        }
    }

    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for InProcSubscriber {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}
