//! The embedded SQLite backend.

use crate::audit::{self, AuditEntry, AuditQuery, ChainReport, GENESIS};
use crate::{AuditRecord, Snapshot, Store, StoreError};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use thinghost_core::{Entity, Kind, Write};

/// The schema version this build writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 3;

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
    // 3: the hash chain (U2; entries written before it are chained on open), and the indexes
    // of the audit queries: by entity, user or category, each with time.
    "ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
    DROP INDEX audit_by_source;
    CREATE INDEX audit_by_source_time ON audit (source, timestamp);
    CREATE INDEX audit_by_user_time ON audit (user, timestamp);
    CREATE INDEX audit_by_category_time ON audit (category, timestamp);",
];

/// The meta key of the chain's anchor: the hash before the first entry kept online.
const ANCHOR: &str = "audit_anchor";

const ENTRY_COLUMNS: &str =
    "id, timestamp, user, category, message_key, args, source, source_type, prev_hash, hash";

fn entry_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        record: AuditRecord {
            timestamp: r.get(1)?,
            user: r.get(2)?,
            category: r.get(3)?,
            message_key: r.get(4)?,
            // Kept as written: a record whose args no longer parse shows as a string (and breaks
            // the chain, which hashes the parsed value).
            args: {
                let text: String = r.get(5)?;
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            },
            source: r.get(6)?,
            source_type: r.get(7)?,
        },
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// The chain's anchor as stored (GENESIS until entries are archived or purged).
fn anchor(conn: &Connection) -> rusqlite::Result<String> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [ANCHOR], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .unwrap_or_else(|| GENESIS.to_string()))
}

/// How far back a queued entry's time may be moved up to its predecessor's (a minute: queued
/// entries reach the log within milliseconds).
const MAX_QUEUE_SKEW_MS: i64 = 60_000;

