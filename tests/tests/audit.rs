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
    let text = include_str!("../../host/server/src/api/audit-service-permissions.json");
    serde_json::from_str(text).unwrap()
}

/// The shared data file and the server's copy are the same table.
#[test]
fn the_servers_permission_table_is_the_seeds() {
    let Some(dir) = thinghost_tests::shared_dir() else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("data/audit-service-permissions.json"))
        .expect("the shared folder holds data/audit-service-permissions.json");
    let shared: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(shared, table());
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

/// U5, row by row, for every service of the table: a user of a non-admin group with
/// exactly the listed grants runs the service; with any one of them taken away, it cannot (and
/// gets it back when the grant returns). Administrators run each without grants.
#[test]
fn u5_each_audit_service_needs_exactly_the_seeds_grants() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    let table = table();
    // The user-created repository of the export services.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "ExportRepo", "thingTemplateName": "FileRepository"}),
    );
    let services: Vec<String> = table["services"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(services.len(), 9, "every service of the seed's table");
    for service in &services {
        let service = service.as_str();
        let user = format!("u{service}");
        let key = member(&s, &admin, &user);
        let (org, group) = (format!("{user}Org"), format!("{user}Group"));
        let body = if service.starts_with("Export") {
            json!({"targetRepositoryName": "ExportRepo", "targetFileName": format!("{service}.jsonl.gz")})
        } else {
            json!({})
        };
        let call = |key: &str| post(&s, key, &format!("{AUDIT}/{service}"), body.clone()).0;
        assert_eq!(call(&admin), 200, "{service}: administrators");
        assert_ne!(call(&key), 200, "{service}: without grants");
        // The table's "<user-created FileRepository>" is the repository a call names: the
        // export services name one (targetRepositoryName); CleanupOfflineAudit names none, so
        // that row has nothing to apply to.
        let all: Vec<_> = table["services"][service]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| {
                service.starts_with("Export")
                    || row["entity"] != "Things/<user-created FileRepository>"
            })
            .map(|row| {
                let mut row = row.clone();
                if row["entity"] == "Things/<user-created FileRepository>" {
                    row["entity"] = json!("Things/ExportRepo");
                }
                row
            })
            .flat_map(|row| grants(&row, &org, &group))
            .collect();
        assert!(!all.is_empty());
        for g in &all {
            set(&s, &admin, g, true);
        }
        assert_eq!(call(&key), 200, "{service}: with every grant of the table");
        for g in &all {
            set(&s, &admin, g, false);
            let st = call(&key);
            // 403 naming the grant; 404 for the subsystem it cannot see; 400 for a repository
            // parameter naming a Thing it cannot see.
            assert!(
                st == 403 || st == 404 || st == 400,
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

    // The cap: 6000 more entries, written while the server runs (stamped an hour ahead: the
    // chain's timestamps never go backwards).
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 3_600_000;
    let mut store =
        thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE)).unwrap();
    let many: Vec<thinghost_store::AuditRecord> = (0..6000)
        .map(|i| thinghost_store::AuditRecord {
            timestamp: base + i,
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
        json!({"auditCategory": "SERVICE", "startDate": base, "endDate": base + 2999}),
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

/// Old entries, written straight into the database while the server runs (the clock of the
/// test is the entries' timestamps).
fn old_entries(s: &Server, timestamps: &[&str]) {
    let mut store =
        thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE)).unwrap();
    let records: Vec<thinghost_store::AuditRecord> = timestamps
        .iter()
        .map(|t| thinghost_store::AuditRecord {
            timestamp: thinghost_core::types::parse_datetime(t).unwrap(),
            user: "old".into(),
            category: "MODEL".into(),
            message_key: "entityUpdated".into(),
            args: json!({"at": t}),
            source: "Things/Old".into(),
            source_type: "Thing".into(),
        })
        .collect();
    store.append_audit_batch(&records).unwrap();
}

/// Writes an archive file of one line by hand (what a crash, or someone with the disk, left).
fn write_gz(path: &std::path::Path, line: &Json) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, format!("{line}\n").as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// Every entry online now leaves (as if archived long ago): entries written next are the oldest.
fn clear_online(s: &Server) {
    let mut store =
        thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE)).unwrap();
    let newest = store
        .query_audit(&thinghost_store::audit::AuditQuery {
            limit: 1,
            sorts: vec![(thinghost_store::audit::Field::Id, false)],
            ..Default::default()
        })
        .unwrap();
    if let Some(e) = newest.first() {
        store.drop_audit_through(e.id).unwrap();
    }
}

