//! Row 3 of BENCHMARKS.md: service dispatch.
//!
//! `Add(a, b)` as a native library, in Rhai and as a WebAssembly component, each called through
//! the whole host path but the network (routing, the caller's checks, parameter validation,
//! dispatch, result conversion: `rest::handle`, what the HTTP layer calls), and through its
//! runtime alone; beside the raw cost of a wasmtime component call, of a Rhai `call_fn`, and of
//! an extism `Plugin::call` of the same function, measured in the same run.
//!
//! `cargo bench -p thinghost-benches --bench dispatch` (`THINGHOST_BENCH_CALLS`: calls per
//! contender, 20,000 by default; `THINGHOST_BENCH_PROFILE=wasm` only calls one runtime's `Add`
//! through the host path, for a profiler). It builds `benches/dispatch/add-rust` (wasm32-wasip2 and
//! native), `benches/dispatch/extism-add` (wasm32-unknown-unknown) and the extism anchor first.

use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_benches::dispatch::{ADDERS, build_cdylib, call, local_app, root, target};
use thinghost_benches::timing::{Stats, measure};
use thinghost_extensions::host_api::{Host, HostCall, HostError};

/// The server's allocator (the memory meter over mimalloc, as `thinghost serve` installs it):
/// row 3 times what the server runs. The extism anchor runs on mimalloc too.
#[global_allocator]
static ALLOCATOR: thinghost_extensions::meter::Meter = thinghost_extensions::meter::Meter;

fn calls() -> usize {
    std::env::var("THINGHOST_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// A host that refuses every call (`add` makes none): what the runtime costs alone.
struct NoHost;

impl Host for NoHost {
    fn call(&self, call: HostCall) -> Result<Json, HostError> {
        Err(HostError::Denied(format!("{call:?}")))
    }
}

fn row(name: &str, s: Stats, anchor: Option<f64>) {
    let ratio = anchor
        .map(|a| format!("{:.2}x", s.median_ns / a))
        .unwrap_or_default();
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} | {ratio} |",
        s.median_ns, s.p99_ns, s.per_sec
    );
}

/// The raw wasmtime component call: wasmtime's own API, the component instantiated once (and,
/// for the second figure, afresh per call), `handlers.call("add", "[a,b]")`.
mod raw_wasm {
    use wasmtime::component::{Component, Linker, TypedFunc};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

    pub struct State {
        ctx: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.ctx,
                table: &mut self.table,
            }
        }
    }

    fn state() -> State {
        State {
            ctx: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }

    type Call = TypedFunc<(String, String), (Result<String, String>,)>;

    pub struct Raw {
        store: Store<State>,
        pre: wasmtime::component::InstancePre<State>,
        index: wasmtime::component::ComponentExportIndex,
        live: Call,
    }

    pub fn load(file: &std::path::Path) -> Raw {
        let engine = Engine::new(&Config::new()).expect("an engine");
        let component = Component::from_file(&engine, file).expect("compiles");
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI");
        linker
            .define_unknown_imports_as_traps(&component)
            .expect("host imports");
        let pre = linker.instantiate_pre(&component).expect("links");
        let (_, iface) = component
            .get_export(None, "thinghost:extension/handlers@0.1.0")
            .expect("exports handlers");
        let (_, index) = component
            .get_export(Some(&iface), "call")
            .expect("exports call");
        let mut store = Store::new(&engine, state());
        let instance = pre.instantiate(&mut store).expect("instantiates");
        let live = instance
            .get_typed_func(&mut store, index)
            .expect("call's type");
        Raw {
            store,
            pre,
            index,
            live,
        }
    }

    fn add(store: &mut Store<State>, f: &Call, i: usize) -> f64 {
        let (out,) = f
            .call(&mut *store, ("add".to_string(), format!("[{i},0.5]")))
            .expect("no trap");
        out.expect("add answers").parse().expect("a number")
    }

    impl Raw {
        /// A call of the instance made once.
        pub fn live(&mut self, i: usize) -> f64 {
            add(&mut self.store, &self.live, i)
        }

        /// A new store and instance, then the call.
        pub fn fresh(&self, i: usize) -> f64 {
            let mut store = Store::new(self.pre.engine(), state());
            let instance = self.pre.instantiate(&mut store).expect("instantiates");
            let f: Call = instance
                .get_typed_func(&mut store, self.index)
                .expect("call's type");
            add(&mut store, &f, i)
        }
    }
}

