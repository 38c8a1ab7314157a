//! The worker registry actor: the scheduler's view of the decode workers, fed by heartbeats.
//!
//! A worker is live while its last heartbeat is younger than
//! [`WorkerHeartbeat::expires_after`]. Between heartbeats the registry counts the requests it
//! has sent to each worker (`assigned`), so a burst of requests spreads over the workers
//! instead of piling onto the one that looked idle in its last heartbeat.
//!
//! Workers serving one model id must run the same checkpoint: the first live worker's
//! `model_fingerprint` is the model's; a worker announcing another one is not chosen (and is
//! logged once).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use v4_protocol::PROTOCOL_VERSION;
use v4_protocol::generate::{ModelsReply, ServedModel, WorkerHeartbeat, WorkerRole};

struct Entry {
    hb: WorkerHeartbeat,
    seen: Instant,
    /// Requests sent since this heartbeat.
    assigned: u32,
    /// When this worker was first seen (the oldest live worker fixes the fingerprint).
    since: Instant,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.seen) < self.hb.expires_after()
    }

    fn load(&self) -> u32 {
        self.hb.running + self.hb.waiting + self.assigned
    }

    fn has_room(&self) -> bool {
        !self.hb.draining && self.load() < self.hb.max_batch + self.hb.max_waiting
    }
}

/// Why no worker was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoWorker {
    /// No live worker serves this model id.
    UnknownModel { served: Vec<String> },
    /// The request can never fit: `needed` tokens > the model's `max_context`.
    TooLong { needed: u64, max_context: u64 },
    /// Every candidate is full (or was already tried).
    Busy { workers: usize },
}

/// A chosen worker.
#[derive(Debug, Clone)]
pub struct Pick {
    pub instance: String,
    pub max_context: u64,
}

enum Cmd {
    Beat(Box<WorkerHeartbeat>),
    Pick {
        role: WorkerRole,
        model: String,
        tokens: u64,
        exclude: HashSet<String>,
        reply: oneshot::Sender<Result<Pick, NoWorker>>,
    },
    Release {
        instance: String,
        tokens: u64,
    },
    Models(oneshot::Sender<ModelsReply>),
    Live(oneshot::Sender<Vec<WorkerHeartbeat>>),
}

/// Handle of the registry actor (cheap to clone).
#[derive(Clone)]
pub struct Registry {
    tx: mpsc::Sender<Cmd>,
}

impl Registry {
    pub fn start() -> Registry {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(rx));
        Registry { tx }
    }

    pub async fn heartbeat(&self, hb: WorkerHeartbeat) {
        let _ = self.tx.send(Cmd::Beat(Box::new(hb))).await;
    }

    /// The least loaded live decode worker of `model` with room for `tokens` (prompt + max
    /// output), not in `exclude`.
    pub async fn pick(
        &self,
        model: &str,
        tokens: u64,
        exclude: &HashSet<String>,
    ) -> Result<Pick, NoWorker> {
        self.pick_role(WorkerRole::Decode, model, tokens, exclude)
            .await
    }

    /// The least loaded live prefill worker of `model` with a free slot.
    pub async fn pick_prefill(&self, model: &str, tokens: u64) -> Result<Pick, NoWorker> {
        self.pick_role(WorkerRole::Prefill, model, tokens, &HashSet::new())
            .await
    }

    async fn pick_role(
        &self,
        role: WorkerRole,
        model: &str,
        tokens: u64,
        exclude: &HashSet<String>,
    ) -> Result<Pick, NoWorker> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Pick {
            role,
            model: model.to_string(),
            tokens,
            exclude: exclude.clone(),
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return Err(NoWorker::Busy { workers: 0 });
        }
        rx.await.unwrap_or(Err(NoWorker::Busy { workers: 0 }))
    }

    /// Undoes a [`Registry::pick`] whose request the worker did not take.
    pub async fn release(&self, instance: &str, tokens: u64) {
        let cmd = Cmd::Release {
            instance: instance.to_string(),
            tokens,
        };
        let _ = self.tx.send(cmd).await;
    }

    pub async fn models(&self) -> ModelsReply {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Models(reply)).await.is_err() {
            return ModelsReply::default();
        }
        rx.await.unwrap_or_default()
    }

    /// The last heartbeat of every live worker.
    pub async fn live_workers(&self) -> Vec<WorkerHeartbeat> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Live(reply)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    workers: HashMap<String, Entry>,
    warned: HashSet<String>,
}

impl State {
    fn beat(&mut self, hb: WorkerHeartbeat) {
        let now = Instant::now();
        if hb.protocol_version != PROTOCOL_VERSION || hb.role == WorkerRole::Unknown {
            if self.warned.insert(hb.instance.clone()) {
                tracing::warn!(instance = %hb.instance, version = hb.protocol_version, role = ?hb.role,
                    "ignoring a worker of another protocol version or role");
            }
            return;
        }
        let since = self.workers.get(&hb.instance).map_or(now, |e| e.since);
        self.workers.insert(
            hb.instance.clone(),
            Entry {
                hb,
                seen: now,
                assigned: 0,
                since,
            },
        );
    }

    fn expire(&mut self, now: Instant) {
        self.workers.retain(|_, e| e.live(now));
    }

