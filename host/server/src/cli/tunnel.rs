//! Both ends of a remote-access tunnel outside the server (DOMAIN C7): `thinghost rac connect`,
//! the remote-access client, and the device's agent that `thinghost edge simulate --tunnels`
//! runs when the platform asks it to open a tunnel (`StartTunnel`).
//!
//! The client presents the session's nonce on `/Thingworx/TWS` at once (before it expires),
//! then relays one local TCP connection at a time over that WebSocket: the bytes as binary
//! messages, `{"op": "CloseTunnel"}` when the local connection closes, `{"op": "OpenTunnel"}` for
//! the next one. The agent connects to the endpoint on the device's side and to
//! `/Thingworx/WSTunnelServer/{tid}` with the device's key, and relays until either closes.

use super::Failure;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A connection to the server, with TLS or without.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The most bytes read from a local socket into one message (the server takes 64 KiB by
/// default: `serve --tunnel-max-message-kib`).
pub const CHUNK: usize = 32 * 1024;

/// Opens a WebSocket to `url` (`ws://` or `wss://`) with `headers` (and `protocol` asked, if
/// any). A refusal of the server is the error, with its status and message.
pub async fn connect(
    url: &url::Url,
    headers: &[(&str, &str)],
    protocol: Option<&str>,
    ca_pem: Option<&[u8]>,
) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let host = url.host_str().ok_or("the URL has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if url.scheme() == "wss" {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(super::edge::tls_config(ca_pem)?));
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host} is not a server name: {e}"))?;
        Box::new(connector.connect(name, tcp).await.map_err(|e| {
            format!("TLS with {host}:{port}: {e} (a server run with --insecure-http speaks plain HTTP: then give --insecure-http here too)")
        })?)
    } else {
        Box::new(tcp)
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            axum::http::HeaderValue::from_str(value).map_err(|e| e.to_string())?,
        );
    }
    if let Some(p) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            axum::http::HeaderValue::from_str(p).map_err(|e| e.to_string())?,
        );
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let message = serde_json::from_str::<Json>(&body)
                .ok()
                .and_then(|j| j["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            Err(format!(
                "the server answered {}: {message}",
                response.status()
            ))
        }
        Err(e) => Err(format!("the WebSocket handshake with {url}: {e}")),
    }
}

/// The address of `path` on the server of `url` (`https://h:p` -> `wss://h:p/path`).
pub fn ws_address(url: &str, path: &str) -> Result<url::Url, String> {
    let mut u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match u.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => return Err(format!("{url}: the scheme is https (or http), not {other}")),
    };
    u.set_scheme(scheme)
        .map_err(|_| format!("{url}: cannot use it as a WebSocket address"))?;
    u.set_path(path);
    u.set_query(None);
    Ok(u)
}

// ---- the device's agent ---------------------------------------------------------------------

/// What the platform's `StartTunnel` asked for.
#[derive(Debug, Clone)]
pub struct TunnelAsked {
    pub tid: String,
    pub host: String,
    pub port: u16,
}

