//! The hot-reloaded plugin directory, against the real server over HTTPS: extensions added,
//! changed and removed while the server runs and clients keep calling; dependents re-linked;
//! users' Things of a removed extension kept disabled until it comes back; a restart gives the
//! same state.

use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use thinghost_tests::{
    Build, Server, copy_dir, ok, post, rust_extension_with_env, within_20s, workspace,
};

const RELOAD: &str = "/Thingworx/Subsystems/PlatformSubsystem/Services/ReloadExtension";
const PLATFORM: &str = "/Thingworx/Subsystems/PlatformSubsystem/Services";
const ES: &str = "/Thingworx/Resources/EntityServices/Services";

/// `ReloadExtension(packageName)` by hand: status and body.
fn reload(s: &Server, key: &str, name: &str) -> (u16, Json) {
    let (st, v) = post(s, key, RELOAD, json!({ "packageName": name }));
    (st.as_u16(), v)
}

/// The outcomes of a successful `ReloadExtension`: `[(package, outcome)]`.
fn outcomes(v: &Json) -> Vec<(String, String)> {
    v["rows"][0]["result"]["outcomes"]
        .as_array()
        .unwrap_or_else(|| panic!("outcomes in {v}"))
        .iter()
        .map(|o| {
            (
                o["package"].as_str().unwrap().to_string(),
                o["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn outcome(package: &str, what: &str) -> (String, String) {
    (package.to_string(), what.to_string())
}

/// A package's row in `GetExtensionPackageList` (name, version, state, reason, reloadError), or
/// None if the server lists no such package. An empty reloadError is null here.
fn details(s: &Server, key: &str, name: &str) -> Option<Json> {
    let v = ok(
        s,
        key,
        &format!("{PLATFORM}/GetExtensionPackageList"),
        json!({}),
    );
    let mut row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()?;
    if row["reloadError"] == "" {
        row["reloadError"] = Json::Null;
    }
    Some(row)
}

/// A service call on a Thing: status and body.
fn call(s: &Server, key: &str, thing: &str, service: &str, params: Json) -> (u16, Json) {
    let (st, v) = post(
        s,
        key,
        &format!("/Thingworx/Things/{thing}/Services/{service}"),
        params,
    );
    (st.as_u16(), v)
}

/// A service call that must answer 200: its result.
fn result(s: &Server, key: &str, thing: &str, service: &str) -> Json {
    let (st, v) = call(s, key, thing, service, json!({}));
    assert_eq!(st, 200, "{thing}.{service}: {v}");
    v["rows"][0]["result"].clone()
}

fn get(s: &Server, key: &str, path: &str) -> (u16, Json) {
    let r = s
        .client
        .get(s.at(path))
        .header("appKey", key)
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Json::Null))
}

/// Writes a Rhai package `name` into `dir`: the code first, then the manifest, as an editor
/// would (the watcher waits for the folder to be quiet).
fn rhai_package(dir: &Path, name: &str, version: &str, code: &str, manifest: &str) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("main.rhai"), code).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!(
            "[extension]\nname = \"{name}\"\nversion = \"{version}\"\nhost = \">=0.1\"\nruntime = \"rhai\"\nentry = \"main.rhai\"\n\n{manifest}"
        ),
    )
    .unwrap();
}

/// A server with `--dev` (HTTPS) on the plugin directory `p`, with `extra` options.
fn serve(t: &Path, p: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--dev", "--plugins", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&t.join("d"), &args)
}

// ---- hello, by hand -------------------------------------------------------------------------

fn hello_plugins(t: &Path) -> PathBuf {
    let p = t.join("plugins");
    copy_dir(&workspace().join("examples/hello"), &p.join("hello"));
    p
}

/// hello's `Greet("Ann")`; any answer but 200 fails the test.
fn greet(s: &Server, key: &str) -> Json {
    let (st, v) = call(s, key, "HelloThing", "Greet", json!({"who": "Ann"}));
    assert_eq!(st, 200, "{v}");
    v["rows"][0]["result"].clone()
}

/// Rewrites hello's folder: its code, and its manifest at `version` with `more` appended.
fn rewrite_hello(p: &Path, code: &str, version: &str, more: &str) {
    let manifest = std::fs::read_to_string(workspace().join("examples/hello/plugin.toml")).unwrap();
    std::fs::write(p.join("hello/main.rhai"), code).unwrap();
    std::fs::write(
        p.join("hello/plugin.toml"),
        manifest.replace("version = \"1.0.0\"", &format!("version = \"{version}\"")) + more,
    )
    .unwrap();
}