/// extism builds apart (it needs another wasmtime): build its plugin and run the anchor.
fn extism(n: usize) -> Stats {
    let plugin = build_cdylib(
        &root().join("benches/dispatch/extism-add"),
        Some("wasm32-unknown-unknown"),
    );
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["run", "--quiet", "--locked", "--release", "--manifest-path"])
        .arg(root().join("benches/dispatch/extism-anchor/Cargo.toml"))
        .arg("--target-dir")
        .arg(target("extism-anchor"))
        .arg("--")
        .arg(&plugin)
        .arg(n.to_string())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the extism anchor failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).expect("the anchor prints JSON");
    Stats {
        median_ns: v["extism"]["median_ns"].as_f64().expect("a median"),
        p99_ns: v["extism"]["p99_ns"].as_f64().expect("a p99"),
        per_sec: v["extism"]["per_sec"].as_f64().expect("a rate"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery: nothing to list but the row.
    }
    let n = calls();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let plugins = tmp.path().join("plugins");
    eprintln!("building the add extensions and the extism anchor...");
    thinghost_benches::dispatch::plugin_dir(&plugins);
    let (app, bench, _) = local_app(&tmp.path().join("data"), &plugins);

    // `THINGHOST_BENCH_PROFILE=RUNTIME`: only call that runtime's Add through the host path, n
    // times, for a profiler (`perf record`).
    if let Ok(runtime) = std::env::var("THINGHOST_BENCH_PROFILE") {
        let (_, thing) = ADDERS
            .iter()
            .find(|(r, _)| *r == runtime)
            .expect("THINGHOST_BENCH_PROFILE is native, rhai or wasm");
        let path = format!("/Thingworx/Things/{thing}/Services/Add");
        let body = br#"{"a": 1, "b": 2}"#;
        for _ in 0..n {
            let reply = call(&app, &bench, &path, body).expect("adds");
            std::hint::black_box(reply.body());
        }
        return;
    }
    let extism = extism(n);
    // Every contender is asked first, and must add.
    let mut host_path = Vec::new();
    for (runtime, thing) in ADDERS {
        let path = format!("/Thingworx/Things/{thing}/Services/Add");
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| json!({"a": i, "b": 0.5}).to_string().into_bytes())
            .collect();
        // Up to the body's text, as the HTTP layer writes it.
        let add = |i: usize| match call(&app, &bench, &path, &bodies[i]) {
            Ok(reply) => {
                let body = reply.body();
                std::hint::black_box(&body);
                reply.first_value("result").as_f64()
            }
            Err(e) => panic!("{path}: {}", e.message),
        };
        assert_eq!(add(7), Some(7.5), "{runtime} adds");
        host_path.push((runtime, measure(n, 1, |i| add(i).is_some())));
    }
    let mut runtime_only = Vec::new();
    let host: Arc<dyn Host> = Arc::new(NoHost);
    for (runtime, _) in ADDERS {
        let registry = app.extensions.load();
        let Some(thinghost::runtime::extensions::State::Loaded(loaded)) =
            registry.packages.get(&format!("add-{runtime}"))
        else {
            panic!("add-{runtime} is loaded");
        };
        let args: Vec<[Json; 2]> = (0..n).map(|i| [json!(i), json!(0.5)]).collect();
        let add = |i: usize| {
            loaded
                .runtime
                .call(host.clone(), "add", &args[i])
                .expect("adds")
                .as_f64()
        };
        assert_eq!(add(7), Some(7.5), "{runtime} adds");
        runtime_only.push((runtime, measure(n, 1, |i| add(i).is_some())));
    }
    let mut raw = raw_wasm::load(&plugins.join("add-wasm/add.wasm"));
    assert_eq!(raw.live(7), 7.5);
    assert_eq!(raw.fresh(7), 7.5);
    let raw_live = measure(n, 1, |i| raw.live(i) >= 0.0);
    let raw_fresh = measure(n, 1, |i| raw.fresh(i) >= 0.0);
    let engine = rhai::Engine::new();
    let ast = engine.compile("fn add(a, b) { a + b }").expect("compiles");
    let rhai_call = |i: usize| {
        engine
            .call_fn::<f64>(&mut rhai::Scope::new(), &ast, "add", (i as f64, 0.5))
            .expect("adds")
    };
    assert_eq!(rhai_call(7), 7.5);
    let raw_rhai = measure(n, 1, |i| rhai_call(i) >= 0.0);

    let wasm_host = host_path[2].1;
    println!("\n## Row 3: service dispatch ({n} calls each, one core)\n");
    println!("| contender | median ns | p99 ns | calls/s | median / bare extism |");
    println!("|---|---|---|---|---|");
    for (runtime, s) in &host_path {
        row(
            &format!("**{runtime}**: whole host path"),
            *s,
            Some(extism.median_ns),
        );
    }
    for (runtime, s) in &runtime_only {
        row(
            &format!("{runtime}: the runtime alone"),
            *s,
            Some(extism.median_ns),
        );
    }
    row(
        "raw wasmtime 48 component call (a live instance)",
        raw_live,
        Some(extism.median_ns),
    );
    row(
        "raw wasmtime 48 component call (a new instance per call)",
        raw_fresh,
        Some(extism.median_ns),
    );
    row("raw Rhai `call_fn`", raw_rhai, Some(extism.median_ns));
    row(
        "extism 1.30 `Plugin::call` (the anchor)",
        extism,
        Some(extism.median_ns),
    );
    let rhai_host = host_path[1].1;
    println!("\n| goal | figure | met? |\n|---|---|---|");
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    println!(
        "| Wasm through the whole host path (no state kept from call to call) faster than bare extism | {:.0} ns vs {:.0} ns | {} |",
        wasm_host.median_ns,
        extism.median_ns,
        met(wasm_host.median_ns < extism.median_ns)
    );
    println!(
        "| ... and under 5 us (the aim) | {:.0} ns | {} |",
        wasm_host.median_ns,
        met(wasm_host.median_ns < 5_000.0)
    );
    println!(
        "| Rhai through the whole host path under 1.5 us | {:.0} ns | {} |",
        rhai_host.median_ns,
        met(rhai_host.median_ns < 1_500.0)
    );
}
