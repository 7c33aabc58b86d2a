//! `/Thingworx/TWS`: the remote-access connection of a session (DOMAIN K6, S1).
//!
//! A remote-access client opens a WebSocket here with two headers: `sessionId` and `nonce`, the
//! nonce key that `StartSession` returned in its launch URI. The nonce is good once, before its
//! expiry, for that session only; an application key, a password or a client certificate is
//! never accepted here (and a nonce is never accepted anywhere else: the REST API does not know
//! it). Every refusal answers 401 and is audited with its reason.
//!
//! The connection runs as the nonce's user with the seed's minimum rights and no more: it may
//! read the session's Thing's properties (`GetProperty`) and run its session services
//! (`GetSession`, `GetSessions`, `EndSession`), each checked as a request of that user; nothing
//! else. The server sends the session's state changes (`connected`, `ended`) and closes the
//! connection when the session ends. The tunnel to the device comes with edge connectivity.

use crate::state::app::{App, LoggedUser, Peer};
use crate::state::auth::Caller;
use crate::state::sessions::{NonceRefused, Phase};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_core::Kind;

fn refuse(app: &App, peer: &Peer, user: &str, key: &'static str, detail: &str) -> Response {
    crate::state::auth::audit_refusal(
        app,
        &crate::state::auth::Refused {
            user: user.to_string(),
            key,
            detail: detail.to_string(),
            busy: false,
        },
        peer.addr,
        Some("/Thingworx/TWS"),
    );
    let mut res = (
        StatusCode::UNAUTHORIZED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({"error": "authentication failed"}).to_string(),
    )
        .into_response();
    res.extensions_mut().insert(LoggedUser(user.to_string()));
    res
}

/// The upgrade: checks the nonce, then hands the socket to [`connection`].
pub async fn tws(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("appKey").is_some() || headers.contains_key(header::AUTHORIZATION) {
        return refuse(
            &app,
            &peer,
            "",
            "remoteAccessRefused",
            "only a nonce key opens a remote-access connection; an application key or a password never does",
        );
    }
    let (Some(nonce), Some(session)) = (header("nonce"), header("sessionId")) else {
        return refuse(
            &app,
            &peer,
            "",
            "noCredentials",
            "a remote-access connection needs the headers nonce and sessionId (from StartSession's launch URI)",
        );
    };
    // Not a WebSocket request: refused before the nonce is spent.
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let crate::state::sessions::Redeemed {
        user,
        subject: session_subject,
        thing,
        phase,
    } = match app.sessions.redeem(nonce, session) {
        Ok(found) => found,
        Err(NonceRefused::Unknown) => {
            return refuse(
                &app,
                &peer,
                "",
                "nonceRefused",
                "unknown nonce: never issued, already used, or expired",
            );
        }
        Err(NonceRefused::Expired { user }) => {
            return refuse(&app, &peer, &user, "nonceExpired", "the nonce expired");
        }
        Err(NonceRefused::WrongSession { user }) => {
            return refuse(
                &app,
                &peer,
                &user,
                "nonceRefused",
                "the nonce was issued for another session",
            );
        }
    };
    // The nonce's user must still be the one it was issued to: enabled, not locked, and not
    // deleted (another user created under the name is not it).
    let subject = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        crate::state::auth::still_acts(db.model(), &user, session_subject).map(|()| session_subject)
    };
    let caller = match subject {
        Ok(subject) => Caller {
            subject,
            name: user.as_str().into(),
            depth: 0,
            chain: None,
            in_model_code: false,
        },
        Err(r) => return refuse(&app, &peer, &user, r.key, &r.detail),
    };
    app.audit(
        &user,
        crate::state::audit::category::REMOTE_ACCESS,
        "remoteConnectionOpened",
        json!({"sessionId": session, "thing": thing, "address": peer.addr.to_string()}),
        &format!("Things/{thing}"),
        "Thing",
    );
    let session = session.to_string();
    // A message of the session's connection is a small JSON request: 1 MiB at most (axum's
    // default is 64 MiB).
    let mut res = upgrade
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20)
        .on_upgrade(move |socket| async move {
            // The connection's place under the server's limits, held while it is open.
            let _slot = peer.slot;
            connection(app, caller, thing, session, phase, socket).await
        });
    res.extensions_mut().insert(LoggedUser(user));
    res
}

/// One request over the connection, within the seed's minimum rights: a call of the API as the
/// session's user.
fn request(app: &Arc<App>, caller: &Caller, thing: &str, session: &str, msg: &Json) -> Json {
    let op = msg["op"].as_str().unwrap_or_default();
    let session_id = || {
        crate::api::Params::from([(
            "sessionId",
            json!(msg["sessionId"].as_str().unwrap_or(session)),
        )])
    };
    let answer = match op {
        "GetProperty" => {
            let Some(name) = msg["name"].as_str() else {
                return json!({"op": op, "status": 400, "error": "GetProperty needs name"});
            };
            crate::api::entities::read_property(app, caller, Kind::Thing, thing, name)
        }
        "GetSession" | "EndSession" => {
            crate::api::invoke(app, caller, Kind::Thing, thing, op, session_id())
        }
        "GetSessions" => crate::api::invoke(
            app,
            caller,
            Kind::Thing,
            thing,
            op,
            crate::api::Params::new(),
        ),
        other => {
            return json!({
                "op": other, "status": 403,
                "error": format!("{other:?} is not allowed on a remote-access connection: it may read the Thing's properties (GetProperty) and run its session services (GetSession, GetSessions, EndSession), nothing else"),
            });
        }
    };
    match answer {
        Ok(reply) => match reply.into_json() {
            Some(v) => json!({"op": op, "status": 200, "result": v}),
            None => json!({"op": op, "status": 200}),
        },
        Err(e) => {
            e.audit_denial(app, &caller.name, json!({"endpoint": "/Thingworx/TWS"}));
            json!({"op": op, "status": e.status.as_u16(), "error": e.message})
        }
    }
}

