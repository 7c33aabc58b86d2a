//! The audit subsystem against the real server (DOMAIN section 7): the seed's permission table
//! row by row (U5), queries and their cap (U3), the hash chain and tampering (U2), the
//! categories (U1).

use serde_json::{Value as Json, json};
use std::path::Path;
use thinghost_store::Store;
use thinghost_tests::{Server, ok, post};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const AUDIT: &str = "/Thingworx/Subsystems/AuditSubsystem/Services";

fn serve(t: &Path) -> Server {
    Server::start(&t.join("d"), &["--dev"])
}

/// The seed's table, as the issue gives it.
fn table() -> Json {
    let text = include_str!("../../host/server/src/audit-service-permissions.json");
    serde_json::from_str(text).unwrap()
}

/// The shared data file and the server's copy are the same table.
#[test]
fn the_servers_permission_table_is_the_seeds() {
    let shared = thinghost_tests::workspace().join("../shared/data/audit-service-permissions.json");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        let shared: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(shared, table());
    }
}

/// One grant of a table row: (entity path, the service that adds it, its parameters).
fn grants(row: &Json, org: &str, group: &str) -> Vec<(String, String, Json)> {
    let entity = row["entity"].as_str().unwrap().to_string();
    let mut out = Vec::new();
    if row["visibility"] == json!(true) {
        out.push((
            entity.clone(),
            "VisibilityPermission".into(),
            json!({"principal": org, "principalType": "Organization"}),
        ));
    }
    for d in row["designTime"].as_array().unwrap() {
        out.push((
            entity.clone(),
            "DesignTimePermission".into(),
            json!({"principal": group, "principalType": "Group", "type": d, "allow": true}),
        ));
    }
    for r in row["runTime"].as_array().unwrap() {
        out.push((
            entity.clone(),
            "RunTimePermission".into(),
            json!({"principal": group, "principalType": "Group", "type": r["type"], "resource": r["resource"], "allow": true}),
        ));
    }
    out
}

fn set(s: &Server, admin: &str, grant: &(String, String, Json), add: bool) {
    let (entity, what, params) = grant;
    let verb = if add { "Add" } else { "Delete" };
    ok(
        s,
        admin,
        &format!("/Thingworx/{entity}/Services/{verb}{what}"),
        params.clone(),
    );
}

/// A user in a group in an organization, with a key.
fn member(s: &Server, admin: &str, name: &str) -> String {
    ok(
        s,
        admin,
        &format!("{ES}/CreateUser"),
        json!({"name": name, "password": "a long password 1"}),
    );
    let group = format!("{name}Group");
    let org = format!("{name}Org");
    ok(
        s,
        admin,
        &format!("{ES}/CreateGroup"),
        json!({"name": group}),
    );
    ok(
        s,
        admin,
        &format!("/Thingworx/Groups/{group}/Services/AddMember"),
        json!({"member": name, "type": "User"}),
    );
    ok(
        s,
        admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": org}),
    );
    ok(
        s,
        admin,
        &format!("/Thingworx/Organizations/{org}/Services/AddMember"),
        json!({"name": org, "member": group, "type": "Group"}),
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

/// U5, row by row, for the services whose entities exist: a user of a non-admin group with
/// exactly the listed grants runs the service; with any one of them taken away, it cannot (and
/// gets it back when the grant returns). Administrators run each without grants.
#[test]
fn u5_each_audit_service_needs_exactly_the_seeds_grants() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    let table = table();
    for service in [
        "QueryAuditHistory",
        "QueryAuditHistoryWithQueryCriteria",
        "GetAuditEntryCount",
    ] {
        let user = format!("u{service}");
        let key = member(&s, &admin, &user);
        let (org, group) = (format!("{user}Org"), format!("{user}Group"));
        let call = |key: &str| post(&s, key, &format!("{AUDIT}/{service}"), json!({})).0;
        assert_eq!(call(&admin), 200, "{service}: administrators");
        assert_ne!(call(&key), 200, "{service}: without grants");
        let all: Vec<_> = table["services"][service]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| grants(row, &org, &group))
            .collect();
        assert!(!all.is_empty());
        for g in &all {
            set(&s, &admin, g, true);
        }
        assert_eq!(call(&key), 200, "{service}: with every grant of the table");
        for g in &all {
            set(&s, &admin, g, false);
            let st = call(&key);
            assert!(
                st == 403 || st == 404,
                "{service}: still {st} without {g:?}"
            );
            set(&s, &admin, g, true);
            assert_eq!(call(&key), 200, "{service}: {g:?} back");
        }
    }
}

