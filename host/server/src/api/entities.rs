//! The entity routes of the API as typed calls: list a collection, describe an entity, read
//! and write a property. (Services: [`crate::api::invoke`].)

use crate::api::{ApiError, Reply, require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::validate::{find_property, merged_definitions};
use thinghost_core::{BaseType, Body, Entity, Kind, Model, Permission, Target, View};

/// The entities of a collection that the caller can see (an InfoTable of `name`, `description`).
pub fn list(app: &App, caller: &Caller, kind: Kind) -> Result<Reply, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    let mut table = InfoTable {
        fields: vec![
            Field {
                name: "name".into(),
                base_type: BaseType::String,
            },
            Field {
                name: "description".into(),
                base_type: BaseType::String,
            },
        ],
        rows: vec![],
    };
    for e in m.entities(kind) {
        let id = m.access().id(kind, &e.name).expect("indexed");
        if crate::api::authz::sees_id(m, caller.subject, id) {
            let mut row = serde_json::Map::new();
            row.insert("name".into(), json!(e.name));
            row.insert("description".into(), json!(e.description));
            table.rows.push(row);
        }
    }
    Ok(Reply::Table(table))
}

/// An entity's metadata (needs Read).
pub fn describe(app: &App, caller: &Caller, kind: Kind, name: &str) -> Result<Reply, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    let (e, id) = visible_entity(m, caller, kind, name)?;
    require(
        m,
        caller,
        Permission::Read,
        Target::Entity { id, resource: None },
        format!("{}/{name}", kind.collection()),
    )?;
    Ok(Reply::Json(description(m, caller, e)))
}

/// A property's value, as a one-row InfoTable keyed by its name (needs PropertyRead).
pub fn read_property(
    app: &App,
    caller: &Caller,
    kind: Kind,
    name: &str,
    prop: &str,
) -> Result<Reply, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let (def, value) = checked_property(
        db.model(),
        caller,
        kind,
        name,
        prop,
        Permission::PropertyRead,
    )?;
    // A property bound to the device is read there (C5), without the model's lock.
    if let Some(binding) = db
        .model()
        .get(kind, name)
        .and_then(|e| crate::api::edge::property_binding(e, prop))
    {
        drop(db);
        return crate::api::edge::read_remote(app, name, prop, def.base_type, &binding);
    }
    Ok(Reply::One(thinghost_core::infotable::OneValue {
        name: prop.to_string().into(),
        base_type: def.base_type,
        value,
    }))
}

