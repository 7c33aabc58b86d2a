//! The functions of the host's own services: entity creation and deletion, membership,
//! definitions, permissions, explanations and session information (DOMAIN.md section 4). Each is
//! named by its row of `crate::api::table`, which declares its parameters (checked before it
//! runs), its lock and its rule: creating needs `Create` on the collection, deleting `Delete` on
//! the entity, changing an entity (its members, definitions or permissions) `Update` on it,
//! reading its permissions `Read`; `Rule::Own` rows check here what the row describes. Every
//! change is audited, in the change's own transaction.

use crate::api::table::{AclOf, Action, Family, Op, Passwords, Service};
pub(crate) use crate::api::{ApiError, Call, Prepared, Reply, Request, bad, forbidden, result};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::predefined;
use thinghost_core::*;

/// The hash [`prepare_passwords`] made of `password` (from the same parameters as this call's,
/// before the lock), or (a call that did not come through `api::invoke`) one made now.
fn prepared_hash(call: &mut Call<'_>, password: &str) -> Result<String, ApiError> {
    if let Some(h) = call.prepared.new_hash.take() {
        return Ok(h);
    }
    crate::state::keys::hash_password(password)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// What a new password may be, checked before it is hashed (nothing is hashed for a refusal).
fn password_rule(password: &str, user: &str) -> bool {
    password.chars().count() >= 8 && password.chars().count() <= 1024 && password != user
}

/// The password work of a call, done on the hashing pool before the model's lock is taken, and
/// only for a call that may do it: `CreateUser` by a caller who may create users,
/// `ChangePassword` of an existing user by that user or an administrator. A user changing its
/// own password has its old one checked first (counted like a sign-in: at most the limit is
/// checked, even at once); the new one is hashed only once the old one matched.
pub fn prepare_passwords(
    app: &App,
    caller: &Caller,
    kind: Kind,
    entity: &str,
    row: &Service,
    params: &Map<String, Json>,
) -> Result<Prepared, ApiError> {
    let busy =
        |e: crate::state::keys::Busy| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let hash = |password: &str| -> Result<Option<String>, ApiError> {
        let password = password.to_string();
        app.hash_pool
            .run(move || crate::state::keys::hash_password(&password).ok())
            .map_err(busy)
    };
    let mut prepared = Prepared::default();
    if row.passwords == Passwords::None {
        return Ok(prepared);
    }
    // One call with password work per user at a time: the pool is shared with every sign-in.
    let Some(_turn) = app.auth.turn(&caller.name) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} has a password being hashed already; try again when it is done",
                caller.name
            ),
        ));
    };
    match (row.passwords, kind, entity) {
        (Passwords::NewUser, _, _) => {
            let may = {
                let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                db.model()
                    .access()
                    .check(
                        caller.subject,
                        Permission::Create,
                        Target::Collection(Kind::User),
                    )
                    .allowed()
            };
            let user = params.get("name").and_then(Json::as_str).unwrap_or("");
            if may
                && let Some(p) = params.get("password").and_then(Json::as_str)
                && password_rule(p, user)
            {
                prepared.new_hash = hash(p)?;
            }
        }
        (Passwords::Change, Kind::User, user) => {
            let (stored, admin) = {
                let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                let m = db.model();
                let stored = match m.get(Kind::User, user).map(|e| &e.body) {
                    Some(Body::User(u)) => Some(u.password_hash.clone()),
                    _ => None,
                };
                (stored, crate::api::authz::is_admin(m, caller.subject))
            };
            // A user that does not exist (or that the caller may not change) costs nothing:
            // the call is refused under the lock, as it would be without this step.
            let Some(stored) = stored else {
                return Ok(prepared);
            };
            let own = *user == *caller.name;
            if !own && !admin {
                return Ok(prepared);
            }
            if own && !admin {
                let who = format!("oldPassword:{user}");
                let attempt = match app.auth.begin_one(&who) {
                    Ok(a) => a,
                    Err(crate::state::auth::Gate::Locked) => {
                        prepared.old_checked = Some(Err(ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too many wrong old passwords; try again later",
                        )));
                        return Ok(prepared);
                    }
                    Err(crate::state::auth::Gate::Busy) => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "other password checks of this user are running; try again in a moment",
                        ));
                    }
                };
                let old = params
                    .get("oldPassword")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string();
                let phc = stored
                    .clone()
                    .unwrap_or_else(|| crate::state::keys::unmatchable_hash().to_string());
                let exists = stored.is_some();
                let ok = app
                    .hash_pool
                    .run(move || crate::state::keys::verify_password(&old, &phc))
                    .map_err(busy)?
                    && exists;
                if ok {
                    attempt.succeeded();
                } else {
                    attempt.failed();
                }
                prepared.old_checked = Some(Ok((stored, ok)));
                if !ok {
                    return Ok(prepared);
                }
            }
            if let Some(p) = params.get("newPassword").and_then(Json::as_str)
                && password_rule(p, user)
            {
                prepared.new_hash = hash(p)?;
            }
        }
        _ => {}
    }
    Ok(prepared)
}

/// Is `name` an entity of `kind` the caller can see? One it cannot see answers exactly as one
/// that does not exist (V1): 400, naming the parameter.
fn seen(call: &Call<'_>, kind: Kind, name: &str, param: &str) -> Result<(), ApiError> {
    let visible = crate::api::authz::sees(call.model(), call.caller.subject, kind, name);
    if visible {
        Ok(())
    } else {
        Err(bad(format!(
            "parameter {param}: there is no {} named {name:?}",
            kind.label()
        )))
    }
}

/// The entry's principal (`principal`, `principalType`): a user or group the caller can see.
fn principal_ref(call: &Call<'_>) -> Result<PrincipalRef, ApiError> {
    let name = call.str("principal");
    let p = match call.str("principalType").as_str() {
        "User" => PrincipalRef::user(name),
        "Group" => PrincipalRef::group(name),
        other => {
            return Err(bad(format!(
                "parameter principalType: {other:?} is not User or Group"
            )));
        }
    };
    seen(call, p.entity_kind(), &p.principal, "principal")?;
    Ok(p)
}

/// A visibility entry from its `principal` (an organization, or `Org:Unit`) and `principalType`;
/// an error names the field at fault.
fn visibility_of(
    principal: &str,
    principal_type: &str,
) -> Result<VisibilityEntry, (&'static str, String)> {
    match principal_type {
        "Organization" => Ok(VisibilityEntry::organization(principal.to_string())),
        "OrganizationalUnit" => principal
            .split_once(':')
            .map(|(o, u)| VisibilityEntry::unit(o, u))
            .ok_or_else(|| {
                (
                    "principal",
                    format!("name a unit as Organization:Unit, not {principal:?}"),
                )
            }),
        other => Err((
            "principalType",
            format!("{other:?} is not Organization or OrganizationalUnit"),
        )),
    }
}

