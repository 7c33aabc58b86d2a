//! Devices connected over AlwaysOn (`/Thingworx/WS`, DOMAIN section 10): the connections and
//! which Thing each has bound. A Thing is bound to one connection at a time (C2).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thinghost_alwayson::message::Request;
use thinghost_alwayson::{Code, Table};

/// The limits of the AlwaysOn endpoint (`serve` options).
#[derive(Clone, Copy, Debug)]
pub struct EdgeLimits {
    /// How long a new connection has to authenticate (the vendor's 15 s).
    pub auth_timeout: Duration,
    /// The largest frame, and the chunk size of what the server sends (the vendor's 8,192).
    pub chunk_size: usize,
    /// The largest message, reassembled from chunks (the vendor's 1 MiB).
    pub max_message: usize,
    /// Messages being reassembled at once per connection.
    pub max_pending: usize,
    /// How long a message's chunks may take to arrive.
    pub reassembly_timeout: Duration,
    /// How long a connection may send nothing (no frame, no ping) before it is taken for
    /// gone: missed keep-alives (C3). The SDKs ping every 55 s.
    pub idle: Duration,
    /// How long a request forwarded to a device waits for its answer when its binding names
    /// no timeout (C5; the vendor's 30 s).
    pub device_timeout: Duration,
    /// Requests to one device queued or waiting for its answer at once; past it, more are
    /// answered 503 at once.
    pub max_in_flight: usize,
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            auth_timeout: Duration::from_secs(15),
            chunk_size: 8192,
            max_message: 1 << 20,
            max_pending: 8,
            reassembly_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            device_timeout: Duration::from_secs(30),
            max_in_flight: 64,
        }
    }
}

/// What a connection has sent and received, and when it was last heard from.
#[derive(Debug)]
pub struct Traffic {
    seen: Mutex<Instant>,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            seen: Mutex::new(Instant::now()),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
        }
    }
}

