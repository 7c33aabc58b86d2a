//! `thinghost serve`.

use super::{DataDir, Failure};
use crate::state::app::App;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use thinghost_core::{Kind, Policy, View};
use thinghost_store::{DB_FILE, Db};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Transport (DOMAIN K7): TLS by default. Give --tls-cert and --tls-key, or --dev for a \
generated self-signed development certificate (kept in DIR/dev-cert.pem), or --insecure-http for plain HTTP \
(development only). --production refuses --dev, --insecure-http, self-signed certificates and certificates \
signed with MD5 or SHA-1.\n\nThe data directory is initialized on first start exactly as `thinghost init` does."
)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// The plugin directory: one folder per extension, each with its plugin.toml.
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Load native extensions (runtime = "native"): shared libraries that run as trusted code
    /// inside the server, with all of its rights. Off by default.
    #[arg(long)]
    allow_native: bool,
    /// Address and port to listen on (port 0 picks a free port, printed on start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// PEM certificate chain for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with_all = ["dev", "insecure_http"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS with a generated self-signed certificate, for development.
    #[arg(long, conflicts_with = "insecure_http")]
    dev: bool,
    /// Plain HTTP, for development only (a warning is printed on every start).
    #[arg(long)]
    insecure_http: bool,
    /// Production mode: refuse plain HTTP, development and self-signed certificates, MD5 and SHA-1.
    #[arg(long)]
    production: bool,
    /// Request client certificates signed by this CA (mutual TLS); a verified certificate whose
    /// subject common name (CN) is a user's name authenticates as that user.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Lifetime of a new application key when CreateApplicationKey names no expirationDate.
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..=8760))]
    key_lifetime_hours: i64,
    /// Failed sign-ins (per user or address) after which each further attempt is slowed.
    #[arg(long, value_name = "N", default_value_t = 3)]
    signin_slow_after: u32,
    /// Failed sign-ins (per user or address) after which sign-ins are refused for a while.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    signin_lockout_after: u32,
    /// Failed sign-ins from one address, whatever the user names, after which sign-ins from it
    /// are refused for a while.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    signin_address_lockout_after: u32,
    /// How long a locked-out user or address is refused, in minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    signin_lockout_minutes: u64,
    /// Do not watch the plugin directory (changes then need ReloadExtension or a restart).
    #[arg(long)]
    no_watch: bool,
    /// How long an extension folder must be quiet after a change before it is reloaded.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    reload_quiet_ms: u64,
    /// Where remote-access clients reach this server, as `https://HOST:PORT` (the host and port
    /// of StartSession's launch URI). Default: the address the server listens on.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// How long a device connecting to /Thingworx/WS has to send its AUTH (C1).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    edge_auth_timeout_seconds: u64,
    /// The largest AlwaysOn frame, and the chunk size of what the server sends (C6).
    #[arg(long, value_name = "BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(256..=65535))]
    edge_chunk_size: u64,
    /// How long an AlwaysOn connection may send nothing, not even a ping, before it is closed
    /// and its Things marked disconnected (C3).
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    edge_idle_seconds: u64,
    /// The largest AlwaysOn message, reassembled from chunks (C6).
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    edge_max_message_kib: u64,
    /// How long a read, write or service call forwarded to a device waits for its answer when
    /// the binding names no timeout (C5; then 504).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    edge_device_timeout_seconds: u64,
    /// Requests queued for or waiting on one device at once; past it, 503 (C5).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    edge_max_in_flight: u64,
    /// How long a remote-access tunnel may carry no byte either way before it is closed (C7).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    tunnel_idle_seconds: u64,
    /// The most remote-access tunnels open at once over the server (C7).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10000))]
    max_tunnels: u64,
    /// The largest message a tunnel relays, in KiB: with four queued each way, about what one
    /// tunnel holds in memory per direction (C7).
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    tunnel_max_message_kib: u64,
    /// The persistence provider that new DataTables, Streams and ValueStreams use, and that
    /// `GetDefaultDataPersistenceProviderName` answers (H1): a PersistenceProvider of the model.
    #[arg(long, value_name = "NAME", default_value = thinghost_core::predefined::DEFAULT_PERSISTENCE_PROVIDER)]
    default_persistence_provider: String,
    /// The most rows one query of history, a stream or a data table answers: a larger
    /// `maxItems` is refused (400).
    #[arg(long, value_name = "N", default_value_t = crate::state::history::MAX_ITEMS as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_items: u64,
    /// How often the retention of streams and value streams (`SetRetention`) is applied, and
    /// what deleted streams, tables and value streams left is removed (H5).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    retention_interval_seconds: u64,
    /// How long a remote-access nonce key is good for (it is good for one use).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    nonce_lifetime_seconds: u64,
    /// How many days audit entries stay online; PurgeAuditData (and its scheduler) removes
    /// older ones.
    #[arg(long, value_name = "DAYS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=36500))]
    audit_retention_days: u32,
    /// How long an admin script (RunScript, `thinghost script run`) may run before it is
    /// stopped (and everything it did is undone).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    script_timeout_seconds: u64,
    /// How much memory an admin script may hold at once, in MiB: its values and what it adds
    /// to the model before its changes land.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=65536))]
    script_memory_mib: u64,
    /// Development and tests only: run the server's clock this many days ahead (or behind),
    /// to see the audit schedulers, retention and key expiry at work. Refused with --production.
    #[arg(long, value_name = "DAYS", default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-36500..=36500))]
    dev_clock_offset_days: i64,
    /// Scripts that may run at once on the server.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_scripts: u64,
    /// Scripts one user may run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_scripts_per_user: u64,
    /// Threads that deliver events to subscriptions (B6): each delivers the firings of its share
    /// of the Things, in firing order per Thing.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    event_workers: u64,
    /// Firings each event worker's queue holds before firers wait (back-pressure, B8).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    event_queue: u64,
    /// Remote-access sessions one user may hold at once.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_sessions_per_user: u64,
    /// A remote-access session unused for this long (no connection, no message) ends; the
    /// default is 30 minutes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    session_idle_seconds: u64,
    /// A remote-access session ends at this age, however busy.
    #[arg(long, value_name = "HOURS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=720))]
    session_max_hours: u64,
    /// A connection answering no request must bring a whole request's headers within this time
    /// (after it opened or after its last answer): slow headers and idle connections end.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    header_timeout_seconds: u64,
    /// Connections served at once (kept below the process's file-descriptor limit); one more is
    /// closed as soon as it is accepted.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    max_connections: u64,
    /// Connections of one address (an IPv6 /64) served at once; behind a reverse proxy, raise it
    /// to the proxy's connections.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_address: u64,
    /// The most bytes of a request's headers, in KiB (a longer request answers 431).
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1024))]
    max_header_kib: u64,
    /// The largest request body, in KiB (services and property writes; a larger one answers 413).
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_body_kib: u64,
    /// The largest body of RunScript, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_script_body_mib: u64,
    /// Request bodies over 64 KiB read and handled at once; more wait up to 5 s, then 503.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_large_bodies: u64,
    /// Changes are refused (507) while the data directory's disk has less free than this, in
    /// MiB, rather than failing mid-write (0: never).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    min_free_disk_mib: u64,
    /// Do not record this audit category (repeatable; AUTHENTICATION, AUTHORIZATION and AUDIT
    /// are always recorded). The server warns, and records which are off, at every start.
    #[arg(long = "audit-off", value_name = "CATEGORY")]
    audit_off: Vec<String>,
    /// Log format: text, or json for log shippers. Filter with RUST_LOG (default: info).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    init_logging(&args.log_format);
    let dir = args.data.path.clone();
    if args.production && args.insecure_http {
        return Err(Failure("--production refuses --insecure-http: plain HTTP exposes keys and data; serve TLS with --tls-cert and --tls-key".into()));
    }
    if args.production && args.dev_clock_offset_days != 0 {
        return Err(Failure(
            "--production refuses --dev-clock-offset-days: a production server keeps real time"
                .into(),
        ));
    }
    if args.dev_clock_offset_days != 0 {
        tracing::warn!(
            days = args.dev_clock_offset_days,
            "the server's clock is shifted (--dev-clock-offset-days): for development and tests only"
        );
        crate::set_clock_offset_ms(args.dev_clock_offset_days * 24 * 3_600_000);
    }
    if args.production && args.dev {
        return Err(Failure("--production refuses --dev: its certificate is self-signed; use --tls-cert and --tls-key with a certificate from a trusted certificate authority".into()));
    }
    if args.client_ca.is_some() && args.insecure_http {
        return Err(Failure(
            "--client-ca needs TLS; drop --insecure-http".into(),
        ));
    }
    if !dir.join(DB_FILE).exists() {
        let report = super::init::initialize(&dir, super::init::DEFAULT_ADMIN_KEY_DAYS)?;
        println!("{}", report.info);
        tracing::warn!("{}", report.warning);
    }
    // What the lint reports of the transport: a self-signed chain counts as such whether it
    // was generated (--dev) or given.
    let mut self_signed = false;
    let tls = if args.insecure_http {
        None
    } else {
        let (cert, key) = match (&args.tls_cert, &args.tls_key, args.dev) {
            (Some(c), Some(k), _) => (c.clone(), k.clone()),
            (_, _, true) => {
                let (c, k, generated) = crate::http::tls::dev_certificate(&dir)?;
                if generated {
                    println!(
                        "generated a self-signed development certificate: {} (trust it in your client for development only)",
                        c.display()
                    );
                } else {
                    println!("using the development certificate {}", c.display());
                }
                (c, k)
            }
            _ => {
                return Err(Failure(
                    "TLS is the default: give --tls-cert FILE and --tls-key FILE, or --dev for a generated development certificate, or --insecure-http for plain HTTP (development only)".into(),
                ));
            }
        };
        let chain = crate::http::tls::read_chain(&cert)?;
        let info = crate::http::tls::inspect(&chain)?;
        self_signed = info.self_signed;
        if args.production {
            crate::http::tls::production_check(&info, &cert)?;
        }
        let config = crate::http::tls::server_config(
            chain,
            crate::http::tls::read_key(&key)?,
            args.client_ca.as_deref(),
        )?;
        Some(tokio_rustls::TlsAcceptor::from(config))
    };
    let public = args.public_url.as_deref().map(public_address).transpose()?;
    let audit_off = crate::state::audit::parse_disabled(&args.audit_off)?;
    let _lock = thinghost_store::DirLock::acquire(&dir)?;
    let mut db = Db::open(&dir, Policy::default())?;
    db.set_min_free(args.min_free_disk_mib << 20);
    let max_connections = connection_limit(args.max_connections as usize);
    let mut source = None;
    let extensions = match &args.plugins {
        Some(plugins) => {
            // Absolute from here on: the watcher and the reloads compare folders by path.
            let plugins = &plugins.canonicalize().map_err(|e| {
                format!(
                    "cannot read the plugin directory {}: {e}; create it, or leave out --plugins",
                    plugins.display()
                )
            })?;
            let options = thinghost_extensions::code::LoadOptions {
                wasm_cache: Some(thinghost_extensions::wasm_runtime::WasmCache::in_data_dir(
                    &dir,
                )?),
                allow_native: args.allow_native,
            };
            if args.allow_native {
                tracing::warn!(
                    "native extensions are allowed: they run as trusted code inside the server"
                );
            }
            let s = crate::runtime::extensions::Source {
                dir: plugins.clone(),
                options,
                accepted: crate::runtime::accepted::Accepted::new(&dir),
            };
            // What the server accepted when it last ran; the plugin directory is applied to it
            // once the server's state exists (below).
            let registry = crate::api::reload::load_accepted(&mut db, &s)?;
            source = Some(s);
            registry
        }
        None => crate::runtime::extensions::Registry::default(),
    };
    // Entities a newer thinghost predefines (the AuditHistory DataShape, ...) join an older model.
    let missing = thinghost_core::predefined::missing(db.model());
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|e| e.name.clone()).collect();
        db.change(|tx| {
            for e in missing {
                tx.create(e)?;
            }
            Ok(())
        })
        .map_err(|e| format!("cannot add the predefined entities {names:?}: {e}"))?;
        tracing::info!(entities = ?names, "predefined entities added to the model");
    }
    // FileRepository folders of an older thinghost move to their identity, before anything is
    // served.
    for name in crate::state::repository::migrate(&dir, db.model())? {
        tracing::info!(repository = %name, "the repository's folder moved to its identity");
    }
    // Files an older thinghost (or a umask) left readable by others are the server's own again.
    tighten(&dir);
    // The check unknown users cost (an argon2 hash) is made now, not on a request.
    let _ = crate::state::keys::unmatchable_hash();
    let audit_log = crate::state::audit::AuditLog::open(&dir.join(DB_FILE), audit_off)?;
    if db
        .model()
        .get(
            Kind::PersistenceProvider,
            &args.default_persistence_provider,
        )
        .is_none()
    {
        return Err(format!(
            "--default-persistence-provider {}: there is no such PersistenceProvider; the model has {}",
            args.default_persistence_provider,
            db.model()
                .entities(Kind::PersistenceProvider)
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into());
    }
    // The embedded provider's own file, beside the model's (H1).
    let history = crate::state::history::HistoryLog::open(
        &dir,
        &args.default_persistence_provider,
        args.max_items as usize,
    )?;
    let http_limits = crate::http::Limits {
        header_read_timeout: std::time::Duration::from_secs(args.header_timeout_seconds),
        max_connections,
        max_connections_per_address: args.max_connections_per_address as usize,
        max_header_bytes: (args.max_header_kib << 10) as usize,
        max_body: (args.max_body_kib << 10) as usize,
        max_script_body: (args.max_script_body_mib << 20) as usize,
        large_bodies_at_once: args.max_large_bodies as usize,
    };
    let app = Arc::new(App {
        structure: db.structure_handle(),
        db: RwLock::new(db),
        audit_log: Arc::new(audit_log),
        key_lifetime_ms: args.key_lifetime_hours * 3_600_000,
        extensions: arc_swap::ArcSwap::from_pointee(extensions),
        plugins: source,
        reload_lock: Mutex::new(()),
        edge: Arc::new(crate::state::edge::Edge::new(
            crate::state::edge::EdgeLimits {
                auth_timeout: std::time::Duration::from_secs(args.edge_auth_timeout_seconds),
                chunk_size: args.edge_chunk_size as usize,
                max_message: args.edge_max_message_kib as usize * 1024,
                idle: std::time::Duration::from_secs(args.edge_idle_seconds),
                device_timeout: std::time::Duration::from_secs(args.edge_device_timeout_seconds),
                max_in_flight: args.edge_max_in_flight as usize,
                ..Default::default()
            },
        )),
        tunnels: Arc::new(crate::state::tunnels::Tunnels::new(
            crate::state::tunnels::TunnelLimits {
                idle: std::time::Duration::from_secs(args.tunnel_idle_seconds),
                max_open: args.max_tunnels as usize,
                max_message: args.tunnel_max_message_kib as usize * 1024,
                ..Default::default()
            },
        )),
        sessions: crate::state::sessions::Sessions::with_limits(
            std::time::Duration::from_secs(args.nonce_lifetime_seconds),
            crate::state::sessions::SessionLimits {
                per_user: args.max_sessions_per_user as usize,
                idle: std::time::Duration::from_secs(args.session_idle_seconds),
                max_age: std::time::Duration::from_secs(args.session_max_hours * 3600),
            },
        ),
        auth: Arc::new(crate::state::auth::Limiter::new(
            crate::state::auth::LimiterConfig {
                slow_after: args.signin_slow_after,
                lock_after: args.signin_lockout_after,
                address_lock_after: args.signin_address_lockout_after,
                lockout: std::time::Duration::from_secs(args.signin_lockout_minutes * 60),
            },
        )),
        hash_pool: Default::default(),
        min_free_disk: args.min_free_disk_mib << 20,
        http: http_limits,
        large_bodies: Arc::new(tokio::sync::Semaphore::new(
            http_limits.large_bodies_at_once,
        )),
        data_dir: dir.clone(),
        audit_retention_days: args.audit_retention_days,
        deployment: thinghost_core::lint::Deployment {
            production: args.production,
            transport: if args.insecure_http {
                thinghost_core::lint::Transport::PlainHttp
            } else if self_signed {
                thinghost_core::lint::Transport::SelfSigned
            } else {
                thinghost_core::lint::Transport::Tls
            },
        },
        history: Arc::new(history),
        events: std::sync::Arc::new(crate::state::events::EventQueue::new(
            args.event_workers as usize,
            args.event_queue as usize,
        )),
        plans: Default::default(),
        code: Default::default(),
        script_limits: crate::state::scripts::Limits {
            timeout: std::time::Duration::from_secs(args.script_timeout_seconds),
            max_memory: args.script_memory_mib << 20,
            max_running: args.max_scripts as usize,
            max_per_user: args.max_scripts_per_user as usize,
            ..crate::state::scripts::Limits::default()
        },
        scripts_running: Default::default(),
        script: None,
    });
    if !thinghost_extensions::meter::installed() {
        // (The `thinghost` binary installs it; a program embedding the library may not.)
        tracing::warn!(
            "the memory meter is not this process's allocator: Rhai extensions and admin scripts are held only to their value sizes, not to their memory caps; install thinghost_extensions::meter::Meter as the #[global_allocator]"
        );
    }
    if !app.audit_log.disabled().is_empty() {
        let off: Vec<&String> = app.audit_log.disabled().iter().collect();
        tracing::warn!(categories = ?off, "audit categories are turned off (--audit-off): their events are not recorded");
        app.audit(
            thinghost_core::predefined::SYSTEM,
            crate::state::audit::category::AUDIT,
            "auditCategoriesDisabled",
            serde_json::json!({"categories": off}),
            "Subsystems/AuditSubsystem",
            "Subsystem",
        );
    }
    if app.plugins.is_some() {
        crate::api::reload::apply_plugin_dir(&app)?;
        for p in app.extensions.load().summary() {
            match p["state"].as_str() {
                Some("loaded") => {
                    tracing::info!(extension = %p["name"].as_str().unwrap_or(""), version = %p["version"].as_str().unwrap_or(""), reload_error = %p["reloadError"].as_str().unwrap_or(""), "extension loaded")
                }
                _ => {
                    tracing::warn!(extension = %p["name"].as_str().unwrap_or(""), reason = %p["reason"].as_str().unwrap_or(""), "extension refused")
                }
            }
        }
    }
    // Kept until the server stops: dropping it ends the watch.
    let _watch = match (&app.plugins, args.no_watch) {
        (Some(source), false) => match crate::jobs::watch::spawn(
            app.clone(),
            source.dir.clone(),
            std::time::Duration::from_millis(args.reload_quiet_ms),
        ) {
            Ok(w) => {
                tracing::info!(dir = %source.dir.display(), "watching the plugin directory");
                Some(w)
            }
            // The server still serves: changes then need ReloadExtension or a restart.
            Err(e) => {
                tracing::warn!(
                    "{e}; extension changes need ReloadExtension or a restart (on Linux, raise fs.inotify.max_user_instances or max_user_watches)"
                );
                None
            }
        },
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    crate::http::start_call_lane()
        .map_err(|e| Failure(format!("cannot start the call lane's threads: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {}: {e}; pick another address with --listen", args.listen)))?;
        let local = listener.local_addr()?;
        let _ = app.sessions.public.set(public.unwrap_or_else(|| crate::state::sessions::PublicAddress {
            host: local.ip().to_string(),
            port: local.port(),
        }));
        let scheme = if tls.is_some() { "https" } else { "http" };
        if tls.is_none() {
            tracing::warn!("serving plain HTTP: keys and data cross the network unencrypted; use TLS outside development");
        }
        println!("thinghost {} listening on {scheme}://{local}", crate::VERSION);
        tracing::info!(address = %local, scheme, "listening");
        crate::jobs::scheduler::spawn(app.clone());
        crate::jobs::retention::spawn(
            app.clone(),
            std::time::Duration::from_secs(args.retention_interval_seconds),
        );
        crate::api::events::start(&app);
        let state = app.clone();
        crate::http::serve(listener, crate::http::router(app), tls, http_limits, shutdown_signal()).await;
        // Calls in progress end before the process does (their writes and audit entries land).
        let _ = tokio::task::spawn_blocking(crate::http::finish_calls).await;
        // Failed sign-ins counted but not yet summarized are recorded, and queued audit entries
        // (denials, service calls) reach the disk, before the process ends.
        crate::state::auth::write_summaries(&state, true);
        if let Err(e) = state.audit_log.flush() {
            tracing::error!(error = %e, "audit entries may be lost");
        }
        tracing::info!("stopped");
        Ok::<(), Failure>(())
    })?;
    Ok(0)
}

