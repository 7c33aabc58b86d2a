//! Row 8 of BENCHMARKS.md: property writes and the DataChange subscriptions they fire.
//!
//! 1,000 Things of one template; 0, 1 or 10 subscriptions on the template to `DataChange` of the
//! written property (each reads the new value: the cost is the delivery, not the code), written
//! in Rhai in the model (`AddSubscription`) or declared by a WebAssembly extension with a handler
//! (`benches/dispatch/add-rust`'s `on_change`, in an instance put back after each delivery);
//! `THINGHOST_BENCH_WRITERS`-style 1, 8 and 64 writer threads each write the property of Things in
//! turn (every write changes the value, so each fires) through the whole host path but the
//! network (`api::entities::write_property`: checks, validation, the durable write, the firing)
//! for `THINGHOST_BENCH_SECONDS` (4) seconds. Then the queue is drained; the delivery latency is
//! from firing to the start of its delivery (`GetPerformanceMetrics`' power-of-two buckets).
//!
//! `cargo bench -p thinghost-benches --bench events`.

use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thinghost::state::app::App;
use thinghost::state::audit::AuditLog;
use thinghost_benches::dispatch::caller;
use thinghost_benches::env;
use thinghost_core::Kind;
use thinghost_store::DB_FILE;

const THINGS: usize = 1_000;

fn invoke(app: &Arc<App>, kind: Kind, entity: &str, service: &str, params: Json) {
    let admin = caller(app, thinghost_core::predefined::ADMINISTRATOR);
    let Json::Object(params) = params else {
        panic!("parameters are an object")
    };
    thinghost::api::invoke(app, &admin, kind, entity, service, params.into())
        .unwrap_or_else(|e| panic!("{service}: {}", e.message));
}

/// What implements the subscriptions.
#[derive(Clone, Copy, PartialEq)]
enum Handler {
    /// Rhai code in the model.
    Rhai,
    /// A WebAssembly extension's handler (the component at this path).
    Wasm(&'static std::path::Path),
}

/// The plugin directory of the Wasm variant: one extension with the template `Pump` and
/// `subscriptions` subscriptions handled by `on_change`.
fn wasm_plugins(dir: &std::path::Path, component: &std::path::Path, subscriptions: usize) {
    let p = dir.join("pumps");
    std::fs::create_dir_all(&p).expect("a plugin folder");
    std::fs::copy(component, p.join("pumps.wasm")).expect("copied");
    let mut manifest = String::from(
        "[extension]\nname = \"pumps\"\nversion = \"1.0.0\"\nhost = \">=0.1\"\nruntime = \"wasm\"\nentry = \"pumps.wasm\"\n\n[[thing_templates]]\nname = \"Pump\"\n\n[[thing_templates.properties]]\nname = \"v\"\ntype = \"NUMBER\"\ndefault = 0\n",
    );
    for i in 0..subscriptions {
        manifest.push_str(&format!(
            "\n[[thing_templates.subscriptions]]\nname = \"S{i}\"\nevent = \"DataChange\"\nproperty = \"v\"\nhandler = \"on_change\"\n"
        ));
    }
    std::fs::write(p.join("plugin.toml"), manifest).expect("written");
}

/// A server's state on a new data directory with the world of this row and its event workers.
fn world(data: &std::path::Path, subscriptions: usize, handler: Handler) -> Arc<App> {
    thinghost::cli::init::initialize(data, 1).expect("a new data directory");
    let mut db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).expect("opens");
    let audit_log = AuditLog::open(&data.join(DB_FILE), Default::default()).expect("opens");
    let extensions = match handler {
        Handler::Rhai => None,
        Handler::Wasm(component) => {
            let plugins = data.join("plugins");
            wasm_plugins(&plugins, component, subscriptions);
            let registry =
                thinghost::runtime::extensions::load_dir(&plugins, &Default::default(), &mut db)
                    .expect("loads");
            for p in registry.summary() {
                assert_eq!(p["state"], "loaded", "{p}");
            }
            Some(registry)
        }
    };
    let mut app = App::standalone(db, audit_log, data);
    if let Some(registry) = extensions {
        app.extensions = arc_swap::ArcSwap::from_pointee(registry);
    }
    let app = Arc::new(app);
    thinghost::api::events::start(&app);
    let es = |service: &str, params: Json| {
        invoke(&app, Kind::Resource, "EntityServices", service, params)
    };
    let tpl =
        |service: &str, params: Json| invoke(&app, Kind::ThingTemplate, "Pump", service, params);
    if handler == Handler::Rhai {
        es("CreateThingTemplate", json!({"name": "Pump"}));
        tpl(
            "AddPropertyDefinition",
            json!({"name": "v", "type": "NUMBER", "defaultValue": 0}),
        );
        for i in 0..subscriptions {
            tpl(
                "AddSubscription",
                json!({"name": format!("S{i}"), "event": "DataChange", "property": "v",
                       "code": "let x = eventData.newValue;"}),
            );
        }
    }
    for i in 0..THINGS {
        es(
            "CreateThing",
            json!({"name": format!("P{i}"), "thingTemplateName": "Pump"}),
        );
    }
    app
}

