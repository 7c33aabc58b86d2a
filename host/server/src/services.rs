//! The host's own services: entity creation and deletion, membership, definitions, permissions,
//! explanations and session information (DOMAIN.md section 4).
//!
//! Each service is authorized by what it does, with the rules of DOMAIN.md section 2: creating
//! needs `Create` on the collection, deleting needs `Delete` on the entity, changing an entity
//! (its members, definitions or permissions) needs `Update` on it, reading its permissions needs
//! `Read`. `Resources` are platform functions that every signed-in user can reach; their services
//! make those checks themselves. Every change is audited.

use crate::app::App;
use crate::auth::Caller;
use crate::rest::{ApiError, Reply};
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::predefined;
use thinghost_core::*;
use thinghost_store::{ChangeError, Db};

/// A parameter: name, type, required. `ANY` marks a parameter whose value may take any JSON
/// shape because the service checks it against something else (a default value against its
/// property's type, say).
pub(crate) type Param = (&'static str, BaseType, bool);
const ANY: BaseType = BaseType::Nothing;

const PRINCIPAL: Param = ("principal", BaseType::String, true);
const PRINCIPAL_TYPE: Param = ("principalType", BaseType::String, true);
const TYPE: Param = ("type", BaseType::String, true);
const RESOURCE: Param = ("resource", BaseType::String, false);
const ALLOW: Param = ("allow", BaseType::Boolean, false);
const COLLECTION: Param = ("collectionName", BaseType::String, true);
const NAME: Param = ("name", BaseType::String, true);
const DESCRIPTION: Param = ("description", BaseType::String, false);
const TAGS: Param = ("tags", BaseType::Json, false);

/// One call in progress.
pub struct Call<'a> {
    pub app: &'a App,
    pub db: &'a mut Db,
    pub caller: &'a Caller,
    pub kind: Kind,
    pub entity: String,
    pub service: String,
    pub params: Map<String, Json>,
    /// Password work done before the model's lock was taken (see [`prepare_passwords`]).
    pub prepared: Prepared,
}

/// Password hashes and checks made before the model's lock is taken: argon2 takes tens of
/// milliseconds and 19 MiB, and under the lock it would stall every other request.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The argon2 hash of the new password (`CreateUser`'s `password`, `ChangePassword`'s
    /// `newPassword`).
    pub new_hash: Option<String>,
    /// `ChangePassword`'s `oldPassword` of a user changing its own: the stored hash it was
    /// checked against, and whether it matched (or the refusal, while the user is locked out).
    pub old_checked: Option<Result<(Option<String>, bool), ApiError>>,
}

