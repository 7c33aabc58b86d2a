//! Authentication (DOMAIN K1-K5): application keys in the `appKey` header, HTTP Basic for users,
//! client certificates under mutual TLS. Every failure answers 401 with the same body, and is
//! audited with its real reason.

use crate::app::{App, Peer};
use axum::http::{HeaderMap, Uri};
use base64::Engine as _;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use thinghost_core::{Body, Kind, Subject, View};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub subject: Subject,
    pub name: String,
    /// How deep in extension service calls this request is (0 for a request from outside).
    pub depth: u8,
}

/// Why authentication failed; the client sees only "401", the audit log sees this.
#[derive(Debug)]
pub struct Refused {
    pub user: String,
    pub key: &'static str,
    pub detail: String,
}

fn refused(user: &str, key: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        user: user.to_string(),
        key,
        detail: detail.into(),
    }
}

/// Failed sign-ins are counted per user and per address. After `slow_after` failures each
/// further attempt waits one second more (at most five); after `lock_after` failures the user or
/// address is refused for `lockout`, whatever the password. A success clears the user's count.
#[derive(Clone, Copy, Debug)]
pub struct LimiterConfig {
    pub slow_after: u32,
    pub lock_after: u32,
    pub lockout: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            slow_after: 3,
            lock_after: 10,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Default)]
pub struct Limiter {
    pub config: LimiterConfig,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// When each (method, user, credential, address) last had its sign-in audited.
    audited: Mutex<HashMap<String, Instant>>,
}

/// A successful sign-in is audited once per method, user, credential and address in this window:
/// every request signs in (the API is stateless), and one entry per request would drown the log.
pub const SIGN_IN_AUDIT_WINDOW: Duration = Duration::from_secs(600);