/// An item's error from [`visibility_of`]'s: the type's named, the unit's said.
fn item_error((field, m): (&'static str, String)) -> String {
    if field == "principalType" {
        format!("{field} {m}")
    } else {
        m
    }
}

/// The visibility entry's organization or unit: of an organization the caller can see.
fn visibility_entry(call: &Call<'_>) -> Result<VisibilityEntry, ApiError> {
    let entry = visibility_of(&call.str("principal"), &call.str("principalType"))
        .map_err(|(field, m)| bad(format!("parameter {field}: {m}")))?;
    let (org, _) = entry.split();
    seen(call, Kind::Organization, org, "principal")?;
    Ok(entry)
}

fn permission_param(call: &Call<'_>) -> Result<Permission, ApiError> {
    let t = call.str("type");
    Permission::parse(&t).ok_or_else(|| {
        let names: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
        bad(format!(
            "parameter type: {t:?} is not a permission; use one of {}",
            names.join(", ")
        ))
    })
}

fn entries_table(entries: &[PermissionEntry], with_resource: bool) -> Json {
    let mut fields = vec![
        Field {
            name: "principal".into(),
            base_type: BaseType::String,
        },
        Field {
            name: "principalType".into(),
            base_type: BaseType::String,
        },
        Field {
            name: "type".into(),
            base_type: BaseType::String,
        },
    ];
    if with_resource {
        fields.push(Field {
            name: "resource".into(),
            base_type: BaseType::String,
        });
    }
    fields.push(Field {
        name: "allow".into(),
        base_type: BaseType::Boolean,
    });
    let rows = entries
        .iter()
        .map(|e| {
            let mut r = Map::new();
            r.insert("principal".into(), json!(e.principal.principal));
            r.insert(
                "principalType".into(),
                json!(format!("{:?}", e.principal.kind)),
            );
            r.insert("type".into(), json!(e.permission.name()));
            if with_resource {
                r.insert("resource".into(), json!(e.resource));
            }
            r.insert("allow".into(), json!(e.allow));
            r
        })
        .collect();
    InfoTable { fields, rows }.into_json()
}

fn visibility_table(entries: &[VisibilityEntry]) -> Json {
    let rows = entries
        .iter()
        .map(|v| {
            let mut r = Map::new();
            r.insert("principal".into(), json!(v.principal));
            r.insert("principalType".into(), json!(format!("{:?}", v.kind)));
            r
        })
        .collect();
    InfoTable {
        fields: vec![
            Field {
                name: "principal".into(),
                base_type: BaseType::String,
            },
            Field {
                name: "principalType".into(),
                base_type: BaseType::String,
            },
        ],
        rows,
    }
    .into_json()
}

fn names_table(field: &str, names: impl IntoIterator<Item = String>) -> Json {
    InfoTable {
        fields: vec![Field {
            name: field.into(),
            base_type: BaseType::String,
        }],
        rows: names
            .into_iter()
            .map(|n| {
                let mut r = Map::new();
                r.insert(field.into(), json!(n));
                r
            })
            .collect(),
    }
    .into_json()
}

fn acl_mut<'t>(
    tx: &'t mut Tx<'_>,
    kind: Kind,
    name: &str,
    which: AclOf,
) -> Result<&'t mut Acl, ModelError> {
    let e = tx.get_mut(kind, name)?;
    match which {
        AclOf::Own | AclOf::Collection => Ok(&mut e.permissions),
        AclOf::Instance => e
            .instance_permissions_mut()
            .ok_or_else(|| ModelError::Invalid {
                entity: format!("{}/{name}", kind.collection()),
                message: "only ThingTemplates and ThingShapes have instance permissions".into(),
            }),
    }
}

/// The permission services of one list of entries (an entity's own, a template's or shape's
/// instance permissions, a collection's): the row says which family, what, and where.
pub fn permission_service(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let Op::Permissions(family, action, which) = call.row.op else {
        unreachable!("a permission service's row names its family")
    };
    let (kind, name) = (call.kind, call.entity.clone());
    let coll_kind = match which {
        AclOf::Collection => {
            let c = call.str("collectionName");
            Some(Kind::from_collection(&c).ok_or_else(|| {
                bad(format!(
                    "parameter collectionName: {c:?} is not a collection"
                ))
            })?)
        }
        _ => None,
    };
    let read_acl = |call: &Call<'_>| -> Acl {
        match coll_kind {
            Some(k) => call.model().collection(k).cloned().unwrap_or_default(),
            None => {
                let e = call.model().get(kind, &name).expect("resolved");
                match which {
                    AclOf::Instance => e.instance_permissions().cloned().unwrap_or_default(),
                    _ => e.permissions.clone(),
                }
            }
        }
    };
    // V1: entries naming a principal the caller cannot see are neither listed nor replaced.
    let shown =
        |call: &Call<'_>, p: &PrincipalRef| seen(call, p.entity_kind(), &p.principal, "").is_ok();
    let shown_org = |call: &Call<'_>, v: &VisibilityEntry| {
        seen(call, Kind::Organization, v.split().0, "").is_ok()
    };
    if matches!(action, Action::Get | Action::GetJson) {
        let mut acl = read_acl(call);
        acl.run_time.retain(|e| shown(call, &e.principal));
        acl.design_time.retain(|e| shown(call, &e.principal));
        acl.visibility.retain(|v| shown_org(call, v));
        let table = match family {
            Family::RunTime => entries_table(&acl.run_time, true),
            Family::DesignTime => entries_table(&acl.design_time, false),
            Family::Visibility => visibility_table(&acl.visibility),
        };
        return Ok(if action == Action::Get {
            Reply::Json(table)
        } else {
            result(BaseType::Json, table["rows"].clone())
        });
    }
    if action == Action::SetJson {
        let source = match coll_kind {
            Some(k) => k.collection().to_string(),
            None => name.clone(),
        };
        let replace = entries_of_json(call, family)?;
        // The entries the caller cannot see the principal of stay as they are.
        let current = read_acl(call);
        let kept_entries: Vec<PermissionEntry> = match family {
            Family::RunTime => current.run_time.clone(),
            Family::DesignTime => current.design_time.clone(),
            Family::Visibility => vec![],
        }
        .into_iter()
        .filter(|e| !shown(call, &e.principal))
        .collect();
        let kept_visibility: Vec<VisibilityEntry> = current
            .visibility
            .iter()
            .filter(|v| family == Family::Visibility && !shown_org(call, v))
            .cloned()
            .collect();
        let grants = match &replace {
            Replace::Visibility(v) => !v.is_empty(),
            Replace::Entries(e) => e.iter().any(|e| e.allow),
        };
        let warn = archive_grant_warning(call, &source, grants);
        call.commit("permissionsChanged", (kind, source), move |tx| {
            let acl = match coll_kind {
                Some(k) => tx.collection_mut(k),
                None => acl_mut(tx, kind, &name, which)?,
            };
            match replace {
                Replace::Visibility(mut v) => {
                    v.extend(kept_visibility);
                    acl.visibility = v;
                }
                Replace::Entries(mut e) => {
                    e.extend(kept_entries);
                    if family == Family::DesignTime {
                        acl.design_time = e;
                    } else {
                        acl.run_time = e;
                    }
                }
            }
            Ok(())
        })?;
        return Ok(warned(call, warn));
    }
    // Whether the change widens access (adds visibility or an allowing entry, or removes a
    // deny): what the U7 warning is about.
    let add = action == Action::Add;
    let mut widens = add && family == Family::Visibility;
    let change: Box<dyn FnOnce(&mut Acl)> = match family {
        Family::RunTime | Family::DesignTime => {
            let principal = principal_ref(call)?;
            let permission = permission_param(call)?;
            let design = family == Family::DesignTime;
            let resource = if design {
                ALL_RESOURCES.to_string()
            } else {
                call.opt_str("resource")
                    .unwrap_or_else(|| ALL_RESOURCES.to_string())
            };
            let allow = call.bool_or("allow", true);
            widens = if add {
                allow
            } else {
                let acl = read_acl(call);
                let list = if design {
                    &acl.design_time
                } else {
                    &acl.run_time
                };
                list.iter().any(|e| {
                    e.principal == principal
                        && e.permission == permission
                        && e.resource == resource
                        && !e.allow
                })
            };
            Box::new(move |acl: &mut Acl| {
                let list = if design {
                    &mut acl.design_time
                } else {
                    &mut acl.run_time
                };
                // One entry per principal, type and resource: adding replaces, deleting removes.
                list.retain(|e| {
                    !(e.principal == principal
                        && e.permission == permission
                        && e.resource == resource)
                });
                if add {
                    list.push(PermissionEntry::new(
                        principal, permission, &resource, allow,
                    ));
                }
            })
        }
        Family::Visibility => {
            let entry = visibility_entry(call)?;
            Box::new(move |acl: &mut Acl| {
                acl.visibility.retain(|v| v != &entry);
                if add {
                    acl.visibility.push(entry);
                }
            })
        }
    };
    let source_name = match coll_kind {
        Some(k) => k.collection().to_string(),
        None => name.clone(),
    };
    let warn = archive_grant_warning(call, &source_name, widens);
    call.commit(
        "permissionsChanged",
        (kind, source_name.to_string()),
        move |tx| {
            match coll_kind {
                Some(k) => change(tx.collection_mut(k)),
                None => change(acl_mut(tx, kind, &name, which)?),
            }
            Ok(())
        },
    )?;
    Ok(warned(call, warn))
}

