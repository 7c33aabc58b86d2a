//! Admin scripts (issue 9) against the real server: one transaction in the caller's security
//! context, errors that name the line, limits, and the dry run's plan and access impact.

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, ok, post};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const RUN: &str = "/Thingworx/Resources/ScriptServices/Services/RunScript";

fn serve(t: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec!["--dev"];
    args.extend_from_slice(extra);
    Server::start(&t.join("d"), &args)
}

/// Runs a script; the status and the result (or the error body).
fn run(s: &Server, key: &str, script: &str, dry_run: bool) -> (u16, Json) {
    let (st, v) = post(s, key, RUN, json!({"script": script, "dryRun": dry_run}));
    let v = if st == 200 {
        v["rows"][0]["result"].clone()
    } else {
        v
    };
    (st.as_u16(), v)
}

/// Runs a script that must succeed: its result.
fn ran(s: &Server, key: &str, script: &str) -> Json {
    let (st, v) = run(s, key, script, false);
    assert_eq!(st, 200, "{script}: {v}");
    v
}

/// Runs a script that must be refused with `status`: the answer (its `error`).
fn refused(s: &Server, key: &str, script: &str, status: u16) -> Json {
    let (st, v) = run(s, key, script, false);
    assert_eq!(st, status, "{script}: {v}");
    v
}

fn exists(s: &Server, key: &str, path: &str) -> bool {
    let r = s
        .client
        .get(s.at(&format!("/Thingworx/{path}")))
        .header("appKey", key)
        .send()
        .unwrap();
    r.status() == 200
}

/// A new application key for `user`, made by `admin`: the key.
fn key(s: &Server, admin: &str, name: &str, user: &str) -> String {
    ok(
        s,
        admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": name, "user": user}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A user with a key and nothing else.
fn user(s: &Server, admin: &str, name: &str) -> String {
    ok(
        s,
        admin,
        &format!("{ES}/CreateUser"),
        json!({"name": name, "password": "a long password 1"}),
    );
    key(s, admin, &format!("{name}-key"), name)
}

#[test]
fn a_script_changes_the_model_as_one_transaction_of_its_caller() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    // The administrator provisions; the output comes back; the result is in the model.
    let v = ran(
        &s,
        &admin,
        r#"
        create_organization("Fleet");
        create_group("Devices");
        add_organization_member("Fleet", "Fleet", "Devices", "Group");
        create_thing("Pump1", "GenericThing");
        add_visibility_permission("Things/Pump1", "Fleet", "Organization");
        add_run_time_permission("Things/Pump1", "Devices", "Group", "PropertyWrite", "*", true);
        print(`things: ${list("Things").len()}`);
        "#,
    );
    assert_eq!(v["changes"], 6, "{v}");
    assert!(v["output"].as_str().unwrap().starts_with("things: "), "{v}");
    assert!(exists(&s, &admin, "Things/Pump1"));
    let perms = ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(perms["rows"][0]["principal"], "Devices", "{perms}");
    // A failure on line 4 undoes lines 2 and 3, and says which line.
    let v = refused(
        &s,
        &admin,
        "create_thing(\"Pump2\", \"GenericThing\");\ncreate_group(\"More\");\n\ncreate_thing(\"Pump3\", \"NoSuchTemplate\");\n",
        400,
    );
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("script line 4: "), "{msg}");
    assert!(msg.contains("nothing the script did was kept"), "{msg}");
    assert!(!exists(&s, &admin, "Things/Pump2"));
    assert!(!exists(&s, &admin, "Groups/More"));
    // A thrown value, caught errors, and a syntax error.
    let v = refused(
        &s,
        &admin,
        "create_group(\"X\");\nthrow \"stop here\";",
        400,
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("script line 2: the script threw stop here"),
        "{v}"
    );
    assert!(!exists(&s, &admin, "Groups/X"));
    let (st, v) = run(
        &s,
        &admin,
        "try { create_thing(\"Pump1\", \"GenericThing\"); } catch (e) { print(`${e.status}`); }",
        false,
    );
    assert_eq!((st, v["output"].as_str()), (200, Some("409\n")), "{v}");
    let v = refused(&s, &admin, "let x = ;", 400);
    assert!(
        v["error"].as_str().unwrap().starts_with("script line 1: "),
        "{v}"
    );
    // The caller's rights, no more: ann may see Pump1 and nothing else; her script is refused
    // at its first step beyond them, the denial is audited, and nothing remains.
    let ann = user(&s, &admin, "ann");
    let v = refused(
        &s,
        &ann,
        "print(list(\"Things\"));\ncreate_group(\"Mine\");",
        403,
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("script line 2: ann may not create Groups"),
        "{v}"
    );
    assert!(!exists(&s, &admin, "Groups/Mine"));
    // An entity the caller cannot see answers as an absent one.
    refused(&s, &ann, "get_entity(\"Things/Pump1\")", 404);
    // Services that cannot be undone are refused in a script.
    let v = refused(
        &s,
        &admin,
        r#"call_service("Subsystems/AuditSubsystem", "PurgeAuditData", #{});"#,
        400,
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot run in a script"),
        "{v}"
    );
    // Every run is audited in SCRIPTS (the script's digest, never its text).
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/AuditSubsystem/Services/QueryAuditHistory",
        json!({"auditCategory": "SCRIPTS"}),
    );
    let keys: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["messageKey"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"scriptRan") && keys.contains(&"scriptFailed"),
        "{keys:?}"
    );
    assert!(v["rows"][0]["args"]["sha256"].as_str().unwrap().len() == 64);
}

