//! `thinghost edge simulate`: devices that speak AlwaysOn (DOMAIN section 10) with the server's
//! own codec. Each device signs in with its application key, binds its Things, asks which
//! properties to push (`GetPropertySubscriptions`), pushes its values (now, and `--every`), and
//! answers the platform's reads, writes and service calls (C5). It is the README's device and
//! the test suite's and benchmarks' client ([`Device`], [`run_device`]).

use super::Failure;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thinghost_alwayson::message::{Gateway, Request};
use thinghost_alwayson::{
    Body, Code, Field, Frame, Header, Message, Reassembler, Table, Value, codes,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (a server started with `thinghost serve --dev`):\n  thinghost edge simulate --url https://localhost:8443 \
--ca-cert DATA/dev-cert.pem --app-key-file pump1.key --thing Pump1 --property temperature=21.5 --every 5s\n\n\
Each line it prints says what happened: connected, bound, the properties the platform wants pushed, each push \
and its answer, each request of the platform it answered. With --devices N, the patterns %n in --thing and \
--app-key-file number the devices from 1: N connections, one key each."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Connect simulated devices to a running server and push values until stopped.
    Simulate(Simulate),
}

#[derive(clap::Args, Debug, Clone)]
pub struct Simulate {
    /// The server's address, e.g. https://localhost:8443 (http:// for a server run with
    /// --insecure-http).
    #[arg(long, value_name = "URL", env = "THINGHOST_URL")]
    pub url: String,
    /// A file holding the device's application key (%n: the device's number).
    #[arg(long, value_name = "FILE", env = "THINGHOST_APP_KEY_FILE")]
    pub app_key_file: String,
    /// A PEM certificate to trust besides the public roots (the server's `--dev` certificate
    /// is DATA/dev-cert.pem).
    #[arg(long, value_name = "PEM", env = "THINGHOST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A Remote Thing the device binds (%n: the device's number); give it more than once for
    /// a gateway of several Things.
    #[arg(long = "thing", value_name = "NAME", required = true)]
    pub things: Vec<String>,
    /// A property and its value (JSON, or text): pushed at start and at every --every, read and
    /// written by the platform.
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, Json)>,
    /// Push the values again this often (e.g. 500ms, 5s, 1m); numbers move by --step each time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// How much each number changes at each push.
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub step: f64,
    /// How many devices to run, each with its own connection and key.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Stop after this long (default: until interrupted or disconnected).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// Wait this long before answering each request of the platform (to see its 504).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub answer_delay_ms: u64,
    /// Bind as a gateway of this name.
    #[arg(long, value_name = "NAME")]
    pub gateway: Option<String>,
    /// Load: keep this many pushes waiting for their answer on each device, pushing again as
    /// each is answered (for measuring; the final line gives the values per second).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub in_flight: u32,
    /// Open the remote-access tunnels the platform asks for (StartTunnel): connect to the
    /// endpoint on this machine and relay it to the platform, as the vendor's tunnel manager
    /// does. Without it, the device refuses them.
    #[arg(long)]
    pub tunnels: bool,
    /// Send the tunnels' bytes base64-encoded in text frames, as the vendor's SDKs do, instead
    /// of binary frames (the client's half-close then closes the tunnel).
    #[arg(long, requires = "tunnels")]
    pub tunnels_base64: bool,
    /// Print nothing but failures and the final figures.
    #[arg(long)]
    pub quiet: bool,
}

/// `NAME=VALUE`: the value as JSON when it is JSON, else as text.
fn parse_property(s: &str) -> Result<(String, Json), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no property name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.into()));
    Ok((name.to_string(), value))
}

