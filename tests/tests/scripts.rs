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

fn exists(s: &Server, key: &str, path: &str) -> bool {
    let r = s
        .client
        .get(s.at(&format!("/Thingworx/{path}")))
        .header("appKey", key)
        .send()
        .unwrap();
    r.status() == 200
}

/// A user with a key and nothing else.
fn user(s: &Server, admin: &str, name: &str) -> String {
    ok(
        s,
        admin,
        &format!("{ES}/CreateUser"),
        json!({"name": name, "password": "a long password 1"}),
    );
    ok(
        s,
        admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": format!("{name}-key"), "user": name}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_script_changes_the_model_as_one_transaction_of_its_caller() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    // The administrator provisions; the output comes back; the result is in the model.
    let (st, v) = run(
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
        false,
    );
    assert_eq!(st, 200, "{v}");
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
    let (st, v) = run(
        &s,
        &admin,
        "create_thing(\"Pump2\", \"GenericThing\");\ncreate_group(\"More\");\n\ncreate_thing(\"Pump3\", \"NoSuchTemplate\");\n",
        false,
    );
    assert_eq!(st, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("script line 4: "), "{msg}");
    assert!(msg.contains("nothing the script did was kept"), "{msg}");
    assert!(!exists(&s, &admin, "Things/Pump2"));
    assert!(!exists(&s, &admin, "Groups/More"));
    // A thrown value, caught errors, and a syntax error.
    let (st, v) = run(
        &s,
        &admin,
        "create_group(\"X\");\nthrow \"stop here\";",
        false,
    );
    assert_eq!(st, 400);
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
    let (st, v) = run(&s, &admin, "let x = ;", false);
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().starts_with("script line 1: "),
        "{v}"
    );
    // The caller's rights, no more: ann may see Pump1 and nothing else; her script is refused
    // at its first step beyond them, the denial is audited, and nothing remains.
    let ann = user(&s, &admin, "ann");
    let (st, v) = run(
        &s,
        &ann,
        "print(list(\"Things\"));\ncreate_group(\"Mine\");",
        false,
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("script line 2: ann may not create Groups"),
        "{v}"
    );
    assert!(!exists(&s, &admin, "Groups/Mine"));
    let (st, v) = run(&s, &ann, "get_entity(\"Things/Pump1\")", false);
    assert_eq!(st, 404, "an invisible entity answers as an absent one: {v}");
    // Services that cannot be undone are refused in a script.
    let (st, v) = run(
        &s,
        &admin,
        r#"call_service("Subsystems/AuditSubsystem", "PurgeAuditData", #{});"#,
        false,
    );
    assert_eq!(st, 400);
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
    let s = serve(t.path(), &["--script-timeout-seconds", "1"]);
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
    ] {
        let (st, v) = run(&s, &admin, script, false);
        assert_eq!(st, 400, "{script}: {v}");
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
    assert!(impact.iter().all(|i| i["user"] == "dev1"), "{impact:#?}");
    assert!(
        !exists(&s, &admin, "Things/Pump1"),
        "a dry run keeps nothing"
    );
    assert!(!exists(&s, &admin, "Organizations/Fleet"));
}