/// The new entries of one family (`Set...PermissionsAsJSON`).
enum Replace {
    Visibility(Vec<VisibilityEntry>),
    Entries(Vec<PermissionEntry>),
}

/// `permissions` of a `Set...PermissionsAsJSON` call: the rows `Get...PermissionsAsJSON` gives
/// (a JSON array, or an InfoTable of them), each checked (a principal the caller can see, a
/// permission of the family, no entry twice) before anything changes.
fn entries_of_json(call: &Call<'_>, family: Family) -> Result<Replace, ApiError> {
    let items = match call.params.get("permissions") {
        Some(Json::Array(a)) => a.clone(),
        Some(Json::Object(o)) if o.get("rows").is_some_and(Json::is_array) => {
            o["rows"].as_array().cloned().unwrap_or_default()
        }
        _ => {
            return Err(bad(
                "parameter permissions: a JSON array of entries, as the Get...PermissionsAsJSON service gives them",
            ));
        }
    };
    let at = |i: usize, m: String| bad(format!("parameter permissions, item {i}: {m}"));
    let field = |item: &Json, k: &str| {
        item.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if family == Family::Visibility {
        let mut out: Vec<VisibilityEntry> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let principal = field(item, "principal");
            let entry = visibility_of(&principal, &field(item, "principalType"))
                .map_err(|e| at(i, item_error(e)))?;
            let (org, unit) = entry.split();
            seen(call, Kind::Organization, org, "principal").map_err(|e| at(i, e.message))?;
            if let Some(u) = unit {
                let has = matches!(
                    call.model().get(Kind::Organization, org).map(|e| &e.body),
                    Some(Body::Organization(o)) if o.unit(u).is_some()
                );
                if !has {
                    return Err(at(i, format!("there is no unit {principal:?}")));
                }
            }
            if out.contains(&entry) {
                return Err(at(i, format!("{principal:?} is listed twice")));
            }
            out.push(entry);
        }
        return Ok(Replace::Visibility(out));
    }
    let design = family == Family::DesignTime;
    let mut out: Vec<PermissionEntry> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let principal = field(item, "principal");
        let who = match field(item, "principalType").as_str() {
            "User" => PrincipalRef::user(principal.clone()),
            "Group" => PrincipalRef::group(principal.clone()),
            other => {
                return Err(at(
                    i,
                    format!("principalType {other:?} is not User or Group"),
                ));
            }
        };
        seen(call, who.entity_kind(), &principal, "principal").map_err(|e| at(i, e.message))?;
        let t = field(item, "type");
        let permission = Permission::parse(&t)
            .filter(|p| p.is_run_time() != design)
            .ok_or_else(|| {
                at(
                    i,
                    format!(
                        "type {t:?} is not a {} permission",
                        if design { "design-time" } else { "run-time" }
                    ),
                )
            })?;
        let resource = match item.get("resource").and_then(Json::as_str) {
            Some(r) if !design && !r.is_empty() => r.to_string(),
            _ => ALL_RESOURCES.to_string(),
        };
        let allow = match item.get("allow") {
            None | Some(Json::Null) => true,
            Some(Json::Bool(b)) => *b,
            Some(other) => return Err(at(i, format!("allow must be true or false, not {other}"))),
        };
        if out
            .iter()
            .any(|e| e.principal == who && e.permission == permission && e.resource == resource)
        {
            return Err(at(i, format!("{principal} {t} {resource} is listed twice")));
        }
        out.push(PermissionEntry::new(who, permission, &resource, allow));
    }
    Ok(Replace::Entries(out))
}

/// `AddPermissions(permissions)`, and `AddInstancePermissions` on templates and shapes: entries of
/// the three families, added in one transaction with one audit entry that lists them (a grant is
/// all or nothing). Each item of the JSON array: `family` (`visibility`, `designTime` or
/// `runTime`), `principal`, `principalType`, and for the permission families `type`, `allow`
/// (default true) and, at run time, `resource` (default `*`). Every principal must exist.
pub fn add_permissions(call: &mut Call<'_>, which: AclOf) -> Result<Reply, ApiError> {
    let items = match call.params.get("permissions") {
        Some(Json::Array(items)) if !items.is_empty() => items.clone(),
        _ => {
            return Err(bad(
                "parameter permissions: a non-empty JSON array of {family, principal, principalType, type, resource, allow}",
            ));
        }
    };
    enum Change {
        Visibility(VisibilityEntry),
        Entry {
            design: bool,
            entry: PermissionEntry,
        },
    }
    let mut changes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |m: String| bad(format!("parameter permissions, item {i}: {m}"));
        let field = |k: &str| item.get(k).and_then(Json::as_str).unwrap_or_default();
        let principal = field("principal").to_string();
        let principal_type = field("principalType");
        let exists = |kind: Kind, name: &str| seen(call, kind, name, "").is_ok();
        match field("family") {
            "visibility" => {
                let entry =
                    visibility_of(&principal, principal_type).map_err(|e| at(item_error(e)))?;
                let (org, unit) = entry.split();
                let found = match (
                    call.model()
                        .get(Kind::Organization, org)
                        .filter(|_| exists(Kind::Organization, org)),
                    unit,
                ) {
                    (Some(e), Some(u)) => {
                        matches!(&e.body, Body::Organization(o) if o.units.iter().any(|x| x.name == u))
                    }
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if !found {
                    return Err(at(format!(
                        "there is no {principal_type} named {principal:?}"
                    )));
                }
                changes.push(Change::Visibility(entry));
            }
            family @ ("designTime" | "runTime") => {
                let (who, kind) = match principal_type {
                    "User" => (PrincipalRef::user(principal.clone()), Kind::User),
                    "Group" => (PrincipalRef::group(principal.clone()), Kind::Group),
                    other => {
                        return Err(at(format!("principalType {other:?} is not User or Group")));
                    }
                };
                if !exists(kind, &principal) {
                    return Err(at(format!(
                        "there is no {principal_type} named {principal:?}"
                    )));
                }
                let t = field("type");
                let permission = Permission::parse(t)
                    .ok_or_else(|| at(format!("type {t:?} is not a permission")))?;
                let design = family == "designTime";
                let resource = match item.get("resource").and_then(Json::as_str) {
                    Some(r) if !design => r.to_string(),
                    _ => ALL_RESOURCES.to_string(),
                };
                let allow = match item.get("allow") {
                    None | Some(Json::Null) => true,
                    Some(Json::Bool(b)) => *b,
                    Some(other) => {
                        return Err(at(format!("allow must be true or false, not {other}")));
                    }
                };
                changes.push(Change::Entry {
                    design,
                    entry: PermissionEntry::new(who, permission, &resource, allow),
                });
            }
            other => {
                return Err(at(format!(
                    "family {other:?} is not visibility, designTime or runTime"
                )));
            }
        }
    }
    let (kind, name) = (call.kind, call.entity.clone());
    let grants = changes.iter().any(|c| match c {
        Change::Visibility(_) => true,
        Change::Entry { entry, .. } => entry.allow,
    });
    let warn = archive_grant_warning(call, &name, grants);
    call.commit("permissionsChanged", (kind, name.clone()), move |tx| {
        let acl = acl_mut(tx, kind, &name, which)?;
        for c in changes {
            match c {
                Change::Visibility(v) => {
                    acl.visibility.retain(|x| x != &v);
                    acl.visibility.push(v);
                }
                Change::Entry { design, entry } => {
                    let list = if design {
                        &mut acl.design_time
                    } else {
                        &mut acl.run_time
                    };
                    // One entry per principal, type and resource: adding replaces.
                    list.retain(|e| {
                        !(e.principal == entry.principal
                            && e.permission == entry.permission
                            && e.resource == entry.resource)
                    });
                    list.push(entry);
                }
            }
        }
        Ok(())
    })?;
    Ok(warned(call, warn))
}

