//! The vendor's permission services, with its names and parameters (DOMAIN.md section 4):
//! `CheckPermission*`, `CheckDesignTimePermission*`, `GetPermissionsFor*` and
//! `Get/Set{RunTime,DesignTime,Visibility}PermissionsAsJSON`, with their `Instance` and
//! `Collection` variants.

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, ok, post};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const P1: &str = "/Thingworx/Things/P1/Services";

/// alice (with a key) in group Ops, in organization Acme; Thing P1 visible to Acme; Ops may read
/// P1's properties, alice may write its `pressure` and read P1's definition.
fn world() -> (tempfile::TempDir, Server, String) {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let steps: Vec<(String, Json)> = vec![
        (format!("{ES}/CreateUser"), json!({"name": "alice"})),
        (format!("{ES}/CreateGroup"), json!({"name": "Ops"})),
        (
            "/Thingworx/Groups/Ops/Services/AddMember".into(),
            json!({"member": "alice", "type": "User"}),
        ),
        (format!("{ES}/CreateOrganization"), json!({"name": "Acme"})),
        (
            "/Thingworx/Organizations/Acme/Services/AddMember".into(),
            json!({"name": "Acme", "member": "Ops", "type": "Group"}),
        ),
        (format!("{ES}/CreateThingTemplate"), json!({"name": "Pump"})),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition".into(),
            json!({"name": "pressure", "type": "NUMBER"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P1", "thingTemplateName": "Pump"}),
        ),
        (
            format!("{P1}/AddVisibilityPermission"),
            json!({"principal": "Acme", "principalType": "Organization"}),
        ),
        (
            format!("{P1}/AddRunTimePermission"),
            json!({"principal": "Ops", "principalType": "Group", "type": "PropertyRead"}),
        ),
        (
            format!("{P1}/AddRunTimePermission"),
            json!({"principal": "alice", "principalType": "User", "type": "PropertyWrite", "resource": "pressure"}),
        ),
        (
            format!("{P1}/AddDesignTimePermission"),
            json!({"principal": "alice", "principalType": "User", "type": "Read"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, &path, body);
    }
    let v = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "alice-key", "user": "alice"}),
    );
    let alice = v["rows"][0]["keyId"].as_str().unwrap().to_string();
    (t, s, alice)
}

/// A one-value answer.
fn value(s: &Server, key: &str, service: &str, body: Json) -> Json {
    let v = ok(s, key, &format!("{P1}/{service}"), body);
    v["rows"][0]["result"].clone()
}