struct Figures {
    writes_per_second: f64,
    delivered: u64,
    failed: u64,
    p50_us: u64,
    p99_us: u64,
    drain: Duration,
}

fn measure(app: &Arc<App>, writers: u64, secs: u64) -> Figures {
    let admin = caller(app, thinghost_core::predefined::ADMINISTRATOR);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (app, admin, stop, count) =
                (app.clone(), admin.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let thing = format!("P{}", (w * 7919 + i) as usize % THINGS);
                    let value = json!((w * 1_000_000 + i) as f64);
                    thinghost::api::entities::write_property(
                        &app,
                        &admin,
                        Kind::Thing,
                        &thing,
                        "v",
                        Some(&value),
                    )
                    .unwrap_or_else(|e| panic!("write: {}", e.message));
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a writer");
    }
    let elapsed = started.elapsed();
    let writes = count.load(Ordering::Relaxed);
    let drain_started = Instant::now();
    while app.events.metrics.queued.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = &app.events.metrics;
    Figures {
        writes_per_second: writes as f64 / elapsed.as_secs_f64(),
        delivered: m.delivered.load(Ordering::Relaxed),
        failed: m.failed.load(Ordering::Relaxed),
        p50_us: m.latency_quantile(0.50),
        p99_us: m.latency_quantile(0.99),
        drain: drain_started.elapsed(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick {
        1
    } else {
        env("THINGHOST_BENCH_SECONDS", 4)
    };
    let subscription_counts: &[usize] = if quick { &[1] } else { &[0, 1, 10] };
    let writer_counts: &[u64] = if quick { &[2] } else { &[1, 8, 64] };
    // The component of the Wasm variant, built once (release, wasm32-wasip2).
    let component: &'static std::path::Path = Box::leak(
        thinghost_benches::dispatch::build_cdylib(
            &thinghost_benches::dispatch::root().join("benches/dispatch/add-rust"),
            Some("wasm32-wasip2"),
        )
        .into_boxed_path(),
    );
    println!(
        "| handler | subscriptions per Thing | writers | writes/s | vs none | delivered | failed | delivery p50 | p99 | drained after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut baseline: std::collections::HashMap<u64, f64> = Default::default();
    for (label, handler) in [("rhai", Handler::Rhai), ("wasm", Handler::Wasm(component))] {
        for &subs in subscription_counts {
            // Without subscriptions nothing is delivered: one baseline serves both.
            if subs == 0 && handler != Handler::Rhai {
                continue;
            }
            for &writers in writer_counts {
                let dir = tempfile::tempdir().expect("a temporary folder");
                let app = world(dir.path(), subs, handler);
                let f = measure(&app, writers, secs);
                if subs == 0 {
                    baseline.insert(writers, f.writes_per_second);
                }
                let ratio = baseline
                    .get(&writers)
                    .map(|b| format!("{:.2}x", f.writes_per_second / b))
                    .unwrap_or_else(|| "—".into());
                println!(
                    "| {} | {subs} | {writers} | {:.0} | {ratio} | {} | {} | under {} µs | under {} µs | {:.0} ms |",
                    if subs == 0 { "none" } else { label },
                    f.writes_per_second,
                    f.delivered,
                    f.failed,
                    f.p50_us,
                    f.p99_us,
                    f.drain.as_secs_f64() * 1000.0
                );
                assert_eq!(f.failed, 0, "no subscription may fail here");
            }
        }
    }
}
