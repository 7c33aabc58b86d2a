//! The in-process API: a request is a value (caller, target entity, service, parameters) and
//! its answer is a value ([`Reply`] or [`ApiError`]). [`invoke`] is the one way a service is
//! called, whoever asks: the REST adapter, `/Thingworx/TWS`, extension host calls, admin
//! scripts. Host services are rows of [`table`]; a service defined on an entity's template or
//! shapes runs in the extension that implements it.

pub mod audit;
pub mod authz;
pub mod definitions;
pub mod docs;
pub mod edge;
pub mod entities;
pub mod events;
pub mod history;
pub mod host_calls;
pub mod params;
pub mod reload;
pub mod repository;
pub mod script;
pub mod security;
pub mod services;
pub mod streams;
pub mod table;
pub mod tables;
pub mod tunnels;

use crate::state::app::App;
use crate::state::auth::Caller;
pub(crate) use authz::{forbidden, not_found, require, visible_entity};
use axum::http::StatusCode;
use params::ParamValues;
pub use params::Params;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use table::{Audit, On, Run, Script, Service};
use thinghost_core::validate::find_implementation;
use thinghost_core::{
    BaseType, Body, Kind, Model, ModelError, Outcome, Permission, Target, Tx, View,
};
use thinghost_store::{ChangeError, Db};

/// An API error: a status and a message for the body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// A denial to audit: (permission, target path, the rule that decided).
    pub denied: Option<(Permission, String, String)>,
}

impl ApiError {
    /// Audits this error if it is a denial (AUTHORIZATION, `permissionDenied`): who, which
    /// permission, on what (the entity is the entry's source), and `context` (where it was met).
    /// Queued with the other denials.
    pub fn audit_denial(&self, app: &App, user: &str, context: Json) {
        let Some((permission, target, rule)) = &self.denied else {
            return;
        };
        let mut args = json!({"permission": permission.name(), "target": target, "rule": rule});
        if let (Some(a), Json::Object(extra)) = (args.as_object_mut(), context) {
            a.extend(extra);
        }
        let (source, source_type) = crate::state::audit::entity_of(target);
        app.audit(
            user,
            crate::state::audit::category::AUTHORIZATION,
            "permissionDenied",
            args,
            &source,
            source_type,
        );
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            denied: None,
        }
    }
    pub fn body(&self) -> Json {
        json!({ "error": self.message })
    }
}

/// A successful answer: a JSON body, an InfoTable, or an empty 200 (void).
pub enum Reply {
    Json(Json),
    /// An InfoTable kept as one until it is written: the HTTP layer writes it straight to text,
    /// and scripts and extensions read its values, without a JSON value built between.
    Table(thinghost_core::infotable::InfoTable),
    /// A one-value InfoTable (a service's result, a property read), kept as its parts.
    One(thinghost_core::infotable::OneValue),
    Empty,
}

impl Reply {
    /// The answer as a JSON value (`None` for a void answer).
    pub fn into_json(self) -> Option<Json> {
        match self {
            Reply::Json(v) => Some(v),
            Reply::Table(t) => Some(t.into_json()),
            Reply::One(v) => Some(v.into_table().into_json()),
            Reply::Empty => None,
        }
    }

    /// The body an HTTP client receives, JSON text (`None` for a void answer).
    pub fn body(&self) -> Option<Vec<u8>> {
        match self {
            Reply::Json(v) => Some(serde_json::to_vec(v).expect("a JSON value is JSON text")),
            Reply::Table(t) => {
                // Room for a one-value table's text, written once.
                let mut text = Vec::with_capacity(160);
                t.write_json(&mut text);
                Some(text)
            }
            Reply::One(v) => {
                let mut text = Vec::with_capacity(160);
                v.write_json(&mut text);
                Some(text)
            }
            Reply::Empty => None,
        }
    }

    /// The first row's value of `field`, for a table (`Null` when there is none).
    pub fn first_value(self, field: &str) -> Json {
        match self {
            Reply::Table(mut t) if !t.rows.is_empty() => {
                t.rows.swap_remove(0).remove(field).unwrap_or(Json::Null)
            }
            Reply::One(v) if v.name == field => v.value,
            Reply::Json(v) => v["rows"][0].get(field).cloned().unwrap_or(Json::Null),
            _ => Json::Null,
        }
    }

