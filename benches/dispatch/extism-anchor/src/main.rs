//! `extism-anchor PLUGIN.wasm CALLS`: loads the extism plugin `add` (benches/dispatch/extism-add)
//! and times `Plugin::call("add", {"a":..,"b":..})` CALLS times, then prints one JSON object. The
//! dispatch benchmark (`cargo bench -p thinghost-benches --bench dispatch`) builds and runs it.
//!
//! This is extism as its documentation shows it: one `Plugin`, called again and again (extism
//! keeps the instance between calls and resets its memory).

use extism::{Manifest, Plugin, Wasm};

/// mimalloc, the allocator under thinghost's memory meter: both sides of row 3 run on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{Value as Json, json};
use thinghost_bench_model::timing::{Stats, measure};

fn stats(s: Stats) -> Json {
    json!({"median_ns": s.median_ns, "p99_ns": s.p99_ns, "per_sec": s.per_sec})
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, calls] = &args[..] else {
        panic!("usage: extism-anchor PLUGIN.wasm CALLS");
    };
    let calls: usize = calls.parse().expect("CALLS is a number");
    let wasm = std::fs::read(path).expect("the plugin file");
    let manifest = Manifest::new([Wasm::data(wasm)]);
    let mut plugin = Plugin::new(&manifest, [], false).expect("the extism plugin loads");
    let inputs: Vec<String> = (0..calls)
        .map(|i| json!({"a": i as f64, "b": 0.5}).to_string())
        .collect();
    let mut call = |i: usize| -> f64 {
        let out: &str = plugin.call("add", inputs[i].as_str()).expect("add answers");
        let v: Json = serde_json::from_str(out).expect("add answers JSON");
        v["result"].as_f64().expect("a number")
    };
    assert_eq!(call(3), 3.5, "the extism plugin adds");
    let s = measure(calls, 1, |i| call(i) >= 0.0);
    println!("{}", json!({"extism": stats(s)}));
}
