//! The SQLite store: reopening restores the exact model; refused or failed writes change nothing.

use thinghost_core::*;
use thinghost_store::*;

fn sample(db: &mut Db) {
    db.change(|tx| {
        tx.create(Entity::user("dev1"))?;
        tx.create(Entity::template("Pump", "GenericThing"))?;
        let mut t = Entity::thing("Pump1", "Pump");
        t.permissions.run_time.push(PermissionEntry::new(
            PrincipalRef::user("dev1"),
            Permission::ServiceInvoke,
            "Reset",
            true,
        ));
        tx.create(t)?;
        tx.collection_mut(Kind::Thing)
            .design_time
            .push(PermissionEntry::new(
                PrincipalRef::user("dev1"),
                Permission::Create,
                "*",
                true,
            ));
        Ok(())
    })
    .unwrap();
}

#[test]
fn reopening_restores_the_exact_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(
        dir.path(),
        Model::with_predefined(),
        &[("created".into(), "now".into())],
    )
    .unwrap();
    sample(&mut db);
    db.change(|tx| tx.delete(Kind::User, "dev1")).unwrap();
    let expected = db.model().export();
    drop(db);
    let db = Db::open(dir.path(), Policy::default()).unwrap();
    assert_eq!(db.model().export(), expected);
    assert_eq!(db.meta()["created"], "now");
    // The WAL mode is set.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_refused_change_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    sample(&mut db);
    let before = db.model().export();
    let err = db.change(|tx| {
        tx.create(Entity::user("ok"))?;
        tx.create(Entity::thing("Bad", "Missing"))
    });
    assert!(matches!(err, Err(ChangeError::Model(_))));
    drop(db);
    assert_eq!(
        Db::open(dir.path(), Policy::default())
            .unwrap()
            .model()
            .export(),
        before
    );
}

#[test]
fn a_failed_store_write_is_undone_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    sample(&mut db);
    let before = db.model().export();
    // Make the table unwritable from another connection: the next commit fails.
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("CREATE TRIGGER no_writes BEFORE INSERT ON entities BEGIN SELECT RAISE(ABORT, 'disk says no'); END;").unwrap();
    let err = db.change(|tx| tx.create(Entity::user("lost"))).unwrap_err();
    assert!(err.to_string().contains("disk says no"), "{err}");
    assert_eq!(db.model().export(), before);
    assert!(db.model().subject("lost").is_none());
}

#[test]
fn open_and_create_refuse_the_wrong_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = Db::open(dir.path(), Policy::default()).err().unwrap();
    assert!(err.to_string().contains("thinghost init"), "{err}");
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let err = Db::create(dir.path(), Model::with_predefined(), &[])
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::AlreadyInitialized { .. }),
        "{err}"
    );
}

#[test]
fn schema_is_versioned_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let path = dir.path().join(DB_FILE);
    assert_eq!(
        SqliteStore::open(&path).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("upgrade thinghost"), "{err}");
}

#[test]
fn a_corrupt_record_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute(
        "UPDATE entities SET body = '{' WHERE name = 'Developers'",
        [],
    )
    .unwrap();
    let err = Db::open(dir.path(), Policy::default()).err().unwrap();
    assert!(err.to_string().contains("Group Developers"), "{err}");
    // A record that parses but breaks the model (a dangling reference) is refused too.
    conn.execute(
        "UPDATE entities SET body = '{\"name\":\"Developers\",\"kind\":\"Group\",\"members\":[{\"principal\":\"ghost\",\"principalType\":\"User\"}]}' WHERE name = 'Developers'",
        [],
    )
    .unwrap();
    let err = Db::open(dir.path(), Policy::default()).err().unwrap();
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[test]
fn audit_records_are_appended_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let r = AuditRecord {
        timestamp: 5,
        user: "dev1".into(),
        category: "Authentication".into(),
        message_key: "keyExpired".into(),
        args: serde_json::json!({"key": "k1"}),
        source: "ApplicationKeys/k1".into(),
        source_type: "ApplicationKey".into(),
    };
    db.audit(&r).unwrap();
    drop(db);
    let mut db = Db::open(dir.path(), Policy::default()).unwrap();
    assert_eq!(db.audit_records(10).unwrap(), vec![r]);
}

