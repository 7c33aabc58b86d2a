//! The audit log in the server (DOMAIN section 7): the categories, the writer, and the services
//! of `Subsystems/AuditSubsystem`.
//!
//! Every entry is on disk before the request that caused it is answered. Entries of model
//! changes are written in the change's own transaction (`Db::change_audited`); every other entry
//! goes through one writer thread that appends whatever is queued in one transaction (group
//! commit): many concurrent requests share one fsync, and each waits for its own. Categories can
//! be turned off (`serve --audit-off CATEGORY`), never silently: the server warns and records
//! which, in category AUDIT, at every start.

use crate::state::repository::Repo;
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};
use thinghost_store::{AuditRecord, SqliteStore, Store, StoreError};

/// The categories (U1).
pub mod category {
    pub const AUTHENTICATION: &str = "AUTHENTICATION";
    pub const AUTHORIZATION: &str = "AUTHORIZATION";
    pub const MODEL: &str = "MODEL";
    pub const SECURITY: &str = "SECURITY";
    pub const SERVICE: &str = "SERVICE";
    pub const REMOTE_ACCESS: &str = "REMOTE_ACCESS";
    /// Devices' AlwaysOn connections: connects, binds, refusals, disconnects (C1-C3).
    pub const CONNECTIONS: &str = "CONNECTIONS";
    pub const EXTENSIONS: &str = "EXTENSIONS";
    pub const SCRIPTS: &str = "SCRIPTS";
    pub const AUDIT: &str = "AUDIT";
    pub const ALL: &[&str] = &[
        AUTHENTICATION,
        AUTHORIZATION,
        MODEL,
        SECURITY,
        SERVICE,
        REMOTE_ACCESS,
        CONNECTIONS,
        EXTENSIONS,
        SCRIPTS,
        AUDIT,
    ];
}

/// An audit record stamped with the server's clock.
pub fn record(
    user: &str,
    category: &str,
    key: &str,
    args: Json,
    source: &str,
    source_type: &str,
) -> AuditRecord {
    AuditRecord {
        timestamp: crate::now_ms(),
        user: user.to_string(),
        category: category.to_string(),
        message_key: key.to_string(),
        args,
        source: source.to_string(),
        source_type: source_type.to_string(),
    }
}

/// The category of a model change's entry: permission, membership, key and password changes
/// are SECURITY, the rest MODEL.
pub fn change_category(audit_key: &str, kind: thinghost_core::Kind) -> &'static str {
    let security = matches!(
        audit_key,
        "permissionsChanged"
            | "membershipChanged"
            | "passwordChanged"
            | "userEnabled"
            | "userDisabled"
            | "userLocked"
            | "userUnlocked"
    ) || kind == thinghost_core::Kind::ApplicationKey;
    if security {
        category::SECURITY
    } else {
        category::MODEL
    }
}

struct Queued {
    record: AuditRecord,
    /// Told when the entry is on disk; none for a queued entry nobody waits for.
    done: Option<SyncSender<Result<(), String>>>,
}

/// The audit log of a running server.
pub struct AuditLog {
    queue: SyncSender<Queued>,
    /// A connection for queries (WAL: reading never waits for the writer).
    reader: Mutex<SqliteStore>,
    disabled: BTreeSet<String>,
    /// Archive, purge, cleanup and export run one at a time (a service and a scheduler could
    /// otherwise take the same prefix and write the same archive file together).
    maintenance: Mutex<()>,
}

/// How many entries one transaction takes at most.
const BATCH: usize = 4096;