impl Limiter {
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            config,
            failures: Mutex::default(),
            audited: Mutex::default(),
        }
    }

    /// Whether this sign-in is the first of its kind in [`SIGN_IN_AUDIT_WINDOW`] (and so is
    /// audited); notes it.
    fn first_sign_in(&self, what: &str) -> bool {
        let mut map = self.audited.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, at| at.elapsed() < SIGN_IN_AUDIT_WINDOW);
        }
        match map.get(what) {
            Some(at) if at.elapsed() < SIGN_IN_AUDIT_WINDOW => false,
            _ => {
                map.insert(what.to_string(), Instant::now());
                true
            }
        }
    }

    fn count(&self, who: &str) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(who) {
            Some((n, since)) if since.elapsed() < self.config.lockout => *n,
            _ => 0,
        }
    }
    /// Has `who` failed `lock_after` times within the lockout period?
    pub(crate) fn locked(&self, who: &str) -> bool {
        self.count(who) >= self.config.lock_after
    }
    pub(crate) fn fail(&self, who: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(who.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.config.lockout {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        e.1 = Instant::now();
    }
    pub(crate) fn clear(&self, who: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(who);
    }
    /// The delay before a Basic sign-in is checked, or a refusal while locked out.
    fn gate(&self, user: &str, addr: IpAddr) -> Result<Duration, ()> {
        let n = self
            .count(&format!("user:{user}"))
            .max(self.count(&format!("addr:{addr}")));
        if n >= self.config.lock_after {
            return Err(());
        }
        let over = n.saturating_sub(self.config.slow_after.saturating_sub(1));
        Ok(Duration::from_secs(u64::from(over).min(5)))
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

/// Audits a successful sign-in (AUTHENTICATION, `signedIn`), once per window (see
/// [`SIGN_IN_AUDIT_WINDOW`]).
fn signed_in(app: &App, user: &str, method: &str, credential: &str, peer: &Peer) {
    let what = format!("{method}\u{0}{user}\u{0}{credential}\u{0}{}", peer.addr);
    if app.auth.first_sign_in(&what) {
        app.audit_queued(
            user,
            crate::audit::category::AUTHENTICATION,
            "signedIn",
            serde_json::json!({"method": method, "credential": credential, "address": peer.addr.to_string()}),
            &format!("Users/{user}"),
            "User",
        );
    }
}

/// Authenticates a request: an `appKey` header, else a client certificate, else HTTP Basic.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
    peer: &Peer,
) -> Result<Caller, Refused> {
    if let Some(q) = uri.query()
        && q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("appKey"))
        })
    {
        return Err(refused(
            "",
            "keyInUrl",
            "an application key was sent in the URL; send it in the appKey header",
        ));
    }
    if let Some(key) = headers.get("appKey") {
        let secret = key.to_str().unwrap_or("");
        let hash = crate::keys::hash(secret.trim());
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let model = db.model();
        let Some(entity) = model.application_key(&hash) else {
            return Err(refused(
                "",
                "unknownKey",
                format!(
                    "no key with fingerprint {}",
                    crate::keys::fingerprint(&hash)
                ),
            ));
        };
        let Body::ApplicationKey(k) = &entity.body else {
            unreachable!("indexed as a key")
        };
        // The lookup found the entry by hash; compare in constant time all the same.
        if !bool::from(k.key_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(refused(&k.user, "unknownKey", "hash mismatch"));
        }
        if k.expiration_date <= crate::now_ms() {
            return Err(refused(
                &k.user,
                "keyExpired",
                format!("key {} expired", entity.name),
            ));
        }
        if !allowed_address(peer.addr, &k.whitelist) {
            return Err(refused(
                &k.user,
                "addressNotAllowed",
                format!(
                    "key {} used from {}, outside its allow-list",
                    entity.name, peer.addr
                ),
            ));
        }
        let subject = user_usable(model, &k.user)?;
        let (user, key_name) = (k.user.clone(), entity.name.clone());
        drop(db);
        signed_in(app, &user, "appKey", &key_name, peer);
        return Ok(Caller {
            subject,
            name: user,
            depth: 0,
        });
    }
    if let Some(user) = &peer.client_cert_user {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let subject = user_usable(db.model(), user)?;
        drop(db);
        signed_in(app, user, "clientCertificate", "", peer);
        return Ok(Caller {
            subject,
            name: user.clone(),
            depth: 0,
        });
    }
    if let Some(auth) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| refused("", "badCredentials", "malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| refused("", "badCredentials", "malformed Basic credentials"))?;
        let delay = app.auth.gate(user, peer.addr).map_err(|_| {
            refused(
                user,
                "lockedOut",
                format!("too many failed sign-ins for {user} or from {}", peer.addr),
            )
        })?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let stored = {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            match db.model().get(Kind::User, user).map(|u| &u.body) {
                Some(Body::User(u)) => u.password_hash.clone(),
                _ => None,
            }
        };
        let ok = match &stored {
            Some(phc) => {
                let (phc, password) = (phc.clone(), password.to_string());
                tokio::task::spawn_blocking(move || crate::keys::verify_password(&password, &phc))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        if !ok {
            app.auth.fail(&format!("user:{user}"));
            app.auth.fail(&format!("addr:{}", peer.addr));
            return Err(refused(user, "badPassword", "wrong user name or password"));
        }
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let subject = user_usable(db.model(), user)?;
        drop(db);
        app.auth.clear(&format!("user:{user}"));
        signed_in(app, user, "password", "", peer);
        return Ok(Caller {
            subject,
            name: user.to_string(),
            depth: 0,
        });
    }
    Err(refused(
        "",
        "noCredentials",
        "no appKey header, client certificate or Basic credentials",
    ))
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
    fn the_limiter_slows_then_locks() {
        let l = Limiter::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(l.gate("bob", addr), Ok(Duration::ZERO));
        let c = LimiterConfig::default();
        for _ in 0..c.slow_after {
            l.fail("user:bob");
        }
        assert_eq!(l.gate("bob", addr), Ok(Duration::from_secs(1)));
        for _ in c.slow_after..c.lock_after {
            l.fail("user:bob");
        }
        assert!(l.gate("bob", addr).is_err());
        assert_eq!(
            l.gate("alice", "127.0.0.2".parse().unwrap()),
            Ok(Duration::ZERO)
        );
    }
}
