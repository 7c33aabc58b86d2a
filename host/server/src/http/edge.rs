//! `/Thingworx/WS`: devices connect here with the vendor's AlwaysOn protocol (DOMAIN section
//! 10; the bytes are `thinghost_alwayson`'s). Binary frames only; the first message is AUTH
//! with an application key, within the limit (15 s by default), else the connection is closed
//! and the refusal audited (C1). The connection then acts as the key's user, re-checked every
//! second and before every BIND (a key deleted or expired, or its user disabled, locked or
//! deleted, ends it: K1-K3). BIND and UNBIND of Remote Things are decided by `api::edge` (C2),
//! and their connection state kept (C3); KEEP_ALIVE is answered. A frame that is not the
//! protocol closes the connection with its reason logged and audited; a message over the size
//! limit is answered BAD_REQUEST and the connection kept (C6). A connection counts against the
//! server's connection limits for as long as it is open.

use crate::api::ApiError;
use crate::api::edge::convert;
use crate::state::app::{App, Peer};
use crate::state::audit::category::CONNECTIONS;
use crate::state::auth::{AUDITED_NAME, Caller, bounded};
use crate::state::edge::{Answer, Handling, Outbound, Traffic};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thinghost_alwayson::message::Request;
use thinghost_alwayson::{Body, Code, Frame, Header, Message, Reassembler, Table, Value, codes};
use thinghost_core::Kind;
use tokio::sync::mpsc::Receiver;

const ENDPOINT: &str = "/Thingworx/WS";
/// How long one send may take before the device is taken for gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The most Things one BIND or UNBIND may name.
pub const MAX_NAMES_PER_BIND: usize = 256;

/// The upgrade: any WebSocket request may open a connection; it must authenticate inside it.
/// A key in the URL is refused, as everywhere (K1).
pub async fn ws(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // The REST API's check (names decoded), and any mention of the key's name at all.
    if crate::http::auth::key_in_query(&uri)
        || uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("appkey"))
    {
        refuse_auth(
            &app,
            &peer,
            "",
            "keyInUrl",
            "an application key was sent in the URL; send it in the AUTH message",
        )
        .await;
        return (StatusCode::UNAUTHORIZED, "authentication failed").into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = app.edge.limits;
    upgrade
        .max_message_size(limits.chunk_size)
        .max_frame_size(limits.chunk_size)
        // A frame is at most a chunk: a read buffer of one chunk (and a frame's header) is
        // enough, where tungstenite's default zero-fills 128 KiB per connection.
        .read_buffer_size(limits.chunk_size + 16)
        .on_upgrade(move |socket| connection(app, peer, socket))
}

/// Runs blocking work (the model's lock, the audit log's disk) off the async workers, a few
/// at a time ([`EDGE_WORK`]).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _permit = EDGE_WORK.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// The AlwaysOn endpoint's blocking work (sign-ins, binds, audits) at once, over all
/// connections: a thousand devices connecting together queue here instead of starting a
/// thread each (each costs its stack and an allocator heap, megabytes of memory that stay).
static EDGE_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// What came in.
enum Incoming {
    Frame(Vec<u8>),
    /// The connection ended (a close frame, or the socket closed).
    Ended,
    /// Not the protocol at the WebSocket's level (a text frame, a frame over the size, broken
    /// framing): why.
    Broken(String),
}

/// The next binary frame. Every frame, pings included, is the device's sign of life (counted
/// in `traffic`).
async fn next_frame(socket: &mut WebSocket, traffic: &Traffic) -> Incoming {
    loop {
        let Some(frame) = socket.recv().await else {
            return Incoming::Ended;
        };
        traffic.received();
        match frame {
            Ok(WsMessage::Binary(b)) => return Incoming::Frame(b.to_vec()),
            Ok(WsMessage::Text(_)) => {
                return Incoming::Broken("a text frame (AlwaysOn is binary)".into());
            }
            Ok(WsMessage::Close(_)) => return Incoming::Ended,
            // Pings are answered by the WebSocket layer.
            Ok(_) => continue,
            Err(e) => {
                // A device that vanishes (its TCP connection reset or closed without a close
                // frame) ended the connection; it did not break the protocol.
                use tokio_tungstenite::tungstenite::Error as E;
                use tokio_tungstenite::tungstenite::error::ProtocolError as P;
                let inner = e.into_inner();
                return match inner.downcast_ref::<E>() {
                    Some(
                        E::Io(_)
                        | E::ConnectionClosed
                        | E::AlreadyClosed
                        | E::Protocol(P::ResetWithoutClosingHandshake),
                    ) => Incoming::Ended,
                    _ => Incoming::Broken(format!("the WebSocket: {inner}")),
                };
            }
        }
    }
}

