//! # thinghost-store
//!
//! Persistence for the thinghost model. [`Store`] is the trait every backend implements;
//! [`SqliteStore`] is the embedded default (bundled SQLite in WAL mode, `synchronous=FULL`, so an
//! acknowledged write survives `kill -9` and power loss). [`Db`] pairs a [`Model`] with a store:
//! each change is validated by the model, written in one store transaction, and undone in memory
//! if the write fails, so memory and disk never disagree.
//!
//! The store knows nothing of the rules: it keeps entity records and collection permissions as
//! JSON, keyed by kind and name, exactly as [`thinghost_core::Write`]s describe them. A PostgreSQL
//! backend implements the same trait with the same schema.

pub mod audit;
pub mod history;
pub mod query;
mod sqlite;

pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thinghost_core::{Acl, Batch, Entity, Kind, Model, ModelError, Policy, Tx, Write};
use thiserror::Error;

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entities: Vec<Entity>,
    pub collections: BTreeMap<Kind, Acl>,
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this build knows ({known}); upgrade thinghost"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the database {path} holds a record that cannot be read ({what}): {message}")]
    Corrupt {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("{path} is not an initialized thinghost data directory; run `thinghost init --data {dir}` first", dir = path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    NotInitialized { path: PathBuf },
    #[error("{path} already holds a thinghost database; nothing was changed")]
    AlreadyInitialized { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a thinghost server is running on {path}; stop it first, or make the change through its API"
    )]
    Busy { path: PathBuf },
    #[error("the stored model is not valid: {0}")]
    InvalidModel(ModelError),
    #[error(
        "the disk of {path} has {free_mib} MiB free, below the {min_mib} MiB kept free (serve --min-free-disk-mib): changes are refused until space is freed"
    )]
    DiskFull {
        path: PathBuf,
        free_mib: u64,
        min_mib: u64,
    },
}

