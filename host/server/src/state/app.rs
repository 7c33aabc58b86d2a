//! Shared server state.

use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use thinghost_store::{AuditRecord, Db};

/// What every request handler shares.
pub struct App {
    /// The model and its store. Readers (checks) share; writers (changes) are exclusive, and
    /// commit to disk before they release the lock, so memory never runs ahead of the disk.
    pub db: RwLock<Db>,
    /// The audit log: its writer (other connections than the model's, so that auditing a flood
    /// of bad keys, say, never waits for or holds the model lock) and its query connection.
    pub audit_log: std::sync::Arc<crate::state::audit::AuditLog>,
    /// Failed sign-ins (and wrong old passwords), shared with the copies scripts run on.
    pub auth: std::sync::Arc<crate::state::auth::Limiter>,
    /// Files (exports, archives) are not written while the disk has less free, in bytes
    /// (`serve --min-free-disk-mib`; the store refuses changes below it too).
    pub min_free_disk: u64,
    /// The limits of the HTTP layer (timeouts, connections, headers, bodies).
    pub http: HttpLimits,
    /// Slots of the large bodies read at once (`http::Limits::large_bodies_at_once`).
    pub large_bodies: std::sync::Arc<tokio::sync::Semaphore>,
    /// Where passwords are hashed and checked (a few threads, a short queue).
    pub hash_pool: std::sync::Arc<crate::state::keys::HashPool>,
    /// The lifetime of a new application key when the request names none (K3).
    pub key_lifetime_ms: i64,
    /// The extensions loaded from the plugin directory: the current generation, swapped whole
    /// by a reload. A request loads it once and keeps what it found until it ends.
    pub extensions: arc_swap::ArcSwap<crate::runtime::extensions::Registry>,
    /// The plugin directory and how it loads, when there is one.
    pub plugins: Option<crate::runtime::extensions::Source>,
    /// Reloads run one at a time (each builds on the generation before it).
    pub reload_lock: Mutex<()>,
    /// Remote-access sessions and their nonce keys.
    pub sessions: crate::state::sessions::Sessions,
    /// Devices connected over AlwaysOn and the Things they have bound (shared with the copies
    /// scripts run on: a device's connection is the server's).
    pub edge: std::sync::Arc<crate::state::edge::Edge>,
    /// Remote-access tunnels open, and those waiting for their device's side (shared with the
    /// copies scripts run on).
    pub tunnels: std::sync::Arc<crate::state::tunnels::Tunnels<crate::state::tunnels::DeviceLink>>,
    /// The data directory (file repositories live under it).
    pub data_dir: std::path::PathBuf,
    /// How long audit entries stay online before `PurgeAuditData` removes them (U6).
    pub audit_retention_days: u32,
    /// How the server is deployed (production mode, transport): what the security lint cannot
    /// read from the model.
    pub deployment: thinghost_core::lint::Deployment,
    /// Fired events on their way to subscriptions (shared with the copies scripts run on, which
    /// hold their firings back until their changes land).
    pub events: std::sync::Arc<crate::state::events::EventQueue>,
    /// The model's structure version, readable without its lock (`Db::structure_handle`): a
    /// delivery compares its plan's with it.
    pub structure: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What delivering events needs of the model, planned per structure version (this
    /// server's own: a script's copy keeps its own).
    pub plans: Mutex<crate::state::events::Plans>,
    /// Code in the model, compiled (shared with the copies scripts run on).
    pub code: std::sync::Arc<crate::state::code::CodeCache>,
    /// The limits of an admin script (`RunScript`).
    pub script_limits: crate::state::scripts::Limits,
    /// The scripts running now, per user (see `script::Limits::max_running`, `max_per_user`).
    pub scripts_running: crate::state::scripts::Running,
    /// The data of data-storage Things (H1): value streams, streams, data tables (shared with
    /// the copies scripts run on, which hold their values back until their changes land).
    pub history: std::sync::Arc<crate::state::history::HistoryLog>,
    /// Set on the private copy of the server a script runs on (see [`App::for_script`]): the
    /// audit records of its changes wait here, to land with them or not at all.
    pub script: Option<ScriptScope>,
}

/// What a script's copy of the server holds back until the script's changes land.
#[derive(Default)]
pub struct ScriptScope {
    pub audit: Mutex<Vec<AuditRecord>>,
    /// The events its changes fired, sent when they land.
    pub fired: Mutex<Vec<crate::state::events::Firing>>,
    /// The values its writes of logged properties appended (H2), appended when they land.
    pub logged: Mutex<Vec<thinghost_store::history::Logged>>,
}

impl App {
    /// A server's state with the defaults of `serve` and no plugin directory (benchmarks and
    /// tools that drive the API in-process).
    pub fn standalone(
        db: Db,
        audit_log: crate::state::audit::AuditLog,
        data_dir: &std::path::Path,
    ) -> App {
        App {
            structure: db.structure_handle(),
            db: RwLock::new(db),
            audit_log: std::sync::Arc::new(audit_log),
            auth: std::sync::Arc::new(crate::state::auth::Limiter::new(Default::default())),
            hash_pool: Default::default(),
            min_free_disk: 0,
            http: Default::default(),
            large_bodies: std::sync::Arc::new(tokio::sync::Semaphore::new(
                HttpLimits::default().large_bodies_at_once,
            )),
            key_lifetime_ms: 24 * 3_600_000,
            extensions: arc_swap::ArcSwap::from_pointee(Default::default()),
            plugins: None,
            reload_lock: Mutex::new(()),
            sessions: crate::state::sessions::Sessions::new(std::time::Duration::from_secs(15)),
            edge: Default::default(),
            tunnels: Default::default(),
            data_dir: data_dir.to_path_buf(),
            audit_retention_days: 60,
            deployment: Default::default(),
            events: Default::default(),
            history: std::sync::Arc::new(
                crate::state::history::HistoryLog::open(
                    data_dir,
                    thinghost_core::predefined::DEFAULT_PERSISTENCE_PROVIDER,
                    crate::state::history::MAX_ITEMS,
                )
                .expect("the persistence provider's file opens in the data directory"),
            ),
            plans: Default::default(),
            code: Default::default(),
            script_limits: Default::default(),
            scripts_running: Default::default(),
            script: None,
        }
    }

