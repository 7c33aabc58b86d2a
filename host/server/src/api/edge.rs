//! What a device connected over AlwaysOn may do, decided here like any request (DOMAIN
//! section 10): binding Remote Things (C2), pushing values (C4); and what the platform asks of
//! a device: the Remote Things' bindings and the requests forwarded to the device (C5). The
//! adapter (`http/edge.rs`) speaks the protocol.

pub mod convert;

use crate::api::authz::{require, visible_entity};
use crate::api::{ApiError, Call, Reply};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::edge::{BindRefused, Unanswered};
use axum::http::StatusCode;
use serde_json::json;
use std::time::Duration;
use thinghost_alwayson::message::Request;
use thinghost_alwayson::{Code, codes};
use thinghost_core::access::Target;
use thinghost_core::infotable::InfoTable;
use thinghost_core::{BaseType, Body, Kind, Permission, RemoteProperty, RemoteService, View};

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
    let mut logged = Vec::new();
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
                logged.extend(crate::api::history::logged(
                    m, thing, def, &value, now, None,
                ));
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
    let pending = crate::api::history::append(app, logged);
    drop(db);
    if let Err(e) = pending.wait() {
        tracing::warn!(things = ?things, error = %e, "the connection state of Things was not recorded in their value streams");
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

/// One device's `UpdateSubscribedPropertyValues`: who, on which connection, to which Thing.
#[derive(Clone, Debug)]
pub struct Push {
    pub caller: Caller,
    pub conn: u64,
    pub thing: String,
    pub values: Vec<Vtq>,
}

/// One property write a push plans.
struct Write {
    /// The push it belongs to (its caller fires the DataChange).
    push: usize,
    prop: String,
    old: Option<serde_json::Value>,
    new: serde_json::Value,
    time: i64,
    fires: bool,
    /// What it appends to the Thing's value stream.
    logged: Option<thinghost_store::history::Logged>,
}

/// C4: one push (see [`push_all`]).
pub fn push(
    app: &App,
    caller: &Caller,
    conn: u64,
    thing: &str,
    values: Vec<Vtq>,
) -> Result<Pushed, ApiError> {
    push_all(
        app,
        vec![Push {
            caller: caller.clone(),
            conn,
            thing: thing.to_string(),
            values,
        }],
    )
    .pop()
    .expect("one answer per push")
}

/// C4: devices' `UpdateSubscribedPropertyValues`, each on a Thing bound to its connection, as
/// its caller: every value is a property write of the caller (`PropertyWrite` on that property,
/// its base type checked), and each push is all or nothing: one refused value refuses that
/// push, and nothing of it is written. A value older than the stored one (or than one earlier
/// in the batch) does not replace it. A push needs `ServiceInvoke` on the service itself; every
/// denial is audited. The pushes that pass are written in one durable change (a group commit:
/// one disk write for many devices), in order; the writes fire `DataChange` as their callers.
/// One answer per push, in order.
pub fn push_all(app: &App, pushes: Vec<Push>) -> Vec<Result<Pushed, ApiError>> {
    for p in &pushes {
        crate::api::events::room(app, &p.caller, [p.thing.as_str()]);
    }
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    let now = crate::now_ms();
    let mut writes: Vec<Write> = Vec::new();
    // (Thing, property) -> its latest write in this batch.
    let mut latest: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    let mut answers: Vec<Result<Pushed, ApiError>> = Vec::with_capacity(pushes.len());
    {
        let m = db.model();
        for (i, p) in pushes.iter().enumerate() {
            let planned = plan(app, m, p, i, now, &writes, &latest);
            answers.push(planned.map(|(planned, pushed)| {
                for w in planned {
                    latest.insert((p.thing.clone(), w.prop.clone()), writes.len());
                    writes.push(w);
                }
                pushed
            }));
        }
    }
    if writes.is_empty() {
        return answers;
    }
    let stored = db.change_values(
        |tx| {
            for w in &writes {
                if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, &pushes[w.push].thing)?.body {
                    t.values.insert(w.prop.clone(), w.new.clone());
                    t.value_times.insert(w.prop.clone(), w.time);
                }
            }
            Ok(())
        },
        &[],
    );
    if let Err(e) = stored {
        let e = crate::api::change_error(e);
        for a in answers.iter_mut().filter(|a| a.is_ok()) {
            *a = Err(ApiError::new(e.status, e.message.clone()));
        }
        return answers;
    }
    let mut logged = Vec::new();
    for w in writes {
        logged.extend(w.logged);
        if !w.fires {
            continue;
        }
        let p = &pushes[w.push];
        if let Some(f) = crate::api::events::data_change(
            app,
            &db,
            &p.caller,
            &p.thing,
            &w.prop,
            w.old.as_ref(),
            &w.new,
        ) {
            crate::api::events::send(app, f);
        }
    }
    // The pushes are answered once their values are in their value streams too.
    let pending = crate::api::history::append(app, logged);
    drop(db);
    if let Err(e) = crate::api::history::settle(pending) {
        for a in answers.iter_mut().filter(|a| a.is_ok()) {
            *a = Err(ApiError::new(e.status, e.message.clone()));
        }
    }
    answers
}