const HI: &str = "fn greet(who) { \"Hi, \" + who + \"!\" }\n";
const BROKEN: &str = "fn greet(who) { \"Hi, \" + \n";

/// `ReloadExtension` by hand: a folder that did not change is no change; new code replaces the
/// old without a restart; a broken version is refused, named in the package list, and the
/// loaded version keeps serving; a version that changes the model (a new property) replaces its
/// contributions in the same swap; a lower version is refused unless forced; only
/// administrators may reload.
#[test]
fn reload_extension_by_hand_replaces_code_and_model_and_a_broken_version_leaves_the_old_one_serving()
 {
    let t = tempfile::tempdir().unwrap();
    let p = hello_plugins(t.path());
    // By hand only: the watcher would race the test to each reload.
    let s = serve(t.path(), &p, &["--no-watch"]);
    let admin = s.admin_key();
    assert_eq!(greet(&s, &admin), "Hello, Ann!");
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(st, 200, "{v}");
    assert_eq!(outcomes(&v), [outcome("hello", "unchanged")]);

    // New code, a new patch version: every later call runs it.
    rewrite_hello(&p, HI, "1.0.1", "");
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rows"][0]["result"]["outcomes"][0],
        json!({"package": "hello", "outcome": "replaced", "from": "1.0.0", "to": "1.0.1"})
    );
    assert_eq!(greet(&s, &admin), "Hi, Ann!");

    // Broken code: refused with the reason; 1.0.1 keeps serving, and the list says why.
    std::fs::write(p.join("hello/main.rhai"), BROKEN).unwrap();
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("hello"), "{v}");
    assert_eq!(greet(&s, &admin), "Hi, Ann!");
    // The same from a shell: `thinghost plugin reload` says why, exit status 1.
    let plugin_reload = |name: &str| {
        thinghost_tests::thinghost(&[
            "plugin",
            "reload",
            name,
            "--url",
            &s.at(""),
            "--app-key-file",
            s.dir.join("admin.appkey").to_str().unwrap(),
            "--ca-cert",
            s.dir.join("dev-cert.pem").to_str().unwrap(),
        ])
    };
    let out = plugin_reload("hello");
    let (stdout, stderr) = thinghost_tests::text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("refused: ") && stderr.contains("hello"),
        "{stderr}"
    );
    let d = details(&s, &admin, "hello").unwrap();
    assert_eq!(d["version"], "1.0.1", "{d}");
    assert!(d["reloadError"].is_string(), "{d}");
    // Put back as loaded: unchanged, and the recorded failure is gone.
    std::fs::write(p.join("hello/main.rhai"), HI).unwrap();
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(
        (st, outcomes(&v)),
        (200, vec![outcome("hello", "unchanged")])
    );
    assert!(details(&s, &admin, "hello").unwrap()["reloadError"].is_null());

    // Fixed again, by the command: replaced, exit status 0.
    std::fs::write(
        p.join("hello/main.rhai"),
        "fn greet(who) { \"Hi there, \" + who + \"!\" }\n",
    )
    .unwrap();
    let out = plugin_reload("hello");
    let (stdout, stderr) = thinghost_tests::text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "hello: 1.0.1 -> 1.0.1");
    assert_eq!(greet(&s, &admin), "Hi there, Ann!");

    // A new property and code that reads it: model and code change in one swap.
    rewrite_hello(
        &p,
        "fn greet(who) { get_property(\"HelloThing\", \"salute\") + \", \" + who + \"!\" }\n",
        "1.1.0",
        "\n[[things.properties]]\nname = \"salute\"\ntype = \"STRING\"\ndefault = \"Hey\"\n",
    );
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(st, 200, "{v}");
    assert_eq!(greet(&s, &admin), "Hey, Ann!");
    let (st, v) = get(&s, &admin, "/Thingworx/Things/HelloThing/Properties/salute");
    assert_eq!((st, &v["rows"][0]["salute"]), (200, &json!("Hey")), "{v}");

    // Back to 1.0.1: a lower version is refused unless forced; forced, the property leaves.
    rewrite_hello(&p, HI, "1.0.1", "");
    let (st, v) = reload(&s, &admin, "hello");
    assert_eq!(st, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("lower") && e.contains("force"), "{e}");
    assert_eq!(greet(&s, &admin), "Hey, Ann!");
    let (st, v) = post(
        &s,
        &admin,
        RELOAD,
        json!({"packageName": "hello", "force": true}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["result"]["outcomes"][0]["to"], "1.0.1", "{v}");
    assert_eq!(greet(&s, &admin), "Hi, Ann!");
    let (st, _) = get(&s, &admin, "/Thingworx/Things/HelloThing/Properties/salute");
    assert_eq!(st, 404);

    // A package that does not exist; a caller who is not an administrator.
    let (st, v) = reload(&s, &admin, "nope");
    assert_eq!(st, 404, "{v}");
    // A path is no package name: nothing outside the plugin directory loads.
    copy_dir(
        &workspace().join("examples/hello"),
        &t.path().join("outside"),
    );
    for name in ["../outside", "/tmp", ".."] {
        let (st, v) = reload(&s, &admin, name);
        assert_eq!(st, 404, "{name}: {v}");
    }
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no extension package"),
        "{v}"
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "eve", "password": "a long password"}),
    );
    let key = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "eve-key", "user": "eve"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = reload(&s, &key, "hello");
    assert!(matches!(st, 403 | 404), "{st}");
}