    /// A one-value answer (an InfoTable of one field `result`) gives that value; any other
    /// answer itself, as JSON (`Null` for a void answer).
    pub fn into_value(self) -> Json {
        match self {
            Reply::Table(t) if t.fields.len() == 1 && t.fields[0].name == "result" => {
                Reply::Table(t).first_value("result")
            }
            Reply::One(v) if v.name == "result" => v.value,
            Reply::Json(v)
                if v["dataShape"]["fieldDefinitions"]
                    .as_object()
                    .is_some_and(|f| f.len() == 1 && f.contains_key("result")) =>
            {
                v["rows"][0]["result"].clone()
            }
            other => other.into_json().unwrap_or(Json::Null),
        }
    }
}

/// A 400 with this message.
pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// A one-value answer: an InfoTable of one row with the field `result`.
pub(crate) fn result(bt: BaseType, v: Json) -> Reply {
    Reply::One(thinghost_core::infotable::OneValue {
        name: "result".into(),
        base_type: bt,
        value: v,
    })
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

/// The model, under the lock a service runs with.
pub enum Guard<'a> {
    Shared(&'a Db),
    Exclusive(&'a mut Db),
}

/// One call of a host service in progress: its row, its entity (visible to the caller, or a
/// platform Resource), its parameters (checked against the row), the model under its lock.
pub struct Call<'a> {
    pub app: &'a App,
    pub db: Guard<'a>,
    pub caller: &'a Caller,
    pub kind: Kind,
    pub entity: String,
    pub row: &'static Service,
    pub params: Map<String, Json>,
    /// Password work done before the model's lock was taken.
    pub prepared: Prepared,
}

/// A call of an [`Run::Unlocked`] service, once checked: it runs without the model's lock.
pub struct Request {
    pub kind: Kind,
    pub entity: String,
    pub row: &'static Service,
    pub params: Map<String, Json>,
}

impl Call<'_> {
    pub(crate) fn model(&self) -> &Model {
        match &self.db {
            Guard::Shared(db) => db.model(),
            Guard::Exclusive(db) => db.model(),
        }
    }

    pub(crate) fn is_admin(&self) -> bool {
        authz::is_admin(self.model(), self.caller.subject)
    }

    pub(crate) fn path(&self) -> String {
        format!("{}/{}", self.kind.collection(), self.entity)
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
    pub(crate) fn bool_or(&self, name: &str, default: bool) -> bool {
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
            Outcome::NotVisible => Err(not_found(self.kind, &self.entity)),
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

    pub(crate) fn require_on_entity(
        &self,
        permission: Permission,
        what: &str,
    ) -> Result<(), ApiError> {
        let id = self
            .model()
            .access()
            .id(self.kind, &self.entity)
            .expect("resolved before the call");
        self.require(permission, Target::Entity { id, resource: None }, what)
    }

    pub(crate) fn require_admin(&self, what: &str) -> Result<(), ApiError> {
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

    /// Applies a change, stores it, and audits it (in the row's category), in one transaction.
    pub(crate) fn commit<F>(
        &mut self,
        audit_key: &str,
        source: (Kind, String),
        f: F,
    ) -> Result<(), ApiError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        let category = category(self.row, source.0);
        // The entry is written in the change's own transaction (U2): neither lands alone.
        let record = thinghost_store::AuditRecord {
            timestamp: crate::now_ms(),
            user: self.caller.name.to_string(),
            category: category.to_string(),
            message_key: audit_key.to_string(),
            args: json!({"service": self.row.name, "parameters": redact(self.row, &self.params)}),
            source: format!("{}/{}", source.0.collection(), source.1),
            source_type: source.0.label().to_string(),
        };
        let records = if self.app.audit_log.enabled(&record.category) {
            vec![record]
        } else {
            vec![]
        };
        let Guard::Exclusive(db) = &mut self.db else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{} is declared as a read (shared lock) and cannot change the model",
                    self.row.name
                ),
            ));
        };
        let refused = match db.change_audited(f, &records) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        Err(change_error_for(self.model(), self.caller, refused))
    }
}

