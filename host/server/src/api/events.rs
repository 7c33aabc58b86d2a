//! Events and subscriptions (DOMAIN B5, B6, B8): firing an event (its `EventInvoke` checked and
//! its data checked against its DataShape), the `DataChange` of a property write, and the
//! delivery of each firing to every enabled subscription, after the firing change is durable,
//! on `state::events`' queue, in the security context of the firer.
//!
//! Who subscribes to a firing of event E by Thing S:
//! - the subscriptions with no source (`me`) of S and along its chain (its shapes, its templates
//!   and theirs), for E; each runs with `me` = S;
//! - the subscriptions naming S as their source, wherever they are defined: on a Thing they run
//!   with `me` = that Thing; on a template or shape, once for each Thing that has it.

use crate::api::host_calls::{self, Implemented};
use crate::api::{ApiError, Reply, bad, not_found, require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::events::{Firing, MAX_CHAIN};
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use std::sync::{Arc, Weak};
use thinghost_core::validate::{merged_definitions, template_chain};
use thinghost_core::{
    BaseType, Body, DATA_CHANGE, Entity, Kind, Model, Permission, SubscriptionDef, Target, View,
};

/// `POST /Thingworx/Things/{T}/Events/{E}` with the event's data: fires it (B5).
pub fn fire(
    app: &Arc<App>,
    caller: &Caller,
    kind: Kind,
    thing: &str,
    event: &str,
    data: &Json,
) -> Result<Reply, ApiError> {
    let firing = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let (e, id) = visible_entity(m, caller, kind, thing)?;
        if kind != Kind::Thing {
            return Err(not_found(kind, thing));
        }
        if event == DATA_CHANGE {
            return Err(bad(format!(
                "{DATA_CHANGE} is fired by the platform when a property changes, not by a request"
            )));
        }
        let merged = merged_definitions(m, e)
            .map_err(|e| crate::api::change_error(thinghost_store::ChangeError::Model(e)))?;
        let Some((def, _)) = merged.events.get(event) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Thing {thing} has no event {event:?}"),
            ));
        };
        require(
            m,
            caller,
            Permission::EventInvoke,
            Target::Entity {
                id,
                resource: m.access().sym(event),
            },
            &format!("Things/{thing}/Events/{event}"),
        )?;
        let data = event_data(m, def.data_shape.as_deref(), data)?;
        prepared(app, &db, caller, thing, event, data)
    };
    if let Some(f) = firing {
        send(app, f);
    }
    Ok(Reply::Empty)
}

