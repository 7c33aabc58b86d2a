//! Authentication (DOMAIN K1-K5): application keys in the `appKey` header, HTTP Basic for users,
//! client certificates under mutual TLS. Every failure answers 401 with the same body, and is
//! audited with its real reason.

use crate::state::app::App;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use thinghost_core::{Body, Kind, Subject, View};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub subject: Subject,
    /// Shared: a caller is cloned into every call it makes (a service's host, a script's
    /// context), and its name with it.
    pub name: std::sync::Arc<str>,
    /// How deep in extension service calls this request is (0 for a request from outside).
    pub depth: u8,
    /// For the code of a subscription, and what it calls: the firings that led to it and their
    /// root's budget (B8 cuts a chain at `state::events::MAX_CHAIN`, a root's firings at
    /// `MAX_FIRINGS`).
    pub chain: Option<std::sync::Arc<crate::state::events::Cause>>,
    /// Code in the model runs (or ran, up the calls) for this request: what it calls may not
    /// use the functions only extensions may (`HostFn::extensions_only`), so that no result of
    /// theirs (a nonce key) reaches code that anyone with `Update` on a Thing wrote.
    pub in_model_code: bool,
}

impl Caller {
    /// A request's caller, from outside (no depth, no chain of firings).
    pub fn new(subject: Subject, name: impl Into<std::sync::Arc<str>>) -> Caller {
        Caller {
            subject,
            name: name.into(),
            depth: 0,
            chain: None,
            in_model_code: false,
        }
    }
}

/// Why authentication failed; the client sees only "401" (or 503 when `busy`), the audit log
/// sees this.
#[derive(Debug)]
pub struct Refused {
    pub user: String,
    pub key: &'static str,
    pub detail: String,
    /// Not a refusal of the credentials: the password checks are all busy (503, try again).
    pub busy: bool,
}

pub(crate) fn refused(user: &str, key: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        user: user.to_string(),
        key,
        detail: detail.into(),
        busy: false,
    }
}

/// Failed sign-ins are counted per user and per address. After `slow_after` failures each
/// further attempt waits one second more (at most five); after `lock_after` failures the user or
/// address is refused for `lockout`, whatever the password. A success clears the user's count.
/// An address's limit (`address_lock_after`) covers every user name tried from it.
#[derive(Clone, Copy, Debug)]
pub struct LimiterConfig {
    pub slow_after: u32,
    pub lock_after: u32,
    pub address_lock_after: u32,
    pub lockout: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            slow_after: 3,
            lock_after: 10,
            address_lock_after: 30,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

/// The most users and addresses the limiter tracks at once: past it, entries that hold no
/// lock-out and no attempt in progress are forgotten first.
pub const MAX_TRACKED: usize = 100_000;

/// One user's or address's failures, and its attempts in progress (each holds a slot: at most
/// the limit is ever checked, even at once).
#[derive(Clone, Copy, Debug)]
struct Count {
    failures: u32,
    pending: u32,
    since: Instant,
}

#[derive(Default)]
pub struct Limiter {
    pub config: LimiterConfig,
    failures: Mutex<HashMap<String, Count>>,
    /// When each (method, user, credential, address) last had its sign-in audited. Every
    /// authenticated request looks here and almost all find a fresh entry: a shared lock for
    /// that, the exclusive one only to note a new sign-in.
    audited: RwLock<HashMap<String, Instant>>,
    /// Failed sign-ins recorded one by one, and those only counted, per address and reason.
    refusals: Mutex<HashMap<(IpAddr, &'static str), Window>>,
    /// Signed-in users with password work (a hash for a new password) on the hashing pool now:
    /// one at a time each, so that one user cannot fill the pool that sign-ins need.
    hashing: Mutex<std::collections::HashSet<String>>,
}

/// A signed-in user's turn on the hashing pool, until dropped.
pub struct Turn<'a> {
    limiter: &'a Limiter,
    user: String,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.limiter
            .hashing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.user);
    }
}

/// A successful sign-in is audited once per method, user, credential and address in this window:
/// every request signs in (the API is stateless), and one entry per request would drown the log.
pub const SIGN_IN_AUDIT_WINDOW: Duration = Duration::from_secs(600);

