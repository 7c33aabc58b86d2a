//! Extensions in the running server: the hello example over REST, refused packages, and hostile
//! extension code that must do nothing its caller could not (DOMAIN E4).

use serde_json::{Value as Json, json};
use std::path::Path;
use thinghost_tests::{Build, Server, copy_dir, ok, post, rust_extension, workspace};

/// A plugin directory with the hello example and the given test fixtures.
fn plugins(root: &Path, fixtures: &[&str]) -> std::path::PathBuf {
    let dir = root.join("plugins");
    copy_dir(&workspace().join("examples/hello"), &dir.join("hello"));
    for f in fixtures {
        copy_dir(
            &workspace().join("tests/fixtures/plugins").join(f),
            &dir.join(f),
        );
    }
    dir
}

const ES: &str = "/Thingworx/Resources/EntityServices/Services";

#[test]
fn the_hello_example_answers_over_rest() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(t.path(), &[]);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let admin = s.admin_key();
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({"who": "World"}),
    );
    assert_eq!(v["rows"][0]["result"], "Hello, World!");
    // Parameters are checked against the declaration.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({}),
    );
    assert_eq!(st, 400, "{v}");
    let (st, _) = post(
        &s,
        &admin,
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({"who": 5}),
    );
    assert_eq!(st, 400);
    // The property the handler reads is the Thing's; changing it changes the greeting.
    let r = s
        .client
        .put(s.at("/Thingworx/Things/HelloThing/Properties/greeting"))
        .header("appKey", &admin)
        .json(&json!({"greeting": "Hi"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({"who": "you"}),
    );
    assert_eq!(v["rows"][0]["result"], "Hi, you!");
    // The package list shows it loaded, with what it contributes.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageDetails",
        json!({"packageName": "hello"}),
    );
    assert_eq!(v["rows"][0]["result"]["state"], "loaded");
    assert_eq!(v["rows"][0]["result"]["services"], 1);
    // A restart keeps the value users set.
    drop(s);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let v = ok(
        &s,
        &s.admin_key(),
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({"who": "again"}),
    );
    assert_eq!(v["rows"][0]["result"], "Hi, again!");
}

/// Installs the Rust extension crate in `dir` (built as `build`) into `plugins/name`, the way
/// the example's README says: its plugin.toml and the built file, with `runtime` and `entry`
/// rewritten for a native build.
fn install_rust(plugins: &Path, name: &str, dir: &str, build: Build) {
    let lib = rust_extension(dir, build);
    let to = plugins.join(name);
    std::fs::create_dir_all(&to).unwrap();
    let file = lib.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(&lib, to.join(&file)).unwrap();
    let mut manifest = std::fs::read_to_string(workspace().join(dir).join("plugin.toml")).unwrap();
    if build == Build::Native {
        let wasm_entry = format!(
            "entry = \"{}.wasm\"",
            file.trim_start_matches("lib").split('.').next().unwrap()
        );
        manifest = manifest
            .replace("runtime = \"wasm\"", "runtime = \"native\"")
            .replace(&wasm_entry, &format!("entry = \"{file}\""));
    }
    std::fs::write(to.join("plugin.toml"), manifest).unwrap();
}

/// A plugin directory with the hello example and the tank-monitor example built as `build`.
fn with_tank_monitor(root: &Path, build: Build) -> std::path::PathBuf {
    let p = plugins(root, &[]);
    install_rust(&p, "tank-monitor", "examples/tank-monitor", build);
    p
}

