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
//! connection when the session ends.
//!
//! It carries the session's tunnel (C7). At once, the server opens it: the session's endpoint
//! must be one its Thing allows (`api::tunnels`), the device that has bound the Thing is asked
//! over AlwaysOn to connect to it (`StartTunnel`) and back to `/Thingworx/WSTunnelServer/{tid}`
//! (`http::tunnel`), and the client is told `{"event": "tunnel", "state": "open"}` or
//! `"refused"` with the reason. The endpoint's bytes then travel as binary messages both ways,
//! unchanged, until either side closes (`{"op": "CloseTunnel"}` from the client), the session
//! ends, its user is disabled, locked or deleted, or nothing passes for the idle time; the
//! client is told `"closed"` with the reason and the bytes each way, and may open the next one
//! with `{"op": "OpenTunnel"}`. Each tunnel's start, refusal and end is audited
//! (REMOTE_ACCESS). A slow reader on either side slows the writer on the other: the client is
//! not read while the device's side has no room, the device not while the client has none.

use crate::state::app::{App, LoggedUser, Peer};
use crate::state::auth::Caller;
use crate::state::sessions::{NonceRefused, Phase};
use crate::state::tunnels::{DeviceLink, FromDevice, ToDevice};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    // A message of the session's connection is a small JSON request or a tunnel's bytes: the
    // tunnels' largest message at most (axum's default is 64 MiB).
    let max = app.tunnels.limits.max_message;
    let mut res = upgrade
        .max_message_size(max)
        .max_frame_size(max)
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
fn answer(app: &Arc<App>, caller: &Caller, thing: &str, session: &str, msg: &Json) -> Json {
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

fn text(v: Json) -> Message {
    Message::Text(v.to_string().into())
}

/// A tunnel open on this connection (C7).
struct Tunnel {
    tid: String,
    endpoint: String,
    device_user: String,
    to_device: tokio::sync::mpsc::Sender<ToDevice>,
    /// Dropped once the device's side is closed (or given up on): its socket's task ends.
    done: tokio::sync::oneshot::Sender<()>,
    /// Held until the device's side is gone, not only this end.
    place: crate::state::tunnels::Place,
    /// The device may be told of a half-close (binary subprotocol).
    binary: bool,
    /// The client sent its last byte (CloseTunnel): the device's side ends the tunnel.
    client_done: bool,
    started: Instant,
    /// The last byte either way.
    last: Instant,
    to_device_bytes: u64,
    from_device_bytes: u64,
}

/// What opening a tunnel gives.
struct Opened {
    tid: String,
    link: DeviceLink,
    place: crate::state::tunnels::Place,
    device_user: String,
}

/// Opens the session's tunnel: a place under the server's limit, the endpoint checked against
/// the Thing's list, the device that has bound the Thing asked (`StartTunnel`), and its side
/// awaited on `/Thingworx/WSTunnelServer/{tid}`. `Err`: why not, for the client.
async fn open_tunnel(
    app: Arc<App>,
    caller: Caller,
    thing: String,
    session: String,
    endpoint: String,
) -> Result<Opened, String> {
    let limits = app.tunnels.limits;
    let place = app.tunnels.place().ok_or_else(|| {
        format!(
            "the server has {} tunnels open, the most it allows (serve --max-tunnels); try again later",
            limits.max_open
        )
    })?;
    let asked = {
        let (app, thing) = (app.clone(), thing.clone());
        tokio::task::spawn_blocking(move || {
            let (host, port) = {
                let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                let m = db.model();
                // The user still may start a session on the Thing (a grant taken back since
                // the session started opens no more tunnels).
                let (_, id) = crate::api::authz::visible_entity(m, &caller, Kind::Thing, &thing)
                    .map_err(|e| e.message)?;
                crate::api::authz::require(
                    m,
                    &caller,
                    thinghost_core::Permission::ServiceInvoke,
                    thinghost_core::Target::Entity {
                        id,
                        resource: m.access().sym("StartSession"),
                    },
                    format_args!("Things/{thing}/Services/StartSession"),
                )
                .map_err(|e| e.message)?;
                crate::api::tunnels::endpoint_allowed(m, &thing, &endpoint, false)?;
                crate::api::tunnels::parse_endpoint(&endpoint)?
            };
            let device_user = app.edge.bound_user(&thing).ok_or_else(|| {
                format!("the device of Thing {thing} is not connected: no AlwaysOn connection has bound it")
            })?;
            let (tid, arrives) = app.tunnels.expect(&thing, &device_user, &session)?;
            let request = crate::api::tunnels::TunnelRequest {
                tid: tid.clone(),
                host,
                port,
                chunk_size: limits.max_message,
                idle: limits.idle,
            };
            if let Err(why) = crate::api::tunnels::ask_device(&app, &thing, &request) {
                app.tunnels.forget(&tid);
                return Err(why);
            }
            Ok((tid, arrives, device_user))
        })
        .await
        .map_err(|_| "internal error while asking the device".to_string())?
    };
    let (tid, arrives, device_user) = asked?;
    match tokio::time::timeout(limits.connect_timeout, arrives).await {
        Ok(Ok(link)) => Ok(Opened {
            tid,
            link,
            place,
            device_user,
        }),
        _ => {
            app.tunnels.forget(&tid);
            Err(format!(
                "the device of Thing {thing} did not connect its side of the tunnel within {} s (with its application key, to /Thingworx/WSTunnelServer/<tid>)",
                limits.connect_timeout.as_secs()
            ))
        }
    }
}

/// Audits on the blocking pool (the audit log's disk), without waiting.
fn audit_later(app: &Arc<App>, user: &str, key: &'static str, detail: Json, thing: &str) {
    let (app, user, thing) = (app.clone(), user.to_string(), thing.to_string());
    tokio::task::spawn_blocking(move || {
        app.audit(
            &user,
            crate::state::audit::category::REMOTE_ACCESS,
            key,
            detail,
            &format!("Things/{thing}"),
            "Thing",
        )
    });
}

/// The relay's state between the client and the device.
struct Relay {
    app: Arc<App>,
    caller: Caller,
    thing: String,
    session: String,
    tunnel: Option<Tunnel>,
    /// What the device sends, while a tunnel is open.
    from_device: Option<tokio::sync::mpsc::Receiver<FromDevice>>,
    /// The client's bytes waiting for room towards the device (the client is not read
    /// meanwhile: back-pressure).
    up: Option<ToDevice>,
    /// Messages waiting for room towards the client (the device is not read while it is
    /// full: back-pressure).
    outq: VecDeque<Message>,
}

impl Relay {
    fn opened(&mut self, o: Opened, endpoint: &str) {
        let now = Instant::now();
        audit_later(
            &self.app,
            &self.caller.name,
            "tunnelStarted",
            json!({"sessionId": self.session, "tid": o.tid, "thing": self.thing, "endpoint": endpoint,
                   "deviceUser": o.device_user}),
            &self.thing,
        );
        self.outq.push_back(text(json!({
            "event": "tunnel", "state": "open", "tid": o.tid, "endpoint": endpoint,
            "maxMessage": self.app.tunnels.limits.max_message,
        })));
        self.from_device = Some(o.link.from_device);
        self.tunnel = Some(Tunnel {
            tid: o.tid,
            endpoint: endpoint.to_string(),
            device_user: o.device_user,
            to_device: o.link.to_device,
            done: o.link.done,
            place: o.place,
            binary: o.link.binary,
            client_done: false,
            started: now,
            last: now,
            to_device_bytes: 0,
            from_device_bytes: 0,
        });
    }

    fn refused(&mut self, why: String, endpoint: &str) {
        audit_later(
            &self.app,
            &self.caller.name,
            "tunnelRefused",
            json!({"sessionId": self.session, "thing": self.thing, "endpoint": endpoint, "side": "client", "reason": why}),
            &self.thing,
        );
        self.outq.push_back(text(
            json!({"event": "tunnel", "state": "refused", "endpoint": endpoint, "reason": why}),
        ));
    }

    /// Ends the open tunnel, if any, for `why`: the device's side is closed, the end audited
    /// with the bytes each way, and the client told (after every byte already queued for it).
    fn end_tunnel(&mut self, why: &str) {
        let Some(t) = self.tunnel.take() else {
            return;
        };
        self.from_device = None;
        self.up = None;
        // The device's side is closed after what was queued for it, given 10 s to go; then its
        // socket's task is ended however stuck, and only then is the tunnel's place free.
        let (to_device, mut done, place, reason) = (t.to_device, t.done, t.place, why.to_string());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = to_device.send(ToDevice::Close(reason)).await;
                done.closed().await;
            })
            .await;
            drop(place);
        });
        let figures = json!({
            "sessionId": self.session, "tid": t.tid, "thing": self.thing, "endpoint": t.endpoint,
            "deviceUser": t.device_user, "bytesToDevice": t.to_device_bytes,
            "bytesFromDevice": t.from_device_bytes,
            "seconds": t.started.elapsed().as_secs_f64(), "reason": why,
        });
        audit_later(
            &self.app,
            &self.caller.name,
            "tunnelEnded",
            figures.clone(),
            &self.thing,
        );
        let mut event = figures;
        event["event"] = json!("tunnel");
        event["state"] = json!("closed");
        self.outq.push_back(text(event));
    }
}

