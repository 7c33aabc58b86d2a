//! The `thinghost` command line, end to end: the real binary on a real data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use thinghost_tests::{import, text, thinghost, workspace};

fn fixture() -> String {
    workspace()
        .join("tests/fixtures/plant.json")
        .display()
        .to_string()
}

fn init(dir: &Path) {
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
}

fn init_with_plant() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    init(&dir);
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "import",
        &fixture(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    t
}

fn check(dir: &Path, user: &str, action: &str, target: &str) -> (i32, String, String) {
    let o = thinghost(&[
        "check",
        "--data",
        dir.to_str().unwrap(),
        "--user",
        user,
        "--action",
        action,
        "--target",
        target,
    ]);
    let (out, err) = text(&o);
    (o.status.code().unwrap(), out, err)
}

fn export(dir: &Path) -> String {
    let o = thinghost(&["model", "--data", dir.to_str().unwrap(), "export"]);
    assert!(o.status.success(), "{:?}", text(&o));
    text(&o).0
}

#[test]
fn init_then_check_for_the_administrator_a_new_user_and_a_nested_group() {
    let t = init_with_plant();
    let dir = t.path().join("data");
    let (code, out, _) = check(
        &dir,
        "Administrator",
        "ServiceInvoke",
        "Things/Pump1/Services/Reset",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ALLOWED") && out.contains("Administrators"),
        "{out}"
    );

    let (code, out, _) = check(
        &dir,
        "nobody",
        "ServiceInvoke",
        "Things/Pump1/Services/Reset",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("DENIED") && out.contains("default deny"),
        "{out}"
    );

    let (code, out, _) = check(&dir, "op1", "ServiceInvoke", "Things/Pump1/Services/Reset");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("group Operators") && out.contains("override for Reset"),
        "{out}"
    );
    // The override covers Reset only.
    let (code, _, _) = check(&dir, "op1", "ServiceInvoke", "Things/Pump1/Services/Other");
    assert_eq!(code, 1);
    // Creating needs Create on the collection.
    let (code, out, _) = check(&dir, "op1", "Create", "Things");
    assert_eq!(code, 1, "{out}");
    // JSON for scripts.
    let o = thinghost(&[
        "check",
        "--data",
        dir.to_str().unwrap(),
        "--user",
        "op1",
        "--action",
        "ServiceInvoke",
        "--target",
        "Things/Pump1/Services/Reset",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "Allowed");
    assert_eq!(v["basis"]["Entry"]["principal"]["principal"], "Operators");
}

#[test]
fn a_new_user_cannot_see_what_is_not_visible_to_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    init(&dir);
    let file = t.path().join("m.json");
    std::fs::write(
        &file,
        r#"{"format":"thinghost-model","version":1,"entities":[{"kind":"User","name":"fresh"},{"kind":"Thing","name":"T","thingTemplate":"GenericThing"}]}"#,
    )
    .unwrap();
    assert!(
        thinghost(&[
            "model",
            "--data",
            dir.to_str().unwrap(),
            "import",
            file.to_str().unwrap()
        ])
        .status
        .success()
    );
    let (code, out, _) = check(&dir, "fresh", "PropertyRead", "Things/T");
    assert_eq!(code, 1);
    assert!(out.starts_with("NOT VISIBLE"), "{out}");
}

#[test]
fn init_twice_refuses_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    init(&dir);
    let db = std::fs::read(dir.join("thinghost.db")).unwrap();
    let key = std::fs::read(dir.join("admin.appkey")).unwrap();
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("already initialized"), "{:?}", text(&o));
    assert_eq!(std::fs::read(dir.join("thinghost.db")).unwrap(), db);
    assert_eq!(std::fs::read(dir.join("admin.appkey")).unwrap(), key);
}

#[test]
fn init_refuses_a_stale_key_file_and_leaves_it_alone() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("admin.appkey"), "old").unwrap();
    let o = thinghost(&["init", "--data", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("stale key file"), "{:?}", text(&o));
    assert_eq!(
        std::fs::read_to_string(t.path().join("admin.appkey")).unwrap(),
        "old"
    );
    assert!(!t.path().join("thinghost.db").exists());
}

