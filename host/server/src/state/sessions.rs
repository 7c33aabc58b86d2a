//! Remote-access sessions and their nonce keys (DOMAIN S1, K6).
//!
//! A session is started by a remote-access extension's `StartSession` (host function
//! `start_session`) for the user who called it, on the Thing whose service runs. It comes with a
//! nonce key: random like an application key (128 bits), kept only as its hash, bound to the user
//! and the session, good for one use within its lifetime (15 s by default). The remote-access
//! client presents it once, on `/Thingworx/TWS` only (`http.rs`), to open the session's
//! connection. Sessions live as long as the server process: a restart ends them all, as it ends
//! every connection to a device.

use crate::state::keys;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use thinghost_core::{EntityId, Subject};
use tokio::sync::watch;

/// Where remote-access clients reach this server (`serve --public-url`): the launch URI's host
/// and port.
#[derive(Clone, Debug)]
pub struct PublicAddress {
    pub host: String,
    pub port: u16,
}

/// A session's state as its connection reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started; no client connected yet.
    Started,
    /// A client redeemed the nonce and is connected.
    Connected,
    /// Ended (by `EndSession`): the connection closes.
    Ended,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Connected => "connected",
            Phase::Ended => "ended",
        }
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub thing: String,
    /// The Thing's identity: a Thing deleted and created again under the name is not this one.
    pub thing_id: EntityId,
    pub user: String,
    /// The user's identity: a user deleted and created again under the name is not this one.
    pub subject: Subject,
    pub endpoint: String,
    /// Milliseconds since the epoch.
    pub started: i64,
    phase: watch::Sender<Phase>,
    /// When it started, and when it was last used (started, connected, a message on its
    /// connection): what idle and maximum-age expiry measure.
    since: Instant,
    last_used: Instant,
}

impl Session {
    /// As services answer it.
    pub fn json(&self) -> Json {
        json!({
            "sessionId": self.id, "thingName": self.thing, "user": self.user,
            "remoteEndpoint": self.endpoint, "startTime": thinghost_core::types::format_datetime(self.started),
            "state": self.phase.borrow().name(),
        })
    }

    /// The session's state changes, for its connection.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }
}

struct Nonce {
    hash: String,
    user: String,
    subject: Subject,
    session: String,
    expires: Instant,
}

/// A redeemed nonce: whose it was, the session's Thing, and the session's state changes.
#[derive(Debug)]
pub struct Redeemed {
    pub user: String,
    pub subject: Subject,
    pub thing: String,
    pub phase: watch::Receiver<Phase>,
}

/// A started session: what `StartSession` answers.
pub struct Started {
    pub session: Json,
    pub nonce: String,
    pub launch_uri: String,
    pub expires_in: Duration,
}

/// Why a nonce was not accepted (audited; the client sees only 401).
#[derive(Debug, PartialEq, Eq)]
pub enum NonceRefused {
    /// Never issued, already used, or expired and removed.
    Unknown,
    Expired {
        user: String,
    },
    /// Issued for another session.
    WrongSession {
        user: String,
    },
}

/// Fair shares of remote access (`serve --max-sessions-per-user`, `--session-idle-seconds`,
/// `--session-max-hours`): one user cannot hold more than `per_user` sessions, and a session
/// ends when unused for `idle` or older than `max_age`.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub per_user: usize,
    pub idle: Duration,
    pub max_age: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            per_user: 10,
            idle: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(8 * 3600),
        }
    }
}

/// Every session and nonce of the server.
pub struct Sessions {
    inner: Mutex<Inner>,
    pub nonce_lifetime: Duration,
    pub limits: SessionLimits,
    /// Set once, when the server knows its address (`serve --public-url`, else where it listens).
    pub public: std::sync::OnceLock<PublicAddress>,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<String, Session>,
    nonces: Vec<Nonce>,
}

impl Inner {
    /// Nonces past their expiry are removed (K6: at first use or expiry, whichever is first).
    fn sweep(&mut self, now: Instant) {
        self.nonces.retain(|n| n.expires > now);
    }
}

fn random_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(thinghost_core::hex(&bytes))
}

impl Sessions {
    pub fn new(nonce_lifetime: Duration) -> Sessions {
        Sessions::with_limits(nonce_lifetime, SessionLimits::default())
    }