/// A refused change, as `caller` may be told it (V1): a name that is taken is "not available",
/// the same whoever's entity holds it and whether the caller could see it (names are unique
/// across the platform, so the refusal itself cannot be avoided; saying whose, or that it
/// exists, would reveal an entity the caller cannot see); entities still using something are
/// named only when the caller can see them, the others counted.
pub(crate) fn change_error_for(m: &Model, caller: &Caller, e: ChangeError) -> ApiError {
    let visible = |user: &String| -> bool {
        let Some((collection, name)) = user.split_once('/') else {
            return true; // "the Things collection": no entity
        };
        match Kind::from_collection(collection) {
            Some(kind) => authz::sees(m, caller.subject, kind, name),
            None => true,
        }
    };
    let split = |users: Vec<String>| -> (Vec<String>, usize) {
        let (shown, hidden): (Vec<String>, Vec<String>) = users.into_iter().partition(visible);
        (shown, hidden.len())
    };
    match e {
        ChangeError::Model(ModelError::AlreadyExists { kind, name }) => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "the name {name:?} is not available for a {kind}: names are unique across the platform; pick another"
            ),
        ),
        ChangeError::Model(ModelError::InUse {
            kind, name, users, ..
        }) => {
            let (users, hidden) = split(users);
            change_error(ChangeError::Model(ModelError::InUse {
                kind,
                name,
                users,
                hidden,
            }))
        }
        ChangeError::Model(ModelError::UnitInUse {
            org, unit, users, ..
        }) => {
            let (users, hidden) = split(users);
            change_error(ChangeError::Model(ModelError::UnitInUse {
                org,
                unit,
                users,
                hidden,
            }))
        }
        // A change refused because of another entity (one that depends on the changed one: its
        // override, its subscription, its duplicate): named only when the caller can see it.
        ChangeError::Model(
            ModelError::Invalid { ref entity, .. }
            | ModelError::DuplicateDefinition { ref entity, .. },
        ) if !visible(entity) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "the change would make an entity you cannot see invalid (one that builds on what you change: its overrides, subscriptions or definitions); ask an administrator",
        ),
        other => change_error(other),
    }
}

/// The audit category of what a service records about an entity of `kind`.
pub fn category(row: &Service, kind: Kind) -> &'static str {
    match row.audit {
        Audit::In(c) => c,
        Audit::Change | Audit::None if kind == Kind::ApplicationKey => {
            crate::state::audit::category::SECURITY
        }
        Audit::Change | Audit::None => crate::state::audit::category::MODEL,
    }
}

