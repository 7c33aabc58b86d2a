//! The queue of fired events on their way to subscriptions (B6, B8): bounded, lossless, in firing
//! order per source Thing, with its figures (`EventProcessingSubsystem.GetPerformanceMetrics`).
//!
//! One shard per worker, each one FIFO; a firing goes to the shard of its source (by a hash of
//! the source's name), so one worker delivers a source's firings in the order they were fired.
//! A firing is pushed at once, never waiting, while its firer still holds the model's lock that
//! made the change ([`EventQueue::push`]): the order in a shard is the order of the changes.
//! Back-pressure comes before: a firer that no subscription's code made waits, before it takes
//! the lock, while its shard is full ([`EventQueue::wait_for_room`]); a firing made inside a
//! subscription never waits (its worker could wait on itself). What a shard then holds past its
//! bound is bounded by the firers that found room at once, by each root firing's budget (a chain
//! of subscriptions, however it branches, makes at most [`MAX_FIRINGS`] firings) and by
//! [`MAX_PAST_BOUND`]; past that the firing is cut and audited. Nothing is dropped silently.

use crate::state::auth::Caller;
use serde_json::{Value as Json, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The most firings a chain of subscriptions that fire each other may hold, one after the other
/// (B8): the next one is not delivered, and the cut is audited naming the chain.
pub const MAX_CHAIN: usize = 8;

/// The most firings one root firing may cause in all, however its subscriptions branch (B8).
pub const MAX_FIRINGS: u64 = 1_000;

/// The most firings a shard holds past its bound (workers' own, which never wait).
pub const MAX_PAST_BOUND: usize = 100_000;

/// Why a firing happened: the firings that led to it and the budget of its root firing.
#[derive(Debug)]
pub struct Cause {
    /// The firings that led here, oldest first, the last one last (`Things/P1:DataChange`).
    pub chain: Vec<String>,
    /// Firings the root firing may still cause.
    pub budget: Arc<AtomicU64>,
    /// Set once a firing of this root was cut: a root's cuts are audited once.
    pub cut: Arc<std::sync::atomic::AtomicBool>,
}

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
    /// Its chain (this firing last) and its root's budget.
    pub cause: Arc<Cause>,
    /// When it was fired (its delivery latency counts from here).
    pub fired_at: std::time::Instant,
    /// The subscriptions it reaches, planned when it was fired (under the model's lock the
    /// firer held), and the model's structure version they were planned for.
    pub planned: Arc<Vec<Planned>>,
    pub planned_at: u64,
}

/// One shard: its firings in order, and the conditions its firers and its worker wait on.
pub struct Shard {
    queue: Mutex<VecDeque<Firing>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Shard {
    /// The next firing, waiting at most `wait` for one.
    pub fn next(&self, wait: std::time::Duration) -> Option<Firing> {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let (mut q, _) = self
            .not_empty
            .wait_timeout_while(q, wait, |q| q.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        let f = q.pop_front();
        if f.is_some() {
            // Every firer waiting for room looks again.
            self.not_full.notify_all();
        }
        f
    }
}

/// Where subscriptions name a source Thing: by the source's name, the entities that hold them.
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

/// The queue: its shards (the workers take them once) and its figures.
pub struct EventQueue {
    shards: Vec<Arc<Shard>>,
    taken: std::sync::atomic::AtomicBool,
    /// Per subscription that failed: when its failure was last audited, and the failures since
    /// (a failing subscription of a fast timer is audited once a minute, with its count).
    pub failures: Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
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
        EventQueue {
            shards: (0..workers.max(1))
                .map(|_| {
                    Arc::new(Shard {
                        queue: Mutex::new(VecDeque::new()),
                        not_empty: Condvar::new(),
                        not_full: Condvar::new(),
                    })
                })
                .collect(),
            taken: Default::default(),
            failures: Default::default(),
            metrics: Metrics::default(),
            capacity: capacity.max(1),
        }
    }

    fn shard_of(&self, source: &str) -> &Shard {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    /// Queues a firing now, in order behind the others of its shard, without waiting (the firer
    /// may hold the model's lock): refused (false) when the shard already holds `limit` firings.
    pub fn push(&self, firing: Firing, limit: usize) -> bool {
        let shard = self.shard_of(&firing.source);
        let mut q = shard.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= limit {
            return false;
        }
        // Counted before a worker can take it (and count it done).
        let n = self.metrics.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.high_water.fetch_max(n, Ordering::Relaxed);
        self.metrics.fired.fetch_add(1, Ordering::Relaxed);
        q.push_back(firing);
        drop(q);
        shard.not_empty.notify_one();
        true
    }

    /// The most a shard may hold: its bound, and what firers that found room, and firings made
    /// inside subscriptions, put past it.
    pub fn hard_limit(&self) -> usize {
        self.capacity + MAX_PAST_BOUND
    }

    /// Back-pressure: waits while the shard of `source` holds its bound or more. Only for a firer
    /// that holds no lock yet and is no subscription's.
    pub fn wait_for_room(&self, source: &str) {
        let shard = self.shard_of(source);
        let q = shard.queue.lock().unwrap_or_else(|p| p.into_inner());
        drop(
            shard
                .not_full
                .wait_while(q, |q| q.len() >= self.capacity)
                .unwrap_or_else(|p| p.into_inner()),
        );
    }

    /// The shards, for the workers (once; later calls get none).
    pub fn take_shards(&self) -> Vec<Arc<Shard>> {
        if self.taken.swap(true, Ordering::SeqCst) {
            return vec![];
        }
        self.shards.clone()
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

    fn firing(n: u8) -> Firing {
        Firing {
            source: "P1".into(),
            event: "DataChange".into(),
            data: json!({"n": n}),
            caller: Caller::new(
                thinghost_core::Subject::User(thinghost_core::EntityId(1)),
                "u",
            ),
            cause: Arc::new(Cause {
                chain: vec![],
                budget: Arc::new(AtomicU64::new(MAX_FIRINGS)),
                cut: Default::default(),
            }),
            fired_at: std::time::Instant::now(),
            planned: Arc::new(vec![]),
            planned_at: 0,
        }
    }

    #[test]
    fn b8_firings_go_in_at_once_in_order_and_a_firer_waits_for_room_after() {
        let q = EventQueue::new(1, 1);
        let shards = q.take_shards();
        assert!(q.take_shards().is_empty(), "the shards are taken once");
        assert!(q.push(firing(1), q.hard_limit()));
        // The shard is full: a firing still goes in at once, past the bound, after the one
        // before it; only past the hard limit is one refused.
        assert!(q.push(firing(2), q.hard_limit()));
        assert!(!q.push(firing(9), 2));
        assert_eq!(q.metrics.queued.load(Ordering::Relaxed), 2);
        let wait = std::time::Duration::from_millis(1);
        // A firer waits for room (outside any lock) until the worker takes enough.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| q.wait_for_room("P1"));
            assert_eq!(shards[0].next(wait).unwrap().data["n"], 1);
            assert_eq!(shards[0].next(wait).unwrap().data["n"], 2);
            waiter.join().unwrap();
        });
        assert!(q.push(firing(3), 1));
        assert_eq!(shards[0].next(wait).unwrap().data["n"], 3);
        assert!(shards[0].next(wait).is_none());
    }
}