    /// A private copy of the server for one script: the model is `db` (a fork, see
    /// [`thinghost_store::Db::fork`]); the audit log, the data directory and the loaded
    /// extensions are the server's; remote-access sessions start empty and end with the
    /// script; there is no plugin directory (a script cannot reload extensions).
    pub fn for_script(&self, db: Db) -> App {
        let sessions = crate::state::sessions::Sessions::with_limits(
            self.sessions.nonce_lifetime,
            self.sessions.limits,
        );
        if let Some(public) = self.sessions.public.get() {
            let _ = sessions.public.set(public.clone());
        }
        App {
            structure: db.structure_handle(),
            db: RwLock::new(db),
            audit_log: self.audit_log.clone(),
            auth: self.auth.clone(),
            hash_pool: self.hash_pool.clone(),
            min_free_disk: self.min_free_disk,
            http: self.http,
            large_bodies: self.large_bodies.clone(),
            key_lifetime_ms: self.key_lifetime_ms,
            extensions: arc_swap::ArcSwap::new(self.extensions.load_full()),
            plugins: None,
            reload_lock: Mutex::new(()),
            sessions,
            edge: self.edge.clone(),
            tunnels: self.tunnels.clone(),
            data_dir: self.data_dir.clone(),
            audit_retention_days: self.audit_retention_days,
            deployment: self.deployment,
            events: self.events.clone(),
            history: self.history.clone(),
            plans: Default::default(),
            code: self.code.clone(),
            script_limits: self.script_limits,
            scripts_running: Default::default(),
            script: Some(ScriptScope::default()),
        }
    }
}

impl App {
    /// Appends an audit record, on disk when this returns; a failure to audit is logged (and the
    /// request still fails closed).
    pub fn audit(
        &self,
        user: &str,
        category: &str,
        key: &str,
        args: serde_json::Value,
        source: &str,
        source_type: &str,
    ) {
        let record = crate::state::audit::record(user, category, key, args, source, source_type);
        // Denials and service calls are the high-volume entries: queued, on disk within
        // milliseconds and in order; every other entry is on disk before this returns.
        let queued = category == crate::state::audit::category::AUTHORIZATION
            || category == crate::state::audit::category::SERVICE;
        self.write_audit(record, queued);
    }

