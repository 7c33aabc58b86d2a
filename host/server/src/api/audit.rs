//! The services of `Subsystems/AuditSubsystem` (DOMAIN section 7): the reads
//! (`QueryAuditHistory` and its kin, with the seed's table of who may run them, U5) and the
//! maintenance services (archive, export, purge, cleanup, U6). The log they read and the jobs they
//! start are `crate::state::audit`'s.

use crate::state::audit::{
    ARCHIVE_DIR, archive_and_record, category, cleanup, cleanup_cutoff, days_to_archive, export,
    purge, row,
};
use crate::state::repository::Repo;
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use thinghost_core::predefined::{
    AUDIT_ARCHIVE_REPOSITORY, AUDIT_ARCHIVE_SCHEDULER, AUDIT_ARCHIVE_SCHEDULER_DP,
};
use thinghost_store::{SqliteStore, Store, StoreError};
// ---- the services of Subsystems/AuditSubsystem ----------------------------------------------

use crate::api::{ApiError, Call, Reply, Request, bad, forbidden, result};
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
        if row["visibility"] == json!(true) && !crate::api::authz::sees_id(m, subject, id) {
            if is_subsystem {
                return Err(crate::api::not_found(kind, name));
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
            // A resource nobody ever named has no symbol, and no entry can grant it.
            let sym = resource.map(|r| access.sym(r));
            let granted = !matches!(sym, Some(None))
                && m.check(
                    subject,
                    permission,
                    Target::Entity {
                        id,
                        resource: sym.flatten(),
                    },
                )
                .outcome
                    == Outcome::Allowed;
            if !granted {
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

/// The criteria every query service takes: startDate, endDate, auditCategory and query.
fn base_query(call: &Call<'_>) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery {
        start: date(call, "startDate")?,
        end: date(call, "endDate")?,
        category: call.opt_str("auditCategory"),
        limit: MAX_ITEMS,
        ..AuditQuery::default()
    };
    query_param(call, &mut q)?;
    Ok(q)
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

/// A read of the audit log, checked under the model's lock and answered without it.
pub enum Read {
    /// Entries, one page.
    Entries(AuditQuery),
    /// How many entries a query selects.
    Count(AuditQuery),
    /// The hash chain checked from end to end (seconds over millions of entries).
    Verify,
}

/// Checks a read of the audit log (rights by the seed's table) and records the call (category
/// AUDIT): the part that needs the model.
fn prepare(call: &mut Call<'_>) -> Result<Read, ApiError> {
    match call.kind {
        Kind::Thing => thing_query(call),
        _ => service_read(call),
    }
}

/// Runs `f` on the call of `request`, under the model's shared lock, once the entity is found
/// visible to the caller: the checks of the audit services that then run without the lock
/// ([`read`], [`maintenance`]).
fn checked<T>(
    app: &crate::state::app::App,
    caller: &crate::state::auth::Caller,
    request: Request,
    f: impl FnOnce(&mut Call<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    crate::api::visible_entity(db.model(), caller, request.kind, &request.entity)?;
    let mut call = Call {
        app,
        db: crate::api::Guard::Shared(&db),
        caller,
        kind: request.kind,
        entity: request.entity,
        row: request.row,
        params: request.params,
        prepared: Default::default(),
    };
    // The row's rule again, under this lock: the model may have changed since the router
    // checked it under another.
    crate::api::authz::enforce(&call)?;
    f(&mut call)
}

/// A read of the audit log: checked under the model's shared lock ([`prepare`]) and answered
/// without it ([`answer`]; verifying the chain takes seconds over millions of entries).
pub fn read(
    app: &std::sync::Arc<crate::state::app::App>,
    caller: &crate::state::auth::Caller,
    request: Request,
) -> Result<Reply, ApiError> {
    let read = checked(app, caller, request, prepare)?;
    answer(app, read)
}

/// Answers a read of the audit log from the store (no model lock needed: the log has its own
/// reader).
pub fn answer(app: &crate::state::app::App, read: Read) -> Result<Reply, ApiError> {
    let mut store = app.audit_log.reader();
    Ok(match read {
        Read::Entries(q) => {
            let entries = store.query_audit(&q).map_err(store_error)?;
            Reply::Json(audit_history_table(&entries))
        }
        Read::Count(q) => {
            let n = store.count_audit(&q).map_err(store_error)?;
            result(BaseType::Long, json!(n))
        }
        Read::Verify => {
            // Its own connection: hashing the whole log takes seconds, and queries go on
            // meanwhile on the shared one (the check reads one snapshot).
            let path = store.path().to_path_buf();
            drop(store);
            let report = SqliteStore::open(&path)
                .and_then(|mut own| own.verify_audit_chain())
                .map_err(store_error)?;
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
}

/// Checks a read service of `Subsystems/AuditSubsystem`.
fn service_read(call: &mut Call<'_>) -> Result<Read, ApiError> {
    let s = call.row.name;
    {
        authorize(call, s, None)?;
        let mut q = base_query(call)?;
        // The audit services are always audited (category AUDIT).
        call.app.audit(
            &call.caller.name,
            category::AUDIT,
            "auditServiceCalled",
            json!({"service": s, "parameters": call.params}),
            "Subsystems/AuditSubsystem",
            "Subsystem",
        );
        Ok(match s {
            "QueryAuditHistory" => {
                q.limit = max_items(call)?;
                Read::Entries(q)
            }
            "QueryAuditHistoryWithQueryCriteria" => {
                q.limit = max_items(call)?;
                q.offset = match call.params.get("offset").and_then(Json::as_f64) {
                    Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
                    None => 0,
                    Some(n) => return Err(bad(format!("parameter offset: {n} is not a count"))),
                };
                Read::Entries(q)
            }
            "GetAuditEntryCount" => Read::Count(q),
            _ => Read::Verify,
        })
    }
}

/// `Things/NAME/Services/QueryAuditHistory(maxItems, startDate, endDate, auditCategory, query)`
/// (U4): the entries about that Thing. It needs ServiceInvoke on it (and so visibility of the
/// Thing). Members of `Auditors`, and administrators, see every entry of the Thing; anyone else
/// only their own entries on it.
fn thing_query(call: &mut Call<'_>) -> Result<Read, ApiError> {
    // (ServiceInvoke on the Thing is the row's rule, checked before.) Whoever may query the
    // whole log (Auditors by the platform's role rule P2, administrators, or the seed's grants)
    // sees every entry of the Thing; anyone else its own.
    let everything = crate::api::authz::reads_all_audit(call.model(), call.caller);
    let q = AuditQuery {
        source: Some(format!("Things/{}", call.entity)),
        user: (!everything).then(|| call.caller.name.to_string()),
        limit: max_items(call)?,
        ..base_query(call)?
    };
    call.app.audit(
        &call.caller.name,
        category::AUDIT,
        "auditServiceCalled",
        json!({"service": "QueryAuditHistory", "parameters": call.params, "allEntries": everything}),
        &format!("Things/{}", call.entity),
        "Thing",
    );
    Ok(Read::Entries(q))
}

// ---- archive, export, purge and cleanup (U6) ------------------------------------------------

/// What a maintenance service was asked to do, once its parameters and its caller's rights
/// are checked.
enum Job {
    Archive {
        before: i64,
        thing: &'static str,
    },
    Purge,
    Cleanup {
        before: i64,
    },
    Export {
        range: (i64, i64),
        with_archive: bool,
        target: PathBuf,
        repository: String,
        rel: String,
    },
}

/// Checks a maintenance call's parameters and rights (under the model's lock) and says what to
/// do.
fn plan(call: &mut Call<'_>, now: i64) -> Result<Job, ApiError> {
    let s = call.row.name;
    let repository = call.opt_str("targetRepositoryName");
    authorize(call, s, repository.as_deref())?;
    Ok(match s {
        "ArchiveAuditHistory" | "ArchiveAuditHistoryDirectPersistence" => Job::Archive {
            before: date(call, "olderThanDate")?.unwrap_or(now),
            thing: if s == "ArchiveAuditHistory" {
                AUDIT_ARCHIVE_SCHEDULER
            } else {
                AUDIT_ARCHIVE_SCHEDULER_DP
            },
        },
        "PurgeAuditData" => Job::Purge,
        "CleanupOfflineAudit" => Job::Cleanup {
            before: match date(call, "olderThanDate")? {
                Some(d) => d,
                None => cleanup_cutoff(days_to_archive(call.model()), now)
                    .map_err(|e| bad(format!("{e}, or pass olderThanDate")))?,
            },
        },
        _ => {
            let repository = repository.unwrap_or_default();
            if !crate::state::repository::is_repository(call.model(), &repository) {
                return Err(bad(format!(
                    "parameter targetRepositoryName: {repository} is not a FileRepository"
                )));
            }
            let rel = format!(
                "{}/{}",
                call.opt_str("targetPath").unwrap_or_default(),
                call.str("targetFileName")
            );
            let file_name = call.str("targetFileName");
            if file_name.is_empty()
                || file_name == "."
                || file_name == ".."
                || file_name.contains('/')
                || file_name.contains('\\')
            {
                return Err(bad(
                    "parameter targetFileName: a file name (no folders: put those in targetPath)",
                ));
            }
            let target = crate::state::repository::relative(&rel).map_err(bad)?;
            if repository == AUDIT_ARCHIVE_REPOSITORY && target.starts_with(ARCHIVE_DIR) {
                return Err(bad(format!(
                    "parameter targetPath: {ARCHIVE_DIR}/ of {repository} holds the archive itself, which only the archive writes; export elsewhere"
                )));
            }
            let repo = Repo::open(&call.app.data_dir, &repository).map_err(bad)?;
            if repo.is_dir(&target) {
                return Err(bad(format!(
                    "parameter targetFileName: {rel} is a folder in {repository}; name a file"
                )));
            }
            repo.writable(&target)
                .map_err(|e| bad(format!("parameter targetPath: {e}")))?;
            Job::Export {
                range: (
                    date(call, "startDate")?.unwrap_or(0),
                    date(call, "endDate")?.unwrap_or(now),
                ),
                with_archive: s == "ExportAuditData",
                target,
                repository,
                rel: rel.trim_start_matches('/').to_string(),
            }
        }
    })
}

/// The maintenance services of the audit subsystem: checked under the model's lock, then run
/// without it (an archive or an export may take seconds; requests go on meanwhile), the
/// archive taking the lock again only to record `lastArchivedTime`.
pub fn maintenance(
    app: &std::sync::Arc<crate::state::app::App>,
    caller: &crate::state::auth::Caller,
    request: Request,
) -> Result<Reply, ApiError> {
    let now = crate::now_ms();
    let service = request.row.name;
    let (job, params) = checked(app, caller, request, |call| {
        Ok((plan(call, now)?, std::mem::take(&mut call.params)))
    })?;
    let summary = match job {
        Job::Archive { before, thing } => {
            archive_and_record(app, before, thing, now).map_err(failed)?
        }
        Job::Purge => {
            let n = purge(app, now).map_err(failed)?;
            json!({"purged": n, "retentionDays": app.audit_retention_days})
        }
        Job::Cleanup { before } => {
            let files = cleanup(app, before).map_err(failed)?;
            json!({"deleted": files})
        }
        Job::Export {
            range,
            with_archive,
            target,
            repository,
            rel,
        } => {
            let n = export(app, range, with_archive, (&repository, &target)).map_err(failed)?;
            json!({"exported": n, "repository": repository, "path": rel})
        }
    };
    app.audit(
        &caller.name,
        category::AUDIT,
        "auditServiceCalled",
        json!({"service": service, "parameters": params, "outcome": summary}),
        "Subsystems/AuditSubsystem",
        "Subsystem",
    );
    Ok(result(BaseType::Json, summary))
}

fn failed(e: String) -> ApiError {
    tracing::error!(error = %e, "an audit maintenance service failed");
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{e}; an interrupted archive, purge or cleanup removes entries and files only once the step before it is on disk, so running it again is safe"
        ),
    )
}