/// The writes of push `p` (number `i` of its batch), checked, given the writes planned before
/// it; or why it is refused.
fn plan(
    app: &App,
    m: &thinghost_core::Model,
    p: &Push,
    i: usize,
    now: i64,
    writes: &[Write],
    latest: &std::collections::HashMap<(String, String), usize>,
) -> Result<(Vec<Write>, Pushed), ApiError> {
    let (caller, thing) = (&p.caller, p.thing.as_str());
    let mut pushed = Pushed::default();
    let mut planned: Vec<Write> = Vec::new();
    let (e, id) = visible_entity(m, caller, Kind::Thing, thing)?;
    if let Some(refusal) = crate::api::entities::disabled(e) {
        return Err(refusal);
    }
    let denied = |e: ApiError| {
        e.audit_denial(app, &caller.name, json!({"via": "AlwaysOn"}));
        e
    };
    may_update(app, m, caller, id, thing)?;
    if app.edge.bound_to(thing) != Some(p.conn) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("Thing {thing} is not bound to this connection: BIND it first"),
        ));
    }
    let Body::Thing(t) = &e.body else {
        unreachable!("a Thing")
    };
    // A device names a bound property by its own name (the binding's sourceName).
    let by_source: std::collections::HashMap<&str, &str> = t
        .remote
        .properties
        .iter()
        .map(|(p, b)| (b.source_name.as_str(), p.as_str()))
        .collect();
    for v in &p.values {
        let name = by_source.get(v.name.as_str()).copied().unwrap_or(&v.name);
        let Some((def, _)) = thinghost_core::validate::find_property(m, e, name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Thing {thing} has no property {name:?}; nothing was written"),
            ));
        };
        require(
            m,
            caller,
            Permission::PropertyWrite,
            Target::Entity {
                id,
                resource: m.access().sym(name),
            },
            format_args!("Things/{thing}/Properties/{name}"),
        )
        .and_then(|_| {
            crate::api::entities::require_design_write(m, caller, Kind::Thing, thing, name)
        })
        .map_err(|e| {
            let mut e = denied(e);
            e.message.push_str("; nothing was written");
            e
        })?;
        if def.read_only {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("property {name} is read-only; nothing was written"),
            ));
        }
        let value = def.base_type.normalize(&v.value).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("property {name}: {err}; nothing was written"),
            )
        })?;
        let time = v.time.unwrap_or(now);
        // The latest write so far: earlier in this push, earlier in the batch, or stored.
        let before = planned.iter().rev().find(|w| w.prop == name).or_else(|| {
            latest
                .get(&(thing.to_string(), name.to_string()))
                .map(|&j| &writes[j])
        });
        let latest_time = before
            .map(|w| w.time)
            .or_else(|| t.value_times.get(name).copied());
        if latest_time.is_some_and(|l| time < l) {
            pushed.stale += 1;
            continue;
        }
        let old = match before {
            Some(w) => Some(w.new.clone()),
            None => t
                .values
                .get(name)
                .cloned()
                .or_else(|| def.default_value.clone()),
        };
        let fires = def.data_change_type.fires(old.as_ref(), &value);
        // Its value stream's entry, with the device's own time and quality (H2).
        let logged =
            crate::api::history::logged(m, thing, def, &value, time, Some(v.quality.as_str()));
        planned.push(Write {
            push: i,
            prop: name.to_string(),
            old,
            new: value,
            time,
            fires,
            logged,
        });
    }
    pushed.written = planned.len();
    Ok((planned, pushed))
}

// ---- C5: the platform asks the device ----