/// Makes the data directory's secrets 0600 (and the directory 0700), whatever mode an older
/// version or a copy left them with.
fn tighten(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let private = |p: &std::path::Path, mode: u32| {
        if let Ok(md) = std::fs::symlink_metadata(p)
            && !md.file_type().is_symlink()
            && md.permissions().mode() & 0o077 != 0
        {
            match std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => {
                    tracing::warn!(file = %p.display(), "was readable by others; made private")
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "is readable by others and cannot be made private")
                }
            }
        }
    };
    private(dir, 0o700);
    for f in [
        "admin.appkey",
        "thinghost.db",
        "thinghost.db-wal",
        "thinghost.db-shm",
        "cache.key",
        "dev-key.pem",
    ] {
        private(&dir.join(f), 0o600);
    }
}

/// Descriptors kept for what is not a client connection (the database, the plugin directory's
/// watch, extensions, logs).
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the process's file-descriptor limit to what it may be, and returns how many
/// connections to serve at once: `wanted`, or fewer if the limit would not hold them all (the
/// server must never run out of descriptors, or it could not even answer `/health`).
fn connection_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(fds) = limit.current else {
        return wanted;
    };
    let room = fds.saturating_sub(RESERVED_DESCRIPTORS).max(8) as usize;
    if wanted > room {
        tracing::warn!(
            max_connections = wanted,
            descriptors = fds,
            serving = room,
            "--max-connections is above what the file-descriptor limit (ulimit -n) allows; serving fewer at once"
        );
        return room;
    }
    wanted
}

/// `--public-url`: `https://HOST[:PORT]` (the scheme's port when none is given).
fn public_address(text: &str) -> Result<crate::state::sessions::PublicAddress, Failure> {
    let bad = || {
        Failure(format!(
            "--public-url {text:?}: give it as https://HOST:PORT, the address remote-access clients use to reach this server"
        ))
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    match (url.host_str(), url.port_or_known_default(), url.path()) {
        (Some(host), Some(port), "" | "/") => Ok(crate::state::sessions::PublicAddress {
            host: host.to_string(),
            port,
        }),
        _ => Err(bad()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Beside the log, each extension's recent lines (`plugin logs`, GetExtensionLog).
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::state::logs::Layer);
    let _ = if format == "json" {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}