/// `ImplementsShape(thingShapeName)` on a Thing or a ThingTemplate: does it implement the shape,
/// itself or through its template chain? Needs design-time Read (it describes the entity).
pub fn implements_shape(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let shape = call.str("thingShapeName");
    let m = call.model();
    let e = m.get(call.kind, &call.entity).expect("resolved");
    let (template, own): (String, Vec<String>) = match &e.body {
        Body::Thing(t) => (t.thing_template.clone(), t.thing_shapes.clone()),
        Body::ThingTemplate(t) => (call.entity.clone(), t.thing_shapes.clone()),
        _ => {
            return Err(bad(
                "ImplementsShape is a service of Things and ThingTemplates",
            ));
        }
    };
    let inherited = thinghost_core::validate::template_chain(m, &template)
        .map(|chain| {
            chain.iter().any(|t| match &t.body {
                Body::ThingTemplate(b) => b.thing_shapes.iter().any(|s| s == &shape),
                _ => false,
            })
        })
        .unwrap_or(false);
    Ok(result(
        BaseType::Boolean,
        json!(inherited || own.iter().any(|s| s == &shape)),
    ))
}

/// U7: a grant on `AuditArchiveFileRepository` is allowed, with a warning (the seed: never grant
/// it to non-administrators); the warning is answered, logged and audited, and the security lint
/// reports the grant. `grants`: the change widens access: it adds visibility or an allowing
/// entry, or removes a deny (adding a deny, or removing a grant, is not warned about).
fn archive_grant_warning(call: &Call<'_>, entity: &str, grants: bool) -> Option<String> {
    (call.kind == Kind::Thing && entity == predefined::AUDIT_ARCHIVE_REPOSITORY && grants).then(|| {
        format!(
            "{entity} holds the audit archive: the seed advises never to grant it to non-administrators; this grant is reported by the security lint (U7)"
        )
    })
}

fn warned(call: &Call<'_>, warning: Option<String>) -> Reply {
    match warning {
        None => Reply::Empty,
        Some(w) => {
            tracing::warn!(user = %call.caller.name, "{w}");
            call.app.audit(
                &call.caller.name,
                crate::state::audit::category::SECURITY,
                "auditArchiveRepositoryGranted",
                json!({"warning": w, "service": call.row.name, "parameters": call.params}),
                &format!("Things/{}", call.entity),
                "Thing",
            );
            Reply::Json(json!({"warning": w}))
        }
    }
}

fn tags(call: &Call<'_>) -> Result<Vec<String>, ApiError> {
    match call.params.get("tags") {
        None | Some(Json::Null) => Ok(vec![]),
        Some(Json::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("parameter tags: a list of strings"))
            })
            .collect(),
        Some(_) => Err(bad("parameter tags: a list of strings")),
    }
}

/// `Delete{Kind}(name)` of `Resources/EntityServices` (the row's rule checked `Delete` on it).
pub fn delete_named(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let Op::Kind(kind) = call.row.op else {
        unreachable!("a Delete row names its kind")
    };
    let name = call.str("name");
    remove(call, kind, &name)
}

/// Deletes an entity the caller can see and may delete (DELETE /Thingworx/{Collection}/{Entity} too).
pub fn delete(call: &mut Call<'_>, kind: Kind, name: &str) -> Result<Reply, ApiError> {
    let id = call
        .model()
        .access()
        .id(kind, name)
        .expect("checked visible");
    call.require(
        Permission::Delete,
        Target::Entity { id, resource: None },
        &format!("delete {}/{name}", kind.collection()),
    )?;
    remove(call, kind, name)
}

/// Deletes an entity, once its deletion is authorized.
fn remove(call: &mut Call<'_>, kind: Kind, name: &str) -> Result<Reply, ApiError> {
    let n = name.to_string();
    call.commit("entityDeleted", (kind, name.to_string()), move |tx| {
        tx.delete(kind, &n)
    })?;
    Ok(Reply::Empty)
}

/// `Create{Kind}` of `Resources/EntityServices` (the row's rule checked `Create` on the
/// collection).
pub fn create(call: &mut Call<'_>, kind: Kind) -> Result<Reply, ApiError> {
    let name = call.str("name");
    names::check_entity_name(&name).map_err(|r| bad(format!("parameter name: {r}")))?;
    let body = match kind {
        Kind::Thing => {
            let template = call.str("thingTemplateName");
            data_storage_check(call, &template)?;
            // A new Thing starts with no history, whatever a deleted one of its name left (the
            // retention job removes that too, in its time): emptied before it exists, so
            // nothing of its own is lost.
            if call.model().get(Kind::Thing, &name).is_none() {
                let forgotten = name.clone();
                call.app
                    .history
                    .write(move |h| h.forget(&forgotten))
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the persistence provider could not empty what the name {name} held before: {e}; nothing was created"),
                        )
                    })?;
            }
            return finish_create(call, Entity::thing(&name, &template), None);
        }
        Kind::ThingTemplate => {
            let base = call
                .opt_str("thingTemplateName")
                .unwrap_or_else(|| predefined::GENERIC_THING.to_string());
            return finish_create(call, Entity::template(&name, &base), None);
        }
        Kind::ThingShape => Body::ThingShape(ShapeBody::default()),
        Kind::Group => Body::Group(GroupBody::default()),
        Kind::DataShape => Body::DataShape(DataShapeBody {
            fields: data_shape_fields(call.params.get("fields"))?,
        }),
        Kind::User => {
            let password_hash = match call.opt_str("password") {
                None => None,
                Some(password) => {
                    if !password_rule(&password, &name) {
                        return Err(bad(
                            "parameter password: 8 to 1,024 characters, and not the user name (or none, for a user that signs in only with keys)",
                        ));
                    }
                    Some(prepared_hash(call, &password)?)
                }
            };
            Body::User(UserBody {
                password_hash,
                ..UserBody::default()
            })
        }
        Kind::Organization => Body::Organization(OrganizationBody::with_top(&match call
            .opt_str("topOUName")
        {
            Some(top) => {
                names::check_entity_name(&top)
                    .map_err(|r| bad(format!("parameter topOUName: {r}")))?;
                top
            }
            None => name.clone(),
        })),
        Kind::ApplicationKey => return create_key(call, &name),
        _ => unreachable!(),
    };
    finish_create(call, Entity::new(&name, body), None)
}