fn writer(mut store: SqliteStore, queue: Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let records: Vec<AuditRecord> = batch.iter().map(|q| q.record.clone()).collect();
        // A busy or full disk: try again a few times before giving up on this batch.
        let mut outcome = Err(String::new());
        for attempt in 0..5 {
            match store.append_audit_batch(&records) {
                Ok(()) => {
                    outcome = Ok(());
                    break;
                }
                Err(e) => {
                    outcome = Err(e.to_string());
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
                }
            }
        }
        if let Err(e) = &outcome {
            tracing::error!(error = %e, entries = records.len(), "audit entries could not be written");
        }
        for q in batch {
            if let Some(done) = q.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

impl AuditLog {
    /// Opens the audit log of the database `db_file`; `disabled` categories are not recorded.
    pub fn open(db_file: &Path, disabled: BTreeSet<String>) -> Result<AuditLog, StoreError> {
        let store = SqliteStore::open(db_file)?;
        let reader = SqliteStore::open(db_file)?;
        let (queue, rx) = sync_channel(65_536);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(store, rx))
            .map_err(|e| StoreError::Io {
                path: db_file.to_path_buf(),
                source: e,
            })?;
        Ok(AuditLog {
            queue,
            reader: Mutex::new(reader),
            disabled,
            maintenance: Mutex::new(()),
        })
    }

    /// Is the category recorded?
    pub fn enabled(&self, category: &str) -> bool {
        !self.disabled.contains(category)
    }

    /// The categories turned off.
    pub fn disabled(&self) -> &BTreeSet<String> {
        &self.disabled
    }

    /// Appends an entry and returns once it is on disk (or once writing it failed: logged).
    pub fn record(&self, record: AuditRecord) -> Result<(), String> {
        if !self.enabled(&record.category) {
            return Ok(());
        }
        let (done, wait) = sync_channel(1);
        self.queue
            .send(Queued {
                record,
                done: Some(done),
            })
            .map_err(|_| "the audit writer stopped".to_string())?;
        wait.recv()
            .map_err(|_| "the audit writer stopped".to_string())?
    }

    /// Appends an entry without waiting for the disk: it is written with the next batch, within
    /// milliseconds, and before any entry recorded after it (the writer keeps the order), so the
    /// next entry someone waits for makes it durable too. For the high-volume entries the issue
    /// allows in batches: denials and service calls.
    pub fn record_queued(&self, record: AuditRecord) -> Result<(), String> {
        if !self.enabled(&record.category) {
            return Ok(());
        }
        self.queue
            .send(Queued { record, done: None })
            .map_err(|_| "the audit writer stopped".to_string())
    }

    /// Waits until every entry queued so far is on disk.
    pub fn flush(&self) -> Result<(), String> {
        self.record(AuditRecord {
            timestamp: crate::now_ms(),
            user: thinghost_core::predefined::SYSTEM.into(),
            category: category::AUDIT.into(),
            message_key: "auditFlushed".into(),
            args: json!({}),
            source: "Subsystems/AuditSubsystem".into(),
            source_type: "Subsystem".into(),
        })
    }

    /// Held by an archive, purge, cleanup or export while it runs.
    fn maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The query connection.
    pub fn reader(&self) -> MutexGuard<'_, SqliteStore> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The entity a denied target names (`Things/Pump1/Properties/level` -> `Things/Pump1`,
/// `Thing`), so that a denial is found among the entity's entries.
pub fn entity_of(target: &str) -> (String, &'static str) {
    let t = target
        .trim_start_matches('/')
        .trim_start_matches("Thingworx/");
    let mut parts = t.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(c), Some(n)) => match thinghost_core::Kind::from_collection(c) {
            Some(k) => (format!("{c}/{n}"), k.label()),
            None => (t.to_string(), ""),
        },
        _ => (t.to_string(), ""),
    }
}

/// Parses `serve --audit-off` values.
pub fn parse_disabled(values: &[String]) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for v in values {
        let c = v.to_ascii_uppercase();
        if c == category::AUDIT || c == category::AUTHENTICATION || c == category::AUTHORIZATION {
            return Err(format!(
                "--audit-off {v}: {c} cannot be turned off (denials, sign-ins and the audit's own use are always recorded)"
            ));
        }
        if !category::ALL.contains(&c.as_str()) {
            return Err(format!(
                "--audit-off {v}: not an audit category; the categories are {}",
                category::ALL.join(", ")
            ));
        }
        out.insert(c);
    }
    Ok(out)
}

/// An entry as the `AuditHistory` DataShape's row.
pub fn row(e: &thinghost_store::audit::AuditEntry) -> Json {
    let r = &e.record;
    json!({
        "timestamp": thinghost_core::types::format_datetime(r.timestamp),
        "user": r.user,
        "auditCategory": r.category,
        "sourceType": r.source_type,
        "source": r.source,
        "message": message(&r.message_key, &r.args),
        "id": e.id,
        "messageKey": r.message_key,
        "args": r.args,
    })
}

/// A readable message: the key and its arguments (`permissionsChanged: service=...`).
fn message(key: &str, args: &Json) -> String {
    match args {
        Json::Object(m) if !m.is_empty() => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| match v {
                    Json::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            format!("{key}: {}", parts.join(", "))
        }
        _ => key.to_string(),
    }
}

use thinghost_core::predefined::{
    AUDIT_ARCHIVE_REPOSITORY, AUDIT_ARCHIVE_SCHEDULER_DP, AUDIT_CLEANUP_SCHEDULER,
};
use thinghost_core::{Body, Kind, View};
use thinghost_store::audit::{AuditEntry, AuditQuery};