#[test]
fn limits_stop_a_script_and_undo_it() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(
        t.path(),
        &["--script-timeout-seconds", "1", "--script-memory-mib", "32"],
    );
    let admin = s.admin_key();
    for (script, expect) in [
        ("create_group(\"A\");\nloop { }", "operations"),
        ("create_group(\"A\");\nloop { list(\"Things\"); }", "calls"),
        (
            "create_group(\"A\");\nloop { print(\"0123456789abcdef0123456789abcdef\"); }",
            "printed more than",
        ),
        (
            "create_group(\"A\");\nlet i = 0; loop { i += 1; create_user(`u${i}`, \"a long password 1\"); }",
            "ran longer than 1 s",
        ),
        // Strings of 1 MiB (each within the bound on one value), kept as the keys of a map.
        (
            "create_group(\"A\");\nlet s = \"x\"; s.pad(1000000, \"x\"); let m = #{}; for i in 0..100 { m[s + i] = i; }",
            "held more than 32 MiB",
        ),
    ] {
        let v = refused(&s, &admin, script, 400);
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(expect), "{script}: {msg}");
        assert!(msg.starts_with("script line 2"), "{msg}");
        assert!(!exists(&s, &admin, "Groups/A"));
    }
}

#[test]
fn a_dry_run_reports_the_plan_and_the_access_impact_and_keeps_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    user(&s, &admin, "dev1");
    let script = r#"
        create_organization("Fleet");
        add_organization_member("Fleet", "Fleet", "dev1", "User");
        create_thing("Pump1", "GenericThing");
        add_visibility_permission("Things/Pump1", "Fleet", "Organization");
        add_run_time_permission("Things/Pump1", "dev1", "User", "PropertyWrite", "*", true);
        create_user("dev1", "a long password 2");
    "#;
    // (The last line fails: dev1 exists.)
    let (st, v) = run(&s, &admin, script, true);
    assert_eq!(st, 409, "a dry run fails like a run: {v}");
    let script = script.replace("create_user(\"dev1\", \"a long password 2\");", "");
    let (st, v) = run(&s, &admin, &script, true);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["dryRun"], true);
    let plan = v["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 5, "{v}");
    assert_eq!(plan[2]["entity"], "Things/Pump1");
    assert_eq!(plan[2]["service"], "CreateThing");
    assert_eq!(plan[4]["parameters"]["type"], "PropertyWrite");
    let impact = v["impact"].as_array().unwrap();
    let has = |e: &str, p: &str| {
        impact.iter().any(|i| {
            i["user"] == "dev1"
                && i["entity"] == e
                && i["permission"] == p
                && i["change"] == "gained"
        })
    };
    assert!(has("Things/Pump1", "Visible"), "{impact:#?}");
    assert!(has("Things/Pump1", "PropertyWrite"), "{impact:#?}");
    assert_eq!(impact.len(), 2, "{impact:#?}");
    assert_eq!(
        (v["impactRows"].as_u64(), v["impactTruncated"].as_bool()),
        (Some(2), Some(false))
    );
    assert!(impact.iter().all(|i| i["user"] == "dev1"), "{impact:#?}");
    assert!(
        !exists(&s, &admin, "Things/Pump1"),
        "a dry run keeps nothing"
    );
    assert!(!exists(&s, &admin, "Organizations/Fleet"));
    // A property written by a script is a step of its plan, with its name and value.
    let (st, v) = run(
        &s,
        &admin,
        r#"create_thing("Tank", "GenericThing");
           add_property_definition("Things/Tank", "level", "NUMBER");
           set_property("Things/Tank", "level", 3.5);
           print(get_property("Things/Tank", "level"));"#,
        true,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["output"], "3.5\n");
    let step = &v["plan"][2];
    assert_eq!(
        (
            &step["action"],
            &step["parameters"]["property"],
            &step["parameters"]["value"]
        ),
        (&json!("propertyWritten"), &json!("level"), &json!(3.5)),
        "{v}"
    );
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        thinghost_tests::workspace()
            .join("examples/scripts")
            .join(name),
    )
    .unwrap()
}