fn finish_create(
    call: &mut Call<'_>,
    mut e: Entity,
    reply: Option<Reply>,
) -> Result<Reply, ApiError> {
    e.description = call.opt_str("description").unwrap_or_default();
    e.tags = tags(call)?;
    e.owner = Some(call.caller.name.to_string());
    let (kind, name) = (e.kind(), e.name.clone());
    call.commit("entityCreated", (kind, name.to_string()), move |tx| {
        tx.create(e)
    })?;
    Ok(reply.unwrap_or(Reply::Empty))
}

/// DOMAIN P1: data-storage Things need a visible persistence provider and ServiceInvoke on
/// PlatformSubsystem's GetDefaultDataPersistenceProviderName.
/// Is the template a data-storage one?
fn data_storage_check(call: &Call<'_>, template: &str) -> Result<bool, ApiError> {
    let m = call.model();
    let chain = validate::template_chain(m, template).map_err(|e| bad(e.to_string()))?;
    if !chain
        .iter()
        .any(|t| predefined::DATA_STORAGE_TEMPLATES.contains(&t.name.as_str()))
    {
        return Ok(false);
    }
    let s = call.caller.subject;
    let provider_visible = m.entities(Kind::PersistenceProvider).any(|p| {
        m.access()
            .id(Kind::PersistenceProvider, &p.name)
            .is_some_and(|id| crate::api::authz::sees_id(m, s, id))
    });
    let platform = m
        .access()
        .id(Kind::Subsystem, "PlatformSubsystem")
        .expect("predefined");
    let resource = m.access().sym("GetDefaultDataPersistenceProviderName");
    let can_ask = m
        .check(
            s,
            Permission::ServiceInvoke,
            Target::Entity {
                id: platform,
                resource,
            },
        )
        .allowed();
    let mut missing = Vec::new();
    if !provider_visible {
        missing.push("visibility of at least one persistence provider (PersistenceProviders)");
    }
    if !can_ask {
        missing.push("ServiceInvoke on Subsystems/PlatformSubsystem for GetDefaultDataPersistenceProviderName");
    }
    if missing.is_empty() {
        Ok(true)
    } else {
        Err(forbidden(
            call.caller,
            &format!(
                "create a data-storage Thing from {template}: it needs {} (P1)",
                missing.join(" and ")
            ),
            "Things".into(),
            Permission::Create,
        ))
    }
}

fn data_shape_fields(v: Option<&Json>) -> Result<Vec<FieldDef>, ApiError> {
    let rows: Vec<Json> = match v {
        None | Some(Json::Null) => return Ok(vec![]),
        Some(Json::Array(a)) => a.clone(),
        Some(Json::Object(o)) if o.contains_key("rows") => {
            o["rows"].as_array().cloned().unwrap_or_default()
        }
        Some(_) => {
            return Err(bad(
                "parameter fields: a list of {name, baseType, isPrimaryKey} or an InfoTable of them",
            ));
        }
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::from_value::<FieldDef>(r)
                .map_err(|e| bad(format!("parameter fields, field {i}: {e}")))
        })
        .collect()
}

