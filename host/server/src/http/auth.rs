//! Authentication of a request from what it carries (DOMAIN section 3, K1-K5): an `appKey`
//! header, a client certificate (mutual TLS), or HTTP Basic. The callers, the limiter of failed
//! sign-ins and the checks of a user's state are `crate::state::auth`'s; this file reads headers.

use crate::state::app::{App, Peer};
use crate::state::auth::*;
use axum::http::{HeaderMap, Uri};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use thinghost_core::{Body, Kind, View};

/// Audits a successful sign-in (AUTHENTICATION, `signedIn`), once per window (see
/// [`SIGN_IN_AUDIT_WINDOW`]).
fn signed_in(app: &App, user: &str, method: &str, credential: &str, peer: &Peer) {
    let what = format!("{method}\u{0}{user}\u{0}{credential}\u{0}{}", peer.addr);
    if app.auth.first_sign_in(&what) {
        app.audit_queued(
            user,
            crate::state::audit::category::AUTHENTICATION,
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
    if key_in_query(uri) {
        return Err(refused(
            "",
            "keyInUrl",
            "an application key was sent in the URL; send it in the appKey header",
        ));
    }
    if let Some(key) = headers.get("appKey") {
        return authenticate_key(app, key.to_str().unwrap_or(""), peer);
    }
    if let Some(user) = &peer.client_cert_user {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let subject = user_usable(db.model(), user)?;
        drop(db);
        signed_in(app, user, "clientCertificate", "", peer);
        return Ok(Caller {
            subject,
            name: user.as_str().into(),
            depth: 0,
            chain: None,
            in_model_code: false,
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
        // No entity name is longer: refused before any work, and never tracked.
        if user.chars().count() > thinghost_core::names::MAX_ENTITY_NAME {
            return Err(refused(
                user,
                "badCredentials",
                "the user name is longer than any user's",
            ));
        }
        let (attempt, delay) = app.auth.begin(user, peer.addr).map_err(|gate| match gate {
            Gate::Locked => refused(
                user,
                "lockedOut",
                format!("too many failed sign-ins for {user} or from {}", peer.addr),
            ),
            Gate::Busy => Refused {
                busy: true,
                ..refused(
                    user,
                    "signInBusy",
                    "other sign-ins of this user or address are being checked; try again in a moment",
                )
            },
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
        // A user that does not exist, or has no password, costs the same check as one that
        // does: no user names are learned from the time an answer takes.
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| crate::state::keys::unmatchable_hash().to_string());
        let password = password.to_string();
        let checked = app
            .hash_pool
            .submit(move || crate::state::keys::verify_password(&password, &phc));
        let ok = match checked {
            Ok(answer) => answer.await.unwrap_or(false),
            Err(busy) => {
                // Not a wrong password: the slot is given back uncounted.
                attempt.succeeded_without_clearing();
                return Err(Refused {
                    busy: true,
                    ..refused(user, "signInBusy", busy.to_string())
                });
            }
        };
        if !(ok && exists) {
            attempt.failed();
            return Err(refused(user, "badPassword", "wrong user name or password"));
        }
        attempt.succeeded();
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let subject = user_usable(db.model(), user)?;
        drop(db);
        signed_in(app, user, "password", "", peer);
        return Ok(Caller {
            subject,
            name: user.into(),
            depth: 0,
            chain: None,
            in_model_code: false,
        });
    }
    Err(refused(
        "",
        "noCredentials",
        "no appKey header, client certificate or Basic credentials",
    ))
}

/// Authenticates an application key's secret (the `appKey` header, or an AlwaysOn AUTH's claim):
/// known, not expired, used from an allowed address, its user usable (K1-K3).
pub fn authenticate_key(app: &App, secret: &str, peer: &Peer) -> Result<Caller, Refused> {
    let (caller, key_name) = check_key(app, secret, peer)?;
    signed_in(app, &caller.name, "appKey", &key_name, peer);
    Ok(caller)
}

/// The checks of [`authenticate_key`] without the sign-in's audit: for a connection that
/// re-checks the key it signed in with (a key deleted, expired or a user disabled since ends
/// it). The caller and the key's name.
pub fn check_key(app: &App, secret: &str, peer: &Peer) -> Result<(Caller, String), Refused> {
    let hash = crate::state::keys::hash(secret.trim());
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let model = db.model();
    let Some(entity) = model.application_key(&hash) else {
        return Err(refused(
            "",
            "unknownKey",
            format!(
                "no key with fingerprint {}",
                crate::state::keys::fingerprint(&hash)
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
    Ok((
        Caller {
            subject,
            name: user.into(),
            depth: 0,
            chain: None,
            in_model_code: false,
        },
        key_name,
    ))
}

/// Does the URL's query carry a parameter `appKey`? Names are compared decoded: `app%4Bey` and
/// `APPKEY` are the same parameter. A key in a URL ends up in logs and histories (K1).
pub fn key_in_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            let name = kv.split('=').next().unwrap_or("").replace('+', " ");
            percent_encoding::percent_decode_str(&name)
                .decode_utf8_lossy()
                .trim()
                .eq_ignore_ascii_case("appKey")
        })
    })
}