/// Sends a message (in chunks when it is large); false when the device is gone or stuck.
async fn send(socket: &mut WebSocket, app: &App, traffic: &Traffic, m: &Message) -> bool {
    let limits = app.edge.limits;
    let frames = match thinghost_alwayson::frames(m, limits.chunk_size, limits.max_message) {
        Ok(frames) => frames,
        // An answer too large for the protocol: the device is told so, and the connection
        // goes on (C6).
        Err(e) if m.header.code.is_response() => {
            let refusal = Message {
                header: Header {
                    code: Code::ENTITY_TOO_LARGE,
                    ..m.header
                },
                body: Body::Response(thinghost_alwayson::message::Response {
                    reason: Some(format!("the answer cannot be sent: {e}")),
                    content: None,
                }),
            };
            match thinghost_alwayson::frames(&refusal, limits.chunk_size, limits.max_message) {
                Ok(frames) => frames,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    send_frames(socket, traffic, frames).await
}

/// Sends frames; false when the device is gone or stuck.
async fn send_frames(socket: &mut WebSocket, traffic: &Traffic, frames: Vec<Vec<u8>>) -> bool {
    for f in frames {
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(WsMessage::Binary(f.into()))).await {
            Ok(Ok(())) => traffic.sent(1),
            _ => return false,
        }
    }
    true
}

async fn close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(WsMessage::Close(None))).await;
}

fn answer(request: &Header, code: Code, reason: Option<String>) -> Message {
    Message::answer(request, code, reason, None)
}

/// A push waiting to be written, and where its answer goes.
type PushJob = (
    std::sync::Weak<App>,
    crate::api::edge::Push,
    tokio::sync::oneshot::Sender<Result<crate::api::edge::Pushed, ApiError>>,
);

/// Pushes waiting for the push thread at most; past it, a device's push waits for room (its
/// connection reads nothing meanwhile: back-pressure to the device).
const MAX_QUEUED_PUSHES: usize = 4096;
/// Pushes written in one change at most.
const MAX_BATCH: usize = 256;

static PUSHER: std::sync::OnceLock<tokio::sync::mpsc::Sender<PushJob>> = std::sync::OnceLock::new();

/// Writes a device's push (C4) with the pushes of every other connection waiting at the same
/// moment: one thread takes what has queued and writes it in one durable change (a group
/// commit, `api::edge::push_all`), each push still all or nothing and answered on its own. The
/// answer; `None` if the push thread could not answer.
async fn pushed(
    app: &Arc<App>,
    push: crate::api::edge::Push,
) -> Option<Result<crate::api::edge::Pushed, ApiError>> {
    let queue = PUSHER.get_or_init(|| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PushJob>(MAX_QUEUED_PUSHES);
        let started = std::thread::Builder::new()
            .name("edge-pushes".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    // (One server per process, but a batch is written per server all the same.)
                    while let Some(server) = batch.first().map(|j| j.0.clone()) {
                        let (mine, rest): (Vec<PushJob>, Vec<PushJob>) =
                            batch.into_iter().partition(|j| j.0.ptr_eq(&server));
                        batch = rest;
                        let Some(app) = server.upgrade() else {
                            continue;
                        };
                        let (pushes, replies): (Vec<_>, Vec<_>) =
                            mine.into_iter().map(|(_, p, r)| (p, r)).unzip();
                        let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            crate::api::edge::push_all(&app, pushes)
                        }));
                        match answers {
                            Ok(answers) => {
                                for (reply, a) in replies.into_iter().zip(answers) {
                                    let _ = reply.send(a);
                                }
                            }
                            Err(_) => tracing::error!(
                                "writing devices' pushes panicked (a bug of the server: please report it); they were answered INTERNAL_SERVER_ERROR"
                            ),
                        }
                    }
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the thread that writes devices' pushes");
        }
        tx
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue.send((Arc::downgrade(app), push, reply)).await.ok()?;
    answer.await.ok()
}