/// The answer of a request a device could not answer: 503 (not connected, busy, gone) or 504
/// (no answer in time), naming the Thing.
fn unanswered(thing: &str, what: &str, e: Unanswered, timeout: Duration) -> ApiError {
    match e {
        Unanswered::NotBound => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Thing {thing} is not connected: {what} is the device's, and no device has bound the Thing; try again once it is connected (isConnected)"
            ),
        ),
        Unanswered::Busy => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the device of Thing {thing} has too many requests waiting for it; try again later"
            ),
        ),
        Unanswered::Gone => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the device of Thing {thing} disconnected before it answered {what}"),
        ),
        Unanswered::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the device of Thing {thing} did not answer {what} within {} ms (the binding's timeout)",
                timeout.as_millis()
            ),
        ),
        Unanswered::Loop => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} of Thing {thing} is bound to the device that asks for it: a device's own request is not sent back to it"
            ),
        ),
    }
}

/// The binding's timeout, or the server's.
fn timeout_of(app: &App, ms: u64) -> Duration {
    if ms == 0 {
        app.edge.limits.device_timeout
    } else {
        Duration::from_millis(ms)
    }
}

/// Sends a request about `thing` to its device and waits for the answer (C5); an answer that is
/// not SUCCESS becomes the API's error of the same meaning, with the device's reason.
fn ask(
    app: &App,
    thing: &str,
    what: &str,
    code: Code,
    request: Request,
    timeout: Duration,
) -> Result<Option<thinghost_alwayson::Table>, ApiError> {
    let answer = app
        .edge
        .forward(thing, code, request, timeout)
        .map_err(|e| unanswered(thing, what, e, timeout))?;
    if answer.code == Code::SUCCESS {
        return Ok(answer.content);
    }
    // The device's refusal, as the same kind of answer; but a device that says "unauthorized"
    // or "forbidden" refused the platform, not the caller: 502, not 401 or 403.
    let status = answer
        .code
        .http_status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .filter(|s| *s != StatusCode::UNAUTHORIZED && *s != StatusCode::FORBIDDEN)
        .unwrap_or(StatusCode::BAD_GATEWAY);
    Err(ApiError::new(
        status,
        format!(
            "the device of Thing {thing} refused {what}: {}{}",
            answer.code,
            answer
                .reason
                .map(|r| format!(" ({})", crate::state::auth::bounded(&r, 512)))
                .unwrap_or_default()
        ),
    ))
}

fn request(
    characteristic: u8,
    thing: &str,
    name: &str,
    params: Option<thinghost_alwayson::Table>,
) -> Request {
    Request {
        entity_type: codes::THING,
        entity_name: thing.to_string(),
        characteristic,
        name: name.to_string(),
        headers: Vec::new(),
        params,
    }
}

/// The binding of property `prop` of `e`, if it is a bound Thing's.
pub fn property_binding(e: &thinghost_core::Entity, prop: &str) -> Option<RemoteProperty> {
    match &e.body {
        Body::Thing(t) => t.remote.properties.get(prop).cloned(),
        _ => None,
    }
}

/// The binding of service `service` of `e`, if it is a bound Thing's.
pub fn service_binding(e: &thinghost_core::Entity, service: &str) -> Option<RemoteService> {
    match &e.body {
        Body::Thing(t) => t.remote.services.get(service).cloned(),
        _ => None,
    }
}

/// Reads property `prop` (of type `bt`) of `thing` on its device: a GET under the device-side
/// name, once the caller's PropertyRead was checked (C5).
pub fn read_remote(
    app: &App,
    thing: &str,
    prop: &str,
    bt: BaseType,
    binding: &RemoteProperty,
) -> Result<Reply, ApiError> {
    let what = format!("the read of property {prop}");
    let timeout = timeout_of(app, binding.timeout_ms);
    let content = ask(
        app,
        thing,
        &what,
        Code::GET,
        request(codes::PROPERTIES, thing, &binding.source_name, None),
        timeout,
    )?;
    convert::answer_reply(content.as_ref(), prop, &binding.source_name, bt).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Thing {thing}, property {prop}: {e}"),
        )
    })
}