fn create_key(call: &mut Call<'_>, name: &str) -> Result<Reply, ApiError> {
    let user = call
        .opt_str("user")
        .unwrap_or_else(|| call.caller.name.to_string());
    // A key carries its user's rights: only administrators make keys for someone else.
    if *user != *call.caller.name && !call.is_admin() {
        return Err(forbidden(
            call.caller,
            &format!("create a key for {user}; ask an administrator"),
            "ApplicationKeys".into(),
            Permission::Create,
        ));
    }
    let now = crate::now_ms();
    let expires = call
        .params
        .get("expirationDate")
        .and_then(Json::as_i64)
        .unwrap_or(now + call.app.key_lifetime_ms);
    if expires <= now {
        return Err(bad(
            "parameter expirationDate: the key would be expired already",
        ));
    }
    let whitelist: Vec<String> = match call.params.get("whitelist") {
        None | Some(Json::Null) => vec![],
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect(),
        Some(Json::String(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        Some(_) => {
            return Err(bad(
                "parameter whitelist: a list of addresses or CIDR ranges",
            ));
        }
    };
    let key = crate::state::keys::generate()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let admin_user = {
        let m = call.model();
        m.subject(&user)
            .is_some_and(|s| crate::api::authz::is_admin(m, s))
    };
    let warning = admin_user.then(|| format!("{user} is a member of Administrators: this key carries administrator rights; give devices and scripts keys of least-privileged users (K4)"));
    if let Some(w) = &warning {
        call.app.audit(
            &call.caller.name,
            crate::state::audit::category::SECURITY,
            "adminKeyCreated",
            json!({"key": name, "user": user, "warning": w}),
            &format!("ApplicationKeys/{name}"),
            "ApplicationKey",
        );
    }
    let entity = Entity::new(
        name,
        Body::ApplicationKey(ApplicationKeyBody {
            user,
            key_hash: key.hash.clone(),
            fingerprint: key.fingerprint.clone(),
            expiration_date: expires,
            whitelist,
            client_name: call.opt_str("clientName").unwrap_or_default(),
            created: now,
        }),
    );
    let mut row = Map::new();
    row.insert("keyId".into(), json!(key.secret));
    row.insert("fingerprint".into(), json!(key.fingerprint));
    row.insert("expirationDate".into(), json!(expires));
    row.insert("warning".into(), json!(warning.unwrap_or_default()));
    let table = InfoTable {
        fields: vec![
            Field {
                name: "keyId".into(),
                base_type: BaseType::String,
            },
            Field {
                name: "fingerprint".into(),
                base_type: BaseType::String,
            },
            Field {
                name: "expirationDate".into(),
                base_type: BaseType::Datetime,
            },
            Field {
                name: "warning".into(),
                base_type: BaseType::String,
            },
        ],
        rows: vec![row],
    };
    finish_create(call, entity, Some(Reply::Json(table.into_json())))
}

/// `ExplainAccess(user, action, target)` (the row's rule: the SecurityAdministrators' role, P2,
/// or an entry naming the service). Whoever may not inspect everyone (the Lint role) is held to
/// V1: a target it cannot see answers as a missing one, and the explanation names no principal,
/// template or shape it cannot see.
pub fn explain_access(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    let inspects = crate::api::authz::may_inspect(m, call.caller);
    let permission = Permission::parse(&call.str("action")).ok_or_else(|| {
        bad(format!(
            "parameter action: {:?} is not a permission",
            call.str("action")
        ))
    })?;
    let path = access::RequestPath::parse(&call.str("target"))
        .map_err(|e| bad(format!("parameter target: {e}")))?;
    path.check_fits(permission)
        .map_err(|e| bad(format!("parameter target: {e}")))?;
    let hidden = |kind: Kind, name: &str| {
        !inspects && !crate::api::authz::sees(m, call.caller.subject, kind, name)
    };
    if let Some(name) = &path.entity
        && hidden(path.kind, name)
    {
        // Exactly what a missing entity answers.
        let missing = access::PathError::NotFound {
            kind: path.kind,
            name: name.clone(),
        };
        return Err(bad(format!("parameter target: {missing}")));
    }
    let target = m
        .access()
        .target_of(&path)
        .map_err(|e| bad(format!("parameter target: {e}")))?;
    let subject = m.subject(&call.str("user")).expect("validated");
    let d = m.check(subject, permission, target);
    let mut e = m.explain(&d);
    if let access::ExplainedBasis::Entry {
        level, principal, ..
    } = &mut e.basis
    {
        let kind = match principal.kind {
            thinghost_core::PrincipalType::User => Kind::User,
            thinghost_core::PrincipalType::Group => Kind::Group,
        };
        if hidden(kind, &principal.principal) {
            principal.principal = "(a principal you cannot see)".into();
        }
        match level {
            access::LevelName::Template(t) if hidden(Kind::ThingTemplate, t) => {
                *t = "(a template you cannot see)".into()
            }
            access::LevelName::Shapes(s) if hidden(Kind::ThingShape, s) => {
                *s = "(a shape you cannot see)".into()
            }
            _ => {}
        }
    }
    let mut row = Map::new();
    row.insert("outcome".into(), json!(e.outcome));
    row.insert("allowed".into(), json!(d.allowed()));
    row.insert("explanation".into(), json!(e.to_string()));
    row.insert(
        "detail".into(),
        serde_json::to_value(&e).unwrap_or(Json::Null),
    );
    Ok(Reply::Json(
        InfoTable {
            fields: vec![
                Field {
                    name: "outcome".into(),
                    base_type: BaseType::String,
                },
                Field {
                    name: "allowed".into(),
                    base_type: BaseType::Boolean,
                },
                Field {
                    name: "explanation".into(),
                    base_type: BaseType::String,
                },
                Field {
                    name: "detail".into(),
                    base_type: BaseType::Json,
                },
            ],
            rows: vec![row],
        }
        .into_json(),
    ))
}

/// `GetCurrentUser()` of `Resources/CurrentSessionInfo`.
pub fn current_user(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    Ok(result(BaseType::Username, json!(&*call.caller.name)))
}

/// The caller's principals: itself and its groups, by name.
fn my_principals(call: &Call<'_>) -> Vec<PrincipalRef> {
    crate::api::authz::groups_of(call.model(), call.caller.subject)
}

/// `GetCurrentUserGroups()`. V1: only the groups the caller can see are named.
pub fn current_user_groups(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    Ok(Reply::Json(names_table(
        "name",
        my_principals(call)
            .into_iter()
            .filter(|p| p.kind == PrincipalType::Group)
            .filter(|p| crate::api::authz::sees(m, call.caller.subject, Kind::Group, &p.principal))
            .map(|p| p.principal),
    )))
}

/// `GetCurrentUserOrganizations()`.
pub fn current_user_organizations(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let principals = my_principals(call);
    Ok(Reply::Json(names_table(
        "name",
        call.model()
            .entities(Kind::Organization)
            .filter(|o| match &o.body {
                Body::Organization(b) => b
                    .units
                    .iter()
                    .any(|u| u.members.iter().any(|x| principals.contains(x))),
                _ => false,
            })
            // V1: only the organizations the caller can see are named.
            .filter(|o| {
                crate::api::authz::sees(
                    call.model(),
                    call.caller.subject,
                    Kind::Organization,
                    &o.name,
                )
            })
            .map(|o| o.name.clone()),
    )))
}

/// `GetDefaultDataPersistenceProviderName()` of `Subsystems/PlatformSubsystem`.
pub fn default_persistence_provider(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    Ok(result(
        BaseType::String,
        json!(call.app.history.default_provider),
    ))
}

/// Whose permissions a question is about.
#[derive(Clone, Copy, PartialEq)]
pub enum Whose {
    /// The caller's.
    Caller,
    /// Those of the user `user`.
    User,
    /// Those of the group `group` (its own entries and its parents', where its units see).
    Group,
}

/// Does `whose` hold `permission` on the call's entity (its `resource`, for an override)?
fn holds(
    call: &Call<'_>,
    whose: Whose,
    permission: Permission,
    resource: Option<access::Sym>,
) -> bool {
    let m = call.model();
    let id = m.access().id(call.kind, &call.entity).expect("resolved");
    let target = if permission == Permission::Create {
        Target::Collection(call.kind)
    } else {
        Target::Entity { id, resource }
    };
    match whose {
        Whose::Caller => m.check(call.caller.subject, permission, target).allowed(),
        Whose::User => m
            .subject(&call.str("user"))
            .is_some_and(|s| m.check(s, permission, target).allowed()),
        Whose::Group => m
            .access()
            .id(Kind::Group, &call.str("group"))
            .is_some_and(|g| m.access().check_group(g, permission, target) == Outcome::Allowed),
    }
}

/// The resource a question names (`name`; none, or `*`, is the entity itself).
fn resource_param(call: &Call<'_>) -> Option<access::Sym> {
    call.opt_str("name")
        .filter(|r| r != ALL_RESOURCES)
        .and_then(|r| call.model().access().sym(&r))
}

/// `CheckPermission(name, type)`, `CheckPermissionForUser(name, type, user)`,
/// `CheckPermissionForGroup(name, type, group)` (a run-time permission, on the entity or its
/// property, service or event `name`), and `CheckDesignTimePermission(type)` and its `ForUser`
/// and `ForGroup` (a design-time one; `Create` asks about the entity's collection).
pub fn check_permission(
    call: &mut Call<'_>,
    whose: Whose,
    design: bool,
) -> Result<Reply, ApiError> {
    let permission = permission_param(call)?;
    if design == permission.is_run_time() {
        return Err(bad(format!(
            "parameter type: {} is a {} permission; this service checks {} ones",
            permission.name(),
            if design { "run-time" } else { "design-time" },
            if design { "design-time" } else { "run-time" },
        )));
    }
    let resource = if design { None } else { resource_param(call) };
    Ok(result(
        BaseType::Boolean,
        json!(holds(call, whose, permission, resource)),
    ))
}

/// `GetPermissionsForCurrentUser()`, `GetPermissionsForUser(name, user, permissionName)` and
/// `GetPermissionsForGroup(name, group, permissionName)`: each permission (or only
/// `permissionName`) with whether it is held on the entity (or its resource `name`).
pub fn permissions_of(call: &mut Call<'_>, whose: Whose) -> Result<Reply, ApiError> {
    let only = match call.opt_str("permissionName") {
        None => None,
        Some(t) => Some(Permission::parse(&t).ok_or_else(|| {
            bad(format!(
                "parameter permissionName: {t:?} is not a permission"
            ))
        })?),
    };
    let resource = resource_param(call);
    let rows = Permission::ALL
        .iter()
        .filter(|p| **p != Permission::Create && only.is_none_or(|o| o == **p))
        .map(|p| {
            let mut r = Map::new();
            r.insert("type".into(), json!(p.name()));
            let on = if p.is_run_time() { resource } else { None };
            r.insert("allowed".into(), json!(holds(call, whose, *p, on)));
            r
        })
        .collect();
    Ok(Reply::Json(
        InfoTable {
            fields: vec![
                Field {
                    name: "type".into(),
                    base_type: BaseType::String,
                },
                Field {
                    name: "allowed".into(),
                    base_type: BaseType::Boolean,
                },
            ],
            rows,
        }
        .into_json(),
    ))
}

/// `AddPropertyDefinition` and `DeletePropertyDefinition`.
pub fn property_definition(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    let name = call.str("name");
    let def = if add {
        let t = call.str("type");
        let base_type = BaseType::parse(&t)
            .ok_or_else(|| bad(format!("parameter type: {t:?} is not a base type")))?;
        // defaultValue arrived as JSON (any shape); it must fit the property's type.
        let default_value = match call.params.get("defaultValue") {
            None | Some(Json::Null) => None,
            Some(v) => Some(
                base_type
                    .normalize(v)
                    .map_err(|e| bad(format!("parameter defaultValue: {e}")))?,
            ),
        };
        // A default runAsUser names who a timer or scheduler fires as (B7): as a write does.
        if name == crate::api::entities::RUN_AS_USER
            && let Some(v) = &default_value
        {
            crate::api::entities::may_name_run_as(call.model(), call.caller, v)?;
        }
        Some(PropertyDef {
            name: name.clone(),
            base_type,
            description: call.str("description"),
            default_value,
            read_only: call.bool_or("readOnly", false),
            data_shape: None,
            logged: call.bool_or("logged", false),
            data_change_type: match call.opt_str("dataChangeType") {
                None => Default::default(),
                Some(t) => thinghost_core::DataChangeType::parse(&t).ok_or_else(|| {
                    bad(format!(
                        "parameter dataChangeType: {t:?} is not VALUE, ALWAYS or NEVER"
                    ))
                })?,
            },
        })
    } else {
        None
    };
    crate::api::definitions::change_own(call, move |e| {
        let properties = &mut crate::api::definitions::defs(e).properties;
        match def {
            Some(d) => properties.push(d),
            None => {
                let i = crate::api::definitions::own(
                    properties,
                    &name,
                    |p| &p.name,
                    "property definition",
                )?;
                properties.remove(i);
                if let Body::Thing(t) = &mut e.body {
                    t.values.remove(&name);
                }
            }
        }
        Ok(())
    })
}

pub fn add_shape(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let shape = call.str("thingShapeName");
    // Through the definitions' guard: an extension's Thing is its manifest's.
    crate::api::definitions::change_own(call, move |e| {
        if let Body::Thing(t) = &mut e.body
            && !t.thing_shapes.contains(&shape)
        {
            t.thing_shapes.push(shape);
        }
        Ok(())
    })
}

/// A member (`member`, and its `type_param`): a user or group the caller can see.
fn member_ref(call: &Call<'_>, member: &str, type_param: &str) -> Result<PrincipalRef, ApiError> {
    let p = match call.str(type_param).as_str() {
        "User" => PrincipalRef::user(member),
        "Group" => PrincipalRef::group(member),
        other => {
            return Err(bad(format!(
                "parameter {type_param}: {other:?} is not User or Group"
            )));
        }
    };
    seen(call, p.entity_kind(), member, "member")?;
    Ok(p)
}

/// `AddMember` and `DeleteMember` of a group.
pub fn group_member(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    let member = member_ref(call, &call.str("member"), "type")?;
    let group = call.entity.clone();
    call.commit(
        "membershipChanged",
        (Kind::Group, group.to_string()),
        move |tx| {
            if let Body::Group(g) = &mut tx.get_mut(Kind::Group, &group)?.body {
                g.members.retain(|m| m != &member);
                if add {
                    g.members.push(member);
                }
            }
            Ok(())
        },
    )?;
    Ok(Reply::Empty)
}

/// A change to an organization's units, prepared before the transaction.
type OrgChange = Box<dyn FnOnce(&mut OrganizationBody) -> Result<(), String>>;

/// `AddOrganizationalUnit(parentName, name)` and `DeleteOrganizationalUnit(name)`.
pub fn organizational_unit(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    organization(call, if add { Org::AddUnit } else { Org::DeleteUnit })
}

/// `AddMember(name, member, type)` and `DeleteMember` of an organization's unit `name`.
pub fn unit_member(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    organization(call, Org::Member { add })
}

enum Org {
    AddUnit,
    DeleteUnit,
    Member { add: bool },
}

fn organization(call: &mut Call<'_>, what: Org) -> Result<Reply, ApiError> {
    let adding_unit = matches!(what, Org::AddUnit);
    let deleting_unit = matches!(what, Org::DeleteUnit);
    let org = call.entity.clone();
    let unit = call.str("name");
    if adding_unit {
        names::check_entity_name(&unit).map_err(|r| bad(format!("parameter name: {r}")))?;
    }
    let change: OrgChange = if adding_unit {
        let parent = call.str("parentName");
        Box::new(move |o| {
            if o.unit(&parent).is_none() {
                return Err(format!("parameter parentName: there is no unit {parent:?}"));
            }
            o.units.push(Unit {
                name: unit,
                parent: Some(parent),
                members: vec![],
            });
            Ok(())
        })
    } else if deleting_unit {
        // A unit with units below it, or the top unit, stays: delete from the leaves up. A
        // unit still named by a visibility entry is refused by the model, naming the entry.
        Box::new(move |o| {
            let Some(u) = o.unit(&unit) else {
                return Err(format!("parameter name: there is no unit {unit:?}"));
            };
            if u.parent.is_none() {
                return Err(format!(
                    "{unit:?} is the organization's top unit; delete the organization instead"
                ));
            }
            if o.units
                .iter()
                .any(|c| c.parent.as_deref() == Some(unit.as_str()))
            {
                return Err(format!(
                    "unit {unit:?} has units below it; delete those first"
                ));
            }
            o.units.retain(|u| u.name != unit);
            Ok(())
        })
    } else {
        let member = member_ref(call, &call.str("member"), "type")?;
        let add = matches!(what, Org::Member { add: true });
        Box::new(move |o| {
            let u = o
                .units
                .iter_mut()
                .find(|u| u.name == unit)
                .ok_or_else(|| format!("parameter name: there is no unit {unit:?}"))?;
            u.members.retain(|m| m != &member);
            if add {
                u.members.push(member);
            }
            Ok(())
        })
    };
    call.commit(
        "membershipChanged",
        (Kind::Organization, org.to_string()),
        move |tx| {
            let e = tx.get_mut(Kind::Organization, &org)?;
            if let Body::Organization(o) = &mut e.body {
                change(o).map_err(|message| ModelError::Invalid {
                    entity: format!("Organizations/{org}"),
                    message,
                })?;
            }
            Ok(())
        },
    )?;
    Ok(Reply::Empty)
}

/// `GetKeyID()` (D2: a user may look at its own keys; others need Read).
pub fn key_id(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    let e = m.get(Kind::ApplicationKey, &call.entity).expect("resolved");
    let Body::ApplicationKey(k) = &e.body else {
        unreachable!()
    };
    // D2: a user may look at its own keys; others need Read.
    if *k.user != *call.caller.name {
        call.require_on_entity(Permission::Read, "read this key")?;
    }
    let fp = if k.fingerprint.is_empty() {
        crate::state::keys::fingerprint(&k.key_hash)
    } else {
        k.fingerprint.clone()
    };
    Ok(result(
        BaseType::String,
        json!(format!(
            "fingerprint:{fp} (thinghost keeps only a hash of each key; the key itself was shown once, at creation)"
        )),
    ))
}

/// `ChangePassword(oldPassword, newPassword)`: a user's own (with its old password), or any
/// user's by an administrator.
pub fn change_password(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let own = *call.entity == *call.caller.name;
    if !own {
        call.require_admin("change another user's password")?;
    }
    let user = call.entity.clone();
    if own && !call.is_admin() {
        let Some(Entity {
            body: Body::User(u),
            ..
        }) = call.model().get(Kind::User, &user)
        else {
            unreachable!()
        };
        // Guessing the old password is a sign-in attempt: counted (with the sign-in limits,
        // also across scripts) and audited. It was checked before the lock was taken, against
        // the hash stored then: if the password changed meanwhile, the check is void.
        let stored_now = u.password_hash.clone();
        let (checked_against, ok) = match call.prepared.old_checked.take() {
            Some(Ok(checked)) => checked,
            Some(Err(refusal)) => return Err(refusal),
            None => (None, false),
        };
        if checked_against != stored_now {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the password changed while this request was checked; try again",
            ));
        }
        if !ok {
            // (Counted when it was checked, see `prepare_passwords`.)
            call.app.audit_queued(
                &user,
                crate::state::audit::category::AUTHENTICATION,
                "badOldPassword",
                json!({"detail": "ChangePassword with a wrong oldPassword"}),
                &format!("Users/{user}"),
                "User",
            );
            return Err(bad("parameter oldPassword: it does not match"));
        }
    }
    let new = call.str("newPassword");
    if !password_rule(&new, &user) {
        return Err(bad(
            "parameter newPassword: 8 to 1,024 characters, and not the user name",
        ));
    }
    let hash = prepared_hash(call, &new)?;
    call.commit(
        "passwordChanged",
        (Kind::User, user.to_string()),
        move |tx| {
            if let Body::User(u) = &mut tx.get_mut(Kind::User, &user)?.body {
                u.password_hash = Some(hash);
            }
            Ok(())
        },
    )?;
    Ok(Reply::Empty)
}

