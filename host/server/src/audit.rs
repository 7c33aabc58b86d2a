//! The audit log in the server (DOMAIN section 7): the categories, the writer, and the services
//! of `Subsystems/AuditSubsystem`.
//!
//! Every entry is on disk before the request that caused it is answered. Entries of model
//! changes are written in the change's own transaction (`Db::change_audited`); every other entry
//! goes through one writer thread that appends whatever is queued in one transaction (group
//! commit): many concurrent requests share one fsync, and each waits for its own. Categories can
//! be turned off (`serve --audit-off CATEGORY`), never silently: the server warns and records
//! which, in category AUDIT, at every start.

use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::path::Path;
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
        EXTENSIONS,
        SCRIPTS,
        AUDIT,
    ];
}

/// The category of a model change's entry: permission, membership, key and password changes
/// are SECURITY, the rest MODEL.
pub fn change_category(audit_key: &str, kind: thinghost_core::Kind) -> &'static str {
    let security = matches!(
        audit_key,
        "permissionsChanged" | "membershipChanged" | "passwordChanged"
    ) || kind == thinghost_core::Kind::ApplicationKey;
    if security {
        category::SECURITY
    } else {
        category::MODEL
    }
}

struct Queued {
    record: AuditRecord,
    done: SyncSender<Result<(), String>>,
}

/// The audit log of a running server.
pub struct AuditLog {
    queue: SyncSender<Queued>,
    /// A connection for queries (WAL: reading never waits for the writer).
    reader: Mutex<SqliteStore>,
    disabled: BTreeSet<String>,
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
            let _ = q.done.send(outcome.clone());
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
            .send(Queued { record, done })
            .map_err(|_| "the audit writer stopped".to_string())?;
        wait.recv()
            .map_err(|_| "the audit writer stopped".to_string())?
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

// ---- the services of Subsystems/AuditSubsystem ----------------------------------------------

use crate::rest::{ApiError, Reply};
use crate::services::{Call, bad, forbidden, result};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Kind, Outcome, Permission, Target};
use thinghost_store::audit::{AuditQuery, Filter, parse_sorts};

/// The seed's table "Permissions for Non-Admin Users to Run Audit Services" (U5), as data: for
/// each service, every grant a non-admin user needs (a copy of `shared/data`'s file; a test keeps
/// them equal).
const PERMISSIONS: &str = include_str!("audit-service-permissions.json");

fn table() -> &'static Json {
    static TABLE: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| serde_json::from_str(PERMISSIONS).expect("the permission table parses"))
}

/// `maxItems` is capped here (U3).
pub const MAX_ITEMS: u64 = 5000;

/// May the caller run `service` of the audit subsystem? Administrators may (U5). Anyone else
/// needs every grant the seed's table lists for it: visibility, design-time and run-time
/// permissions on the subsystem and the other entities it names. `repository` is the file
/// repository the call names, for the table's `<user-created FileRepository>`. A caller who
/// cannot see the subsystem gets 404, as for anything it cannot see; a missing grant is a 403
/// that names it (and is audited as a denial).
pub fn authorize(call: &Call<'_>, service: &str, repository: Option<&str>) -> Result<(), ApiError> {
    if call.is_admin() {
        return Ok(());
    }
    let m = call.model();
    let access = m.access();
    let subject = call.caller.subject;
    let Some(rows) = table()["services"][service].as_array() else {
        return Err(forbidden(
            call.caller,
            &format!("run {service}: it is for administrators"),
            format!("Subsystems/AuditSubsystem/Services/{service}"),
            Permission::ServiceInvoke,
        ));
    };
    for row in rows {
        let entity = row["entity"].as_str().unwrap_or_default();
        let (collection, name) = entity.split_once('/').unwrap_or((entity, ""));
        let name = if name == "<user-created FileRepository>" {
            match repository {
                Some(r) => r,
                None => continue,
            }
        } else {
            name
        };
        let kind = Kind::from_collection(collection).expect("the table names collections");
        let path = format!("{collection}/{name}");
        let Some(id) = access.id(kind, name) else {
            return Err(bad(format!("{path} does not exist")));
        };
        let is_subsystem = kind == Kind::Subsystem;
        if row["visibility"] == json!(true) && !access.visible(subject, id) {
            if is_subsystem {
                return Err(crate::rest::not_found(kind, name));
            }
            return Err(forbidden(
                call.caller,
                &format!("run {service}: it needs visibility of {path}"),
                path,
                Permission::Read,
            ));
        }
        let mut needs: Vec<(Permission, Option<&str>)> = Vec::new();
        for p in row["designTime"].as_array().into_iter().flatten() {
            needs.push((
                Permission::parse(p.as_str().unwrap_or_default()).expect("a permission"),
                None,
            ));
        }
        for p in row["runTime"].as_array().into_iter().flatten() {
            let resource = p["resource"].as_str().filter(|r| *r != "*");
            needs.push((
                Permission::parse(p["type"].as_str().unwrap_or_default()).expect("a permission"),
                resource,
            ));
        }
        for (permission, resource) in needs {
            let target = Target::Entity {
                id,
                resource: resource.and_then(|r| access.sym(r)),
            };
            if resource.is_some_and(|r| access.sym(r).is_none()) {
                // A resource nobody ever named: no entry can grant it.
                return Err(forbidden(
                    call.caller,
                    &format!(
                        "run {service}: it needs {permission} on {path} ({})",
                        resource.unwrap_or("*")
                    ),
                    path,
                    permission,
                ));
            }
            if m.check(subject, permission, target).outcome != Outcome::Allowed {
                let on = match resource {
                    Some(r) => format!("{path} ({r})"),
                    None => path.clone(),
                };
                return Err(forbidden(
                    call.caller,
                    &format!("run {service}: it needs {permission} on {on}"),
                    path,
                    permission,
                ));
            }
        }
    }
    Ok(())
}