/// The hash [`prepare_passwords`] made of `password` (from the same parameters as this call's,
/// before the lock), or (a call that did not come through `rest::handle`) one made now.
fn prepared_hash(call: &mut Call<'_>, password: &str) -> Result<String, ApiError> {
    if let Some(h) = call.prepared.new_hash.take() {
        return Ok(h);
    }
    crate::keys::hash_password(password)
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
    service: &str,
    params: &Map<String, Json>,
) -> Result<Prepared, ApiError> {
    let busy = |e: crate::keys::Busy| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let hash = |password: &str| -> Result<Option<String>, ApiError> {
        let password = password.to_string();
        app.hash_pool
            .run(move || crate::keys::hash_password(&password).ok())
            .map_err(busy)
    };
    let mut prepared = Prepared::default();
    if !matches!(
        (kind, entity, service),
        (Kind::Resource, "EntityServices", "CreateUser") | (Kind::User, _, "ChangePassword")
    ) {
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
    match (kind, entity, service) {
        (Kind::Resource, "EntityServices", "CreateUser") => {
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
        (Kind::User, user, "ChangePassword") => {
            let (stored, admin) = {
                let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                let m = db.model();
                let stored = match m.get(Kind::User, user).map(|e| &e.body) {
                    Some(Body::User(u)) => Some(u.password_hash.clone()),
                    _ => None,
                };
                (stored, m.access().is_administrator(caller.subject))
            };
            // A user that does not exist (or that the caller may not change) costs nothing:
            // the call is refused under the lock, as it would be without this step.
            let Some(stored) = stored else {
                return Ok(prepared);
            };
            let own = user == caller.name;
            if !own && !admin {
                return Ok(prepared);
            }
            if own && !admin {
                let who = format!("oldPassword:{user}");
                let attempt = match app.auth.begin_one(&who) {
                    Ok(a) => a,
                    Err(crate::auth::Gate::Locked) => {
                        prepared.old_checked = Some(Err(ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too many wrong old passwords; try again later",
                        )));
                        return Ok(prepared);
                    }
                    Err(crate::auth::Gate::Busy) => {
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
                    .unwrap_or_else(|| crate::keys::unmatchable_hash().to_string());
                let exists = stored.is_some();
                let ok = app
                    .hash_pool
                    .run(move || crate::keys::verify_password(&old, &phc))
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

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

pub(crate) fn forbidden(
    caller: &Caller,
    what: &str,
    path: String,
    permission: Permission,
) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: format!("{} may not {what}", caller.name),
        denied: Some((
            permission,
            path,
            format!("the service's own rule: {} may not {what}", caller.name),
        )),
    }
}

impl Call<'_> {
    pub(crate) fn model(&self) -> &Model {
        self.db.model()
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.model().access().is_administrator(self.caller.subject)
    }

    fn path(&self) -> String {
        format!("{}/{}", self.kind.collection(), self.entity)
    }

    /// Validates the parameters against `spec`: unknown or missing ones, wrong types, and
    /// `*NAME` values that name nothing the caller can see are 400s naming the parameter.
    pub(crate) fn params(&mut self, spec: &[Param]) -> Result<(), ApiError> {
        let spec: Vec<(&str, BaseType, bool)> = spec.to_vec();
        check_params(
            self.db.model(),
            self.caller,
            &self.service,
            &mut self.params,
            &spec,
        )
    }

    pub(crate) fn str(&self, name: &str) -> String {
        self.params
            .get(name)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    }
    pub(crate) fn opt_str(&self, name: &str) -> Option<String> {
        self.params
            .get(name)
            .and_then(Json::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    }
    fn bool_or(&self, name: &str, default: bool) -> bool {
        self.params
            .get(name)
            .and_then(Json::as_bool)
            .unwrap_or(default)
    }

    /// Checks a permission on a target; 403 (audited) when denied, 404 when not visible.
    pub(crate) fn require(
        &self,
        permission: Permission,
        target: Target,
        what: &str,
    ) -> Result<(), ApiError> {
        let d = self.model().check(self.caller.subject, permission, target);
        match d.outcome {
            Outcome::Allowed => Ok(()),
            Outcome::NotVisible => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{} {:?} was not found", self.kind.label(), self.entity),
            )),
            Outcome::Denied => {
                let path = match target {
                    Target::Collection(k) => k.collection().to_string(),
                    Target::Entity { id, .. } => {
                        let (k, n) = self.model().access().name_of(id);
                        format!("{}/{n}", k.collection())
                    }
                };
                let mut e = forbidden(self.caller, what, path, permission);
                if let Some(denied) = &mut e.denied {
                    denied.2 = thinghost_core::insight::rule_of(self.model(), &d);
                }
                Err(e)
            }
        }
    }

    fn require_on_entity(&self, permission: Permission, what: &str) -> Result<(), ApiError> {
        let id = self
            .model()
            .access()
            .id(self.kind, &self.entity)
            .expect("resolved before the call");
        self.require(permission, Target::Entity { id, resource: None }, what)
    }

    fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            let mut e = forbidden(self.caller, what, self.path(), Permission::Update);
            if let Some(denied) = &mut e.denied {
                denied.2 = format!("only members of Administrators may {what} (A2)");
            }
            Err(e)
        }
    }

    /// Applies a change, stores it, and audits it.
    fn commit<F>(&mut self, audit_key: &str, source: (Kind, String), f: F) -> Result<(), ApiError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        // The entry is written in the change's own transaction (U2): neither lands alone.
        let record = thinghost_store::AuditRecord {
            timestamp: crate::now_ms(),
            user: self.caller.name.clone(),
            category: crate::audit::change_category(audit_key, source.0).to_string(),
            message_key: audit_key.to_string(),
            args: json!({"service": self.service, "parameters": redact(&self.params)}),
            source: format!("{}/{}", source.0.collection(), source.1),
            source_type: source.0.label().to_string(),
        };
        let records = if self.app.audit_log.enabled(&record.category) {
            vec![record]
        } else {
            vec![]
        };
        self.db.change_audited(f, &records).map_err(change_error)?;
        Ok(())
    }
}

