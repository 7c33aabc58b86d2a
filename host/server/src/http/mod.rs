//! The HTTP layer: routes, the request log, and one accept loop for TLS and plain HTTP; the REST
//! adapter (`rest`), `/Thingworx/TWS` (`tws`) and TLS (`tls`). Nothing outside the command line
//! imports this folder: it is an adapter over `crate::api`.

pub mod auth;
pub mod edge;
pub mod lane;
pub mod rest;
pub mod tls;
pub mod tunnel;
pub mod tws;

use crate::state::app::{App, LoggedError, LoggedUser, Peer};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/Thingworx/TWS", any(crate::http::tws::tws))
        .route(
            "/Thingworx/WSTunnelServer/{tid}",
            any(crate::http::tunnel::device),
        )
        .route("/Thingworx/WS", any(crate::http::edge::ws))
        .route("/Thingworx", any(api))
        .route("/Thingworx/{*rest}", any(api))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// One log line per request: method, path (never the query, which could hold a key), user,
/// status, duration, and for a refused or failed request its reason.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let user = res
        .extensions()
        .get::<LoggedUser>()
        .map(|u| u.0.clone())
        .unwrap_or_default();
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    match res.extensions().get::<LoggedError>() {
        // The reason, quoted and escaped (a message may hold what a client sent).
        Some(LoggedError(error)) => tracing::info!(
            method = %method,
            path = %path,
            user = %user,
            status = res.status().as_u16(),
            duration_ms,
            error = ?error,
            "request"
        ),
        None => tracing::info!(
            method = %method,
            path = %path,
            user = %user,
            status = res.status().as_u16(),
            duration_ms,
            "request"
        ),
    }
    res
}

pub use crate::state::app::HttpLimits as Limits;

/// A body larger than this takes one of [`Limits::large_bodies_at_once`] slots while it is read
/// and handled.
pub const LARGE_BODY: usize = 64 * 1024;
/// How long a large body waits for a slot before 503.
pub const BODY_WAIT: Duration = Duration::from_secs(5);
/// How long a body may take to arrive (408 after it).
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Reads the body of an API request within its route's limit: a declared length above it is
/// refused before a byte is read (413), a body that grows past it is cut off (413), and large
/// bodies are read a few at a time (memory per request is a small multiple of its body; JSON
/// nesting is bounded by the parser's depth limit of 128).
async fn read_body(app: &App, uri: &Uri, req: Request) -> Result<ReadBody, Response> {
    let limit = if crate::api::table::takes_large_body(uri.path()) {
        app.http.max_script_body
    } else {
        app.http.max_body
    };
    let too_large = || {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": format!("the body is over {} KiB, the limit of this route (serve --max-body-kib, --max-script-body-mib)", limit / 1024)}),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A body known to be empty (a GET) takes no slot; one of unknown length (chunked) counts as
    // large.
    let empty =
        declared == Some(0) || axum::body::HttpBody::size_hint(req.body()).exact() == Some(0);
    let permit = if !empty && declared.is_none_or(|n| n > LARGE_BODY as u64) {
        match tokio::time::timeout(BODY_WAIT, app.large_bodies.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                let mut res = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"error": "too many large requests at once; try again in a moment"}),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(res);
            }
        }
    } else {
        None
    };
    // A body is read within a deadline, so that one sent a byte at a time cannot hold its slot.
    match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(bytes)) => Ok(ReadBody {
            bytes,
            _permit: permit,
        }),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(json_response(
            StatusCode::REQUEST_TIMEOUT,
            &serde_json::json!({"error": format!("the body did not arrive within {} s", BODY_DEADLINE.as_secs())}),
        )),
    }
}

/// A request's body, and the large-body slot it holds until it is dropped.
struct ReadBody {
    bytes: Bytes,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    text_response(status, body.to_string().into_bytes())
}

/// A JSON body already written to text.
fn text_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The process's call lane ([`lane`]): two threads per core.
static CALL_LANE: std::sync::OnceLock<lane::Lane> = std::sync::OnceLock::new();

fn new_call_lane() -> std::io::Result<lane::Lane> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    lane::Lane::new(2 * cores)
}

/// Starts the call lane: `serve` does before it listens, so that a failure is an error at start.
pub fn start_call_lane() -> std::io::Result<()> {
    if CALL_LANE.get().is_none() {
        let _ = CALL_LANE.set(new_call_lane()?);
    }
    Ok(())
}

/// Waits until the calls in the lane end: `serve` does before it stops, as a runtime's
/// shutdown waits for its blocking pool.
pub fn finish_calls() {
    if let Some(lane) = CALL_LANE.get() {
        lane.wait_idle();
    }
}

fn call_lane() -> &'static lane::Lane {
    CALL_LANE.get_or_init(|| new_call_lane().expect("the call lane's threads start"))
}