// ---- three replacements under load, Rhai and Wasm -----------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Rhai,
    Wasm,
}

/// The `versioned` package at version `n`.0.0: `Answer()` says `answer from vN`. Version 3 is
/// broken (code that does not compile).
struct Versioned {
    runtime: Runtime,
    /// Built components, per version (Wasm).
    builds: PathBuf,
}

impl Versioned {
    fn new(runtime: Runtime, root: &Path) -> Versioned {
        let builds = root.join("builds");
        std::fs::create_dir_all(&builds).unwrap();
        if runtime == Runtime::Wasm {
            // Built before the server starts, so that the swaps are what the test times.
            for n in [1, 2, 4] {
                rust_extension_with_env(
                    "tests/fixtures/versioned-rust",
                    Build::Wasm,
                    &[("VERSIONED_ANSWER", &format!("answer from v{n}"))],
                    &builds.join(format!("v{n}.wasm")),
                );
            }
        }
        Versioned { runtime, builds }
    }

    /// Installs version `n` into `dir/versioned`: the code first, then the manifest.
    fn install(&self, dir: &Path, n: u32) {
        let folder = dir.join("versioned");
        std::fs::create_dir_all(&folder).unwrap();
        let (runtime, entry) = match self.runtime {
            Runtime::Rhai => {
                let code = if n == 3 {
                    "fn answer() { \"answer from v3\" +\n".to_string()
                } else {
                    format!("fn answer() {{ \"answer from v{n}\" }}\n")
                };
                std::fs::write(folder.join("main.rhai"), code).unwrap();
                ("rhai", "main.rhai")
            }
            Runtime::Wasm => {
                let file = folder.join("versioned_rust.wasm");
                if n == 3 {
                    std::fs::write(&file, b"\0asm this is not a component").unwrap();
                } else {
                    // Copied beside, then renamed: the folder never holds half a file.
                    let part = dir.join(".versioned_rust.wasm.part");
                    std::fs::copy(self.builds.join(format!("v{n}.wasm")), &part).unwrap();
                    std::fs::rename(&part, &file).unwrap();
                }
                ("wasm", "versioned_rust.wasm")
            }
        };
        std::fs::write(
            folder.join("plugin.toml"),
            format!(
                "[extension]\nname = \"versioned\"\nversion = \"{n}.0.0\"\nhost = \">=0.1\"\nruntime = \"{runtime}\"\nentry = \"{entry}\"\n\n\
                 [[things]]\nname = \"VersionedThing\"\ntemplate = \"GenericThing\"\n\n\
                 [[things.services]]\nname = \"Answer\"\nhandler = \"answer\"\nresult = \"STRING\"\n"
            ),
        )
        .unwrap();
    }
}