/// Closes a connection that is not speaking the protocol, its reason logged and audited.
async fn malformed(app: &Arc<App>, peer: &Peer, user: &str, socket: &mut WebSocket, why: &str) {
    tracing::warn!(address = %peer.addr, user, reason = %why, "AlwaysOn connection closed: not the protocol");
    let (app, user, address, why) = (
        app.clone(),
        user.to_string(),
        peer.addr.to_string(),
        bounded(why, 4 * AUDITED_NAME),
    );
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
    close(socket).await;
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

/// Gives a connection's Things back when its task ends, however it ends (an error, a panic):
/// they are unbound and marked disconnected (C3), and the disconnect audited.
struct Open {
    app: Arc<App>,
    caller: Caller,
    address: String,
    conn: u64,
    why: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        let unbound = self.app.edge.close(self.conn);
        let (app, caller, conn, address, why) = (
            self.app.clone(),
            self.caller.clone(),
            self.conn,
            std::mem::take(&mut self.address),
            std::mem::take(&mut self.why),
        );
        let done = move || {
            let things: Vec<&str> = unbound.iter().map(String::as_str).collect();
            crate::api::edge::set_connected(&app, &caller, &things, false);
            app.audit(
                &caller.name,
                CONNECTIONS,
                "deviceDisconnected",
                json!({"address": address, "connection": conn, "unbound": unbound, "reason": why}),
                "",
                "",
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(done);
            }
            Err(_) => done(),
        }
    }
}

async fn connection(app: Arc<App>, peer: Peer, mut socket: WebSocket) {
    let limits = app.edge.limits;
    // C1: AUTH first, within the limit (pings do not extend it).
    let traffic = Arc::new(Traffic::default());
    let first =
        match tokio::time::timeout(limits.auth_timeout, next_frame(&mut socket, &traffic)).await {
            Err(_) => {
                let why = format!("no AUTH within {} s", limits.auth_timeout.as_secs());
                refuse_auth(&app, &peer, "", "edgeAuthTimeout", &why).await;
                close(&mut socket).await;
                return;
            }
            Ok(Incoming::Ended) => return,
            Ok(Incoming::Broken(why)) => {
                refuse_auth(&app, &peer, "", "edgeNotAuthenticated", &why).await;
                close(&mut socket).await;
                return;
            }
            Ok(Incoming::Frame(bytes)) => bytes,
        };
    let (auth, key) = match thinghost_alwayson::decode(&first) {
        Ok(Frame::Whole(Message {
            header,
            body: Body::Auth { claims },
        })) => {
            let key = claims
                .into_iter()
                .find(|(name, _)| name == "appKey")
                .map(|(_, value)| value);
            (header, key)
        }
        other => {
            let why = match other {
                Ok(Frame::Whole(m)) => format!("the first message was {}, not AUTH", m.header.code),
                Ok(Frame::Chunk(_)) => "the first message was a chunk, not AUTH".to_string(),
                Err(e) => format!("the first frame is not the protocol: {e}"),
            };
            refuse_auth(&app, &peer, "", "edgeNotAuthenticated", &why).await;
            close(&mut socket).await;
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
        let refusal = answer(
            &auth,
            Code::UNAUTHORIZED,
            Some("AUTH needs the claim appKey".into()),
        );
        let _ = send(&mut socket, &app, &traffic, &refusal).await;
        close(&mut socket).await;
        return;
    };
    let checked = {
        let (app, peer, key) = (app.clone(), peer.clone(), key.clone());
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
            // One answer for every bad key: unknown, expired, outside its allow-list, its user
            // unusable (the audit says which).
            let refusal = answer(
                &auth,
                Code::UNAUTHORIZED,
                Some("authentication failed".into()),
            );
            let _ = send(&mut socket, &app, &traffic, &refusal).await;
            close(&mut socket).await;
            return;
        }
    };
    let Some(session) = session_id() else {
        close(&mut socket).await;
        return;
    };
    let (conn, requests) = app.edge.open(&caller.name, peer.addr, traffic.clone());
    let mut open = Open {
        app: app.clone(),
        caller: caller.clone(),
        address: peer.addr.to_string(),
        conn,
        why: "the connection's task ended".into(),
    };
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
    let link = Link {
        app: &app,
        peer: &peer,
        caller: &caller,
        key: &key,
        conn,
        session,
        traffic: &traffic,
    };
    open.why = if send(&mut socket, &app, &traffic, &welcome).await {
        link.serve(&mut socket, requests).await
    } else {
        "the connection failed".to_string()
    };
}