fn count(s: &Server, key: &str, body: Json) -> i64 {
    ok(s, key, &format!("{AUDIT}/GetAuditEntryCount"), body)["rows"][0]["result"]
        .as_i64()
        .unwrap()
}

/// U6: archive moves the oldest entries into dated, compressed files of the archive repository
/// and records lastArchivedTime; the chain still verifies; export writes one file into a
/// user's repository (with the archived entries, or the online ones only), never outside it;
/// cleanup deletes archive days older than a date; purge removes what is older than the
/// retention.
#[test]
fn u6_archive_export_cleanup_and_purge() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--audit-retention-days", "60"],
    );
    let admin = s.admin_key();
    // The entries of the server's own start are cleared (as if archived long ago), so that the
    // old entries below are the oldest, as they would be on a server that ran back then.
    clear_online(&s);
    old_entries(
        &s,
        &[
            "2026-01-01T10:00:00Z",
            "2026-01-01T11:00:00Z",
            "2026-01-02T10:00:00Z",
            "2026-01-05T10:00:00Z",
        ],
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/ArchiveAuditHistory"),
        json!({"olderThanDate": "2026-01-03T00:00:00Z"}),
    );
    let r = &v["rows"][0]["result"];
    assert_eq!(r["archived"], 3, "{v}");
    let files: Vec<String> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2, "one file per day: {files:?}");
    assert!(files[0].starts_with("archive/2026-01-01/"), "{files:?}");
    let repo = repository(&s.dir, "AuditArchiveFileRepository");
    assert!(repo.join(&files[0]).is_file());
    // The rest still verifies; the archived ones are gone from the online log.
    let v = ok(&s, &admin, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
    assert_eq!(v["rows"][0]["intact"], true, "{v}");
    assert_eq!(
        count(&s, &admin, json!({"endDate": "2026-01-04T00:00:00Z"})),
        0
    );
    let (st, v) = thinghost_tests::post(
        &s,
        &admin,
        "/Thingworx/Things/AuditArchiveScheduler/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(st.as_u16(), 200, "{v}");
    let r = s
        .client
        .get(s.at("/Thingworx/Things/AuditArchiveScheduler/Properties/lastArchivedTime"))
        .header("appKey", &admin)
        .send()
        .unwrap();
    let v: Json = r.json().unwrap();
    assert!(v["rows"][0]["lastArchivedTime"].is_string(), "{v}");

    // Export into a user's repository: with the archive, and without it.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "MyRepo", "thingTemplateName": "FileRepository"}),
    );
    let range = |extra: Json| {
        let mut b = json!({"startDate": "2026-01-01T00:00:00Z", "endDate": "2026-01-31T00:00:00Z", "targetRepositoryName": "MyRepo", "targetPath": "exports"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // What a crash between an archive's files and the removal of their entries leaves behind:
    // a second copy of archived entries (a later archive wrote them again under another name)
    // and a copy of an entry still online. An export has each entry once.
    std::fs::copy(
        repo.join(&files[0]),
        repo.join(files[0].replace(".jsonl.gz", "-again.jsonl.gz")),
    )
    .unwrap();
    let online_old = thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE))
        .unwrap()
        .query_audit(&thinghost_store::audit::AuditQuery {
            user: Some("old".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(online_old.len(), 1);
    let leftover = repo.join("archive/2026-01-05/entries-crashed.jsonl.gz");
    write_gz(
        &leftover,
        &json!({"id": online_old[0].id, "timestamp": online_old[0].record.timestamp}),
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/ExportAuditData"),
        range(json!({"targetFileName": "all.jsonl.gz"})),
    );
    assert_eq!(v["rows"][0]["result"]["exported"], 4, "{v}");
    // A copy that differs from the archived entry of the same id: an archive file was changed,
    // and the export says so rather than pick one.
    let first_line = {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(repo.join(&files[0])).unwrap()),
            &mut text,
        )
        .unwrap();
        let mut line: Json = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        line["user"] = json!("mallory");
        line["hash"] = json!("0".repeat(64));
        line
    };
    let forged = repo.join(files[0].replace(".jsonl.gz", "-forged.jsonl.gz"));
    write_gz(&forged, &first_line);
    let (st, v) = post(
        &s,
        &admin,
        &format!("{AUDIT}/ExportAuditData"),
        range(json!({"targetFileName": "forged.jsonl.gz"})),
    );
    assert_ne!(st, 200, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("an archive file was changed"),
        "{v}"
    );
    std::fs::remove_file(&forged).unwrap();
    std::fs::remove_file(repo.join(files[0].replace(".jsonl.gz", "-again.jsonl.gz"))).unwrap();
    std::fs::remove_file(&leftover).unwrap();
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/ExportOnlineAuditData"),
        range(json!({"targetFileName": "online.jsonl.gz"})),
    );
    assert_eq!(v["rows"][0]["result"]["exported"], 1, "{v}");
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/MyRepo/Services/ListFiles",
        json!({"path": "exports"}),
    );
    let names: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all.jsonl.gz", "online.jsonl.gz"]);
    let (st, v) = post(
        &s,
        &admin,
        &format!("{AUDIT}/ExportAuditData"),
        range(json!({"targetPath": "../..", "targetFileName": "escape.gz"})),
    );
    assert_eq!(st, 400, "{v}");
    let (st, _) = post(
        &s,
        &admin,
        &format!("{AUDIT}/ExportAuditData"),
        range(json!({"targetRepositoryName": "AuditArchiveScheduler", "targetFileName": "x.gz"})),
    );
    assert_eq!(st, 400, "not a FileRepository");
    // A target that is no file name, or a folder, is refused before anything is written.
    std::fs::create_dir_all(repository(&s.dir, "MyRepo").join("exports/sub")).unwrap();
    for bad in [
        json!({"targetFileName": ""}),
        json!({"targetFileName": "."}),
        json!({"targetFileName": "a/b.gz"}),
        json!({"targetFileName": "sub"}),
    ] {
        let (st, v) = post(
            &s,
            &admin,
            &format!("{AUDIT}/ExportAuditData"),
            range(bad.clone()),
        );
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert!(repository(&s.dir, "MyRepo").join("exports/sub").is_dir());

    // Cleanup: archive days before the date go.
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/CleanupOfflineAudit"),
        json!({"olderThanDate": "2026-01-02T00:00:00Z"}),
    );
    let deleted = v["rows"][0]["result"]["deleted"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(deleted.len(), 1, "{v}");
    assert!(repo.join(&files[1]).is_file(), "the later day stays");

    // Purge: entries older than the retention (60 days) leave; younger ones stay.
    let now = thinghost::now_ms();
    let at = |days: i64| thinghost_core::types::format_datetime(now - days * 86_400_000);
    clear_online(&s);
    old_entries(&s, &[&at(61), &at(59)]);
    let v = ok(&s, &admin, &format!("{AUDIT}/PurgeAuditData"), json!({}));
    assert_eq!(v["rows"][0]["result"]["purged"], 1, "{v}");
    assert_eq!(
        count(
            &s,
            &admin,
            json!({"query": {"filters": {"type": "EQ", "fieldName": "user", "value": "old"}}})
        ),
        1,
        "only the 59-day-old entry is left"
    );
    let v = ok(&s, &admin, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
    assert_eq!(v["rows"][0]["intact"], true, "{v}");
}

/// U7: a grant on AuditArchiveFileRepository succeeds, but only with a warning in the answer
/// and an audit entry (the security lint reports it too).
#[test]
fn u7_a_grant_on_the_archive_repository_comes_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    member(&s, &admin, "ann");
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/AuditArchiveFileRepository/Services/AddRunTimePermission",
        json!({"principal": "annGroup", "principalType": "Group", "type": "ServiceInvoke", "allow": true}),
    );
    assert!(
        v["warning"].as_str().unwrap().contains("never to grant"),
        "{v}"
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "SECURITY"}),
    );
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["messageKey"] == "auditArchiveRepositoryGranted")
    );
    // A deny on it takes nothing away from the advice: no warning, an empty answer (in both
    // services that add entries).
    let empty = |path: &str, body: Json| {
        let r = s
            .client
            .post(s.at(path))
            .header("appKey", &admin)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().unwrap(), "", "{path}");
    };
    empty(
        "/Thingworx/Things/AuditArchiveFileRepository/Services/AddRunTimePermission",
        json!({"principal": "annGroup", "principalType": "Group", "type": "PropertyRead", "allow": false}),
    );
    empty(
        "/Thingworx/Things/AuditArchiveFileRepository/Services/AddPermissions",
        json!({"permissions": [{"family": "designTime", "principal": "annGroup", "principalType": "Group", "type": "Read", "allow": false}]}),
    );
    // Removing a deny on it widens access: warned.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/AuditArchiveFileRepository/Services/DeleteRunTimePermission",
        json!({"principal": "annGroup", "principalType": "Group", "type": "PropertyRead"}),
    );
    assert!(
        v["warning"].as_str().unwrap().contains("never to grant"),
        "{v}"
    );
    // Other Things: no warning, an empty answer as before.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "P", "thingTemplateName": "GenericThing"}),
    );
    let r = s
        .client
        .post(s.at("/Thingworx/Things/P/Services/AddRunTimePermission"))
        .header("appKey", &admin)
        .json(&json!({"principal": "annGroup", "principalType": "Group", "type": "ServiceInvoke", "allow": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "");
}

fn set_property(s: &Server, key: &str, thing: &str, property: &str, value: Json) {
    let r = s
        .client
        .put(s.at(&format!("/Thingworx/Things/{thing}/Properties/{property}")))
        .header("appKey", key)
        .json(&json!({ property: value }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{thing}.{property}");
}

/// U6: a scheduler runs its job on its cron schedule, as its runAsUser, who must be an
/// administrator: the purge scheduler set to every second removes what is older than the
/// retention; with a non-administrator as runAsUser it does not run, and says so.
#[test]
fn u6_the_purge_scheduler_runs_on_its_schedule_as_an_administrator_only() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    member(&s, &admin, "ann");
    let old_ones = || {
        count(
            &s,
            &admin,
            json!({"query": {"filters": {"type": "EQ", "fieldName": "user", "value": "old"}}}),
        )
    };
    // A runAsUser who is no administrator: the job does not run.
    set_property(&s, &admin, "AuditPurgeScheduler", "runAsUser", json!("ann"));
    clear_online(&s);
    old_entries(&s, &["2020-01-01T00:00:00Z"]);
    set_property(
        &s,
        &admin,
        "AuditPurgeScheduler",
        "schedule",
        json!("* * * * * *"),
    );
    thinghost_tests::within_20s("the refusal", || {
        let v = ok(
            &s,
            &admin,
            &format!("{AUDIT}/QueryAuditHistory"),
            json!({"auditCategory": "AUDIT"}),
        );
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["messageKey"] == "schedulerRefused")
            .then_some(())
    });
    assert_eq!(old_ones(), 1, "nothing was purged");
    // As the Administrator, it runs.
    set_property(
        &s,
        &admin,
        "AuditPurgeScheduler",
        "runAsUser",
        json!("Administrator"),
    );
    thinghost_tests::within_20s("the purge", || (old_ones() == 0).then_some(()));
    let v = ok(&s, &admin, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
    assert_eq!(v["rows"][0]["intact"], true, "{v}");
}

/// U1: the calls of a service marked audited are recorded in SERVICE, with their parameters
/// (a PASSWORD masked) and their outcome; a service not marked leaves no SERVICE entry.
#[test]
fn u1_calls_of_a_service_marked_audited_are_recorded() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins/vault");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("main.rhai"),
        "fn open(code, secret) { if code == \"bad\" { throw \"invalid: no such code\" } \"open\" }\nfn peek() { \"peek\" }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("plugin.toml"),
        r#"[extension]
name = "vault"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[things]]
name = "Vault"

[[things.services]]
name = "Open"
handler = "open"
result = "STRING"
audit = "durable"
params = [{ name = "code", type = "STRING", required = true }, { name = "secret", type = "PASSWORD", required = true }]

[[things.services]]
name = "Peek"
handler = "peek"
result = "STRING"
"#,
    )
    .unwrap();
    let s = Server::start(
        &t.path().join("d"),
        &[
            "--dev",
            "--plugins",
            t.path().join("plugins").to_str().unwrap(),
            "--no-watch",
        ],
    );
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Vault/Services/Open",
        json!({"code": "1234", "secret": "hunter2"}),
    );
    let (st, _) = post(
        &s,
        &admin,
        "/Thingworx/Things/Vault/Services/Open",
        json!({"code": "bad", "secret": "hunter2"}),
    );
    assert_eq!(st, 400);
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Vault/Services/Peek",
        json!({}),
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "SERVICE"}),
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let statuses: Vec<i64> = rows
        .iter()
        .map(|r| r["args"]["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 200], "newest first");
    for r in rows {
        assert_eq!(r["source"], "Things/Vault");
        assert_eq!(r["args"]["service"], "Open");
        assert_eq!(r["args"]["parameters"]["secret"], "***");
        assert!(!r.to_string().contains("hunter2"));
    }
}

/// U1: a successful sign-in is recorded (once per credential and address in a window, not once
/// per request); a denial records the rule that decided it; a write to a scheduler's property is
/// recorded with the change; DaysToArchive below 1 deletes nothing.
#[test]
fn u1_sign_ins_denials_with_their_rule_and_scheduler_writes_are_recorded() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path());
    let admin = s.admin_key();
    let ann = member(&s, &admin, "ann");
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "P", "thingTemplateName": "GenericThing"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P/Services/AddVisibilityPermission",
        json!({"principal": "annOrg", "principalType": "Organization"}),
    );
    for _ in 0..3 {
        let (st, _) = post(
            &s,
            &ann,
            "/Thingworx/Things/P/Services/GetRunTimePermissions",
            json!({}),
        );
        assert_eq!(st, 403);
    }
    let rows = |category: &str, key: &str| -> Vec<Json> {
        let v = ok(
            &s,
            &admin,
            &format!("{AUDIT}/QueryAuditHistory"),
            json!({"auditCategory": category}),
        );
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["messageKey"] == key && r["user"] == "ann")
            .cloned()
            .collect()
    };
    let signed_in = thinghost_tests::within_20s("ann's sign-in entry", || {
        let r = rows("AUTHENTICATION", "signedIn");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(
        signed_in.len(),
        1,
        "one entry for three requests: {signed_in:?}"
    );
    assert_eq!(signed_in[0]["args"]["method"], "appKey", "{signed_in:?}");
    assert_eq!(signed_in[0]["args"]["credential"], "ann-key");
    let denied = thinghost_tests::within_20s("ann's denials", || {
        let r = rows("AUTHORIZATION", "permissionDenied");
        (r.len() == 3).then_some(r)
    });
    let rule = denied[0]["args"]["rule"].as_str().unwrap();
    assert!(rule.contains("default deny"), "{rule}");
    // A scheduler's property written: recorded, with who and what.
    set_property(
        &s,
        &admin,
        "AuditArchiveCleanupScheduler",
        "DaysToArchive",
        json!(0),
    );
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "MODEL"}),
    );
    let written: Vec<&Json> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["messageKey"] == "propertyWritten")
        .collect();
    assert_eq!(written.len(), 1, "{v}");
    assert_eq!(written[0]["source"], "Things/AuditArchiveCleanupScheduler");
    assert_eq!(written[0]["args"]["property"], "DaysToArchive");
    // ...and with DaysToArchive 0 the cleanup refuses rather than deleting every archive day.
    let (st, v) = post(
        &s,
        &admin,
        &format!("{AUDIT}/CleanupOfflineAudit"),
        json!({}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("at least 1"), "{v}");
    // Device data written to an ordinary Thing is not a configuration change: no entry.
    let before = count(&s, &admin, json!({"auditCategory": "MODEL"}));
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P/Services/AddPropertyDefinition",
        json!({"name": "temp", "type": "NUMBER"}),
    );
    set_property(&s, &admin, "P", "temp", json!(21.5));
    assert_eq!(
        count(&s, &admin, json!({"auditCategory": "MODEL"})),
        before + 1,
        "the definition is recorded, the value is not"
    );
}