/// Validates parameters against a spec (name, type, required): unknown or missing ones, wrong
/// types, and `*NAME` values that name nothing the caller can see are 400s naming the
/// parameter. Values are replaced by their normal form.
pub fn check_params(
    model: &Model,
    caller: &Caller,
    service: &str,
    params: &mut Map<String, Json>,
    spec: &[(&str, BaseType, bool)],
) -> Result<(), ApiError> {
    for k in params.keys() {
        if !spec.iter().any(|(n, _, _)| n == k) {
            let known: Vec<&str> = spec.iter().map(|p| p.0).collect();
            return Err(bad(format!(
                "{service} has no parameter {k:?}; its parameters are: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    for (name, bt, required) in spec {
        match params.get(*name) {
            None | Some(Json::Null) if *required => {
                let t = if *bt == ANY {
                    "any type".to_string()
                } else {
                    bt.to_string()
                };
                return Err(bad(format!("parameter {name} ({t}) is required")));
            }
            None | Some(Json::Null) => {}
            Some(_) if *bt == ANY => {}
            Some(v) => {
                let norm = bt
                    .normalize(v)
                    .map_err(|e| bad(format!("parameter {name}: {e}")))?;
                if let (Some(kind), Json::String(s)) = (bt.names_kind(), &norm) {
                    let visible = model
                        .access()
                        .id(kind, s)
                        .is_some_and(|id| model.access().visible(caller.subject, id));
                    if !visible {
                        return Err(bad(format!(
                            "parameter {name}: there is no {} named {s:?}",
                            kind.label()
                        )));
                    }
                }
                params.insert(name.to_string(), norm);
            }
        }
    }
    Ok(())
}

/// Parameters for the audit log, without secrets.
fn redact(params: &Map<String, Json>) -> Json {
    let mut out = params.clone();
    for k in ["password", "oldPassword", "newPassword"] {
        if out.contains_key(k) {
            out.insert(k.to_string(), json!("***"));
        }
    }
    Json::Object(out)
}

/// Maps a refused or unstored change to its status.
pub fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::Model(me) => {
            let status = match &me {
                ModelError::AlreadyExists { .. }
                | ModelError::InUse { .. }
                | ModelError::LockOut => StatusCode::CONFLICT,
                ModelError::Protected { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, me.to_string())
        }
        ChangeError::Store(se @ thinghost_store::StoreError::DiskFull { .. }) => {
            tracing::warn!(error = %se, "a change was refused: the disk is nearly full");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("{se}; nothing was changed"),
            )
        }
        ChangeError::Store(se) => {
            tracing::error!(error = %se, "a change could not be stored");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the change could not be stored; nothing was changed; try again",
            )
        }
    }
}

fn principal_ref(call: &Call<'_>) -> Result<PrincipalRef, ApiError> {
    let name = call.str("principal");
    match call.str("principalType").as_str() {
        "User" => Ok(PrincipalRef::user(name)),
        "Group" => Ok(PrincipalRef::group(name)),
        other => Err(bad(format!(
            "parameter principalType: {other:?} is not User or Group"
        ))),
    }
}

fn visibility_entry(call: &Call<'_>) -> Result<VisibilityEntry, ApiError> {
    let principal = call.str("principal");
    match call.str("principalType").as_str() {
        "Organization" => Ok(VisibilityEntry::organization(principal)),
        "OrganizationalUnit" => match principal.split_once(':') {
            Some((o, u)) => Ok(VisibilityEntry::unit(o, u)),
            None => Err(bad(format!(
                "parameter principal: name a unit as Organization:Unit, not {principal:?}"
            ))),
        },
        other => Err(bad(format!(
            "parameter principalType: {other:?} is not Organization or OrganizationalUnit"
        ))),
    }
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

pub(crate) fn result(bt: BaseType, v: Json) -> Reply {
    Reply::Json(InfoTable::single("result", bt, v).into_json())
}

/// Which ACL of an entity a permission service works on.
#[derive(Clone, Copy, PartialEq)]
enum AclOf {
    Own,
    Instance,
}

fn acl_mut<'t>(
    tx: &'t mut Tx<'_>,
    kind: Kind,
    name: &str,
    which: AclOf,
) -> Result<&'t mut Acl, ModelError> {
    let e = tx.get_mut(kind, name)?;
    match which {
        AclOf::Own => Ok(&mut e.permissions),
        AclOf::Instance => e
            .instance_permissions_mut()
            .ok_or_else(|| ModelError::Invalid {
                entity: format!("{}/{name}", kind.collection()),
                message: "only ThingTemplates and ThingShapes have instance permissions".into(),
            }),
    }
}