/// Failed sign-ins of one address and reason recorded one by one in [`REFUSAL_WINDOW`]; the
/// rest are counted and recorded as one summary entry when the window ends.
pub const REFUSALS_RECORDED: u32 = 10;
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// The longest user name kept in an audit entry of a failed sign-in, in characters.
pub const AUDITED_NAME: usize = 128;

#[derive(Clone, Debug)]
struct Window {
    start: Instant,
    started_ms: i64,
    recorded: u32,
    counted: u32,
    /// The first few user names among those counted (bounded), so that a summary still says
    /// which accounts were tried.
    users: Vec<String>,
}

impl Window {
    fn new() -> Window {
        Window {
            start: Instant::now(),
            started_ms: crate::now_ms(),
            recorded: 0,
            counted: 0,
            users: Vec::new(),
        }
    }

    fn count(&mut self, user: &str) {
        self.counted += 1;
        let user = bounded(user, 64);
        if self.users.len() < SUMMARY_USERS && !self.users.contains(&user) {
            self.users.push(user);
        }
    }
}

/// User names a summary of failed sign-ins lists.
pub const SUMMARY_USERS: usize = 10;

/// Failed sign-ins recorded one by one in a [`REFUSAL_WINDOW`], all addresses together; past
/// it, every refusal is counted (a botnet of many addresses cannot fill the disk either).
pub const REFUSALS_RECORDED_IN_ALL: u32 = 600;

/// Where refusals are counted when no address may be told apart (the budget of all addresses
/// is spent, or too many addresses are tracked).
const ANY_ADDRESS: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// Why an attempt cannot begin.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// The user or the address failed too often: refused for the lockout period.
    Locked,
    /// Attempts in progress hold every slot that is left: try again in a moment.
    Busy,
}