impl TunnelAsked {
    /// From `StartTunnel`'s parameters (`tid`, and `connection`: JSON text with `host`, `port`).
    pub fn from_row(row: &serde_json::Map<String, Json>) -> Result<TunnelAsked, String> {
        let tid = row
            .get("tid")
            .and_then(Json::as_str)
            .filter(|t| {
                !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .ok_or("StartTunnel without a tid")?
            .to_string();
        let connection: Json = match row.get("connection") {
            Some(Json::String(s)) => {
                serde_json::from_str(s).map_err(|e| format!("StartTunnel's connection: {e}"))?
            }
            Some(v @ Json::Object(_)) => v.clone(),
            _ => return Err("StartTunnel without a connection".into()),
        };
        let host = connection["host"]
            .as_str()
            .ok_or("StartTunnel's connection has no host")?
            .to_string();
        let port = connection["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or("StartTunnel's connection has no port")?;
        Ok(TunnelAsked { tid, host, port })
    }
}

/// Runs one tunnel on the device's side: connects to the endpoint, then to the server with the
/// device's key, and relays until either side closes. What it did, for the device's log.
pub async fn agent(
    server: &str,
    key: &str,
    ca_pem: Option<&[u8]>,
    asked: TunnelAsked,
) -> Result<String, String> {
    let endpoint = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((asked.host.as_str(), asked.port)),
    )
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let url = ws_address(
        server,
        &format!("{}{}", crate::api::tunnels::DEVICE_PATH, asked.tid),
    )?;
    let mut ws = connect(
        &url,
        &[("appKey", key)],
        Some(crate::api::tunnels::BINARY_PROTOCOL),
        ca_pem,
    )
    .await?;
    let endpoint = match endpoint {
        Ok(s) => s,
        Err(e) => {
            let why = format!(
                "cannot reach the endpoint {}:{}: {e}",
                asked.host, asked.port
            );
            let _ = ws
                .send(WsMessage::Close(Some(
                    tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Error,
                        reason: crate::state::auth::bounded(&why, 120).into(),
                    },
                )))
                .await;
            return Err(why);
        }
    };
    let _ = endpoint.set_nodelay(true);
    let (mut tcp_r, mut tcp_w) = endpoint.into_split();
    let (mut sink, mut stream) = ws.split();
    let (mut up, mut down) = (0u64, 0u64);
    let to_server = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match tcp_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(WsMessage::Binary(bytes::Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return "the server's side closed".to_string();
                    }
                    up += n as u64;
                }
            }
        }
        let _ = sink
            .send(WsMessage::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code:
                        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                    reason: "the endpoint closed".into(),
                },
            )))
            .await;
        "the endpoint closed".to_string()
    };
    let from_server = async {
        while let Some(m) = stream.next().await {
            match m {
                Ok(WsMessage::Binary(b)) => {
                    if tcp_w.write_all(&b).await.is_err() {
                        return "the endpoint stopped reading".to_string();
                    }
                    down += b.len() as u64;
                }
                Ok(WsMessage::Close(c)) => {
                    return c
                        .map(|c| format!("the server closed the tunnel: {}", c.reason))
                        .unwrap_or_else(|| "the server closed the tunnel".into());
                }
                Ok(_) => {}
                Err(e) => return format!("the server's connection: {e}"),
            }
        }
        "the server's connection ended".to_string()
    };
    let why = tokio::select! {
        why = to_server => why,
        why = from_server => why,
    };
    Ok(format!(
        "tunnel {} to {}:{} ended ({why}): {down} bytes to the endpoint, {up} from it",
        asked.tid, asked.host, asked.port
    ))
}

// ---- the remote-access client -----------------------------------------------------------------

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: a session started with StartSession gives a launchUri; then\n  thinghost rac connect 'thinghost-rac://localhost:8443/SESSION?nonce=NONCE' --local-port 2222 --ca-cert DATA/dev-cert.pem\n  ssh -p 2222 localhost\n\n\
The nonce is good once and for seconds: the client presents it at once. It then relays one local connection at \
a time to the session's endpoint on the device, until the session ends or it is interrupted (Ctrl-C ends the session)."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Present a session's nonce, then relay a local port to the session's device endpoint.
    Connect(Connect),
}

#[derive(clap::Args, Debug)]
pub struct Connect {
    /// The session's launch URI (StartSession's launchUri): thinghost-rac://HOST:PORT/SESSION?nonce=NONCE.
    #[arg(value_name = "LAUNCH_URI")]
    pub launch_uri: String,
    /// The local port to listen on (on 127.0.0.1).
    #[arg(long, value_name = "P")]
    pub local_port: u16,
    /// A PEM certificate to trust besides the public roots (the server's `--dev` certificate
    /// is DATA/dev-cert.pem).
    #[arg(long, value_name = "PEM", env = "THINGHOST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The server was started with --insecure-http: connect without TLS.
    #[arg(long)]
    pub insecure_http: bool,
    /// Relay one local connection, then end the session and exit.
    #[arg(long)]
    pub once: bool,
}

/// What a launch URI names.
#[derive(Debug, PartialEq)]
pub struct Launch {
    pub host: String,
    pub port: u16,
    pub session: String,
    pub nonce: String,
}

pub fn parse_launch(uri: &str) -> Result<Launch, String> {
    let u = url::Url::parse(uri.trim()).map_err(|e| format!("{uri:?} is not a launch URI: {e}"))?;
    if u.scheme() != "thinghost-rac" {
        return Err(format!(
            "{uri:?} is not a launch URI: it starts with thinghost-rac:// (StartSession's launchUri)"
        ));
    }
    let host = u
        .host_str()
        .ok_or("the launch URI names no host")?
        .to_string();
    let port = u.port().ok_or("the launch URI names no port")?;
    let session = u.path().trim_matches('/').to_string();
    let nonce = u
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .ok_or("the launch URI has no nonce")?;
    if session.is_empty() || session.contains('/') {
        return Err("the launch URI names no session".into());
    }
    Ok(Launch {
        host,
        port,
        session,
        nonce,
    })
}