/// The archive's folder inside `AuditArchiveFileRepository`: one folder per day (UTC) of the
/// entries, `archive/YYYY-MM-DD/entries-FIRST-LAST.jsonl.gz`, named by the ids it holds (an
/// archive cut off before its entries left the database is written again under the same name).
pub(crate) const ARCHIVE_DIR: &str = "archive";
pub(crate) const DAY_MS: i64 = 86_400_000;

fn day_of(ms: i64) -> String {
    thinghost_core::types::format_datetime(ms)[..10].to_string()
}

/// An entry as one line of an archive or export (everything, the chain included, so that an
/// archive can be verified offline).
fn line(e: &AuditEntry) -> Json {
    let r = &e.record;
    json!({
        "id": e.id, "timestamp": r.timestamp, "user": r.user, "auditCategory": r.category,
        "messageKey": r.message_key, "args": r.args, "source": r.source,
        "sourceType": r.source_type, "prevHash": e.prev_hash, "hash": e.hash,
    })
}

/// Writes gzip-compressed JSON lines to file `rel` of `repo` atomically (see
/// [`Repo::write_atomic`]). A line that fails (a page the database could not read) stops the
/// write, and nothing replaces the file.
fn write_lines(
    repo: &Repo,
    rel: &Path,
    lines: &mut dyn Iterator<Item = Result<Json, String>>,
) -> Result<u64, String> {
    repo.write_atomic(rel, |out| {
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        let mut n = 0;
        for l in lines {
            l.and_then(|l| {
                writeln!(gz, "{l}").map_err(|e| format!("cannot write {}: {e}", rel.display()))
            })?;
            n += 1;
        }
        gz.finish()
            .map_err(|e| format!("cannot write {}: {e}", rel.display()))?;
        Ok(n)
    })
}

/// Reads an archive or export file.
fn read_lines(repo: &Repo, rel: &Path) -> Result<Vec<Json>, String> {
    use std::io::BufRead;
    let bytes = repo.read(rel)?;
    std::io::BufReader::new(flate2::read::GzDecoder::new(&bytes[..]))
        .lines()
        .map(|l| {
            let l = l.map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
            serde_json::from_str(&l).map_err(|e| format!("{}: {e}", rel.display()))
        })
        .collect()
}

/// The archive's repository.
pub(crate) fn archive_repo(app: &crate::state::app::App) -> Result<Repo, String> {
    Ok(Repo::open(&app.data_dir, AUDIT_ARCHIVE_REPOSITORY)?.keep_free(app.min_free_disk))
}

/// Archives the entries older than `before` (the oldest first, as long as they are older) into
/// `AuditArchiveFileRepository`, then removes them from the database; the chain's anchor moves
/// with them. Returns how many and the files written.
pub fn archive(app: &crate::state::app::App, before: i64) -> Result<(u64, Vec<String>), String> {
    let _one_at_a_time = app.audit_log.maintenance();
    let repo = archive_repo(app)?;
    let mut total = 0;
    let mut files = Vec::new();
    loop {
        let prefix = app
            .audit_log
            .reader()
            .audit_prefix(before, 10_000)
            .map_err(|e| e.to_string())?;
        let Some(last) = prefix.last().map(|e| e.id) else {
            break;
        };
        let mut start = 0;
        while start < prefix.len() {
            let day = day_of(prefix[start].record.timestamp);
            let end = prefix[start..]
                .iter()
                .position(|e| day_of(e.record.timestamp) != day)
                .map_or(prefix.len(), |p| start + p);
            let chunk = &prefix[start..end];
            let rel = format!(
                "{ARCHIVE_DIR}/{day}/entries-{:012}-{:012}.jsonl.gz",
                chunk[0].id,
                chunk[chunk.len() - 1].id
            );
            write_lines(
                &repo,
                Path::new(&rel),
                &mut chunk.iter().map(|e| Ok(line(e))),
            )?;
            files.push(rel);
            start = end;
        }
        total += app
            .audit_log
            .reader()
            .drop_audit_through(last)
            .map_err(|e| e.to_string())?;
    }
    Ok((total, files))
}

