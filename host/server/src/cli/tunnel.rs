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
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// The most bytes read from a local socket into one message (the server takes 64 KiB by
/// default: `serve --tunnel-max-message-kib`).
pub const CHUNK: usize = 64 * 1024;

/// Opens a WebSocket to `url` (`ws://` or `wss://`) with `headers` (and `protocol` asked, if
/// any): the socket and the subprotocol the server chose. A refusal of the server is the
/// error, with its status and message.
pub async fn connect(
    url: &url::Url,
    headers: &[(&str, &str)],
    protocol: Option<&str>,
    ca_pem: Option<&[u8]>,
) -> Result<(WebSocketStream<Box<dyn Io>>, Option<String>), String> {
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
    // Above the largest message a server relays (`serve --tunnel-max-message-kib`, 4 MiB at
    // most, a third more in base64).
    let config = WebSocketConfig::default()
        .max_message_size(Some(8 << 20))
        .max_frame_size(Some(8 << 20));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((ws, chosen))
        }
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
    /// The most bytes to send in one message (`chunksize`).
    pub chunk: usize,
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
        let chunk = row
            .get("chunksize")
            .and_then(Json::as_u64)
            .map_or(CHUNK, |c| (c as usize).clamp(256, CHUNK));
        Ok(TunnelAsked {
            tid,
            host,
            port,
            chunk,
        })
    }
}

/// Connects to the endpoint a `StartTunnel` names (at most 10 s).
pub async fn dial(asked: &TunnelAsked) -> Result<tokio::net::TcpStream, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((asked.host.as_str(), asked.port)),
    )
    .await
    {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("cannot reach {}:{}: {e}", asked.host, asked.port)),
        Err(_) => Err(format!(
            "cannot reach {}:{}: timed out",
            asked.host, asked.port
        )),
    }
}

