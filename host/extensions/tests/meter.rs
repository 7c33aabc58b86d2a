//! The memory meter and the memory cap of Rhai calls: Rhai bounds each value, not how many a
//! handler keeps; the meter (installed here as the test's allocator, as the binary does) does.

use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;
use thinghost_extensions::host_api::{Host, HostCall, HostError};
use thinghost_extensions::meter::{self, Budget, Meter};
use thinghost_extensions::rhai_runtime::{CallError, Limits, RhaiExtension};

#[global_allocator]
static ALLOCATOR: Meter = Meter;

struct Nobody;

impl Host for Nobody {
    fn call(&self, _: HostCall) -> Result<Json, HostError> {
        Ok(Json::Null)
    }
}

/// Values each within Rhai's own bounds (strings of 1 MiB at most), kept in numbers no bound
/// of Rhai's counts: curried into a function pointer, or as the keys of a map.
const HOARDS: &str = r#"
    fn curried(n) {
        let s = "0123456789";
        s.pad(1000000, "x");
        let f = Fn("curried");
        for i in 0..n { f = f.curry(s + i); }
        n
    }
    fn keys(n) {
        let s = "0123456789";
        s.pad(1000000, "x");
        let m = #{};
        for i in 0..n { m[s + i] = i; }
        n
    }
"#;

fn hoards(memory_mib: u64) -> RhaiExtension {
    RhaiExtension::compile(
        HOARDS,
        "main.rhai",
        Limits {
            deadline: Duration::from_secs(30),
            memory: memory_mib << 20,
            ..Limits::default()
        },
    )
    .unwrap()
}

#[test]
fn the_meter_counts_what_this_thread_holds() {
    assert!(meter::installed());
    let budget = Budget::start(1 << 20);
    let held = vec![1u8; 2 << 20];
    assert!(budget.exceeded());
    drop(held);
    assert!(!budget.exceeded());
    // Another thread's allocations are its own.
    let budget = Budget::start(1 << 20);
    std::thread::spawn(|| std::hint::black_box(vec![1u8; 4 << 20]).len())
        .join()
        .unwrap();
    assert!(!budget.exceeded());
}

#[test]
fn e4_a_handler_that_hoards_values_stops_at_its_memory_cap() {
    for handler in ["curried", "keys"] {
        // Without a tight cap, each hoard keeps 200 MB (far past a cap of 64 MiB)...
        let loose = hoards(4096);
        assert_eq!(
            loose
                .call(Arc::new(Nobody), handler, &[json!(200)])
                .unwrap(),
            json!(200),
            "{handler}"
        );
        // ... and with the default cap of 64 MiB it is stopped there.
        let err = hoards(64)
            .call(Arc::new(Nobody), handler, &[json!(200)])
            .unwrap_err();
        assert!(
            matches!(&err, CallError::Limit(m) if m.contains("memory cap of 64 MiB")),
            "{handler}: {err}"
        );
    }
}

/// A call made by a handler or a script (an extension calling another, a script calling an
/// extension) spends their budget: it gets at most what is left of it, not a cap beside it.
#[test]
fn e4_nested_calls_share_the_budget_of_their_caller() {
    let outer = meter::enter(8 << 20);
    let first = std::hint::black_box(vec![1u8; 6 << 20]);
    assert!(!meter::over_budget());
    let inner = meter::enter(64 << 20);
    assert!(inner.budget().remaining() <= 2 << 20);
    let second = std::hint::black_box(vec![1u8; 3 << 20]);
    assert!(
        meter::over_budget(),
        "the inner call spends the outer budget"
    );
    drop(second);
    drop(inner);
    assert!(
        !meter::over_budget(),
        "the outer budget is back, 6 of 8 MiB spent"
    );
    drop((first, outer));
    assert!(!meter::over_budget(), "no budget at all outside a call");
}