/// An attempt in progress: it holds a slot of its user and its address until it is settled.
/// Dropped unsettled (a client that went away mid-check), it counts as a failure.
pub struct Attempt<'a> {
    limiter: &'a Limiter,
    keys: Vec<String>,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right: the slot is given back and the user's failures are cleared.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut map = self.limiter.lock();
        for (i, k) in self.keys.iter().enumerate() {
            if let Some(c) = map.get_mut(k) {
                c.pending = c.pending.saturating_sub(1);
                if i == 0 {
                    c.failures = 0;
                }
                if c.pending == 0 && c.failures == 0 {
                    map.remove(k);
                }
            }
        }
    }

    /// The check did not happen (the pool was busy): the slot is given back, nothing counted.
    pub fn succeeded_without_clearing(mut self) {
        self.settled = true;
        let mut map = self.limiter.lock();
        for k in &self.keys {
            if let Some(c) = map.get_mut(k) {
                c.pending = c.pending.saturating_sub(1);
            }
        }
    }

    /// The password was wrong: the slot becomes a failure.
    pub fn failed(mut self) {
        self.settle_failed();
    }

    fn settle_failed(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut map = self.limiter.lock();
        for k in &self.keys {
            if let Some(c) = map.get_mut(k) {
                c.pending = c.pending.saturating_sub(1);
                c.failures += 1;
                c.since = Instant::now();
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.settle_failed();
    }
}

impl Limiter {
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            config,
            ..Limiter::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Count>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this sign-in is the first of its kind in [`SIGN_IN_AUDIT_WINDOW`] (and so is
    /// audited); notes it.
    pub(crate) fn first_sign_in(&self, what: &str) -> bool {
        {
            let map = self.audited.read().unwrap_or_else(|p| p.into_inner());
            if map
                .get(what)
                .is_some_and(|at| at.elapsed() < SIGN_IN_AUDIT_WINDOW)
            {
                return false;
            }
        }
        let mut map = self.audited.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, at| at.elapsed() < SIGN_IN_AUDIT_WINDOW);
            if map.len() >= MAX_TRACKED {
                // Forgetting one means auditing it again: the safe side.
                map.clear();
            }
        }
        match map.get(what) {
            Some(at) if at.elapsed() < SIGN_IN_AUDIT_WINDOW => false,
            _ => {
                map.insert(what.to_string(), Instant::now());
                true
            }
        }
    }

    /// Failures and attempts in progress of `who` that count now.
    fn held(&self, map: &HashMap<String, Count>, who: &str) -> (u32, u32) {
        match map.get(who) {
            Some(c) if c.since.elapsed() < self.config.lockout => (c.failures, c.pending),
            Some(c) => (0, c.pending),
            None => (0, 0),
        }
    }

    /// Makes room for a new entry: entries whose lock-out ended go first, then those below
    /// the limit with no attempt in progress.
    fn make_room(&self, map: &mut HashMap<String, Count>) {
        if map.len() < MAX_TRACKED {
            return;
        }
        let lockout = self.config.lockout;
        map.retain(|_, c| c.pending > 0 || (c.failures > 0 && c.since.elapsed() < lockout));
        if map.len() >= MAX_TRACKED {
            let lock_after = self.config.lock_after;
            map.retain(|_, c| c.pending > 0 || c.failures >= lock_after);
        }
    }

    /// Has `who` failed `lock_after` times within the lockout period (attempts in progress
    /// included)?
    #[cfg(test)]
    pub(crate) fn locked(&self, who: &str) -> bool {
        let map = self.lock();
        let (f, p) = self.held(&map, who);
        f + p >= self.config.lock_after
    }

    /// The entry of `who`, made (room made first) if there is none; its failures forgotten once
    /// the lockout period passed.
    fn entry<'m>(&self, map: &'m mut HashMap<String, Count>, who: &str) -> &'m mut Count {
        if !map.contains_key(who) {
            self.make_room(map);
        }
        let c = map.entry(who.to_string()).or_insert(Count {
            failures: 0,
            pending: 0,
            since: Instant::now(),
        });
        if c.since.elapsed() >= self.config.lockout {
            c.failures = 0;
        }
        c
    }

    #[cfg(test)]
    pub(crate) fn fail(&self, who: &str) {
        let mut map = self.lock();
        let e = self.entry(&mut map, who);
        e.failures += 1;
        e.since = Instant::now();
    }

    /// Reserves a slot of each key under its limit, all or none: refused while one is locked
    /// out, or (not locked, but the attempts in progress hold every slot left) busy: that
    /// attempt waits for them (503, try again), it is not refused as a wrong password would be.
    /// Returns the most failures among them (what slows the attempt).
    fn reserve(&self, keys: &[(String, u32)]) -> Result<u32, Gate> {
        let mut map = self.lock();
        let held: Vec<(u32, u32)> = keys.iter().map(|(k, _)| self.held(&map, k)).collect();
        if keys
            .iter()
            .zip(&held)
            .any(|((_, limit), (f, _))| f >= limit)
        {
            return Err(Gate::Locked);
        }
        if keys
            .iter()
            .zip(&held)
            .any(|((_, limit), (f, p))| f + p >= *limit)
        {
            return Err(Gate::Busy);
        }
        for (k, _) in keys {
            self.entry(&mut map, k).pending += 1;
        }
        Ok(held.iter().map(|(f, _)| *f).max().unwrap_or(0))
    }

    /// Begins a Basic sign-in of `user` from `addr`: reserves a slot of each (so that at most
    /// the limit is ever checked, however many arrive at once), or refuses (see [`Self::reserve`]).
    /// The delay is how long to wait before checking (slowing after `slow_after`).
    pub(crate) fn begin(&self, user: &str, addr: IpAddr) -> Result<(Attempt<'_>, Duration), Gate> {
        let keys = [
            (format!("user:{user}"), self.config.lock_after),
            (
                format!("addr:{}", network(addr)),
                self.config.address_lock_after,
            ),
        ];
        let n = self.reserve(&keys)?.min(self.config.lock_after);
        let over = n.saturating_sub(self.config.slow_after.saturating_sub(1));
        Ok((
            Attempt {
                limiter: self,
                keys: keys.into_iter().map(|(k, _)| k).collect(),
                settled: false,
            },
            Duration::from_secs(u64::from(over).min(5)),
        ))
    }

    /// `user`'s turn for password work on the hashing pool, or None while it has one already.
    pub(crate) fn turn(&self, user: &str) -> Option<Turn<'_>> {
        let mut set = self.hashing.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(user.to_string()) {
            return None;
        }
        Some(Turn {
            limiter: self,
            user: user.to_string(),
        })
    }

    /// Begins a check counted under `who` alone (a wrong `oldPassword` counts like a failed
    /// sign-in): reserves a slot of it, or refuses while it is locked out or its slots are held.
    pub(crate) fn begin_one(&self, who: &str) -> Result<Attempt<'_>, Gate> {
        self.reserve(&[(who.to_string(), self.config.lock_after)])?;
        Ok(Attempt {
            limiter: self,
            keys: vec![who.to_string()],
            settled: false,
        })
    }

    /// Whether a failure of `reason` from `addr` is recorded on its own (the first
    /// [`REFUSALS_RECORDED`] of a window) or only counted; returns the summary of a window that
    /// ended, to be recorded first.
    fn note_refusal(&self, addr: IpAddr, reason: &'static str, user: &str) -> (bool, Vec<Json>) {
        let addr = network(addr);
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = Vec::new();
        for key in [(addr, reason), (ANY_ADDRESS, "*")] {
            if let Some(w) = map.get(&key)
                && w.start.elapsed() >= REFUSAL_WINDOW
            {
                ended.extend(summary(key.0, key.1, w));
                map.remove(&key);
            }
        }
        let all = map.entry((ANY_ADDRESS, "*")).or_insert_with(Window::new);
        let budget_left = all.recorded < REFUSALS_RECORDED_IN_ALL;
        if map.len() >= MAX_TRACKED && !map.contains_key(&(addr, reason)) {
            // Too many addresses at once: counted with all the others.
            map.entry((ANY_ADDRESS, "*"))
                .or_insert_with(Window::new)
                .count(user);
            return (false, ended);
        }
        let w = map.entry((addr, reason)).or_insert_with(Window::new);
        if w.recorded < REFUSALS_RECORDED && budget_left {
            w.recorded += 1;
            map.entry((ANY_ADDRESS, "*"))
                .or_insert_with(Window::new)
                .recorded += 1;
            (true, ended)
        } else {
            w.count(user);
            (false, ended)
        }
    }

    /// The summaries of the windows that ended (all, with `all`), removed.
    fn ended_windows(&self, all: bool) -> Vec<Json> {
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        map.retain(|(addr, reason), w| {
            if all || w.start.elapsed() >= REFUSAL_WINDOW {
                out.extend(summary(*addr, reason, w));
                false
            } else {
                true
            }
        });
        out
    }
}