/// Base64 as the vendor's SDKs write it, padded or not.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Runs one tunnel on the device's side: connects to the server with the device's key and
/// relays between it and the `endpoint`, already connected, until either side closes. In
/// `base64` mode the bytes travel as the vendor's SDKs send them (base64 text frames); else as
/// binary frames, and the client's half-close reaches the endpoint. What it did, for the
/// device's log.
pub async fn agent(
    server: &str,
    key: &str,
    ca_pem: Option<&[u8]>,
    asked: TunnelAsked,
    endpoint: tokio::net::TcpStream,
    base64: bool,
) -> Result<String, String> {
    let url = ws_address(
        server,
        &format!("{}{}", crate::api::tunnels::DEVICE_PATH, asked.tid),
    )?;
    let protocol = (!base64).then_some(crate::api::tunnels::BINARY_PROTOCOL);
    let (ws, chosen) = connect(&url, &[("appKey", key)], protocol, ca_pem).await?;
    let binary = chosen.as_deref() == Some(crate::api::tunnels::BINARY_PROTOCOL);
    let (mut tcp_r, mut tcp_w) = endpoint.into_split();
    let (mut sink, mut stream) = ws.split();
    let (mut up, mut down) = (0u64, 0u64);
    let chunk = asked.chunk;
    let to_server = async {
        let mut buf = vec![0u8; chunk];
        loop {
            match tcp_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = if binary {
                        WsMessage::Binary(bytes::Bytes::copy_from_slice(&buf[..n]))
                    } else {
                        use base64::Engine;
                        WsMessage::Text(BASE64.encode(&buf[..n]).into())
                    };
                    if sink.send(m).await.is_err() {
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
            let data = match m {
                Ok(WsMessage::Binary(b)) if binary => b,
                // The client sends no more: so does the endpoint's writer, and its answer
                // still comes back.
                Ok(WsMessage::Text(t)) if binary => {
                    if t.as_str().contains("shutdown") {
                        let _ = tcp_w.shutdown().await;
                    }
                    continue;
                }
                Ok(WsMessage::Text(t)) => {
                    use base64::Engine;
                    let text: String = t.as_str().split_whitespace().collect();
                    match BASE64.decode(text) {
                        Ok(b) => bytes::Bytes::from(b),
                        Err(_) => return "the server sent a text frame that is not base64".into(),
                    }
                }
                Ok(WsMessage::Close(c)) => {
                    return c
                        .map(|c| format!("the server closed the tunnel: {}", c.reason))
                        .unwrap_or_else(|| "the server closed the tunnel".into());
                }
                Ok(_) => continue,
                Err(e) => return format!("the server's connection: {e}"),
            };
            if tcp_w.write_all(&data).await.is_err() {
                return "the endpoint stopped reading".to_string();
            }
            down += data.len() as u64;
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
    /// The tunnel is open: its endpoint, and the largest message the server takes.
    Open(String, usize),
    Refused(String),
    Closed(String),
    Ended(String),
    /// The endpoint's bytes (they may come before a local connection does: a server that
    /// speaks first, as SSH's and VNC's do).
    Data(bytes::Bytes),
    Other,
}

fn said(text: &str) -> Said {
    let Ok(v) = serde_json::from_str::<Json>(text) else {
        return Said::Other;
    };
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    match (v["event"].as_str(), v["state"].as_str()) {
        (Some("tunnel"), Some("open")) => Said::Open(
            v["endpoint"].as_str().unwrap_or_default().to_string(),
            v["maxMessage"]
                .as_u64()
                .map_or(CHUNK, |m| (m as usize).clamp(256, CHUNK)),
        ),
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

/// The next thing the server said that matters.
async fn next_said(stream: &mut Stream) -> Said {
    while let Some(m) = stream.next().await {
        match m {
            Ok(WsMessage::Binary(b)) => return Said::Data(b),
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

/// The endpoint's bytes kept for the next local connection, at most this many (then the
/// server is not read: it holds the device back).
const EARLY_BYTES: usize = 1 << 20;

/// Waits for the tunnel to open, keeping what the endpoint says first.
async fn opened(
    stream: &mut Stream,
    early: &mut Vec<bytes::Bytes>,
) -> Result<(String, usize), Said> {
    loop {
        match next_said(stream).await {
            Said::Open(e, max) => return Ok((e, max)),
            Said::Data(b) => early.push(b),
            other => return Err(other),
        }
    }
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
    let (ws, _) = connect(
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
    let mut early: Vec<bytes::Bytes> = Vec::new();
    let (mut endpoint, mut chunk) = match opened(&mut stream, &mut early).await {
        Ok(o) => o,
        Err(s) => return Err(refusal(&mut sink, &launch, s).await),
    };
    println!(
        "tunnel open to {endpoint} on the device; listening on 127.0.0.1:{} (one connection at a time; any local user can connect to it)",
        c.local_port
    );
    let mut open = true;
    loop {
        let room = early.iter().map(bytes::Bytes::len).sum::<usize>() < EARLY_BYTES;
        let local = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| format!("cannot accept a local connection: {e}"))?.0,
            _ = tokio::signal::ctrl_c() => {
                end_session(&mut sink, &launch.session).await;
                println!("interrupted: the session is ended");
                return Ok(0);
            }
            s = next_said(&mut stream), if room => match s {
                Said::Ended(why) => { println!("the session ended: {why}"); return Ok(0); }
                Said::Closed(why) => {
                    // What that tunnel's endpoint said is not the next one's.
                    early.clear();
                    println!("tunnel closed ({why})");
                    open = false;
                    continue;
                }
                Said::Data(b) => { early.push(b); continue; }
                _ => continue,
            },
        };
        if !open {
            send_op(&mut sink, "OpenTunnel").await?;
            match opened(&mut stream, &mut early).await {
                Ok((e, max)) => (endpoint, chunk) = (e, max),
                Err(s) => return Err(refusal(&mut sink, &launch, s).await),
            }
        }
        let _ = local.set_nodelay(true);
        let peer = local.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("relaying {peer} to {endpoint}");
        let outcome = relay(
            local,
            std::mem::take(&mut early),
            chunk,
            &mut sink,
            &mut stream,
        )
        .await?;
        let stop = interrupted(&outcome);
        match outcome {
            Said::Ended(why) => {
                println!("the session ended: {why}");
                return Ok(0);
            }
            Said::Closed(why) => println!("tunnel closed ({why})"),
            _ => {}
        }
        open = false;
        if c.once || stop {
            end_session(&mut sink, &launch.session).await;
            return Ok(0);
        }
    }
}

fn interrupted(s: &Said) -> bool {
    matches!(s, Said::Refused(r) if r == INTERRUPTED)
}

const INTERRUPTED: &str = "interrupted";

/// What a client that could not tunnel says, once it ended its session.
async fn refusal(sink: &mut Sink, launch: &Launch, s: Said) -> String {
    let why = match s {
        Said::Refused(why) => format!("the tunnel was refused: {why}"),
        Said::Ended(why) | Said::Closed(why) => return format!("the session ended: {why}"),
        _ => "the server said something unexpected".to_string(),
    };
    end_session(sink, &launch.session).await;
    why
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

/// Relays one local connection over the open tunnel (first the endpoint's `early` bytes) until
/// the tunnel closes (`Closed`), the session ends (`Ended`) or the user interrupts. The local
/// side's end of input is a half-close: the endpoint's answer still comes back.
async fn relay(
    local: tokio::net::TcpStream,
    early: Vec<bytes::Bytes>,
    chunk: usize,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<Said, String> {
    let (mut local_r, mut local_w) = local.into_split();
    for b in early {
        if local_w.write_all(&b).await.is_err() {
            break;
        }
    }
    let up = async {
        let mut buf = vec![0u8; chunk];
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
        // The local side sends no more: the tunnel hears it after every byte sent.
        let _ = sink
            .send(WsMessage::Text(
                json!({"op": "CloseTunnel"}).to_string().into(),
            ))
            .await;
        std::future::pending::<()>().await
    };
    let down = async {
        loop {
            match next_said(stream).await {
                // The local side stopped reading: the tunnel is closed from here.
                Said::Data(b) => match local_w.write_all(&b).await {
                    Ok(()) => {}
                    Err(_) => return None,
                },
                s @ (Said::Closed(_) | Said::Ended(_)) => return Some(s),
                _ => {}
            }
        }
    };
    let outcome = tokio::select! {
        _ = up => None,
        s = down => s,
        _ = tokio::signal::ctrl_c() => Some(Said::Refused(INTERRUPTED.into())),
    };
    let _ = local_w.shutdown().await;
    match outcome {
        Some(s) => Ok(s),
        None => {
            send_op(sink, "CloseTunnel").await?;
            // What still comes is dropped until the tunnel's end.
            loop {
                match next_said(stream).await {
                    s @ (Said::Closed(_) | Said::Ended(_)) => return Ok(s),
                    _ => continue,
                }
            }
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