/// Parameters for the audit log, without secrets.
/// A call's parameters as the audit records them, by its row: a PASSWORD as `***`, code (a
/// `digest` parameter) as its SHA-256.
fn redact(row: &Service, params: &Map<String, Json>) -> Json {
    let mut out = params.clone();
    for p in row.params {
        let Some(v) = out.get_mut(p.name) else {
            continue;
        };
        if p.base_type == BaseType::Password {
            *v = json!("***");
        } else if p.digest {
            let text = match &*v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            *v = json!({"sha256": crate::state::code::sha256_hex(&text), "bytes": text.len()});
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

/// Validates parameters against a spec (name, type, required): unknown or missing ones, wrong
/// types, and `*NAME` values that name nothing the caller can see are 400s naming the
/// parameter. Values are replaced by their normal form. (`spec`: a host service's row, or an
/// extension service's definition.)
pub fn check_params(
    model: &Model,
    caller: &Caller,
    service: &str,
    params: &mut impl ParamValues,
    spec: &[(&str, BaseType, bool)],
) -> Result<(), ApiError> {
    for k in params.given() {
        if !spec.iter().any(|(n, _, _)| *n == k) {
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
        match params.value_mut(name) {
            None | Some(Json::Null) if *required => {
                let t = if *bt == table::ANY {
                    "any type".to_string()
                } else {
                    bt.to_string()
                };
                return Err(bad(format!("parameter {name} ({t}) is required")));
            }
            None | Some(Json::Null) => {}
            Some(_) if *bt == table::ANY => {}
            Some(v) => {
                let norm = bt
                    .normalize(v)
                    .map_err(|e| bad(format!("parameter {name}: {e}")))?;
                if let (Some(kind), Json::String(s)) = (bt.names_kind(), &norm) {
                    let visible = authz::sees(model, caller.subject, kind, s);
                    if !visible {
                        return Err(bad(format!(
                            "parameter {name}: there is no {} named {s:?}",
                            kind.label()
                        )));
                    }
                }
                *v = norm;
            }
        }
    }
    Ok(())
}

/// Calls `service` of `entity` as `caller`: a host service (a row of [`table`]) or a service
/// defined on the entity and implemented by an extension.
pub fn invoke(
    app: &Arc<App>,
    caller: &Caller,
    kind: Kind,
    entity: &str,
    service: &str,
    params: Params<'_>,
) -> Result<Reply, ApiError> {
    if let Some(row) = table::find(kind, entity, service)
        && serves(app, row, entity)
    {
        return host(app, caller, kind, entity, row, params.into_map());
    }
    extension_service(app, caller, kind, entity, service, params)
}

/// Does a row found by name serve this entity? (A [`On::ThingsOf`] row serves the Things of
/// its template only; other Things may define a service of the same name.)
fn serves(app: &App, row: &Service, entity: &str) -> bool {
    let On::ThingsOf(templates) = row.on else {
        return true;
    };
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    of_template(db.model(), entity, templates)
}

/// Is `entity` a Thing whose template chain holds one of `templates`?
fn of_template(m: &Model, entity: &str, templates: &[&str]) -> bool {
    let Some(Body::Thing(t)) = m.get(Kind::Thing, entity).map(|e| &e.body) else {
        return false;
    };
    thinghost_core::validate::template_chain(m, &t.thing_template)
        .is_ok_and(|chain| chain.iter().any(|e| templates.contains(&e.name.as_str())))
}

/// Runs a host service: its password work (before any lock), then under the lock its row names
/// the checks of [`checked`] (the entity resolved, the refusal in a script, the parameters, the
/// rule), then the service.
fn host(
    app: &Arc<App>,
    caller: &Caller,
    kind: Kind,
    entity: &str,
    row: &'static Service,
    params: Map<String, Json>,
) -> Result<Reply, ApiError> {
    let prepared =
        crate::api::services::prepare_passwords(app, caller, kind, entity, row, &params)?;
    let target = Pending {
        app,
        caller,
        kind,
        entity,
        row,
    };
    match row.run {
        Run::Shared(f) => {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            f(&mut target.start(Guard::Shared(&db), params, prepared)?)
        }
        Run::Exclusive(f) => {
            let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
            f(&mut target.start(Guard::Exclusive(&mut db), params, prepared)?)
        }
        Run::Unlocked(f) => {
            let params = {
                let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                target.start(Guard::Shared(&db), params, prepared)?.params
            };
            f(
                app,
                caller,
                Request {
                    kind,
                    entity: entity.to_string(),
                    row,
                    params,
                },
            )
        }
    }
}

/// What a host call is about, before its lock is taken.
struct Pending<'r> {
    app: &'r App,
    caller: &'r Caller,
    kind: Kind,
    entity: &'r str,
    row: &'static Service,
}

impl<'r> Pending<'r> {
    /// The call, under `db`, once it passed [`checked`].
    fn start<'a>(
        &self,
        db: Guard<'a>,
        params: Map<String, Json>,
        prepared: Prepared,
    ) -> Result<Call<'a>, ApiError>
    where
        'r: 'a,
    {
        let mut call = Call {
            app: self.app,
            db,
            caller: self.caller,
            kind: self.kind,
            entity: self.entity.to_string(),
            row: self.row,
            params,
            prepared,
        };
        checked(&mut call)?;
        Ok(call)
    }
}

/// The checks every host service passes before it runs: the entity (visible), the parameters,
/// the row's rule.
fn checked(call: &mut Call<'_>) -> Result<(), ApiError> {
    let (kind, row) = (call.kind, call.row);
    // (Platform Resources are every signed-in user's: the engine's P1.)
    visible_entity(call.model(), call.caller, kind, &call.entity)?;
    // A row of the Things of a template: still one of them, under this call's lock (the route
    // was chosen under another).
    if let On::ThingsOf(templates) = row.on
        && !of_template(call.model(), &call.entity, templates)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Thing {} has no service {:?}", call.entity, row.name),
        ));
    }
    // Refused in a script once the entity is known to be visible (an invisible one answers 404,
    // as anywhere).
    if call.app.script.is_some() && row.script == Script::Refused {
        return Err(bad(format!(
            "{}/{}/Services/{} cannot run in a script: it acts outside the model and could not be undone; call it on its own",
            kind.collection(),
            call.entity,
            row.name
        )));
    }
    for p in row.params {
        if let Some(alias) = p.alias
            && !call.params.contains_key(p.name)
            && let Some(v) = call.params.remove(alias)
        {
            call.params.insert(p.name.to_string(), v);
        }
    }
    let spec: Vec<(&str, BaseType, bool)> = row
        .params
        .iter()
        .map(|p| (p.name, p.base_type, p.required))
        .collect();
    let Call {
        db, caller, params, ..
    } = call;
    let m = match db {
        Guard::Shared(db) => db.model(),
        Guard::Exclusive(db) => db.model(),
    };
    check_params(m, caller, row.name, params, &spec)?;
    authz::enforce(call)
}