fn rec(ts: i64, user: &str, category: &str, source: &str) -> AuditRecord {
    AuditRecord {
        timestamp: ts,
        user: user.into(),
        category: category.into(),
        message_key: "k".into(),
        args: serde_json::json!({"n": ts}),
        source: source.into(),
        source_type: "Thing".into(),
    }
}

#[test]
fn u1_u2_a_change_and_its_audit_entry_land_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let entry = rec(1, "admin", "MODEL", "Users/ann");
    db.change_audited(
        |tx| tx.create(Entity::user("ann")),
        std::slice::from_ref(&entry),
    )
    .unwrap();
    assert_eq!(db.audit_records(10).unwrap(), vec![entry.clone()]);
    // The audit entry cannot be written: the change does not land either.
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit full'); END;").unwrap();
    let err = db
        .change_audited(
            |tx| tx.create(Entity::user("bob")),
            &[rec(2, "admin", "MODEL", "Users/bob")],
        )
        .unwrap_err();
    assert!(err.to_string().contains("audit full"), "{err}");
    assert!(db.model().subject("bob").is_none());
    drop(db);
    let mut db = Db::open(dir.path(), Policy::default()).unwrap();
    assert!(db.model().subject("bob").is_none());
    assert_eq!(db.audit_records(10).unwrap(), vec![entry]);
}

#[test]
fn u2_tampering_with_a_stored_entry_is_reported_at_its_link() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let path = dir.path().join(DB_FILE);
    let mut store = SqliteStore::open(&path).unwrap();
    let records: Vec<AuditRecord> = (1..=5)
        .map(|i| rec(i, "ann", "MODEL", "Things/P"))
        .collect();
    store.append_audit_batch(&records[..3]).unwrap();
    for r in &records[3..] {
        store.append_audit(r).unwrap();
    }
    let report = store.verify_audit_chain().unwrap();
    assert_eq!((report.checked, report.broken), (5, None));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE audit SET user = 'mallory' WHERE id = 3", [])
        .unwrap();
    let report = store.verify_audit_chain().unwrap();
    assert_eq!(report.broken.as_ref().unwrap().0, 3, "{report:?}");
    conn.execute("UPDATE audit SET user = 'ann' WHERE id = 3", [])
        .unwrap();
    assert_eq!(store.verify_audit_chain().unwrap().broken, None);
    conn.execute("DELETE FROM audit WHERE id = 2", []).unwrap();
    assert_eq!(store.verify_audit_chain().unwrap().broken.unwrap().0, 3);
}

#[test]
fn u2_entries_written_before_the_chain_existed_are_chained_on_open() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let path = dir.path().join(DB_FILE);
    SqliteStore::open(&path)
        .unwrap()
        .append_audit_batch(&[rec(1, "a", "MODEL", "x"), rec(2, "b", "MODEL", "y")])
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE audit SET hash = '', prev_hash = ''", [])
        .unwrap();
    let mut store = SqliteStore::open(&path).unwrap();
    let report = store.verify_audit_chain().unwrap();
    assert_eq!((report.checked, report.broken), (2, None));
}

