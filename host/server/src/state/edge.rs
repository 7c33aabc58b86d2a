//! Devices connected over AlwaysOn (`/Thingworx/WS`, DOMAIN section 10): the connections and
//! which Thing each has bound. A Thing is bound to one connection at a time (C2).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        }
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

    /// A new connection of `user` from `address`; its id.
    pub fn open(&self, user: &str, address: IpAddr) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().connections.insert(
            id,
            Connection {
                user: user.to_string(),
                address,
                since: crate::now_ms(),
                things: BTreeSet::new(),
                gateway: None,
            },
        );
        id
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
        let (a, b) = (edge.open("ann", addr), edge.open("bob", addr));
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
}