/// Appends `records` inside `tx`, each chained to the one before (the caller holds the write
/// lock: an IMMEDIATE transaction).
///
/// The chain's timestamps do not go backwards by the little a queue delays an entry: a queued
/// entry stamped up to [`MAX_QUEUE_SKEW_MS`] before a durable one that reached the log first
/// takes its predecessor's time, so id order (the chain's order, which archives and purges cut
/// as a prefix) and time order agree. A larger step back is the clock's (set back, or a
/// development clock offset changed): the entry keeps its own time.
fn append_in(tx: &Transaction<'_>, records: &[AuditRecord]) -> rusqlite::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let (mut prev, mut last_time): (String, i64) = match tx
        .query_row(
            "SELECT hash, timestamp FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
    {
        Some(last) => last,
        None => (anchor(tx)?, i64::MIN),
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (timestamp, user, category, message_key, args, source, source_type, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in records {
        // A queued entry a little older than its predecessor takes its time; any other keeps
        // its own.
        if r.timestamp >= last_time || last_time - r.timestamp > MAX_QUEUE_SKEW_MS {
            last_time = r.timestamp;
        }
        let hash = audit::entry_hash_at(&prev, last_time, r);
        insert.execute(params![
            last_time,
            r.user,
            r.category,
            r.message_key,
            r.args.to_string(),
            r.source,
            r.source_type,
            prev,
            hash
        ])?;
        prev = hash;
    }
    Ok(())
}

/// SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when it returns.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Commits are refused while the disk has less free (0: never).
    min_free: u64,
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
            min_free: 0,
        };
        s.configure()?;
        s.migrate()?;
        s.chain_unhashed()?;
        Ok(s)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a change while the disk holds less than `min_free` bytes free: better a clear
    /// refusal (507) before the write than a write that fails halfway.
    fn room(&self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e.into(),
            })?;
        if free < self.min_free {
            return Err(StoreError::DiskFull {
                path: dir.to_path_buf(),
                free_mib: free >> 20,
                min_mib: self.min_free >> 20,
            });
        }
        Ok(())
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

impl SqliteStore {
    /// Chains the entries written before the chain existed (schema 2), once.
    fn chain_unhashed(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut conn = self.conn();
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM audit WHERE hash = ''", [], |r| {
                r.get(0)
            })
            .map_err(|e| sql(&path, e))?;
        if pending == 0 {
            return Ok(());
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        {
            let mut prev = anchor(&tx).map_err(|e| sql(&path, e))?;
            let entries: Vec<AuditEntry> = {
                let mut st = tx
                    .prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit ORDER BY id"))
                    .map_err(|e| sql(&path, e))?;
                st.query_map([], entry_of)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| sql(&path, e))?
            };
            let mut update = tx
                .prepare("UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE id = ?3")
                .map_err(|e| sql(&path, e))?;
            for e in entries {
                if e.hash.is_empty() {
                    let hash = audit::entry_hash(&prev, &e.record);
                    update
                        .execute(params![prev, hash, e.id])
                        .map_err(|er| sql(&path, er))?;
                    prev = hash;
                } else {
                    prev = e.hash;
                }
            }
        }
        tx.commit().map_err(|e| sql(&path, e))
    }

    /// The WHERE clause and parameters of a query.
    fn where_of(q: &AuditQuery) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as V;
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<V> = Vec::new();
        if let Some(s) = &q.source {
            clauses.push("source = ?".into());
            params.push(V::Text(s.clone()));
        }
        if let Some(u) = &q.user {
            clauses.push("user = ?".into());
            params.push(V::Text(u.clone()));
        }
        if let Some(c) = &q.category {
            clauses.push("category = ?".into());
            params.push(V::Text(c.clone()));
        }
        if let Some(t) = q.start {
            clauses.push("timestamp >= ?".into());
            params.push(V::Integer(t));
        }
        if let Some(t) = q.end {
            clauses.push("timestamp <= ?".into());
            params.push(V::Integer(t));
        }
        if let Some(f) = &q.filter {
            clauses.push(audit::to_sql(f, &mut params));
        }
        let clause = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        (clause, params)
    }

    /// The SQL of a query (for `EXPLAIN QUERY PLAN` in tests and benchmarks) and its parameters.
    pub fn audit_query_sql(q: &AuditQuery) -> (String, Vec<rusqlite::types::Value>) {
        let (clause, mut params) = SqliteStore::where_of(q);
        let order = if q.sorts.is_empty() {
            "timestamp DESC, id DESC".to_string()
        } else {
            let mut parts: Vec<String> = q
                .sorts
                .iter()
                .map(|(f, asc)| format!("{} {}", f.column(), if *asc { "ASC" } else { "DESC" }))
                .collect();
            parts.push("id DESC".into());
            parts.join(", ")
        };
        params.push(rusqlite::types::Value::Integer(
            q.limit.min(i64::MAX as u64) as i64,
        ));
        params.push(rusqlite::types::Value::Integer(
            q.offset.min(i64::MAX as u64) as i64,
        ));
        (
            format!("SELECT {ENTRY_COLUMNS} FROM audit{clause} ORDER BY {order} LIMIT ? OFFSET ?"),
            params,
        )
    }

    /// How SQLite answers a query (`EXPLAIN QUERY PLAN`), one line per step.
    pub fn audit_query_plan(&self, q: &AuditQuery) -> Result<Vec<String>, StoreError> {
        let (text, params) = SqliteStore::audit_query_sql(q);
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {text}"))
            .map_err(|e| sql(&self.path, e))?;
        st.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sql(&self.path, e))
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
        self.append_audit_batch(std::slice::from_ref(r))
    }

    fn append_audit_batch(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        append_in(&tx, records).map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))
    }

    fn query_audit(&mut self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (text, params) = SqliteStore::audit_query_sql(q);
        let conn = self.conn();
        let mut st = conn.prepare_cached(&text).map_err(|e| sql(&self.path, e))?;
        st.query_map(rusqlite::params_from_iter(params), entry_of)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| sql(&self.path, e))
    }

    fn count_audit(&mut self, q: &AuditQuery) -> Result<u64, StoreError> {
        let (clause, params) = SqliteStore::where_of(q);
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT count(*) FROM audit{clause}"),
            rusqlite::params_from_iter(params),
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| sql(&self.path, e))
    }

    fn audit_prefix(&mut self, before: i64, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let path = self.path.clone();
        let conn = self.conn();
        // The first entry at or after `before` ends the prefix (ids are the chain's order).
        let stop: Option<i64> = conn
            .query_row(
                "SELECT min(id) FROM audit WHERE timestamp >= ?1",
                [before],
                |r| r.get(0),
            )
            .map_err(|e| sql(&path, e))?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit WHERE id < ?1 ORDER BY id LIMIT ?2"
            ))
            .map_err(|e| sql(&path, e))?;
        st.query_map(
            params![stop.unwrap_or(i64::MAX), limit.min(i64::MAX as u64) as i64],
            entry_of,
        )
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sql(&path, e))
    }

    fn drop_audit_through(&mut self, last_id: i64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        let hash: Option<String> = tx
            .query_row("SELECT hash FROM audit WHERE id = ?1", [last_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| sql(&path, e))?;
        let Some(hash) = hash else {
            return Ok(0);
        };
        let removed = tx
            .execute("DELETE FROM audit WHERE id <= ?1", [last_id])
            .map_err(|e| sql(&path, e))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![ANCHOR, hash],
        )
        .map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(removed as u64)
    }

    fn verify_audit_chain(&mut self) -> Result<ChainReport, StoreError> {
        let path = self.path.clone();
        let mut conn = self.conn();
        // One read transaction: the anchor and the entries from one snapshot, whatever an
        // archive on another connection removes meanwhile (it moves the anchor with them).
        let tx = conn.transaction().map_err(|e| sql(&path, e))?;
        let anchor = anchor(&tx).map_err(|e| sql(&path, e))?;
        let mut st = tx
            .prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit ORDER BY id"))
            .map_err(|e| sql(&path, e))?;
        let mut failed = None;
        let rows = st
            .query_map([], entry_of)
            .map_err(|e| sql(&path, e))?
            .map_while(|r| match r {
                Ok(e) => Some(e),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
        let report = audit::verify(&anchor, rows);
        match failed {
            Some(e) => Err(sql(&path, e)),
            None => Ok(report),
        }
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

    fn set_min_free(&mut self, bytes: u64) {
        self.min_free = bytes;
    }

    fn commit(
        &mut self,
        writes: &[Write],
        meta: &[(String, String)],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        self.room()?;
        let path = self.path.clone();
        let mut conn = self.conn();
        // IMMEDIATE: the write lock from the start, so that the audit chain's last hash, read
        // below, is still the last one when this commits (another connection appends too).
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
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
        // The change's own audit entries, in its transaction: neither lands without the other.
        append_in(&tx, audit).map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))
    }
}
