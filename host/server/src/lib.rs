//! # thinghost
//!
//! The `thinghost` command and server: the REST API (`rest`, `services`), authentication
//! (`auth`, `keys`, `tls`), the extension host (`extensions`, with hot reload in `reload` and the
//! plugin directory watch in `watch`), and the administration commands (`cli`). This crate is the only one that touches the
//! file system layout of a data directory, the clock and the random number generator.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod http;
pub mod keys;
pub mod repository;
pub mod runtime;
pub mod scheduler;
pub mod sessions;

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
