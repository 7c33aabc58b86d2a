//! The Rhai runtime against a recording host.

use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thinghost_extensions::host_api::{Host, HostCall, HostError};
use thinghost_extensions::rhai_runtime::{CallError, Limits, RhaiExtension, reference};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<HostCall>>,
}

impl Host for Recorder {
    fn call(&self, call: HostCall) -> Result<Json, HostError> {
        self.calls.lock().unwrap().push(call.clone());
        match call {
            HostCall::GetProperty { thing, property }
                if thing == "HelloThing" && property == "greeting" =>
            {
                Ok(json!("Hello"))
            }
            HostCall::GetProperty { thing, .. } => {
                Err(HostError::NotFound(format!("Thing {thing}")))
            }
            HostCall::Caller => Ok(json!("alice")),
            HostCall::ListThings => Ok(json!(["A", "B"])),
            _ => Ok(Json::Null),
        }
    }
}

fn compile(src: &str) -> RhaiExtension {
    RhaiExtension::compile(
        src,
        "main.rhai",
        Limits {
            deadline: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .unwrap()
}

#[test]
fn the_hello_handler_greets_through_the_host() {
    let ext =
        compile(r#"fn greet(who) { get_property("HelloThing", "greeting") + ", " + who + "!" }"#);
    assert!(ext.defines("greet", 1));
    assert!(!ext.defines("greet", 2) && !ext.defines("nope", 1));
    let host = Arc::new(Recorder::default());
    let out = ext.call(host.clone(), "greet", &[json!("World")]).unwrap();
    assert_eq!(out, json!("Hello, World!"));
    assert_eq!(
        host.calls.lock().unwrap()[0],
        HostCall::GetProperty {
            thing: "HelloThing".into(),
            property: "greeting".into()
        }
    );
}

#[test]
fn values_cross_in_both_directions() {
    let ext = compile(
        r#"
        fn echo(x) { x }
        fn shape() { #{ n: 1, list: [1, 2.5, "x", true], who: caller(), things: list_things() } }
        fn write(v) { set_property("T", "p", v); invoke_service("T", "S", #{ a: 1 }); log("done"); }
        "#,
    );
    let host = Arc::new(Recorder::default());
    let v = json!({"a": [1, {"b": null}], "s": "x"});
    assert_eq!(
        ext.call(host.clone(), "echo", std::slice::from_ref(&v))
            .unwrap(),
        v
    );
    assert_eq!(
        ext.call(host.clone(), "shape", &[]).unwrap(),
        json!({"n": 1, "list": [1, 2.5, "x", true], "who": "alice", "things": ["A", "B"]})
    );
    ext.call(host.clone(), "write", &[json!(3)]).unwrap();
    let calls = host.calls.lock().unwrap();
    assert!(calls.contains(&HostCall::SetProperty {
        thing: "T".into(),
        property: "p".into(),
        value: json!(3)
    }));
    assert!(calls.contains(&HostCall::InvokeService {
        thing: "T".into(),
        service: "S".into(),
        params: json!({"a": 1})
    }));
    assert!(calls.contains(&HostCall::Log {
        message: "done".into()
    }));
}

#[test]
fn a_host_refusal_is_an_error_in_the_script() {
    let ext = compile(r#"fn peek() { get_property("Secret", "x") }"#);
    let err = ext
        .call(Arc::new(Recorder::default()), "peek", &[])
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Script(m) if m.contains("not found: Thing Secret")),
        "{err}"
    );
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let ext = RhaiExtension::compile(
        "fn spin() { loop { } }",
        "main.rhai",
        Limits {
            deadline: Duration::from_millis(200),
            max_operations: u64::MAX,
            ..Limits::default()
        },
    )
    .unwrap();
    let start = Instant::now();
    let err = ext
        .call(Arc::new(Recorder::default()), "spin", &[])
        .unwrap_err();
    assert!(matches!(err, CallError::Deadline(_)), "{err}");
    // The error names the limit and where an extension raises it (issue 23).
    assert!(err.to_string().contains("`[limits] deadline_ms`"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The extension still works afterwards.
    let ok = compile("fn one() { 1 }");
    assert_eq!(
        ok.call(Arc::new(Recorder::default()), "one", &[]).unwrap(),
        json!(1)
    );
}

#[test]
fn memory_bombs_and_deep_recursion_hit_their_limits() {
    let ext = compile(
        r#"
        fn grow() { let s = "x"; loop { s += s; } }
        fn pile() { let a = []; loop { a.push(1); } }
        fn deep(n) { deep(n + 1) }
        "#,
    );
    for f in ["grow", "pile"] {
        let err = ext.call(Arc::new(Recorder::default()), f, &[]).unwrap_err();
        assert!(
            matches!(err, CallError::Limit(_) | CallError::Deadline(_)),
            "{f}: {err}"
        );
    }
    let err = ext
        .call(Arc::new(Recorder::default()), "deep", &[json!(0)])
        .unwrap_err();
    assert!(matches!(err, CallError::Limit(_)), "{err}");
}

#[test]
fn script_errors_and_compile_errors_are_reported() {
    let ext = compile(
        r#"fn bad() { throw "broken on purpose" } fn undefined_fn() { no_such_function(1) }"#,
    );
    let err = ext
        .call(Arc::new(Recorder::default()), "bad", &[])
        .unwrap_err();
    assert!(err.to_string().contains("broken on purpose"), "{err}");
    assert!(
        ext.call(Arc::new(Recorder::default()), "undefined_fn", &[])
            .is_err()
    );
    let err = RhaiExtension::compile("fn broken( {", "plugins/x/main.rhai", Limits::default())
        .err()
        .unwrap();
    assert!(err.contains("plugins/x/main.rhai"), "{err}");
    // No file system: `import` resolves nothing.
    let ext = compile(r#"fn sneaky() { import "/etc/passwd" as p; 1 }"#);
    assert!(
        ext.call(Arc::new(Recorder::default()), "sneaky", &[])
            .is_err()
    );
}

#[test]
fn the_rhai_reference_lists_every_host_function() {
    let r = reference();
    for f in thinghost_extensions::host_api::HOST_FUNCTIONS {
        assert!(r.contains(&format!("`{}(", f.name)), "{}", f.name);
    }
}

#[test]
fn the_committed_rhai_reference_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/rhai-api.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        reference(),
        "sdk/rhai-api.md is out of date: regenerate it with `cargo run -p thinghost -- plugin rhai-api > sdk/rhai-api.md`"
    );
}

#[test]
fn the_committed_wit_contract_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/wit/thinghost.wit");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        thinghost_extensions::host_api::wit(),
        "sdk/wit/thinghost.wit is out of date: regenerate it with `cargo run -p thinghost -- plugin wit > sdk/wit/thinghost.wit`"
    );
}

#[test]
fn the_native_header_names_the_abi_version_and_every_host_function() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/native/thinghost.h");
    let header = std::fs::read_to_string(&path).unwrap();
    assert!(header.contains(&format!(
        "#define THINGHOST_ABI_VERSION {}",
        thinghost_extensions::native_runtime::ABI_VERSION
    )));
    use thinghost_extensions::native_runtime::status;
    for (name, code) in [
        ("OK", status::OK),
        ("NOT_FOUND", status::NOT_FOUND),
        ("DENIED", status::DENIED),
        ("CAPABILITY", status::CAPABILITY),
        ("INVALID", status::INVALID),
        ("FAILED", status::FAILED),
    ] {
        assert!(
            header.contains(&format!("#define THINGHOST_{name} {code}")),
            "THINGHOST_{name}"
        );
    }
    for f in thinghost_extensions::host_api::HOST_FUNCTIONS {
        let params: Vec<&str> = f.params.iter().map(|(n, _)| *n).collect();
        let line = format!(" *   {}({})", f.name, params.join(", "));
        assert!(
            header.contains(&line),
            "sdk/native/thinghost.h lacks {line:?}"
        );
    }
}

/// Issue 23: the host functions Rhai code calls, read from its text: comments, strings and a
/// function of the script's own name left out.
#[test]
fn the_host_functions_a_script_calls_are_read_from_its_code() {
    let source = r#"
        // set_property("x", "y", 1) in a comment
        /* invoke_service("a", "b", #{}) */
        fn log(x) { x }          // its own log, not the host's
        fn run() {
            let s = "audit(\"not a call\")";
            let v = get_property ("Pump1", "level");
            log(v);
            caller()
        }
    "#;
    let found: Vec<&str> = thinghost_extensions::rhai_runtime::host_calls_in(source)
        .into_iter()
        .collect();
    assert_eq!(found, ["caller", "get_property"]);
}
