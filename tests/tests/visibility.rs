//! V1 for every answer, errors included (issue 17): a name that is taken is "not available"
//! whoever holds it; errors name only what the caller can see and count the rest; a principal
//! the caller cannot see answers exactly as a missing one; a dry run's access impact lists only
//! users and entities the caller can see.

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, ok, post};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const COLLECTIONS: &str = "/Thingworx/Resources/CollectionFunctions/Services";

/// A request's body, made for a principal's name.
type Body = Box<dyn Fn(&str) -> Json>;

fn server() -> (tempfile::TempDir, Server) {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    (t, s)
}

/// A user and its application key.
fn user(s: &Server, name: &str) -> String {
    let admin = s.admin_key();
    ok(
        s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": name}),
    );
    let v = ok(
        s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": format!("{name}-key"), "user": name}),
    );
    v["rows"][0]["keyId"].as_str().unwrap().to_string()
}

/// `who` may create, read, change and delete every entity of these collections (that it can
/// see).
fn may_design(s: &Server, who: &str, collections: &[&str]) {
    let admin = s.admin_key();
    for c in collections {
        for t in ["Create", "Read", "Update", "Delete"] {
            ok(
                s,
                &admin,
                &format!("{COLLECTIONS}/AddCollectionDesignTimePermission"),
                json!({"collectionName": c, "principal": who, "principalType": "User", "type": t}),
            );
        }
    }
}

/// The error of a refused call, with `name` replaced by `X`: what the caller learns besides the
/// name it gave.
fn refusal(s: &Server, key: &str, path: &str, body: Json, name: &str) -> (u16, String) {
    let (st, v) = post(s, key, path, body);
    assert_ne!(st, 200, "{path}: {v}");
    (st.as_u16(), v.to_string().replace(name, "X"))
}

/// alice's template `AliceTemplate` (she owns it, so she sees it) and her Thing `Mine` of it.
fn mine(s: &Server, alice: &str) {
    ok(
        s,
        alice,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "AliceTemplate"}),
    );
    ok(
        s,
        alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Mine", "thingTemplateName": "AliceTemplate"}),
    );
}

#[test]
fn v1_a_taken_name_is_not_available_whoever_holds_it() {
    let (_t, s) = server();
    let admin = s.admin_key();
    let alice = user(&s, "alice");
    may_design(&s, "alice", &["Things", "ThingTemplates"]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Secret", "thingTemplateName": "GenericThing"}),
    );
    mine(&s, &alice);
    let create = |name: &str| {
        refusal(
            &s,
            &alice,
            &format!("{ES}/CreateThing"),
            json!({"name": name, "thingTemplateName": "AliceTemplate"}),
            name,
        )
    };
    let (hidden, visible) = (create("Secret"), create("Mine"));
    assert_eq!(hidden.0, 409);
    assert!(hidden.1.contains("is not available"), "{}", hidden.1);
    assert_eq!(hidden, visible, "the same answer whoever holds the name");
}

#[test]
fn v1_errors_name_only_what_the_caller_can_see_and_count_the_rest() {
    let (_t, s) = server();
    let admin = s.admin_key();
    let alice = user(&s, "alice");
    may_design(&s, "alice", &["Things", "ThingTemplates"]);
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "AliceTemplate"}),
    );
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Seen1", "thingTemplateName": "AliceTemplate"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Unseen1", "thingTemplateName": "AliceTemplate"}),
    );
    let (st, v) = post(
        &s,
        &alice,
        &format!("{ES}/DeleteThingTemplate"),
        json!({"name": "AliceTemplate"}),
    );
    assert_eq!(st, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("Things/Seen1"), "{e}");
    assert!(e.contains("1 entity you cannot see"), "{e}");
    assert!(!e.contains("Unseen1"), "{e}");
    // An administrator sees them all.
    let (_, v) = post(
        &s,
        &admin,
        &format!("{ES}/DeleteThingTemplate"),
        json!({"name": "AliceTemplate"}),
    );
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("Unseen1") && !e.contains("cannot see"), "{e}");
}

#[test]
fn v1_a_principal_the_caller_cannot_see_answers_as_a_missing_one() {
    let (_t, s) = server();
    let alice = user(&s, "alice");
    user(&s, "hidden");
    may_design(&s, "alice", &["Things", "ThingTemplates", "Groups"]);
    mine(&s, &alice);
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateGroup"),
        json!({"name": "AliceGroup"}),
    );
    let calls: Vec<(String, Body)> = vec![
        (
            "/Thingworx/Things/Mine/Services/AddRunTimePermission".into(),
            Box::new(|p| json!({"principal": p, "principalType": "User", "type": "PropertyRead"})),
        ),
        (
            "/Thingworx/Things/Mine/Services/AddDesignTimePermission".into(),
            Box::new(|p| json!({"principal": p, "principalType": "User", "type": "Read"})),
        ),
        (
            "/Thingworx/Things/Mine/Services/DeleteRunTimePermission".into(),
            Box::new(|p| json!({"principal": p, "principalType": "User", "type": "PropertyRead"})),
        ),
        (
            "/Thingworx/Things/Mine/Services/AddPermissions".into(),
            Box::new(
                |p| json!({"permissions": [{"family": "runTime", "principal": p, "principalType": "User", "type": "PropertyRead"}]}),
            ),
        ),
        (
            "/Thingworx/Groups/AliceGroup/Services/AddMember".into(),
            Box::new(|p| json!({"member": p, "type": "User"})),
        ),
    ];
    for (path, body) in &calls {
        let hidden = refusal(&s, &alice, path, body("hidden"), "hidden");
        let missing = refusal(&s, &alice, path, body("nobody"), "nobody");
        assert_eq!(hidden.0, 400, "{path}: {}", hidden.1);
        assert_eq!(hidden, missing, "{path}");
    }
    // Nothing was added for the hidden user.
    let admin = s.admin_key();
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/Mine/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"], json!([]), "{v}");
}

