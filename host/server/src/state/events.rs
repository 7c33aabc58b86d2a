//! The queue of fired events on their way to subscriptions (B6, B8): bounded, lossless, in firing
//! order per source Thing, with its figures (`EventProcessingSubsystem.GetPerformanceMetrics`).
//!
//! One shard per worker; a firing goes to the shard of its source (by a hash of the source's
//! name), so one worker delivers a source's firings in order. A full shard makes the firer wait
//! (back-pressure), except a firer that is itself a worker (a subscription's code writing a
//! property): waiting there could wait on itself, so its firing goes to the shard's overflow,
//! which the depth limit of causal chains bounds. Nothing is dropped.

use crate::state::auth::Caller;
use serde_json::{Value as Json, json};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

/// Where subscriptions name a source Thing: by the source's name, the entities that hold them
/// (`App::subscriptions_by_source` keeps it while the model's structure does not change).
pub type BySource = std::collections::HashMap<String, Vec<(thinghost_core::Kind, String)>>;

/// One subscription a firing reaches, planned from the model (so that delivering it needs no
/// model lock while the model's structure stays as it was).
#[derive(Clone, Debug)]
pub struct Planned {
    /// Where it is defined.
    pub holder_kind: thinghost_core::Kind,
    pub holder: String,
    pub name: String,
    /// The Thing it runs for.
    pub me: String,
    pub code: Option<String>,
    /// For `DataChange`: only this property's.
    pub property: Option<String>,
}

/// What delivering needs of the model, as of one structure version (`Db::structure_version`):
/// the index of named sources, and the subscriptions each (source, event) reaches.
pub struct Plans {
    pub version: u64,
    pub by_source: Option<Arc<BySource>>,
    pub runs: std::collections::HashMap<(String, String), Arc<Vec<Planned>>>,
}

impl Default for Plans {
    fn default() -> Self {
        Plans {
            version: u64::MAX,
            by_source: None,
            runs: Default::default(),
        }
    }
}

impl Plans {
    /// Forgets everything planned for another version.
    pub fn at(&mut self, version: u64) -> &mut Plans {
        if self.version != version {
            *self = Plans {
                version,
                ..Plans::default()
            };
        }
        self
    }
}

/// The most firings a chain of subscriptions that fire each other may hold (B8): the next one is
/// not delivered, and the cut is audited naming the chain.
pub const MAX_CHAIN: usize = 8;

/// One firing of an event, on its way to its subscriptions.
#[derive(Clone, Debug)]
pub struct Firing {
    /// The Thing that fired.
    pub source: String,
    pub event: String,
    /// The event's data (for DataChange: `property`, `newValue`, `oldValue`, `timestamp`).
    pub data: Json,
    /// Who fired it: the subscriptions run in this security context (B6).
    pub caller: Caller,
    /// The firings that led to this one, oldest first, this one last (`Things/P1:DataChange`).
    pub chain: Arc<Vec<String>>,
    /// When it was fired (its delivery latency counts from here).
    pub fired_at: std::time::Instant,
    /// The subscriptions it reaches, planned when it was fired (under the model's lock the
    /// firer held): delivering takes no model lock.
    pub planned: Arc<Vec<Planned>>,
}

thread_local! {
    /// Set on the threads that deliver firings.
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as a delivering worker (its firings never wait on a full shard).
pub fn mark_worker() {
    WORKER.with(|w| w.set(true));
}

/// One shard: its channel, and the overflow of firings made by workers.
struct Shard {
    sender: SyncSender<Firing>,
    overflow: Mutex<VecDeque<Firing>>,
}

/// The figures of the queue.
#[derive(Default)]
pub struct Metrics {
    /// Firings queued and not yet delivered.
    pub queued: AtomicU64,
    pub high_water: AtomicU64,
    pub fired: AtomicU64,
    /// Subscriptions run to the end, and those that failed (an error, a limit, a cut chain).
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Delivery latency, from firing to the start of its delivery: counts per power of two of
    /// microseconds (bucket `i` holds latencies below 2^i µs).
    pub latency: [AtomicU64; 32],
}

impl Metrics {
    /// Notes one firing's delivery latency.
    pub fn note_latency(&self, d: std::time::Duration) {
        let us = d.as_micros().max(1) as u64;
        let i = (64 - us.leading_zeros() as usize).min(31);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency below which `q` (0 to 1) of the deliveries started, in microseconds (the
    /// upper bound of its power-of-two bucket); 0 before any delivery.
    pub fn latency_quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << i;
            }
        }
        1u64 << 31
    }
}

