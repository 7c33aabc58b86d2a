//! What a device connected over AlwaysOn may do, decided here like any request (DOMAIN
//! section 10): binding Remote Things (C2). The adapter (`http/edge.rs`) speaks the protocol.

use crate::api::ApiError;
use crate::api::authz::{require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::edge::BindRefused;
use axum::http::StatusCode;
use serde_json::json;
use thinghost_core::access::Target;
use thinghost_core::{Body, Kind, Permission, View};

/// The template every Remote Thing's chain holds (shipped by the connection-services extension).
pub const REMOTE_THING: &str = "RemoteThing";
/// The service whose ServiceInvoke a device needs to bind a Thing (and to push its values).
pub const UPDATE_VALUES: &str = "UpdateSubscribedPropertyValues";

/// Binds `thing` to connection `conn` for `caller` (C2): a Thing the caller cannot see answers
/// as a missing one; it must be a Remote Thing; the caller needs ServiceInvoke on its
/// `UpdateSubscribedPropertyValues` (a denial is audited); one connection at a time. Whether
/// the bind is new.
pub fn bind(
    app: &App,
    caller: &Caller,
    conn: u64,
    thing: &str,
    gateway: Option<&str>,
) -> Result<bool, ApiError> {
    {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let (e, id) = visible_entity(m, caller, Kind::Thing, thing)?;
        let Body::Thing(t) = &e.body else {
            unreachable!("a Thing")
        };
        let remote = thinghost_core::validate::template_chain(m, &t.thing_template)
            .is_ok_and(|chain| chain.iter().any(|t| t.name == REMOTE_THING));
        if !remote {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Thing {thing} is not a Remote Thing: only a Thing whose template is based on {REMOTE_THING} can be bound (install connection-services and base its template on {REMOTE_THING})"
                ),
            ));
        }
        may_update(app, m, caller, id, thing)?;
    }
    match app.edge.bind(conn, thing, gateway) {
        Ok(new) => Ok(new),
        // Whose connection is not said: that user may be one the caller cannot see (V1). The
        // audit of the refusal names this connection; the other's is in its own entries.
        Err(BindRefused::Elsewhere { .. }) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Thing {thing} is bound to another connection: a Thing is bound to one connection at a time; unbind it there first"
            ),
        )),
        Err(BindRefused::Closed) => {
            Err(ApiError::new(StatusCode::GONE, "the connection is closed"))
        }
    }
}

/// Does `caller` hold `ServiceInvoke` on the Thing's `UpdateSubscribedPropertyValues`, what
/// binding it and pushing to it need? A denial is audited.
fn may_update(
    app: &App,
    m: &thinghost_core::Model,
    caller: &Caller,
    id: thinghost_core::access::EntityId,
    thing: &str,
) -> Result<(), ApiError> {
    require(
        m,
        caller,
        Permission::ServiceInvoke,
        Target::Entity {
            id,
            resource: m.access().sym(UPDATE_VALUES),
        },
        format_args!("Things/{thing}/Services/{UPDATE_VALUES}"),
    )
    .map(|_| ())
    .inspect_err(|e| e.audit_denial(app, &caller.name, json!({"via": "AlwaysOn"})))
}

/// The connection properties of the `ConnectableThing` shape (connection-services).
pub const IS_CONNECTED: &str = "isConnected";
pub const LAST_CONNECTION: &str = "lastConnection";

/// C3: the platform's record of Things' connection. `isConnected` becomes `connected`, and
/// when they connect `lastConnection` becomes now, all in one change, for the Things that have
/// the properties (their template implements `ConnectableThing`); their changes fire
/// `DataChange` as `caller` (the connection's user, whose subscriptions' rights they run with).
/// Written without a `PropertyWrite` check: this is the platform's state of its own
/// connection, not the device's data. A Thing deleted meanwhile is left alone.
pub fn set_connected(app: &App, caller: &Caller, things: &[&str], connected: bool) {
    if things.is_empty() {
        return;
    }
    crate::api::events::room(app, caller, things.iter().copied());
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    let now = crate::now_ms();
    // (Thing, property, old value, new value, fires)
    type Write = (
        String,
        String,
        Option<serde_json::Value>,
        serde_json::Value,
        bool,
    );
    let mut writes: Vec<Write> = Vec::new();
    {
        let m = db.model();
        for thing in things {
            let Some(e) = m.get(Kind::Thing, thing) else {
                continue;
            };
            let Body::Thing(t) = &e.body else {
                continue;
            };
            let mut wanted = vec![(IS_CONNECTED, json!(connected))];
            if connected {
                wanted.push((LAST_CONNECTION, json!(now)));
            }
            for (prop, value) in wanted {
                let Some((def, _)) = thinghost_core::validate::find_property(m, e, prop) else {
                    continue;
                };
                let Ok(value) = def.base_type.normalize(&value) else {
                    continue;
                };
                let old = t
                    .values
                    .get(prop)
                    .cloned()
                    .or_else(|| def.default_value.clone());
                let fires = def.data_change_type.fires(old.as_ref(), &value);
                writes.push((thing.to_string(), prop.to_string(), old, value, fires));
            }
        }
    }
    if writes.is_empty() {
        return;
    }
    let stored = db.change_values(
        |tx| {
            for (thing, prop, _, value, _) in &writes {
                if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, thing)?.body {
                    t.values.insert(prop.clone(), value.clone());
                }
            }
            Ok(())
        },
        &[],
    );
    if let Err(e) = stored {
        tracing::warn!(things = ?things, error = ?e, "the connection state of Things was not stored");
        return;
    }
    for (thing, prop, old, new, fires) in writes {
        if !fires {
            continue;
        }
        if let Some(f) =
            crate::api::events::data_change(app, &db, caller, &thing, &prop, old.as_ref(), &new)
        {
            crate::api::events::send(app, f);
        }
    }
}

