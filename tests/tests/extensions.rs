//! Extensions in the running server: the hello example over REST, refused packages, and hostile
//! extension code that must do nothing its caller could not (DOMAIN E4).

use serde_json::{Value as Json, json};
use std::path::Path;
use thinghost_tests::{Server, ok, post, workspace};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

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
    let r = state("broken-handler");
    assert_eq!(r["state"], "refused");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("does not define the handler run_it(x)"),
        "{r}"
    );
    let r = state("needs-missing");
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
    let call = |key: &str, service: &str| {
        post(
            &s,
            key,
            &format!("/Thingworx/Things/Hostile/Services/{service}"),
            json!({}),
        )
    };
    // It runs as the caller.
    assert_eq!(call(&mallory, "WhoAmI").1["rows"][0]["result"], "mallory");
    // Reading a Thing the caller cannot see: not found, exactly as for a Thing that does not exist.
    let (st, v) = call(&mallory, "Peek");
    assert_eq!(st, 500);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(r#"not found: Thing "Secret" was not found"#),
        "{v}"
    );
    // (An administrator calling the same code reads it: the code has the caller's rights, no more, no less.)
    assert_eq!(call(&admin, "Peek").1["rows"][0]["result"], "1234");
    // Writing a property the caller may not write: denied, nothing written.
    let (st, v) = call(&mallory, "Scribble");
    assert_eq!(st, 500);
    assert!(v["error"].as_str().unwrap().contains("denied"), "{v}");
    // Granting itself rights: denied.
    let (st, v) = call(&mallory, "Escalate");
    assert_eq!(st, 500);
    assert!(v["error"].as_str().unwrap().contains("denied"), "{v}");
    let perms = ok(
        &s,
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
    // An infinite loop is stopped at the deadline; a memory bomb at the cap; a trap is an error.
    let start = std::time::Instant::now();
    let (st, v) = call(&mallory, "Spin");
    assert_eq!(st, 500);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("deadline") || e.contains("Too many operations"),
        "{v}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let (st, v) = call(&mallory, "Bomb");
    assert_eq!(st, 500, "{v}");
    let (st, v) = call(&mallory, "Trap");
    assert_eq!(st, 500);
    assert!(
        v["error"].as_str().unwrap().contains("trapped on purpose"),
        "{v}"
    );
    // Endless recursion through services is cut off.
    let (st, v) = call(&admin, "Recurse");
    assert!(st == 500 || st == 508, "{st} {v}");
    // Names are taken literally: encoded characters or slashes reach nothing else.
    for service in ["Smuggle", "SmugglePath"] {
        let (st, v) = call(&admin, service);
        assert_eq!(st, 500, "{service}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not found"),
            "{service}: {v}"
        );
    }
    // The server keeps serving, and the extension stays loaded.
    assert_eq!(s.client.get(s.at("/health")).send().unwrap().status(), 200);
    assert_eq!(call(&mallory, "WhoAmI").1["rows"][0]["result"], "mallory");
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