/// A client loop keeps calling `Answer` over HTTPS while the watched folder goes v1 -> v2 ->
/// broken v3 -> v4. Every response is 200; the answers go v1, then v2, then v4, never back and
/// never v3; after v2 lands no v1 answer appears; v3 leaves v2 serving; v4 serves at the end.
fn replaced_three_times_under_load(runtime: Runtime) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    let versioned = Versioned::new(runtime, t.path());
    versioned.install(&p, 1);
    let s = serve(t.path(), &p, &["--reload-quiet-ms", "100"]);
    let admin = s.admin_key();
    let answer = || result(&s, &admin, "VersionedThing", "Answer");
    let version = || details(&s, &admin, "versioned").unwrap()["version"].clone();
    assert_eq!(answer(), "answer from v1");
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut seen: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (st, v) = call(&s, &admin, "VersionedThing", "Answer", json!({}));
                assert_eq!(st, 200, "a call failed during the reloads: {v}");
                seen.push(v["rows"][0]["result"].as_str().unwrap().to_string());
            }
            seen
        });
        versioned.install(&p, 2);
        within_20s("v2 landing", || (version() == "2.0.0").then_some(()));
        assert_eq!(answer(), "answer from v2");
        versioned.install(&p, 3);
        let d = within_20s("v3 being refused", || {
            details(&s, &admin, "versioned").filter(|d| d["reloadError"].is_string())
        });
        assert_eq!(d["version"], "2.0.0", "{d}");
        assert_eq!(answer(), "answer from v2");
        versioned.install(&p, 4);
        within_20s("v4 landing", || (version() == "4.0.0").then_some(()));
        assert_eq!(answer(), "answer from v4");
        assert!(details(&s, &admin, "versioned").unwrap()["reloadError"].is_null());
        stop.store(true, Ordering::Relaxed);
        client
            .join()
            .expect("the client loop saw every call succeed")
    });
    let rank = |a: &str| match a {
        "answer from v1" => 1,
        "answer from v2" => 2,
        "answer from v4" => 4,
        other => panic!("an answer from no loaded version: {other}"),
    };
    let ranks: Vec<u32> = seen.iter().map(|a| rank(a)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "the answers went back to an older version: {seen:?}"
    );
    assert!(ranks.contains(&2), "v2 never answered the loop: {seen:?}");
    assert_eq!(ranks.last(), Some(&4));
}

#[test]
fn a_rhai_extension_replaced_three_times_under_load_never_fails_a_call() {
    replaced_three_times_under_load(Runtime::Rhai);
}

#[test]
fn a_wasm_extension_replaced_three_times_under_load_never_fails_a_call() {
    replaced_three_times_under_load(Runtime::Wasm);
}

// ---- a dependency pair ---------------------------------------------------------------------

const B_THING: &str = "[[things]]\nname = \"BThing\"\ntemplate = \"GenericThing\"\n\n";
const B_BASE: &str =
    "[[things.services]]\nname = \"Base\"\nhandler = \"base\"\nresult = \"STRING\"\n";

fn b_package(p: &Path, version: &str, answer: &str) {
    rhai_package(
        p,
        "b",
        version,
        &format!("fn base() {{ \"{answer}\" }}\nfn other() {{ \"other\" }}\n"),
        &format!("{B_THING}{B_BASE}"),
    );
}

fn a_package(p: &Path) {
    rhai_package(
        p,
        "a",
        "1.0.0",
        "fn combined() { \"a+\" + invoke_service(\"BThing\", \"Base\", #{}) }\n",
        "[requires]\nb = \"^1\"\n\n[capabilities]\nfunctions = [\"invoke_service\"]\ninvoke = [\"Things/BThing/Services/Base\"]\n\n\
         [[things]]\nname = \"AThing\"\ntemplate = \"GenericThing\"\n\n\
         [[things.services]]\nname = \"Combined\"\nhandler = \"combined\"\nresult = \"STRING\"\n",
    );
}

/// A requires B. Changing B re-links A in the same swap (A's next call uses the new B); a B that
/// breaks A (a major version A does not accept, or a service A uses gone) is refused naming A,
/// and the loaded B keeps serving; B cannot leave while A is loaded; removed in order, both
/// leave; A put back alone waits for B, and loads next when B comes back.
#[test]
fn a_dependency_pair_changes_together_and_the_needed_one_cannot_leave() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    b_package(&p, "1.0.0", "b1");
    a_package(&p);
    let s = serve(t.path(), &p, &["--no-watch"]);
    let admin = s.admin_key();
    let combined = || result(&s, &admin, "AThing", "Combined");
    assert_eq!(combined(), "a+b1");

    b_package(&p, "1.1.0", "b2");
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!(st, 200, "{v}");
    assert_eq!(outcomes(&v), [outcome("b", "replaced")]);
    assert_eq!(combined(), "a+b2");

    // A major version that A does not accept.
    b_package(&p, "2.0.0", "b3");
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!(st, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("extension a needs b ^1"), "{e}");
    assert_eq!(combined(), "a+b2");

    // A version without the service A calls.
    rhai_package(
        &p,
        "b",
        "1.2.0",
        "fn other() { \"other\" }\n",
        &format!(
            "{B_THING}[[things.services]]\nname = \"Other\"\nhandler = \"other\"\nresult = \"STRING\"\n"
        ),
    );
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!(st, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("extension a uses Things/BThing/Services/Base"),
        "{e}"
    );
    assert_eq!(combined(), "a+b2");
    assert_eq!(
        details(&s, &admin, "b").unwrap()["version"],
        "1.1.0",
        "the loaded B keeps serving"
    );

    // B cannot leave while A is loaded.
    b_package(&p, "1.1.0", "b2");
    std::fs::rename(p.join("b"), t.path().join("b-away")).unwrap();
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!(st, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("a needs it") && e.contains("remove it first"),
        "{e}"
    );
    assert_eq!(combined(), "a+b2");
    assert!(details(&s, &admin, "b").unwrap()["reloadError"].is_string());

    // A leaves, then B.
    std::fs::rename(p.join("a"), t.path().join("a-away")).unwrap();
    let (st, v) = reload(&s, &admin, "a");
    assert_eq!((st, outcomes(&v)), (200, vec![outcome("a", "removed")]));
    assert_eq!(get(&s, &admin, "/Thingworx/Things/AThing").0, 404);
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!((st, outcomes(&v)), (200, vec![outcome("b", "removed")]));
    assert_eq!(get(&s, &admin, "/Thingworx/Things/BThing").0, 404);
    assert!(details(&s, &admin, "a").is_none() && details(&s, &admin, "b").is_none());

    // A alone waits for B; B's return loads both.
    std::fs::rename(t.path().join("a-away"), p.join("a")).unwrap();
    let (st, v) = reload(&s, &admin, "a");
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("install b first"),
        "{v}"
    );
    assert_eq!(details(&s, &admin, "a").unwrap()["state"], "waiting");
    std::fs::rename(t.path().join("b-away"), p.join("b")).unwrap();
    let (st, v) = reload(&s, &admin, "b");
    assert_eq!(st, 200, "{v}");
    assert_eq!(outcomes(&v), [outcome("b", "added"), outcome("a", "added")]);
    assert_eq!(combined(), "a+b2");
}