/// The network an address is counted under: an IPv4 address itself (an IPv4-mapped IPv6 one
/// as IPv4), an IPv6 address its /64 (one host usually holds a whole /64, and would otherwise
/// have 2^64 addresses to spread its attempts over).
pub fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

fn summary(addr: IpAddr, reason: &str, w: &Window) -> Option<Json> {
    (w.counted > 0).then(|| {
        let address = if addr == ANY_ADDRESS {
            "*".to_string()
        } else {
            addr.to_string()
        };
        serde_json::json!({
            "address": address, "reason": reason, "count": w.counted, "users": w.users,
            "from": thinghost_core::types::format_datetime(w.started_ms),
            "to": thinghost_core::types::format_datetime(crate::now_ms()),
        })
    })
}

/// A user name or detail as an audit entry keeps it: control characters escaped, at most
/// `max` characters, marked when cut.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown >= max {
            out.push_str(&format!(
                "...(truncated, {} characters)",
                text.chars().count()
            ));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Audits a refused sign-in (AUTHENTICATION, its reason): the user name and detail bounded
/// ([`bounded`]); per address and reason the first [`REFUSALS_RECORDED`] of a
/// [`REFUSAL_WINDOW`] one by one, the rest as one `signInFailuresCounted` entry when the
/// window ends (so a flood of bad credentials cannot fill the disk through the audit log).
pub fn audit_refusal(app: &App, r: &Refused, addr: IpAddr, endpoint: Option<&str>) {
    let (record, ended) = app.auth.note_refusal(addr, r.key, &r.user);
    for s in ended {
        write_summary(app, s);
    }
    if record {
        let mut args = serde_json::json!({"detail": bounded(&r.detail, 4 * AUDITED_NAME), "address": addr.to_string()});
        if let Some(endpoint) = endpoint {
            args["endpoint"] = Json::from(endpoint);
        }
        app.audit(
            &bounded(&r.user, AUDITED_NAME),
            crate::state::audit::category::AUTHENTICATION,
            r.key,
            args,
            "",
            "",
        );
    }
}

fn write_summary(app: &App, s: Json) {
    app.audit_queued(
        "",
        crate::state::audit::category::AUTHENTICATION,
        "signInFailuresCounted",
        s,
        "",
        "",
    );
}

