//! The host services over REST, end to end: an administrator builds a model through the API and
//! a user works within it.

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, ok, post};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";

/// The administrator creates user alice (in group Ops, in organization Acme), template Pump with
/// a property, Thing P1 visible to Acme with PropertyRead for Ops, and a key for alice.
fn build(s: &Server) -> String {
    let admin = s.admin_key();
    ok(
        s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "alice", "password": "correct horse"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateGroup"),
        json!({"name": "Ops", "description": "operators"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Groups/Ops/Services/AddMember",
        json!({"member": "alice", "type": "User"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "Acme"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Organizations/Acme/Services/AddOrganizationalUnit",
        json!({"parentName": "Acme", "name": "Plant1"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Organizations/Acme/Services/AddMember",
        json!({"name": "Plant1", "member": "Ops", "type": "Group"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "Pump", "thingTemplateName": "GenericThing"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
        json!({"name": "pressure", "type": "NUMBER", "defaultValue": 1}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "P1", "thingTemplateName": "Pump", "tags": ["plant:1"]}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/P1/Services/AddVisibilityPermission",
        json!({"principal": "Acme:Plant1", "principalType": "OrganizationalUnit"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/P1/Services/AddRunTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "PropertyRead", "resource": "*", "allow": true}),
    );
    let v = ok(
        s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "alice-key", "user": "alice", "expirationDate": "2100-01-01T00:00:00Z", "clientName": "tests"}),
    );
    assert_eq!(v["rows"][0]["warning"], "");
    v["rows"][0]["keyId"].as_str().unwrap().to_string()
}

#[test]
fn an_administrator_builds_a_model_over_rest_and_a_user_works_within_it() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let alice = build(&s);
    let admin = s.admin_key();
    // alice reads, cannot write, cannot look at the definition, cannot create.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/P1/Properties/pressure"))
        .header("appKey", &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Json>().unwrap()["rows"][0]["pressure"], json!(1));
    let r = s
        .client
        .put(s.at("/Thingworx/Things/P1/Properties/pressure"))
        .header("appKey", &alice)
        .json(&json!({"pressure": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let (st, _) = post(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "P2", "thingTemplateName": "Pump"}),
    );
    assert_eq!(st, 403);
    let (st, _v) = post(
        &s,
        &alice,
        "/Thingworx/Things/P1/Services/AddRunTimePermission",
        json!({"principal": "alice", "principalType": "User", "type": "PropertyWrite"}),
    );
    assert_eq!(st, 403, "a user cannot grant itself anything: {_v}");
    // Basic authentication with the password.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/P1/Properties/pressure"))
        .basic_auth("alice", Some("correct horse"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Session information.
    let v = ok(
        &s,
        &alice,
        "/Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], "alice");
    // V1: her groups and organizations, as far as she can see them.
    let names = |service: &str| -> Vec<String> {
        let v = ok(
            &s,
            &alice,
            &format!("/Thingworx/Resources/CurrentSessionInfo/Services/{service}"),
            json!({}),
        );
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("GetCurrentUserGroups").is_empty());
    assert!(names("GetCurrentUserOrganizations").is_empty());
    for collection in ["Groups/Ops", "Organizations/Acme"] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/{collection}/Services/AddVisibilityPermission"),
            json!({"principal": "Acme", "principalType": "Organization"}),
        );
    }
    assert_eq!(names("GetCurrentUserGroups"), vec!["Ops"]);
    assert_eq!(names("GetCurrentUserOrganizations"), vec!["Acme"]);
    let v = ok(
        &s,
        &alice,
        "/Thingworx/Things/P1/Services/GetPermissionsForCurrentUser",
        json!({}),
    );
    let allowed: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["allowed"] == true)
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(allowed, vec!["PropertyRead"]);
    // Explanations, for administrators only.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Resources/SecurityServices/Services/ExplainAccess",
        json!({"user": "alice", "action": "PropertyRead", "target": "Things/P1/Properties/pressure"}),
    );
    assert_eq!(v["rows"][0]["allowed"], true);
    assert!(
        v["rows"][0]["explanation"]
            .as_str()
            .unwrap()
            .contains("group Ops"),
        "{v}"
    );
    let (st, _) = post(
        &s,
        &alice,
        "/Thingworx/Resources/SecurityServices/Services/ExplainAccess",
        json!({"user": "alice", "action": "PropertyRead", "target": "Things/P1"}),
    );
    assert_eq!(st, 403);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/CheckPermissionForUser",
        json!({"user": "alice", "type": "PropertyWrite"}),
    );
    assert_eq!(v["rows"][0]["result"], false);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"][0]["principal"], "Ops");
    // Create granted on the collection: alice creates and owns (so sees) her Thing.
    ok(
        &s,
        &admin,
        "/Thingworx/Resources/CollectionFunctions/Services/AddCollectionDesignTimePermission",
        json!({"collectionName": "Things", "principal": "alice", "principalType": "User", "type": "Create", "allow": true}),
    );
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Mine", "thingTemplateName": "Pump"}),
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Things"))
        .header("appKey", &alice)
        .send()
        .unwrap();
    let body = r.text().unwrap();
    assert!(body.contains("Mine") && body.contains("P1"), "{body}");
    // Deletion.
    let r = s
        .client
        .delete(s.at("/Thingworx/Things/Mine"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Mine"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let (st, v) = post(
        &s,
        &admin,
        &format!("{ES}/DeleteThingTemplate"),
        json!({"name": "Pump"}),
    );
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Things/P1"), "{v}");
    // Every change was audited, and so was every denial.
    // (Denials are queued: on disk within milliseconds, so look until they are.)
    let wanted = [
        "entityCreated",
        "permissionsChanged",
        "membershipChanged",
        "entityDeleted",
        "permissionDenied",
    ];
    thinghost_tests::within_20s("every change and denial in the audit log", || {
        let mut db =
            thinghost_store::Db::open(&t.path().join("d"), thinghost_core::Policy::default())
                .unwrap();
        let keys: Vec<String> = db
            .audit_records(200)
            .unwrap()
            .into_iter()
            .map(|r| r.message_key)
            .collect();
        wanted
            .iter()
            .all(|k| keys.contains(&k.to_string()))
            .then_some(())
    });
}

#[test]
fn bad_service_calls_answer_400_404_405_409_naming_the_problem() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let alice = build(&s);
    let admin = s.admin_key();
    for (path, body, status, says) in [
        (
            format!("{ES}/CreateThing"),
            json!({"name": "X", "thingTemplateName": "NoSuch"}),
            400,
            "parameter thingTemplateName",
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "X"}),
            400,
            "parameter thingTemplateName",
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "X", "thingTemplateName": "Pump", "colour": "red"}),
            400,
            "no parameter \"colour\"",
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P1", "thingTemplateName": "Pump"}),
            409,
            "is not available",
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "a/b", "thingTemplateName": "Pump"}),
            400,
            "parameter name",
        ),
        (
            format!("{ES}/CreateUser"),
            json!({"name": "bob", "password": "short"}),
            400,
            "parameter password",
        ),
        (
            format!("{ES}/CreateUser"),
            json!({"name": "bob", "password": 12345678}),
            400,
            "parameter password",
        ),
        (
            format!("{ES}/CreateApplicationKey"),
            json!({"name": "k", "expirationDate": "soon"}),
            400,
            "parameter expirationDate",
        ),
        (
            format!("{ES}/CreateApplicationKey"),
            json!({"name": "k", "expirationDate": 1000}),
            400,
            "expired already",
        ),
        (format!("{ES}/Frobnicate"), json!({}), 404, "no service"),
        (
            "/Thingworx/Things/P1/Services/AddRunTimePermission".into(),
            json!({"principal": "Ops", "principalType": "Crowd", "type": "PropertyRead"}),
            400,
            "principalType",
        ),
        (
            "/Thingworx/Things/P1/Services/AddRunTimePermission".into(),
            json!({"principal": "Ops", "principalType": "Group", "type": "Fly"}),
            400,
            "parameter type",
        ),
        (
            "/Thingworx/Things/P1/Services/AddRunTimePermission".into(),
            json!({"principal": "ghost", "principalType": "User", "type": "PropertyRead"}),
            400,
            "ghost",
        ),
        (
            "/Thingworx/Things/P1/Services/AddDesignTimePermission".into(),
            json!({"principal": "Ops", "principalType": "Group", "type": "Create"}),
            400,
            "collection",
        ),
        (
            "/Thingworx/Groups/Ops/Services/AddRunTimePermission".into(),
            json!({"principal": "Ops", "principalType": "Group", "type": "ServiceInvoke"}),
            400,
            "R5",
        ),
        (
            "/Thingworx/Groups/Ops/Services/AddMember".into(),
            json!({"member": "Ops", "type": "Group"}),
            400,
            "cycle",
        ),
        (
            "/Thingworx/Things/Nope/Services/GetRunTimePermissions".into(),
            json!({}),
            404,
            "was not found",
        ),
        (
            "/Thingworx/Things/P1/Services/AddShapeToThing".into(),
            json!({"thingShapeName": "Nope"}),
            400,
            "parameter thingShapeName",
        ),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition".into(),
            json!({"name": "pressure", "type": "STRING"}),
            400,
            "defined twice",
        ),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition".into(),
            json!({"name": "x", "type": "WIDGET"}),
            400,
            "not a base type",
        ),
        (
            "/Thingworx/Users/Administrator/Services/AddMember".into(),
            json!({}),
            404,
            "no service",
        ),
    ] {
        let (st, v) = post(&s, &admin, &path, body.clone());
        assert_eq!(st.as_u16(), status, "{path} {body}: {v}");
        let text = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        assert!(text.contains(says), "{path} {body}: {v}");
    }
    // Malformed JSON and wrong content type on a service call.
    let r = s
        .client
        .post(s.at(&format!("{ES}/CreateGroup")))
        .header("appKey", &admin)
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("line 1"));
    let r = s
        .client
        .post(s.at(&format!("{ES}/CreateGroup")))
        .header("appKey", &admin)
        .body("{\"name\": \"G\"}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = s
        .client
        .get(s.at(&format!("{ES}/CreateGroup")))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    // A service that invisible entities would answer is the same 404 as for absent ones.
    let (st1, v1) = post(
        &s,
        &alice,
        "/Thingworx/Things/Mine2/Services/GetPermissionsForCurrentUser",
        json!({}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Hidden", "thingTemplateName": "Pump"}),
    );
    let (st2, v2) = post(
        &s,
        &alice,
        "/Thingworx/Things/Hidden/Services/GetPermissionsForCurrentUser",
        json!({}),
    );
    assert_eq!(
        (st1, v1.to_string().replace("Mine2", "X")),
        (st2, v2.to_string().replace("Hidden", "X"))
    );
}

#[test]
fn k4_keys_for_administrators_come_with_a_warning_and_keys_for_others_need_an_administrator() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let alice = build(&s);
    let admin = s.admin_key();
    let v = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "admin-2", "user": "Administrator"}),
    );
    assert!(
        v["rows"][0]["warning"]
            .as_str()
            .unwrap()
            .contains("Administrators"),
        "{v}"
    );
    // The key works, once shown; GetKeyID shows only a fingerprint.
    let key = v["rows"][0]["keyId"].as_str().unwrap().to_string();
    let v = ok(
        &s,
        &key,
        "/Thingworx/ApplicationKeys/admin-2/Services/GetKeyID",
        json!({}),
    );
    let text = v["rows"][0]["result"].as_str().unwrap();
    assert!(
        text.starts_with("fingerprint:") && !text.contains(&key),
        "{text}"
    );
    // alice may create keys (with Create on the collection) only for herself.
    ok(
        &s,
        &admin,
        "/Thingworx/Resources/CollectionFunctions/Services/AddCollectionDesignTimePermission",
        json!({"collectionName": "ApplicationKeys", "principal": "alice", "principalType": "User", "type": "Create"}),
    );
    // Administrator is not even visible to her (a USERNAME parameter must name a user she sees).
    let (st, v) = post(
        &s,
        &alice,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "sneaky", "user": "Administrator"}),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("parameter user"),
        "{v}"
    );
    // A user she can see: still refused, only administrators make keys for someone else.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "bob", "password": "bob's password"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Users/bob/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    let (st, v) = post(
        &s,
        &alice,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "sneaky", "user": "bob"}),
    );
    assert_eq!(st, 403, "{v}");
    let v = ok(
        &s,
        &alice,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "alice-2"}),
    );
    let exp = v["rows"][0]["expirationDate"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (exp - now - 86_400_000).abs() < 60_000,
        "the default lifetime is 24 h"
    );
    // D2: alice may change her own password.
    ok(
        &s,
        &alice,
        "/Thingworx/Users/alice/Services/ChangePassword",
        json!({"oldPassword": "correct horse", "newPassword": "battery staple"}),
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Things/P1/Properties/pressure"))
        .basic_auth("alice", Some("battery staple"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn p1_data_storage_things_need_a_visible_provider_and_the_platform_service() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let alice = build(&s);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        "/Thingworx/Resources/CollectionFunctions/Services/AddCollectionDesignTimePermission",
        json!({"collectionName": "Things", "principal": "Ops", "principalType": "Group", "type": "Create"}),
    );
    // thingTemplateName is a THINGTEMPLATENAME: alice must see DataTable first.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/DataTable/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    let (st, v) = post(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "DataTable"}),
    );
    assert_eq!(st, 403, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("persistence provider")
            && msg.contains("GetDefaultDataPersistenceProviderName"),
        "{msg}"
    );
    ok(
        &s,
        &admin,
        "/Thingworx/PersistenceProviders/ThingworxPersistenceProvider/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    let (st, v) = post(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "DataTable"}),
    );
    assert_eq!(st, 403);
    let msg = v["error"].as_str().unwrap();
    assert!(
        !msg.contains("persistence provider (")
            && msg.contains("GetDefaultDataPersistenceProviderName"),
        "{msg}"
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/AddVisibilityPermission",
        json!({"principal": "Acme", "principalType": "Organization"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/AddRunTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "ServiceInvoke", "resource": "GetDefaultDataPersistenceProviderName"}),
    );
    ok(
        &s,
        &alice,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "DataTable"}),
    );
    let v = ok(
        &s,
        &alice,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetDefaultDataPersistenceProviderName",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], "ThingworxPersistenceProvider");
}