    pub fn with_limits(nonce_lifetime: Duration, limits: SessionLimits) -> Sessions {
        Sessions {
            inner: Mutex::new(Inner::default()),
            nonce_lifetime,
            limits,
            public: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the sessions past their idle time or maximum age (their connections are told and
    /// close); returns them, to be audited.
    pub fn expire(&self) -> Vec<Json> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let limits = self.limits;
        let gone: Vec<String> = inner
            .sessions
            .values()
            .filter(|s| {
                now.duration_since(s.last_used) >= limits.idle
                    || now.duration_since(s.since) >= limits.max_age
            })
            .map(|s| s.id.clone())
            .collect();
        gone.iter()
            .filter_map(|id| {
                let s = inner.sessions.remove(id)?;
                inner.nonces.retain(|n| &n.session != id);
                s.phase.send_replace(Phase::Ended);
                let mut answer = s.json();
                answer["state"] = json!(Phase::Ended.name());
                answer["reason"] = json!(if now.duration_since(s.since) >= limits.max_age {
                    "maximum age"
                } else {
                    "idle"
                });
                Some(answer)
            })
            .collect()
    }

    /// Notes that session `id` was used (a message on its connection).
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.lock().sessions.get_mut(id) {
            s.last_used = Instant::now();
        }
    }

    /// Starts a session of `user` on `thing` to `endpoint`, with a nonce key for `user`. Refused
    /// when `user` holds [`SessionLimits::per_user`] sessions already.
    pub fn start(
        &self,
        (thing, thing_id): (&str, EntityId),
        (user, subject): (&str, Subject),
        endpoint: &str,
    ) -> Result<Started, String> {
        let id = random_id()?;
        let key = keys::generate().map_err(|e| format!("no randomness: {e}"))?;
        let now = Instant::now();
        let (phase, _) = watch::channel(Phase::Started);
        let session = Session {
            id: id.clone(),
            thing: thing.to_string(),
            thing_id,
            user: user.to_string(),
            subject,
            endpoint: endpoint.to_string(),
            started: crate::now_ms(),
            phase,
            since: Instant::now(),
            last_used: Instant::now(),
        };
        let answer = session.json();
        let mut inner = self.lock();
        inner.sweep(now);
        let held = inner
            .sessions
            .values()
            .filter(|s| s.subject == subject)
            .count();
        if held >= self.limits.per_user {
            return Err(format!(
                "{user} holds {held} remote-access sessions, the most one user may hold (serve --max-sessions-per-user); end one with EndSession first"
            ));
        }
        inner.nonces.push(Nonce {
            hash: key.hash,
            user: user.to_string(),
            subject,
            session: id.clone(),
            expires: now + self.nonce_lifetime,
        });
        inner.sessions.insert(id.clone(), session);
        let public = self.public.get().cloned().unwrap_or(PublicAddress {
            host: "localhost".into(),
            port: 8443,
        });
        let launch_uri = format!(
            "thinghost-rac://{}:{}/{id}?nonce={}",
            public.host, public.port, key.secret
        );
        Ok(Started {
            session: answer,
            nonce: key.secret,
            launch_uri,
            expires_in: self.nonce_lifetime,
        })
    }

    /// The session `id` on `thing`, if `user` may see it (its own, or any for an administrator).
    pub fn get(&self, id: &str, thing: &str, user: Subject, admin: bool) -> Option<Json> {
        let inner = self.lock();
        inner
            .sessions
            .get(id)
            .filter(|s| s.thing == thing && (admin || s.subject == user))
            .map(Session::json)
    }

    /// The current sessions on `thing` that `user` may see, oldest first.
    pub fn list(&self, thing: &str, user: Subject, admin: bool) -> Vec<Json> {
        let inner = self.lock();
        let mut out: Vec<&Session> = inner
            .sessions
            .values()
            .filter(|s| s.thing == thing && (admin || s.subject == user))
            .collect();
        out.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        out.into_iter().map(Session::json).collect()
    }

    /// Ends session `id` on `thing`, if `user` may see it; its connection is told and closes, its
    /// unused nonce goes. Returns what it was.
    pub fn end(&self, id: &str, thing: &str, user: Subject, admin: bool) -> Option<Json> {
        let mut inner = self.lock();
        let visible = inner
            .sessions
            .get(id)
            .is_some_and(|s| s.thing == thing && (admin || s.subject == user));
        if !visible {
            return None;
        }
        let s = inner.sessions.remove(id).expect("checked");
        inner.nonces.retain(|n| n.session != id);
        s.phase.send_replace(Phase::Ended);
        let mut answer = s.json();
        answer["state"] = json!(Phase::Ended.name());
        Some(answer)
    }

    /// Redeems a nonce presented for session `session`: it is removed whatever the outcome (one
    /// presentation, one use). On success: the user and a receiver of the session's state.
    pub fn redeem(&self, nonce: &str, session: &str) -> Result<Redeemed, NonceRefused> {
        let hash = keys::hash(nonce);
        let now = Instant::now();
        let mut inner = self.lock();
        // Compare with every stored hash in constant time; take the one that matches.
        let mut found = None;
        for (i, n) in inner.nonces.iter().enumerate() {
            if bool::from(n.hash.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            return Err(NonceRefused::Unknown);
        };
        let n = inner.nonces.remove(i);
        if n.expires <= now {
            return Err(NonceRefused::Expired { user: n.user });
        }
        if n.session != session {
            return Err(NonceRefused::WrongSession { user: n.user });
        }
        let Some(s) = inner.sessions.get_mut(session) else {
            return Err(NonceRefused::Unknown);
        };
        s.last_used = now;
        s.phase.send_replace(Phase::Connected);
        Ok(Redeemed {
            user: n.user,
            subject: n.subject,
            thing: s.thing.clone(),
            phase: s.watch(),
        })
    }

    /// Ends the sessions whose user or Thing no longer is what it was (`acts` says why not: the
    /// user disabled, locked or deleted, the Thing deleted); their connections are told and
    /// close. Returns them, with the reason, to be audited.
    pub fn end_unless(&self, acts: impl Fn(&Session) -> Result<(), String>) -> Vec<Json> {
        let mut inner = self.lock();
        let gone: Vec<(String, String)> = inner
            .sessions
            .values()
            .filter_map(|s| acts(s).err().map(|why| (s.id.clone(), why)))
            .collect();
        gone.into_iter()
            .filter_map(|(id, why)| {
                let s = inner.sessions.remove(&id)?;
                inner.nonces.retain(|n| n.session != id);
                s.phase.send_replace(Phase::Ended);
                let mut answer = s.json();
                answer["state"] = json!(Phase::Ended.name());
                answer["reason"] = json!(why);
                Some(answer)
            })
            .collect()
    }

    /// The session `id` as JSON (for its own connection).
    pub fn describe(&self, id: &str) -> Option<Json> {
        self.lock().sessions.get(id).map(Session::json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's identity, by name (ids as a model would give them).
    fn who(name: &str) -> (&str, Subject) {
        let id = match name {
            "ann" => 10,
            "bob" => 11,
            _ => 12,
        };
        (name, Subject::User(thinghost_core::EntityId(id)))
    }
    fn subject(name: &str) -> Subject {
        who(name).1
    }

    fn sessions(lifetime: Duration) -> Sessions {
        let s = Sessions::new(lifetime);
        s.public
            .set(PublicAddress {
                host: "example.com".into(),
                port: 8443,
            })
            .unwrap();
        s
    }

    #[test]
    fn k6_a_nonce_is_good_once_for_its_session_and_user_only() {
        let s = sessions(Duration::from_secs(15));
        let a = s
            .start(("Pump", EntityId(1)), who("ann"), "10.0.0.5:22")
            .unwrap();
        let b = s
            .start(("Pump", EntityId(1)), who("bob"), "10.0.0.6:22")
            .unwrap();
        let id_a = a.session["sessionId"].as_str().unwrap().to_string();
        let id_b = b.session["sessionId"].as_str().unwrap().to_string();
        assert_eq!(
            a.launch_uri,
            format!("thinghost-rac://example.com:8443/{id_a}?nonce={}", a.nonce)
        );
        // Another session's nonce: refused, and burnt.
        assert_eq!(
            s.redeem(&b.nonce, &id_a).unwrap_err(),
            NonceRefused::WrongSession { user: "bob".into() }
        );
        assert_eq!(
            s.redeem(&b.nonce, &id_b).unwrap_err(),
            NonceRefused::Unknown
        );
        let Redeemed {
            user, thing, phase, ..
        } = s.redeem(&a.nonce, &id_a).unwrap();
        assert_eq!((user.as_str(), thing.as_str()), ("ann", "Pump"));
        assert_eq!(*phase.borrow(), Phase::Connected);
        assert_eq!(
            s.redeem(&a.nonce, &id_a).unwrap_err(),
            NonceRefused::Unknown
        );
        assert_eq!(
            s.redeem("not-a-nonce", &id_a).unwrap_err(),
            NonceRefused::Unknown
        );
    }

    #[test]
    fn k6_an_expired_nonce_is_refused() {
        let s = sessions(Duration::ZERO);
        let a = s.start(("Pump", EntityId(1)), who("ann"), "x").unwrap();
        let id = a.session["sessionId"].as_str().unwrap().to_string();
        assert_eq!(
            s.redeem(&a.nonce, &id).unwrap_err(),
            NonceRefused::Expired { user: "ann".into() }
        );
    }

    #[test]
    fn s1_sessions_are_seen_and_ended_by_their_user_or_an_administrator() {
        let s = sessions(Duration::from_secs(15));
        let a = s.start(("Pump", EntityId(1)), who("ann"), "x").unwrap();
        let id = a.session["sessionId"].as_str().unwrap().to_string();
        s.start(("Pump", EntityId(1)), who("bob"), "y").unwrap();
        s.start(("Fan", EntityId(1)), who("ann"), "z").unwrap();
        assert_eq!(s.list("Pump", subject("ann"), false).len(), 1);
        assert_eq!(s.list("Pump", subject("root"), true).len(), 2);
        assert!(s.get(&id, "Pump", subject("bob"), false).is_none());
        assert!(
            s.get(&id, "Fan", subject("ann"), false).is_none(),
            "on its own Thing only"
        );
        let mut watch = s.redeem(&a.nonce, &id).unwrap().phase;
        assert!(s.end(&id, "Pump", subject("bob"), false).is_none());
        let ended = s.end(&id, "Pump", subject("ann"), false).unwrap();
        assert_eq!(ended["state"], "ended");
        // The last state stays readable after the session is gone.
        assert_eq!(*watch.borrow_and_update(), Phase::Ended);
        assert!(s.get(&id, "Pump", subject("ann"), false).is_none());
    }

    #[test]
    fn s1_one_user_holds_at_most_its_share_of_sessions() {
        let s = Sessions::with_limits(
            Duration::from_secs(15),
            SessionLimits {
                per_user: 3,
                ..SessionLimits::default()
            },
        );
        let ids: Vec<String> = (0..3)
            .map(|i| {
                s.start(("Pump", EntityId(1)), who("ann"), &format!("h:{i}"))
                    .unwrap()
                    .session["sessionId"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let refused = s
            .start(("Pump", EntityId(1)), who("ann"), "h:9")
            .err()
            .unwrap();
        assert!(refused.contains("--max-sessions-per-user"), "{refused}");
        // Another user is not held back by ann's share.
        s.start(("Pump", EntityId(1)), who("bob"), "h:1").unwrap();
        // Ending one gives ann a slot again.
        s.end(&ids[0], "Pump", subject("ann"), false).unwrap();
        s.start(("Pump", EntityId(1)), who("ann"), "h:10").unwrap();
    }

    #[test]
    fn s1_idle_and_old_sessions_end_by_themselves() {
        let s = Sessions::with_limits(
            Duration::from_secs(15),
            SessionLimits {
                per_user: 10,
                idle: Duration::from_millis(300),
                max_age: Duration::from_secs(3600),
            },
        );
        let a = s.start(("Pump", EntityId(1)), who("ann"), "x").unwrap();
        let id = a.session["sessionId"].as_str().unwrap().to_string();
        let phase = s.redeem(&a.nonce, &id).unwrap().phase;
        let busy = s.start(("Pump", EntityId(1)), who("bob"), "y").unwrap();
        let busy_id = busy.session["sessionId"].as_str().unwrap().to_string();
        assert!(s.expire().is_empty(), "nothing is idle yet");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            s.touch(&busy_id);
        }
        let gone = s.expire();
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0]["sessionId"], id.as_str());
        assert_eq!(gone[0]["reason"], "idle");
        assert_eq!(*phase.borrow(), Phase::Ended, "its connection is told");
        assert!(s.get(&id, "Pump", subject("ann"), false).is_none());
        assert!(s.get(&busy_id, "Pump", subject("bob"), false).is_some());
        // The maximum age ends a session however busy.
        let old = Sessions::with_limits(
            Duration::from_secs(15),
            SessionLimits {
                per_user: 10,
                idle: Duration::from_secs(3600),
                max_age: Duration::ZERO,
            },
        );
        old.start(("Pump", EntityId(1)), who("ann"), "x").unwrap();
        assert_eq!(old.expire()[0]["reason"], "maximum age");
    }
}
