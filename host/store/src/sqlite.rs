//! The embedded SQLite backend.

use crate::{AuditRecord, Snapshot, Store, StoreError};
use rusqlite::{Connection, OpenFlags, params};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use thinghost_core::{Entity, Kind, Write};

/// The schema version this build writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 2;

/// Migrations, in order: `MIGRATIONS[i]` takes the schema from version i to i + 1.
const MIGRATIONS: &[&str] = &[
    // 1: entity records and collection permissions as JSON, and metadata.
    "CREATE TABLE entities (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE collections (kind TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: audit records (append-only; the audit subsystem builds on this table).
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp INTEGER NOT NULL,
        user TEXT NOT NULL,
        category TEXT NOT NULL,
        message_key TEXT NOT NULL,
        args TEXT NOT NULL,
        source TEXT NOT NULL,
        source_type TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (timestamp);
    CREATE INDEX audit_by_source ON audit (source_type, source);",
];

/// SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when it returns.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens an existing database, migrating it to the current schema.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotInitialized {
                path: path.to_path_buf(),
            });
        }
        SqliteStore::connect(path)
    }

    /// Creates a new database; refuses if the file exists.
    pub fn create(path: &Path) -> Result<SqliteStore, StoreError> {
        if path.exists() {
            return Err(StoreError::AlreadyInitialized {
                path: path.to_path_buf(),
            });
        }
        // Created empty with mode 0600 first: the database holds password and key hashes, and
        // SQLite gives its -wal and -shm files the database file's mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        SqliteStore::connect(path)
    }

    /// Opens the file, sets the pragmas and migrates the schema.
    fn connect(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql(path, e))?;
        let mut s = SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        s.configure()?;
        s.migrate()?;
        Ok(s)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back), so a
        // poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        // WAL: readers do not block the writer; FULL: every commit is fsynced before it returns.
        self.conn()
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
            )
            .map_err(|e| sql(&self.path, e))
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql(&self.path, e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (v, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(|e| sql(&self.path, e))?;
            tx.execute_batch(step).map_err(|e| sql(&self.path, e))?;
            tx.pragma_update(None, "user_version", (v + 1) as i64)
                .map_err(|e| sql(&self.path, e))?;
            tx.commit().map_err(|e| sql(&self.path, e))?;
        }
        Ok(())
    }
}

fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn kind_text(k: Kind) -> &'static str {
    k.label()
}

fn corrupt(path: &Path, what: String, message: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
        message,
    }
}

impl Store for SqliteStore {
    fn append_audit(&mut self, r: &AuditRecord) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.conn()
            .prepare_cached("INSERT INTO audit (timestamp, user, category, message_key, args, source, source_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .and_then(|mut st| {
                st.execute(params![r.timestamp, r.user, r.category, r.message_key, r.args.to_string(), r.source, r.source_type])
            })
            .map(|_| ())
            .map_err(|e| sql(&path, e))
    }

    fn audit_records(&mut self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let path = self.path.clone();
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT timestamp, user, category, message_key, args, source, source_type FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(|e| sql(&path, e))?;
        let rows = st
            .query_map(params![limit as i64], |r| {
                Ok(AuditRecord {
                    timestamp: r.get(0)?,
                    user: r.get(1)?,
                    category: r.get(2)?,
                    message_key: r.get(3)?,
                    args: serde_json::from_str(&r.get::<_, String>(4)?)
                        .unwrap_or(serde_json::Value::Null),
                    source: r.get(5)?,
                    source_type: r.get(6)?,
                })
            })
            .map_err(|e| sql(&path, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql(&path, e))
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let path = self.path.clone();
        let mut snap = Snapshot::default();
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT kind, name, body FROM entities")
            .map_err(|e| sql(&path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| sql(&path, e))?;
        for row in rows {
            let (kind, name, body) = row.map_err(|e| sql(&path, e))?;
            let e: Entity = serde_json::from_str(&body)
                .map_err(|err| corrupt(&path, format!("{kind} {name}"), err.to_string()))?;
            if e.kind().label() != kind || e.name != name {
                return Err(corrupt(
                    &path,
                    format!("{kind} {name}"),
                    "the record names another entity".into(),
                ));
            }
            snap.entities.push(e);
        }
        let mut stmt = conn
            .prepare("SELECT kind, body FROM collections")
            .map_err(|e| sql(&path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| sql(&path, e))?;
        for row in rows {
            let (kind, body) = row.map_err(|e| sql(&path, e))?;
            let k = Kind::ALL
                .into_iter()
                .find(|k| k.label() == kind)
                .ok_or_else(|| {
                    corrupt(&path, format!("collection {kind}"), "unknown kind".into())
                })?;
            let acl = serde_json::from_str(&body)
                .map_err(|err| corrupt(&path, format!("collection {kind}"), err.to_string()))?;
            snap.collections.insert(k, acl);
        }
        let mut stmt = conn
            .prepare("SELECT key, value FROM meta")
            .map_err(|e| sql(&path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| sql(&path, e))?;
        for row in rows {
            let (k, v) = row.map_err(|e| sql(&path, e))?;
            snap.meta.insert(k, v);
        }
        Ok(snap)
    }

    fn commit(&mut self, writes: &[Write], meta: &[(String, String)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| sql(&path, e))?;
        {
            let mut put = tx
                .prepare_cached("INSERT INTO entities (kind, name, body) VALUES (?1, ?2, ?3) ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body")
                .map_err(|e| sql(&path, e))?;
            let mut del = tx
                .prepare_cached("DELETE FROM entities WHERE kind = ?1 AND name = ?2")
                .map_err(|e| sql(&path, e))?;
            let mut coll = tx
                .prepare_cached("INSERT INTO collections (kind, body) VALUES (?1, ?2) ON CONFLICT (kind) DO UPDATE SET body = excluded.body")
                .map_err(|e| sql(&path, e))?;
            let mut coll_del = tx
                .prepare_cached("DELETE FROM collections WHERE kind = ?1")
                .map_err(|e| sql(&path, e))?;
            for w in writes {
                match w {
                    Write::Put(e) => {
                        let body = serde_json::to_string(e).expect("entities serialize");
                        put.execute(params![kind_text(e.kind()), e.name, body])
                            .map_err(|e| sql(&path, e))?;
                    }
                    Write::Remove(k) => {
                        del.execute(params![kind_text(k.kind), k.name])
                            .map_err(|e| sql(&path, e))?;
                    }
                    Write::Collection(k, acl) if acl.is_empty() => {
                        coll_del
                            .execute(params![kind_text(*k)])
                            .map_err(|e| sql(&path, e))?;
                    }
                    Write::Collection(k, acl) => {
                        let body = serde_json::to_string(acl).expect("acls serialize");
                        coll.execute(params![kind_text(*k), body])
                            .map_err(|e| sql(&path, e))?;
                    }
                }
            }
            let mut m = tx
                .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .map_err(|e| sql(&path, e))?;
            for (k, v) in meta {
                m.execute(params![k, v]).map_err(|e| sql(&path, e))?;
            }
        }
        tx.commit().map_err(|e| sql(&path, e))
    }
}
