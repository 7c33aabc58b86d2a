//! The REST API in the vendor's conventions (DOMAIN.md section 4):
//! `/Thingworx/{Collection}/{Entity}/{Properties|Services|Events}/{name}`.
//!
//! Every answer about an entity the caller cannot see is exactly the answer about one that does
//! not exist (V1): same status, same body.

use crate::app::App;
use crate::auth::Caller;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value as Json, json};
use thinghost_core::infotable::InfoTable;
use thinghost_core::validate::{find_property, find_service, merged_definitions};
use thinghost_core::{Body, Decision, Entity, Kind, Model, Outcome, Permission, Target, View};

/// An API error: a status and a message for the body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// A denial to audit: (permission, target path, the rule that decided).
    pub denied: Option<(Permission, String, String)>,
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

/// The one answer for an entity that does not exist or is not visible.
pub(crate) fn not_found(kind: Kind, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{} {name:?} was not found", kind.label()),
    )
}

/// A successful answer: a JSON body, or an empty 200 (void).
pub enum Reply {
    Json(Json),
    Empty,
}

/// Resolves an entity the caller can see; anything else is the same 404.
pub(crate) fn visible_entity<'m>(
    m: &'m Model,
    caller: &Caller,
    kind: Kind,
    name: &str,
) -> Result<(&'m Entity, thinghost_core::EntityId), ApiError> {
    let id = m
        .access()
        .id(kind, name)
        .ok_or_else(|| not_found(kind, name))?;
    if !m.access().visible(caller.subject, id) {
        return Err(not_found(kind, name));
    }
    Ok((m.get(kind, name).expect("indexed"), id))
}

/// Checks a permission; a denial is a 403 (the entity is visible by now) and is audited.
pub(crate) fn require(
    m: &Model,
    caller: &Caller,
    permission: Permission,
    target: Target,
    path: &str,
) -> Result<Decision, ApiError> {
    let d = m.check(caller.subject, permission, target);
    match d.outcome {
        Outcome::Allowed => Ok(d),
        Outcome::NotVisible => {
            let (kind, name) = match target {
                Target::Entity { id, .. } => {
                    let (k, n) = m.access().name_of(id);
                    (k, n.to_string())
                }
                Target::Collection(k) => (k, String::new()),
            };
            Err(not_found(kind, &name))
        }
        Outcome::Denied => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("{} may not {} on {path}", caller.name, permission),
            denied: Some((
                permission,
                path.to_string(),
                thinghost_core::insight::rule_of(m, &d),
            )),
        }),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

/// Parses a JSON request body; malformed JSON is a 400 that says where.
/// The most memory the JSON values of a body may take, per byte of the body (ordinary bodies
/// take 5 to 25 times their size: a small object is a map node of about 640 bytes).
pub const MEMORY_PER_BODY_BYTE: usize = 32;

/// About how many bytes `serde_json::Value`s of `body` would take (each value and element; each
/// object's map nodes, one per 11 members; each key's and string's bytes), by one pass that
/// builds nothing. Nesting is bounded by the parser's depth limit (128).
pub fn json_cost(body: &[u8]) -> Result<usize, serde_json::Error> {
    use serde::de::{MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;
    const VALUE: usize = 32;
    // A map node holds up to 11 keys and values: (24 + 32) x 11 and its links.
    const NODE: usize = 640;
    const PER_NODE: usize = 11;
    struct Cost<'c>(&'c Cell<usize>);
    impl<'de> Visitor<'de> for Cost<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            self.0.set(self.0.get() + v.len());
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Seed(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut members = 0;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if members % PER_NODE == 0 {
                    self.0.set(self.0.get() + NODE);
                }
                members += 1;
                self.0.set(self.0.get() + key.len());
                map.next_value_seed(Seed(self.0))?;
            }
            Ok(())
        }
    }
    struct Seed<'c>(&'c Cell<usize>);
    impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.0.set(self.0.get() + VALUE);
            d.deserialize_any(Cost(self.0))
        }
    }
    let cost = Cell::new(0);
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(Seed(&cost), &mut de)?;
    de.end()?;
    Ok(cost.get())
}

pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Json, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a write needs Content-Type: application/json",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    // Before a value is built: what it would take in memory, from one streaming pass that keeps
    // nothing (a body of a million tiny values would take 30 times its size as values).
    let budget = MEMORY_PER_BODY_BYTE * body.len() + 4096;
    match json_cost(body) {
        Ok(cost) if cost > budget => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body holds too many small values: about {} KiB of memory for a body of {} KiB (at most {MEMORY_PER_BODY_BYTE} times its size)",
                    cost / 1024,
                    body.len() / 1024
                ),
            ));
        }
        // A syntax error is reported by the parse below, with its line and column.
        _ => {}
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The entity's description as JSON (GET /Thingworx/{Collection}/{Entity}).
fn describe(m: &Model, e: &Entity) -> Json {
    let mut v = json!({
        "name": e.name,
        "description": e.description,
        "tags": e.tags,
        "kind": e.kind().label(),
    });
    match &e.body {
        Body::Thing(t) => {
            v["thingTemplate"] = json!(t.thing_template);
            v["implementedShapes"] = json!(t.thing_shapes);
            // Disabled while the extension its template came from is removed.
            v["enabled"] = json!(t.parked.is_none());
            if let Some(p) = &t.parked {
                v["parked"] = json!(p);
            }
        }
        Body::ThingTemplate(t) => {
            v["baseThingTemplate"] = json!(t.base_thing_template);
            v["implementedShapes"] = json!(t.thing_shapes);
        }
        Body::DataShape(d) => v["fieldDefinitions"] = json!(d.fields),
        _ => {}
    }
    if matches!(e.kind(), Kind::Thing | Kind::ThingTemplate)
        && let Ok(merged) = merged_definitions(m, e)
    {
        let props: Vec<Json> = merged
            .properties
            .values()
            .map(|(d, src)| json!({"definition": d, "source": src}))
            .collect();
        let services: Vec<Json> = merged
            .services
            .values()
            .map(|(d, src)| json!({"definition": d, "source": src}))
            .collect();
        let events: Vec<Json> = merged
            .events
            .values()
            .map(|(d, src)| json!({"definition": d, "source": src}))
            .collect();
        v["propertyDefinitions"] = json!(props);
        v["serviceDefinitions"] = json!(services);
        v["eventDefinitions"] = json!(events);
    } else if let Some(defs) = e.definitions() {
        v["definitions"] = json!(defs);
    }
    v
}