/// Archives the entries older than `before` (see [`archive`]) and records the time in the
/// archive scheduler `thing`'s property (`lastArchivedTime`, or
/// `lastArchivedTimeDirectPersistence` for the DirectPersistence one): what the archive
/// services and the archive schedulers do.
pub fn archive_and_record(
    app: &crate::state::app::App,
    before: i64,
    thing: &str,
    now: i64,
) -> Result<Json, String> {
    let property = if thing == AUDIT_ARCHIVE_SCHEDULER_DP {
        "lastArchivedTimeDirectPersistence"
    } else {
        "lastArchivedTime"
    };
    let (n, files) = archive(app, before)?;
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    set_value(
        &mut db,
        thing,
        property,
        json!(thinghost_core::types::format_datetime(now)),
    );
    Ok(json!({"archived": n, "files": files}))
}

/// The cut-off of a cleanup by `DaysToArchive` (archive days older than that many days),
/// refused below 1 day (a smaller value would delete every archive file).
pub fn cleanup_cutoff(days_to_archive: f64, now: i64) -> Result<i64, String> {
    if days_to_archive < 1.0 {
        return Err(format!(
            "{AUDIT_CLEANUP_SCHEDULER}.DaysToArchive is {days_to_archive}; set it to at least 1 (a smaller value would delete every archive file)"
        ));
    }
    Ok(now - (days_to_archive * DAY_MS as f64) as i64)
}

/// Removes the online entries older than the retention; returns how many.
pub fn purge(app: &crate::state::app::App, now: i64) -> Result<u64, String> {
    let _one_at_a_time = app.audit_log.maintenance();
    let before = now - app.audit_retention_days as i64 * DAY_MS;
    let mut total = 0;
    loop {
        let prefix = app
            .audit_log
            .reader()
            .audit_prefix(before, 50_000)
            .map_err(|e| e.to_string())?;
        let Some(last) = prefix.last().map(|e| e.id) else {
            return Ok(total);
        };
        total += app
            .audit_log
            .reader()
            .drop_audit_through(last)
            .map_err(|e| e.to_string())?;
    }
}

/// Deletes the archive files of days before `before`'s day; returns the files deleted.
pub fn cleanup(app: &crate::state::app::App, before: i64) -> Result<Vec<String>, String> {
    let _one_at_a_time = app.audit_log.maintenance();
    let repo = archive_repo(app)?;
    let mut removed = Vec::new();
    for day in due_for_cleanup(app, before)? {
        let folder = Path::new(ARCHIVE_DIR).join(&day);
        for f in repo.list(&folder).unwrap_or_default() {
            removed.push(format!("{ARCHIVE_DIR}/{day}/{}", f.name));
        }
        repo.remove_dir_all(&folder)?;
    }
    Ok(removed)
}

