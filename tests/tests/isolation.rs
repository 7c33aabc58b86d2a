//! Isolation of WebAssembly calls (issue 19): a call runs in an instance kept from earlier
//! calls and put back after each (or, after a trap, in a new instance in a reused memory slot),
//! so the test proves both resets. A call of one user plants a secret everywhere a
//! call can leave one (a static, a counter, the heap, 6 MiB of grown heap with the secret every
//! 64 KiB, the stack, and a call that traps halfway with its stack pointer moved); the next
//! calls, of another user, in the same slots, grow their memory as far and further, find none
//! of it and start with the same stack pointer. Against a deliberately broken reset (one
//! instance kept and called again) the same check finds the secret: it would catch a leak.

use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_extensions::host_api::{Host, HostCall, HostError};
use thinghost_extensions::wasm_runtime::{Limits, WasmExtension};
use thinghost_tests::{Build, rust_extension};

/// A host that knows only who calls.
struct User(&'static str);

impl Host for User {
    fn call(&self, call: HostCall) -> Result<Json, HostError> {
        match call {
            HostCall::Caller => Ok(json!(self.0)),
            other => Err(HostError::Denied(format!("{other:?}"))),
        }
    }
}

const SECRET: &str = "ann's secret: 7f3a9c-launch-code";

fn hostile() -> WasmExtension {
    let file = rust_extension("tests/fixtures/hostile-rust", Build::Wasm);
    let bytes = std::fs::read(file).unwrap();
    WasmExtension::load(&bytes, "hostile_rust.wasm", Limits::default(), None).unwrap()
}

fn call(ext: &WasmExtension, user: &'static str, handler: &str) -> Result<Json, String> {
    ext.call(Arc::new(User(user)), handler, &[json!(SECRET)])
        .map_err(|e| e.to_string())
}

/// What a call of bob finds of ann's calls before it, and where its stack starts.
fn bob_finds(ext: &WasmExtension) -> Json {
    call(ext, "bob", "find").unwrap()
}

/// Whether bob found anything of ann's.
fn leaked(found: &Json, stack: &Json) -> bool {
    !found["found"].as_array().unwrap().is_empty()
        || found["static"] == true
        || found["calls"] != 0
        || found["stack"] != *stack
}

#[test]
fn a_call_finds_nothing_of_the_calls_before_it_in_memory_globals_or_stack() {
    // The calls run in instances reused from call to call, put back after each, in pooled
    // slots: this tests that reset (and, for the calls that trap, the pool's reset of a slot
    // for a new instance).
    assert!(thinghost_extensions::wasm_runtime::pooled());
    let ext = hostile();
    assert!(ext.reuses_instances());
    // A clean call: where the stack starts, and nothing planted.
    let clean = bob_finds(&ext);
    assert!(!leaked(&clean, &clean["stack"]), "{clean}");
    assert_eq!(clean["found"], json!([]));
    // ann plants, and plants again with a trap halfway; bob then looks, in the slot they used
    // (that the check sees what it looks for is the next test's).
    for round in 0..20 {
        let put_back = ext.instances_put_back();
        call(&ext, "ann", "plant").unwrap();
        // ann's instance was put back, and is the one bob's call takes (the last one in).
        assert_eq!(ext.instances_put_back(), put_back + 1);
        let found = bob_finds(&ext);
        assert!(
            !leaked(&found, &clean["stack"]),
            "round {round}: bob found ann's secret or her stack in her instance: {found}"
        );
        let err = call(&ext, "ann", "plant_and_trap").unwrap_err();
        assert!(err.contains("trapped after planting"), "{err}");
        let found = bob_finds(&ext);
        assert!(
            !leaked(&found, &clean["stack"]),
            "round {round}: bob found ann's secret or her stack: {found}"
        );
    }
    // The same from two threads at once (other instances and slots, reused in turn).
    let put_back = ext.instances_put_back();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10 {
                    call(&ext, "ann", "plant").unwrap();
                    let found = bob_finds(&ext);
                    assert!(!leaked(&found, &clean["stack"]), "{found}");
                }
            });
        }
    });
    // Every one of those 40 calls was put back (none trapped).
    assert_eq!(ext.instances_put_back(), put_back + 40);
}

#[test]
fn the_isolation_check_catches_a_broken_reset() {
    let mut ext = hostile();
    let clean = bob_finds(&ext);
    ext.break_isolation_for_test();
    call(&ext, "ann", "plant").unwrap();
    let found = bob_finds(&ext);
    assert!(
        leaked(&found, &clean["stack"]),
        "a kept instance must leak: {found}"
    );
    // The secret itself, in the static, the heap and the stack.
    assert!(found["static"] == true && found["calls"] == 1, "{found}");
    assert!(
        found["found"].as_array().unwrap().len() >= 2,
        "the heap and stack copies: {found}"
    );
}