/// The tank-monitor services, used the way an operator would.
fn tanks_work(s: &Server) {
    let admin = s.admin_key();
    // Users make their own tanks from the extension's template.
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Tank2", "thingTemplateName": "WaterTank"}),
    );
    let v = ok(
        s,
        &admin,
        "/Thingworx/Things/Tank2/Services/Fill",
        json!({"liters": 950}),
    );
    assert_eq!(v["rows"][0]["result"], 950.0);
    let v = ok(
        s,
        &admin,
        "/Thingworx/Things/Tank2/Services/FillPercent",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], 95.0);
    // The tank's subscription to changes of its level sets the alarm, and fires Overflow, which
    // its other subscription counts: after the call, as the caller.
    let property = |name: &str| -> Json {
        let r = s
            .client
            .get(s.at(&format!("/Thingworx/Things/Tank2/Properties/{name}")))
            .header("appKey", &admin)
            .send()
            .unwrap();
        r.json::<Json>().unwrap()["rows"][0][name].clone()
    };
    let settled = |name: &str, want: Json| {
        for _ in 0..200 {
            if property(name) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{name} is {}, not {want}", property(name));
    };
    settled("alarm", json!(true));
    settled("overflows", json!(1.0));
    // Fuller still: the alarm stays on, and no second Overflow.
    ok(
        s,
        &admin,
        "/Thingworx/Things/Tank2/Services/Fill",
        json!({"liters": 10}),
    );
    settled("level", json!(960.0));
    let metrics = |s: &Server| {
        ok(
            s,
            &admin,
            "/Thingworx/Subsystems/EventProcessingSubsystem/Services/GetPerformanceMetrics",
            json!({}),
        )
    };
    for _ in 0..200 {
        if metrics(s)["rows"][0]["result"]["queueDepth"] == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(property("overflows"), json!(1.0));
    let m = metrics(s)["rows"][0]["result"].clone();
    assert_eq!(m["subscriptionsFailed"], 0, "{m}");
    // WatchLevel twice, CountOverflows once.
    assert_eq!(m["subscriptionsDelivered"], 3, "{m}");
    // A bad parameter is the handler's error, for the caller.
    let (st, v) = post(
        s,
        &admin,
        "/Thingworx/Things/Tank2/Services/Fill",
        json!({"liters": -1}),
    );
    assert_eq!(st, 500);
    assert!(
        v["error"].as_str().unwrap().contains("positive number"),
        "{v}"
    );
    // The fleet report asks every tank the caller can see.
    let v = ok(
        s,
        &admin,
        "/Thingworx/Things/Tank1/Services/FleetReport",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], "Tank1: 0%\nTank2: 96%");
    // hello loads beside it.
    let v = ok(
        s,
        &admin,
        "/Thingworx/Things/HelloThing/Services/Greet",
        json!({"who": "tanks"}),
    );
    assert_eq!(v["rows"][0]["result"], "Hello, tanks!");
}

#[test]
fn the_rust_wasm_example_answers_over_rest() {
    let t = tempfile::tempdir().unwrap();
    let p = with_tank_monitor(t.path(), Build::Wasm);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    tanks_work(&s);
    let v = ok(
        &s,
        &s.admin_key(),
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageDetails",
        json!({"packageName": "tank-monitor"}),
    );
    assert_eq!(v["rows"][0]["result"]["runtime"], "wasm");
    assert_eq!(v["rows"][0]["result"]["trusted"], false);
    assert_eq!(v["rows"][0]["result"]["limits"]["deadlineMs"], 2000);
    assert_eq!(v["rows"][0]["result"]["limits"]["memoryMib"], 32);
    assert_eq!(
        v["rows"][0]["result"]["capabilities"]["invoke"][0],
        "Things/*/Services/FillPercent"
    );
    // A restart loads the cached compilation and keeps the user's tank with its values; a
    // damaged cache file is compiled anew and replaced.
    drop(s);
    let cache: Vec<_> = std::fs::read_dir(t.path().join("d/cache/wasm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cache.len(), 1, "{cache:?}");
    std::fs::write(&cache[0], b"damaged").unwrap();
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let v = ok(
        &s,
        &s.admin_key(),
        "/Thingworx/Things/Tank2/Services/FillPercent",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], 96.0);
    assert!(std::fs::metadata(&cache[0]).unwrap().len() > 1000);
}

#[test]
fn the_rust_example_also_loads_as_a_native_library_when_allowed() {
    let t = tempfile::tempdir().unwrap();
    let p = with_tank_monitor(t.path(), Build::Native);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--allow-native", "--plugins", p.to_str().unwrap()],
    );
    tanks_work(&s);
    let v = ok(
        &s,
        &s.admin_key(),
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageDetails",
        json!({"packageName": "tank-monitor"}),
    );
    assert_eq!(v["rows"][0]["result"]["runtime"], "native");
    assert_eq!(v["rows"][0]["result"]["trusted"], true);
}