/// A session id: random, neither 0 nor AUTH's.
fn session_id() -> Option<u32> {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).ok()?;
        let s = u32::from_be_bytes(b);
        if s != 0 && s != thinghost_alwayson::message::NO_SESSION {
            return Some(s);
        }
    }
}

/// An authenticated connection.
struct Link<'a> {
    app: &'a Arc<App>,
    peer: &'a Peer,
    caller: &'a Caller,
    /// The key it signed in with, checked again every second and before every BIND.
    key: &'a str,
    conn: u64,
    session: u32,
    traffic: &'a Traffic,
}

/// A request sent to the device, waiting for its answer (C5).
struct Waiting {
    reply: std::sync::mpsc::SyncSender<Answer>,
    deadline: Instant,
}

impl Link<'_> {
    /// Serves the connection until it ends; why it ended. Beside the device's messages, it
    /// sends the platform's requests for the device (`requests`, C5) and hands each answer to
    /// whoever waits for it.
    async fn serve(&self, socket: &mut WebSocket, mut requests: Receiver<Outbound>) -> String {
        let (app, limits) = (self.app, self.app.edge.limits);
        let mut joiner = Reassembler::new(
            limits.max_message,
            limits.max_pending,
            limits.reassembly_timeout.as_millis() as u64,
        );
        let started = Instant::now();
        let now_ms = || started.elapsed().as_millis() as u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Requests sent to the device, by request id.
        let mut waiting: HashMap<u32, Waiting> = HashMap::new();
        // The answers to the device's own requests, from their tasks.
        let (answers, mut answered) =
            tokio::sync::mpsc::channel::<(Message, Option<String>)>(REQUESTS_PER_DEVICE);
        let mut running = 0usize;
        let mut last_id: u32 = 0;
        loop {
            let bytes = tokio::select! {
                incoming = next_frame(socket, self.traffic) => match incoming {
                    Incoming::Ended => return "closed by the device".into(),
                    Incoming::Broken(why) => {
                        malformed(app, self.peer, &self.caller.name, socket, &why).await;
                        return why;
                    }
                    Incoming::Frame(bytes) => bytes,
                },
                Some((m, refused)) = answered.recv() => {
                    running -= 1;
                    if !send(socket, app, self.traffic, &m).await {
                        return "the connection failed".into();
                    }
                    if let Some(why) = refused {
                        close(socket).await;
                        return why;
                    }
                    continue;
                }
                Some(out) = requests.recv(), if waiting.len() < limits.max_in_flight => {
                    if out.deadline <= Instant::now() {
                        continue;
                    }
                    // An id no request waiting for its answer has (ids wrap, skipping 0).
                    loop {
                        last_id = last_id.wrapping_add(1).max(1);
                        if !waiting.contains_key(&last_id) {
                            break;
                        }
                    }
                    let m = Message {
                        header: Header { code: out.code, request_id: last_id, endpoint_id: 0, session_id: self.session },
                        body: Body::Request(out.request),
                    };
                    match thinghost_alwayson::frames(&m, limits.chunk_size, limits.max_message) {
                        Ok(frames) => {
                            if !send_frames(socket, self.traffic, frames).await {
                                return "the connection failed".into();
                            }
                            if let Some(reply) = out.reply {
                                waiting.insert(last_id, Waiting { reply, deadline: out.deadline });
                            }
                        }
                        Err(e) => {
                            if let Some(reply) = out.reply {
                                let _ = reply.try_send(Answer {
                                    code: Code::ENTITY_TOO_LARGE,
                                    reason: Some(format!("the request cannot be sent to the device: {e}")),
                                    content: None,
                                });
                            }
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {
                    if self.traffic.seen().elapsed() > limits.idle {
                        close(socket).await;
                        return format!("nothing received for {} s (missed keep-alives)", limits.idle.as_secs());
                    }
                    if let Some(why) = self.refused().await {
                        let _ = send(socket, app, self.traffic, &answer(&Header { code: Code::UNAUTHORIZED, request_id: 0, endpoint_id: 0, session_id: self.session }, Code::UNAUTHORIZED, Some(why.clone()))).await;
                        close(socket).await;
                        return why;
                    }
                    for dropped in joiner.expire(now_ms()) {
                        tracing::warn!(user = %self.caller.name, request = dropped, "an AlwaysOn message stayed incomplete: dropped");
                    }
                    // Nobody waits past a request's deadline: a late answer is dropped.
                    let now = Instant::now();
                    waiting.retain(|_, w| w.deadline > now);
                    continue;
                }
            };
            let message = match thinghost_alwayson::decode(&bytes) {
                Ok(Frame::Whole(m)) => m,
                Ok(Frame::Chunk(c)) => {
                    let header = c.header;
                    match joiner.add(c, now_ms()) {
                        Ok(Some(m)) => m,
                        Ok(None) => continue,
                        Err(e) if e.is_limit() => {
                            let refusal = answer(&header, Code::BAD_REQUEST, Some(e.to_string()));
                            if !send(socket, app, self.traffic, &refusal).await {
                                return "the connection failed".into();
                            }
                            continue;
                        }
                        Err(e) => {
                            let why = e.to_string();
                            malformed(app, self.peer, &self.caller.name, socket, &why).await;
                            return why;
                        }
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    malformed(app, self.peer, &self.caller.name, socket, &why).await;
                    return why;
                }
            };
            // The device's answer to one of the platform's requests: to whoever waits for it
            // (nobody, once its deadline passed).
            if message.header.code.is_response() {
                if message.header.session_id == self.session
                    && let Body::Response(r) = message.body
                    && let Some(w) = waiting.remove(&message.header.request_id)
                {
                    let _ = w.reply.try_send(Answer {
                        code: message.header.code,
                        reason: r.reason,
                        content: r.content,
                    });
                }
                continue;
            }
            let reply = match self.handle(message).await {
                Handled::Answer(m) => m,
                Handled::Nothing => continue,
                Handled::Spawn(header, _) if running >= REQUESTS_PER_DEVICE => answer(
                    &header,
                    Code::SERVICE_UNAVAILABLE,
                    Some(format!(
                        "this connection has {REQUESTS_PER_DEVICE} requests being answered; wait for their answers"
                    )),
                ),
                Handled::Spawn(header, r) => {
                    running += 1;
                    let task = answer_request(
                        app.clone(),
                        self.peer.clone(),
                        self.key.to_string(),
                        self.caller.clone(),
                        self.conn,
                        header,
                        r,
                    );
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        let _ = answers.send(task.await).await;
                    });
                    continue;
                }
                Handled::Refused(why, m) => {
                    let _ = send(socket, app, self.traffic, &m).await;
                    close(socket).await;
                    return why;
                }
            };
            if !send(socket, app, self.traffic, &reply).await {
                return "the connection failed".into();
            }
        }
    }

    /// Why the connection may no longer act (its key or user, K1-K3), audited; `None` while it
    /// may. Checked here, on the connection's task: it is a hash and a lookup under the model's
    /// shared lock (as a property read is), and a thousand devices ask every second (a job on
    /// another thread each would keep a thread, and its memory, per device).
    async fn refused(&self) -> Option<String> {
        match crate::http::auth::check_key(self.app, self.key, self.peer) {
            Ok((caller, _)) if *caller.name == *self.caller.name => None,
            Ok(_) => Some("the key now belongs to another user".into()),
            Err(refused) => {
                let why = format!(
                    "the connection's key or user no longer signs in: {}",
                    refused.detail
                );
                let (app, addr) = (self.app.clone(), self.peer.addr);
                blocking(move || {
                    crate::state::auth::audit_refusal(&app, &refused, addr, Some(ENDPOINT))
                })
                .await;
                Some(why)
            }
        }
    }

    /// One message of the authenticated connection.
    async fn handle(&self, m: Message) -> Handled {
        let header = m.header;
        if header.session_id != self.session {
            return Handled::Answer(answer(
                &header,
                Code::UNAUTHORIZED,
                Some(format!(
                    "session {} is not this connection's (its AUTH answer gave {})",
                    header.session_id, self.session
                )),
            ));
        }
        match m.body {
            Body::KeepAlive => Handled::Answer(answer(&header, Code::SUCCESS, None)),
            Body::Auth { .. } => Handled::Answer(answer(
                &header,
                Code::BAD_REQUEST,
                Some("this connection is authenticated already".into()),
            )),
            Body::Bind { gateway, names } => {
                let (app, peer, key, caller) = (
                    self.app.clone(),
                    self.peer.clone(),
                    self.key.to_string(),
                    self.caller.clone(),
                );
                let (conn, unbind) = (self.conn, header.code == Code::UNBIND);
                let outcome = blocking(move || {
                    if let Some(why) = check_still(&app, &peer, &key, &caller.name) {
                        return Err(why);
                    }
                    Ok(bind_all(
                        &app,
                        &caller,
                        conn,
                        unbind,
                        gateway.map(|g| g.name),
                        names,
                    ))
                })
                .await;
                match outcome {
                    Some(Ok((code, reason))) => Handled::Answer(answer(&header, code, reason)),
                    Some(Err(why)) => Handled::Refused(
                        why.clone(),
                        answer(&header, Code::UNAUTHORIZED, Some(why)),
                    ),
                    None => Handled::Answer(answer(&header, Code::INTERNAL_SERVER_ERROR, None)),
                }
            }
            Body::Request(r)
                if header.code == Code::POST
                    && r.entity_type == codes::THING
                    && r.characteristic == codes::SERVICES
                    && r.name == crate::api::edge::UPDATE_VALUES =>
            {
                let values = match vtqs(r.params.as_ref()) {
                    Ok(v) => v,
                    Err(why) => {
                        return Handled::Answer(answer(&header, Code::BAD_REQUEST, Some(why)));
                    }
                };
                if let Some(why) = self.refused().await {
                    return Handled::Refused(
                        why.clone(),
                        answer(&header, Code::UNAUTHORIZED, Some(why)),
                    );
                }
                let push = crate::api::edge::Push {
                    caller: self.caller.clone(),
                    conn: self.conn,
                    thing: r.entity_name,
                    values,
                };
                match pushed(self.app, push).await {
                    Some(Ok(_)) => Handled::Answer(answer(&header, Code::SUCCESS, None)),
                    Some(Err(e)) => Handled::Answer(answer(
                        &header,
                        Code::for_http_status(e.status.as_u16()),
                        Some(e.message),
                    )),
                    None => Handled::Answer(answer(&header, Code::INTERNAL_SERVER_ERROR, None)),
                }
            }
            Body::Request(r) => Handled::Spawn(header, r),
            Body::Response(_) => Handled::Nothing,
        }
    }
}

enum Handled {
    Answer(Message),
    Nothing,
    /// A device's own request: answered by a task of its own, beside the connection's loop.
    Spawn(Header, Request),
    /// The connection may no longer act: the answer, then the connection closes.
    Refused(String, Message),
}

/// Whether the key still signs this user in (K1-K3): `None` when it does, else why not (the
/// refusal audited).
fn check_still(app: &App, peer: &Peer, key: &str, user: &str) -> Option<String> {
    match crate::http::auth::check_key(app, key, peer) {
        Ok((caller, _)) if *caller.name == *user => None,
        Ok(_) => Some("the key now belongs to another user".into()),
        Err(refused) => {
            crate::state::auth::audit_refusal(app, &refused, peer.addr, Some(ENDPOINT));
            Some(format!(
                "the connection's key or user no longer signs in: {}",
                refused.detail
            ))
        }
    }
}

/// BIND or UNBIND of `names` (C2), each name once and at most [`MAX_NAMES_PER_BIND`]: every
/// name is tried; the answer is SUCCESS when all were, else the first refusal's code with the
/// refusals' reasons. A new bind marks the Thing connected and an unbind disconnected (C3);
/// each bind, unbind and refusal is audited (names and reasons bounded).
fn bind_all(
    app: &App,
    caller: &Caller,
    conn: u64,
    unbind: bool,
    gateway: Option<String>,
    mut names: Vec<String>,
) -> (Code, Option<String>) {
    if names.len() > MAX_NAMES_PER_BIND {
        return (
            Code::BAD_REQUEST,
            Some(format!(
                "a BIND names at most {MAX_NAMES_PER_BIND} Things, not {}",
                names.len()
            )),
        );
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let gateway = gateway.map(|g| bounded(&g, AUDITED_NAME));
    let mut first: Option<Code> = None;
    let mut reasons = Vec::new();
    // The Things whose connection state changes: written in one change at the end (C3).
    let mut changed: Vec<&str> = Vec::new();
    for name in &names {
        let source = format!("Things/{}", bounded(name, AUDITED_NAME));
        if unbind {
            if app.edge.unbind(conn, name) {
                changed.push(name);
                app.audit(
                    &caller.name,
                    CONNECTIONS,
                    "thingUnbound",
                    json!({"connection": conn}),
                    &source,
                    "Thing",
                );
            }
            continue;
        }
        match crate::api::edge::bind(app, caller, conn, name, gateway.as_deref()) {
            Ok(new) => {
                if new {
                    changed.push(name);
                    app.audit(
                        &caller.name,
                        CONNECTIONS,
                        "thingBound",
                        json!({"connection": conn, "gateway": gateway}),
                        &source,
                        "Thing",
                    );
                }
            }
            Err(e) => {
                first.get_or_insert(Code::for_http_status(e.status.as_u16()));
                if reasons.len() < 8 {
                    app.audit(
                        &caller.name,
                        CONNECTIONS,
                        "bindRefused",
                        json!({"connection": conn, "thing": bounded(name, AUDITED_NAME), "status": e.status.as_u16(), "reason": bounded(&e.message, 4 * AUDITED_NAME)}),
                        "",
                        "",
                    );
                    reasons.push(e.message);
                }
            }
        }
    }
    crate::api::edge::set_connected(app, caller, &changed, !unbind);
    match first {
        None => (Code::SUCCESS, None),
        Some(code) => (code, Some(reasons.join("; "))),
    }
}

/// The answer to a device's own request, and why the connection must close (its key or user
/// no longer signs in), if it must.
async fn answer_request(
    app: Arc<App>,
    peer: Peer,
    key: String,
    caller: Caller,
    conn: u64,
    header: Header,
    r: Request,
) -> (Message, Option<String>) {
    let Ok(_permit) = DEVICE_REQUESTS.acquire().await else {
        return (answer(&header, Code::INTERNAL_SERVER_ERROR, None), None);
    };
    let outcome = tokio::task::spawn_blocking(move || {
        if let Some(why) = check_still(&app, &peer, &key, &caller.name) {
            return Err(why);
        }
        let _handling = Handling::of(conn);
        Ok(device_request(&app, &caller, header.code, r)
            .inspect_err(|e| e.audit_denial(&app, &caller.name, json!({"via": "AlwaysOn"}))))
    })
    .await;
    match outcome {
        Ok(Ok(Ok(content))) => (Message::answer(&header, Code::SUCCESS, None, content), None),
        Ok(Ok(Err(e))) => (
            answer(
                &header,
                Code::for_http_status(e.status.as_u16()),
                Some(e.message),
            ),
            None,
        ),
        Ok(Err(why)) => (
            answer(&header, Code::UNAUTHORIZED, Some(why.clone())),
            Some(why),
        ),
        Err(_) => (answer(&header, Code::INTERNAL_SERVER_ERROR, None), None),
    }
}

/// Devices' own requests being answered at once, over all connections: each may wait (for
/// another device, a slow service) and holds a thread while it does.
static DEVICE_REQUESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);
/// A device's own requests answered at once; past them, SERVICE_UNAVAILABLE.
const REQUESTS_PER_DEVICE: usize = 4;

/// A device's request other than a push (C1: as the key's user, every check applied): GET and
/// PUT of a property, POST of a service or an event, of any entity the protocol names. The
/// answer's content: the API's answer as an InfoTable.
fn device_request(
    app: &Arc<App>,
    caller: &Caller,
    code: Code,
    r: Request,
) -> Result<Option<Table>, ApiError> {
    let Some(kind) = codes::collection(r.entity_type).and_then(Kind::from_collection) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "entity type 0x{:02x} is not one the platform serves",
                r.entity_type
            ),
        ));
    };
    convert::within_budget(r.params.as_ref())
        .map_err(|why| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, why))?;
    let (entity, name) = (r.entity_name.as_str(), r.name.as_str());
    let reply = match (code, r.characteristic) {
        (Code::GET, codes::PROPERTIES) => {
            crate::api::entities::read_property(app, caller, kind, entity, name)?
        }
        (Code::PUT, codes::PROPERTIES) => {
            let mut row = convert::first_row(r.params.as_ref());
            let value = match row.remove(name) {
                Some(v) => Some(v),
                None if row.len() == 1 => row.into_iter().next().map(|(_, v)| v),
                None => None,
            };
            crate::api::entities::write_property(app, caller, kind, entity, name, value.as_ref())?
        }
        (Code::POST, codes::SERVICES) => {
            let params = crate::api::params::Params::from_pairs(
                convert::first_row(r.params.as_ref())
                    .into_iter()
                    .map(|(k, v)| (std::borrow::Cow::Owned(k), v))
                    .collect(),
            );
            crate::api::invoke(app, caller, kind, entity, name, params)?
        }
        (Code::POST, codes::EVENTS) => {
            let data = serde_json::Value::Object(convert::first_row(r.params.as_ref()));
            crate::api::events::fire(app, caller, kind, entity, name, &data)?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{code} of {} is not served over AlwaysOn: GET and PUT a property, POST a service or an event",
                    codes::characteristic(r.characteristic).unwrap_or("an unknown characteristic")
                ),
            ));
        }
    };
    Ok(convert::reply_table(reply))
}