pub fn run(args: Args) -> Result<i32, Failure> {
    let Action::Connect(c) = args.action;
    let launch = parse_launch(&c.launch_uri).map_err(Failure)?;
    let ca_pem =
        match &c.ca_cert {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                Failure(format!("cannot read the certificate {}: {e}", p.display()))
            })?),
            None => None,
        };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(client(c, launch, ca_pem)).map_err(Failure)
}

/// What the server said on the session's connection.
enum Said {
    Open(String),
    Refused(String),
    Closed(String),
    Ended(String),
    Other,
}

fn said(text: &str) -> Said {
    let Ok(v) = serde_json::from_str::<Json>(text) else {
        return Said::Other;
    };
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    match (v["event"].as_str(), v["state"].as_str()) {
        (Some("tunnel"), Some("open")) => {
            Said::Open(v["endpoint"].as_str().unwrap_or_default().to_string())
        }
        (Some("tunnel"), Some("refused")) => Said::Refused(reason),
        (Some("tunnel"), Some("closed")) => Said::Closed(format!(
            "{reason}: {} bytes to the device, {} from it",
            v["bytesToDevice"], v["bytesFromDevice"]
        )),
        (Some("session"), Some("ended")) => Said::Ended(reason),
        _ => Said::Other,
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<Box<dyn Io>>, WsMessage>;
type Stream = futures_util::stream::SplitStream<WebSocketStream<Box<dyn Io>>>;

/// The next thing the server said that matters (bytes outside a tunnel are dropped).
async fn next_said(stream: &mut Stream) -> Said {
    while let Some(m) = stream.next().await {
        match m {
            Ok(WsMessage::Text(t)) => match said(&t) {
                Said::Other => continue,
                s => return s,
            },
            Ok(WsMessage::Close(c)) => {
                return Said::Ended(c.map(|c| c.reason.to_string()).unwrap_or_default());
            }
            Ok(_) => continue,
            Err(e) => return Said::Ended(format!("the connection failed: {e}")),
        }
    }
    Said::Ended("the server closed the connection".into())
}

async fn client(c: Connect, launch: Launch, ca_pem: Option<Vec<u8>>) -> Result<i32, String> {
    // The local port first: a port in use fails before the nonce is spent.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", c.local_port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", c.local_port))?;
    let scheme = if c.insecure_http { "ws" } else { "wss" };
    let url = url::Url::parse(&format!(
        "{scheme}://{}:{}/Thingworx/TWS",
        launch.host, launch.port
    ))
    .map_err(|e| e.to_string())?;
    let ws = connect(
        &url,
        &[("sessionId", &launch.session), ("nonce", &launch.nonce)],
        None,
        ca_pem.as_deref(),
    )
    .await
    .map_err(|e| {
        format!("{e}\nThe nonce was refused: it is good once, for seconds, for its own session; start a new session (StartSession) for a new launch URI.")
    })?;
    let (mut sink, mut stream) = ws.split();
    let mut endpoint = match next_said(&mut stream).await {
        Said::Open(e) => e,
        Said::Refused(why) => return Err(format!("the tunnel was refused: {why}")),
        Said::Ended(why) | Said::Closed(why) => return Err(format!("the session ended: {why}")),
        Said::Other => unreachable!("skipped"),
    };
    println!(
        "tunnel open to {endpoint} on the device; listening on 127.0.0.1:{} (one connection at a time)",
        c.local_port
    );
    let mut open = true;
    loop {
        let local = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| format!("cannot accept a local connection: {e}"))?.0,
            _ = tokio::signal::ctrl_c() => {
                end_session(&mut sink, &launch.session).await;
                println!("interrupted: the session is ended");
                return Ok(0);
            }
            s = next_said(&mut stream) => match s {
                Said::Ended(why) => { println!("the session ended: {why}"); return Ok(0); }
                Said::Closed(why) => { println!("tunnel closed ({why})"); open = false; continue; }
                _ => continue,
            },
        };
        if !open {
            send_op(&mut sink, "OpenTunnel").await?;
            match next_said(&mut stream).await {
                Said::Open(e) => endpoint = e,
                Said::Refused(why) => return Err(format!("the tunnel was refused: {why}")),
                Said::Ended(why) | Said::Closed(why) => {
                    println!("the session ended: {why}");
                    return Ok(0);
                }
                Said::Other => unreachable!("skipped"),
            }
        }
        let _ = local.set_nodelay(true);
        let peer = local.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("relaying {peer} to {endpoint}");
        match relay(local, &mut sink, &mut stream).await? {
            Said::Ended(why) => {
                println!("the session ended: {why}");
                return Ok(0);
            }
            Said::Closed(why) => println!("tunnel closed ({why})"),
            _ => {}
        }
        open = false;
        if c.once {
            end_session(&mut sink, &launch.session).await;
            return Ok(0);
        }
    }
}