    /// The fingerprint of each model: that of its oldest live worker.
    fn fingerprints(&self) -> HashMap<&str, &str> {
        let mut oldest: HashMap<&str, (&Entry, Instant)> = HashMap::new();
        for e in self.workers.values() {
            let slot = oldest.entry(&e.hb.model).or_insert((e, e.since));
            if e.since < slot.1 {
                *slot = (e, e.since);
            }
        }
        oldest
            .into_iter()
            .map(|(m, (e, _))| (m, e.hb.model_fingerprint.as_str()))
            .collect()
    }

    fn candidates(&mut self, role: WorkerRole, model: &str) -> Vec<String> {
        let fps = self.fingerprints();
        let Some(&fp) = fps.get(model) else {
            return Vec::new();
        };
        let (ok, bad): (Vec<&Entry>, Vec<&Entry>) = self
            .workers
            .values()
            .filter(|e| e.hb.model == model && e.hb.role == role)
            .partition(|e| e.hb.model_fingerprint == fp);
        let bad: Vec<String> = bad.iter().map(|e| e.hb.instance.clone()).collect();
        let ok: Vec<String> = ok.iter().map(|e| e.hb.instance.clone()).collect();
        for b in bad {
            if self.warned.insert(b.clone()) {
                tracing::warn!(instance = %b, model, "worker runs another checkpoint than the model's other workers; not used");
            }
        }
        ok
    }

    fn pick(
        &mut self,
        role: WorkerRole,
        model: &str,
        tokens: u64,
        exclude: &HashSet<String>,
    ) -> Result<Pick, NoWorker> {
        self.expire(Instant::now());
        let names = self.candidates(role, model);
        if names.is_empty() {
            let mut served: Vec<String> = self
                .workers
                .values()
                .filter(|e| e.hb.role == WorkerRole::Decode)
                .map(|e| e.hb.model.clone())
                .collect();
            served.sort();
            served.dedup();
            return Err(NoWorker::UnknownModel { served });
        }
        let max_context = names
            .iter()
            .map(|n| self.workers[n].hb.max_context)
            .max()
            .unwrap_or(0);
        if tokens > max_context {
            return Err(NoWorker::TooLong {
                needed: tokens,
                max_context,
            });
        }
        let best = names
            .iter()
            .map(|n| &self.workers[n])
            .filter(|e| !exclude.contains(&e.hb.instance) && e.has_room())
            .filter(|e| e.hb.max_context >= tokens)
            .filter(|e| {
                role == WorkerRole::Prefill || e.hb.kv_free_tokens() >= tokens || e.load() == 0
            })
            .min_by(|a, b| {
                let la = a.load() as f64 / a.hb.max_batch.max(1) as f64;
                let lb = b.load() as f64 / b.hb.max_batch.max(1) as f64;
                la.total_cmp(&lb)
                    .then(b.hb.kv_free_tokens().cmp(&a.hb.kv_free_tokens()))
                    .then(a.hb.instance.cmp(&b.hb.instance))
            })
            .map(|e| e.hb.instance.clone());
        match best {
            Some(instance) => {
                let e = self
                    .workers
                    .get_mut(&instance)
                    .expect("picked from the map");
                e.assigned += 1;
                e.hb.kv_reserved_tokens += tokens;
                Ok(Pick {
                    instance,
                    max_context: e.hb.max_context,
                })
            }
            None => Err(NoWorker::Busy {
                workers: names.len(),
            }),
        }
    }

    fn models(&mut self) -> ModelsReply {
        self.expire(Instant::now());
        let fps: HashMap<String, String> = self
            .fingerprints()
            .into_iter()
            .map(|(m, f)| (m.to_string(), f.to_string()))
            .collect();
        let mut models: Vec<ServedModel> = Vec::new();
        for (model, fp) in fps {
            let ws: Vec<&Entry> = self
                .workers
                .values()
                .filter(|e| e.hb.role == WorkerRole::Decode)
                .filter(|e| e.hb.model == model && e.hb.model_fingerprint == fp)
                .collect();
            if ws.is_empty() {
                continue;
            }
            models.push(ServedModel {
                id: model,
                max_context: ws.iter().map(|e| e.hb.max_context).max().unwrap_or(0),
                vocab_size: ws.iter().map(|e| e.hb.vocab_size).max().unwrap_or(0),
                workers: ws.len() as u32,
                model_fingerprint: fp,
                free_slots: ws
                    .iter()
                    .filter(|e| !e.hb.draining)
                    .map(|e| (e.hb.max_batch + e.hb.max_waiting).saturating_sub(e.load()) as u64)
                    .sum(),
                description: ws.iter().find_map(|e| e.hb.description.clone()),
            });
        }
        models.sort_by(|a, b| a.id.cmp(&b.id));
        ModelsReply { models }
    }
}

async fn run(mut rx: mpsc::Receiver<Cmd>) {
    let mut state = State::default();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Beat(hb) => state.beat(*hb),
            Cmd::Pick {
                role,
                model,
                tokens,
                exclude,
                reply,
            } => {
                let _ = reply.send(state.pick(role, &model, tokens, &exclude));
            }
            Cmd::Release { instance, tokens } => {
                if let Some(e) = state.workers.get_mut(&instance) {
                    e.assigned = e.assigned.saturating_sub(1);
                    e.hb.kv_reserved_tokens = e.hb.kv_reserved_tokens.saturating_sub(tokens);
                }
            }
            Cmd::Models(reply) => {
                let _ = reply.send(state.models());
            }
            Cmd::Live(reply) => {
                state.expire(Instant::now());
                let _ = reply.send(state.workers.values().map(|e| e.hb.clone()).collect());
            }
        }
    }
}