/// `examples/scripts/provision-devices.rhai` (seed 000): one user without a password and one key
/// per device, an organization and a group, visibility, run-time permissions on its own Thing
/// only, no design-time permissions. Checked through the REST API with the printed keys.
#[test]
fn the_provisioning_example_gives_each_device_its_own_thing_only() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    let v = ran(&s, &admin, &example("provision-devices.rhai"));
    let lines: Vec<&str> = v["output"].as_str().unwrap().lines().collect();
    assert_eq!(lines[0], "device,key");
    let keys: Vec<(String, String)> = lines[1..]
        .iter()
        .map(|l| {
            let (d, k) = l.split_once(',').unwrap();
            (d.to_string(), k.to_string())
        })
        .collect();
    assert_eq!(keys.len(), 3);
    let write = |key: &str, thing: &str| {
        s.client
            .put(s.at(&format!("/Thingworx/Things/{thing}/Properties/pressure")))
            .header("appKey", key)
            .json(&json!({"pressure": 2.5}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(write(&keys[0].1, "Pump001"), 200, "its own Thing");
    assert_eq!(
        write(&keys[0].1, "Pump002"),
        403,
        "another device's Thing: seen, not writable"
    );
    assert_eq!(write(&keys[1].1, "Pump002"), 200);
    // No design-time permissions: a device cannot read its Thing's definition or create one.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Pump001"))
        .header("appKey", &keys[0].1)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let (st, _) = post(
        &s,
        &keys[0].1,
        &format!("{ES}/CreateThing"),
        json!({"name": "Rogue", "thingTemplateName": "GenericThing"}),
    );
    assert!(st == 403 || st == 400, "{st}");
    // A device user has no password: Basic sign-in fails.
    let r = s
        .client
        .get(s.at("/Thingworx/Things"))
        .basic_auth("pump-001", Some(""))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The lint finds nothing about the devices.
    let findings = ok(
        &s,
        &admin,
        "/Thingworx/Resources/SecurityServices/Services/Lint",
        json!({}),
    );
    for f in findings["rows"].as_array().unwrap() {
        let rule = f["rule"].as_str().unwrap();
        assert!(
            !matches!(
                rule,
                "device-design-time"
                    | "shared-device-user"
                    | "key-lifetime"
                    | "blanket-service-invoke"
            ),
            "{f}"
        );
    }
}

/// `examples/scripts/remote-access-setup.rhai` (seed 002): the support group gets exactly G3's
/// grants on the Thing, through the remote-access extension's grant service run by the script.
#[test]
fn the_remote_access_example_grants_the_support_group_its_sessions() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins");
    for n in ["connection-services", "remote-access"] {
        thinghost_tests::copy_dir(
            &thinghost_tests::workspace().join("plugins").join(n),
            &p.join(n),
        );
    }
    let s = serve(t.path(), &["--plugins", p.to_str().unwrap(), "--no-watch"]);
    let admin = s.admin_key();
    ran(&s, &admin, &example("remote-access-setup.rhai"));
    let perms = ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump7/Services/GetRunTimePermissions",
        json!({}),
    );
    let mut got: Vec<String> = perms["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["principal"] == "raUserGroup")
        .map(|r| {
            format!(
                "{} {}",
                r["type"].as_str().unwrap(),
                r["resource"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "PropertyRead *",
            "ServiceInvoke EndSession",
            "ServiceInvoke GetSession",
            "ServiceInvoke GetSessions",
            "ServiceInvoke StartSession",
        ]
    );
    let vis = ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump7/Services/GetVisibilityPermissions",
        json!({}),
    );
    assert_eq!(vis["rows"][0]["principal"], "raOrg", "{vis}");
    // The support user (in the group) may start a session; nothing else.
    let key = key(&s, &admin, "ra-key", "ra-support-1");
    let (st, v) = post(
        &s,
        &key,
        "/Thingworx/Things/Pump7/Services/StartSession",
        json!({"remoteEndpoint": "10.0.0.7:22"}),
    );
    assert_eq!(st, 200, "{v}");
    let (st, _) = post(
        &s,
        &key,
        "/Thingworx/Things/Pump7/Services/AddRunTimePermission",
        json!({"principal": "ra-support-1", "principalType": "User", "type": "ServiceInvoke"}),
    );
    assert_eq!(st, 403);
}

/// `examples/scripts/audit-group-setup.rhai` (seed 003): the auditor runs the query services and
/// nothing else; the lint reports no audit-entities finding.
#[test]
fn the_audit_group_example_lets_auditors_query_and_nothing_more() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    ran(&s, &admin, &example("audit-group-setup.rhai"));
    let key = key(&s, &admin, "auditor-key", "auditor-1");
    let audit = "/Thingworx/Subsystems/AuditSubsystem/Services";
    for service in [
        "QueryAuditHistory",
        "QueryAuditHistoryWithQueryCriteria",
        "GetAuditEntryCount",
    ] {
        let (st, v) = post(&s, &key, &format!("{audit}/{service}"), json!({}));
        assert_eq!(st, 200, "{service}: {v}");
    }
    for service in ["PurgeAuditData", "ArchiveAuditHistory", "VerifyAuditChain"] {
        let (st, v) = post(&s, &key, &format!("{audit}/{service}"), json!({}));
        assert_eq!(st, 403, "{service}: {v}");
    }
    let findings = ok(
        &s,
        &admin,
        "/Thingworx/Resources/SecurityServices/Services/Lint",
        json!({}),
    );
    assert!(
        !findings["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "audit-entities"),
        "{findings}"
    );
}

/// Runs a `thinghost` command against the server with the Administrator's key (or `key_file`).
fn cli(s: &Server, args: &[&str], key_file: Option<&std::path::Path>) -> (i32, String, String) {
    let admin_key = s.dir.join("admin.appkey");
    let key = key_file.unwrap_or(&admin_key);
    let mut all: Vec<&str> = args.to_vec();
    let url = s.url.replace("127.0.0.1", "localhost");
    let ca = s.dir.join("dev-cert.pem");
    all.extend([
        "--url",
        &url,
        "--app-key-file",
        key.to_str().unwrap(),
        "--ca-cert",
        ca.to_str().unwrap(),
    ]);
    let out = thinghost_tests::thinghost(&all);
    let (stdout, stderr) = thinghost_tests::text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The command line: `script run` (and `--dry-run`), `lint` (exit 1 on a high finding, JSON),
/// `access matrix` (CSV) and `access explain` (exit 1 when denied); EffectivePermissions for
/// oneself only unless a security administrator; the lock-out guard.
#[test]
fn the_command_line_runs_scripts_lints_and_explains_access() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    let file = t.path().join("provision.rhai");
    std::fs::write(&file, example("provision-devices.rhai")).unwrap();
    let (code, out, err) = cli(
        &s,
        &["script", "run", file.to_str().unwrap(), "--dry-run"],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("dry run: ") && out.contains("nothing kept"),
        "{out}"
    );
    assert!(
        out.contains("+ pump-001: PropertyWrite Things/Pump001"),
        "{out}"
    );
    assert!(!exists(&s, &admin, "Things/Pump001"));
    let (code, out, err) = cli(&s, &["script", "run", file.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("device,key\npump-001,"), "{out}");
    assert!(err.contains("change(s) kept"), "{err}");
    // A failing script: exit 1, the line on stderr.
    let bad = t.path().join("bad.rhai");
    std::fs::write(&bad, "create_group(\"G1\");\ncreate_group(\"G1\");\n").unwrap();
    let (code, _, err) = cli(&s, &["script", "run", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("script line 2: "), "{err}");
    // The lint: the Administrator's own key is a high finding (admin-app-key), so exit 1.
    let (code, out, _) = cli(&s, &["lint"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HIGH     admin-app-key"), "{out}");
    assert!(out.contains("see: docs/lint.md#admin-app-key"), "{out}");
    let (code, out, _) = cli(&s, &["lint", "--format", "json"], None);
    assert_eq!(code, 1);
    let findings: Json = serde_json::from_str(&out).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "insecure-transport")
    );
    // A security administrator (not an administrator) may lint and read the matrix; with no
    // high finding the lint exits 0 ... which this server cannot reach while the Administrator
    // has a key, so only the permission is checked here.
    let sec = user(&s, &admin, "sec");
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/SecurityAdministrators/Services/AddMember",
        json!({"member": "sec", "type": "User"}),
    );
    let sec_file = t.path().join("sec.appkey");
    std::fs::write(&sec_file, &sec).unwrap();
    let (code, out, err) = cli(
        &s,
        &["access", "matrix", "--user", "pump-001"],
        Some(&sec_file),
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "entity,permission,resource,allowed,why");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Things/Pump001,PropertyWrite,*,true,")),
        "{out}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("Things/Pump002,PropertyWrite")),
        "{out}"
    );
    // A plain user: its own matrix yes, another's no.
    let pump_key = t.path().join("pump.appkey");
    let k = key(&s, &admin, "pump-002-second", "pump-002");
    std::fs::write(&pump_key, &k).unwrap();
    let (code, _, _) = cli(
        &s,
        &["access", "matrix", "--user", "pump-002"],
        Some(&pump_key),
    );
    assert_eq!(code, 0);
    let (code, _, err) = cli(
        &s,
        &["access", "matrix", "--user", "pump-001"],
        Some(&pump_key),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("403"), "{err}");
    // access explain: 0 allowed, 1 denied, with the rule.
    let (code, out, _) = cli(
        &s,
        &[
            "access",
            "explain",
            "--user",
            "pump-001",
            "--action",
            "PropertyWrite",
            "--target",
            "Things/Pump001",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ALLOWED"), "{out}");
    let (code, out, _) = cli(
        &s,
        &[
            "access",
            "explain",
            "--user",
            "pump-001",
            "--action",
            "PropertyWrite",
            "--target",
            "Things/Pump002",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("DENIED") && out.contains("default deny"),
        "{out}"
    );
    // The lock-out guard: the only administrator cannot be disabled or locked; with another
    // enabled administrator it can.
    for service in ["DisableUser", "LockUser"] {
        let (st, v) = post(
            &s,
            &admin,
            &format!("/Thingworx/Users/Administrator/Services/{service}"),
            json!({}),
        );
        assert_eq!(st, 409, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("no enabled user in Administrators"),
            "{v}"
        );
    }
    let v = refused(
        &s,
        &admin,
        "create_user(\"ops\", \"a long password 9\");\nadd_member(\"Administrators\", \"ops\", \"User\");\ndisable_user(\"Administrator\");\ndisable_user(\"ops\");",
        409,
    );
    assert!(
        v["error"].as_str().unwrap().starts_with("script line 4"),
        "{v}"
    );
}

/// What a script may not do: choose its answer's status with a forged error, import files from
/// the server's disk, hide its reads of the audit log in a dry run, or keep changes after its
/// output overflowed. And what lands with its changes: their own audit entries.
#[test]
fn scripts_cannot_forge_errors_import_files_or_hide_what_they_read() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    refused(
        &s,
        &admin,
        "throw #{status: 200, message: \"all fine\"};",
        400,
    );
    std::fs::write(t.path().join("evil.rhai"), "fn x() { 1 }").unwrap();
    let v = refused(
        &s,
        &admin,
        &format!("import \"{}\" as evil;", t.path().join("evil").display()),
        400,
    );
    assert!(
        v["error"].as_str().unwrap().contains("script line 1"),
        "{v}"
    );
    // Output past the limit on the very last statement still fails the run, and undoes it.
    let v = refused(
        &s,
        &admin,
        "create_group(\"Late\");\nlet s = \"0123456789abcdef\"; for i in 0..12 { s += s; }\nfor i in 0..17 { print(s); }",
        400,
    );
    assert!(
        v["error"].as_str().unwrap().contains("printed more than"),
        "{v}"
    );
    assert!(!exists(&s, &admin, "Groups/Late"));
    // A dry run that reads the audit log leaves that read in the log (AUDIT), though it keeps
    // no change.
    let audit = "/Thingworx/Subsystems/AuditSubsystem/Services/QueryAuditHistory";
    let reads = |s: &Server| {
        ok(
            s,
            &admin,
            audit,
            json!({"auditCategory": "AUDIT", "maxItems": 5000}),
        )["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["messageKey"] == "auditServiceCalled")
            .count()
    };
    let before = reads(&s);
    let (st, v) = run(
        &s,
        &admin,
        r#"create_group("Peek"); let rows = call_service("Subsystems/AuditSubsystem", "QueryAuditHistory", #{}); print(rows.len());"#,
        true,
    );
    assert_eq!(st, 200, "{v}");
    assert!(reads(&s) > before + 1, "the script's read is recorded");
    // The changes of a script that lands carry their own entries (MODEL, SECURITY), by its caller.
    ran(
        &s,
        &admin,
        "create_group(\"Kept\");\nadd_member(\"Kept\", \"Administrator\", \"User\");",
    );
    let model = ok(&s, &admin, audit, json!({"auditCategory": "MODEL"}));
    assert!(
        model["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["messageKey"] == "entityCreated"
                && r["source"] == "Groups/Kept"
                && r["user"] == "Administrator"),
        "{model}"
    );
    assert!(
        !model["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["source"] == "Groups/Peek" || r["source"] == "Groups/Late")
    );
    // A dry run also shows what someone loses.
    user(&s, &admin, "ann");
    ran(
        &s,
        &admin,
        r#"create_organization("Org"); add_organization_member("Org", "Org", "ann", "User");
           create_thing("P", "GenericThing"); add_visibility_permission("Things/P", "Org", "Organization");
           add_run_time_permission("Things/P", "ann", "User", "PropertyRead", "*", true);"#,
    );
    let (st, v) = run(
        &s,
        &admin,
        r#"delete_visibility_permission("Things/P", "Org", "Organization");"#,
        true,
    );
    assert_eq!(st, 200, "{v}");
    let impact = v["impact"].as_array().unwrap();
    assert!(
        impact.iter().any(|i| i["user"] == "ann"
            && i["entity"] == "Things/P"
            && i["permission"] == "Visible"
            && i["change"] == "lost"),
        "{impact:#?}"
    );
    assert!(
        impact.iter().any(|i| i["user"] == "ann"
            && i["permission"] == "PropertyRead"
            && i["change"] == "lost"),
        "without visibility the grant is worth nothing: {impact:#?}"
    );
}

/// Organizational units can be deleted, from the leaves up, once nothing names them.
#[test]
fn organizational_units_are_deleted_from_the_leaves_up_once_unused() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    ran(
        &s,
        &admin,
        r#"create_organization("Corp");
           add_organizational_unit("Corp", "Corp", "Plant");
           add_organizational_unit("Corp", "Plant", "Line1");
           create_thing("P", "GenericThing");
           add_visibility_permission("Things/P", "Corp:Line1", "OrganizationalUnit");"#,
    );
    for (script, status, says) in [
        (
            "delete_organizational_unit(\"Corp\", \"Corp\");",
            400,
            "top unit",
        ),
        (
            "delete_organizational_unit(\"Corp\", \"Plant\");",
            400,
            "units below it",
        ),
        (
            "delete_organizational_unit(\"Corp\", \"Line1\");",
            400,
            "still named by Things/P",
        ),
        (
            "delete_organizational_unit(\"Corp\", \"Nope\");",
            400,
            "no unit",
        ),
    ] {
        let (st, v) = run(&s, &admin, script, false);
        assert_eq!(st, status, "{script}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{script}: {v}");
    }
    ran(
        &s,
        &admin,
        r#"delete_visibility_permission("Things/P", "Corp:Line1", "OrganizationalUnit");
           delete_organizational_unit("Corp", "Line1");
           delete_organizational_unit("Corp", "Plant");"#,
    );
}

/// Two scripts run at once; a third answers 503 until one ends.
#[test]
fn at_most_two_scripts_run_at_once() {
    let t = tempfile::tempdir().unwrap();
    // (One user runs them all here: the per-user share is hostile.rs's.)
    let s = std::sync::Arc::new(serve(
        t.path(),
        &[
            "--script-timeout-seconds",
            "5",
            "--max-scripts-per-user",
            "2",
        ],
    ));
    let admin = s.admin_key();
    // The two slow scripts are of two administrators: each hashes the passwords it sets, and
    // one user hashes one password at a time (K5), so two of one user would take turns and one
    // of them keep failing fast (then a third often found a free slot: this test was flaky).
    let other = user(&s, &admin, "other");
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/Administrators/Services/AddMember",
        json!({"member": "other", "type": "User"}),
    );
    // (Each creates users of its own names: passwords of one name are hashed one at a time.)
    let slow = |prefix: &str| {
        format!(
            "let i = 0; loop {{ i += 1; create_user(`{prefix}${{i}}`, \"a long password 1\"); }}"
        )
    };
    // Two slow scripts, each stopped by its 5 s limit, run again and again until the third is
    // refused: while both run, a third is refused. (A runner may find both slots taken by the
    // other and a short one: it tries again.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runners: Vec<_> = [(admin.clone(), slow("a")), (other, slow("b"))]
        .into_iter()
        .map(|(key, slow)| {
            let (s, key, stop) = (s.clone(), key, stop.clone());
            std::thread::spawn(move || {
                let mut ended = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (st, v) = run(&s, &key, &slow, false);
                    if st == 503 {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    } else {
                        ended.push((st, v));
                    }
                }
                ended
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let third = loop {
        let (st, third) = run(&s, &admin, "print(1);", false);
        if st == 503 {
            break third;
        }
        assert_eq!(st, 200, "{third}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no third script was refused while two slow ones ran, in a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        third["error"].as_str().unwrap().contains("try again"),
        "{third}"
    );
    for r in runners {
        for (st, v) in r.join().unwrap() {
            assert_eq!(st, 400, "each stopped by its time limit: {v}");
        }
    }
    let (st, _) = run(&s, &admin, "print(1);", false);
    assert_eq!(st, 200, "a slot is free again");
}

/// Guessing an old password in ChangePassword counts like failed sign-ins, across scripts and
/// requests: after ten wrong ones, even the right one waits (429), and each is audited.
#[test]
fn k5_wrong_old_passwords_are_limited_and_audited_even_from_scripts() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    let ann = user(&s, &admin, "ann");
    let v = ran(
        &s,
        &ann,
        r#"let refused = 0;
           for i in 0..20 {
               try { change_password("ann", `guess${i}`, "another long password"); }
               catch (e) { if e.status == 429 { refused += 1; } }
           }
           print(refused);"#,
    );
    assert_eq!(v["output"], "10\n", "ten guesses, then refused: {v}");
    let (st, v) = post(
        &s,
        &ann,
        "/Thingworx/Users/ann/Services/ChangePassword",
        json!({"oldPassword": "a long password 1", "newPassword": "another long password"}),
    );
    assert_eq!(st, 429, "{v}");
    let audit = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/AuditSubsystem/Services/GetAuditEntryCount",
        json!({"auditCategory": "AUTHENTICATION", "query": {"filters": {"type": "EQ", "fieldName": "message", "value": "badOldPassword"}}}),
    );
    assert_eq!(audit["rows"][0]["result"], 10, "{audit}");
}