/// The archived entries with a timestamp in [start, end], oldest first.
fn archived(
    app: &crate::state::app::App,
    start: i64,
    end: i64,
    online_from: Option<i64>,
) -> Result<Vec<Json>, String> {
    let repo = archive_repo(app)?;
    // By id, once each: a crash between an archive's files and the removal of their entries
    // leaves files that the next archive writes again (under another name when it takes a
    // longer prefix), and entries that are still online (from `online_from` on).
    let mut out = std::collections::BTreeMap::new();
    let Ok(days) = repo.list(Path::new(ARCHIVE_DIR)) else {
        return Ok(Vec::new());
    };
    let (first, last) = (day_of(start.max(0)), day_of(end));
    let days: Vec<String> = days
        .into_iter()
        .map(|d| d.name)
        .filter(|d| d.len() == 10 && *d >= first && *d <= last)
        .collect();
    for day in days {
        let folder = Path::new(ARCHIVE_DIR).join(&day);
        let files: Vec<PathBuf> = repo
            .list(&folder)?
            .into_iter()
            .filter(|f| f.name.ends_with(".jsonl.gz"))
            .map(|f| folder.join(f.name))
            .collect();
        for f in files {
            for l in read_lines(&repo, &f)? {
                let in_range = l["timestamp"]
                    .as_i64()
                    .is_some_and(|t| t >= start && t <= end);
                let Some(id) = l["id"].as_i64() else {
                    return Err(format!(
                        "{}: a line without an id is no archived entry",
                        f.display()
                    ));
                };
                if !in_range || online_from.is_some_and(|o| id >= o) {
                    continue;
                }
                match out.entry(id) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(l);
                    }
                    // Copies of one entry are the same entry, hash and all; two different
                    // entries under one id mean an archive file was changed.
                    std::collections::btree_map::Entry::Occupied(o)
                        if o.get()["hash"] != l["hash"] =>
                    {
                        return Err(format!(
                            "{}: entry {id} differs from another archived copy of it (an archive file was changed)",
                            f.display()
                        ));
                    }
                    std::collections::btree_map::Entry::Occupied(_) => {}
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// Exports the entries with a timestamp in [start, end] (the archived ones too, with
/// `offline`) into one compressed file of a repository. Returns how many.
pub fn export(
    app: &crate::state::app::App,
    (start, end): (i64, i64),
    offline: bool,
    target: (&str, &Path),
) -> Result<u64, String> {
    let _one_at_a_time = app.audit_log.maintenance();
    let archived = if offline {
        let oldest_online = app
            .audit_log
            .reader()
            .query_audit(&AuditQuery {
                sorts: vec![(thinghost_store::audit::Field::Id, true)],
                limit: 1,
                ..AuditQuery::default()
            })
            .map_err(|e| e.to_string())?;
        archived(app, start, end, oldest_online.first().map(|e| e.id))?
    } else {
        Vec::new()
    };
    // The online entries, a page at a time after the last id written (each page starts from
    // the index, however far into the log), straight into the file.
    let mut after = i64::MIN;
    let mut done = false;
    let online = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let page = app.audit_log.reader().query_audit(&AuditQuery {
            start: Some(start),
            end: Some(end),
            filter: Some(thinghost_store::audit::Filter::Cmp(
                thinghost_store::audit::Field::Id,
                thinghost_store::audit::Op::Gt,
                thinghost_store::audit::Value::Int(after),
            )),
            sorts: vec![(thinghost_store::audit::Field::Id, true)],
            limit: EXPORT_PAGE,
            ..AuditQuery::default()
        });
        match page {
            Ok(page) => {
                done = (page.len() as u64) < EXPORT_PAGE;
                after = page.last().map_or(after, |e| e.id);
                Some(page.iter().map(|e| Ok(line(e))).collect::<Vec<_>>())
            }
            Err(e) => {
                done = true;
                Some(vec![Err(e.to_string())])
            }
        }
    })
    .flatten();
    let repo = Repo::open(&app.data_dir, target.0)?.keep_free(app.min_free_disk);
    write_lines(
        &repo,
        target.1,
        &mut archived.into_iter().map(Ok).chain(online),
    )
}

/// Entries read at a time by an export.
const EXPORT_PAGE: u64 = 10_000;

/// Sets a property of a predefined audit Thing (the time of the last archive), with the model's
/// write lock the caller holds.
fn set_value(db: &mut thinghost_store::Db, thing: &str, property: &str, value: Json) {
    let changed = db.change(|tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, thing)?.body {
            t.values.insert(property.to_string(), value);
        }
        Ok(())
    });
    if let Err(e) = changed {
        tracing::error!(thing, property, error = %e, "cannot record the archive time");
    }
}

/// A Thing's property value, or the default of its definition (own, template or shape).
pub(crate) fn value_of(m: &thinghost_core::Model, thing: &str, property: &str) -> Option<Json> {
    let e = m.get(Kind::Thing, thing)?;
    let Body::Thing(t) = &e.body else {
        return None;
    };
    t.values.get(property).cloned().or_else(|| {
        thinghost_core::validate::find_property(m, e, property)
            .and_then(|(def, _)| def.default_value.clone())
    })
}

/// `AuditArchiveCleanupScheduler.DaysToArchive` (30 when unset).
pub(crate) fn days_to_archive(m: &thinghost_core::Model) -> f64 {
    value_of(m, AUDIT_CLEANUP_SCHEDULER, "DaysToArchive")
        .and_then(|v| v.as_f64())
        .unwrap_or(30.0)
}

/// The archive days before `before`'s day (what the cleanup would delete), oldest first.
pub fn due_for_cleanup(app: &crate::state::app::App, before: i64) -> Result<Vec<String>, String> {
    let cut = day_of(before);
    let Ok(days) = archive_repo(app)?.list(Path::new(ARCHIVE_DIR)) else {
        return Ok(vec![]);
    };
    Ok(days
        .into_iter()
        .map(|d| d.name)
        .filter(|d| d.len() == 10 && d.as_str() < cut.as_str())
        .collect())
}

/// Records a call of a service marked audited (category SERVICE): queued, or durable before the
/// call answers, as the service says.
pub fn service_call(
    app: &crate::state::app::App,
    caller: &crate::state::auth::Caller,
    mode: thinghost_core::ServiceAudit,
    args: Json,
    source: &str,
    source_type: &str,
) {
    let record = record(
        &caller.name,
        category::SERVICE,
        "serviceCalled",
        args,
        source,
        source_type,
    );
    app.write_audit(record, mode != thinghost_core::ServiceAudit::Durable);
}