/// Records the summaries of the windows of failed sign-ins that ended (every one with `all`,
/// when the server stops).
pub fn write_summaries(app: &App, all: bool) {
    for s in app.auth.ended_windows(all) {
        write_summary(app, s);
    }
}

/// True if `addr` is in one of the allow-list entries (addresses or CIDR ranges).
pub fn allowed_address(addr: IpAddr, list: &[String]) -> bool {
    list.is_empty()
        || list.iter().any(|entry| {
            let (net, prefix) = match entry.split_once('/') {
                Some((n, p)) => (n, p.parse::<u32>().ok()),
                None => (entry.as_str(), None),
            };
            let Ok(net) = net.trim().parse::<IpAddr>() else {
                return false;
            };
            let addr = match (addr, net) {
                (IpAddr::V6(v6), IpAddr::V4(_)) => {
                    v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr)
                }
                _ => addr,
            };
            match (addr, net) {
                (IpAddr::V4(a), IpAddr::V4(n)) => {
                    let bits = prefix.unwrap_or(32).min(32);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - bits)
                    };
                    u32::from(a) & mask == u32::from(n) & mask
                }
                (IpAddr::V6(a), IpAddr::V6(n)) => {
                    let bits = prefix.unwrap_or(128).min(128);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - bits)
                    };
                    u128::from(a) & mask == u128::from(n) & mask
                }
                _ => false,
            }
        })
}

/// The subject of the user `name`, if it may act now (enabled, not locked, not System).
pub fn user_usable(model: &thinghost_core::Model, name: &str) -> Result<Subject, Refused> {
    match model.get(Kind::User, name).map(|u| &u.body) {
        Some(Body::User(u)) if !u.enabled => {
            Err(refused(name, "userDisabled", "the user is disabled"))
        }
        Some(Body::User(u)) if u.locked => Err(refused(name, "userLocked", "the user is locked")),
        Some(_) if name == thinghost_core::predefined::SYSTEM => {
            Err(refused(name, "systemContext", "System cannot sign in"))
        }
        Some(_) => model
            .subject(name)
            .ok_or_else(|| refused(name, "unknownUser", "no such user")),
        None => Err(refused(name, "unknownUser", "no such user")),
    }
}