/// The data of an event, checked against its DataShape: a JSON object (or an InfoTable of one
/// row) whose fields are the shape's, each of its type; a field left out is null.
fn event_data(m: &Model, shape: Option<&str>, data: &Json) -> Result<Json, ApiError> {
    let row = match data {
        Json::Null => Map::new(),
        Json::Object(o) if o.get("rows").is_some_and(Json::is_array) => {
            match o["rows"].as_array().map(Vec::as_slice) {
                Some([Json::Object(r)]) => r.clone(),
                Some([]) => Map::new(),
                _ => return Err(bad("the event's data is one row")),
            }
        }
        Json::Object(o) => o.clone(),
        other => {
            return Err(bad(format!(
                "the event's data is a JSON object of its DataShape's fields, not {other}"
            )));
        }
    };
    let Some(shape) = shape else {
        if let Some(k) = row.keys().next() {
            return Err(bad(format!(
                "field {k}: the event has no DataShape, so it carries no data"
            )));
        }
        return Ok(Json::Object(Map::new()));
    };
    let Some(Body::DataShape(d)) = m.get(Kind::DataShape, shape).map(|e| &e.body) else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the event's DataShape {shape} is missing"),
        ));
    };
    for k in row.keys() {
        if !d.fields.iter().any(|f| &f.name == k) {
            return Err(bad(format!(
                "field {k} is not a field of DataShape {shape} ({})",
                d.fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut out = Map::new();
    for f in &d.fields {
        let v = match row.get(&f.name) {
            None | Some(Json::Null) => Json::Null,
            Some(v) => f
                .base_type
                .normalize(v)
                .map_err(|e| bad(format!("field {}: {e}", f.name)))?,
        };
        out.insert(f.name.clone(), v);
    }
    Ok(Json::Object(out))
}

/// The `DataChange` of a property write (B5), if its `dataChangeType` says it fires and someone
/// subscribes: to be sent once the write is durable and the model's lock is released.
pub fn data_change(
    app: &App,
    db: &thinghost_store::Db,
    caller: &Caller,
    thing: &str,
    property: &str,
    old: Option<&Json>,
    new: &Json,
) -> Option<Firing> {
    let data = json!({
        "property": property,
        "newValue": new,
        "oldValue": old,
        "timestamp": thinghost_core::types::format_datetime(crate::now_ms()),
    });
    prepared(app, db, caller, thing, DATA_CHANGE, data)
}

/// A firing with its causal chain, when any subscription may receive it; `None` when none can
/// (nothing is queued), or when the chain is too long (B8: the cut is audited, naming it).
fn prepared(
    app: &App,
    db: &thinghost_store::Db,
    caller: &Caller,
    thing: &str,
    event: &str,
    data: Json,
) -> Option<Firing> {
    if !has_subscribers(app, db, thing, event) {
        return None;
    }
    let mut chain: Vec<String> = caller.chain.as_deref().cloned().unwrap_or_default();
    chain.push(format!("Things/{thing}:{event}"));
    if chain.len() > MAX_CHAIN {
        app.events
            .metrics
            .failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(chain = %chain.join(" -> "), "a chain of subscriptions was cut at its depth limit");
        app.audit(
            &caller.name,
            crate::state::audit::category::EXTENSIONS,
            "subscriptionChainCut",
            json!({"chain": chain, "limit": MAX_CHAIN}),
            &format!("Things/{thing}"),
            "Thing",
        );
        return None;
    }
    Some(Firing {
        source: thing.to_string(),
        event: event.to_string(),
        data,
        caller: Caller {
            depth: 0,
            chain: None,
            ..caller.clone()
        },
        chain: Arc::new(chain),
    })
}

/// Queues a firing: in a script's copy it waits for the script's changes to land (and goes with
/// them, or not at all); otherwise it is queued now (waiting while the queue is full).
pub fn send(app: &App, firing: Firing) {
    if let Some(scope) = &app.script {
        scope
            .fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(firing);
        return;
    }
    if !app.events.send(firing) {
        tracing::error!("an event was fired while the server stops; it is not delivered");
    }
}

use crate::state::events::BySource;

/// Does any subscription receive event `event` of Thing `thing`? Its own chain's, or one that
/// names it (by an index kept while the model's structure does not change).
fn has_subscribers(app: &App, db: &thinghost_store::Db, thing: &str, event: &str) -> bool {
    let m = db.model();
    let Some(e) = m.get(Kind::Thing, thing) else {
        return false;
    };
    let mut found = false;
    each_level(m, e, &mut |level| {
        found |= level.definitions().is_some_and(|d| {
            d.subscriptions
                .iter()
                .any(|s| s.source.is_empty() && s.event == event)
        });
    });
    found || by_source(app, db).get(thing).is_some_and(|v| !v.is_empty())
}

/// The index of subscriptions by their named source, for the model as it is.
fn by_source(app: &App, db: &thinghost_store::Db) -> Arc<BySource> {
    let version = db.structure_version();
    let mut cached = app
        .subscriptions_by_source
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((v, index)) = &*cached
        && *v == version
    {
        return index.clone();
    }
    let mut index = BySource::new();
    for kind in [Kind::Thing, Kind::ThingTemplate, Kind::ThingShape] {
        for e in db.model().entities(kind) {
            for s in e
                .definitions()
                .map(|d| d.subscriptions.as_slice())
                .unwrap_or(&[])
            {
                if !s.source.is_empty() {
                    index
                        .entry(s.source.clone())
                        .or_default()
                        .push((kind, e.name.clone()));
                }
            }
        }
    }
    let index = Arc::new(index);
    *cached = Some((version, index.clone()));
    index
}

/// Calls `f` for `e`, its shapes, and each template of its chain with its shapes.
pub(crate) fn each_level<'m>(m: &'m Model, e: &'m Entity, f: &mut dyn FnMut(&'m Entity)) {
    let shapes = |x: &'m Entity, f: &mut dyn FnMut(&'m Entity)| {
        let names = match &x.body {
            Body::Thing(t) => t.thing_shapes.as_slice(),
            Body::ThingTemplate(t) => t.thing_shapes.as_slice(),
            _ => &[],
        };
        for s in names {
            if let Some(shape) = m.get(Kind::ThingShape, s) {
                f(shape);
            }
        }
    };
    f(e);
    shapes(e, f);
    let template = match &e.body {
        Body::Thing(t) => Some(t.thing_template.as_str()),
        Body::ThingTemplate(_) => Some(e.name.as_str()),
        _ => None,
    };
    if let Some(t) = template
        && let Ok(chain) = template_chain(m, t)
    {
        for tpl in chain {
            if std::ptr::eq(tpl, e) {
                continue;
            }
            f(tpl);
            shapes(tpl, f);
        }
    }
}

/// One subscription to run for a firing.
struct Run {
    /// Where it is defined (`ThingTemplates/Pump`).
    holder: String,
    name: String,
    /// The Thing it runs for.
    me: String,
    implemented: Implemented,
}

/// The subscriptions a firing reaches, enabled, for its event (and property), with what
/// implements each.
fn runs_of(app: &App, m: &Model, f: &Firing) -> Vec<Run> {
    let property = f.data.get("property").and_then(Json::as_str);
    let matches = |s: &SubscriptionDef, source: &str| {
        s.enabled
            && s.source == source
            && s.event == f.event
            && (s.property.is_none() || s.property.as_deref() == property)
    };
    let mut out = Vec::new();
    let mut add = |holder: &Entity, s: &SubscriptionDef, me: &str| {
        let place = format!("{}/Subscriptions/{}", holder.key(), s.name);
        let implemented = match &s.code {
            Some(code) => match app.code.get(code) {
                Ok(code) => Implemented::Code { code, place },
                Err(e) => {
                    failed(
                        app,
                        &f.caller,
                        &place,
                        &format!("its code does not compile ({e})"),
                        &f.chain,
                    );
                    return;
                }
            },
            None => match app
                .extensions
                .load()
                .handler(holder.kind(), &holder.name, &s.name)
            {
                Some((loaded, handler)) => Implemented::Handler { loaded, handler },
                None => {
                    failed(
                        app,
                        &f.caller,
                        &place,
                        "it has no code and no extension implements it",
                        &f.chain,
                    );
                    return;
                }
            },
        };
        out.push(Run {
            holder: holder.key().to_string(),
            name: s.name.clone(),
            me: me.to_string(),
            implemented,
        });
    };
    let Some(source) = m.get(Kind::Thing, &f.source) else {
        return out;
    };
    // Its own chain's subscriptions to its own events.
    each_level(m, source, &mut |level| {
        for s in level
            .definitions()
            .map(|d| d.subscriptions.as_slice())
            .unwrap_or(&[])
        {
            if matches(s, "") {
                add(level, s, &f.source);
            }
        }
    });
    // Subscriptions naming it, wherever they are.
    let db_index = app
        .subscriptions_by_source
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(_, i)| i.clone());
    let holders = db_index
        .and_then(|i| i.get(&f.source).cloned())
        .unwrap_or_default();
    for (kind, name) in holders {
        let Some(holder) = m.get(kind, &name) else {
            continue;
        };
        for s in holder
            .definitions()
            .map(|d| d.subscriptions.as_slice())
            .unwrap_or(&[])
        {
            if !matches(s, &f.source) {
                continue;
            }
            if kind == Kind::Thing {
                add(holder, s, &name);
            } else {
                // Once for each Thing that has it.
                for t in m.entities(Kind::Thing) {
                    let mut has = false;
                    each_level(m, t, &mut |level| has |= std::ptr::eq(level, holder));
                    if has {
                        add(holder, s, &t.name);
                    }
                }
            }
        }
    }
    out
}