/// The values of an `UpdateSubscribedPropertyValues`: its parameter `values`, an InfoTable of
/// the NamedVTQ shape (`name`, `value`, `time`, `quality`).
fn vtqs(params: Option<&Table>) -> Result<Vec<crate::api::edge::Vtq>, String> {
    let shape = "UpdateSubscribedPropertyValues takes values, an InfoTable of name, value, time and quality";
    let p = params.ok_or(shape)?;
    convert::within_budget(Some(p))?;
    let column = p.field("values").ok_or(shape)?;
    let Some(Value::InfoTable(t)) = p
        .rows
        .first()
        .and_then(|r| r.get(column))
        .map(Value::unwrapped)
    else {
        return Err(shape.into());
    };
    let name = t.field("name").ok_or(shape)?;
    let value = t.field("value").ok_or(shape)?;
    let (time, quality) = (t.field("time"), t.field("quality"));
    let mut out = Vec::with_capacity(t.rows.len());
    for (i, row) in t.rows.iter().enumerate() {
        let at = |c: Option<usize>| c.and_then(|c| row.get(c)).map(Value::unwrapped);
        let Some(Value::Text(_, name)) = at(Some(name)) else {
            return Err(format!("values, row {i}: name is not a string"));
        };
        let time = match at(time) {
            None | Some(Value::Nothing) => None,
            Some(Value::Datetime(ms) | Value::Long(ms)) => Some(*ms),
            Some(Value::Integer(ms)) => Some(i64::from(*ms)),
            Some(Value::Number(ms)) if ms.is_finite() => Some(*ms as i64),
            Some(_) => return Err(format!("values, row {i}: time is not a DATETIME")),
        };
        let quality = match at(quality) {
            Some(Value::Text(_, q)) => q.clone(),
            _ => "GOOD".to_string(),
        };
        out.push(crate::api::edge::Vtq {
            name: name.clone(),
            value: at(Some(value))
                .map(convert::to_json)
                .unwrap_or(serde_json::Value::Null),
            time,
            quality,
        });
    }
    Ok(out)
}