/// The permission services of one ACL (own, instance or a collection's).
fn permission_service(
    call: &mut Call<'_>,
    op: &str,
    which: AclOf,
    collection: Option<Kind>,
) -> Result<Reply, ApiError> {
    let extra: &[Param] = if collection.is_some() {
        &[COLLECTION]
    } else {
        &[]
    };
    let spec = |base: &[Param]| -> Vec<Param> { extra.iter().chain(base).copied().collect() };
    let (kind, name) = (call.kind, call.entity.clone());
    let read_acl = |call: &Call<'_>| -> Acl {
        match collection {
            Some(k) => call.model().collection(k).cloned().unwrap_or_default(),
            None => {
                let e = call.model().get(kind, &name).expect("resolved");
                match which {
                    AclOf::Own => e.permissions.clone(),
                    AclOf::Instance => e.instance_permissions().cloned().unwrap_or_default(),
                }
            }
        }
    };
    let is_get = op.starts_with("Get");
    match op {
        "AddRunTimePermission" | "DeleteRunTimePermission" => {
            call.params(&spec(&[PRINCIPAL, PRINCIPAL_TYPE, TYPE, RESOURCE, ALLOW]))?
        }
        "AddDesignTimePermission" | "DeleteDesignTimePermission" => {
            call.params(&spec(&[PRINCIPAL, PRINCIPAL_TYPE, TYPE, ALLOW]))?
        }
        "AddVisibilityPermission" | "DeleteVisibilityPermission" => {
            call.params(&spec(&[PRINCIPAL, PRINCIPAL_TYPE]))?
        }
        _ => call.params(&spec(&[]))?,
    }
    let coll_kind = match collection {
        Some(_) => {
            let c = call.str("collectionName");
            Some(Kind::from_collection(&c).ok_or_else(|| {
                bad(format!(
                    "parameter collectionName: {c:?} is not a collection"
                ))
            })?)
        }
        None => None,
    };
    // Authorization: collections are the administrators'; entities need Read to look, Update to change (D1).
    match (coll_kind, is_get) {
        (Some(_), _) => call.require_admin("change or read collection permissions")?,
        (None, true) => {
            call.require_on_entity(Permission::Read, "read this entity's permissions")?
        }
        (None, false) => {
            call.require_on_entity(Permission::Update, "change this entity's permissions")?
        }
    }
    if is_get {
        let acl = read_acl(call);
        return Ok(Reply::Json(match op {
            "GetRunTimePermissions" => entries_table(&acl.run_time, true),
            "GetDesignTimePermissions" => entries_table(&acl.design_time, false),
            _ => visibility_table(&acl.visibility),
        }));
    }
    // Whether the change widens access (adds visibility or an allowing entry, or removes a
    // deny): what the U7 warning is about.
    let mut widens = op.starts_with("Add") && op.contains("Visibility");
    let change: Box<dyn FnOnce(&mut Acl)> = match op {
        "AddRunTimePermission"
        | "DeleteRunTimePermission"
        | "AddDesignTimePermission"
        | "DeleteDesignTimePermission" => {
            let principal = principal_ref(call)?;
            let permission = permission_param(call)?;
            let design = op.contains("Design");
            let resource = if design {
                ALL_RESOURCES.to_string()
            } else {
                call.opt_str("resource")
                    .unwrap_or_else(|| ALL_RESOURCES.to_string())
            };
            let allow = call.bool_or("allow", true);
            let add = op.starts_with("Add");
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
        _ => {
            let entry = visibility_entry(call)?;
            let add = op.starts_with("Add");
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

/// `AddPermissions(permissions)`, and `AddInstancePermissions` on templates and shapes: entries of
/// the three families, added in one transaction with one audit entry that lists them (a grant is
/// all or nothing). Each item of the JSON array: `family` (`visibility`, `designTime` or
/// `runTime`), `principal`, `principalType`, and for the permission families `type`, `allow`
/// (default true) and, at run time, `resource` (default `*`). Every principal must exist.
fn add_permissions(call: &mut Call<'_>, which: AclOf) -> Result<Reply, ApiError> {
    call.params(&[("permissions", BaseType::Json, true)])?;
    call.require_on_entity(Permission::Update, "change this entity's permissions")?;
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
        let exists = |kind: Kind, name: &str| call.model().get(kind, name).is_some();
        match field("family") {
            "visibility" => {
                let entry = match principal_type {
                    "Organization" => VisibilityEntry::organization(principal.clone()),
                    "OrganizationalUnit" => match principal.split_once(':') {
                        Some((o, u)) => VisibilityEntry::unit(o, u),
                        None => {
                            return Err(at(format!(
                                "name a unit as Organization:Unit, not {principal:?}"
                            )));
                        }
                    },
                    other => {
                        return Err(at(format!(
                            "principalType {other:?} is not Organization or OrganizationalUnit"
                        )));
                    }
                };
                let (org, unit) = entry.split();
                let found = match (call.model().get(Kind::Organization, org), unit) {
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
fn implements_shape(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[("thingShapeName", BaseType::String, true)])?;
    call.require_on_entity(Permission::Read, "read this entity's definition")?;
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
                crate::audit::category::SECURITY,
                "auditArchiveRepositoryGranted",
                json!({"warning": w, "service": call.service, "parameters": call.params}),
                &format!("Things/{}", call.entity),
                "Thing",
            );
            Reply::Json(json!({"warning": w}))
        }
    }
}

/// Runs a host service, if there is one of that name on that entity.
pub fn host_service(call: &mut Call<'_>) -> Option<Result<Reply, ApiError>> {
    let service = call.service.clone();
    let (kind, entity) = (call.kind, call.entity.clone());
    let s = service.as_str();
    // Permission services on every entity; the Instance variants on templates and shapes.
    if let Some(op) = s
        .strip_prefix("AddInstance")
        .map(|r| format!("Add{r}"))
        .or_else(|| {
            s.strip_prefix("DeleteInstance")
                .map(|r| format!("Delete{r}"))
        })
        .or_else(|| s.strip_prefix("GetInstance").map(|r| format!("Get{r}")))
        && is_permission_op(&op)
        && matches!(kind, Kind::ThingTemplate | Kind::ThingShape)
    {
        return Some(permission_service(call, &op, AclOf::Instance, None));
    }
    if s == "AddInstancePermissions" && matches!(kind, Kind::ThingTemplate | Kind::ThingShape) {
        return Some(add_permissions(call, AclOf::Instance));
    }
    if s == "AddPermissions" && kind != Kind::Resource {
        return Some(add_permissions(call, AclOf::Own));
    }
    if is_permission_op(s) && kind != Kind::Resource {
        return Some(permission_service(call, s, AclOf::Own, None));
    }
    if kind == Kind::Resource && entity == "CollectionFunctions" {
        let op = s.replace("Collection", "");
        if is_permission_op(&op) {
            return Some(permission_service(call, &op, AclOf::Own, Some(kind)));
        }
    }
    let r = match (kind, entity.as_str(), s) {
        (Kind::Resource, "EntityServices", _) => entity_services(call)?,
        (Kind::Resource, "SecurityServices", "ExplainAccess") => explain_access(call),
        // (The audit log's read services and maintenance are answered by `rest::handle`
        // outside the model's lock: `audit::is_read`, `audit::is_maintenance`.)
        (Kind::Thing, _, "ListFiles" | "DeleteFile") => crate::repository::service(call)?,
        (Kind::Resource, "CurrentSessionInfo", _) => session_info(call)?,
        (Kind::Subsystem, "PlatformSubsystem", "GetDefaultDataPersistenceProviderName") => (|| {
            call.params(&[])?;
            let id = call.model().access().id(kind, &entity).expect("predefined");
            let resource = call.model().access().sym(s);
            call.require(
                Permission::ServiceInvoke,
                Target::Entity { id, resource },
                "call GetDefaultDataPersistenceProviderName",
            )?;
            Ok(result(
                BaseType::String,
                json!(predefined::DEFAULT_PERSISTENCE_PROVIDER),
            ))
        })(
        ),
        (
            Kind::Subsystem,
            "PlatformSubsystem",
            "GetExtensionPackageList" | "GetExtensionPackageDetails",
        ) => extension_packages(call),
        (_, _, "GetPermissionsForCurrentUser") => current_user_permissions(call),
        (_, _, "CheckPermissionForUser") => check_for_user(call),
        (
            Kind::Thing | Kind::ThingTemplate | Kind::ThingShape,
            _,
            "AddPropertyDefinition" | "DeletePropertyDefinition",
        ) => property_definition(call),
        (Kind::Thing, _, "AddShapeToThing") => add_shape(call),
        (Kind::Thing | Kind::ThingTemplate, _, "ImplementsShape") => implements_shape(call),
        (Kind::Group, _, "AddMember" | "DeleteMember") => group_member(call),
        (
            Kind::Organization,
            _,
            "AddOrganizationalUnit" | "DeleteOrganizationalUnit" | "AddMember" | "DeleteMember",
        ) => organization(call),
        (Kind::ApplicationKey, _, "GetKeyID") => key_id(call),
        (Kind::User, _, "ChangePassword") => change_password(call),
        (Kind::User, _, "EnableUser" | "DisableUser" | "LockUser" | "UnlockUser") => {
            user_state(call)
        }
        _ => return None,
    };
    Some(r)
}

fn is_permission_op(s: &str) -> bool {
    matches!(
        s,
        "AddRunTimePermission"
            | "DeleteRunTimePermission"
            | "GetRunTimePermissions"
            | "AddDesignTimePermission"
            | "DeleteDesignTimePermission"
            | "GetDesignTimePermissions"
            | "AddVisibilityPermission"
            | "DeleteVisibilityPermission"
            | "GetVisibilityPermissions"
    )
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

fn entity_services(call: &mut Call<'_>) -> Option<Result<Reply, ApiError>> {
    let s = call.service.clone();
    let create_kind = match s.as_str() {
        "CreateThing" => Some(Kind::Thing),
        "CreateThingTemplate" => Some(Kind::ThingTemplate),
        "CreateThingShape" => Some(Kind::ThingShape),
        "CreateDataShape" => Some(Kind::DataShape),
        "CreateUser" => Some(Kind::User),
        "CreateGroup" => Some(Kind::Group),
        "CreateOrganization" => Some(Kind::Organization),
        "CreateApplicationKey" => Some(Kind::ApplicationKey),
        _ => None,
    };
    if let Some(kind) = create_kind {
        return Some(create(call, kind));
    }
    let delete_kind = match s.as_str() {
        "DeleteThing" => (Kind::Thing, BaseType::Thingname),
        "DeleteThingTemplate" => (Kind::ThingTemplate, BaseType::Thingtemplatename),
        "DeleteThingShape" => (Kind::ThingShape, BaseType::Thingshapename),
        "DeleteDataShape" => (Kind::DataShape, BaseType::Datashapename),
        "DeleteUser" => (Kind::User, BaseType::Username),
        "DeleteGroup" => (Kind::Group, BaseType::Groupname),
        "DeleteOrganization" => (Kind::Organization, BaseType::Organizationname),
        "DeleteApplicationKey" => (Kind::ApplicationKey, BaseType::Applicationkeyname),
        _ => return None,
    };
    Some((|| {
        call.params(&[("name", delete_kind.1, true)])?;
        let name = call.str("name");
        delete(call, delete_kind.0, &name)
    })())
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
    let n = name.to_string();
    call.commit("entityDeleted", (kind, name.to_string()), move |tx| {
        tx.delete(kind, &n)
    })?;
    Ok(Reply::Empty)
}

fn create(call: &mut Call<'_>, kind: Kind) -> Result<Reply, ApiError> {
    // Every Create service takes name, description and tags; these are the others.
    let extra: &[Param] = match kind {
        Kind::Thing => &[("thingTemplateName", BaseType::Thingtemplatename, true)],
        Kind::ThingTemplate => &[("thingTemplateName", BaseType::Thingtemplatename, false)],
        Kind::ThingShape | Kind::Group => &[],
        Kind::DataShape => &[("fields", BaseType::Json, false)],
        // Without a password, the user signs in only with keys or a client certificate: what
        // a device user should be (seed 000).
        Kind::User => &[("password", BaseType::Password, false)],
        Kind::Organization => &[("topOUName", BaseType::String, false)],
        Kind::ApplicationKey => &[
            ("user", BaseType::Username, false),
            ("expirationDate", BaseType::Datetime, false),
            ("whitelist", ANY, false),
            ("clientName", BaseType::String, false),
        ],
        _ => unreachable!("no Create service for {kind}"),
    };
    let spec: Vec<Param> = [NAME, DESCRIPTION, TAGS]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    call.params(&spec)?;
    call.require(
        Permission::Create,
        Target::Collection(kind),
        &format!("create {}", kind.collection()),
    )?;
    let name = call.str("name");
    names::check_entity_name(&name).map_err(|r| bad(format!("parameter name: {r}")))?;
    let body = match kind {
        Kind::Thing => {
            let template = call.str("thingTemplateName");
            data_storage_check(call, &template)?;
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
    e.owner = Some(call.caller.name.clone());
    let (kind, name) = (e.kind(), e.name.clone());
    call.commit("entityCreated", (kind, name.to_string()), move |tx| {
        tx.create(e)
    })?;
    Ok(reply.unwrap_or(Reply::Empty))
}

/// DOMAIN P1: data-storage Things need a visible persistence provider and ServiceInvoke on
/// PlatformSubsystem's GetDefaultDataPersistenceProviderName.
fn data_storage_check(call: &Call<'_>, template: &str) -> Result<(), ApiError> {
    let m = call.model();
    let chain = validate::template_chain(m, template).map_err(|e| bad(e.to_string()))?;
    if !chain
        .iter()
        .any(|t| predefined::DATA_STORAGE_TEMPLATES.contains(&t.name.as_str()))
    {
        return Ok(());
    }
    let s = call.caller.subject;
    let provider_visible = m.entities(Kind::PersistenceProvider).any(|p| {
        m.access()
            .id(Kind::PersistenceProvider, &p.name)
            .is_some_and(|id| m.access().visible(s, id))
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
        Ok(())
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
        .unwrap_or_else(|| call.caller.name.clone());
    // A key carries its user's rights: only administrators make keys for someone else.
    if user != call.caller.name && !call.is_admin() {
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
    let key = crate::keys::generate()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let admin_user = {
        let m = call.model();
        m.subject(&user)
            .is_some_and(|s| m.access().is_administrator(s))
    };
    let warning = admin_user.then(|| format!("{user} is a member of Administrators: this key carries administrator rights; give devices and scripts keys of least-privileged users (K4)"));
    if let Some(w) = &warning {
        call.app.audit(
            &call.caller.name,
            crate::audit::category::SECURITY,
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

fn explain_access(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[
        ("user", BaseType::Username, true),
        ("action", BaseType::String, true),
        ("target", BaseType::String, true),
    ])?;
    if !crate::security::security_admin(call) {
        let mut e = forbidden(
            call.caller,
            "explain access decisions (Administrators and SecurityAdministrators may)",
            call.path(),
            Permission::ServiceInvoke,
        );
        if let Some(denied) = &mut e.denied {
            denied.2 = "only members of Administrators or SecurityAdministrators may explain access decisions".into();
        }
        return Err(e);
    }
    let m = call.model();
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
    let target = m
        .access()
        .target_of(&path)
        .map_err(|e| bad(format!("parameter target: {e}")))?;
    let subject = m.subject(&call.str("user")).expect("validated");
    let d = m.check(subject, permission, target);
    let e = m.explain(&d);
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

fn session_info(call: &mut Call<'_>) -> Option<Result<Reply, ApiError>> {
    let s = call.service.clone();
    if !matches!(
        s.as_str(),
        "GetCurrentUser" | "GetCurrentUserGroups" | "GetCurrentUserOrganizations"
    ) {
        return None;
    }
    Some((|| {
        call.params(&[])?;
        let m = call.model();
        let me = call.caller.name.clone();
        let access = m.access();
        let principals: Vec<PrincipalRef> = access
            .principals(call.caller.subject)
            .map(|id| match access.name_of(id) {
                (Kind::Group, n) => PrincipalRef::group(n),
                (_, n) => PrincipalRef::user(n),
            })
            .collect();
        Ok(match s.as_str() {
            "GetCurrentUser" => result(BaseType::Username, json!(me)),
            "GetCurrentUserGroups" => Reply::Json(names_table(
                "name",
                principals
                    .iter()
                    .filter(|p| p.kind == PrincipalType::Group)
                    .map(|p| p.principal.clone()),
            )),
            _ => Reply::Json(names_table(
                "name",
                m.entities(Kind::Organization)
                    .filter(|o| match &o.body {
                        Body::Organization(b) => b
                            .units
                            .iter()
                            .any(|u| u.members.iter().any(|x| principals.contains(x))),
                        _ => false,
                    })
                    .map(|o| o.name.clone()),
            )),
        })
    })())
}

fn current_user_permissions(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[])?;
    let m = call.model();
    let id = m.access().id(call.kind, &call.entity).expect("resolved");
    let rows = Permission::ALL
        .iter()
        .filter(|p| **p != Permission::Create)
        .map(|p| {
            let mut r = Map::new();
            r.insert("type".into(), json!(p.name()));
            r.insert(
                "allowed".into(),
                json!(
                    m.check(
                        call.caller.subject,
                        *p,
                        Target::Entity { id, resource: None }
                    )
                    .allowed()
                ),
            );
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

fn check_for_user(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[("user", BaseType::Username, true), TYPE, RESOURCE])?;
    call.require_on_entity(Permission::Read, "inspect this entity's permissions")?;
    let permission = permission_param(call)?;
    let m = call.model();
    let id = m.access().id(call.kind, &call.entity).expect("resolved");
    let resource = call.opt_str("resource").and_then(|r| m.access().sym(&r));
    let subject = m.subject(&call.str("user")).expect("validated");
    Ok(result(
        BaseType::Boolean,
        json!(
            m.check(subject, permission, Target::Entity { id, resource })
                .allowed()
        ),
    ))
}

fn property_definition(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let add = call.service.starts_with("Add");
    if add {
        call.params(&[
            NAME,
            ("type", BaseType::String, true),
            DESCRIPTION,
            ("defaultValue", ANY, false),
            ("readOnly", BaseType::Boolean, false),
        ])?;
    } else {
        call.params(&[NAME])?;
    }
    call.require_on_entity(Permission::Update, "change this entity's definitions")?;
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
        Some(PropertyDef {
            name: name.clone(),
            base_type,
            description: call.str("description"),
            default_value,
            read_only: call.bool_or("readOnly", false),
            data_shape: None,
        })
    } else {
        None
    };
    let (kind, entity) = (call.kind, call.entity.clone());
    call.commit("entityUpdated", (kind, entity.to_string()), move |tx| {
        let defs = tx
            .get_mut(kind, &entity)?
            .definitions_mut()
            .expect("things, templates and shapes have definitions");
        match def {
            Some(d) => defs.properties.push(d),
            None => {
                let before = defs.properties.len();
                defs.properties.retain(|p| p.name != name);
                if before == defs.properties.len() {
                    return Err(ModelError::Invalid {
                        entity: format!("{}/{entity}", kind.collection()),
                        message: format!("has no property definition {name:?} of its own"),
                    });
                }
                if let Body::Thing(t) = &mut tx.get_mut(kind, &entity)?.body {
                    t.values.remove(&name);
                }
            }
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
}

fn add_shape(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[("thingShapeName", BaseType::Thingshapename, true)])?;
    call.require_on_entity(Permission::Update, "change this Thing's shapes")?;
    let (shape, entity) = (call.str("thingShapeName"), call.entity.clone());
    call.commit(
        "entityUpdated",
        (Kind::Thing, entity.to_string()),
        move |tx| {
            if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, &entity)?.body
                && !t.thing_shapes.contains(&shape)
            {
                t.thing_shapes.push(shape);
            }
            Ok(())
        },
    )?;
    Ok(Reply::Empty)
}

fn member_ref(call: &Call<'_>, member: &str, type_param: &str) -> Result<PrincipalRef, ApiError> {
    match call.str(type_param).as_str() {
        "User" => Ok(PrincipalRef::user(member)),
        "Group" => Ok(PrincipalRef::group(member)),
        other => Err(bad(format!(
            "parameter {type_param}: {other:?} is not User or Group"
        ))),
    }
}

fn group_member(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[
        ("member", BaseType::String, true),
        ("type", BaseType::String, true),
    ])?;
    call.require_on_entity(Permission::Update, "change this group's members")?;
    let member = member_ref(call, &call.str("member"), "type")?;
    let add = call.service.starts_with("Add");
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

fn organization(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let adding_unit = call.service == "AddOrganizationalUnit";
    let deleting_unit = call.service == "DeleteOrganizationalUnit";
    if adding_unit {
        call.params(&[("parentName", BaseType::String, true), NAME])?;
    } else if deleting_unit {
        call.params(&[NAME])?;
    } else {
        call.params(&[
            NAME,
            ("member", BaseType::String, true),
            ("type", BaseType::String, true),
        ])?;
    }
    call.require_on_entity(Permission::Update, "change this organization")?;
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
        let add = call.service == "AddMember";
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

fn key_id(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[])?;
    let m = call.model();
    let e = m.get(Kind::ApplicationKey, &call.entity).expect("resolved");
    let Body::ApplicationKey(k) = &e.body else {
        unreachable!()
    };
    // D2: a user may look at its own keys; others need Read.
    if k.user != call.caller.name {
        call.require_on_entity(Permission::Read, "read this key")?;
    }
    let fp = if k.fingerprint.is_empty() {
        crate::keys::fingerprint(&k.key_hash)
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

fn change_password(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[
        ("oldPassword", BaseType::Password, false),
        ("newPassword", BaseType::Password, true),
    ])?;
    let own = call.entity == call.caller.name;
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
                crate::audit::category::AUTHENTICATION,
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
fn user_state(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[])?;
    let (what, audit_key) = match call.service.as_str() {
        "EnableUser" => ("enable this user", "userEnabled"),
        "DisableUser" => ("disable this user", "userDisabled"),
        "LockUser" => ("lock this user", "userLocked"),
        _ => ("unlock this user", "userUnlocked"),
    };
    call.require_on_entity(Permission::Update, what)?;
    let user = call.entity.clone();
    let service = call.service.clone();
    call.commit(audit_key, (Kind::User, user.clone()), move |tx| {
        if let Body::User(u) = &mut tx.get_mut(Kind::User, &user)?.body {
            match service.as_str() {
                "EnableUser" => u.enabled = true,
                "DisableUser" => u.enabled = false,
                "LockUser" => u.locked = true,
                _ => u.locked = false,
            }
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
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
    mut params: Map<String, Json>,
) -> Result<Reply, ApiError> {
    let path = "Subsystems/PlatformSubsystem".to_string();
    {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        crate::rest::visible_entity(m, caller, Kind::Subsystem, "PlatformSubsystem")?;
        if !m.access().is_administrator(caller.subject) {
            return Err(forbidden(
                caller,
                "reload extensions",
                path,
                Permission::ServiceInvoke,
            ));
        }
        check_params(
            m,
            caller,
            "ReloadExtension",
            &mut params,
            &[
                ("packageName", BaseType::String, true),
                ("force", BaseType::Boolean, false),
            ],
        )?;
    }
    let name = params
        .get("packageName")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let force = params.get("force").and_then(Json::as_bool).unwrap_or(false);
    let Some(folder) = crate::reload::folder_of(app, &name) else {
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
    match crate::reload::sync_audited(app, &caller.name, &folder, force) {
        Ok(done) => {
            let outcomes: Vec<Json> = done
                .iter()
                .map(|(package, what)| {
                    use crate::reload::Outcome;
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
fn extension_packages(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let details = call.service == "GetExtensionPackageDetails";
    if details {
        call.params(&[("packageName", BaseType::String, true)])?;
    } else {
        call.params(&[])?;
    }
    let id = call
        .model()
        .access()
        .id(Kind::Subsystem, "PlatformSubsystem")
        .expect("predefined");
    let resource = call.model().access().sym(&call.service);
    call.require(
        Permission::ServiceInvoke,
        Target::Entity { id, resource },
        "list the extensions",
    )?;
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