#[test]
fn e1_broken_packages_are_refused_with_their_reason_and_the_others_load() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(t.path(), &["broken-handler", "needs-missing"]);
    std::fs::create_dir_all(p.join("bad-toml")).unwrap();
    std::fs::write(p.join("bad-toml/plugin.toml"), "[extension\nname=").unwrap();
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let admin = s.admin_key();
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageList",
        json!({}),
    );
    let rows = v["rows"].as_array().unwrap();
    let state = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {v}"))
            .clone()
    };
    assert_eq!(state("hello")["state"], "loaded");
    // The details carry the folder's content hash, as the plugin directory's watcher compares it.
    let d = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageDetails",
        json!({"packageName": "hello"}),
    )["rows"][0]["result"]
        .clone();
    assert_eq!(
        d["contentHash"],
        thinghost_extensions::package::content_hash(&p.join("hello")).unwrap(),
        "{d}"
    );
    let r = state("broken-handler");
    assert_eq!(r["state"], "refused");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("defines run_it with 0 parameters, but service"),
        "{r}"
    );
    let r = state("needs-missing");
    assert_eq!(r["state"], "waiting");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("needs absent ^1, which is not installed"),
        "{r}"
    );
    let r = state("bad-toml");
    assert!(r["reason"].as_str().unwrap().contains("plugin.toml"), "{r}");
    // Nothing of a refused extension became visible.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Broken"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Users and Things for the hostile tests: mallory may call the Hostile Thing's services but