#[test]
fn k5_repeated_failed_sign_ins_are_slowed() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    build(&s);
    let p = "/Thingworx/Things/P1/Properties/pressure";
    for _ in 0..3 {
        let r = s
            .client
            .get(s.at(p))
            .basic_auth("alice", Some("wrong"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let start = std::time::Instant::now();
    let r = s
        .client
        .get(s.at(p))
        .basic_auth("alice", Some("correct horse"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the right password still works while slowed"
    );
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "the fourth attempt waits"
    );
}

#[test]
fn k5_repeated_failed_sign_ins_lock_the_user_out_and_are_audited() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let s = Server::start(
        &dir,
        &[
            "--dev",
            "--signin-slow-after",
            "100",
            "--signin-lockout-after",
            "3",
        ],
    );
    build(&s);
    let p = "/Thingworx/Things/P1/Properties/pressure";
    for _ in 0..3 {
        let r = s
            .client
            .get(s.at(p))
            .basic_auth("alice", Some("wrong"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Locked out: the right password is refused too, for the lockout period.
    let r = s
        .client
        .get(s.at(p))
        .basic_auth("alice", Some("correct horse"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut db = thinghost_store::Db::open(&dir, thinghost_core::Policy::default()).unwrap();
    let keys: Vec<String> = db
        .audit_records(50)
        .unwrap()
        .into_iter()
        .map(|r| r.message_key)
        .collect();
    assert!(keys.contains(&"lockedOut".to_string()), "{keys:?}");
}

#[test]
fn instance_permissions_on_a_template_reach_every_thing_of_it() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev", "--key-lifetime-hours", "2"]);
    let alice = build(&s);
    let admin = s.admin_key();
    let p = "/Thingworx/Things/P1/Properties/pressure";
    let put = |key: &str| {
        s.client
            .put(s.at(p))
            .header("appKey", key)
            .json(&json!({"pressure": 7}))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(put(&alice), 403);
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddInstanceRunTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "PropertyWrite", "resource": "pressure", "allow": true}),
    );
    assert_eq!(put(&alice), 200);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/GetInstanceRunTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"][0]["resource"], "pressure");
    // The template's own permissions are another list.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 0);
    // Things have no instance permissions.
    let (st, _) = post(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddInstanceRunTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "PropertyWrite"}),
    );
    assert_eq!(st, 404);
    // The entity's own deny beats the template's allow (R1).
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddRunTimePermission",
        json!({"principal": "alice", "principalType": "User", "type": "PropertyWrite", "resource": "pressure", "allow": false}),
    );
    assert_eq!(put(&alice), 403);
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/DeleteRunTimePermission",
        json!({"principal": "alice", "principalType": "User", "type": "PropertyWrite", "resource": "pressure"}),
    );
    assert_eq!(put(&alice), 200);
    // --key-lifetime-hours sets the default lifetime of new keys.
    let v = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "short"}),
    );
    let exp = v["rows"][0]["expirationDate"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((exp - now - 2 * 3_600_000).abs() < 60_000);
}