/// One value a device pushes: a property's name, its value, when it was measured and its
/// quality (the vendor's NamedVTQ).
#[derive(Clone, Debug, PartialEq)]
pub struct Vtq {
    pub name: String,
    pub value: serde_json::Value,
    /// Milliseconds since the epoch; `None`: now.
    pub time: Option<i64>,
    pub quality: String,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pushed {
    /// Values written.
    pub written: usize,
    /// Values older than the stored ones, left out.
    pub stale: usize,
}

/// C4: a device's `UpdateSubscribedPropertyValues` on `thing`, bound to connection `conn`, for
/// `caller`: every value is a property write of the caller (`PropertyWrite` on that property,
/// its base type checked), and the push is one change: one refused value refuses the whole push
/// and nothing is written. A value older than the stored one does not replace it. The push
/// needs `ServiceInvoke` on the service itself; every denial is audited. Writes fire
/// `DataChange` as the caller.
pub fn push(
    app: &App,
    caller: &Caller,
    conn: u64,
    thing: &str,
    values: Vec<Vtq>,
) -> Result<Pushed, ApiError> {
    crate::api::events::room(app, caller, [thing]);
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    let now = crate::now_ms();
    // (property, old value, new value, time, fires)
    let mut writes: Vec<(
        String,
        Option<serde_json::Value>,
        serde_json::Value,
        i64,
        bool,
    )> = Vec::new();
    let mut pushed = Pushed::default();
    {
        let m = db.model();
        let (e, id) = visible_entity(m, caller, Kind::Thing, thing)?;
        if let Some(refusal) = crate::api::entities::disabled(e) {
            return Err(refusal);
        }
        let denied = |e: ApiError| {
            e.audit_denial(app, &caller.name, json!({"via": "AlwaysOn"}));
            e
        };
        may_update(app, m, caller, id, thing)?;
        if app.edge.bound_to(thing) != Some(conn) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("Thing {thing} is not bound to this connection: BIND it first"),
            ));
        }
        let Body::Thing(t) = &e.body else {
            unreachable!("a Thing")
        };
        for v in values {
            let Some((def, _)) = thinghost_core::validate::find_property(m, e, &v.name) else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "Thing {thing} has no property {:?}; nothing was written",
                        v.name
                    ),
                ));
            };
            require(
                m,
                caller,
                Permission::PropertyWrite,
                Target::Entity {
                    id,
                    resource: m.access().sym(&v.name),
                },
                format_args!("Things/{thing}/Properties/{}", v.name),
            )
            .map_err(|e| {
                let mut e = denied(e);
                e.message.push_str("; nothing was written");
                e
            })?;
            if def.read_only {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("property {} is read-only; nothing was written", v.name),
                ));
            }
            let value = def.base_type.normalize(&v.value).map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("property {}: {err}; nothing was written", v.name),
                )
            })?;
            let time = v.time.unwrap_or(now);
            // The latest time so far: stored, or earlier in this push.
            let latest = writes
                .iter()
                .rev()
                .find(|w| w.0 == v.name)
                .map(|w| w.3)
                .or_else(|| t.value_times.get(&v.name).copied());
            if latest.is_some_and(|l| time < l) {
                pushed.stale += 1;
                continue;
            }
            let old = writes
                .iter()
                .rev()
                .find(|w| w.0 == v.name)
                .map(|w| Some(w.2.clone()))
                .unwrap_or_else(|| {
                    t.values
                        .get(&v.name)
                        .cloned()
                        .or_else(|| def.default_value.clone())
                });
            let fires = def.data_change_type.fires(old.as_ref(), &value);
            writes.push((v.name, old, value, time, fires));
        }
    }
    if writes.is_empty() {
        return Ok(pushed);
    }
    db.change_values(
        |tx| {
            if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, thing)?.body {
                for (prop, _, value, time, _) in &writes {
                    t.values.insert(prop.clone(), value.clone());
                    t.value_times.insert(prop.clone(), *time);
                }
            }
            Ok(())
        },
        &[],
    )
    .map_err(crate::api::change_error)?;
    pushed.written = writes.len();
    for (prop, old, new, _, fires) in writes {
        if !fires {
            continue;
        }
        if let Some(f) =
            crate::api::events::data_change(app, &db, caller, thing, &prop, old.as_ref(), &new)
        {
            crate::api::events::send(app, f);
        }
    }
    Ok(pushed)
}