/// U6 with a clock we control (`serve --dev-clock-offset-days`): 61 days on, the archive
/// scheduler moves what left the retention window into dated archive files and records
/// lastArchivedTime; 122 days on, PurgeAuditData removes online entries past the retention and
/// CleanupOfflineAudit deletes archive days older than DaysToArchive (30).
#[test]
fn u6_schedules_retention_and_cleanup_with_a_controlled_clock() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let day = 24 * 3_600_000i64;
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let iso = |ms: i64| thinghost_core::types::format_datetime(ms);
    // Today: some entries, and a key that outlives the shifts.
    let key = {
        let s = Server::start(&dir, &["--dev"]);
        let admin = s.admin_key();
        member(&s, &admin, "ann");
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateApplicationKey"),
            json!({"name": "long", "expirationDate": iso(real_now + 400 * day)}),
        )["rows"][0]["keyId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = |s: &Server, at: i64| count(s, &key, json!({"endDate": iso(at)}));
    let repo = repository(&dir, "AuditArchiveFileRepository").join("archive");
    // 61 days on: the daily archive (here every second) takes today's entries.
    {
        let s = Server::start(&dir, &["--dev", "--dev-clock-offset-days", "61"]);
        assert!(before(&s, real_now + 3_600_000) > 0);
        set_property(
            &s,
            &key,
            "AuditArchiveScheduler",
            "schedule",
            json!("* * * * * *"),
        );
        thinghost_tests::within_20s("the scheduled archive", || {
            (before(&s, real_now + 3_600_000) == 0).then_some(())
        });
        let v = s
            .client
            .get(s.at("/Thingworx/Things/AuditArchiveScheduler/Properties/lastArchivedTime"))
            .header("appKey", &key)
            .send()
            .unwrap()
            .json::<Json>()
            .unwrap();
        let last = thinghost_core::types::parse_datetime(
            v["rows"][0]["lastArchivedTime"].as_str().unwrap(),
        )
        .unwrap();
        assert!(last > real_now + 60 * day, "the shifted clock's time: {v}");
        let days: Vec<String> = std::fs::read_dir(&repo)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!days.is_empty(), "dated archive folders");
        set_property(&s, &key, "AuditArchiveScheduler", "enabled", json!(false));
        let v = ok(&s, &key, &format!("{AUDIT}/VerifyAuditChain"), json!({}));
        assert_eq!(v["rows"][0]["intact"], true, "{v}");
    }
    // 122 days on: the entries of day 61 are past the 60-day retention; the archive of day 0 is
    // past DaysToArchive.
    let s = Server::start(&dir, &["--dev", "--dev-clock-offset-days", "122"]);
    let day61 = real_now + 61 * day + 3_600_000;
    assert!(before(&s, day61) > 0);
    let v = ok(&s, &key, &format!("{AUDIT}/PurgeAuditData"), json!({}));
    assert!(
        v["rows"][0]["result"]["purged"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert_eq!(before(&s, day61), 0);
    let v = ok(&s, &key, &format!("{AUDIT}/CleanupOfflineAudit"), json!({}));
    assert!(
        !v["rows"][0]["result"]["deleted"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(&repo).unwrap().count(),
        0,
        "every archive day is gone"
    );
}

/// The folder of repository `name` in data directory `dir` (named by its identity).
fn repository(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join(thinghost::state::repository::FOLDER)
        .join(thinghost::state::repository::folder_of(name))
}