/// The queue: its shards, the receivers the workers take once, and its figures.
pub struct EventQueue {
    shards: Vec<Shard>,
    receivers: Mutex<Vec<Receiver<Firing>>>,
    pub metrics: Metrics,
    /// How many firings a shard holds before a firer waits.
    pub capacity: usize,
}

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue::new(2, 1024)
    }
}

impl EventQueue {
    /// `workers` shards of `capacity` firings each.
    pub fn new(workers: usize, capacity: usize) -> EventQueue {
        let (shards, receivers) = (0..workers.max(1))
            .map(|_| {
                let (sender, receiver) = sync_channel(capacity.max(1));
                (
                    Shard {
                        sender,
                        overflow: Mutex::new(VecDeque::new()),
                    },
                    receiver,
                )
            })
            .unzip();
        EventQueue {
            shards,
            receivers: Mutex::new(receivers),
            metrics: Metrics::default(),
            capacity,
        }
    }

    fn shard_of(&self, source: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    /// Queues a firing: waits while its shard is full (unless on a worker). False when no
    /// worker will ever take it (the server is stopping).
    pub fn send(&self, firing: Firing) -> bool {
        let n = self.metrics.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.high_water.fetch_max(n, Ordering::Relaxed);
        self.metrics.fired.fetch_add(1, Ordering::Relaxed);
        let shard = &self.shards[self.shard_of(&firing.source)];
        let sent = if WORKER.with(|w| w.get()) {
            match shard.sender.try_send(firing) {
                Ok(()) => true,
                Err(TrySendError::Full(f)) => {
                    shard
                        .overflow
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(f);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        } else {
            shard.sender.send(firing).is_ok()
        };
        if !sent {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// The receivers, for the workers (once; later calls get none).
    pub fn take_receivers(&self) -> Vec<(usize, Receiver<Firing>)> {
        std::mem::take(&mut *self.receivers.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .enumerate()
            .collect()
    }

    /// The next firing of shard `i` after its channel is empty: one from its overflow.
    pub fn overflow(&self, i: usize) -> Option<Firing> {
        self.shards[i]
            .overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// A firing was delivered to all its subscriptions.
    pub fn done(&self) {
        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// The figures, as `GetPerformanceMetrics` answers them.
    pub fn figures(&self) -> Json {
        let m = &self.metrics;
        json!({
            "queueDepth": m.queued.load(Ordering::Relaxed),
            "queueHighWater": m.high_water.load(Ordering::Relaxed),
            "queueCapacity": self.capacity * self.shards.len(),
            "workers": self.shards.len(),
            "eventsFired": m.fired.load(Ordering::Relaxed),
            "subscriptionsDelivered": m.delivered.load(Ordering::Relaxed),
            "subscriptionsFailed": m.failed.load(Ordering::Relaxed),
            "deliveryLatencyP50Micros": m.latency_quantile(0.50),
            "deliveryLatencyP99Micros": m.latency_quantile(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn b8_latency_quantiles_come_from_power_of_two_buckets() {
        let m = Metrics::default();
        assert_eq!(m.latency_quantile(0.5), 0);
        for _ in 0..98 {
            m.note_latency(Duration::from_micros(100));
        }
        m.note_latency(Duration::from_millis(5));
        m.note_latency(Duration::from_millis(5));
        // 100 µs is in the bucket below 128 µs; the slowest 2% below 8,192 µs.
        assert_eq!(m.latency_quantile(0.5), 128);
        assert_eq!(m.latency_quantile(0.98), 128);
        assert_eq!(m.latency_quantile(0.99), 8192);
    }

    #[test]
    fn b8_a_full_shard_keeps_a_workers_firing_in_its_overflow() {
        let q = EventQueue::new(1, 1);
        let firing = |n: u8| Firing {
            source: "P1".into(),
            event: "DataChange".into(),
            data: json!({"n": n}),
            caller: Caller {
                subject: thinghost_core::Subject::User(thinghost_core::EntityId(1)),
                name: "u".into(),
                depth: 0,
                chain: None,
            },
            chain: Arc::new(vec![]),
            fired_at: std::time::Instant::now(),
            planned: Arc::new(vec![]),
        };
        let receivers = q.take_receivers();
        assert!(q.send(firing(1)));
        // The shard is full: a worker's firing is kept aside, not waited for, not dropped.
        std::thread::scope(|s| {
            s.spawn(|| {
                mark_worker();
                assert!(q.send(firing(2)));
            });
        });
        assert_eq!(q.metrics.queued.load(Ordering::Relaxed), 2);
        assert_eq!(receivers[0].1.try_recv().unwrap().data["n"], 1);
        assert_eq!(q.overflow(0).unwrap().data["n"], 2);
        assert!(q.overflow(0).is_none());
    }
}