async fn send_op(sink: &mut Sink, op: &str) -> Result<(), String> {
    sink.send(WsMessage::Text(json!({"op": op}).to_string().into()))
        .await
        .map_err(|e| format!("the session's connection: {e}"))
}

async fn end_session(sink: &mut Sink, session: &str) {
    let _ = sink
        .send(WsMessage::Text(
            json!({"op": "EndSession", "sessionId": session})
                .to_string()
                .into(),
        ))
        .await;
    let _ = sink.close().await;
}

/// Relays one local connection over the open tunnel until the tunnel closes (its `Closed`) or
/// the session ends (`Ended`).
async fn relay(
    local: tokio::net::TcpStream,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<Said, String> {
    let (mut local_r, mut local_w) = local.into_split();
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match local_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(WsMessage::Binary(bytes::Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        // The local side is done: the tunnel closes once what was sent has gone.
        let _ = sink
            .send(WsMessage::Text(
                json!({"op": "CloseTunnel"}).to_string().into(),
            ))
            .await;
        std::future::pending::<()>().await
    };
    let down = async {
        while let Some(m) = stream.next().await {
            match m {
                Ok(WsMessage::Binary(b)) => {
                    if local_w.write_all(&b).await.is_err() {
                        // The local side stopped reading: the tunnel is closed from here.
                        return None;
                    }
                }
                Ok(WsMessage::Text(t)) => {
                    if let s @ (Said::Closed(_) | Said::Ended(_)) = said(&t) {
                        return Some(s);
                    }
                }
                Ok(WsMessage::Close(c)) => {
                    return Some(Said::Ended(
                        c.map(|c| c.reason.to_string()).unwrap_or_default(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Some(Said::Ended(format!("the connection failed: {e}"))),
            }
        }
        Some(Said::Ended("the server closed the connection".into()))
    };
    let outcome = tokio::select! {
        _ = up => None,
        s = down => s,
    };
    let _ = local_w.shutdown().await;
    match outcome {
        Some(s) => Ok(s),
        None => {
            send_op(sink, "CloseTunnel").await?;
            Ok(next_said(stream).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c7_a_launch_uri_names_host_port_session_and_nonce() {
        assert_eq!(
            parse_launch("thinghost-rac://example.com:9443/abc123?nonce=xyz").unwrap(),
            Launch {
                host: "example.com".into(),
                port: 9443,
                session: "abc123".into(),
                nonce: "xyz".into()
            }
        );
        for bad in [
            "https://example.com:9443/abc?nonce=x",
            "thinghost-rac://example.com/abc?nonce=x",
            "thinghost-rac://example.com:9443/?nonce=x",
            "thinghost-rac://example.com:9443/abc",
            "not a uri",
        ] {
            assert!(parse_launch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn c7_start_tunnel_parameters_are_read_as_the_sdks_send_them() {
        let row: serde_json::Map<String, Json> = serde_json::from_value(json!({
            "tid": "abc123", "type": "tcp",
            "connection": "{\"host\":\"127.0.0.1\",\"port\":22,\"num_connects\":1}"
        }))
        .unwrap();
        let a = TunnelAsked::from_row(&row).unwrap();
        assert_eq!(
            (a.tid.as_str(), a.host.as_str(), a.port),
            ("abc123", "127.0.0.1", 22)
        );
        let bad: serde_json::Map<String, Json> =
            serde_json::from_value(json!({"tid": "../x", "connection": "{}"})).unwrap();
        assert!(TunnelAsked::from_row(&bad).is_err());
    }
}