/// A persistence backend.
pub trait Store: Send + Sync {
    /// Everything stored.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Writes one batch, and the audit records of the change, in one transaction; returns only
    /// once it is durable.
    fn commit(
        &mut self,
        writes: &[Write],
        meta: &[(String, String)],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// Refuse commits (with [`StoreError::DiskFull`]) while the disk has less than `bytes`
    /// free (0: never); a backend that cannot tell ignores it.
    fn set_min_free(&mut self, _bytes: u64) {}
    /// Appends one audit record, chained (U2); returns only once it is durable.
    fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Appends records in one transaction, in order; returns only once they are durable.
    fn append_audit_batch(&mut self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// The entries a query selects, in its order, one page.
    fn query_audit(&mut self, q: &audit::AuditQuery) -> Result<Vec<audit::AuditEntry>, StoreError>;
    /// How many entries a query selects (its page aside).
    fn count_audit(&mut self, q: &audit::AuditQuery) -> Result<u64, StoreError>;
    /// Checks the hash chain of every entry kept online (U2).
    fn verify_audit_chain(&mut self) -> Result<audit::ChainReport, StoreError>;
    /// The oldest entries, in id order, as long as their timestamp is before `before`: the
    /// prefix an archive or a purge takes (at most `limit`).
    fn audit_prefix(
        &mut self,
        before: i64,
        limit: u64,
    ) -> Result<Vec<audit::AuditEntry>, StoreError>;
    /// Removes the entries up to and including `last_id`, in one transaction that also makes
    /// the last one's hash the chain's anchor, so what stays online still verifies. Returns how
    /// many were removed.
    fn drop_audit_through(&mut self, last_id: i64) -> Result<u64, StoreError>;
    /// The newest audit records, newest first.
    fn audit_records(&mut self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

/// One audit record (DOMAIN U1): who, what, about which entity.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// The user the record is about (or the name that was tried).
    pub user: String,
    /// `Authentication`, `Authorization`, `Model`, ...
    pub category: String,
    /// A stable key such as `keyExpired` or `permissionDenied`.
    pub message_key: String,
    pub args: serde_json::Value,
    /// The entity concerned (`Things/Pump1`), or empty.
    pub source: String,
    /// Its kind (`Thing`), or empty.
    pub source_type: String,
}

/// An error of a [`Db`] change: the model refused it, or the store could not keep it.
#[derive(Debug, Error)]
pub enum ChangeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the change could not be stored, and was undone: {0}")]
    Store(#[from] StoreError),
}

/// The file name of the database inside a data directory.
pub const DB_FILE: &str = "thinghost.db";

/// The model and its store.
pub struct Db {
    model: Model,
    store: Box<dyn Store>,
    meta: BTreeMap<String, String>,
    /// Counts the changes applied: a fork knows which version it was taken from.
    version: u64,
    /// Set on a fork (see [`Db::fork`]): its changes, kept instead of stored.
    fork: Option<Fork>,
    /// What the latest changes wrote (at most [`RECENT`]), so that a fork taken a few changes
    /// ago can still land when those changes only wrote property values it did not touch.
    recent: std::collections::VecDeque<Recent>,
    /// Every change after this version is in `recent`.
    recent_floor: u64,
    /// Names the model's structure: a new value ([`next_structure`]) at each change that writes
    /// more than property values (definitions, permissions, entities); what caches of the
    /// model's structure are keyed by. Shared (see
    /// [`Db::structure_handle`]) so that a cache can be checked without the model's lock.
    structure: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How many changes `Db` remembers for [`Db::adopt`].
const RECENT: usize = 4096;

/// What one change wrote.
struct Recent {
    version: u64,
    keys: Vec<thinghost_core::Key>,
    collections: Vec<Kind>,
    /// Only property values of Things (a device writing its data).
    values_only: bool,
}

/// What a fork did: the version it was taken from, and its changes in order.
struct Fork {
    base: u64,
    changes: Vec<Pending>,
}

/// One change a fork applied: its writes and audit records, as [`Db::change_audited`] would
/// have stored them.
#[derive(Clone, Debug)]
pub struct Pending {
    pub writes: Vec<Write>,
    pub audit: Vec<AuditRecord>,
}

/// Why [`Db::adopt`] refused a fork.
#[derive(Debug, Error)]
pub enum AdoptError {
    #[error("the model changed since the fork was taken; nothing was changed")]
    Changed,
    #[error("only a fork can be adopted")]
    NotAFork,
    #[error("the change could not be stored, and was undone: {0}")]
    Store(#[from] StoreError),
}

/// The store of a fork: a fork keeps its changes in memory, and reads nothing back.
struct Detached;

impl Detached {
    fn refuse<T>(&self) -> Result<T, StoreError> {
        Err(StoreError::Io {
            path: PathBuf::from("(fork)"),
            source: std::io::Error::other("a fork of the model has no store"),
        })
    }
}

impl Store for Detached {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.refuse()
    }
    fn commit(
        &mut self,
        _: &[Write],
        _: &[(String, String)],
        _: &[AuditRecord],
    ) -> Result<(), StoreError> {
        self.refuse()
    }
    fn append_audit(&mut self, _: &AuditRecord) -> Result<(), StoreError> {
        self.refuse()
    }
    fn append_audit_batch(&mut self, _: &[AuditRecord]) -> Result<(), StoreError> {
        self.refuse()
    }
    fn query_audit(&mut self, _: &audit::AuditQuery) -> Result<Vec<audit::AuditEntry>, StoreError> {
        self.refuse()
    }
    fn count_audit(&mut self, _: &audit::AuditQuery) -> Result<u64, StoreError> {
        self.refuse()
    }
    fn verify_audit_chain(&mut self) -> Result<audit::ChainReport, StoreError> {
        self.refuse()
    }
    fn audit_prefix(&mut self, _: i64, _: u64) -> Result<Vec<audit::AuditEntry>, StoreError> {
        self.refuse()
    }
    fn drop_audit_through(&mut self, _: i64) -> Result<u64, StoreError> {
        self.refuse()
    }
    fn audit_records(&mut self, _: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.refuse()
    }
}

/// A structure version no database of this process had: a fork and its origin, each changing
/// on its own, never reach the same version with different structures (caches keyed by it
/// would mix them up).
fn next_structure() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Db {
    /// Opens the database of an initialized data directory and loads the model.
    pub fn open(dir: &Path, policy: Policy) -> Result<Db, StoreError> {
        let store = SqliteStore::open(&dir.join(DB_FILE))?;
        Db::load(Box::new(store), policy)
    }

    /// Loads the model from any store.
    pub fn load(mut store: Box<dyn Store>, policy: Policy) -> Result<Db, StoreError> {
        let snap = store.load()?;
        let model = Model::from_parts(snap.entities, snap.collections, policy)
            .map_err(StoreError::InvalidModel)?;
        Ok(Db {
            model,
            store,
            meta: snap.meta,
            version: 0,
            fork: None,
            recent: Default::default(),
            recent_floor: 0,
            structure: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next_structure())),
        })
    }

    /// Creates a new database holding `model` (and `meta`), in one transaction.
    pub fn create(dir: &Path, model: Model, meta: &[(String, String)]) -> Result<Db, StoreError> {
        let mut store = SqliteStore::create(&dir.join(DB_FILE))?;
        let mut writes: Vec<Write> = model
            .export()
            .entities
            .into_iter()
            .map(|e| Write::Put(Box::new(e)))
            .collect();
        for (k, acl) in model.export().collections {
            writes.push(Write::Collection(k, acl));
        }
        store.commit(&writes, meta, &[])?;
        Ok(Db {
            model,
            store: Box::new(store),
            meta: meta.iter().cloned().collect(),
            version: 0,
            fork: None,
            recent: Default::default(),
            recent_floor: 0,
            structure: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next_structure())),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Refuse changes while the store's disk has less than `bytes` free (see
    /// [`Store::set_min_free`]).
    pub fn set_min_free(&mut self, bytes: u64) {
        self.store.set_min_free(bytes);
    }

    /// Stored metadata (`created`, `host_version`, ...).
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Validates and applies a change, then stores it; once this returns Ok the change is durable.
    pub fn change<F>(&mut self, f: F) -> Result<Batch, ChangeError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        self.change_audited(f, &[])
    }

    /// Like [`Db::change`], with the audit records of the change written in its transaction:
    /// the change never lands without them, nor they without it (U2). A change that changes
    /// nothing writes nothing.
    pub fn change_audited<F>(&mut self, f: F, audit: &[AuditRecord]) -> Result<Batch, ChangeError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        self.change_inner(f, audit, false)
    }

    /// Like [`Db::change_audited`], for a change that writes only property values of Things (a
    /// device's data): a script's fork taken before it can still land (see [`Db::adopt`]).
    pub fn change_values<F>(&mut self, f: F, audit: &[AuditRecord]) -> Result<Batch, ChangeError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        self.change_inner(f, audit, true)
    }