/// U3: QueryAuditHistory answers the vendor's AuditHistory rows, newest first, filtered by
/// category, dates and a QUERY; maxItems is capped at 5000; the count agrees. U1: categories.
#[test]
fn u1_u3_queries_answer_audit_history_rows_with_their_filters_and_cap() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Pump1", "thingTemplateName": "GenericThing"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/AddRunTimePermission",
        json!({"principal": "Users", "principalType": "Group", "type": "PropertyRead", "allow": true}),
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Things"))
        .header("appKey", "not-a-key")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 100}),
    );
    let fields = v["dataShape"]["fieldDefinitions"].as_object().unwrap();
    for f in [
        "timestamp",
        "user",
        "auditCategory",
        "sourceType",
        "source",
        "message",
    ] {
        assert!(fields.contains_key(f), "{f}");
    }
    let rows = v["rows"].as_array().unwrap();
    let categories: Vec<&str> = rows
        .iter()
        .map(|r| r["auditCategory"].as_str().unwrap())
        .collect();
    for c in ["MODEL", "SECURITY", "AUTHENTICATION"] {
        assert!(categories.contains(&c), "{c} in {categories:?}");
    }
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "SECURITY"}),
    );
    let rows = v["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["auditCategory"] == "SECURITY"));
    assert!(
        rows.iter()
            .any(|r| r["source"] == "Things/Pump1" && r["messageKey"] == "permissionsChanged")
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistoryWithQueryCriteria"),
        json!({"query": {"filters": {"type": "And", "filters": [
            {"type": "EQ", "fieldName": "source", "value": "Things/Pump1"},
            {"type": "IN", "fieldName": "auditCategory", "values": ["MODEL", "SECURITY"]}
        ]}, "sorts": [{"fieldName": "id", "isAscending": true}]}, "maxItems": 1, "offset": 1}),
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["messageKey"], "permissionsChanged",
        "the second, oldest first"
    );
    let (st, v) = post(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistoryWithQueryCriteria"),
        json!({"query": {"filters": {"type": "EQ", "fieldName": "password", "value": "x"}}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no field"), "{v}");

    // The cap: 6000 more entries, written while the server runs.
    let mut store =
        thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE)).unwrap();
    let many: Vec<thinghost_store::AuditRecord> = (0..6000)
        .map(|i| thinghost_store::AuditRecord {
            timestamp: 1_000 + i,
            user: "bulk".into(),
            category: "SERVICE".into(),
            message_key: "serviceCalled".into(),
            args: json!({}),
            source: "Things/Pump1".into(),
            source_type: "Thing".into(),
        })
        .collect();
    store.append_audit_batch(&many).unwrap();
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 10000}),
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 5000);
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/GetAuditEntryCount"),
        json!({"auditCategory": "SERVICE", "endDate": "1970-01-01T00:00:03.999Z"}),
    );
    assert_eq!(v["rows"][0]["result"], 3000);
}

/// U2: an entry changed directly in the database is reported by VerifyAuditChain, at its id.
#[test]
fn u2_verify_audit_chain_reports_a_tampered_entry() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    for name in ["a", "b", "c"] {
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateThing"),
            json!({"name": name, "thingTemplateName": "GenericThing"}),
        );
    }
    let v = ok(&s, &admin, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
    assert_eq!(v["rows"][0]["intact"], true, "{v}");
    let conn = rusqlite::Connection::open(s.dir.join(thinghost_store::DB_FILE)).unwrap();
    let id: i64 = conn
        .query_row("SELECT id FROM audit WHERE source = 'Things/b'", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute("UPDATE audit SET user = 'someone else' WHERE id = ?1", [id])
        .unwrap();
    let v = ok(&s, &admin, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
    assert_eq!(v["rows"][0]["intact"], false, "{v}");
    assert_eq!(v["rows"][0]["brokenAtId"], id, "{v}");
    // The check itself is recorded, in AUDIT.
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "AUDIT", "maxItems": 5}),
    );
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["messageKey"] == "auditServiceCalled")
    );
}

/// U4: QueryAuditHistory on a Thing, for users with ServiceInvoke on it (and visibility): a
/// member of Auditors sees every entry of the Thing; anyone else only their own entries on it;
/// without the permission, 403.
#[test]
fn u4_auditors_see_every_entry_of_a_thing_others_only_their_own() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    let ann = member(&s, &admin, "ann");
    let bob = member(&s, &admin, "bob");
    let carol = member(&s, &admin, "carol");
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/Auditors/Services/AddMember",
        json!({"member": "carol", "type": "User"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Pump1", "thingTemplateName": "GenericThing"}),
    );
    for who in ["ann", "bob", "carol"] {
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Pump1/Services/AddVisibilityPermission",
            json!({"principal": format!("{who}Org"), "principalType": "Organization"}),
        );
    }
    let query = |key: &str| {
        post(
            &s,
            key,
            "/Thingworx/Things/Pump1/Services/QueryAuditHistory",
            json!({}),
        )
    };
    // Without ServiceInvoke on it: denied (and that denial is bob's entry on Pump1).
    assert_eq!(query(&bob).0, 403);
    for who in ["ann", "bob", "carol"] {
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Pump1/Services/AddRunTimePermission",
            json!({"principal": who, "principalType": "User", "type": "ServiceInvoke", "resource": "QueryAuditHistory", "allow": true}),
        );
    }
    let users = |v: &Json| -> std::collections::BTreeSet<String> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["user"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, v) = query(&ann);
    assert_eq!(st, 200, "{v}");
    assert_eq!(users(&v), ["ann".to_string()].into(), "{v}");
    let (_, v) = query(&bob);
    assert_eq!(users(&v), ["bob".to_string()].into(), "{v}");
    let (_, v) = query(&carol);
    let seen = users(&v);
    for who in ["Administrator", "ann", "bob", "carol"] {
        assert!(seen.contains(who), "{who} in {seen:?}");
    }
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == "Things/Pump1")
    );
}