// ---- removal keeps users' Things, disabled ----------------------------------------------------

fn tanks_package(p: &Path) {
    rhai_package(
        p,
        "tanks",
        "1.0.0",
        "fn level() { get_property(me(), \"level\") }\n",
        "[capabilities]\nfunctions = [\"get_property\", \"me\"]\n\n\
         [[thing_templates]]\nname = \"Tank\"\nbase = \"GenericThing\"\n\n\
         [[thing_templates.properties]]\nname = \"level\"\ntype = \"NUMBER\"\ndefault = 0\n\n\
         [[thing_templates.services]]\nname = \"Level\"\nhandler = \"level\"\nresult = \"NUMBER\"\n",
    );
}

/// The package list's (name, version, state) and every Thing with its template, enabled state,
/// values and permissions: what a restart must give back.
fn state(s: &Server, key: &str) -> (Vec<(Json, Json, Json)>, Vec<Json>) {
    let v = ok(
        s,
        key,
        &format!("{PLATFORM}/GetExtensionPackageList"),
        json!({}),
    );
    let packages = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["version"].clone(), p["state"].clone()))
        .collect();
    let (_, list) = get(s, key, "/Thingworx/Things");
    let things = list["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap();
            let (_, d) = get(s, key, &format!("/Thingworx/Things/{name}"));
            let (_, perms) = get(
                s,
                key,
                &format!("/Thingworx/Things/{name}/Services/GetRunTimePermissions"),
            );
            json!({"thing": d, "permissions": perms})
        })
        .collect();
    (packages, things)
}

