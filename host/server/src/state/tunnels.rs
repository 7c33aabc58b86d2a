//! Remote-access tunnels (DOMAIN C7): the tunnels open now, and those waiting for their
//! device's side.
//!
//! A session's connection on `/Thingworx/TWS` opens a tunnel: it takes a place under the
//! server's limit ([`Tunnels::place`]), announces the tunnel ([`Tunnels::expect`]: a random
//! tunnel id, the Thing, the user whose connection has bound it), and asks that device, over
//! AlwaysOn, to connect to the session's endpoint and back to `/Thingworx/WSTunnelServer/{tid}`.
//! The device's connection there claims the tunnel id once ([`Tunnels::claim`]) and is handed to
//! the waiting session connection, which relays the bytes (`http::tunnel`). Nothing here does
//! I/O: the socket type is the adapter's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// The limits of tunnels (`serve --tunnel-*`).
#[derive(Clone, Copy, Debug)]
pub struct TunnelLimits {
    /// A tunnel that carries no byte either way for this long is closed.
    pub idle: Duration,
    /// The most tunnels open (or waiting for their device) at once, over the server.
    pub max_open: usize,
    /// How long the device has to connect back after it was asked.
    pub connect_timeout: Duration,
    /// The largest message relayed either way, in bytes (a frame of the client or the device).
    pub max_message: usize,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        TunnelLimits {
            idle: Duration::from_secs(300),
            max_open: 64,
            connect_timeout: Duration::from_secs(15),
            max_message: 64 * 1024,
        }
    }
}

/// What the device's side sent, in order: bytes of the endpoint's stream, then why it ended.
#[derive(Debug)]
pub enum FromDevice {
    Data(bytes::Bytes),
    /// The device's side closed (its endpoint closed, or the device went away): why.
    Closed(String),
}

/// What goes to the device's side, in order.
#[derive(Debug)]
pub enum ToDevice {
    Data(bytes::Bytes),
    /// The client sends no more bytes (its connection half-closed): the device's side shuts
    /// down its endpoint's writing and goes on reading it.
    Shutdown,
    /// The tunnel ends: why (the device's side is closed with it).
    Close(String),
}

/// The device's side of a tunnel, connected: its socket's task relays between the socket and
/// these bounded channels (a slow reader on either side slows the writer on the other).
pub struct DeviceLink {
    /// The user of the key the device's side connected with.
    pub user: String,
    /// Whether the device exchanges the bytes as binary frames (it can then be told of a
    /// half-close); else base64 text, as the vendor's SDKs.
    pub binary: bool,
    pub to_device: tokio::sync::mpsc::Sender<ToDevice>,
    pub from_device: tokio::sync::mpsc::Receiver<FromDevice>,
    /// Dropped when the session's side is done with the tunnel: the device's socket closes
    /// then, however stuck its writes are.
    pub done: oneshot::Sender<()>,
}

/// A tunnel waiting for its device's connection.
pub struct Waiting<S> {
    pub thing: String,
    /// The user whose AlwaysOn connection had bound the Thing when the tunnel was asked for:
    /// only a key of this user may connect the device's side.
    pub device_user: String,
    pub session: String,
    /// Where the device's socket goes.
    pub deliver: oneshot::Sender<S>,
}

/// The tunnels of this server.
pub struct Tunnels<S> {
    pub limits: TunnelLimits,
    waiting: Mutex<HashMap<String, Waiting<S>>>,
    open: Arc<AtomicUsize>,
}

/// A tunnel's place under [`TunnelLimits::max_open`], held while it lives.
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Default for Tunnels<S> {
    fn default() -> Self {
        Tunnels::new(TunnelLimits::default())
    }
}

impl<S> Tunnels<S> {
    pub fn new(limits: TunnelLimits) -> Tunnels<S> {
        Tunnels {
            limits,
            waiting: Mutex::new(HashMap::new()),
            open: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting<S>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more tunnel; `None` when [`TunnelLimits::max_open`] are open.
    pub fn place(&self) -> Option<Place> {
        let max = self.limits.max_open;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(self.open.clone()))
    }

    /// Tunnels open or waiting now.
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Announces a tunnel of `session` on `thing` whose device side a key of `device_user` will
    /// connect: its id (128 random bits, hex), and where the device's socket will arrive.
    pub fn expect(
        &self,
        thing: &str,
        device_user: &str,
        session: &str,
    ) -> Result<(String, oneshot::Receiver<S>), String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
        let tid = thinghost_core::hex(&bytes);
        let (deliver, arrives) = oneshot::channel();
        let mut waiting = self.lock();
        // Whoever gave up waiting (its receiver dropped) is forgotten here.
        waiting.retain(|_, w| !w.deliver.is_closed());
        waiting.insert(
            tid.clone(),
            Waiting {
                thing: thing.to_string(),
                device_user: device_user.to_string(),
                session: session.to_string(),
                deliver,
            },
        );
        Ok((tid, arrives))
    }

    /// Takes the tunnel `tid` waiting for its device (once: a second claim finds nothing), if
    /// someone still waits for it (the session's connection gives up after
    /// [`TunnelLimits::connect_timeout`]) and its device user is `user`: `Err` with the
    /// waiting one's device user when another user claims it (it keeps waiting).
    pub fn claim(&self, tid: &str, user: &str) -> Result<Waiting<S>, Option<String>> {
        let mut waiting = self.lock();
        match waiting.get(tid) {
            None => return Err(None),
            Some(w) if w.deliver.is_closed() => {
                waiting.remove(tid);
                return Err(None);
            }
            Some(w) if w.device_user != user => return Err(Some(w.device_user.clone())),
            Some(_) => {}
        }
        waiting.remove(tid).ok_or(None)
    }

    /// Forgets tunnel `tid` if it still waits (its session connection gave up).
    pub fn forget(&self, tid: &str) {
        self.lock().remove(tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c7_a_tunnel_id_is_claimed_once_and_only_while_someone_waits() {
        let t: Tunnels<u32> = Tunnels::default();
        let (tid, arrives) = t.expect("Pump", "device", "s1").unwrap();
        assert_eq!(tid.len(), 32);
        assert!(t.claim("not-a-tid", "device").is_err());
        // Another user's claim finds it, says whose it is, and leaves it waiting.
        assert_eq!(
            t.claim(&tid, "intruder").err(),
            Some(Some("device".to_string()))
        );
        let w = t.claim(&tid, "device").expect("waiting");
        assert_eq!(
            (w.thing.as_str(), w.device_user.as_str(), w.session.as_str()),
            ("Pump", "device", "s1")
        );
        w.deliver.send(7).unwrap();
        assert_eq!(arrives.blocking_recv().unwrap(), 7);
        assert!(t.claim(&tid, "device").is_err(), "once");
        // Nobody waits any more (the session's connection gave up): nothing to claim.
        let (tid, arrives) = t.expect("Pump", "device", "s2").unwrap();
        drop(arrives);
        assert_eq!(t.claim(&tid, "device").err(), Some(None));
    }

    #[test]
    fn c7_tunnels_are_bounded_by_the_servers_limit() {
        let t: Tunnels<u32> = Tunnels::new(TunnelLimits {
            max_open: 2,
            ..TunnelLimits::default()
        });
        let a = t.place().unwrap();
        let _b = t.place().unwrap();
        assert!(t.place().is_none());
        assert_eq!(t.open_now(), 2);
        drop(a);
        assert!(t.place().is_some());
    }
}