/// Does `subject` still act as `name`: the same user (not one deleted and created again under
/// the name), enabled and not locked? What a long-lived context (a `/Thingworx/TWS` connection, a
/// remote-access session) asks before it acts again.
pub fn still_acts(
    model: &thinghost_core::Model,
    name: &str,
    subject: Subject,
) -> Result<(), Refused> {
    let now = user_usable(model, name)?;
    if now != subject {
        return Err(refused(
            name,
            "userReplaced",
            "the user was deleted (another user of that name is not the same one)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_addresses_and_ranges() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(allowed_address(a, &[]));
        assert!(allowed_address(a, &["10.0.0.0/8".into()]));
        assert!(allowed_address(a, &["10.1.2.3".into()]));
        assert!(!allowed_address(
            a,
            &["10.1.2.4".into(), "192.168.0.0/16".into()]
        ));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(allowed_address(mapped, &["10.0.0.0/8".into()]));
        assert!(allowed_address("::1".parse().unwrap(), &["::1/128".into()]));
        assert!(!allowed_address(a, &["not an address".into()]));
    }

    #[test]
    fn k5_the_limiter_slows_then_locks() {
        let l = Limiter::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let delay = |l: &Limiter, user: &str, addr: IpAddr| {
            l.begin(user, addr).map(|(a, d)| {
                a.succeeded_without_clearing();
                d
            })
        };
        assert_eq!(delay(&l, "bob", addr), Ok(Duration::ZERO));
        let c = LimiterConfig::default();
        for _ in 0..c.slow_after {
            l.fail("user:bob");
        }
        assert_eq!(delay(&l, "bob", addr), Ok(Duration::from_secs(1)));
        for _ in c.slow_after..c.lock_after {
            l.fail("user:bob");
        }
        assert!(delay(&l, "bob", addr).is_err());
        assert_eq!(
            delay(&l, "alice", "127.0.0.2".parse().unwrap()),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn k5_attempts_in_progress_hold_slots_so_at_most_the_limit_is_checked() {
        let l = Limiter::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let limit = l.config.lock_after as usize;
        // Two hundred at once: only `limit` get a slot.
        let tried: Vec<_> = (0..200).map(|_| l.begin("bob", addr)).collect();
        let busy = tried
            .iter()
            .filter(|r| r.as_ref().err() == Some(&Gate::Busy))
            .count();
        let attempts: Vec<_> = tried.into_iter().filter_map(Result::ok).collect();
        assert_eq!(attempts.len(), limit);
        assert_eq!(busy, 200 - limit, "the others wait: not locked out (yet)");
        // They all fail: bob stays locked; a dropped (abandoned) attempt counts as a failure.
        let mut attempts = attempts.into_iter();
        attempts.next().unwrap().0.failed();
        drop(attempts);
        assert!(l.locked("user:bob"));
        assert_eq!(l.begin("bob", addr).err(), Some(Gate::Locked));
        // A success gives its slot back and clears the user's failures.
        let (a, _) = l.begin("carol", addr).unwrap();
        a.succeeded();
        assert!(!l.locked("user:carol"));
    }

    #[test]
    fn k5_an_address_limit_covers_many_user_names() {
        let l = Limiter::default();
        let addr: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..l.config.address_lock_after {
            l.begin(&format!("user{i}"), addr).unwrap().0.failed();
        }
        assert!(l.begin("someone-else", addr).is_err());
        assert!(l.begin("someone-else", "10.0.0.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn k5_one_user_hashes_one_password_at_a_time() {
        let l = Limiter::default();
        let turn = l.turn("ann").unwrap();
        assert!(l.turn("ann").is_none(), "ann's second waits");
        assert!(l.turn("bob").is_some(), "bob has his own turn");
        drop(turn);
        assert!(l.turn("ann").is_some());
    }

    #[test]
    fn k5_an_ipv6_host_counts_as_its_64() {
        let l = Limiter::default();
        for i in 0..l.config.address_lock_after {
            let a: IpAddr = format!("2001:db8::{:x}", i + 1).parse().unwrap();
            l.begin(&format!("user{i}"), a).unwrap().0.failed();
        }
        assert!(l.begin("x", "2001:db8::ffff".parse().unwrap()).is_err());
        assert!(l.begin("x", "2001:db8:0:1::1".parse().unwrap()).is_ok());
        assert_eq!(
            network("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn k5_the_limiter_forgets_past_its_bound() {
        let l = Limiter::default();
        for i in 0..MAX_TRACKED + 10 {
            l.fail(&format!("user:u{i}"));
        }
        assert!(l.lock().len() <= MAX_TRACKED);
    }

    #[test]
    fn u1_audited_names_are_bounded_and_escaped() {
        assert_eq!(bounded("bob", 128), "bob");
        assert_eq!(bounded("a\nb\u{7}", 128), "a\\nb\\u{7}");
        let long = bounded(&"x".repeat(100_000), AUDITED_NAME);
        assert!(long.starts_with(&"x".repeat(AUDITED_NAME)));
        assert!(
            long.ends_with("...(truncated, 100000 characters)"),
            "{long}"
        );
        assert!(long.len() < 200);
    }

    #[test]
    fn u1_refusals_past_the_first_of_a_window_are_counted_not_recorded() {
        let l = Limiter::default();
        let addr: IpAddr = "10.0.0.9".parse().unwrap();
        let recorded = (0..100)
            .filter(|i| {
                l.note_refusal(addr, "badPassword", &format!("u{}", i % 3))
                    .0
            })
            .count();
        assert_eq!(recorded, REFUSALS_RECORDED as usize);
        assert!(l.note_refusal(addr, "unknownKey", "").0, "another reason");
        let s = l.ended_windows(true);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0]["count"], 100 - REFUSALS_RECORDED);
        assert_eq!(s[0]["reason"], "badPassword");
        assert_eq!(s[0]["users"], serde_json::json!(["u1", "u2", "u0"]));
    }

    #[test]
    fn u1_refusals_of_many_addresses_share_one_budget() {
        let l = Limiter::default();
        let mut recorded = 0;
        for i in 0..5_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for _ in 0..3 {
                if l.note_refusal(addr, "unknownKey", "").0 {
                    recorded += 1;
                }
            }
        }
        assert_eq!(recorded, REFUSALS_RECORDED_IN_ALL);
        let counted: u64 = l
            .ended_windows(true)
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 15_000 - u64::from(REFUSALS_RECORDED_IN_ALL));
    }
}