#[test]
fn shapes_definitions_data_shapes_members_and_permission_lists_over_rest() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let alice = build(&s);
    let admin = s.admin_key();
    let get = |key: &str, path: &str| {
        let r = s
            .client
            .get(s.at(path))
            .header("appKey", key)
            .send()
            .unwrap();
        (r.status(), r.json::<Json>().unwrap_or(Json::Null))
    };
    // A shape with a property, implemented by P1: the property is P1's, from the shape.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThingShape"),
        json!({"name": "Rotating"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/ThingShapes/Rotating/Services/AddPropertyDefinition",
        json!({"name": "rpm", "type": "INTEGER", "defaultValue": 1500}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddShapeToThing",
        json!({"thingShapeName": "Rotating"}),
    );
    let (st, v) = get(&admin, "/Thingworx/Things/P1");
    assert_eq!(st, 200);
    let rpm = v["propertyDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["definition"]["name"] == "rpm")
        .expect("rpm");
    assert_eq!(rpm["source"], "ThingShapes/Rotating");
    assert_eq!(v["implementedShapes"], json!(["Rotating"]));
    assert_eq!(
        get(&alice, "/Thingworx/Things/P1/Properties/rpm").1["rows"][0]["rpm"],
        1500
    );
    // Removing a definition removes the property.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingShapes/Rotating/Services/DeletePropertyDefinition",
        json!({"name": "rpm"}),
    );
    assert_eq!(get(&alice, "/Thingworx/Things/P1/Properties/rpm").0, 404);
    let (st, _) = post(
        &s,
        &admin,
        "/Thingworx/ThingShapes/Rotating/Services/DeletePropertyDefinition",
        json!({"name": "rpm"}),
    );
    assert_eq!(st, 400);
    // A data shape with fields.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateDataShape"),
        json!({"name": "Reading", "fields": [
        {"name": "at", "baseType": "DATETIME", "isPrimaryKey": true},
        {"name": "value", "baseType": "NUMBER"}]}),
    );
    let (_, v) = get(&admin, "/Thingworx/DataShapes/Reading");
    assert_eq!(v["fieldDefinitions"][0]["name"], "at");
    assert_eq!(v["fieldDefinitions"][0]["isPrimaryKey"], true);
    let (st, _) = post(
        &s,
        &admin,
        &format!("{ES}/CreateDataShape"),
        json!({"name": "Bad", "fields": [{"name": "x", "baseType": "WIDGET"}]}),
    );
    assert_eq!(st, 400);
    // Design-time and visibility lists, and their deletion.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddDesignTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "Read", "allow": true}),
    );
    assert_eq!(get(&alice, "/Thingworx/Things/P1").0, 200);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/GetDesignTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"][0]["type"], "Read");
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/DeleteDesignTimePermission",
        json!({"principal": "Ops", "principalType": "Group", "type": "Read"}),
    );
    assert_eq!(get(&alice, "/Thingworx/Things/P1").0, 403);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/GetVisibilityPermissions",
        json!({}),
    );
    assert_eq!(v["rows"][0]["principal"], "Acme:Plant1");
    // Leaving the group ends the grant; losing the visibility hides the Thing.
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/Ops/Services/DeleteMember",
        json!({"member": "alice", "type": "User"}),
    );
    assert_eq!(
        get(&alice, "/Thingworx/Things/P1/Properties/pressure").0,
        404,
        "alice saw P1 through Ops's unit"
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/Ops/Services/AddMember",
        json!({"member": "alice", "type": "User"}),
    );
    assert_eq!(
        get(&alice, "/Thingworx/Things/P1/Properties/pressure").0,
        200
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/DeleteVisibilityPermission",
        json!({"principal": "Acme:Plant1", "principalType": "OrganizationalUnit"}),
    );
    assert_eq!(
        get(&alice, "/Thingworx/Things/P1/Properties/pressure").0,
        404
    );
}

#[test]
fn names_with_spaces_and_non_ascii_letters_work_in_urls() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Pumpe Ä 7", "thingTemplateName": "GenericThing"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pumpe%20%C3%84%207/Services/AddPropertyDefinition",
        json!({"name": "level", "type": "NUMBER", "defaultValue": 4}),
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Pumpe%20%C3%84%207/Properties/level"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Json>().unwrap()["rows"][0]["level"], 4);
    // An encoded slash cannot smuggle a path segment; invalid UTF-8 is a 400.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/a%2Fb"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .get(s.at("/Thingworx/Things/%FF"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}