    fn note(&mut self, writes: &[Write], values_only: bool) {
        if !values_only {
            self.structure
                .store(next_structure(), std::sync::atomic::Ordering::Release);
        }
        let (mut keys, mut collections) = (Vec::new(), Vec::new());
        for w in writes {
            match w {
                Write::Put(e) => keys.push(e.key()),
                Write::Remove(k) => keys.push(k.clone()),
                Write::Collection(k, _) => collections.push(*k),
            }
        }
        self.recent.push_back(Recent {
            version: self.version,
            keys,
            collections,
            values_only,
        });
        while self.recent.len() > RECENT {
            if let Some(r) = self.recent.pop_front() {
                self.recent_floor = r.version;
            }
        }
    }

    fn change_inner<F>(
        &mut self,
        f: F,
        audit: &[AuditRecord],
        values_only: bool,
    ) -> Result<Batch, ChangeError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        let batch = self.model.change(f)?;
        if batch.is_empty() {
            return Ok(batch);
        }
        if let Some(fork) = &mut self.fork {
            fork.changes.push(Pending {
                writes: batch.writes.clone(),
                audit: audit.to_vec(),
            });
        } else if let Err(e) = self.store.commit(&batch.writes, &[], audit) {
            self.model.revert(batch);
            return Err(e.into());
        }
        self.version += 1;
        self.note(&batch.writes, values_only);
        Ok(batch)
    }

    /// How many changes that wrote more than property values this database has applied (a
    /// fork continues the count of its origin): a cache of anything but values stays valid
    /// while it does not move.
    pub fn structure_version(&self) -> u64 {
        self.structure.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The value behind [`Db::structure_version`], to read without the model's lock: it moves
    /// in the change, before the lock is released, whenever the structure changes.
    pub fn structure_handle(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.structure.clone()
    }

    /// How many changes this database has applied since it was opened (a fork continues the
    /// count of its origin).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A private copy of the model that stores nothing: its changes are validated and applied
    /// to the copy as on the real one (with the same access checks answering from the copy),
    /// and kept in order ([`Db::pending`]) until [`Db::adopt`] stores them all at once, or the
    /// copy is dropped (which undoes them all). A script runs on one.
    pub fn fork(&self) -> Db {
        Db {
            model: self.model.clone(),
            store: Box::new(Detached),
            meta: self.meta.clone(),
            version: self.version,
            fork: Some(Fork {
                base: self.version,
                changes: Vec::new(),
            }),
            recent: Default::default(),
            recent_floor: self.version,
            // A fork counts its own changes from where its origin was.
            structure: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
                self.structure_version(),
            )),
        }
    }

    /// The changes a fork applied, in order (empty for a database that is not a fork).
    pub fn pending(&self) -> &[Pending] {
        self.fork.as_ref().map_or(&[], |f| &f.changes)
    }

    /// Makes a fork's changes this database's, in one store transaction with their audit
    /// records and `audit` (a record of the whole): all or nothing. When this database changed
    /// since the fork was taken, the fork lands only if every change since wrote nothing but
    /// property values (`Db::change_values`) of entities the fork did not write: its changes are
    /// then replayed onto the current model (snapshot isolation); otherwise it is refused (its
    /// checks were made against a model that is gone). On success the fork is spent.
    pub fn adopt(&mut self, fork: &mut Db, audit: &[AuditRecord]) -> Result<(), AdoptError> {
        let Some(f) = &fork.fork else {
            return Err(AdoptError::NotAFork);
        };
        if self.fork.is_some() {
            return Err(AdoptError::Changed);
        }
        let mut writes = Vec::new();
        let mut records = Vec::new();
        for p in &f.changes {
            writes.extend(p.writes.iter().cloned());
            records.extend(p.audit.iter().cloned());
        }
        records.extend(audit.iter().cloned());
        if writes.is_empty() {
            // A fork that changed nothing cannot conflict: only its records land.
            if !records.is_empty() {
                self.store.commit(&[], &[], &records)?;
            }
            fork.fork = None;
            return Ok(());
        }
        if f.base == self.version {
            self.store.commit(&writes, &[], &records)?;
            std::mem::swap(&mut self.model, &mut fork.model);
            self.version += 1;
            self.note(&writes, false);
            fork.fork = None;
            return Ok(());
        }
        // Changes landed since the fork: only values of entities it did not write may have.
        if f.base < self.recent_floor {
            return Err(AdoptError::Changed);
        }
        let mine: std::collections::BTreeSet<thinghost_core::Key> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Put(e) => Some(e.key()),
                Write::Remove(k) => Some(k.clone()),
                Write::Collection(..) => None,
            })
            .collect();
        let benign = self.recent.iter().filter(|r| r.version > f.base).all(|r| {
            r.values_only && r.collections.is_empty() && !r.keys.iter().any(|k| mine.contains(k))
        });
        if !benign {
            return Err(AdoptError::Changed);
        }
        let replay = writes.clone();
        let batch = self
            .model
            .change(|tx| {
                for w in replay {
                    tx.apply(w);
                }
                Ok(())
            })
            .map_err(|_| AdoptError::Changed)?;
        if let Err(e) = self.store.commit(&batch.writes, &[], &records) {
            self.model.revert(batch);
            return Err(e.into());
        }
        self.version += 1;
        self.note(&writes, false);
        fork.fork = None;
        Ok(())
    }

    /// Appends an audit record.
    pub fn audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        self.store.append_audit(record)
    }

    /// The newest audit records, newest first.
    pub fn audit_records(&mut self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit_records(limit)
    }

    /// Imports a model file (all or nothing, in memory and on disk).
    pub fn import(&mut self, file: thinghost_core::ModelFile) -> Result<Batch, ChangeError> {
        if self.fork.is_some() {
            return Err(ChangeError::Store(Detached.refuse::<()>().unwrap_err()));
        }
        let batch = self.model.import(file)?;
        if let Err(e) = self.store.commit(&batch.writes, &[], &[]) {
            self.model.revert(batch);
            return Err(e.into());
        }
        self.version += 1;
        self.note(&batch.writes, false);
        Ok(batch)
    }
}

/// The lock file of a data directory.
pub const LOCK_FILE: &str = "thinghost.lock";

/// An exclusive hold on a data directory: a running server keeps one, so that no other process
/// writes behind its in-memory model. Released when dropped (or when the process dies).
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                path: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }
}