/// A subscription that could not run, or failed: logged and audited, never the firer's error.
fn failed(app: &App, caller: &Caller, place: &str, why: &str, chain: &[String]) {
    app.events
        .metrics
        .failed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(subscription = place, error = why, "a subscription failed");
    app.audit(
        &caller.name,
        crate::state::audit::category::EXTENSIONS,
        "subscriptionFailed",
        json!({"subscription": place, "error": why, "chain": chain}),
        place,
        "Subscription",
    );
}

/// Delivers one firing to every subscription it reaches, one after the other, as the firer.
fn deliver(app: &Arc<App>, f: &Firing) {
    let runs = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        // The index as of this model (a change since the firing may have added or removed one).
        by_source(app, &db);
        runs_of(app, db.model(), f)
    };
    let caller = Caller {
        chain: Some(f.chain.clone()),
        ..f.caller.clone()
    };
    for run in runs {
        let source = json!(f.source);
        let event = json!(f.event);
        let vars: Vec<(&str, &Json)> = vec![
            ("eventName", &event),
            ("source", &source),
            ("eventData", &f.data),
        ];
        let place = format!("{}/Subscriptions/{}", run.holder, run.name);
        match host_calls::run_subscription(app, &caller, run.implemented, &run.me, &vars) {
            Ok(()) => {
                app.events
                    .metrics
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(why) => failed(app, &f.caller, &place, &why, &f.chain),
        }
    }
}

/// Starts the workers that deliver firings: one per shard of the queue, each holding the server
/// weakly (they end with it).
pub fn start(app: &Arc<App>) {
    for (i, receiver) in app.events.take_receivers() {
        let server: Weak<App> = Arc::downgrade(app);
        let spawned = std::thread::Builder::new()
            .name(format!("events-{i}"))
            .spawn(move || {
                crate::state::events::mark_worker();
                loop {
                    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
                    let next = match receiver.try_recv() {
                        Ok(f) => Some(f),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => return,
                    };
                    let next = match next {
                        Some(f) => Some(f),
                        None => match server.upgrade() {
                            Some(app) => app.events.overflow(i),
                            None => return,
                        },
                    };
                    let firing = match next {
                        Some(f) => f,
                        None => match receiver.recv_timeout(std::time::Duration::from_millis(50)) {
                            Ok(f) => f,
                            Err(RecvTimeoutError::Timeout) => continue,
                            Err(RecvTimeoutError::Disconnected) => return,
                        },
                    };
                    let Some(app) = server.upgrade() else {
                        return;
                    };
                    deliver(&app, &firing);
                    app.events.done();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start an event worker; events of its shard wait");
        }
    }
}

/// `GetPerformanceMetrics()` of `Subsystems/EventProcessingSubsystem`: the queue's depth, its
/// high-water mark, the events fired and the subscriptions delivered and failed.
pub fn performance_metrics(call: &mut crate::api::Call<'_>) -> Result<Reply, ApiError> {
    Ok(crate::api::result(
        BaseType::Json,
        call.app.events.figures(),
    ))
}