/// A removed extension's contributions leave, but a Thing a user made from its template stays:
/// disabled (no service runs, nothing is written), with its own values and permissions, until the
/// extension comes back, which gives it back its template and its values. A restart with the
/// same directory gives the state the running server had, at each step.
#[test]
fn a_removed_extension_leaves_and_users_things_stay_disabled_until_it_comes_back() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    tanks_package(&p);
    copy_dir(&workspace().join("examples/hello"), &p.join("hello"));
    let mut s = serve(t.path(), &p, &["--reload-quiet-ms", "100"]);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "MyTank", "thingTemplateName": "Tank"}),
    );
    let r = s
        .client
        .put(s.at("/Thingworx/Things/MyTank/Properties/level"))
        .header("appKey", &admin)
        .json(&json!({"level": 42}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    ok(
        &s,
        &admin,
        "/Thingworx/Things/MyTank/Services/AddRunTimePermission",
        json!({"principal": "Users", "principalType": "Group", "type": "PropertyRead", "resource": "*", "allow": true}),
    );
    assert_eq!(result(&s, &admin, "MyTank", "Level"), 42.0);
    let before = state(&s, &admin);

    // The folder leaves: the template goes, the Thing stays, disabled.
    std::fs::rename(p.join("tanks"), t.path().join("tanks-away")).unwrap();
    within_20s("tanks leaving", || {
        details(&s, &admin, "tanks").is_none().then_some(())
    });
    assert_eq!(get(&s, &admin, "/Thingworx/ThingTemplates/Tank").0, 404);
    let (st, d) = get(&s, &admin, "/Thingworx/Things/MyTank");
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["enabled"], false, "{d}");
    assert_eq!(d["thingTemplate"], "GenericThing", "{d}");
    assert_eq!(d["parked"]["extension"], "tanks", "{d}");
    assert_eq!(d["parked"]["thingTemplate"], "Tank", "{d}");
    assert_eq!(d["parked"]["values"]["level"], 42.0, "{d}");
    let (st, v) = call(&s, &admin, "MyTank", "Level", json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("disabled"), "{v}");
    let (st, v) = get(&s, &admin, "/Thingworx/Things/MyTank/Properties/level");
    assert_eq!(st, 409, "{v}");
    let removed = state(&s, &admin);

    // A restart with the same directory: the same state.
    drop(s);
    s = serve(t.path(), &p, &["--reload-quiet-ms", "100"]);
    assert_eq!(state(&s, &admin), removed);

    // The folder comes back: the Thing has its template, value and permissions again.
    std::fs::rename(t.path().join("tanks-away"), p.join("tanks")).unwrap();
    within_20s("tanks coming back", || {
        details(&s, &admin, "tanks")
            .filter(|d| d["state"] == "loaded")
            .map(|_| ())
    });
    assert_eq!(result(&s, &admin, "MyTank", "Level"), 42.0);
    let back = state(&s, &admin);
    assert_eq!(back, before);

    // A change of hello's model while running, then a restart: the same state.
    rewrite_hello(
        &p,
        HI,
        "1.1.0",
        "\n[[things.properties]]\nname = \"salute\"\ntype = \"STRING\"\ndefault = \"Hey\"\n",
    );
    within_20s("hello 1.1.0 landing", || {
        (details(&s, &admin, "hello").unwrap()["version"] == "1.1.0").then_some(())
    });
    let changed = state(&s, &admin);
    drop(s);
    let s = serve(t.path(), &p, &["--reload-quiet-ms", "100"]);
    assert_eq!(state(&s, &admin), changed);
}

/// What the running server refused stays refused after a restart with the same directory: the
/// server starts from the packages it had accepted (kept in the data directory) and applies the
/// plugin directory to them by the same rules. A broken version in a folder leaves the accepted
/// one serving, a lower version is not taken without force, a needed extension whose folder left
/// stays; each shows its reason again.
#[test]
fn a_restart_keeps_the_accepted_versions_whatever_the_folders_hold_that_was_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = hello_plugins(t.path());
    b_package(&p, "1.0.0", "b1");
    a_package(&p);
    let mut s = serve(t.path(), &p, &["--no-watch"]);
    let admin = s.admin_key();
    assert_eq!(greet(&s, &admin), "Hello, Ann!");

    // Broken code in hello's folder.
    rewrite_hello(&p, BROKEN, "1.1.0", "");
    assert_eq!(reload(&s, &admin, "hello").0, 409);
    // A lower version of a, not forced.
    let a_manifest = std::fs::read_to_string(p.join("a/plugin.toml")).unwrap();
    std::fs::write(
        p.join("a/plugin.toml"),
        a_manifest.replace("version = \"1.0.0\"", "version = \"0.9.0\""),
    )
    .unwrap();
    assert_eq!(reload(&s, &admin, "a").0, 409);
    // b's folder leaves while a needs it.
    std::fs::rename(p.join("b"), t.path().join("b-away")).unwrap();
    assert_eq!(reload(&s, &admin, "b").0, 409);

    let errors = |s: &Server| {
        ["hello", "a", "b"].map(|n| {
            let d = details(s, &admin, n).unwrap();
            (
                d["version"].clone(),
                d["state"].clone(),
                d["reloadError"].clone(),
            )
        })
    };
    let running = (state(&s, &admin), errors(&s));
    for (version, st, error) in &running.1 {
        assert_eq!(st, "loaded");
        assert!(error.is_string(), "{version}: a reason is shown");
    }
    drop(s);
    s = serve(t.path(), &p, &["--no-watch"]);
    assert_eq!((state(&s, &admin), errors(&s)), running);
    assert_eq!(greet(&s, &admin), "Hello, Ann!");
    assert_eq!(result(&s, &admin, "AThing", "Combined"), "a+b1");

    // Fixed while stopped: the next start takes the fixed version, by the same rules.
    rewrite_hello(&p, HI, "1.1.0", "");
    drop(s);
    let s = serve(t.path(), &p, &["--no-watch"]);
    assert_eq!(greet(&s, &admin), "Hi, Ann!");
    assert_eq!(
        details(&s, &admin, "hello").unwrap()["reloadError"],
        Json::Null
    );
}