/// `Users/U/Services/EnableUser`, `DisableUser`, `LockUser`, `UnlockUser`: needs `Update` on
/// the user (D1). A disabled or locked user cannot sign in (K3); the model refuses a change that
/// would leave Administrators without an enabled, unlocked user (the lock-out guard).
pub fn user_state(call: &mut Call<'_>, state: UserState) -> Result<Reply, ApiError> {
    let audit_key = match state {
        UserState::Enable => "userEnabled",
        UserState::Disable => "userDisabled",
        UserState::Lock => "userLocked",
        UserState::Unlock => "userUnlocked",
    };
    let user = call.entity.clone();
    call.commit(audit_key, (Kind::User, user.clone()), move |tx| {
        if let Body::User(u) = &mut tx.get_mut(Kind::User, &user)?.body {
            match state {
                UserState::Enable => u.enabled = true,
                UserState::Disable => u.enabled = false,
                UserState::Lock => u.locked = true,
                UserState::Unlock => u.locked = false,
            }
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
}

/// What `EnableUser`, `DisableUser`, `LockUser` and `UnlockUser` do.
#[derive(Clone, Copy)]
pub enum UserState {
    Enable,
    Disable,
    Lock,
    Unlock,
}

/// `Subsystems/PlatformSubsystem/Services/ReloadExtension(packageName, force)`, administrators
/// only: brings the package's folder in line with the running server (`reload::sync_folder`):
/// loads a new folder, replaces a changed version, removes a package whose folder is gone.
/// `force` allows a lower version than the loaded one. Answers what happened to each package
/// (`outcomes`: `unchanged`, `added`, `replaced`, `removed`, `forgotten`); a refusal is a 409
/// with the reason, and the loaded version keeps serving. Every outcome but `unchanged` is
/// audited.
pub fn reload_extension(
    app: &std::sync::Arc<App>,
    caller: &Caller,
    request: Request,
) -> Result<Reply, ApiError> {
    let params = request.params;
    let name = params
        .get("packageName")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let force = params.get("force").and_then(Json::as_bool).unwrap_or(false);
    let Some(folder) = crate::api::reload::folder_of(app, &name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            match &app.plugins {
                Some(p) => format!(
                    "there is no extension package {name:?}, and no folder {name:?} in the plugin directory {}",
                    p.dir.display()
                ),
                None => "the server runs without a plugin directory (serve --plugins DIR)".into(),
            },
        ));
    };
    match crate::api::reload::sync_audited(app, &caller.name, &folder, force) {
        Ok(done) => {
            let outcomes: Vec<Json> = done
                .iter()
                .map(|(package, what)| {
                    use crate::api::reload::Outcome;
                    match what {
                        Outcome::Unchanged => json!({"package": package, "outcome": "unchanged"}),
                        Outcome::Added { version } => {
                            json!({"package": package, "outcome": "added", "version": version})
                        }
                        Outcome::Replaced { from, to } => {
                            json!({"package": package, "outcome": "replaced", "from": from, "to": to})
                        }
                        Outcome::Removed { version } => {
                            json!({"package": package, "outcome": "removed", "version": version})
                        }
                        Outcome::Forgotten => json!({"package": package, "outcome": "forgotten"}),
                    }
                })
                .collect();
            Ok(result(BaseType::Json, json!({ "outcomes": outcomes })))
        }
        Err(r) => Err(ApiError::new(StatusCode::CONFLICT, r.reason)),
    }
}

/// `GetExtensionPackageList()` and `GetExtensionPackageDetails(packageName)`: each extension's
/// state (loaded with its contributions and declared capabilities, or refused and why).
pub fn extension_packages(call: &mut Call<'_>, details: bool) -> Result<Reply, ApiError> {
    let all = call.app.extensions.load().summary();
    if details {
        let name = call.str("packageName");
        let p = all
            .into_iter()
            .find(|p| p["name"] == name.as_str())
            .ok_or_else(|| {
                bad(format!(
                    "parameter packageName: there is no extension package {name:?}"
                ))
            })?;
        return Ok(result(BaseType::Json, p));
    }
    let rows = all
        .iter()
        .map(|p| {
            let mut r = Map::new();
            for k in ["name", "version", "state"] {
                r.insert(k.into(), p[k].clone());
            }
            r.insert(
                "reason".into(),
                p.get("reason").cloned().unwrap_or(json!("")),
            );
            // Why the last reload failed while this version keeps serving.
            r.insert(
                "reloadError".into(),
                p.get("reloadError")
                    .filter(|e| e.is_string())
                    .cloned()
                    .unwrap_or(json!("")),
            );
            r
        })
        .collect();
    Ok(Reply::Json(
        InfoTable {
            fields: ["name", "version", "state", "reason", "reloadError"]
                .iter()
                .map(|n| Field {
                    name: n.to_string(),
                    base_type: BaseType::String,
                })
                .collect(),
            rows,
        }
        .into_json(),
    ))
}

/// `GetExtensionLog(packageName, maxItems, after)` of `Subsystems/PlatformSubsystem`: an
/// extension's recent log lines (its code's `print`, `debug` and `log`, its refusals and
/// failures), oldest first, those after the sequence number `after`. Administrators only: a
/// line may hold what any caller's call carried.
pub fn extension_log(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.require_admin("read an extension's log")?;
    let name = call.str("packageName");
    let max = call
        .params
        .get("maxItems")
        .and_then(Json::as_f64)
        .unwrap_or(100.0)
        .clamp(0.0, crate::state::logs::PER_EXTENSION as f64) as usize;
    let after = call
        .params
        .get("after")
        .and_then(Json::as_f64)
        .unwrap_or(0.0)
        .max(0.0) as u64;
    let known = call.app.extensions.load().packages.contains_key(&name);
    let lines = crate::state::logs::recent(&name, after, max);
    if !known && lines.is_empty() {
        return Err(bad(format!(
            "parameter packageName: there is no extension package {name:?}"
        )));
    }
    let field = |name: &str, base_type| thinghost_core::infotable::Field {
        name: name.into(),
        base_type,
    };
    let table = thinghost_core::infotable::InfoTable {
        fields: vec![
            field("seq", BaseType::Long),
            field("timestamp", BaseType::Datetime),
            field("level", BaseType::String),
            field("message", BaseType::String),
        ],
        rows: lines
            .into_iter()
            .map(|l| {
                let mut r = Map::new();
                r.insert("seq".into(), json!(l.seq));
                r.insert("timestamp".into(), json!(l.time));
                r.insert("level".into(), json!(l.level));
                r.insert("message".into(), json!(l.text));
                r
            })
            .collect(),
    };
    Ok(Reply::Table(table))
}
