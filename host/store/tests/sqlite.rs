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