/// `250ms`, `5s`, `2m`, `1h`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 500ms, 5s, 2m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: the unit is ms, s, m or h")),
    };
    if !seconds.is_finite() || !(0.001..=1e9).contains(&seconds) {
        return Err(format!("{s:?} is not a duration from 1ms on"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What the simulated devices did, shared by all of them.
#[derive(Debug, Default)]
pub struct Figures {
    pub connected: AtomicU64,
    /// Pushes sent, and answered SUCCESS or refused.
    pub pushes: AtomicU64,
    pub pushed_ok: AtomicU64,
    pub pushed_refused: AtomicU64,
    /// Values in the pushes answered SUCCESS.
    pub values_ok: AtomicU64,
    /// Requests of the platform answered.
    pub answered: AtomicU64,
    /// How many devices run; when the last of them connected (milliseconds after the start, 0
    /// until then) and how many values had been accepted by then: the rate of the final line
    /// counts from there.
    pub devices: AtomicU64,
    pub all_connected_ms: AtomicU64,
    pub values_before: AtomicU64,
}

/// One device's set-up.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub url: String,
    pub key: String,
    /// Extra trusted certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    pub things: Vec<String>,
    pub properties: Vec<(String, Json)>,
    pub every: Option<Duration>,
    pub step: f64,
    pub answer_delay: Duration,
    pub gateway: Option<String>,
    /// Print what happens.
    pub verbose: bool,
    /// A label for its lines (`device 3`).
    pub label: String,
    /// Pushes kept waiting for their answer (0: push at start and at `every` only).
    pub in_flight: u32,
    /// Open the tunnels the platform asks for.
    pub tunnels: bool,
    /// ... their bytes in base64 text frames, as the vendor's SDKs.
    pub tunnels_base64: bool,
}

const CHUNK: usize = 8192;
const MAX_MESSAGE: usize = 1 << 20;
/// How often an idle device says it is alive (the SDKs: 55 s; the server gives up after 120).
const KEEP_ALIVE: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> Result<i32, Failure> {
    let Action::Simulate(s) = args.action;
    let ca_pem =
        match &s.ca_cert {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                Failure(format!("cannot read the certificate {}: {e}", p.display()))
            })?),
            None => None,
        };
    let mut specs = Vec::with_capacity(s.devices as usize);
    for n in 1..=s.devices {
        let number = |p: &str| p.replace("%n", &n.to_string());
        let file = number(&s.app_key_file);
        let key = std::fs::read_to_string(&file)
            .map_err(|e| Failure(format!("cannot read the application key file {file}: {e}")))?
            .trim()
            .to_string();
        specs.push(DeviceSpec {
            url: s.url.clone(),
            key,
            ca_pem: ca_pem.clone(),
            things: s.things.iter().map(|t| number(t)).collect(),
            properties: s.properties.clone(),
            every: s.every,
            step: s.step,
            answer_delay: Duration::from_millis(s.answer_delay_ms),
            gateway: s.gateway.clone(),
            in_flight: s.in_flight,
            tunnels: s.tunnels,
            tunnels_base64: s.tunnels_base64,
            verbose: !s.quiet,
            label: if s.devices == 1 {
                "device".into()
            } else {
                format!("device {n}")
            },
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}")))?;
    let figures = Arc::new(Figures::default());
    figures
        .devices
        .store(u64::from(s.devices), Ordering::Relaxed);
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for spec in specs {
            let figures = figures.clone();
            tasks.spawn(async move {
                let label = spec.label.clone();
                (label, run_device(spec, figures, started).await)
            });
        }
        let all = async {
            let mut failed = 0;
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok((label, Err(e))) => {
                        eprintln!("{label}: {e}");
                        failed += 1;
                    }
                    Ok((_, Ok(()))) => {}
                    Err(e) => {
                        eprintln!("a device's task failed: {e}");
                        failed += 1;
                    }
                }
            }
            failed
        };
        tokio::select! {
            failed = all => failed,
            _ = async { match s.run_for { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => 0,
            _ = tokio::signal::ctrl_c() => 0,
        }
    });
    let f = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // The rate counts from when the last device connected (from the start if some never did).
    let from_ms = f(&figures.all_connected_ms);
    let secs = started.elapsed().as_secs_f64() - from_ms as f64 / 1000.0;
    let values = f(&figures.values_ok)
        - if from_ms > 0 {
            f(&figures.values_before)
        } else {
            0
        };
    println!(
        "{} devices connected; {} pushes ({} accepted, {} refused), {} values accepted ({:.0} values/s); {} requests of the platform answered",
        f(&figures.connected),
        f(&figures.pushes),
        f(&figures.pushed_ok),
        f(&figures.pushed_refused),
        f(&figures.values_ok),
        values as f64 / secs.max(1e-3),
        f(&figures.answered),
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(if outcome > 0 { 1 } else { 0 })
}

/// Runs one device until its connection ends: an error says why it ended badly.
pub async fn run_device(
    spec: DeviceSpec,
    figures: Arc<Figures>,
    started: Instant,
) -> Result<(), String> {
    let url = super::tunnel::ws_address(&spec.url, "/Thingworx/WS")?;
    let (ws, _) = super::tunnel::connect(&url, &[], None, spec.ca_pem.as_deref()).await?;
    drive(ws, spec, figures, started).await
}

