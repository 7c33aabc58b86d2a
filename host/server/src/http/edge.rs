//! `/Thingworx/WS`: devices connect here with the vendor's AlwaysOn protocol (DOMAIN section
//! 10; the bytes are `thinghost_alwayson`'s). Binary frames only; the first message is AUTH
//! with an application key, within the limit (15 s by default), else the connection is closed
//! and the refusal audited (C1). The connection then acts as the key's user: BIND and UNBIND of
//! Remote Things are decided by `api::edge` (C2); KEEP_ALIVE is answered. A frame that is not
//! the protocol closes the connection with its reason logged and audited; a message over the
//! size limit is answered BAD_REQUEST and the connection kept (C6).

use crate::state::app::{App, Peer};
use crate::state::audit::category::CONNECTIONS;
use crate::state::auth::Caller;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use thinghost_alwayson::{Body, Code, Frame, Header, Message, Reassembler};

const ENDPOINT: &str = "/Thingworx/WS";

/// The upgrade: any WebSocket request may open a connection; it must authenticate inside it.
pub async fn ws(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = app.edge.limits;
    upgrade
        .max_message_size(limits.chunk_size)
        .max_frame_size(limits.chunk_size)
        .on_upgrade(move |socket| connection(app, peer, socket))
}

/// Runs blocking work (the model's lock, the audit log's disk) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// The next binary frame; `None` when the connection ends. A text frame is not the protocol.
async fn next_frame(socket: &mut WebSocket) -> Option<Result<Vec<u8>, &'static str>> {
    loop {
        match socket.recv().await? {
            Ok(WsMessage::Binary(b)) => return Some(Ok(b.to_vec())),
            Ok(WsMessage::Text(_)) => return Some(Err("a text frame (AlwaysOn is binary)")),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            // Pings are answered by the WebSocket layer.
            Ok(_) => continue,
        }
    }
}

async fn send(socket: &mut WebSocket, app: &App, m: &Message) -> bool {
    let limits = app.edge.limits;
    let Ok(frames) = thinghost_alwayson::frames(m, limits.chunk_size, limits.max_message) else {
        return false;
    };
    for f in frames {
        if socket.send(WsMessage::Binary(f.into())).await.is_err() {
            return false;
        }
    }
    true
}

fn answer(request: &Header, code: Code, reason: Option<String>) -> Message {
    Message::answer(request, code, reason, None)
}

/// Closes a connection that is not speaking the protocol, its reason logged and audited.
async fn malformed(app: &Arc<App>, peer: &Peer, user: &str, socket: &mut WebSocket, why: String) {
    tracing::warn!(address = %peer.addr, user, reason = %why, "AlwaysOn connection closed: not the protocol");
    let (app, user, address) = (app.clone(), user.to_string(), peer.addr.to_string());
    blocking(move || {
        app.audit(
            &user,
            CONNECTIONS,
            "connectionClosedMalformed",
            json!({"reason": why, "address": address}),
            "",
            "",
        )
    })
    .await;
    let _ = socket.send(WsMessage::Close(None)).await;
}