#[test]
fn k2_the_key_file_is_private_prints_its_path_never_the_key_and_is_stored_only_as_a_hash() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    let key_path = dir.join("admin.appkey");
    let key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 36);
    assert!(out.contains(key_path.to_str().unwrap()), "{out}");
    assert!(!out.contains(&key) && !err.contains(&key));
    assert!(err.contains("Administrator rights"), "{err}");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("thinghost.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p != key_path {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "the key is in {}",
                p.display()
            );
        }
    }
    // The export holds the hash, never the key.
    let exported = export(&dir);
    assert!(exported.contains("sha256:") && !exported.contains(&key));
}

#[test]
fn bad_check_inputs_give_clear_errors() {
    let t = init_with_plant();
    let dir = t.path().join("data");
    for (user, action, target, says) in [
        ("ghost", "Read", "Things/Pump1", "no user named \"ghost\""),
        (
            "op1",
            "Fly",
            "Things/Pump1",
            "is not a permission; use one of Create",
        ),
        (
            "op1",
            "Read",
            "Widgets/Pump1",
            "is not a collection; use one of Users",
        ),
        (
            "op1",
            "Read",
            "Things/Pump1/Services",
            "is not a target path",
        ),
        (
            "op1",
            "PropertyRead",
            "Things/Pump1/Services/Reset",
            "applies to Properties",
        ),
        (
            "op1",
            "Read",
            "Things/Pump1/Services/Reset",
            "drop the /Services/",
        ),
        (
            "op1",
            "Read",
            "Things/Pump9",
            "Thing \"Pump9\" does not exist",
        ),
    ] {
        let (code, _, err) = check(&dir, user, action, target);
        assert_eq!(code, 2, "{user} {action} {target}: {err}");
        assert!(err.contains(says), "{user} {action} {target}: {err}");
    }
    let (code, _, err) = check(&t.path().join("nowhere"), "op1", "Read", "Things/Pump1");
    assert_eq!(code, 2);
    assert!(err.contains("thinghost init --data"), "{err}");
}