#[test]
fn v1_a_dry_runs_access_impact_lists_only_users_and_entities_the_caller_can_see() {
    let (_t, s) = server();
    let admin = s.admin_key();
    let alice = user(&s, "alice");
    user(&s, "ghost");
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateGroup"),
        json!({"name": "Crew"}),
    );
    for member in ["alice", "ghost"] {
        ok(
            &s,
            &admin,
            "/Thingworx/Groups/Crew/Services/AddMember",
            json!({"member": member, "type": "User"}),
        );
    }
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "Acme"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Organizations/Acme/Services/AddMember",
        json!({"name": "Acme", "member": "Crew", "type": "Group"}),
    );
    for c in ["Things", "Groups"] {
        ok(
            &s,
            &admin,
            &format!("{COLLECTIONS}/AddCollectionVisibilityPermission"),
            json!({"collectionName": c, "principal": "Acme", "principalType": "Organization"}),
        );
    }
    may_design(&s, "alice", &["Things"]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Pump", "thingTemplateName": "GenericThing"}),
    );
    let script = r#"add_run_time_permission("Things/Pump", "Crew", "Group", "PropertyRead");"#;
    let dry = |key: &str| {
        let v = ok(
            &s,
            key,
            "/Thingworx/Resources/ScriptServices/Services/RunScript",
            json!({"script": script, "dryRun": true}),
        );
        v["rows"][0]["result"].clone()
    };
    let everyone = dry(&admin);
    let users: Vec<&str> = everyone["impact"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"ghost") && users.contains(&"alice"),
        "{everyone}"
    );
    let mine = dry(&alice);
    let impact = mine["impact"].as_array().unwrap();
    assert!(!impact.is_empty(), "{mine}");
    assert!(impact.iter().all(|r| r["user"] == "alice"), "{mine}");
    assert!(!mine.to_string().contains("ghost"), "{mine}");
    assert_eq!(
        mine["impactHidden"].as_u64().unwrap() as usize,
        everyone["impact"].as_array().unwrap().len() - impact.len()
    );
}

/// A dry run's plan names only what the caller can see: a deletion's cascade reaches entities it
/// cannot (their entries name the deleted principal), and those are counted, not named.
#[test]
fn v1_a_dry_runs_plan_names_only_what_the_caller_can_see() {
    let (_t, s) = server();
    let admin = s.admin_key();
    let alice = user(&s, "alice");
    may_design(&s, "alice", &["Groups"]);
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateGroup"),
        json!({"name": "AliceGroup"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "SecretThing", "thingTemplateName": "GenericThing"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/SecretThing/Services/AddRunTimePermission",
        json!({"principal": "AliceGroup", "principalType": "Group", "type": "PropertyRead"}),
    );
    let v = ok(
        &s,
        &alice,
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        json!({"script": r#"delete_group("AliceGroup");"#, "dryRun": true}),
    );
    let result = &v["rows"][0]["result"];
    assert!(!result.to_string().contains("SecretThing"), "{result}");
    let step = &result["plan"][0];
    assert_eq!(step["hiddenWrites"], 1, "{result}");
    assert!(
        step["writes"].to_string().contains("Groups/AliceGroup"),
        "{result}"
    );
}

/// The permission lists name only principals the caller can see, and replacing a list as JSON
/// keeps the entries of the others: a Get then Set round trip changes nothing.
#[test]
fn v1_permission_lists_name_only_principals_the_caller_can_see() {
    let (_t, s) = server();
    let admin = s.admin_key();
    let alice = user(&s, "alice");
    user(&s, "hidden");
    may_design(&s, "alice", &["Things", "ThingTemplates"]);
    mine(&s, &alice);
    for (who, allow) in [("alice", true), ("hidden", false)] {
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Mine/Services/AddRunTimePermission",
            json!({"principal": who, "principalType": "User", "type": "PropertyRead", "allow": allow}),
        );
    }
    let listed = ok(
        &s,
        &alice,
        "/Thingworx/Things/Mine/Services/GetRunTimePermissionsAsJSON",
        json!({}),
    )["rows"][0]["result"]
        .clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains("hidden"), "{listed}");
    ok(
        &s,
        &alice,
        "/Thingworx/Things/Mine/Services/SetRunTimePermissionsAsJSON",
        json!({"permissions": listed}),
    );
    let all = ok(
        &s,
        &admin,
        "/Thingworx/Things/Mine/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(
        all["rows"].as_array().unwrap().len(),
        2,
        "the hidden user's deny stays: {all}"
    );
}
