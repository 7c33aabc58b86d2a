//! `/Thingworx/WSTunnelServer/{tid}`: the device's side of a remote-access tunnel (DOMAIN C7).
//!
//! Asked with `StartTunnel` over its AlwaysOn connection, a device connects its endpoint and
//! then this WebSocket, with its application key in the `appKey` header (never in the URL).
//! The tunnel id must be one the server waits for, and the key's user the one whose AlwaysOn
//! connection had bound the tunnel's Thing; anything else answers 404, as an unknown tunnel id
//! does, and is audited. The socket's task then relays between the socket and the session's
//! connection (`tws`) through bounded channels: the endpoint's bytes as binary frames when the
//! device asked for the subprotocol `thinghost-tunnel`, else base64 in text frames (as the
//! vendor's SDKs send them).

use crate::api::tunnels::{BINARY_PROTOCOL, DEVICE_PATH};
use crate::state::app::{App, Peer};
use crate::state::audit::category::REMOTE_ACCESS;
use crate::state::tunnels::{DeviceLink, FromDevice, ToDevice};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;

/// How many messages wait in each direction of a tunnel: with the WebSockets' own buffers,
/// what a tunnel holds in memory is about this many times the largest message, each way.
pub const QUEUED: usize = 4;

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"error": "there is no such tunnel waiting for its device"}).to_string(),
    )
        .into_response()
}

/// Audits a refused device side, off the async workers.
async fn refused(app: &Arc<App>, user: &str, tid: &str, address: std::net::IpAddr, why: String) {
    let (app, user, tid) = (app.clone(), user.to_string(), tid.to_string());
    let _ = tokio::task::spawn_blocking(move || {
        app.audit(
            &user,
            REMOTE_ACCESS,
            "tunnelRefused",
            json!({"tid": tid, "side": "device", "address": address.to_string(), "reason": why}),
            "",
            "",
        )
    })
    .await;
}

/// The upgrade: the key, the tunnel id and the user checked, then the socket handed to the
/// waiting session connection.
pub async fn device(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    Path(tid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let endpoint = format!("{DEVICE_PATH}{{tid}}");
    if crate::http::auth::key_in_query(&uri) {
        let refusal = crate::state::auth::Refused {
            user: String::new(),
            key: "keyInUrl",
            detail: "an application key was sent in the URL; send it in the appKey header".into(),
            busy: false,
        };
        crate::state::auth::audit_refusal(&app, &refusal, peer.addr, Some(&endpoint));
        return (StatusCode::UNAUTHORIZED, "authentication failed").into_response();
    }
    // Only an id the server could have given (128 bits, hex) is worth a key check: anything
    // else answers as an unknown id at once, before any hashing.
    if tid.len() != 32 || !tid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    let Some(key) = headers
        .get("appKey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        let refusal = crate::state::auth::Refused {
            user: String::new(),
            key: "noCredentials",
            detail: "a tunnel's device side without the appKey header".into(),
            busy: false,
        };
        crate::state::auth::audit_refusal(&app, &refusal, peer.addr, Some(&endpoint));
        return (
            StatusCode::UNAUTHORIZED,
            "authentication failed: send the device's application key in the appKey header",
        )
            .into_response();
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let checked = {
        let (app, peer, endpoint, key) = (app.clone(), peer.clone(), endpoint.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            let r = crate::http::auth::authenticate_key(&app, &key, &peer);
            if let Err(refused) = &r {
                crate::state::auth::audit_refusal(&app, refused, peer.addr, Some(&endpoint));
            }
            r
        })
        .await
    };
    let Ok(Ok(caller)) = checked else {
        return (StatusCode::UNAUTHORIZED, "authentication failed").into_response();
    };
    // Another user's key answers as an unknown id does (and the tunnel keeps waiting for its
    // own device).
    let waiting = match app.tunnels.claim(&tid, &caller.name) {
        Ok(w) => w,
        Err(owner) => {
            let why = match owner {
                None => "no tunnel of this id waits for its device (unknown, used, or given up)"
                    .to_string(),
                Some(owner) => format!(
                    "the key's user is not {owner}, whose connection had bound the tunnel's Thing"
                ),
            };
            refused(&app, &caller.name, &tid, peer.addr, why).await;
            return not_found();
        }
    };
    let binary = upgrade
        .requested_protocols()
        .any(|p| p.as_bytes() == BINARY_PROTOCOL.as_bytes());
    let max = app.tunnels.limits.max_message;
    // Base64 makes a text frame a third larger than the bytes it carries.
    let frame = if binary { max } else { max / 3 * 4 + 4 };
    upgrade
        .protocols([BINARY_PROTOCOL])
        .max_message_size(frame)
        .max_frame_size(frame)
        .on_upgrade(move |socket| async move {
            // The connection's place under the server's limits, held while it is open.
            let _slot = peer.slot.clone();
            let (to_device, to_rx) = tokio::sync::mpsc::channel(QUEUED);
            let (from_tx, from_device) = tokio::sync::mpsc::channel(QUEUED);
            let (done, done_rx) = tokio::sync::oneshot::channel();
            let link = DeviceLink {
                user: caller.name.to_string(),
                binary,
                to_device,
                from_device,
                done,
            };
            if waiting.deliver.send(link).is_err() {
                return;
            }
            let still = Still { app, peer, key };
            relay(socket, binary, to_rx, from_tx, done_rx, still).await
        })
}