/// Writes a property (needs PropertyWrite; checked against its base type). `raw`: the value, or
/// none when the request named none (a 400, once the caller may write at all).
pub fn write_property(
    app: &App,
    caller: &Caller,
    kind: Kind,
    name: &str,
    prop: &str,
    raw: Option<&Json>,
) -> Result<Reply, ApiError> {
    // Back-pressure before the lock: a full queue makes this writer wait, never the model.
    crate::api::events::room(app, caller, [name]);
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    let (def, _) = checked_property(
        db.model(),
        caller,
        kind,
        name,
        prop,
        Permission::PropertyWrite,
    )?;
    require_design_write(db.model(), caller, kind, name, prop)?;
    if let Some(refusal) = db.model().get(kind, name).and_then(disabled) {
        return Err(refusal);
    }
    if def.read_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("property {prop} is read-only"),
        ));
    }
    let raw = raw.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body needs {{\"{prop}\": value}}"),
        )
    })?;
    let value = def
        .base_type
        .normalize(raw)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("property {prop}: {err}")))?;
    // A property bound to the device is written there (C5), without the model's lock; the
    // stored value follows when the device pushes it.
    if let Some(binding) = db
        .model()
        .get(kind, name)
        .and_then(|e| crate::api::edge::property_binding(e, prop))
    {
        drop(db);
        return crate::api::edge::write_remote(app, name, prop, def.base_type, &value, &binding);
    }
    // Who a timer or scheduler fires as (B7): the user itself, or an administrator, names it;
    // anyone else could make code run with another's rights.
    if prop == RUN_AS_USER
        && let Some(Body::Thing(t)) = db.model().get(kind, name).map(|e| &e.body)
        && configures_the_platform(db.model(), &t.thing_template)
    {
        may_name_run_as(db.model(), caller, &value)?;
    }
    // Writes to a scheduler's or file repository's properties change how the platform runs (who
    // a job runs as, when, what it keeps): audited with the change. Device data written to other
    // Things is not (it is not a change of the model's rules), unless an admin script writes it
    // (a step of its plan, recorded if it lands).
    let records: Vec<thinghost_store::AuditRecord> =
        match db.model().get(kind, name).map(|e| &e.body) {
            Some(Body::Thing(t))
                if app.script.is_some()
                    || configures_the_platform(db.model(), &t.thing_template) =>
            {
                let shown = if def.base_type == BaseType::Password {
                    json!("***")
                } else {
                    value.clone()
                };
                let record = crate::state::audit::record(
                    &caller.name,
                    crate::state::audit::category::MODEL,
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
    // The value before (its default while none was written), for DataChange (B5).
    let old: Option<Json> = match db.model().get(kind, name).map(|e| &e.body) {
        Some(Body::Thing(t)) => t.values.get(prop).cloned(),
        _ => None,
    }
    .or_else(|| def.default_value.clone());
    let fires = def.data_change_type.fires(old.as_ref(), &value);
    let new = fires.then(|| value.clone());
    let logged = crate::api::history::logged(db.model(), name, &def, &value, crate::now_ms(), None);
    let name = name.to_string();
    let prop = prop.to_string();
    db.change_values(
        |tx| {
            if let Body::Thing(t) = &mut tx.get_mut(kind, &name)?.body {
                t.values.insert(prop.clone(), value);
            }
            Ok(())
        },
        &records,
    )
    .map_err(crate::api::change_error)?;
    // Durable now; the firing is queued under the model's lock, in the order of the changes (a
    // full queue made this writer wait before it took the lock, never the model).
    if let Some(f) = new.and_then(|new| {
        crate::api::events::data_change(app, &db, caller, &name, &prop, old.as_ref(), &new)
    }) {
        crate::api::events::send(app, f);
    }
    // Its value stream's entry (H2), queued under the lock, durable before the answer.
    let pending = crate::api::history::append(app, logged.into_iter().collect());
    drop(db);
    crate::api::history::settle(pending)?;
    Ok(Reply::Empty)
}

/// The entity's description as JSON (GET /Thingworx/{Collection}/{Entity}).
fn description(m: &Model, caller: &Caller, e: &Entity) -> Json {
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
            // Where its history goes (H2), a stream's or table's data shape, retention (H5).
            if let Some(s) = &t.storage.value_stream {
                v["valueStream"] = json!(s);
            }
            if let Some(d) = &t.storage.data_shape {
                v["dataShape"] = json!(d);
            }
            if !t.storage.indexes.is_empty() {
                v["indexes"] = json!(t.storage.indexes);
            }
            if t.storage.retention_days != 0 || t.storage.max_entries != 0 {
                v["retention"] = json!({"retentionDays": t.storage.retention_days, "maxEntries": t.storage.max_entries});
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
        // B2: the definition's source, and the override that runs for this entity, if any.
        let services: Vec<Json> = merged
            .services
            .values()
            .map(|(d, src)| {
                let mut s = json!({"definition": d, "source": src});
                if let Some(i) = thinghost_core::validate::find_implementation(m, e, &d.name)
                    && i.overridden()
                {
                    s["override"] = json!({
                        "source": i.implementer.key().to_string(),
                        "code": i.code,
                        // An extension's override runs its handler.
                        "extension": if i.code.is_none() { i.implementer.extension.as_deref() } else { None },
                    });
                }
                s
            })
            .collect();
        let events: Vec<Json> = merged
            .events
            .values()
            .map(|(d, src)| json!({"definition": d, "source": src}))
            .collect();
        // B6: the subscriptions it has, each with where it is defined.
        let mut subscriptions: Vec<Json> = Vec::new();
        crate::api::events::each_level(m, e, &mut |level| {
            for s in level
                .definitions()
                .map(|d| d.subscriptions.as_slice())
                .unwrap_or(&[])
            {
                let mut definition = json!(s);
                // V1: the Thing whose events it receives, as far as the reader may see it.
                if !s.source.is_empty()
                    && !crate::api::authz::sees(m, caller.subject, Kind::Thing, &s.source)
                {
                    definition["source"] = json!("(a Thing you cannot see)");
                }
                subscriptions
                    .push(json!({"definition": definition, "source": level.key().to_string()}));
            }
        });
        v["subscriptions"] = json!(subscriptions);
        v["propertyDefinitions"] = json!(props);
        v["serviceDefinitions"] = json!(services);
        v["eventDefinitions"] = json!(events);
    } else if let Some(defs) = e.definitions() {
        v["definitions"] = json!(defs);
    }
    v
}

/// Properties whose value is part of the Thing's design: a write of one needs `Update` on the
/// Thing besides `PropertyWrite` on the property (C7: where its tunnels may reach, and whether
/// they may at all).
const DESIGN_PROPERTIES: &[&str] = &[
    crate::api::tunnels::ALLOWED_ENDPOINTS,
    crate::api::tunnels::TUNNELS_ENABLED,
];

/// The check a write of a design property needs beyond its `PropertyWrite` (every write path
/// calls it: REST, scripts, extensions, devices' pushes).
pub(crate) fn require_design_write(
    m: &Model,
    caller: &Caller,
    kind: Kind,
    name: &str,
    prop: &str,
) -> Result<(), ApiError> {
    if !DESIGN_PROPERTIES.contains(&prop) {
        return Ok(());
    }
    let Some(id) = m.access().id(kind, name) else {
        return Err(crate::api::authz::not_found(kind, name));
    };
    require(
        m,
        caller,
        Permission::Update,
        Target::Entity { id, resource: None },
        format_args!(
            "{}/{name} (property {prop} is part of its design)",
            kind.collection()
        ),
    )
    .map(|_| ())
}

/// The property that names who a timer or scheduler fires as.
pub(crate) const RUN_AS_USER: &str = "runAsUser";

/// May `caller` make code run as the user `value` names (a timer's or scheduler's `runAsUser`)?
/// Only as itself, unless an administrator; an empty name (nobody: it does not fire) is anyone's.
pub(crate) fn may_name_run_as(m: &Model, caller: &Caller, value: &Json) -> Result<(), ApiError> {
    let named = value.as_str().unwrap_or_default();
    if named.is_empty() || *named == *caller.name || crate::api::authz::is_admin(m, caller.subject)
    {
        return Ok(());
    }
    let mut e = crate::api::forbidden(
        caller,
        &format!("name another user ({named}) as runAsUser"),
        format!("Users/{named}"),
        Permission::Update,
    );
    e.message = "only an administrator may name another user as runAsUser (code of a timer or scheduler runs with its rights); name yourself, or ask an administrator".to_string();
    Err(e)
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
        if [
            thinghost_core::predefined::SCHEDULER,
            thinghost_core::predefined::TIMER,
            crate::state::repository::TEMPLATE,
        ]
        .contains(&t)
        {
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
) -> Result<(thinghost_core::PropertyDef, Json), ApiError> {
    let (e, id) = visible_entity(m, caller, kind, name)?;
    let resource = m.access().sym(prop);
    let path = format!("{}/{name}/Properties/{prop}", kind.collection());
    require(
        m,
        caller,
        permission,
        Target::Entity { id, resource },
        &path,
    )?;
    property(m, e, prop)
}

/// Why a Thing answers no service call and no property write: it is parked, disabled until the
/// extension its template came from is installed again (`Parked`).
pub(crate) fn disabled(e: &Entity) -> Option<ApiError> {
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