/// The `Delete` of `DELETE /Thingworx/{Collection}/{Entity}`: the entity's `Delete{Kind}` row,
/// on the entity itself.
pub fn delete(app: &Arc<App>, caller: &Caller, kind: Kind, name: &str) -> Result<Reply, ApiError> {
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    visible_entity(db.model(), caller, kind, name)?;
    let Some(row) = table::find(
        Kind::Resource,
        "EntityServices",
        &format!("Delete{}", kind.label()),
    ) else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} cannot be deleted: they are the platform's own",
                kind.collection()
            ),
        ));
    };
    let mut call = Call {
        app,
        db: Guard::Exclusive(&mut db),
        caller,
        kind,
        entity: name.to_string(),
        row,
        params: Map::new(),
        prepared: Prepared::default(),
    };
    crate::api::services::delete(&mut call, kind, name)
}

/// `Things/Pump/Services/Vent`, for messages: written only when one is needed (a call that
/// succeeds writes none).
struct ServicePath<'a> {
    kind: Kind,
    name: &'a str,
    service: &'a str,
}

impl std::fmt::Display for ServicePath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/Services/{}",
            self.kind.collection(),
            self.name,
            self.service
        )
    }
}

/// A service defined on the entity (its template chain and shapes): implemented by an
/// extension, or by nobody yet.
fn extension_service(
    app: &Arc<App>,
    caller: &Caller,
    kind: Kind,
    name: &str,
    service: &str,
    mut params: Params<'_>,
) -> Result<Reply, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    let (e, id) = visible_entity(m, caller, kind, name)?;
    let found = match kind {
        Kind::Thing | Kind::ThingTemplate => find_implementation(m, e, service),
        _ => None,
    };
    if let Some(refusal) = entities::disabled(e) {
        return Err(refusal);
    }
    let Some(found) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{} {name} has no service {service:?}", kind.label()),
        ));
    };
    let def = found.def;
    let path = ServicePath {
        kind,
        name,
        service,
    };
    require(
        m,
        caller,
        Permission::ServiceInvoke,
        Target::Entity {
            id,
            resource: m.access().sym(service),
        },
        &path,
    )?;
    // A service bound to the device runs there (C5): its parameters checked as for any call,
    // then sent without the model's lock.
    if let Some(binding) = crate::api::edge::service_binding(e, service) {
        {
            let spec: smallvec::SmallVec<[(&str, BaseType, bool); 8]> = def
                .parameters
                .iter()
                .map(|p| (p.name.as_str(), p.base_type, p.required))
                .collect();
            check_params(m, caller, service, &mut params, &spec)?;
        }
        let args: Vec<(String, BaseType, Json)> = def
            .parameters
            .iter()
            .map(|p| {
                let v = params
                    .get_mut(&p.name)
                    .map(Json::take)
                    .unwrap_or(Json::Null);
                (p.name.clone(), p.base_type, v)
            })
            .collect();
        let (result, audit) = (def.result, def.audit);
        drop(db);
        let out = crate::api::edge::call_remote(app, name, service, &args, result, &binding);
        // Audited as a call run here is, passwords masked.
        if !audit.is_off() {
            let recorded: Map<String, Json> = args
                .iter()
                .map(|(n, bt, v)| {
                    let v = if *bt == BaseType::Password {
                        Json::String("***".into())
                    } else {
                        v.clone()
                    };
                    (n.clone(), v)
                })
                .collect();
            let status = match &out {
                Ok(_) => 200,
                Err(e) => e.status.as_u16(),
            };
            crate::state::audit::service_call(
                app,
                caller,
                audit,
                json!({"service": service, "parameters": recorded, "status": status, "device": binding.source_name}),
                &format!("{}/{name}", kind.collection()),
                kind.label(),
            );
        }
        return out;
    }
    let implementer = found.implementer;
    let implemented = match found.code {
        Some(code) => host_calls::Implemented::Code {
            code: app.code.get(code).map_err(|e| {
                // Saved code is compiled when it is saved; code that no longer compiles came in
                // another way (an older version's data): the service cannot run until it is
                // mended.
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{path}: its code on {} does not compile ({e}); mend it with {}",
                        authz::named(m, caller, implementer.kind(), &implementer.name),
                        if found.overridden() {
                            "OverrideService"
                        } else {
                            "UpdateServiceDefinition"
                        }
                    ),
                )
            })?,
            place: format!("{}/Services/{service}", implementer.key()),
        },
        None => {
            // The generation of now: this call keeps the extension it finds until it ends,
            // even if a reload publishes another meanwhile.
            let handler = app.extensions.load().handler(
                implementer.kind(),
                &implementer.name,
                thinghost_extensions::manifest::Member::Service,
                service,
            );
            let Some((loaded, handler)) = handler else {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "service {service} of {name} (defined on {}) has no implementation: give it code (UpdateServiceDefinition) or install the extension that implements it (B1)",
                        authz::named(m, caller, found.source.kind(), &found.source.name)
                    ),
                ));
            };
            host_calls::Implemented::Handler { loaded, handler }
        }
    };
    {
        let spec: smallvec::SmallVec<[(&str, BaseType, bool); 8]> = def
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.base_type, p.required))
            .collect();
        check_params(m, caller, service, &mut params, &spec)?;
    }
    // The parameters' names, for code in the model (its variables); a handler takes the
    // arguments in order.
    let names: Vec<String> = match implemented {
        host_calls::Implemented::Code { .. } => {
            def.parameters.iter().map(|p| p.name.clone()).collect()
        }
        host_calls::Implemented::Handler { .. } => Vec::new(),
    };
    let result = def.result;
    let audit = def.audit;
    // What an audited call records (built only for one): its parameters, passwords masked.
    let recorded: Option<Map<String, Json>> = (!audit.is_off()).then(|| {
        def.parameters
            .iter()
            .filter_map(|p| {
                let v = params.get(&p.name)?;
                let v = if p.base_type == BaseType::Password {
                    Json::String("***".into())
                } else {
                    v.clone()
                };
                Some((p.name.clone(), v))
            })
            .collect()
    });
    // The arguments in declared order, taken out of the checked parameters.
    let args: smallvec::SmallVec<[Json; 4]> = def
        .parameters
        .iter()
        .map(|p| {
            params
                .get_mut(&p.name)
                .map(Json::take)
                .unwrap_or(Json::Null)
        })
        .collect();
    // The handler runs without the model lock: each of its host calls is a request of its own.
    drop(db);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let out = host_calls::run_service(
        app,
        caller,
        host_calls::Invocation {
            implemented,
            names: &names,
            args: &args,
            result,
            me: name,
            what: &path,
        },
    );
    if let Some(recorded) = recorded {
        let status = match &out {
            Ok(_) => 200,
            Err(e) => e.status.as_u16(),
        };
        crate::state::audit::service_call(
            app,
            caller,
            audit,
            json!({"service": service, "parameters": recorded, "status": status}),
            &format!("{}/{name}", kind.collection()),
            kind.label(),
        );
    }
    out
}