async fn send(socket: &mut WebSocket, v: Json) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn connection(
    app: Arc<App>,
    caller: Caller,
    thing: String,
    session: String,
    mut phase: tokio::sync::watch::Receiver<Phase>,
    mut socket: WebSocket,
) {
    let state = |app: &App| json!({"event": "session", "state": "connected", "session": app.sessions.describe(&session)});
    if !send(&mut socket, state(&app)).await {
        return;
    }
    // The connection acts for its user: each second, and before each message, it asks whether
    // that user still acts (enabled, not locked, not deleted); when not, it closes, saying why.
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(1));
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // (On the async worker only when the model's lock is free at once; when changes hold it
    // at three ticks in a row, the fourth waits for it on the blocking pool: under steady
    // writes the check is late by seconds, never skipped for good.)
    let acts = |app: &App| -> Option<Result<(), String>> {
        let db = match app.db.try_read() {
            Ok(db) => db,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(
            crate::state::auth::still_acts(db.model(), &caller.name, caller.subject)
                .map_err(|r| r.detail),
        )
    };
    let waited = |app: Arc<App>, caller: Caller| async move {
        tokio::task::spawn_blocking(move || {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            crate::state::auth::still_acts(db.model(), &caller.name, caller.subject)
                .map_err(|r| r.detail)
        })
        .await
        .unwrap_or(Ok(()))
    };
    let mut busy_ticks = 0u32;
    loop {
        // Why the connection stops: the reason, and whether its user no longer acts.
        let stop: Option<(String, bool)> = tokio::select! {
            _ = watch.tick() => {
                let now = match acts(&app) {
                    Some(r) => Some(r),
                    None if busy_ticks >= 3 => Some(waited(app.clone(), caller.clone()).await),
                    None => None,
                };
                match now {
                    Some(r) => {
                        busy_ticks = 0;
                        r.err().map(|why| (why, true))
                    }
                    None => {
                        busy_ticks += 1;
                        None
                    }
                }
            }
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                (changed.is_err() || now == Phase::Ended).then(|| match acts(&app) {
                    Some(Err(why)) => (why, true),
                    _ => ("the session ended".to_string(), false),
                })
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        if !send(&mut socket, json!({"status": 400, "error": "send JSON text messages"})).await { break; }
                        continue;
                    }
                    _ => break,
                };
                // Before each message, on the blocking pool: does the user still act?
                let reply = match serde_json::from_str::<Json>(&text) {
                    Ok(msg) if msg.is_object() => {
                        let (app2, caller2, thing2, session2) = (app.clone(), caller.clone(), thing.clone(), session.clone());
                        tokio::task::spawn_blocking(move || {
                            let acts = {
                                let db = app2.db.read().unwrap_or_else(|p| p.into_inner());
                                crate::state::auth::still_acts(db.model(), &caller2.name, caller2.subject)
                                    .map_err(|r| r.detail)
                            };
                            acts.map(|()| {
                                app2.sessions.touch(&session2);
                                request(&app2, &caller2, &thing2, &session2, &msg)
                            })
                        })
                        .await
                        .unwrap_or_else(|_| Ok(json!({"status": 500, "error": "internal error"})))
                    }
                    _ => Ok(json!({"status": 400, "error": "a message is a JSON object such as {\"op\": \"GetSession\"}"})),
                };
                match reply {
                    Err(why) => Some((why, true)),
                    Ok(reply) => {
                        if !send(&mut socket, reply).await { break; }
                        None
                    }
                }
            }
        };
        if let Some((why, user_gone)) = stop {
            if user_gone {
                // Its session ends with it (the housekeeping would end it within a second).
                app.sessions.end_unless(|s| {
                    if s.id == session {
                        Err(why.clone())
                    } else {
                        Ok(())
                    }
                });
                app.audit(
                    &caller.name,
                    crate::state::audit::category::REMOTE_ACCESS,
                    "remoteConnectionClosed",
                    json!({"sessionId": session, "thing": thing, "reason": why}),
                    &format!("Things/{thing}"),
                    "Thing",
                );
            }
            let _ = send(
                &mut socket,
                json!({"event": "session", "state": "ended", "sessionId": session, "reason": why}),
            )
            .await;
            let _ = socket
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: if user_gone {
                        axum::extract::ws::close_code::POLICY
                    } else {
                        axum::extract::ws::close_code::NORMAL
                    },
                    reason: crate::state::auth::bounded(&why, 120).into(),
                })))
                .await;
            break;
        }
    }
}
