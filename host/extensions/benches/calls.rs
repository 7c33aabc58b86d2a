//! The cost of one call into an extension, per runtime: a fresh WebAssembly instance from the
//! pre-instantiated component, and a Rhai function call, each making one host call.
//!
//! `cargo bench -p thinghost-extensions --bench calls` (builds tests/fixtures/hostile-rust for
//! wasm32-wasip2 first).

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use thinghost_extensions::host_api::{Host, HostCall, HostError};
use thinghost_extensions::rhai_runtime::{self, RhaiExtension};
use thinghost_extensions::wasm_runtime::{self, WasmExtension};

struct Caller;

impl Host for Caller {
    fn call(&self, call: HostCall) -> Result<Json, HostError> {
        match call {
            HostCall::Caller => Ok(json!("bench")),
            other => Err(HostError::Denied(format!("{other:?}"))),
        }
    }
}

fn component() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/extensions");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(root.join("tests/fixtures/hostile-rust/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the bench component failed");
    std::fs::read(target.join("wasm32-wasip2/release/hostile_rust.wasm")).expect("built")
}

fn calls(c: &mut Criterion) {
    let host: Arc<dyn Host> = Arc::new(Caller);
    let wasm = WasmExtension::load(
        &component(),
        "hostile_rust.wasm",
        wasm_runtime::Limits::default(),
        None,
    )
    .expect("loads");
    assert_eq!(wasm.call(host.clone(), "who", &[]).unwrap(), json!("bench"));
    c.bench_function(
        "wasm call (an instance put back after each call, one host call)",
        |b| b.iter(|| wasm.call(host.clone(), "who", &[]).unwrap()),
    );
    let rhai = RhaiExtension::compile(
        "fn who() { caller() }",
        "bench.rhai",
        rhai_runtime::Limits::default(),
    )
    .expect("compiles");
    c.bench_function("rhai call (one host call)", |b| {
        b.iter(|| rhai.call(host.clone(), "who", &[]).unwrap())
    });
}

criterion_group!(benches, calls);
criterion_main!(benches);