// ---- an extension that another overrides (B2) -----------------------------------------------

const BASE: &str = r#"[extension]
name = "boilers"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[thing_shapes]]
name = "Ventable"

[[thing_shapes.services]]
name = "Vent"
handler = "vent"
result = "STRING"
allow_override = true
params = [PARAMS]
"#;

const OVERRIDING: &str = r#"[extension]
name = "vents"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[requires]
boilers = "^1"

[[thing_templates]]
name = "Boiler"
shapes = ["Ventable"]

[[thing_templates.service_overrides]]
name = "Vent"
handler = "gently"
"#;

/// B2, E3: a new version of an extension whose service another extension overrides must keep
/// the override's handler valid: one that changes the parameters is refused, naming the
/// overriding extension, and both keep serving.
#[test]
fn b2_a_new_version_of_an_overridden_extension_keeps_the_overrides_handlers_valid() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    let one = r#"{ name = "amount", type = "STRING", required = true }"#;
    let write_base = |params: &str, code: &str| {
        std::fs::create_dir_all(p.join("boilers")).unwrap();
        std::fs::write(
            p.join("boilers/plugin.toml"),
            BASE.replace("PARAMS", params),
        )
        .unwrap();
        std::fs::write(p.join("boilers/main.rhai"), code).unwrap();
    };
    write_base(one, "fn vent(amount) { `base ${amount}` }");
    std::fs::create_dir_all(p.join("vents")).unwrap();
    std::fs::write(p.join("vents/plugin.toml"), OVERRIDING).unwrap();
    std::fs::write(
        p.join("vents/main.rhai"),
        "fn gently(amount) { `gently ${amount}` }",
    )
    .unwrap();
    let s = serve(t.path(), &p, &["--no-watch"]);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "B1", "thingTemplateName": "Boiler"}),
    );
    let vent = |s: &Server| {
        let (st, v) = call(s, &admin, "B1", "Vent", json!({"amount": "2"}));
        assert_eq!(st, 200, "{v}");
        v["rows"][0]["result"].clone()
    };
    assert_eq!(vent(&s), "gently 2");
    // Vent takes two parameters now: vents' handler takes one.
    write_base(
        &format!(r#"{one}, {{ name = "speed", type = "STRING" }}"#),
        "fn vent(amount, speed) { `base ${amount}` }",
    );
    let (st, v) = reload(&s, &admin, "boilers");
    assert_eq!(st, 409, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(
            "the handler gently, which takes 1 parameters; it must take the definition's 2"
        ) && why.contains("extension vents overrides it"),
        "{v}"
    );
    assert_eq!(vent(&s), "gently 2");
    // A version that keeps the parameters replaces the old one; the override still runs.
    write_base(one, "fn vent(amount) { `base two ${amount}` }");
    let (st, v) = reload(&s, &admin, "boilers");
    assert_eq!(st, 200, "{v}");
    assert_eq!(vent(&s), "gently 2");
}