/// cannot see Secret, may read but not write Shared.
fn hostile_world(s: &Server) -> String {
    let admin = s.admin_key();
    ok(
        s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "mallory", "password": "a long password"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "Org"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Organizations/Org/Services/AddMember",
        json!({"name": "Org", "member": "mallory", "type": "User"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Secret", "thingTemplateName": "GenericThing"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/Secret/Services/AddPropertyDefinition",
        json!({"name": "code", "type": "STRING", "defaultValue": "1234"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Shared", "thingTemplateName": "GenericThing"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/Shared/Services/AddPropertyDefinition",
        json!({"name": "level", "type": "NUMBER", "defaultValue": 1}),
    );
    for thing in ["Shared", "Hostile", "Nosy"] {
        ok(
            s,
            &admin,
            &format!("/Thingworx/Things/{thing}/Services/AddVisibilityPermission"),
            json!({"principal": "Org", "principalType": "Organization"}),
        );
    }
    ok(
        s,
        &admin,
        "/Thingworx/Things/Shared/Services/AddRunTimePermission",
        json!({"principal": "mallory", "principalType": "User", "type": "PropertyRead"}),
    );
    for thing in ["Hostile", "Nosy"] {
        ok(
            s,
            &admin,
            &format!("/Thingworx/Things/{thing}/Services/AddRunTimePermission"),
            json!({"principal": "mallory", "principalType": "User", "type": "ServiceInvoke"}),
        );
    }
    let v = ok(
        s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "mallory-key", "user": "mallory"}),
    );
    v["rows"][0]["keyId"].as_str().unwrap().to_string()
}

/// Posts to a service of the Hostile Thing.
fn call(s: &Server, key: &str, service: &str) -> (u16, Json) {
    let (st, v) = post(
        s,
        key,
        &format!("/Thingworx/Things/Hostile/Services/{service}"),
        json!({}),
    );
    (st.as_u16(), v)
}

/// The error text of a failed call, checked to answer `status`: a host refusal the code lets
/// through answers as the REST API would (404 not found or not visible, 403 denied); the code's
/// own failure is a 500 (the extension failed, not the server).
fn failure_with(s: &Server, key: &str, service: &str, status: u16) -> String {
    let (st, v) = call(s, key, service);
    assert_eq!(st, status, "{service}: {v}");
    v["error"].as_str().unwrap().to_string()
}

fn failure(s: &Server, key: &str, service: &str) -> String {
    failure_with(s, key, service, 500)
}

/// What every runtime must refuse: the code has its caller's rights and no more (DOMAIN E4).
fn the_caller_s_rights_bound_the_code(s: &Server, mallory: &str) {
    let admin = s.admin_key();
    // It runs as the caller.
    assert_eq!(call(s, mallory, "WhoAmI").1["rows"][0]["result"], "mallory");
    // Reading a Thing the caller cannot see: not found, exactly as for a Thing that does not exist.
    let e = failure_with(s, mallory, "Peek", 404);
    assert!(e.contains(r#"Thing "Secret" was not found"#), "{e}");
    // (An administrator calling the same code reads it: the code has the caller's rights, no more, no less.)
    assert_eq!(call(s, &admin, "Peek").1["rows"][0]["result"], "1234");
    // Writing a property the caller may not write: denied, nothing written.
    assert!(failure_with(s, mallory, "Scribble", 403).contains("may not"));
    // Granting itself rights, or changing an entity's definition: denied. (Creating entities is
    // out of reach by construction: the host API addresses only Things' properties and services.)
    assert!(failure_with(s, mallory, "Escalate", 403).contains("may not"));
    assert!(failure_with(s, mallory, "Reshape", 403).contains("may not"));
    let perms = ok(
        s,
        &admin,
        "/Thingworx/Things/Shared/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(
        perms["rows"].as_array().unwrap().len(),
        1,
        "no entry was added: {perms}"
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Shared/Properties/level"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.json::<Json>().unwrap()["rows"][0]["level"], 1);
    // A handler's own error reaches the caller.
    assert!(failure(s, mallory, "Trap").contains("trapped on purpose"));
    // Endless recursion through services is cut off.
    let (st, v) = call(s, &admin, "Recurse");
    assert!(st == 500 || st == 508, "{st} {v}");
    // Names are taken literally: an encoded character reaches nothing else.
    assert!(failure_with(s, &admin, "Smuggle", 404).contains("not found"));
}

/// The server keeps serving after everything above, and the extension stays loaded.
fn still_serving(s: &Server, mallory: &str) {
    assert_eq!(s.client.get(s.at("/health")).send().unwrap().status(), 200);
    assert_eq!(call(s, mallory, "WhoAmI").1["rows"][0]["result"], "mallory");
}

#[test]
fn e4_hostile_rhai_code_can_do_nothing_its_caller_could_not() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(t.path(), &["hostile", "nosy"]);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let mallory = hostile_world(&s);
    let admin = s.admin_key();
    the_caller_s_rights_bound_the_code(&s, &mallory);
    // An infinite loop is stopped at the deadline; a memory bomb at the cap.
    let start = std::time::Instant::now();
    let e = failure(&s, &mallory, "Spin");
    assert!(
        e.contains("deadline") || e.contains("Too many operations"),
        "{e}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    failure(&s, &mallory, "Bomb");
    // Many values, each within Rhai's bounds, stop at the memory cap too (64 MiB by default).
    let e = failure(&s, &mallory, "Hoard");
    assert!(e.contains("memory cap of 64 MiB"), "{e}");
    // A slash cannot add a path segment: the whole string is one (unknown) Thing's name.
    assert!(
        failure_with(&s, &admin, "SmugglePath", 404)
            .contains(r#"Thing "Shared/Properties/level/.." was not found"#)
    );
    still_serving(&s, &mallory);
    // Without a declared capability, an extension cannot read other Things, even for an administrator.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/Nosy/Services/ReadShared",
        json!({}),
    );
    assert_eq!(st, 500);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not declared in the extension's [capabilities]"),
        "{v}"
    );
}

/// E6: capabilities deny by default. `nosy` lists no host functions, so its code may call none,
/// not even `get_property` on its own Thing (which its patterns would not need to name), and
/// not even for an administrator; the refusal is audited.
#[test]
fn e6_a_manifest_that_lists_no_functions_may_call_none() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(t.path(), &["nosy"]);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let admin = s.admin_key();
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/Nosy/Services/ReadOwn",
        json!({}),
    );
    assert_eq!(st, 500, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("not declared in the extension's [capabilities]: host function get_property"),
        "{e}"
    );
    // It says what to add (issue 23).
    assert!(e.contains("add \"get_property\" there"), "{e}");
    // The property is there, and the administrator may read it: only the code may not.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Nosy/Properties/level"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.json::<Json>().unwrap()["rows"][0]["level"], 3);
    let (_, audit) = post(
        &s,
        &admin,
        "/Thingworx/Subsystems/AuditSubsystem/Services/QueryAuditHistory",
        json!({"auditCategory": "AUTHORIZATION"}),
    );
    assert!(
        audit.to_string().contains("extensionCapabilityDenied"),
        "{audit}"
    );
}

/// A plugin directory with the hostile Rust extension built as `build` (and the Rhai `nosy`
/// beside it: runtimes mix in one directory).
fn hostile_rust(root: &Path, build: Build) -> std::path::PathBuf {
    let p = plugins(root, &["nosy"]);
    install_rust(&p, "hostile", "tests/fixtures/hostile-rust", build);
    p
}

#[test]
fn e4_hostile_wasm_code_can_do_nothing_its_caller_could_not() {
    let t = tempfile::tempdir().unwrap();
    let p = hostile_rust(t.path(), Build::Wasm);
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
    );
    let mallory = hostile_world(&s);
    the_caller_s_rights_bound_the_code(&s, &mallory);
    // An infinite loop is stopped at the deadline (1 s by default).
    let start = std::time::Instant::now();
    let e = failure(&s, &mallory, "Spin");
    assert!(e.contains("deadline of 1s"), "{e}");
    // It says which limit, and where it is raised (issue 23).
    assert!(e.contains("[limits] deadline_ms"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    // A memory bomb stops at the cap (64 MiB by default).
    let e = failure(&s, &mallory, "Bomb");
    assert!(e.contains("memory cap of 64 MiB"), "{e}");
    // A panic is an error for the caller, with the panic's message.
    let e = failure(&s, &mallory, "Panic");
    assert!(e.contains("panicked on purpose"), "{e}");
    // Without the WebAssembly backtrace (it goes to the server's log; issue 23).
    assert!(
        !e.contains("wasm function") && !e.contains("backtrace"),
        "{e}"
    );
    // Unbounded recursion overflows the guest's stack, not the server's.
    let e = failure(&s, &mallory, "Stack");
    assert!(e.contains("stack"), "{e}");
    // No sleeping, no files, no environment, and the clock stands still.
    let e = failure(&s, &mallory, "Sleep");
    assert!(e.contains("cannot sleep"), "{e}");
    let e = failure(&s, &mallory, "Files");
    assert!(e.contains("no file"), "{e}");
    assert_eq!(call(&s, &mallory, "Clock").1["rows"][0]["result"], 0);
    assert_eq!(
        call(&s, &mallory, "Env").1["rows"][0]["result"],
        "0 variables"
    );
    still_serving(&s, &mallory);
    // The compiled component was cached in the data directory for the next start.
    let cached = std::fs::read_dir(t.path().join("d/cache/wasm"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
}

#[test]
fn e4_hostile_native_code_is_bounded_by_its_callers_rights_and_the_deadline() {
    let t = tempfile::tempdir().unwrap();
    let p = hostile_rust(t.path(), Build::Native);
    // Off by default: the library is refused, naming the flag.
    let listed = thinghost_tests::thinghost(&["plugin", "list", p.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(out.contains("--allow-native"), "{out}");
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--allow-native", "--plugins", p.to_str().unwrap()],
    );
    let mallory = hostile_world(&s);
    the_caller_s_rights_bound_the_code(&s, &mallory);
    // A panic does not unwind into the server: the SDK turns it into the call's error.
    let e = failure(&s, &mallory, "Panic");
    assert!(e.contains("panicked on purpose"), "{e}");
    // A library that never returns gets the caller an answer at the deadline.
    for service in ["Spin", "Sleep"] {
        let start = std::time::Instant::now();
        let e = failure(&s, &mallory, service);
        assert!(e.contains("deadline"), "{service}: {e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
    still_serving(&s, &mallory);
}

#[test]
fn e1_wasm_packages_that_do_not_match_their_manifest_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = hostile_rust(t.path(), Build::Wasm);
    // A handler the component does not define.
    let lacking = p.join("lacking");
    copy_dir(&p.join("hostile"), &lacking);
    let manifest = std::fs::read_to_string(lacking.join("plugin.toml"))
        .unwrap()
        .replace("name = \"hostile\"", "name = \"lacking\"")
        .replace("name = \"Hostile\"", "name = \"Lacking\"")
        + "\n[[things.services]]\nname = \"Missing\"\nhandler = \"nope\"\n";
    std::fs::write(lacking.join("plugin.toml"), manifest).unwrap();
    // A file that is not a component.
    let junk = p.join("junk");
    copy_dir(&p.join("hostile"), &junk);
    std::fs::write(junk.join("hostile_rust.wasm"), b"not wasm").unwrap();
    let manifest = std::fs::read_to_string(junk.join("plugin.toml"))
        .unwrap()
        .replace("name = \"hostile\"", "name = \"junk\"")
        .replace("name = \"Hostile\"", "name = \"Junk\"");
    std::fs::write(junk.join("plugin.toml"), manifest).unwrap();
    let out = thinghost_tests::thinghost(&["plugin", "check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lacking/hostile_rust.wasm does not define the handler nope() of service Missing on Things/Lacking"),
        "{text}"
    );
    assert!(
        text.contains("junk/hostile_rust.wasm is not a WebAssembly component"),
        "{text}"
    );
    // The good one beside them loads.
    assert!(
        text.contains("hostile 1.0.0: loads (wasm runtime"),
        "{text}"
    );
}