/// U3: 100,000 entries; the query of one Thing's entries over a time range is answered from the
/// (source, timestamp) index, not a scan, and pages and counts agree.
#[test]
fn u3_a_query_by_thing_and_time_uses_an_index_over_100000_entries() {
    use thinghost_store::audit::{AuditQuery, Filter};
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let mut store = SqliteStore::open(&dir.path().join(DB_FILE)).unwrap();
    for chunk in 0..10 {
        let batch: Vec<AuditRecord> = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                rec(
                    n,
                    &format!("user{}", n % 50),
                    ["MODEL", "SECURITY", "SERVICE"][(n % 3) as usize],
                    &format!("Things/T{}", n % 1000),
                )
            })
            .collect();
        store.append_audit_batch(&batch).unwrap();
    }
    let q = AuditQuery {
        source: Some("Things/T7".into()),
        start: Some(10_000),
        end: Some(59_999),
        limit: 20,
        ..AuditQuery::default()
    };
    let plan = store.audit_query_plan(&q).unwrap().join("\n");
    assert!(plan.contains("USING INDEX audit_by_source_time"), "{plan}");
    assert!(!plan.contains("SCAN audit"), "{plan}");
    let page = store.query_audit(&q).unwrap();
    assert_eq!(page.len(), 20);
    assert!(page.iter().all(|e| e.record.source == "Things/T7"));
    assert_eq!(page[0].record.timestamp, 59_007, "newest first");
    assert_eq!(store.count_audit(&q).unwrap(), 50);
    let rest = store
        .query_audit(&AuditQuery {
            offset: 40,
            ..q.clone()
        })
        .unwrap();
    assert_eq!(rest.len(), 10);
    // A user's entries, and a QUERY filter, from their indexes too.
    let by_user = AuditQuery {
        user: Some("user3".into()),
        limit: 5,
        ..AuditQuery::default()
    };
    let plan = store.audit_query_plan(&by_user).unwrap().join("\n");
    assert!(plan.contains("audit_by_user_time"), "{plan}");
    let filtered = AuditQuery {
        source: Some("Things/T7".into()),
        filter: Some(
            Filter::parse(&serde_json::json!({"type": "Or", "filters": [
                {"type": "EQ", "fieldName": "auditCategory", "value": "SECURITY"},
                {"type": "LT", "fieldName": "timestamp", "value": 1000}
            ]}))
            .unwrap(),
        ),
        limit: 1000,
        ..AuditQuery::default()
    };
    let got = store.query_audit(&filtered).unwrap();
    assert!(
        got.iter()
            .all(|e| e.record.category == "SECURITY" || e.record.timestamp < 1000)
    );
    assert_eq!(got.len() as u64, store.count_audit(&filtered).unwrap());
    assert_eq!(store.verify_audit_chain().unwrap().checked, 100_000);
}

/// U6: the prefix older than a date leaves (archive, purge); the chain's anchor moves with it, so
/// what stays online still verifies, and new entries chain on.
#[test]
fn u6_dropping_the_oldest_entries_keeps_the_rest_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let mut store = SqliteStore::open(&dir.path().join(DB_FILE)).unwrap();
    // Timestamps mostly rising; entry 4 is late (older than its predecessor).
    let ts = [10, 20, 30, 100, 25, 200];
    let records: Vec<AuditRecord> = ts.iter().map(|t| rec(*t, "a", "MODEL", "x")).collect();
    store.append_audit_batch(&records).unwrap();
    let prefix = store.audit_prefix(50, 1000).unwrap();
    let got: Vec<i64> = prefix.iter().map(|e| e.record.timestamp).collect();
    assert_eq!(
        got,
        vec![10, 20, 30],
        "up to the first entry at or after the date"
    );
    assert_eq!(store.audit_prefix(50, 2).unwrap().len(), 2);
    assert_eq!(store.drop_audit_through(prefix[2].id).unwrap(), 3);
    let report = store.verify_audit_chain().unwrap();
    assert_eq!((report.checked, report.broken), (3, None));
    store.append_audit(&rec(300, "b", "MODEL", "y")).unwrap();
    assert_eq!(store.verify_audit_chain().unwrap().broken, None);
    assert_eq!(store.drop_audit_through(999).unwrap(), 0, "no such entry");
}