/// Issue 23 (quiet failures): a refused folder is tried again only when its content changes:
/// one log line and one audit entry per distinct failure, however long it stays broken and
/// however often its files are touched (reading a folder is no change of it). Fixed, it loads.
#[test]
fn a_refused_folder_is_tried_again_only_when_its_content_changes() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    let broken = "[[thing_templates]]\nname = \"Boiler\"\nbase = \"NoSuchTemplate\"\n";
    rhai_package(&p, "broken", "1.0.0", "", broken);
    let log = t.path().join("server.log");
    let s = thinghost_tests::Server::start_with(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap()],
        &thinghost_tests::Setup {
            log: Some(log.clone()),
            ..Default::default()
        },
    );
    let refusals = || {
        (
            std::fs::read_to_string(&log)
                .unwrap()
                .matches("extension change refused")
                .count(),
            thinghost_tests::audited(&s, "extensionLoadRefused").len(),
        )
    };
    // Broken from the start: refused once, and left alone while it stays as it is.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(refusals(), (1, 1));
    // Touched, same content: not tried again.
    let code = p.join("broken/main.rhai");
    std::fs::write(&code, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(refusals(), (1, 1));
    // Another content, still broken: tried once more.
    std::fs::write(&code, "// still broken\n").unwrap();
    thinghost_tests::within_20s("the new content tried", || {
        (refusals() == (2, 2)).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(refusals(), (2, 2));
    // Fixed: it loads.
    rhai_package(
        &p,
        "broken",
        "1.0.1",
        "",
        "[[thing_templates]]\nname = \"Boiler\"\nbase = \"GenericThing\"\n",
    );
    thinghost_tests::within_20s("the fixed package loaded", || {
        (!thinghost_tests::audited(&s, "extensionLoaded").is_empty()).then_some(())
    });
    assert_eq!(refusals(), (2, 2));
}

/// Issue 23 (quiet failures): every log line of extension code names its extension: a Rhai
/// handler's `print` and `debug` as its host `log` does.
#[test]
fn a_rhai_print_line_names_its_extension() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    rhai_package(
        &p,
        "chatty",
        "1.0.0",
        "fn say() { print(\"hello from chatty\"); debug(\"debugging chatty\"); 1 }",
        "[[things]]\nname = \"Chatty1\"\ntemplate = \"GenericThing\"\n\n[[things.services]]\nname = \"Say\"\nhandler = \"say\"\nresult = \"NUMBER\"\n",
    );
    let log = t.path().join("server.log");
    let s = thinghost_tests::Server::start_with(
        &t.path().join("d"),
        &["--dev", "--plugins", p.to_str().unwrap(), "--no-watch"],
        &thinghost_tests::Setup {
            log: Some(log.clone()),
            ..Default::default()
        },
    );
    let admin = s.admin_key();
    let (st, v) = call(&s, &admin, "Chatty1", "Say", json!({}));
    assert_eq!(st, 200, "{v}");
    let lines = thinghost_tests::within_20s("the prints logged", || {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("chatty\"") && !l.contains("path="))
            .filter(|l| l.contains("hello from chatty") || l.contains("debugging chatty"))
            .map(str::to_string)
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    for l in &lines {
        assert!(
            l.contains("extension=\"chatty\"") || l.contains("extension=chatty"),
            "{l}"
        );
    }
    // The same lines, per extension, from the running server: `plugin logs` (administrators).
    let out = thinghost_tests::thinghost(&[
        "plugin",
        "logs",
        "chatty",
        "--url",
        &s.url,
        "--app-key-file",
        s.dir.join("admin.appkey").to_str().unwrap(),
        "--ca-cert",
        s.dir.join("dev-cert.pem").to_str().unwrap(),
    ]);
    let (stdout, stderr) = thinghost_tests::text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("hello from chatty") && stdout.contains("debugging chatty"),
        "{stdout}"
    );
    // An unknown package is a 400.
    let (st, _) = thinghost_tests::post(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionLog",
        json!({"packageName": "nothing-here"}),
    );
    assert_eq!(st.as_u16(), 400);
}

/// Issue 23: `thinghost plugin new NAME` writes a working package: `plugin check` passes it,
/// and a server serves it (its service reads and writes its own Thing within its
/// least-privilege capabilities). An existing folder or a bad name is refused.
#[test]
fn plugin_new_writes_a_package_that_checks_and_serves() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    std::fs::create_dir_all(&p).unwrap();
    let o =
        thinghost_tests::thinghost(&["plugin", "new", "water-tank", "--dir", p.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", thinghost_tests::text(&o));
    for f in ["plugin.toml", "main.rhai", "README.md"] {
        assert!(p.join("water-tank").join(f).is_file(), "{f}");
    }
    let o = thinghost_tests::thinghost(&["plugin", "check", p.to_str().unwrap()]);
    let out = thinghost_tests::text(&o).0;
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("water-tank 0.1.0: loads"), "{out}");
    // Again: refused, nothing overwritten; a name that is not one: refused.
    let o =
        thinghost_tests::thinghost(&["plugin", "new", "water-tank", "--dir", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{:?}", thinghost_tests::text(&o));
    assert!(thinghost_tests::text(&o).1.contains("exists already"));
    let o =
        thinghost_tests::thinghost(&["plugin", "new", "Water Tank", "--dir", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let s = serve(t.path(), &p, &["--no-watch"]);
    let admin = s.admin_key();
    let r = s
        .client
        .put(s.at("/Thingworx/Things/WaterTank1/Properties/pressure"))
        .header("appKey", &admin)
        .json(&json!({"pressure": 5}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, v) = call(&s, &admin, "WaterTank1", "Vent", json!({"amount": 2}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["result"], 3.0);
    let (st, v) = call(&s, &admin, "WaterTank1", "Vent", json!({"amount": 10}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["result"], 0.0);
    let (st, _) = call(&s, &admin, "WaterTank1", "Vent", json!({"amount": -1}));
    assert_eq!(st, 400);
}