async fn connection(
    app: Arc<App>,
    caller: Caller,
    thing: String,
    session: String,
    mut phase: tokio::sync::watch::Receiver<Phase>,
    socket: WebSocket,
) {
    let (mut client_tx, mut client_rx) = socket.split();
    // The client's writer: everything for the client goes through it, in order.
    let (out, mut out_rx) = tokio::sync::mpsc::channel::<Message>(crate::http::tunnel::QUEUED);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if client_tx.send(m).await.is_err() || last {
                break;
            }
        }
        let _ = client_tx.close().await;
    });
    let endpoint = app
        .sessions
        .describe(&session)
        .and_then(|s| s["remoteEndpoint"].as_str().map(str::to_string))
        .unwrap_or_default();
    let mut relay = Relay {
        app: app.clone(),
        caller: caller.clone(),
        thing: thing.clone(),
        session: session.clone(),
        tunnel: None,
        from_device: None,
        up: None,
        outq: VecDeque::new(),
    };
    relay.outq.push_back(text(
        json!({"event": "session", "state": "connected", "session": app.sessions.describe(&session)}),
    ));
    // The session's tunnel opens at once (and again on OpenTunnel after it closed).
    let open = |app: &Arc<App>| {
        tokio::spawn(open_tunnel(
            app.clone(),
            caller.clone(),
            thing.clone(),
            session.clone(),
            endpoint.clone(),
        ))
    };
    let mut opening = Some(open(&app));
    // The client's request being answered, if any.
    let mut request: Option<tokio::task::JoinHandle<Result<Json, String>>> = None;
    let idle = app.tunnels.limits.idle;
    // The connection acts for its user: each second, and before each request, it asks whether
    // that user still acts (enabled, not locked, not deleted); when not, it closes, saying why.
    let mut watch = tokio::time::interval(Duration::from_secs(1));
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
    let mut touched = Instant::now();
    // Why the connection stops: the reason, and whether its user no longer acts; `None`: the
    // client went away.
    let stop: Option<(String, bool)> = loop {
        let to_device = relay
            .tunnel
            .as_ref()
            .filter(|_| relay.up.is_some())
            .map(|t| t.to_device.clone());
        let room_for_client = relay.outq.len() < crate::http::tunnel::QUEUED;
        tokio::select! {
            _ = watch.tick() => {
                let now = match acts(&app) {
                    Some(r) => Some(r),
                    None if busy_ticks >= 3 => Some(waited(app.clone(), caller.clone()).await),
                    None => None,
                };
                match now {
                    Some(Err(why)) => break Some((why, true)),
                    Some(Ok(())) => busy_ticks = 0,
                    None => busy_ticks += 1,
                }
                if let Some(t) = &relay.tunnel {
                    // Bytes through the tunnel are the session's use.
                    if t.last > touched {
                        touched = t.last;
                        app.sessions.touch(&session);
                    }
                    if t.last.elapsed() >= idle {
                        relay.end_tunnel(&format!("no byte either way for {} s (serve --tunnel-idle-seconds)", idle.as_secs()));
                    }
                }
            }
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Ended {
                    break Some(match acts(&app) {
                        Some(Err(why)) => (why, true),
                        _ => ("the session ended".to_string(), false),
                    });
                }
            }
            opened = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                opening = None;
                match opened {
                    Ok(Ok(o)) => relay.opened(o, &endpoint),
                    Ok(Err(why)) => relay.refused(why, &endpoint),
                    Err(_) => relay.refused("internal error".into(), &endpoint),
                }
            }
            permit = async { to_device.as_ref().expect("guarded").reserve().await }, if to_device.is_some() => {
                let m = relay.up.take().expect("guarded");
                // An error: the device's side is gone; its reason comes from the other channel.
                if let Ok(p) = permit {
                    if let (Some(t), ToDevice::Data(bytes)) = (relay.tunnel.as_mut(), &m) {
                        t.to_device_bytes += bytes.len() as u64;
                        t.last = Instant::now();
                    }
                    p.send(m);
                }
            }
            permit = out.reserve(), if !relay.outq.is_empty() => match permit {
                Ok(p) => p.send(relay.outq.pop_front().expect("guarded")),
                Err(_) => break None,
            },
            m = async { relay.from_device.as_mut().expect("guarded").recv().await }, if relay.from_device.is_some() && room_for_client => {
                match m {
                    Some(FromDevice::Data(b)) => {
                        if let Some(t) = relay.tunnel.as_mut() {
                            t.from_device_bytes += b.len() as u64;
                            t.last = Instant::now();
                        }
                        relay.outq.push_back(Message::Binary(b));
                    }
                    Some(FromDevice::Closed(why)) => relay.end_tunnel(&why),
                    None => relay.end_tunnel("the device's side ended"),
                }
            }
            msg = client_rx.next(), if relay.up.is_none() && room_for_client => {
                let text_msg = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => {
                        if relay.tunnel.as_ref().is_some_and(|t| !t.client_done) {
                            relay.up = Some(ToDevice::Data(b));
                        } else if !b.is_empty() {
                            relay.outq.push_back(text(json!({"status": 409, "error": "no tunnel is open: its bytes were dropped (send {\"op\": \"OpenTunnel\"} and wait for its open event)"})));
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break None,
                };
                let msg = match serde_json::from_str::<Json>(&text_msg) {
                    Ok(msg) if msg.is_object() => msg,
                    _ => {
                        relay.outq.push_back(text(json!({"status": 400, "error": "a message is a JSON object such as {\"op\": \"GetSession\"}"})));
                        continue;
                    }
                };
                match msg["op"].as_str() {
                    Some("OpenTunnel") => {
                        if relay.tunnel.is_some() || opening.is_some() {
                            relay.outq.push_back(text(json!({"op": "OpenTunnel", "status": 409, "error": "a tunnel is open or opening already: close it first (CloseTunnel)"})));
                        } else {
                            opening = Some(open(&app));
                        }
                        continue;
                    }
                    Some("CloseTunnel") => {
                        match relay.tunnel.as_mut() {
                            // A half-close: the device's endpoint hears the end of the
                            // client's bytes, and what it still sends comes through until it
                            // closes too (or the idle limit).
                            Some(t) if t.binary && !t.client_done => {
                                t.client_done = true;
                                relay.up = Some(ToDevice::Shutdown);
                            }
                            // Asked again: the client gives up on the answer too.
                            Some(t) if t.client_done => relay.end_tunnel("the client closed the tunnel"),
                            Some(_) => relay.end_tunnel("the client closed the tunnel"),
                            None => relay.outq.push_back(text(json!({"op": "CloseTunnel", "status": 409, "error": "no tunnel is open"}))),
                        }
                        continue;
                    }
                    _ => {}
                }
                // One request at a time, beside the tunnel's bytes (a read of a property bound
                // to the device waits for the device).
                if request.is_some() {
                    relay.outq.push_back(text(json!({"op": msg["op"], "status": 429, "error": "one request at a time: wait for the answer to the one before"})));
                    continue;
                }
                // Before each request, on the blocking pool: does the user still act?
                let (app2, caller2, thing2, session2) = (app.clone(), caller.clone(), thing.clone(), session.clone());
                request = Some(tokio::task::spawn_blocking(move || {
                    let acts = {
                        let db = app2.db.read().unwrap_or_else(|p| p.into_inner());
                        crate::state::auth::still_acts(db.model(), &caller2.name, caller2.subject)
                            .map_err(|r| r.detail)
                    };
                    acts.map(|()| {
                        app2.sessions.touch(&session2);
                        answer(&app2, &caller2, &thing2, &session2, &msg)
                    })
                }));
            }
            reply = async { request.as_mut().expect("guarded").await }, if request.is_some() => {
                request = None;
                match reply.unwrap_or_else(|_| Ok(json!({"status": 500, "error": "internal error"}))) {
                    Err(why) => break Some((why, true)),
                    Ok(reply) => relay.outq.push_back(text(reply)),
                }
            }
        }
    };
    if let Some(o) = opening.take() {
        o.abort();
    }
    // A request under way (an EndSession, whose own end stopped the loop) is answered first.
    if let Some(r) = request.take() {
        let cut = r.abort_handle();
        match tokio::time::timeout(Duration::from_secs(2), r).await {
            Ok(Ok(Ok(reply))) => relay.outq.push_back(text(reply)),
            Ok(_) => {}
            Err(_) => cut.abort(),
        }
    }
    let cut = writer.abort_handle();
    let Some((why, user_gone)) = stop else {
        relay.end_tunnel("the client went away");
        drop(out);
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            cut.abort();
        }
        return;
    };
    relay.end_tunnel(&why);
    if user_gone {
        // Its session ends with it (the housekeeping would end it within a second).
        app.sessions.end_unless(|s| {
            if s.id == session {
                Err(why.clone())
            } else {
                Ok(())
            }
        });
        // Recorded before the client hears it (as before the tunnel's loop existed).
        let (app2, user, detail, thing2) = (
            app.clone(),
            caller.name.to_string(),
            json!({"sessionId": session, "thing": thing, "reason": why}),
            thing.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            app2.audit(
                &user,
                crate::state::audit::category::REMOTE_ACCESS,
                "remoteConnectionClosed",
                detail,
                &format!("Things/{thing2}"),
                "Thing",
            )
        })
        .await;
    }
    relay.outq.push_back(text(
        json!({"event": "session", "state": "ended", "sessionId": session, "reason": why}),
    ));
    relay
        .outq
        .push_back(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: if user_gone {
                axum::extract::ws::close_code::POLICY
            } else {
                axum::extract::ws::close_code::NORMAL
            },
            reason: crate::state::auth::bounded(&why, 120).into(),
        })));
    // What waits for the client goes, unless it does not read (then it is cut off).
    let flush = async {
        for m in relay.outq.drain(..) {
            if out.send(m).await.is_err() {
                break;
            }
        }
        drop(out);
        let _ = writer.await;
    };
    if tokio::time::timeout(Duration::from_secs(2), flush)
        .await
        .is_err()
    {
        cut.abort();
    }
}