async fn connection(app: Arc<App>, peer: Peer, mut socket: WebSocket) {
    let limits = app.edge.limits;
    // C1: AUTH first, within the limit.
    let first = match tokio::time::timeout(limits.auth_timeout, next_frame(&mut socket)).await {
        Err(_) => {
            refuse_auth(
                &app,
                &peer,
                "",
                "edgeAuthTimeout",
                &format!("no AUTH within {} s", limits.auth_timeout.as_secs()),
            )
            .await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
        Ok(None) => return,
        Ok(Some(Err(why))) => {
            refuse_auth(&app, &peer, "", "edgeNotAuthenticated", why).await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
        Ok(Some(Ok(bytes))) => bytes,
    };
    let (auth, key) = match thinghost_alwayson::decode(&first) {
        Ok(Frame::Whole(Message {
            header,
            body: Body::Auth { claims },
        })) if header.code == Code::AUTH => {
            let key = claims
                .into_iter()
                .find(|(name, _)| name == "appKey")
                .map(|(_, value)| value);
            (header, key)
        }
        Ok(Frame::Whole(m)) => {
            let why = format!("the first message was {}, not AUTH", m.header.code);
            refuse_auth(&app, &peer, "", "edgeNotAuthenticated", &why).await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
        Ok(Frame::Chunk(_)) => {
            refuse_auth(
                &app,
                &peer,
                "",
                "edgeNotAuthenticated",
                "the first message was a chunk, not AUTH",
            )
            .await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
        Err(e) => {
            refuse_auth(
                &app,
                &peer,
                "",
                "edgeNotAuthenticated",
                &format!("the first frame is not the protocol: {e}"),
            )
            .await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
    };
    let Some(key) = key else {
        refuse_auth(
            &app,
            &peer,
            "",
            "noCredentials",
            "AUTH without an appKey claim",
        )
        .await;
        let _ = send(
            &mut socket,
            &app,
            &answer(
                &auth,
                Code::UNAUTHORIZED,
                Some("AUTH needs the claim appKey".into()),
            ),
        )
        .await;
        let _ = socket.send(WsMessage::Close(None)).await;
        return;
    };
    let checked = {
        let (app, peer) = (app.clone(), peer.clone());
        blocking(move || {
            let r = crate::http::auth::authenticate_key(&app, &key, &peer);
            if let Err(refused) = &r {
                crate::state::auth::audit_refusal(&app, refused, peer.addr, Some(ENDPOINT));
            }
            r
        })
        .await
    };
    let caller = match checked {
        Some(Ok(c)) => c,
        _ => {
            let _ = send(
                &mut socket,
                &app,
                &answer(
                    &auth,
                    Code::UNAUTHORIZED,
                    Some("authentication failed".into()),
                ),
            )
            .await;
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
    };
    let session = loop {
        let mut b = [0u8; 4];
        if getrandom::fill(&mut b).is_err() {
            let _ = socket.send(WsMessage::Close(None)).await;
            return;
        }
        let s = u32::from_be_bytes(b);
        if s != 0 && s != thinghost_alwayson::message::NO_SESSION {
            break s;
        }
    };
    let conn = app.edge.open(&caller.name, peer.addr);
    {
        let (app, user, address) = (app.clone(), caller.name.to_string(), peer.addr.to_string());
        blocking(move || {
            app.audit(
                &user,
                CONNECTIONS,
                "deviceConnected",
                json!({"address": address, "connection": conn}),
                "",
                "",
            )
        })
        .await;
    }
    let welcome = Message::answer(
        &Header {
            session_id: session,
            ..auth
        },
        Code::SUCCESS,
        None,
        None,
    );
    let why_closed = if send(&mut socket, &app, &welcome).await {
        serve(&app, &peer, &caller, conn, session, &mut socket).await
    } else {
        "the connection failed".to_string()
    };
    let unbound = app.edge.close(conn);
    let user = caller.name.to_string();
    let address = peer.addr.to_string();
    blocking(move || {
        app.audit(
            &user,
            CONNECTIONS,
            "deviceDisconnected",
            json!({"address": address, "connection": conn, "unbound": unbound, "reason": why_closed}),
            "",
            "",
        )
    })
    .await;
}

async fn refuse_auth(app: &Arc<App>, peer: &Peer, user: &str, key: &'static str, detail: &str) {
    let refused = crate::state::auth::Refused {
        user: user.to_string(),
        key,
        detail: detail.to_string(),
        busy: false,
    };
    let (app, addr) = (app.clone(), peer.addr);
    blocking(move || crate::state::auth::audit_refusal(&app, &refused, addr, Some(ENDPOINT))).await;
}

/// The authenticated connection until it ends; why it ended.
async fn serve(
    app: &Arc<App>,
    peer: &Peer,
    caller: &Caller,
    conn: u64,
    session: u32,
    socket: &mut WebSocket,
) -> String {
    let limits = app.edge.limits;
    let mut joiner = Reassembler::new(
        limits.max_message,
        limits.max_pending,
        limits.reassembly_timeout.as_millis() as u64,
    );
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let bytes = tokio::select! {
            frame = next_frame(socket) => match frame {
                None => return "closed by the device".into(),
                Some(Err(why)) => {
                    malformed(app, peer, &caller.name, socket, why.to_string()).await;
                    return why.to_string();
                }
                Some(Ok(bytes)) => bytes,
            },
            _ = tick.tick() => {
                for dropped in joiner.expire(crate::now_ms() as u64) {
                    tracing::warn!(user = %caller.name, request = dropped, "an AlwaysOn message stayed incomplete: dropped");
                }
                continue;
            }
        };
        let message = match thinghost_alwayson::decode(&bytes) {
            Ok(Frame::Whole(m)) => m,
            Ok(Frame::Chunk(c)) => {
                let header = c.header;
                match joiner.add(c, crate::now_ms() as u64) {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) if e.is_limit() => {
                        if !send(
                            socket,
                            app,
                            &answer(&header, Code::BAD_REQUEST, Some(e.to_string())),
                        )
                        .await
                        {
                            return "the connection failed".into();
                        }
                        continue;
                    }
                    Err(e) => {
                        let why = e.to_string();
                        malformed(app, peer, &caller.name, socket, why.clone()).await;
                        return why;
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                malformed(app, peer, &caller.name, socket, why.clone()).await;
                return why;
            }
        };
        let Some(reply) = handle(app, caller, conn, session, message).await else {
            continue;
        };
        if !send(socket, app, &reply).await {
            return "the connection failed".into();
        }
    }
}

/// One message of an authenticated connection; its answer, if it gets one.
async fn handle(
    app: &Arc<App>,
    caller: &Caller,
    conn: u64,
    session: u32,
    m: Message,
) -> Option<Message> {
    let header = m.header;
    // A device's answers to the server's requests: none are asked yet.
    if header.code.is_response() {
        return None;
    }
    if header.session_id != session {
        return Some(answer(
            &header,
            Code::UNAUTHORIZED,
            Some(format!(
                "session {} is not this connection's (its AUTH answer gave {session})",
                header.session_id
            )),
        ));
    }
    match m.body {
        Body::KeepAlive => Some(answer(&header, Code::SUCCESS, None)),
        Body::Auth { .. } => Some(answer(
            &header,
            Code::BAD_REQUEST,
            Some("this connection is authenticated already".into()),
        )),
        Body::Bind { gateway, names } => {
            let (app, caller) = (app.clone(), caller.clone());
            let unbind = header.code == Code::UNBIND;
            blocking(move || bind_all(&app, &caller, conn, unbind, gateway.map(|g| g.name), names))
                .await
                .map(|(code, reason)| answer(&header, code, reason))
        }
        Body::Request(r) => Some(answer(
            &header,
            Code::NOT_IMPLEMENTED,
            Some(format!(
                "{} {}/{} is not served over AlwaysOn yet",
                header.code, r.entity_name, r.name
            )),
        )),
        Body::Response(_) => None,
    }
}

/// BIND or UNBIND of `names` (C2): every name is tried; the answer is SUCCESS when all were,
/// else the first refusal's code with every refusal's reason. Each bind, unbind and refusal is
/// audited.
fn bind_all(
    app: &App,
    caller: &Caller,
    conn: u64,
    unbind: bool,
    gateway: Option<String>,
    names: Vec<String>,
) -> (Code, Option<String>) {
    let mut first: Option<Code> = None;
    let mut reasons = Vec::new();
    for name in &names {
        if unbind {
            if app.edge.unbind(conn, name) {
                app.audit(
                    &caller.name,
                    CONNECTIONS,
                    "thingUnbound",
                    json!({"connection": conn}),
                    &format!("Things/{name}"),
                    "Thing",
                );
            }
            continue;
        }
        match crate::api::edge::bind(app, caller, conn, name, gateway.as_deref()) {
            Ok(()) => app.audit(
                &caller.name,
                CONNECTIONS,
                "thingBound",
                json!({"connection": conn, "gateway": gateway}),
                &format!("Things/{name}"),
                "Thing",
            ),
            Err(e) => {
                first.get_or_insert(Code::for_http_status(e.status.as_u16()));
                app.audit(
                    &caller.name,
                    CONNECTIONS,
                    "bindRefused",
                    json!({"connection": conn, "thing": name, "status": e.status.as_u16(), "reason": e.message}),
                    "",
                    "",
                );
                reasons.push(e.message);
            }
        }
    }
    match first {
        None => (Code::SUCCESS, None),
        Some(code) => (code, Some(reasons.join("; "))),
    }
}
