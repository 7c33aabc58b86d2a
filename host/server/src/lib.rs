//! # thinghost
//!
//! The `thinghost` command and server, a thin binary (`main.rs`) over six folders that import
//! each other in one direction only (`tests/layers.rs` checks it):
//!
//! - [`cli`]: the commands; `serve` builds the state and starts the adapters and jobs.
//! - [`http`]: the REST adapter, `/Thingworx/TWS`, authentication from headers, TLS.
//! - [`jobs`]: the scheduler and the watch of the plugin directory.
//! - [`api`]: the service table, the typed API every adapter calls, the one authorization
//!   module, the host calls of extension code, reloads.
//! - [`state`]: what the server holds: the model, the audit log, callers, keys, sessions.
//! - [`runtime`]: the extensions loaded from the plugin directory.
//!
//! This crate is the only one that touches the file system layout of a data directory, the clock
//! and the random number generator.

pub mod api;
pub mod cli;
pub mod http;
pub mod jobs;
pub mod runtime;
pub mod state;

/// The host version, as extensions' `host` requirements see it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Shifts the server's clock (audit timestamps, schedules, key expiry): `serve
/// --dev-clock-offset-days`, for development and tests only (archive, purge and cleanup with a
/// clock you control).
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

pub fn set_clock_offset_ms(offset: i64) {
    CLOCK_OFFSET_MS.store(offset, std::sync::atomic::Ordering::Relaxed);
}