fn audit_history_table(entries: &[thinghost_store::audit::AuditEntry]) -> Json {
    InfoTable {
        fields: thinghost_core::predefined::AUDIT_HISTORY_FIELDS
            .iter()
            .map(|(name, base_type)| Field {
                name: name.to_string(),
                base_type: *base_type,
            })
            .collect(),
        rows: entries
            .iter()
            .map(|e| match row(e) {
                Json::Object(m) => m,
                _ => unreachable!("a row is an object"),
            })
            .collect(),
    }
    .into_json()
}

fn date(call: &Call<'_>, name: &str) -> Result<Option<i64>, ApiError> {
    match call.params.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => thinghost_core::types::parse_datetime(s)
            .map(Some)
            .map_err(|e| bad(format!("parameter {name}: {e}"))),
        Some(Json::Number(n)) => Ok(n.as_i64()),
        Some(other) => Err(bad(format!("parameter {name}: {other} is not a date"))),
    }
}

/// The `query` parameter (the vendor's QUERY: `filters` and `sorts`).
fn query_param(call: &Call<'_>, q: &mut AuditQuery) -> Result<(), ApiError> {
    let Some(v) = call.params.get("query").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let v = match v {
        Json::String(s) => {
            serde_json::from_str(s).map_err(|e| bad(format!("parameter query: not JSON: {e}")))?
        }
        other => other.clone(),
    };
    if let Some(f) = v.get("filters").filter(|f| !f.is_null()) {
        q.filter = Some(Filter::parse(f).map_err(|e| bad(format!("parameter query: {e}")))?);
    }
    if let Some(s) = v.get("sorts").filter(|s| !s.is_null()) {
        q.sorts = parse_sorts(s).map_err(|e| bad(format!("parameter query: {e}")))?;
    }
    Ok(())
}

fn max_items(call: &Call<'_>) -> Result<u64, ApiError> {
    match call.params.get("maxItems") {
        None | Some(Json::Null) => Ok(500),
        Some(v) => {
            let n = v
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .ok_or_else(|| bad(format!("parameter maxItems: {v} is not a count")))?;
            Ok((n as u64).min(MAX_ITEMS))
        }
    }
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "the audit store failed");
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "the audit store cannot answer now; try again",
    )
}