    /// Appends an audit record to the queue (on disk within milliseconds, in order): for
    /// frequent entries that no response waits for, such as successful sign-ins.
    pub fn audit_queued(
        &self,
        user: &str,
        category: &str,
        key: &str,
        args: serde_json::Value,
        source: &str,
        source_type: &str,
    ) {
        let record = crate::state::audit::record(user, category, key, args, source, source_type);
        self.write_audit(record, true);
    }

    /// Writes a record: queued (on disk within milliseconds) or durable (on disk when this
    /// returns).
    pub(crate) fn write_audit(&self, record: AuditRecord, queued: bool) {
        // In a script, the records of changes (MODEL, SECURITY: warnings about a grant, say)
        // wait for them, to land with them or not at all; everything else (denials, reads of
        // the audit log, service calls, sessions, extension failures) happened whatever becomes
        // of the script, and is written now.
        if let Some(scope) = &self.script
            && (record.category == crate::state::audit::category::MODEL
                || record.category == crate::state::audit::category::SECURITY)
        {
            if self.audit_log.enabled(&record.category) {
                scope
                    .audit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(record);
            }
            return;
        }
        let written = if queued {
            self.audit_log.record_queued(record)
        } else {
            self.audit_log.record(record)
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write an audit record");
        }
    }
}

/// What the connection knows about the client.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: IpAddr,
    /// The user named by a verified client certificate (mutual TLS).
    pub client_cert_user: Option<String>,
    /// The connection's places under `--max-connections` and `--max-connections-per-address`:
    /// held while any holder lives. A WebSocket keeps a clone for as long as it is open, so an
    /// upgraded connection counts against the limits as any other does.
    pub slot: Option<std::sync::Arc<Slot>>,
}

/// A connection's places under the server's connection limits, given back when dropped.
pub struct Slot(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// The user a request ran as, for the request log.
#[derive(Clone, Debug)]
pub struct LoggedUser(pub String);

/// Why a request failed, for the request log (its first 300 characters).
#[derive(Clone, Debug)]
pub struct LoggedError(pub String);

/// The limits of the HTTP layer (`serve --header-timeout-seconds`,
/// `--max-connections`, `--max-header-kib`, `--max-body-kib`, `--max-script-body-mib`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// A connection that is answering no request must bring a whole request head within this
    /// time (after it opened, or after its last answer was written): slow headers, and idle
    /// keep-alive and HTTP/2 connections, end. A request being answered is never cut off (its
    /// own deadlines bound it), nor an answer the client is still reading.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed as soon as they are accepted. Kept below the
    /// process's file-descriptor limit, so the server never runs out of descriptors.
    pub max_connections: usize,
    /// Connections of one address (an IPv6 /64) served at once: one client cannot take every
    /// slot. (Behind a reverse proxy every connection is the proxy's: raise it to match.)
    pub max_connections_per_address: usize,
    /// The most bytes of request headers (a longer request answers 431 before anything is
    /// read from it, let alone stored).
    pub max_header_bytes: usize,
    /// The largest body of a request (services, property writes).
    pub max_body: usize,
    /// The largest body of an admin script (`RunScript`).
    pub max_script_body: usize,
    /// Bodies above `http::LARGE_BODY` read at once; more wait (at most `http::BODY_WAIT`, then 503).
    pub large_bodies_at_once: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 512,
            max_header_bytes: 64 * 1024,
            max_body: 1024 * 1024,
            max_script_body: 2 * 1024 * 1024,
            large_bodies_at_once: 4,
        }
    }
}