#[test]
fn d1_the_check_services_answer_for_the_caller_a_user_and_a_group() {
    let (_t, s, alice) = world();
    let admin = s.admin_key();
    let check = |key: &str, service: &str, body: Json| value(&s, key, service, body);
    // The caller.
    assert_eq!(
        check(
            &alice,
            "CheckPermission",
            json!({"name": "pressure", "type": "PropertyWrite"})
        ),
        true
    );
    assert_eq!(
        check(&alice, "CheckPermission", json!({"type": "PropertyWrite"})),
        false,
        "the override is for pressure only"
    );
    assert_eq!(
        check(&alice, "CheckPermission", json!({"type": "PropertyRead"})),
        true,
        "through Ops"
    );
    // Another user: `name`, and our older `resource` for it.
    for name in ["name", "resource"] {
        assert_eq!(
            check(
                &admin,
                "CheckPermissionForUser",
                json!({name: "pressure", "type": "PropertyWrite", "user": "alice"})
            ),
            true,
            "{name}"
        );
    }
    // A group, as such: its own entries, not its members'.
    assert_eq!(
        check(
            &admin,
            "CheckPermissionForGroup",
            json!({"type": "PropertyRead", "group": "Ops"})
        ),
        true
    );
    assert_eq!(
        check(
            &admin,
            "CheckPermissionForGroup",
            json!({"name": "pressure", "type": "PropertyWrite", "group": "Ops"})
        ),
        false
    );
    // Design time.
    assert_eq!(
        check(&alice, "CheckDesignTimePermission", json!({"type": "Read"})),
        true
    );
    assert_eq!(
        check(
            &alice,
            "CheckDesignTimePermission",
            json!({"type": "Update"})
        ),
        false
    );
    assert_eq!(
        check(
            &admin,
            "CheckDesignTimePermissionForUser",
            json!({"type": "Read", "user": "alice"})
        ),
        true
    );
    assert_eq!(
        check(
            &admin,
            "CheckDesignTimePermissionForGroup",
            json!({"type": "Read", "group": "Ops"})
        ),
        false
    );
    // A run-time type for a design-time check (and the reverse) names the mistake.
    let (st, v) = post(
        &s,
        &alice,
        &format!("{P1}/CheckDesignTimePermission"),
        json!({"type": "PropertyRead"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("run-time"), "{v}");
    // Asking about a user needs Read on the entity (alice has it) and a user the caller can
    // see (herself); a group she cannot see answers as a missing one (V1).
    let (st, v) = post(
        &s,
        &alice,
        &format!("{P1}/CheckPermissionForUser"),
        json!({"type": "PropertyRead", "user": "alice"}),
    );
    assert_eq!((st.as_u16(), &v["rows"][0]["result"]), (200, &json!(true)));
    let (st, v) = post(
        &s,
        &alice,
        &format!("{P1}/CheckPermissionForGroup"),
        json!({"type": "PropertyRead", "group": "Ops"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("there is no Group named"),
        "{v}"
    );
}

#[test]
fn d1_get_permissions_for_a_user_and_a_group() {
    let (_t, s, _alice) = world();
    let admin = s.admin_key();
    let rows = |service: &str, body: Json| -> Vec<(String, bool)> {
        ok(&s, &admin, &format!("{P1}/{service}"), body)["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["type"].as_str().unwrap().to_string(),
                    r["allowed"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        rows(
            "GetPermissionsForUser",
            json!({"name": "pressure", "user": "alice", "permissionName": "PropertyWrite"})
        ),
        vec![("PropertyWrite".to_string(), true)]
    );
    let all = rows("GetPermissionsForUser", json!({"user": "alice"}));
    assert!(all.contains(&("Read".into(), true)), "{all:?}");
    assert!(all.contains(&("Update".into(), false)), "{all:?}");
    let ops = rows("GetPermissionsForGroup", json!({"group": "Ops"}));
    assert!(ops.contains(&("PropertyRead".into(), true)), "{ops:?}");
    assert!(ops.contains(&("Read".into(), false)), "{ops:?}");
}

#[test]
fn d1_permissions_as_json_are_read_and_replaced_whole() {
    let (_t, s, _alice) = world();
    let admin = s.admin_key();
    let get = |service: &str| value(&s, &admin, service, json!({}));
    let run_time = get("GetRunTimePermissionsAsJSON");
    assert_eq!(run_time.as_array().unwrap().len(), 2, "{run_time}");
    // Replaced in one change: Ops loses PropertyRead, gains a deny of PropertyWrite.
    let new = json!([
        {"principal": "alice", "principalType": "User", "type": "PropertyWrite", "resource": "pressure", "allow": true},
        {"principal": "Ops", "principalType": "Group", "type": "PropertyWrite", "allow": false},
    ]);
    ok(
        &s,
        &admin,
        &format!("{P1}/SetRunTimePermissionsAsJSON"),
        json!({"permissions": new}),
    );
    let now = get("GetRunTimePermissionsAsJSON");
    let set: Vec<(Json, Json, Json)> = now
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["principal"].clone(),
                e["type"].clone(),
                e["allow"].clone(),
            )
        })
        .collect();
    assert_eq!(
        set,
        vec![
            (json!("alice"), json!("PropertyWrite"), json!(true)),
            (json!("Ops"), json!("PropertyWrite"), json!(false)),
        ]
    );
    // One bad item refuses the whole list, naming it, and changes nothing.
    for (bad, says) in [
        (
            json!([{"principal": "Ops", "principalType": "Group", "type": "Read"}]),
            "not a run-time permission",
        ),
        (
            json!([{"principal": "nobody", "principalType": "User", "type": "PropertyRead"}]),
            "there is no User",
        ),
        (
            json!([
                {"principal": "Ops", "principalType": "Group", "type": "PropertyRead"},
                {"principal": "Ops", "principalType": "Group", "type": "PropertyRead"},
            ]),
            "listed twice",
        ),
    ] {
        let (st, v) = post(
            &s,
            &admin,
            &format!("{P1}/SetRunTimePermissionsAsJSON"),
            json!({"permissions": bad}),
        );
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    assert_eq!(get("GetRunTimePermissionsAsJSON"), now, "nothing changed");
    // The other families, and the instance and collection variants.
    let vis = get("GetVisibilityPermissionsAsJSON");
    assert_eq!(
        vis,
        json!([{"principal": "Acme", "principalType": "Organization"}])
    );
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/SetInstanceVisibilityPermissionsAsJSON",
        json!({"permissions": vis}),
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/GetInstanceVisibilityPermissionsAsJSON",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], vis);
    ok(
        &s,
        &admin,
        "/Thingworx/Resources/CollectionFunctions/Services/SetCollectionDesignTimePermissionsAsJSON",
        json!({"collectionName": "Things", "permissions": [{"principal": "Ops", "principalType": "Group", "type": "Create"}]}),
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Resources/CollectionFunctions/Services/GetCollectionDesignTimePermissionsAsJSON",
        json!({"collectionName": "Things"}),
    );
    assert_eq!(v["rows"][0]["result"][0]["type"], "Create", "{v}");
    // Each replacement is one audit entry.
    let audit = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/AuditSubsystem/Services/QueryAuditHistory",
        json!({"auditCategory": "SECURITY"}),
    );
    let sets = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.to_string().contains("AsJSON"))
        .count();
    assert_eq!(sets, 3, "{audit}");
}

/// X1 for the platform's own rules: `ExplainAccess` explains a SecurityAdministrators, an
/// Auditors and a platform-Resource decision, as rules of the engine (P1, P2); and the services
/// they guard answer as the engine decides.
#[test]
fn x1_explain_access_explains_roles_and_platform_resources() {
    let (_t, s, alice) = world();
    let admin = s.admin_key();
    let explain = |user: &str, target: &str| -> (bool, String) {
        let v = ok(
            &s,
            &admin,
            "/Thingworx/Resources/SecurityServices/Services/ExplainAccess",
            json!({"user": user, "action": "ServiceInvoke", "target": target}),
        );
        let row = &v["rows"][0];
        (
            row["allowed"].as_bool().unwrap(),
            row["explanation"].as_str().unwrap().to_string(),
        )
    };
    let lint = "Resources/SecurityServices/Services/Lint";
    let audit = "Subsystems/AuditSubsystem/Services/QueryAuditHistory";
    let create = "Resources/EntityServices/Services/CreateThing";
    let (allowed, why) = explain("alice", lint);
    assert!(
        !allowed && why.contains("SecurityAdministrators") && why.contains("P2"),
        "{why}"
    );
    let (allowed, why) = explain("alice", audit);
    assert!(!allowed, "{why}");
    let (allowed, why) = explain("alice", create);
    assert!(
        allowed && why.contains("platform Resource") && why.contains("P1"),
        "{why}"
    );
    // alice runs the lint: refused, audited, by the same rule.
    let (st, v) = post(
        &s,
        &alice,
        "/Thingworx/Resources/SecurityServices/Services/Lint",
        json!({}),
    );
    assert_eq!(st, 403, "{v}");
    for group in ["SecurityAdministrators", "Auditors"] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Groups/{group}/Services/AddMember"),
            json!({"member": "alice", "type": "User"}),
        );
    }
    let (allowed, why) = explain("alice", lint);
    assert!(
        allowed && why.contains("members of SecurityAdministrators"),
        "{why}"
    );
    let (allowed, why) = explain("alice", audit);
    assert!(allowed && why.contains("members of Auditors"), "{why}");
    ok(
        &s,
        &alice,
        "/Thingworx/Resources/SecurityServices/Services/Lint",
        json!({}),
    );
}