/// What the device's side is re-checked against, every second: its key still signs its user
/// in (K1-K3), as its AlwaysOn connection is.
struct Still {
    app: Arc<App>,
    peer: Peer,
    key: String,
}

impl Still {
    /// Why the key no longer signs in, once it does not (checked each second).
    async fn ends(&self) -> String {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let (app, peer, key) = (self.app.clone(), self.peer.clone(), self.key.clone());
            let refused = tokio::task::spawn_blocking(move || {
                crate::http::auth::check_key(&app, &key, &peer)
                    .err()
                    .map(|r| {
                        crate::state::auth::audit_refusal(&app, &r, peer.addr, Some(DEVICE_PATH));
                        r.detail
                    })
            })
            .await
            .ok()
            .flatten();
            if let Some(why) = refused {
                return format!("the device's key no longer signs in: {why}");
            }
        }
    }
}

/// Base64 as the vendor's SDKs write it, padded or not.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Relays between the device's socket and the tunnel's channels until either ends, the
/// session's side is done with it (`done`), or the device's key no longer signs in. Reading and
/// writing go on side by side, so that the device is always read from while a write to it
/// waits (a device that writes and reads in turn, as the vendor's SDKs do, never deadlocks
/// with the server).
async fn relay(
    socket: WebSocket,
    binary: bool,
    mut to_device: tokio::sync::mpsc::Receiver<ToDevice>,
    from_device: tokio::sync::mpsc::Sender<FromDevice>,
    done: tokio::sync::oneshot::Receiver<()>,
    still: Still,
) {
    let (mut sink, mut stream) = socket.split();
    let told = from_device.clone();
    let writer = async move {
        while let Some(m) = to_device.recv().await {
            let sent = match m {
                ToDevice::Data(b) => {
                    let m = if binary {
                        Message::Binary(b)
                    } else {
                        Message::Text(BASE64.encode(&b).into())
                    };
                    sink.send(m).await
                }
                // A device of the binary subprotocol is told in a text frame; the vendor's
                // base64 has no half-close: its side closes (what it still sends is lost).
                ToDevice::Shutdown if binary => {
                    sink.send(Message::Text(r#"{"op":"shutdown"}"#.into()))
                        .await
                }
                ToDevice::Shutdown => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::NORMAL,
                            reason: "the client closed".into(),
                        })))
                        .await;
                    break;
                }
                ToDevice::Close(why) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::NORMAL,
                            reason: crate::state::auth::bounded(&why, 120).into(),
                        })))
                        .await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
        // The session's side is gone: the device's side closes with it.
        let _ = sink.close().await;
    };
    let reader = async move {
        let why = loop {
            let data = match stream.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) if !binary => {
                    let text: String = t.as_str().split_whitespace().collect();
                    match BASE64.decode(text) {
                        Ok(b) => bytes::Bytes::from(b),
                        Err(_) => {
                            break "the device sent a text frame that is not base64".to_string();
                        }
                    }
                }
                // In the binary subprotocol, text frames are the device's notes (none yet).
                Some(Ok(Message::Text(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) if !f.reason.is_empty() => {
                            format!("the device closed the tunnel: {}", f.reason.as_str())
                        }
                        _ => "the device closed the tunnel".to_string(),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => break format!("the device's connection failed: {e}"),
                None => break "the device's connection closed".to_string(),
            };
            if data.is_empty() {
                continue;
            }
            if from_device.send(FromDevice::Data(data)).await.is_err() {
                return;
            }
        };
        let _ = from_device.send(FromDevice::Closed(why)).await;
    };
    // Either side's end ends the relay: a device that closed is not written to; a session that
    // closed is not read for.
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = done => {}
        why = still.ends() => {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                told.send(FromDevice::Closed(why)),
            )
            .await;
        }
    }
}