/// Writes `value` (of type `bt`, checked) to property `prop` of `thing` on its device: a PUT of
/// a one-field InfoTable under the device-side name, once the caller's PropertyWrite was
/// checked (C5). The stored value changes when the device pushes it.
pub fn write_remote(
    app: &App,
    thing: &str,
    prop: &str,
    bt: BaseType,
    value: &serde_json::Value,
    binding: &RemoteProperty,
) -> Result<Reply, ApiError> {
    let what = format!("the write of property {prop}");
    let timeout = timeout_of(app, binding.timeout_ms);
    let mut table = thinghost_alwayson::Table::single(
        binding.source_name.clone(),
        convert::from_json(bt, value),
    );
    table.fields[0].base_type = convert::wire_type(bt);
    ask(
        app,
        thing,
        &what,
        Code::PUT,
        request(codes::PROPERTIES, thing, &binding.source_name, Some(table)),
        timeout,
    )?;
    Ok(Reply::Empty)
}

/// Calls service `service` of `thing` on its device: a POST under the device-side name with one
/// field per parameter (`params`: name, type and checked value, in the definition's order),
/// once the caller's ServiceInvoke was checked (C5). Its result (of type `result`) is the
/// device's.
pub fn call_remote(
    app: &App,
    thing: &str,
    service: &str,
    params: &[(String, BaseType, serde_json::Value)],
    result: BaseType,
    binding: &RemoteService,
) -> Result<Reply, ApiError> {
    let what = format!("the call of service {service}");
    let timeout = timeout_of(app, binding.timeout_ms);
    let table = thinghost_alwayson::Table {
        fields: params
            .iter()
            .map(|(n, bt, _)| thinghost_alwayson::Field::new(n.clone(), convert::wire_type(*bt)))
            .collect(),
        rows: vec![
            params
                .iter()
                .map(|(_, bt, v)| convert::from_json(*bt, v))
                .collect(),
        ],
    };
    let content = ask(
        app,
        thing,
        &what,
        Code::POST,
        request(codes::SERVICES, thing, &binding.source_name, Some(table)),
        timeout,
    )?;
    convert::answer_reply(content.as_ref(), "result", "result", result).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Thing {thing}, service {service}: {e}"),
        )
    })
}

/// The device is told its Thing's property bindings changed (the SDKs then ask
/// `GetPropertySubscriptions` again); nothing when no device has bound it.
fn notify_bindings(app: &App, thing: &str) {
    app.edge.notify(
        thing,
        Code::POST,
        request(codes::SERVICES, thing, NOTIFY_PROPERTY_UPDATE, None),
    );
}

/// The device-side service the SDKs implement to hear that bindings changed.
pub const NOTIFY_PROPERTY_UPDATE: &str = "NotifyPropertyUpdate";
/// How a bound property is pushed.
pub const PUSH_TYPES: &[&str] = &["VALUE", "ALWAYS", "NEVER", "DEADBAND", "ON", "OFF"];

/// The largest binding timeout, in milliseconds (five minutes: a caller holds a thread while
/// it waits).
const MAX_TIMEOUT_MS: i64 = 300_000;

fn timeout_param(call: &Call<'_>) -> Result<u64, ApiError> {
    match call
        .params
        .get("timeout")
        .and_then(serde_json::Value::as_i64)
    {
        None => Ok(0),
        Some(ms) if (0..=MAX_TIMEOUT_MS).contains(&ms) => Ok(ms as u64),
        Some(ms) => Err(crate::api::bad(format!(
            "timeout is in milliseconds, from 0 (the server's, {} s) to {MAX_TIMEOUT_MS}; not {ms}",
            call.app.edge.limits.device_timeout.as_secs()
        ))),
    }
}