pub(crate) fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the certificate file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the certificate file: {e}"))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    spec: DeviceSpec,
    figures: Arc<Figures>,
    started: Instant,
) -> Result<(), String> {
    let mut d = Device {
        ws,
        session: thinghost_alwayson::message::NO_SESSION,
        last_id: 0,
        joiner: Reassembler::new(MAX_MESSAGE, 8, 10_000),
        started: Instant::now(),
        values: spec
            .things
            .iter()
            .map(|t| (t.clone(), spec.properties.iter().cloned().collect()))
            .collect(),
        subscribed: HashMap::new(),
        waiting: HashMap::new(),
        spec,
        figures,
        run_started: started,
    };
    d.session_start().await?;
    d.serve().await
}

/// What a request of this device is waiting for.
enum Asked {
    Push { values: u64 },
    Subscriptions { thing: String },
}

/// A connected device.
pub struct Device<S> {
    ws: WebSocketStream<S>,
    session: u32,
    last_id: u32,
    joiner: Reassembler,
    started: Instant,
    /// Each Thing's properties and their values.
    values: BTreeMap<String, BTreeMap<String, Json>>,
    /// Each Thing's bound properties, by device-side name, as GetPropertySubscriptions said.
    subscribed: HashMap<String, Vec<String>>,
    waiting: HashMap<u32, Asked>,
    spec: DeviceSpec,
    figures: Arc<Figures>,
    /// When the whole run started.
    run_started: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    fn say(&self, what: impl std::fmt::Display) {
        if self.spec.verbose {
            println!("{}: {what}", self.spec.label);
        }
    }

    fn next_id(&mut self) -> u32 {
        self.last_id = self.last_id.wrapping_add(1).max(1);
        self.last_id
    }

    async fn send(&mut self, m: &Message) -> Result<(), String> {
        let frames =
            thinghost_alwayson::frames(m, CHUNK, MAX_MESSAGE).map_err(|e| e.to_string())?;
        for f in frames {
            self.ws
                .send(WsMessage::Binary(f.into()))
                .await
                .map_err(|e| format!("the connection: {e}"))?;
        }
        Ok(())
    }

