//! The HTTP layer: routes, the request log, and one accept loop for TLS and plain HTTP.

use crate::app::{App, LoggedUser, Peer};
use crate::rest;
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
        .route("/Thingworx/TWS", any(crate::tws::tws))
        .route("/Thingworx", any(api))
        .route("/Thingworx/{*rest}", any(api))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// One log line per request: method, path (never the query, which could hold a key), user,
/// status, duration.
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
    tracing::info!(
        method = %method,
        path = %path,
        user = %user,
        status = res.status().as_u16(),
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    res
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
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
    let caller = match crate::auth::authenticate(&app, &headers, &uri, &peer).await {
        Ok(c) => c,
        Err(r) => {
            app.audit(
                &r.user,
                crate::audit::category::AUTHENTICATION,
                r.key,
                serde_json::json!({"detail": r.detail, "address": peer.addr.to_string()}),
                "",
                "",
            );
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
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": "the body is over 16 MiB"}),
            );
        }
    };
    let path = uri.path().to_string();
    let app2 = app.clone();
    let caller2 = caller.clone();
    // Reads take a shared lock for well under a microsecond and run here; writes and service
    // calls may wait for the disk or run extension code, so they go to the blocking pool.
    let result = if method == Method::GET {
        Ok(rest::handle(
            &app2, &caller2, &method, &path, &headers, &body,
        ))
    } else {
        tokio::task::spawn_blocking(move || {
            rest::handle(&app2, &caller2, &method, &path, &headers, &body)
        })
        .await
    };
    let mut res = match result {
        Ok(Ok(rest::Reply::Json(v))) => json_response(StatusCode::OK, &v),
        Ok(Ok(rest::Reply::Empty)) => StatusCode::OK.into_response(),
        Ok(Err(e)) => {
            app.audit_denial(&caller.name, &e, serde_json::json!({}));
            json_response(e.status, &e.body())
        }
        Err(join) => {
            tracing::error!(error = %join, "a request handler panicked");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "internal error"}),
            )
        }
    };
    res.extensions_mut().insert(LoggedUser(caller.name));
    res
}

/// Serves `router` on `listener` until `shutdown` resolves; TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
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
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let peer = Peer {
                        addr: addr.ip(),
                        client_cert_user: None,
                    };
                    serve_connection(TokioIo::new(tcp), router, peer).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
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
                        .and_then(crate::tls::client_certificate_user);
                    let peer = Peer {
                        addr: addr.ip(),
                        client_cert_user,
                    };
                    serve_connection(TokioIo::new(stream), router, peer).await;
                }
            }
        });
    }
}

async fn serve_connection<S>(io: TokioIo<S>, router: Router, peer: Peer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            router.clone().oneshot(req.map(Body::new))
        });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