/// Handles one API request for an authenticated caller.
pub fn handle(
    app: &std::sync::Arc<App>,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    // Segments arrive percent-encoded (`Device%207`); entity and member names are matched decoded.
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the path is not valid UTF-8 once decoded",
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if decoded.iter().any(|seg| seg.contains('/')) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        ));
    }
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let parts = match parts.as_slice() {
        ["Thingworx", rest @ ..] => rest.to_vec(),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the API lives under /Thingworx/",
            ));
        }
    };
    if parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "name a collection: /Thingworx/{Collection}",
        ));
    }
    let kind = Kind::from_collection(parts[0]).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no collection {:?}", parts[0]),
        )
    })?;
    match (method, &parts[1..]) {
        (&Method::GET, []) => {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            let m = db.model();
            let mut table = InfoTable {
                fields: vec![
                    thinghost_core::infotable::Field {
                        name: "name".into(),
                        base_type: thinghost_core::BaseType::String,
                    },
                    thinghost_core::infotable::Field {
                        name: "description".into(),
                        base_type: thinghost_core::BaseType::String,
                    },
                ],
                rows: vec![],
            };
            for e in m.entities(kind) {
                let id = m.access().id(kind, &e.name).expect("indexed");
                if m.access().visible(caller.subject, id) {
                    let mut row = serde_json::Map::new();
                    row.insert("name".into(), json!(e.name));
                    row.insert("description".into(), json!(e.description));
                    table.rows.push(row);
                }
            }
            Ok(Reply::Json(table.into_json()))
        }
        (&Method::GET, [name]) => {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            let m = db.model();
            let (e, id) = visible_entity(m, caller, kind, name)?;
            require(
                m,
                caller,
                Permission::Read,
                Target::Entity { id, resource: None },
                path,
            )?;
            Ok(Reply::Json(describe(m, e)))
        }
        (&Method::GET, [name, "Properties", prop]) => {
            let db = app.db.read().unwrap_or_else(|p| p.into_inner());
            let (def, value) = checked_property(
                db.model(),
                caller,
                kind,
                name,
                prop,
                Permission::PropertyRead,
                path,
            )?;
            Ok(Reply::Json(
                InfoTable::single(prop, def.base_type, value).into_json(),
            ))
        }
        (&Method::PUT, [name, "Properties", prop]) => {
            let parsed = parse_body(headers, body)?;
            let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
            let (def, _) = checked_property(
                db.model(),
                caller,
                kind,
                name,
                prop,
                Permission::PropertyWrite,
                path,
            )?;
            if let Some(refusal) = db.model().get(kind, name).and_then(disabled) {
                return Err(refusal);
            }
            if def.read_only {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("property {prop} is read-only"),
                ));
            }
            let raw = parsed.get(*prop).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body needs {{\"{prop}\": value}}"),
                )
            })?;
            let value = def.base_type.normalize(raw).map_err(|err| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("property {prop}: {err}"))
            })?;
            // Writes to a scheduler's or file repository's properties change how the platform
            // runs (who a job runs as, when, what it keeps): audited with the change. Device
            // data written to other Things is not (it is not a change of the model's rules),
            // unless an admin script writes it (a step of its plan, recorded if it lands).
            let records: Vec<thinghost_store::AuditRecord> =
                match db.model().get(kind, name).map(|e| &e.body) {
                    Some(Body::Thing(t))
                        if app.script.is_some()
                            || configures_the_platform(db.model(), &t.thing_template) =>
                    {
                        let shown = if def.base_type == thinghost_core::BaseType::Password {
                            json!("***")
                        } else {
                            value.clone()
                        };
                        let record = crate::audit::record(
                            &caller.name,
                            crate::audit::category::MODEL,
                            "propertyWritten",
                            json!({"property": prop, "value": shown}),
                            &format!("Things/{name}"),
                            "Thing",
                        );
                        if app.audit_log.enabled(&record.category) {
                            vec![record]
                        } else {
                            vec![]
                        }
                    }
                    _ => vec![],
                };
            let name = name.to_string();
            let prop = prop.to_string();
            db.change_values(
                |tx| {
                    if let Body::Thing(t) = &mut tx.get_mut(kind, &name)?.body {
                        t.values.insert(prop, value);
                    }
                    Ok(())
                },
                &records,
            )
            .map_err(crate::services::change_error)?;
            Ok(Reply::Empty)
        }
        (&Method::POST, [name, "Services", service]) => {
            let params = match parse_body(headers, body)? {
                Json::Object(o) => o,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the body of a service call is a JSON object of parameters",
                    ));
                }
            };
            if let Some(refusal) = crate::script::refuse_in_script(app, kind, name, service) {
                return Err(refusal);
            }
            // A reload compiles code, which may take seconds: it runs without the model lock.
            if (kind, *name, *service) == (Kind::Subsystem, "PlatformSubsystem", "ReloadExtension")
            {
                return crate::services::reload_extension(app, caller, params);
            }
            // The audit archive, export, purge and cleanup run without the model's lock.
            if (kind, *name) == (Kind::Subsystem, "AuditSubsystem")
                && crate::audit::is_maintenance(service)
            {
                return crate::audit::maintenance(app, caller, service, params);
            }
            // Reads of the audit log are checked under the model's lock and answered without
            // it (verifying the chain takes seconds over millions of entries).
            if crate::audit::is_read(kind, name, service) {
                return crate::audit::read(app, caller, kind, name, service, params);
            }
            // The whole-model analyses read under the shared lock.
            if kind == Kind::Resource
                && *name == "SecurityServices"
                && matches!(*service, "Lint" | "EffectivePermissions")
            {
                return crate::security::read_only(app, caller, service, params);
            }
            // A script takes the model lock only when its changes land.
            if (kind, *name, *service) == crate::script::RUN_SCRIPT {
                return crate::script::run_service(app, caller, params);
            }
            // Passwords are hashed and checked before the lock (argon2 is slow).
            let prepared =
                crate::services::prepare_passwords(app, caller, kind, name, service, &params)?;
            let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
            // Resources are platform functions every signed-in user reaches; everything else
            // must be visible (V1).
            if kind == Kind::Resource {
                db.model()
                    .access()
                    .id(kind, name)
                    .ok_or_else(|| not_found(kind, name))?;
            } else {
                visible_entity(db.model(), caller, kind, name)?;
            }
            let mut call = crate::services::Call {
                app,
                db: &mut db,
                caller,
                kind,
                entity: name.to_string(),
                service: service.to_string(),
                params,
                prepared,
            };
            if let Some(r) = crate::services::host_service(&mut call) {
                return r;
            }
            let mut params = call.params;
            // A service defined on the entity: implemented by an extension, or by nobody yet.
            let m = db.model();
            let (e, id) = visible_entity(m, caller, kind, name)?;
            let found = match kind {
                Kind::Thing | Kind::ThingTemplate => find_service(m, e, service),
                _ => None,
            };
            if let Some(refusal) = disabled(e) {
                return Err(refusal);
            }
            let Some((def, source)) = found else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("{} {name} has no service {service:?}", kind.label()),
                ));
            };
            require(
                m,
                caller,
                Permission::ServiceInvoke,
                Target::Entity {
                    id,
                    resource: m.access().sym(service),
                },
                path,
            )?;
            // The generation of now: this call keeps the extension it finds until it ends, even
            // if a reload publishes another meanwhile.
            let implementation =
                app.extensions
                    .load()
                    .handler(source.kind(), &source.name, service);
            let Some((loaded, handler)) = implementation else {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "service {service} of {name} has no implementation: services are implemented by extensions"
                    ),
                ));
            };
            let spec: Vec<(&str, thinghost_core::BaseType, bool)> = def
                .parameters
                .iter()
                .map(|p| (p.name.as_str(), p.base_type, p.required))
                .collect();
            crate::services::check_params(m, caller, service, &mut params, &spec)?;
            let args: Vec<Json> = def
                .parameters
                .iter()
                .map(|p| params.get(&p.name).cloned().unwrap_or(Json::Null))
                .collect();
            let result = def.result;
            let audit = def.audit;
            // What an audited call records (built only for one): its parameters, passwords
            // masked.
            let recorded: Option<serde_json::Map<String, Json>> = (!audit.is_off()).then(|| {
                def.parameters
                    .iter()
                    .filter_map(|p| {
                        let v = params.get(&p.name)?;
                        let v = if p.base_type == thinghost_core::BaseType::Password {
                            Json::String("***".into())
                        } else {
                            v.clone()
                        };
                        Some((p.name.clone(), v))
                    })
                    .collect()
            });
            // The handler runs without the model lock: each of its host calls is a request of its own.
            drop(db);
            let what = format!("{}/{name}/Services/{service}", kind.collection());
            let out = crate::extensions::run_service(
                app,
                caller,
                crate::extensions::Invocation {
                    loaded,
                    handler: &handler,
                    args: &args,
                    result,
                    me: name,
                    what: &what,
                },
            );
            if let Some(recorded) = recorded {
                let status = match &out {
                    Ok(_) => 200,
                    Err(e) => e.status.as_u16(),
                };
                crate::audit::service_call(
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
        (&Method::DELETE, [name]) => {
            let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
            visible_entity(db.model(), caller, kind, name)?;
            let mut call = crate::services::Call {
                app,
                db: &mut db,
                caller,
                kind,
                entity: name.to_string(),
                service: "Delete".into(),
                params: serde_json::Map::new(),
                prepared: Default::default(),
            };
            crate::services::delete(&mut call, kind, name)
        }
        (_, [] | [_] | [_, "Properties", _] | [_, "Services", _]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    }
}

/// Is a Thing of this template a scheduler or a file repository (its properties configure the
/// platform)? On every property write: walks the base templates without allocating.
fn configures_the_platform(m: &Model, template: &str) -> bool {
    let mut current = Some(template);
    // A valid model has no template cycles; the bound only keeps a bug from looping.
    for _ in 0..64 {
        let Some(t) = current else {
            return false;
        };
        if matches!(t, "Scheduler" | "FileRepository") {
            return true;
        }
        current = match m.get(Kind::ThingTemplate, t).map(|e| &e.body) {
            Some(Body::ThingTemplate(b)) => b.base_thing_template.as_deref(),
            _ => None,
        };
    }
    false
}

/// A property the caller may read or write (`permission`): visible entity (else 404), permitted
/// (else 403), defined (else 404); its definition and current value.
fn checked_property(
    m: &Model,
    caller: &Caller,
    kind: Kind,
    name: &str,
    prop: &str,
    permission: Permission,
    path: &str,
) -> Result<(thinghost_core::PropertyDef, Json), ApiError> {
    let (e, id) = visible_entity(m, caller, kind, name)?;
    let resource = m.access().sym(prop);
    require(m, caller, permission, Target::Entity { id, resource }, path)?;
    property(m, e, prop)
}

/// Why a Thing answers no service call and no property write: it is parked, disabled until the
/// extension its template came from is installed again (`Parked`).
fn disabled(e: &Entity) -> Option<ApiError> {
    let Body::Thing(t) = &e.body else {
        return None;
    };
    let p = t.parked.as_ref()?;
    Some(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "Thing {} is disabled: its template {} came from extension {}, which was removed from the plugin directory; it works again when {} is installed again",
            e.name, p.thing_template, p.extension, p.extension
        ),
    ))
}

