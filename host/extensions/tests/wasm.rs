//! The WebAssembly runtime refuses what is not a thinghost extension, with a clear message that
//! names the file (DOMAIN E1). Running real components is tested end to end in tests/.

use thinghost_extensions::wasm_runtime::{Limits, WasmExtension};

fn load(bytes: &[u8]) -> String {
    match WasmExtension::load(bytes, "plugins/x/x.wasm", Limits::default(), None) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

#[test]
fn e1_bytes_that_are_not_webassembly_are_refused() {
    let e = load(b"#!/bin/sh\necho hi\n");
    assert!(
        e.starts_with("plugins/x/x.wasm is not a WebAssembly component"),
        "{e}"
    );
}

#[test]
fn e1_a_core_module_is_not_a_component() {
    let e = load(&wat::parse_str("(module (func (export \"greet\")))").unwrap());
    assert!(
        e.contains("plugins/x/x.wasm is not a WebAssembly component"),
        "{e}"
    );
}

#[test]
fn e1_a_component_without_the_handlers_export_is_refused() {
    let e = load(&wat::parse_str("(component)").unwrap());
    assert!(e.contains("is not a thinghost extension"), "{e}");
    assert!(e.contains("thinghost:extension@0.1.0"), "{e}");
}

#[test]
fn e1_a_component_that_imports_what_the_host_does_not_give_is_refused() {
    let e = load(
        &wat::parse_str(
            r#"(component (import "acme:net/raw-socket" (instance (export "open" (func)))))"#,
        )
        .unwrap(),
    );
    assert!(e.contains("cannot be linked"), "{e}");
    assert!(e.contains("acme:net/raw-socket"), "{e}");
}