    /// The next whole message (`None`: the connection ended).
    async fn next(&mut self) -> Result<Option<Message>, String> {
        loop {
            let Some(frame) = self.ws.next().await else {
                return Ok(None);
            };
            let bytes = match frame.map_err(|e| format!("the connection: {e}"))? {
                WsMessage::Binary(b) => b,
                WsMessage::Close(c) => {
                    return Err(format!(
                        "the server closed the connection{}",
                        c.map(|c| format!(": {}", c.reason)).unwrap_or_default()
                    ));
                }
                _ => continue,
            };
            let now = self.started.elapsed().as_millis() as u64;
            match thinghost_alwayson::decode(&bytes).map_err(|e| e.to_string())? {
                Frame::Whole(m) => return Ok(Some(m)),
                Frame::Chunk(c) => {
                    if let Some(m) = self.joiner.add(c, now).map_err(|e| e.to_string())? {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    /// Waits for the answer to request `id` (other messages in between are not expected while
    /// the session starts).
    async fn answer_to(&mut self, id: u32) -> Result<(Code, Option<String>), String> {
        loop {
            let m = self
                .next()
                .await?
                .ok_or("the server closed the connection")?;
            if m.header.request_id == id
                && let Body::Response(r) = m.body
            {
                if m.header.code == Code::SUCCESS
                    && self.session == thinghost_alwayson::message::NO_SESSION
                {
                    self.session = m.header.session_id;
                }
                return Ok((m.header.code, r.reason));
            }
        }
    }

    /// AUTH, then BIND of its Things.
    async fn session_start(&mut self) -> Result<(), String> {
        let id = self.next_id();
        self.send(&Message::auth(id, &self.spec.key)).await?;
        let (code, reason) = self.answer_to(id).await?;
        if code != Code::SUCCESS {
            return Err(format!(
                "AUTH refused: {code}{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        let connected = self.figures.connected.fetch_add(1, Ordering::Relaxed) + 1;
        if connected == self.figures.devices.load(Ordering::Relaxed) {
            self.figures.values_before.store(
                self.figures.values_ok.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            self.figures.all_connected_ms.store(
                (self.run_started.elapsed().as_millis() as u64).max(1),
                Ordering::Relaxed,
            );
        }
        self.say(format_args!("connected (session {:08x})", self.session));
        let id = self.next_id();
        let bind = Message {
            header: self.header(Code::BIND, id),
            body: Body::Bind {
                gateway: self.spec.gateway.clone().map(|name| Gateway {
                    name,
                    kind: "thinghost-simulator".into(),
                }),
                names: self.spec.things.clone(),
            },
        };
        self.send(&bind).await?;
        let (code, reason) = self.answer_to(id).await?;
        if code != Code::SUCCESS {
            return Err(format!(
                "BIND of {} refused: {code}{}",
                self.spec.things.join(", "),
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        self.say(format_args!("bound {}", self.spec.things.join(", ")));
        for thing in self.spec.things.clone() {
            self.ask_subscriptions(&thing).await?;
            self.push(&thing, None).await?;
        }
        Ok(())
    }

    fn header(&self, code: Code, request_id: u32) -> Header {
        Header {
            code,
            request_id,
            endpoint_id: 0,
            session_id: self.session,
        }
    }

    fn request(&mut self, code: Code, r: Request) -> (u32, Message) {
        let id = self.next_id();
        (
            id,
            Message {
                header: self.header(code, id),
                body: Body::Request(r),
            },
        )
    }

    async fn ask_subscriptions(&mut self, thing: &str) -> Result<(), String> {
        let (id, m) = self.request(
            Code::POST,
            service_request(thing, "GetPropertySubscriptions", None),
        );
        self.waiting.insert(
            id,
            Asked::Subscriptions {
                thing: thing.to_string(),
            },
        );
        self.send(&m).await
    }

    /// Pushes the Thing's values (`only`: just this property) with `UpdateSubscribedPropertyValues`.
    async fn push(&mut self, thing: &str, only: Option<&str>) -> Result<(), String> {
        let now = crate::now_ms();
        let Some(values) = self.values.get(thing) else {
            return Ok(());
        };
        let rows: Vec<Vec<Value>> = values
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(name, v)| {
                vec![
                    Value::string(name.clone()),
                    Value::Variant(Box::new(wire(v))),
                    Value::Datetime(now),
                    Value::string("GOOD"),
                ]
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let count = rows.len() as u64;
        let vtq = Table {
            fields: vec![
                Field::new("name", codes::STRING),
                Field::new("value", codes::VARIANT),
                Field::new("time", codes::DATETIME),
                Field::new("quality", codes::STRING),
            ],
            rows,
        };
        let mut params = Table::single("values", Value::InfoTable(Box::new(vtq)));
        params.fields[0].base_type = codes::INFOTABLE;
        let (id, m) = self.request(
            Code::POST,
            service_request(thing, "UpdateSubscribedPropertyValues", Some(params)),
        );
        self.waiting.insert(id, Asked::Push { values: count });
        self.figures.pushes.fetch_add(1, Ordering::Relaxed);
        self.send(&m).await
    }

    /// Serves the connection: pushes at every `every`, keep-alives, the platform's requests and
    /// the answers to its own.
    async fn serve(&mut self) -> Result<(), String> {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        let every = self.spec.every.unwrap_or(Duration::from_secs(365 * 86400));
        let mut pushes = tokio::time::interval(every);
        pushes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pushes.tick().await;
        for i in 0..self.spec.in_flight as usize {
            let thing = self.spec.things[i % self.spec.things.len()].clone();
            self.push(&thing, None).await?;
        }
        let mut next_thing = 0usize;
        loop {
            tokio::select! {
                m = self.next() => {
                    let Some(m) = m? else {
                        self.say("the server closed the connection");
                        return Ok(());
                    };
                    let answered_push = matches!(m.body, Body::Response(_))
                        && matches!(self.waiting.get(&m.header.request_id), Some(Asked::Push { .. }));
                    self.received(m).await?;
                    if answered_push && self.spec.in_flight > 0 {
                        next_thing = (next_thing + 1) % self.spec.things.len();
                        let thing = self.spec.things[next_thing].clone();
                        self.push(&thing, None).await?;
                    }
                }
                _ = pushes.tick(), if self.spec.every.is_some() => {
                    let step = self.spec.step;
                    if step != 0.0 {
                        for values in self.values.values_mut() {
                            for v in values.values_mut() {
                                if let Some(n) = v.as_f64() {
                                    *v = json!(n + step);
                                }
                            }
                        }
                    }
                    for thing in self.spec.things.clone() {
                        self.push(&thing, None).await?;
                    }
                }
                _ = keep_alive.tick() => {
                    let id = self.next_id();
                    let m = Message { header: self.header(Code::KEEP_ALIVE, id), body: Body::KeepAlive };
                    self.send(&m).await?;
                }
            }
        }
    }

    async fn received(&mut self, m: Message) -> Result<(), String> {
        let header = m.header;
        match m.body {
            Body::Response(r) => {
                let reason = r.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                match self.waiting.remove(&header.request_id) {
                    Some(Asked::Push { values }) if header.code == Code::SUCCESS => {
                        self.figures.pushed_ok.fetch_add(1, Ordering::Relaxed);
                        self.figures.values_ok.fetch_add(values, Ordering::Relaxed);
                        self.say(format_args!("pushed {values} values: accepted"));
                    }
                    Some(Asked::Push { values }) => {
                        self.figures.pushed_refused.fetch_add(1, Ordering::Relaxed);
                        self.say(format_args!(
                            "pushed {values} values: refused, {}{reason}",
                            header.code
                        ));
                    }
                    Some(Asked::Subscriptions { thing }) if header.code == Code::SUCCESS => {
                        let names: Vec<String> = r
                            .content
                            .as_ref()
                            .and_then(|t| t.field("edgeName").map(|c| (t, c)))
                            .map(|(t, c)| {
                                t.rows
                                    .iter()
                                    .filter_map(|row| match row.get(c).map(Value::unwrapped) {
                                        Some(Value::Text(_, s)) => Some(s.clone()),
                                        _ => None,
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        self.say(format_args!(
                            "{thing}: the platform binds {}",
                            if names.is_empty() {
                                "no property".to_string()
                            } else {
                                names.join(", ")
                            }
                        ));
                        self.subscribed.insert(thing, names);
                    }
                    Some(Asked::Subscriptions { thing }) => {
                        self.say(format_args!(
                            "{thing}: GetPropertySubscriptions refused, {}{reason}",
                            header.code
                        ));
                    }
                    None => {}
                }
                Ok(())
            }
            Body::Request(r)
                if header.code == Code::POST
                    && r.characteristic == codes::SERVICES
                    && r.name == crate::api::tunnels::START_TUNNEL =>
            {
                let (code, reason) = self.start_tunnel(&r).await;
                self.say(format_args!(
                    "answered StartTunnel {}: {code}{}",
                    r.entity_name,
                    reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
                self.figures.answered.fetch_add(1, Ordering::Relaxed);
                self.send(&Message::answer(&header, code, reason, None))
                    .await
            }
            Body::Request(r) => {
                if !self.spec.answer_delay.is_zero() {
                    tokio::time::sleep(self.spec.answer_delay).await;
                }
                let (code, reason, content, pushed) = self.answer(header.code, &r);
                self.say(format_args!(
                    "answered {} {}/{}: {code}",
                    header.code, r.entity_name, r.name
                ));
                self.figures.answered.fetch_add(1, Ordering::Relaxed);
                self.send(&Message::answer(&header, code, reason, content))
                    .await?;
                if let Some((thing, prop)) = pushed {
                    self.push(&thing, Some(&prop)).await?;
                }
                if r.name == "NotifyPropertyUpdate" {
                    self.ask_subscriptions(&r.entity_name).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `StartTunnel` (C7): with `--tunnels`, the device connects to the endpoint (as the
    /// vendor's tunnel manager does) and answers SUCCESS once it has, or why it could not; the
    /// tunnel's agent then runs beside the connection. Without `--tunnels`, a refusal.
    async fn start_tunnel(&self, r: &Request) -> (Code, Option<String>) {
        if !self.spec.tunnels {
            return (
                Code::FORBIDDEN,
                Some("this device opens no tunnels (simulate it with --tunnels)".into()),
            );
        }
        if !self.values.contains_key(&r.entity_name) {
            return (
                Code::NOT_FOUND,
                Some(format!("this device has no Thing {}", r.entity_name)),
            );
        }
        let asked = match super::tunnel::TunnelAsked::from_row(&first_row(r.params.as_ref())) {
            Ok(a) => a,
            Err(e) => return (Code::BAD_REQUEST, Some(e)),
        };
        let endpoint = match super::tunnel::dial(&asked).await {
            Ok(s) => s,
            Err(e) => return (Code::SERVICE_UNAVAILABLE, Some(e)),
        };
        let (url, key, ca, label, verbose, base64) = (
            self.spec.url.clone(),
            self.spec.key.clone(),
            self.spec.ca_pem.clone(),
            self.spec.label.clone(),
            self.spec.verbose,
            self.spec.tunnels_base64,
        );
        tokio::spawn(async move {
            match super::tunnel::agent(&url, &key, ca.as_deref(), asked, endpoint, base64).await {
                Ok(done) if verbose => println!("{label}: {done}"),
                Ok(_) => {}
                Err(e) => eprintln!("{label}: tunnel: {e}"),
            }
        });
        (Code::SUCCESS, None)
    }

    /// The answer to a request of the platform: its code, reason, content, and the property to
    /// push after a write.
    #[allow(clippy::type_complexity)]
    fn answer(
        &mut self,
        code: Code,
        r: &Request,
    ) -> (
        Code,
        Option<String>,
        Option<Table>,
        Option<(String, String)>,
    ) {
        let Some(values) = self.values.get_mut(&r.entity_name) else {
            return (
                Code::NOT_FOUND,
                Some(format!("this device has no Thing {}", r.entity_name)),
                None,
                None,
            );
        };
        match (code, r.characteristic) {
            (Code::GET, codes::PROPERTIES) => match values.get(&r.name) {
                Some(v) => (
                    Code::SUCCESS,
                    None,
                    Some(Table::single(r.name.clone(), wire(v))),
                    None,
                ),
                None => (
                    Code::NOT_FOUND,
                    Some(format!("no property {}", r.name)),
                    None,
                    None,
                ),
            },
            (Code::PUT, codes::PROPERTIES) => {
                let row = first_row(r.params.as_ref());
                let value = row.get(&r.name).cloned().or_else(|| {
                    (row.len() == 1)
                        .then(|| row.values().next().cloned())
                        .flatten()
                });
                match value {
                    Some(v) => {
                        values.insert(r.name.clone(), v);
                        (
                            Code::SUCCESS,
                            None,
                            None,
                            Some((r.entity_name.clone(), r.name.clone())),
                        )
                    }
                    None => (
                        Code::BAD_REQUEST,
                        Some(format!("the write names no value of {}", r.name)),
                        None,
                        None,
                    ),
                }
            }
            (Code::POST, codes::SERVICES) if r.name == "NotifyPropertyUpdate" => {
                (Code::SUCCESS, None, None, None)
            }
            (Code::POST, codes::SERVICES) => {
                // Every service of the simulator says what it was asked: a JSON result.
                let result = json!({"service": r.name, "parameters": first_row(r.params.as_ref())});
                let mut t = Table::single("result", Value::Text(codes::JSON, result.to_string()));
                t.fields[0].base_type = codes::JSON;
                (Code::SUCCESS, None, Some(t), None)
            }
            _ => (
                Code::NOT_IMPLEMENTED,
                Some("the simulator answers GET and PUT of properties and POST of services".into()),
                None,
                None,
            ),
        }
    }
}

fn service_request(thing: &str, service: &str, params: Option<Table>) -> Request {
    Request {
        entity_type: codes::THING,
        entity_name: thing.to_string(),
        characteristic: codes::SERVICES,
        name: service.to_string(),
        headers: Vec::new(),
        params,
    }
}

/// A JSON value on the wire: a number as NUMBER, a boolean as BOOLEAN, text as STRING, an
/// object or array as JSON.
fn wire(v: &Json) -> Value {
    match v {
        Json::Null => Value::Nothing,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::string(s.clone()),
        other => Value::Text(codes::JSON, other.to_string()),
    }
}

fn first_row(t: Option<&Table>) -> Map<String, Json> {
    crate::api::edge::convert::first_row(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_properties_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_property("t=21.5"), Ok(("t".into(), json!(21.5))));
        assert_eq!(
            parse_property("mode=auto"),
            Ok(("mode".into(), json!("auto")))
        );
        assert!(parse_property("novalue").is_err());
        assert_eq!(
            crate::cli::tunnel::ws_address("https://localhost:8443", "/Thingworx/WS")
                .unwrap()
                .as_str(),
            "wss://localhost:8443/Thingworx/WS"
        );
        assert!(crate::cli::tunnel::ws_address("ftp://x", "/Thingworx/WS").is_err());
    }
}