#[test]
fn import_is_all_or_nothing_and_names_the_cause() {
    let t = init_with_plant();
    let dir = t.path().join("data");
    let before = export(&dir);
    let cases = [
        (
            "{\"format\":\"thinghost-model\",\n\"version\":1,\n\"entities\":[,]}",
            "line 3 column",
        ),
        (
            r#"{"format":"thinghost-model","version":1,"entities":[{"kind":"User","name":"ok"},{"kind":"Thing","name":"X","thingTemplate":"Missing"}]}"#,
            "ThingTemplate \"Missing\"",
        ),
        (
            r#"{"format":"thinghost-model","version":1,"entities":[{"kind":"Group","name":"Shift","members":[{"principal":"Operators","principalType":"Group"}]}]}"#,
            "cycle",
        ),
        (
            r#"{"format":"thinghost-model","version":1,"entities":[{"kind":"User","name":"a/b"}]}"#,
            "invalid User name",
        ),
        (
            r#"{"format":"something-else","version":1,"entities":[]}"#,
            "format is",
        ),
        (
            r#"{"format":"thinghost-model","version":1,"entities":[{"kind":"Widget","name":"w"}]}"#,
            "Widget",
        ),
    ];
    for (i, (content, says)) in cases.iter().enumerate() {
        let file = t.path().join(format!("bad{i}.json"));
        std::fs::write(&file, content).unwrap();
        let o = thinghost(&[
            "model",
            "--data",
            dir.to_str().unwrap(),
            "import",
            file.to_str().unwrap(),
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(says), "case {i}: {err}");
        assert_eq!(export(&dir), before, "case {i} changed the model");
    }
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "import",
        "/no/such/file.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("cannot read"));
}

#[test]
fn export_then_import_carries_a_model_to_another_data_directory() {
    let t = init_with_plant();
    let a = t.path().join("data");
    let b = t.path().join("other");
    init(&b);
    let file = t.path().join("export.json");
    let o = thinghost(&[
        "model",
        "--data",
        a.to_str().unwrap(),
        "export",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    import(&b, &file);
    assert_eq!(export(&a), export(&b));
    // Importing the same file again changes nothing.
    let o = thinghost(&[
        "model",
        "--data",
        b.to_str().unwrap(),
        "import",
        file.to_str().unwrap(),
    ]);
    assert!(
        text(&o).0.contains(" 0 created or changed"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["check", "--help"],
        vec!["model", "--help"],
        vec!["model", "import", "--help"],
        vec!["model", "export", "--help"],
    ] {
        let o = thinghost(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(text(&o).0.contains("Usage:"), "{args:?}");
    }
    let o = thinghost(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn plugin_check_reports_each_package_and_fails_when_one_would_be_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("hello")).unwrap();
    for f in ["plugin.toml", "main.rhai"] {
        std::fs::copy(
            workspace().join("examples/hello").join(f),
            t.path().join("hello").join(f),
        )
        .unwrap();
    }
    let o = thinghost(&["plugin", "check", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.contains("hello 1.0.0: loads"), "{:?}", text(&o));
    // A compiled package whose code is not built yet says how to build it.
    std::fs::create_dir_all(t.path().join("tank-monitor")).unwrap();
    std::fs::copy(
        workspace().join("examples/tank-monitor/plugin.toml"),
        t.path().join("tank-monitor/plugin.toml"),
    )
    .unwrap();
    let o = thinghost(&["plugin", "check", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("tank_monitor.wasm does not exist: build the component (cargo build --release --target wasm32-wasip2) and copy it into the package folder"),
        "{:?}",
        text(&o)
    );
    let fixtures = workspace().join("tests/fixtures/plugins");
    let o = thinghost(&["plugin", "check", fixtures.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o).0;
    assert!(
        out.contains("broken-handler 1.0.0: REFUSED")
            && out.contains("defines run_it with 0 parameters")
            && out.contains("write it as run_it(x)"),
        "{out}"
    );
    assert!(out.contains("hostile 1.0.0: loads"), "{out}");
    let o = thinghost(&["plugin", "list", fixtures.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    let o = thinghost(&["plugin", "check", "/no/such/dir"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("cannot read the plugin directory"));
}

/// Issue 23: `plugin check` reads a Rhai package's code and names every host function it calls
/// that `[capabilities]` does not list, with what to add; it fails (1).
#[test]
fn plugin_check_names_every_host_function_the_code_calls_without_the_capability() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins/greedy");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("plugin.toml"),
        "[extension]\nname = \"greedy\"\nversion = \"1.0.0\"\nhost = \">=0.1\"\nruntime = \"rhai\"\nentry = \"main.rhai\"\n\n[capabilities]\nfunctions = [\"log\"]\n\n[[things]]\nname = \"Greedy\"\n\n[[things.services]]\nname = \"Take\"\nhandler = \"take\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("main.rhai"),
        "fn take() { log(\"taking\"); let v = get_property(\"Pump1\", \"level\"); set_property(\"Pump1\", \"level\", v + 1.0); }",
    )
    .unwrap();
    let o = thinghost(&[
        "plugin",
        "check",
        t.path().join("plugins").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let out = text(&o).0;
    assert!(
        out.contains(
            "greedy 1.0.0: REFUSED: main.rhai calls the host functions get_property, set_property"
        ) && out.contains(r#"functions = ["log", "get_property", "set_property"]"#),
        "{out}"
    );
}

/// Issue 23: examples/README.md lists every example folder.
#[test]
fn the_examples_readme_lists_every_example() {
    let dir = workspace().join("examples");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                readme.contains(&format!("`{name}/`")),
                "examples/README.md does not list {name}/"
            );
        }
    }
    assert!(
        !readme.contains("join when those runtimes land"),
        "out of date"
    );
}