async fn api(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .expect("the accept loop sets the peer");
    let caller = match crate::http::auth::authenticate(&app, &headers, &uri, &peer).await {
        Ok(c) => c,
        Err(r) if r.busy => {
            let mut res = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": r.detail}),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
        Err(r) => {
            crate::state::auth::audit_refusal(&app, &r, peer.addr, None);
            let mut res = json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "authentication failed"}),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"thinghost\""),
            );
            return res;
        }
    };
    let body = match read_body(&app, &uri, req).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let path = uri.path().to_string();
    let app2 = app.clone();
    let caller2 = caller.clone();
    // Reads take a shared lock for well under a microsecond and run here; writes and service
    // calls may wait for the disk or run extension code, so they go to the call lane.
    let result = if method == Method::GET {
        Ok(rest::handle(
            &app2,
            &caller2,
            &method,
            &path,
            &headers,
            &body.bytes,
        ))
    } else {
        call_lane()
            .run(move || rest::handle(&app2, &caller2, &method, &path, &headers, &body.bytes))
            .await
    };
    let mut res = match result {
        Ok(Ok(reply)) => match reply.body() {
            Some(text) => text_response(StatusCode::OK, text),
            None => StatusCode::OK.into_response(),
        },
        Ok(Err(e)) => {
            e.audit_denial(&app, &caller.name, serde_json::json!({}));
            let mut res = json_response(e.status, &e.body());
            res.extensions_mut()
                .insert(LoggedError(e.message.chars().take(300).collect()));
            res
        }
        Err(failed) => {
            tracing::error!(error = %failed, "a request gave no answer");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "internal error"}),
            )
        }
    };
    res.extensions_mut()
        .insert(LoggedUser(caller.name.to_string()));
    res
}

/// Serves `router` on `listener` until `shutdown` resolves; TLS when `tls` is given. At most
/// `limits.max_connections` connections are served at once: one accepted past that is closed
/// at once (its descriptor freed), and the server serves again as soon as connections end
/// (slow and silent ones end by the header-read and idle timeouts).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    let mut last_warned: Option<Instant> = None;
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(per_address) = PerAddress::take(&per_address, addr.ip(), limits) else {
            drop(tcp);
            if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    address = %addr.ip(),
                    max = limits.max_connections_per_address,
                    "connections refused: this address holds --max-connections-per-address"
                );
            }
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connections refused: the server serves --max-connections at once"
                );
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let slot = Arc::new(crate::state::app::Slot(Box::new((slot, per_address))));
            let activity = Activity::new();
            let tcp = Tracked {
                inner: tcp,
                activity: activity.clone(),
            };
            let peer = |client_cert_user| Peer {
                addr: addr.ip(),
                client_cert_user,
                slot: Some(slot.clone()),
            };
            match tls {
                None => {
                    let peer = peer(None);
                    serve_connection(TokioIo::new(tcp), router, peer, limits, activity).await;
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        limits.header_read_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, peer = %addr, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let client_cert_user = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(crate::http::tls::client_certificate_user);
                    let peer = peer(client_cert_user);
                    serve_connection(TokioIo::new(stream), router, peer, limits, activity).await;
                }
            }
        });
    }
}

/// A connection's place among its address's (see [`Limits::max_connections_per_address`]),
/// given back when dropped.
struct PerAddress {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    network: std::net::IpAddr,
}

impl PerAddress {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        addr: std::net::IpAddr,
        limits: Limits,
    ) -> Option<PerAddress> {
        let network = crate::state::auth::network(addr);
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(network).or_insert(0);
        if *n >= limits.max_connections_per_address {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: counts.clone(),
            network,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.network);
            }
        }
    }
}

/// When a connection last wrote a byte or finished an answer, and the requests it is answering.
/// (A connection upgraded to a WebSocket leaves hyper, and this watch, when it upgrades.)
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<std::sync::atomic::AtomicU64>,
    /// Requests being answered: a connection waiting for its answer is not idle, however long
    /// the answer takes.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// A request in flight on its connection, until dropped.
struct InFlight(Activity);

impl InFlight {
    fn new(a: &Activity) -> InFlight {
        a.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: Arc::default(),
            in_flight: Arc::default(),
        }
    }
    fn touch(&self) {
        self.last.store(
            self.start.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    fn idle(&self) -> Duration {
        if self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.start.elapsed().saturating_sub(Duration::from_millis(
            self.last.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }
}

/// A stream that notes when it writes bytes (an answer the client is still reading).
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // (Bytes read prove nothing: a slow client sends them a few at a time.)
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection<S>(
    io: TokioIo<S>,
    router: Router,
    peer: Peer,
    limits: Limits,
    activity: Activity,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let watched = activity.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            let in_flight = InFlight::new(&watched);
            let answer = router.clone().oneshot(req.map(Body::new));
            async move {
                let res = answer.await;
                drop(in_flight);
                res
            }
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The header timeout is this function's watch, once a second, rather than hyper's timer,
    // which arms a timer for every request (measured: 8% of the requests a second, row 4).
    builder
        .http1()
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(64);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(Duration::from_secs(1).min(limits.header_read_timeout));
    loop {
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = check.tick() => {
                if activity.idle() >= limits.header_read_timeout {
                    tracing::debug!("a connection brought no request in time; closed");
                    return;
                }
            }
        }
    }
}