/// A fork (what a script runs on) changes a private copy: the database and the disk see nothing
/// until it is adopted, all at once with its audit records; a fork taken before another change
/// cannot be adopted; a dropped fork leaves nothing.
#[test]
fn a_fork_lands_whole_when_adopted_and_not_at_all_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let record = |key: &str| AuditRecord {
        timestamp: 1,
        user: "Administrator".into(),
        category: "SCRIPTS".into(),
        message_key: key.into(),
        args: serde_json::json!({}),
        source: String::new(),
        source_type: String::new(),
    };
    let mut fork = db.fork();
    fork.change_audited(|tx| tx.create(Entity::user("a")), &[record("userCreated")])
        .unwrap();
    fork.change(|tx| tx.create(Entity::user("b"))).unwrap();
    assert!(fork.model().get(Kind::User, "b").is_some());
    assert!(
        db.model().get(Kind::User, "a").is_none(),
        "the origin sees nothing"
    );
    assert_eq!(fork.pending().len(), 2);
    db.adopt(&mut fork, &[record("scriptRan")]).unwrap();
    assert!(db.model().get(Kind::User, "b").is_some());
    drop(db);
    let mut db = Db::open(dir.path(), Policy::default()).unwrap();
    assert!(db.model().get(Kind::User, "a").is_some(), "stored");
    let keys: Vec<String> = db
        .audit_records(10)
        .unwrap()
        .into_iter()
        .map(|r| r.message_key)
        .collect();
    assert_eq!(
        keys,
        ["scriptRan", "userCreated"],
        "newest first, in one transaction"
    );
    // A fork taken before another change is refused, and changes nothing.
    let mut stale = db.fork();
    stale.change(|tx| tx.create(Entity::user("c"))).unwrap();
    db.change(|tx| tx.create(Entity::user("d"))).unwrap();
    assert!(matches!(
        db.adopt(&mut stale, &[]),
        Err(AdoptError::Changed)
    ));
    assert!(db.model().get(Kind::User, "c").is_none());
    // A fork lands over changes that wrote only values of entities it did not write (a device's
    // data): both remain. Over a value change of an entity it wrote, it is refused.
    db.change(|tx| {
        tx.create(Entity::thing("T1", "GenericThing"))?;
        tx.create(Entity::thing("T2", "GenericThing"))
    })
    .unwrap();
    let value = |db: &mut Db, thing: &str, v: i64| {
        let thing = thing.to_string();
        db.change_values(
            move |tx| {
                // (The store takes the caller's word that this is data: the REST API uses it
                // for property writes only.)
                tx.get_mut(Kind::Thing, &thing)?.description = format!("value {v}");
                Ok(())
            },
            &[],
        )
        .unwrap();
    };
    let mut f = db.fork();
    f.change(|tx| {
        tx.get_mut(Kind::Thing, "T1")?.description = "from the script".into();
        Ok(())
    })
    .unwrap();
    value(&mut db, "T2", 7);
    db.adopt(&mut f, &[]).unwrap();
    let t2 = db.model().get(Kind::Thing, "T2").unwrap();
    assert_eq!(t2.description, "value 7", "the device's value stays");
    assert_eq!(
        db.model().get(Kind::Thing, "T1").unwrap().description,
        "from the script"
    );
    let mut f = db.fork();
    f.change(|tx| {
        tx.get_mut(Kind::Thing, "T2")?.description = "mine".into();
        Ok(())
    })
    .unwrap();
    value(&mut db, "T2", 8);
    assert!(matches!(db.adopt(&mut f, &[]), Err(AdoptError::Changed)));
    // A dropped fork leaves nothing.
    let mut dropped = db.fork();
    dropped.change(|tx| tx.create(Entity::user("e"))).unwrap();
    drop(dropped);
    drop(db);
    let db = Db::open(dir.path(), Policy::default()).unwrap();
    assert!(db.model().get(Kind::User, "e").is_none());
    assert!(db.model().get(Kind::User, "c").is_none());
    assert!(db.model().get(Kind::User, "d").is_some());
}

/// U1/U2: a queued entry stamped (a little) before an entry that reached the log first is
/// stored at its predecessor's time, so the chain's order and time order agree (newest first by
/// time is newest first by id, and an archive's prefix by time is a prefix of the chain); a
/// clock set back keeps its entries' own times; the chain verifies.
#[test]
fn u2_the_chains_timestamps_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path(), Model::with_predefined(), &[]).unwrap();
    let mut store = SqliteStore::open(&dir.path().join(DB_FILE)).unwrap();
    let records = [
        rec(100, "ann", "MODEL", "Things/P"),
        rec(300, "ann", "SECURITY", "Things/P"),
        rec(200, "bob", "AUTHORIZATION", "Things/P"),
        rec(400, "bob", "AUTHORIZATION", "Things/P"),
        // A clock set back by an hour: the entry keeps its own time.
        rec(3_600_400, "cy", "MODEL", "Things/P"),
        rec(400, "cy", "MODEL", "Things/P"),
    ];
    store.append_audit_batch(&records[..2]).unwrap();
    store.append_audit_batch(&records[2..]).unwrap();
    let stored: Vec<(i64, String)> = store
        .audit_records(10)
        .unwrap()
        .into_iter()
        .map(|r| (r.timestamp, r.user))
        .collect();
    assert_eq!(
        stored,
        [
            (400, "cy"),
            (3_600_400, "cy"),
            (400, "bob"),
            (300, "bob"),
            (300, "ann"),
            (100, "ann")
        ]
        .map(|(t, u)| (t, u.to_string()))
    );
    let report = store.verify_audit_chain().unwrap();
    assert_eq!((report.checked, report.broken), (6, None));
}
