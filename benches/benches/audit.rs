//! Row 6 of BENCHMARKS.md: the audit log.
//!
//! - **Entries per second under concurrent requests**: `THINGHOST_BENCH_WRITERS` (1, 8, 64)
//!   threads each record entries through the server's audit log (`AuditLog::record`: each call
//!   returns once its entry is on disk, as every request that audits does) for
//!   `THINGHOST_BENCH_SECONDS` (5) seconds. The anchor is what the log did before group commit,
//!   and what an audit table written by each request itself does: one transaction (one fsync)
//!   per entry, the writers taking turns on one connection.
//! - **QueryAuditHistory of one Thing over 1,000,000 entries**: the entries of 1,000 Things by 50
//!   users over 30 days; the service `Things/T/Services/QueryAuditHistory` for random Things
//!   (about 1,000 entries each, the newest 500 answered, as `maxItems` defaults) through the
//!   whole host path but the network (routing, the caller's checks, the query, the InfoTable),
//!   as an administrator; median and p99 over 1,000 calls; and the query plan.
//!
//! `cargo bench -p thinghost-benches --bench audit`.

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thinghost::state::app::App;
use thinghost::state::audit::AuditLog;
use thinghost_benches::dispatch::{call, caller};
use thinghost_benches::env;
use thinghost_store::audit::AuditQuery;
use thinghost_store::{AuditRecord, DB_FILE, SqliteStore, Store};

fn record(i: u64, things: u64, users: u64, span_ms: i64, start: i64) -> AuditRecord {
    AuditRecord {
        timestamp: start + (i as i64 * span_ms) / 1_000_000,
        user: format!("user{}", i % users),
        category: ["MODEL", "SECURITY", "SERVICE", "AUTHORIZATION"][(i % 4) as usize].into(),
        message_key: "permissionDenied".into(),
        args: json!({"permission": "ServiceInvoke", "target": format!("Things/T{}/Services/Run", i % things)}),
        source: format!("Things/T{}", i % things),
        source_type: "Thing".into(),
    }
}

/// A server's state on a new data directory, without extensions or network.
fn app(data: &std::path::Path) -> Arc<App> {
    thinghost::cli::init::initialize(data, 1).expect("a new data directory");
    let db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).expect("opens");
    let audit_log = AuditLog::open(&data.join(DB_FILE), Default::default()).expect("opens");
    Arc::new(App::standalone(db, audit_log, data))
}

/// Entries per second with `writers` threads for `secs`, each calling `write`.
fn rate(writers: u64, secs: u64, write: Arc<dyn Fn(u64) + Send + Sync>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, count, write) = (stop.clone(), count.clone(), write.clone());
            std::thread::spawn(move || {
                let mut i = w * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    write(i);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let secs = env("THINGHOST_BENCH_SECONDS", 5);
    let writer_counts: Vec<u64> = std::env::var("THINGHOST_BENCH_WRITERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);

    println!("## Row 6a: audit entries per second (each durable before its caller goes on)\n");
    println!(
        "| writers | thinghost, each entry durable before its caller goes on | thinghost, queued (denials, service calls) | one transaction per entry | durable / anchor |"
    );
    println!("|---|---|---|---|---|");
    for &writers in &writer_counts {
        let dir = tempfile::tempdir().unwrap();
        let state = app(dir.path());
        let log = state.clone();
        let ours = rate(
            writers,
            secs,
            Arc::new(move |i| {
                log.audit_log
                    .record(record(i, 1000, 50, 1, 0))
                    .expect("written")
            }),
        );
        let dir3 = tempfile::tempdir().unwrap();
        let state3 = app(dir3.path());
        let log = state3.clone();
        let started = Instant::now();
        let queued = rate(
            writers,
            secs,
            Arc::new(move |i| {
                log.audit_log
                    .record_queued(record(i, 1000, 50, 1, 0))
                    .expect("queued")
            }),
        );
        // Counted as written only once on disk: the rate over the time until the last is.
        let sent = queued * started.elapsed().as_secs_f64();
        state3.audit_log.flush().expect("flushed");
        let queued = sent / started.elapsed().as_secs_f64();
        let dir2 = tempfile::tempdir().unwrap();
        drop(app(dir2.path()));
        let single = Arc::new(Mutex::new(
            SqliteStore::open(&dir2.path().join(DB_FILE)).unwrap(),
        ));
        let anchor = rate(
            writers,
            secs,
            Arc::new(move |i| {
                single
                    .lock()
                    .unwrap()
                    .append_audit(&record(i, 1000, 50, 1, 0))
                    .expect("written")
            }),
        );
        println!(
            "| {writers} | {ours:.0} entries/s | {queued:.0} entries/s | {anchor:.0} entries/s | {:.1}x |",
            ours / anchor
        );
    }

    let total = env("THINGHOST_BENCH_AUDIT_ENTRIES", 1_000_000);
    let things = 1000;
    println!(
        "\n## Row 6b: QueryAuditHistory of one Thing over {total} entries ({things} Things, 50 users, 30 days)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = app(dir.path());
    let admin = caller(&state, thinghost_core::predefined::ADMINISTRATOR);
    // The Things exist, so that the service resolves them.
    for t in 0..things {
        call(
            &state,
            &admin,
            "/Thingworx/Resources/EntityServices/Services/CreateThing",
            json!({"name": format!("T{t}"), "thingTemplateName": "GenericThing"})
                .to_string()
                .as_bytes(),
        )
        .expect("created");
    }
    let filled = Instant::now();
    {
        let mut store = SqliteStore::open(&dir.path().join(DB_FILE)).unwrap();
        let start = thinghost::now_ms() - 30 * 24 * 3_600_000;
        let span = 30 * 24 * 3_600_000_i64;
        let batch = 50_000;
        let mut i = 0;
        while i < total {
            let n = batch.min(total - i);
            let records: Vec<AuditRecord> = (i..i + n)
                .map(|k| record(k, things, 50, span * 1_000_000 / total as i64, start))
                .collect();
            store.append_audit_batch(&records).unwrap();
            i += n;
        }
    }
    println!(
        "(filled in {:.1} s, hash chain included)\n",
        filled.elapsed().as_secs_f64()
    );
    let plan = state
        .audit_log
        .reader()
        .audit_query_plan(&AuditQuery {
            source: Some("Things/T7".into()),
            start: Some(0),
            limit: 500,
            ..AuditQuery::default()
        })
        .unwrap()
        .join("; ");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..1000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let t = rng % things;
        let started = Instant::now();
        let reply = call(
            &state,
            &admin,
            &format!("/Thingworx/Things/T{t}/Services/QueryAuditHistory"),
            b"{}",
        )
        .expect("answered");
        times.push(started.elapsed());
        if let Some(v) = reply.into_json() {
            rows += v["rows"].as_array().map(|r| r.len()).unwrap_or(0);
        }
    }
    times.sort();
    println!("| calls | rows per answer | median | p99 | query plan |");
    println!("|---|---|---|---|---|");
    println!(
        "| 1000 | {} | {:.2} ms | {:.2} ms | {plan} |",
        rows / 1000,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}