impl Traffic {
    /// A frame came in now.
    pub fn received(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    /// `n` frames went out.
    pub fn sent(&self, n: u64) {
        self.frames_out.fetch_add(n, Ordering::Relaxed);
    }
    /// When a frame last came in (or the connection opened).
    pub fn seen(&self) -> Instant {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request for the device of a connection (C5): the connection's task gives it a request id,
/// sends it, and hands the device's answer to `reply` (dropped when nobody waits any more).
#[derive(Debug)]
pub struct Outbound {
    pub code: Code,
    pub request: Request,
    /// Where the answer goes; `None`: nobody waits for one (a notification).
    pub reply: Option<std::sync::mpsc::SyncSender<Answer>>,
    /// Past it, nobody waits: the request is not sent, a late answer is dropped.
    pub deadline: Instant,
}

/// A device's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub code: Code,
    pub reason: Option<String>,
    pub content: Option<Table>,
}

/// Why a request did not reach a device, or got no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// No connection has bound the Thing.
    NotBound,
    /// The device has [`EdgeLimits::max_in_flight`] requests already.
    Busy,
    /// No answer in time.
    Timeout,
    /// The connection closed before it answered.
    Gone,
    /// The request came from the very device it would go to (its own request's handling would
    /// wait for itself).
    Loop,
}

thread_local! {
    /// The connection whose device's request this thread is handling, if any.
    static HANDLING: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// While it lives, this thread handles a request of connection `id`'s device: a request for
/// that same device is refused ([`Unanswered::Loop`]) instead of waiting for itself.
pub struct Handling(Option<u64>);

impl Handling {
    pub fn of(id: u64) -> Handling {
        Handling(HANDLING.with(|h| h.replace(Some(id))))
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        HANDLING.with(|h| h.set(self.0));
    }
}

/// One connection, as administrators see it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub user: String,
    pub address: IpAddr,
    /// Milliseconds since the epoch.
    pub since: i64,
    pub things: BTreeSet<String>,
    pub gateway: Option<String>,
    pub traffic: Arc<Traffic>,
    /// Requests for the device (its task sends them).
    outbound: tokio::sync::mpsc::Sender<Outbound>,
    /// Requests for the device queued or waiting for its answer now.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Threads waiting for a device's answer now, over all devices, at most [`MAX_WAITING`].
static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The most threads that wait for devices at once: past it, 503 at once (each waits up to its
/// binding's timeout, and holds its thread meanwhile).
pub const MAX_WAITING: usize = 256;

/// Takes one of a count's places while it lives; `None` when the count is at `max`.
struct Place<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Place<'a> {
    fn take(count: &'a std::sync::atomic::AtomicUsize, max: usize) -> Option<Place<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(count))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections of this server and the Things they have bound.
#[derive(Default)]
pub struct Edge {
    pub limits: EdgeLimits,
    next: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    connections: HashMap<u64, Connection>,
    /// Thing -> the connection that bound it.
    bound: HashMap<String, u64>,
}

/// Why a bind was refused by the registry.
#[derive(Debug, PartialEq, Eq)]
pub enum BindRefused {
    /// Another connection has bound the Thing.
    Elsewhere { user: String, since: i64 },
    /// The connection is closed.
    Closed,
}

impl Edge {
    pub fn new(limits: EdgeLimits) -> Edge {
        Edge {
            limits,
            ..Edge::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection of `user` from `address`: its id, and where the requests for its
    /// device arrive (at most [`EdgeLimits::max_in_flight`] wait there).
    pub fn open(
        &self,
        user: &str,
        address: IpAddr,
        traffic: Arc<Traffic>,
    ) -> (u64, tokio::sync::mpsc::Receiver<Outbound>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbound, requests) = tokio::sync::mpsc::channel(self.limits.max_in_flight.max(1));
        self.lock().connections.insert(
            id,
            Connection {
                user: user.to_string(),
                address,
                since: crate::now_ms(),
                things: BTreeSet::new(),
                gateway: None,
                traffic,
                outbound,
                in_flight: Arc::default(),
            },
        );
        (id, requests)
    }

    /// Sends `request` to the device that has bound `thing` and waits for its answer, at most
    /// `timeout` (C5). Blocks the calling thread: call it off the async workers.
    pub fn forward(
        &self,
        thing: &str,
        code: Code,
        request: Request,
        timeout: Duration,
    ) -> Result<Answer, Unanswered> {
        let (outbound, in_flight) = {
            let inner = self.lock();
            let id = inner.bound.get(thing).ok_or(Unanswered::NotBound)?;
            if HANDLING.with(|h| h.get()) == Some(*id) {
                return Err(Unanswered::Loop);
            }
            let c = &inner.connections[id];
            (c.outbound.clone(), c.in_flight.clone())
        };
        let _mine = Place::take(&in_flight, self.limits.max_in_flight).ok_or(Unanswered::Busy)?;
        let _waiting = Place::take(&WAITING, MAX_WAITING).ok_or(Unanswered::Busy)?;
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        outbound
            .try_send(Outbound {
                code,
                request,
                reply: Some(reply),
                deadline: Instant::now() + timeout,
            })
            .map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => Unanswered::Busy,
                tokio::sync::mpsc::error::TrySendError::Closed(_) => Unanswered::Gone,
            })?;
        let wait = move || {
            answer.recv_timeout(timeout).map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => Unanswered::Timeout,
                std::sync::mpsc::RecvTimeoutError::Disconnected => Unanswered::Gone,
            })
        };
        // On an async worker (a read, which runs there), the worker's other tasks move to
        // another thread while this one waits: among them, maybe, the very connection that
        // must send the request (woken by this thread, it sits in this worker's queue).
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The user of the connection that has bound `thing`, if one has.
    pub fn bound_user(&self, thing: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .bound
            .get(thing)
            .and_then(|id| inner.connections.get(id))
            .map(|c| c.user.clone())
    }

    /// Sends `request` to the device that has bound `thing`, if one has, without waiting for
    /// an answer (a notification: `NotifyPropertyUpdate`); whether it was queued.
    pub fn notify(&self, thing: &str, code: Code, request: Request) -> bool {
        let inner = self.lock();
        let Some(id) = inner.bound.get(thing) else {
            return false;
        };
        inner.connections[id]
            .outbound
            .try_send(Outbound {
                code,
                request,
                reply: None,
                deadline: Instant::now() + self.limits.device_timeout,
            })
            .is_ok()
    }

    /// Binds `thing` to connection `id`; whether it is new (bound again: nothing changes).
    pub fn bind(&self, id: u64, thing: &str, gateway: Option<&str>) -> Result<bool, BindRefused> {
        let mut inner = self.lock();
        match inner.bound.get(thing) {
            Some(other) if *other != id => {
                let c = &inner.connections[other];
                return Err(BindRefused::Elsewhere {
                    user: c.user.clone(),
                    since: c.since,
                });
            }
            _ => {}
        }
        let Some(c) = inner.connections.get_mut(&id) else {
            return Err(BindRefused::Closed);
        };
        let new = c.things.insert(thing.to_string());
        if let Some(g) = gateway {
            c.gateway = Some(g.to_string());
        }
        inner.bound.insert(thing.to_string(), id);
        Ok(new)
    }

    /// Unbinds `thing` from connection `id`; whether it was bound there.
    pub fn unbind(&self, id: u64, thing: &str) -> bool {
        let mut inner = self.lock();
        if inner.bound.get(thing) != Some(&id) {
            return false;
        }
        inner.bound.remove(thing);
        if let Some(c) = inner.connections.get_mut(&id) {
            c.things.remove(thing);
        }
        true
    }

    /// Closes connection `id`; the Things it had bound.
    pub fn close(&self, id: u64) -> Vec<String> {
        let mut inner = self.lock();
        let Some(c) = inner.connections.remove(&id) else {
            return Vec::new();
        };
        for t in &c.things {
            inner.bound.remove(t);
        }
        c.things.into_iter().collect()
    }

    /// The connection a Thing is bound to.
    pub fn bound_to(&self, thing: &str) -> Option<u64> {
        self.lock().bound.get(thing).copied()
    }

    /// Every connection, by id.
    pub fn connections(&self) -> Vec<(u64, Connection)> {
        let mut out: Vec<(u64, Connection)> = self
            .lock()
            .connections
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2_a_thing_is_bound_to_one_connection_at_a_time() {
        let edge = Edge::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let (a, _ra) = edge.open("ann", addr, Default::default());
        let (b, _rb) = edge.open("bob", addr, Default::default());
        assert_eq!(edge.bind(a, "Pump", None), Ok(true));
        assert_eq!(edge.bind(a, "Pump", None), Ok(false));
        assert!(matches!(
            edge.bind(b, "Pump", None),
            Err(BindRefused::Elsewhere { ref user, .. }) if user == "ann"
        ));
        assert!(!edge.unbind(b, "Pump"));
        assert!(edge.unbind(a, "Pump"));
        assert_eq!(edge.bind(b, "Pump", Some("gw")), Ok(true));
        assert_eq!(edge.bound_to("Pump"), Some(b));
        assert_eq!(edge.close(b), vec!["Pump".to_string()]);
        assert_eq!(edge.bound_to("Pump"), None);
        assert_eq!(edge.bind(b, "Pump", None), Err(BindRefused::Closed));
        assert_eq!(edge.connections().len(), 1);
    }

    fn request() -> Request {
        Request {
            entity_type: thinghost_alwayson::codes::THING,
            entity_name: "Pump".into(),
            characteristic: thinghost_alwayson::codes::PROPERTIES,
            name: "t".into(),
            headers: vec![],
            params: None,
        }
    }

    #[test]
    fn c5_a_request_reaches_the_bound_device_or_says_why_not() {
        let edge = Edge::new(EdgeLimits {
            max_in_flight: 1,
            ..EdgeLimits::default()
        });
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let short = Duration::from_millis(50);
        assert_eq!(
            edge.forward("Pump", Code::GET, request(), short),
            Err(Unanswered::NotBound)
        );
        let (a, mut device) = edge.open("ann", addr, Default::default());
        edge.bind(a, "Pump", None).unwrap();
        // Nobody answers: the timeout; the request waits in the queue, which holds one.
        assert_eq!(
            edge.forward("Pump", Code::GET, request(), short),
            Err(Unanswered::Timeout)
        );
        assert_eq!(
            edge.forward("Pump", Code::GET, request(), short),
            Err(Unanswered::Busy)
        );
        let stale = device.try_recv().unwrap();
        assert!(stale.deadline <= Instant::now() + short);
        // The device answers: the answer comes back.
        let answering = std::thread::spawn(move || {
            let out = device.blocking_recv().unwrap();
            assert_eq!(out.request.name, "t");
            out.reply
                .unwrap()
                .send(Answer {
                    code: Code::SUCCESS,
                    reason: None,
                    content: None,
                })
                .unwrap();
            device
        });
        let answer = edge
            .forward("Pump", Code::GET, request(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(answer.code, Code::SUCCESS);
        let device = answering.join().unwrap();
        // The device's own request is not sent back to it.
        {
            let _handling = Handling::of(a);
            assert_eq!(
                edge.forward("Pump", Code::GET, request(), short),
                Err(Unanswered::Loop)
            );
        }
        // Closed: gone.
        drop(device);
        assert_eq!(
            edge.forward("Pump", Code::GET, request(), short),
            Err(Unanswered::Gone)
        );
    }
}