/// `SetRemotePropertyBinding(propertyName, sourceName, pushType, pushThreshold, timeout)`.
pub fn set_property_binding(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let prop = call.str("propertyName");
    let source = call.opt_str("sourceName").unwrap_or_else(|| prop.clone());
    thinghost_core::names::check_member_name(&source)
        .map_err(|e| crate::api::bad(format!("sourceName {source:?}: {e}")))?;
    let push_type = call
        .opt_str("pushType")
        .unwrap_or_else(|| "VALUE".into())
        .to_ascii_uppercase();
    if !PUSH_TYPES.contains(&push_type.as_str()) {
        return Err(crate::api::bad(format!(
            "pushType {push_type:?} is not one of {}",
            PUSH_TYPES.join(", ")
        )));
    }
    let push_threshold = call
        .params
        .get("pushThreshold")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    if !push_threshold.is_finite() || push_threshold < 0.0 {
        return Err(crate::api::bad("pushThreshold is a number of 0 or more"));
    }
    let timeout_ms = timeout_param(call)?;
    {
        let m = call.model();
        let e = m.get(Kind::Thing, &call.entity).expect("checked visible");
        if thinghost_core::validate::find_property(m, e, &prop).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Thing {} has no property {prop:?} to bind", call.entity),
            ));
        }
        // A device's pushes name properties by their device-side names: each must mean one
        // property (another property's own name, or another binding's, would be two).
        if let Body::Thing(t) = &e.body {
            let taken = t
                .remote
                .properties
                .iter()
                .find(|(p, b)| **p != prop && b.source_name == source);
            let other_property =
                source != prop && thinghost_core::validate::find_property(m, e, &source).is_some();
            if let Some((other, _)) = taken {
                return Err(crate::api::bad(format!(
                    "sourceName {source:?} is already the device's name of property {other}: a device-side name means one property"
                )));
            }
            if other_property {
                return Err(crate::api::bad(format!(
                    "sourceName {source:?} is the name of another property of Thing {}: the device's pushes of it would be ambiguous; choose another",
                    call.entity
                )));
            }
        }
    }
    let binding = RemoteProperty {
        source_name: source,
        push_type,
        push_threshold,
        timeout_ms,
    };
    let r = crate::api::definitions::change_own(call, move |e| {
        if let Body::Thing(t) = &mut e.body {
            t.remote.properties.insert(prop, binding);
        }
        Ok(())
    })?;
    notify_bindings(call.app, &call.entity);
    Ok(r)
}

/// `RemoveRemotePropertyBinding(propertyName)`.
pub fn remove_property_binding(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let prop = call.str("propertyName");
    let r = crate::api::definitions::change_own(call, move |e| match &mut e.body {
        Body::Thing(t) => match t.remote.properties.remove(&prop) {
            Some(_) => Ok(()),
            None => Err(format!("has no remote binding of property {prop:?}")),
        },
        _ => Err(format!("has no remote binding of property {prop:?}")),
    })?;
    notify_bindings(call.app, &call.entity);
    Ok(r)
}

/// `SetRemoteServiceBinding(serviceName, sourceServiceName, timeout)`.
pub fn set_service_binding(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let service = call.str("serviceName");
    let source = call
        .opt_str("sourceServiceName")
        .unwrap_or_else(|| service.clone());
    thinghost_core::names::check_member_name(&source)
        .map_err(|e| crate::api::bad(format!("sourceServiceName {source:?}: {e}")))?;
    let timeout_ms = timeout_param(call)?;
    {
        let m = call.model();
        let e = m.get(Kind::Thing, &call.entity).expect("checked visible");
        let defined = thinghost_core::validate::merged_definitions(m, e)
            .is_ok_and(|d| d.services.contains_key(&service));
        if !defined {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "Thing {} has no service {service:?} to bind: define it first (AddServiceDefinition), with its parameters and result",
                    call.entity
                ),
            ));
        }
    }
    let binding = RemoteService {
        source_name: source,
        timeout_ms,
    };
    crate::api::definitions::change_own(call, move |e| {
        if let Body::Thing(t) = &mut e.body {
            t.remote.services.insert(service, binding);
        }
        Ok(())
    })
}

/// `RemoveRemoteServiceBinding(serviceName)`.
pub fn remove_service_binding(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let service = call.str("serviceName");
    crate::api::definitions::change_own(call, move |e| match &mut e.body {
        Body::Thing(t) => match t.remote.services.remove(&service) {
            Some(_) => Ok(()),
            None => Err(format!("has no remote binding of service {service:?}")),
        },
        _ => Err(format!("has no remote binding of service {service:?}")),
    })
}

/// `GetRemoteBindings()`: the Thing's property and service bindings, as JSON.
pub fn get_bindings(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    let e = m.get(Kind::Thing, &call.entity).expect("checked visible");
    let remote = match &e.body {
        Body::Thing(t) => json!(t.remote),
        _ => json!({}),
    };
    Ok(crate::api::result(BaseType::Json, remote))
}