/// Grants `alice` `ServiceInvoke` on `service` of every Resource, by an entry naming it (on the
/// Resources collection): what a role's non-member needs (P2).
fn grant_resource_service(s: &Server, admin: &str, service: &str) {
    ok(
        s,
        admin,
        "/Thingworx/Resources/CollectionFunctions/Services/AddCollectionRunTimePermission",
        json!({"collectionName": "Resources", "principal": "alice", "principalType": "User", "type": "ServiceInvoke", "resource": service}),
    );
}

#[test]
fn x1_explain_access_answers_what_the_call_gets_and_keeps_v1() {
    let (_t, s, alice) = world();
    let admin = s.admin_key();
    let explain = |key: &str, user: &str, action: &str, target: &str| {
        post(
            &s,
            key,
            "/Thingworx/Resources/SecurityServices/Services/ExplainAccess",
            json!({"user": user, "action": action, "target": target}),
        )
    };
    // Administrators-only services are the engine's role rules: the explanation and
    // CheckPermission say what the call then does.
    let collection = "Resources/CollectionFunctions/Services/GetCollectionRunTimePermissions";
    let reload = "Subsystems/PlatformSubsystem/Services/ReloadExtension";
    // (PlatformSubsystem is made visible to alice's organization: the role decides, not V1.)
    ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    for target in [collection, reload] {
        let (st, v) = explain(&admin, "alice", "ServiceInvoke", target);
        assert_eq!(st, 200, "{v}");
        let row = &v["rows"][0];
        assert_eq!(row["allowed"], false, "{target}: {v}");
        assert!(
            row["explanation"]
                .as_str()
                .unwrap()
                .contains("members of Administrators"),
            "{v}"
        );
    }
    let (st, v) = post(
        &s,
        &alice,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/ReloadExtension",
        json!({"packageName": "hello"}),
    );
    assert_eq!(st, 403, "{v}");
    let get = "/Thingworx/Resources/CollectionFunctions/Services/GetCollectionRunTimePermissions";
    let (st, v) = post(&s, &alice, get, json!({"collectionName": "Things"}));
    assert_eq!(st, 403, "{v}");
    // An entry naming the service grants it, and the explanation says so.
    grant_resource_service(&s, &admin, "GetCollectionRunTimePermissions");
    let (_, v) = explain(&admin, "alice", "ServiceInvoke", collection);
    assert_eq!(v["rows"][0]["allowed"], true, "{v}");
    let (st, v) = post(&s, &alice, get, json!({"collectionName": "Things"}));
    assert_eq!(st, 200, "{v}");
    // alice may explain (an entry naming ExplainAccess, not the SecurityAdministrators' role):
    // an entity she cannot see answers as a missing one, word for word.
    grant_resource_service(&s, &admin, "ExplainAccess");
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Hidden", "thingTemplateName": "Pump"}),
    );
    let (st_hidden, hidden) = explain(
        &alice,
        "alice",
        "PropertyRead",
        "Things/Hidden/Properties/pressure",
    );
    let (st_missing, missing) = explain(
        &alice,
        "alice",
        "PropertyRead",
        "Things/Nowhere/Properties/pressure",
    );
    assert_eq!(
        (st_hidden.as_u16(), st_missing.as_u16()),
        (400, 400),
        "{hidden} {missing}"
    );
    assert_eq!(
        hidden["error"].as_str().unwrap().replace("Hidden", "X"),
        missing["error"].as_str().unwrap().replace("Nowhere", "X")
    );
    // On what she sees, the explanation names no principal she cannot see: Ops' entry decides
    // alice's reads of P1, and Ops is not visible to her.
    let (st, v) = explain(
        &alice,
        "alice",
        "PropertyRead",
        "Things/P1/Properties/pressure",
    );
    assert_eq!(st, 200, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("\"Ops\"") && text.contains("a principal you cannot see"),
        "{text}"
    );
    // The administrator is told everything.
    let (_, v) = explain(
        &admin,
        "alice",
        "PropertyRead",
        "Things/P1/Properties/pressure",
    );
    assert!(v.to_string().contains("Ops"), "{v}");
}