/// A property of a Thing: its definition and current value (or default).
fn property<'m>(
    m: &'m Model,
    e: &'m Entity,
    prop: &str,
) -> Result<(thinghost_core::PropertyDef, Json), ApiError> {
    let Body::Thing(t) = &e.body else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{} {} has no properties", e.kind().label(), e.name),
        ));
    };
    let (def, _) = find_property(m, e, prop).ok_or_else(|| {
        if let Some(refusal) = disabled(e) {
            return refusal;
        }
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Thing {} has no property {prop:?}", e.name),
        )
    })?;
    let value = t
        .values
        .get(prop)
        .cloned()
        .or_else(|| def.default_value.clone())
        .unwrap_or(Json::Null);
    Ok((def.clone(), value))
}

#[cfg(test)]
mod tests {
    #[test]
    fn k5_the_memory_a_body_would_take_is_known_before_it_is_built() {
        assert_eq!(super::json_cost(b"[0,0,0]").unwrap(), 32 + 3 * 32);
        assert_eq!(
            super::json_cost(br#"{"a":"xy"}"#).unwrap(),
            32 + 640 + 1 + 32 + 2
        );
        assert!(super::json_cost(b"[1,").is_err());
        assert!(super::json_cost(b"{} {}").is_err());
        // A hundred thousand one-member objects: 800 KB of text, 70 MB as values.
        let empty = format!("[{}{{}}]", r#"{"a":0},"#.repeat(100_000));
        let cost = super::json_cost(empty.as_bytes()).unwrap();
        assert!(cost > super::MEMORY_PER_BODY_BYTE * empty.len(), "{cost}");
        // Deep nesting stops at the parser's limit, whatever the memory.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(super::json_cost(deep.as_bytes()).is_err());
    }
}