/// `GetPropertySubscriptions()`: what the device should push, as the SDKs read it: one row per
/// bound property (`name`, `edgeName`, `pushType`, `pushThreshold`).
pub fn property_subscriptions(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    let e = m.get(Kind::Thing, &call.entity).expect("checked visible");
    let mut table = InfoTable {
        fields: [
            ("name", BaseType::String),
            ("edgeName", BaseType::String),
            ("pushType", BaseType::String),
            ("pushThreshold", BaseType::Number),
        ]
        .into_iter()
        .map(|(n, bt)| thinghost_core::infotable::Field {
            name: n.into(),
            base_type: bt,
        })
        .collect(),
        rows: Vec::new(),
    };
    if let Body::Thing(t) = &e.body {
        for (name, b) in &t.remote.properties {
            let mut row = serde_json::Map::new();
            row.insert("name".into(), json!(name));
            row.insert("edgeName".into(), json!(b.source_name));
            row.insert("pushType".into(), json!(b.push_type));
            row.insert("pushThreshold".into(), json!(b.push_threshold));
            table.rows.push(row);
        }
    }
    Ok(Reply::Table(table))
}

/// `ProcessRemoteEvents(events)`: events a device fired, each `eventName` with its `eventData`
/// (an InfoTable of one row, or a JSON object); each needs EventInvoke, as a POST to the event.
/// All are checked before any fires: one refused fires none.
pub fn process_remote_events(
    app: &std::sync::Arc<App>,
    caller: &Caller,
    r: crate::api::Request,
) -> Result<Reply, ApiError> {
    let events = InfoTable::from_json(r.params.get("events").unwrap_or(&serde_json::Value::Null))
        .map_err(|e| crate::api::bad(format!("events: {e}")))?;
    if events.rows.len() > MAX_EVENTS {
        return Err(crate::api::bad(format!(
            "events: at most {MAX_EVENTS} in one call, not {}",
            events.rows.len()
        )));
    }
    let mut firings = Vec::with_capacity(events.rows.len());
    for (i, row) in events.rows.iter().enumerate() {
        let Some(name) = row.get("eventName").and_then(serde_json::Value::as_str) else {
            return Err(crate::api::bad(format!(
                "events, row {i}: eventName is missing; nothing was fired"
            )));
        };
        let data = row
            .get("eventData")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        firings.push((name.to_string(), data));
    }
    // Checked first (visibility, EventInvoke, the data's shape), then fired.
    for (name, data) in &firings {
        crate::api::events::check_fire(app, caller, &r.entity, name, data).map_err(|mut e| {
            e.message.push_str("; nothing was fired");
            e
        })?;
    }
    for (name, data) in &firings {
        crate::api::events::fire(app, caller, Kind::Thing, &r.entity, name, data)?;
    }
    Ok(crate::api::result(BaseType::Integer, json!(firings.len())))
}

/// The most events one `ProcessRemoteEvents` carries.
const MAX_EVENTS: usize = 1000;

/// `GetConnections()` of `Subsystems/WSCommunicationsSubsystem`: the AlwaysOn connections of
/// this server (their Things: those the caller can see), each with its user, address, since,
/// frames in and out.
pub fn connections(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let m = call.model();
    let mut table = InfoTable {
        fields: [
            ("connection", BaseType::Long),
            ("user", BaseType::String),
            ("address", BaseType::String),
            ("since", BaseType::Datetime),
            ("things", BaseType::Json),
            ("gateway", BaseType::String),
            ("framesIn", BaseType::Long),
            ("framesOut", BaseType::Long),
        ]
        .into_iter()
        .map(|(n, bt)| thinghost_core::infotable::Field {
            name: n.into(),
            base_type: bt,
        })
        .collect(),
        rows: Vec::new(),
    };
    for (id, c) in call.app.edge.connections() {
        let things: Vec<&String> = c
            .things
            .iter()
            .filter(|t| visible_entity(m, call.caller, Kind::Thing, t).is_ok())
            .collect();
        let mut row = serde_json::Map::new();
        row.insert("connection".into(), json!(id));
        row.insert("user".into(), json!(c.user));
        row.insert("address".into(), json!(c.address.to_string()));
        row.insert("since".into(), json!(c.since));
        row.insert("things".into(), json!(things));
        row.insert("gateway".into(), json!(c.gateway));
        row.insert(
            "framesIn".into(),
            json!(
                c.traffic
                    .frames_in
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        );
        row.insert(
            "framesOut".into(),
            json!(
                c.traffic
                    .frames_out
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        );
        table.rows.push(row);
    }
    Ok(Reply::Table(table))
}