/// The services of `Subsystems/AuditSubsystem` implemented so far; None for another name.
pub fn service(call: &mut Call<'_>) -> Option<Result<Reply, ApiError>> {
    let service = call.service.clone();
    let s = service.as_str();
    const DATE: BaseType = BaseType::Datetime;
    let spec: &[crate::services::Param] = match s {
        "QueryAuditHistory" => &[
            ("maxItems", BaseType::Number, false),
            ("startDate", DATE, false),
            ("endDate", DATE, false),
            ("auditCategory", BaseType::String, false),
            ("query", BaseType::Json, false),
        ],
        "QueryAuditHistoryWithQueryCriteria" => &[
            ("query", BaseType::Json, false),
            ("maxItems", BaseType::Number, false),
            ("offset", BaseType::Number, false),
            ("startDate", DATE, false),
            ("endDate", DATE, false),
        ],
        "GetAuditEntryCount" => &[
            ("startDate", DATE, false),
            ("endDate", DATE, false),
            ("auditCategory", BaseType::String, false),
            ("query", BaseType::Json, false),
        ],
        "VerifyAuditChain" => &[],
        _ => return None,
    };
    Some((|| {
        call.params(spec)?;
        authorize(call, s, None)?;
        let mut q = AuditQuery {
            start: date(call, "startDate")?,
            end: date(call, "endDate")?,
            category: call.opt_str("auditCategory"),
            limit: MAX_ITEMS,
            ..AuditQuery::default()
        };
        query_param(call, &mut q)?;
        // The audit services are always audited (category AUDIT).
        call.app.audit(
            &call.caller.name,
            category::AUDIT,
            "auditServiceCalled",
            json!({"service": s, "parameters": call.params}),
            "Subsystems/AuditSubsystem",
            "Subsystem",
        );
        let mut store = call.app.audit_log.reader();
        Ok(match s {
            "QueryAuditHistory" => {
                q.limit = max_items(call)?;
                let entries = store.query_audit(&q).map_err(store_error)?;
                Reply::Json(audit_history_table(&entries))
            }
            "QueryAuditHistoryWithQueryCriteria" => {
                q.limit = max_items(call)?;
                q.offset = match call.params.get("offset").and_then(Json::as_f64) {
                    Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
                    None => 0,
                    Some(n) => return Err(bad(format!("parameter offset: {n} is not a count"))),
                };
                let entries = store.query_audit(&q).map_err(store_error)?;
                Reply::Json(audit_history_table(&entries))
            }
            "GetAuditEntryCount" => {
                let n = store.count_audit(&q).map_err(store_error)?;
                result(BaseType::Long, json!(n))
            }
            _ => {
                let report = store.verify_audit_chain().map_err(store_error)?;
                let (id, reason) = report
                    .broken
                    .map(|(id, r)| (json!(id), json!(r)))
                    .unwrap_or((Json::Null, Json::Null));
                Reply::Json(
                    InfoTable {
                        fields: vec![
                            Field { name: "intact".into(), base_type: BaseType::Boolean },
                            Field { name: "checked".into(), base_type: BaseType::Long },
                            Field { name: "brokenAtId".into(), base_type: BaseType::Long },
                            Field { name: "reason".into(), base_type: BaseType::String },
                        ],
                        rows: match json!({"intact": id.is_null(), "checked": report.checked, "brokenAtId": id, "reason": reason}) {
                            Json::Object(m) => vec![m],
                            _ => unreachable!("an object"),
                        },
                    }
                    .into_json(),
                )
            }
        })
    })())
}

/// `Things/NAME/Services/QueryAuditHistory(maxItems, startDate, endDate, auditCategory, query)`
/// (U4): the entries about that Thing. It needs ServiceInvoke on it (and so visibility of the
/// Thing). Members of `Auditors`, and administrators, see every entry of the Thing; anyone else
/// only their own entries on it.
pub fn thing_query(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[
        ("maxItems", BaseType::Number, false),
        ("startDate", BaseType::Datetime, false),
        ("endDate", BaseType::Datetime, false),
        ("auditCategory", BaseType::String, false),
        ("query", BaseType::Json, false),
    ])?;
    let (id, resource, everything) = {
        let m = call.model();
        let access = m.access();
        let id = access.id(Kind::Thing, &call.entity).expect("resolved");
        let auditors = access.id(Kind::Group, thinghost_core::predefined::AUDITORS);
        let everything = access.is_administrator(call.caller.subject)
            || access
                .principals(call.caller.subject)
                .any(|p| Some(p) == auditors);
        (id, access.sym("QueryAuditHistory"), everything)
    };
    call.require(
        Permission::ServiceInvoke,
        Target::Entity { id, resource },
        "call QueryAuditHistory",
    )?;
    let mut q = AuditQuery {
        source: Some(format!("Things/{}", call.entity)),
        user: (!everything).then(|| call.caller.name.clone()),
        start: date(call, "startDate")?,
        end: date(call, "endDate")?,
        category: call.opt_str("auditCategory"),
        limit: max_items(call)?,
        ..AuditQuery::default()
    };
    query_param(call, &mut q)?;
    call.app.audit(
        &call.caller.name,
        category::AUDIT,
        "auditServiceCalled",
        json!({"service": "QueryAuditHistory", "parameters": call.params, "allEntries": everything}),
        &format!("Things/{}", call.entity),
        "Thing",
    );
    let entries = call
        .app
        .audit_log
        .reader()
        .query_audit(&q)
        .map_err(store_error)?;
    Ok(Reply::Json(audit_history_table(&entries)))
}
