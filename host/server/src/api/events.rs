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
use crate::api::{ApiError, Reply, bad, require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::events::{Cause, Firing, MAX_CHAIN, MAX_FIRINGS, Planned};
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use std::sync::atomic::{AtomicU64, Ordering};
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
    room(app, caller, [thing]);
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let data = checked_firing(db.model(), caller, kind, thing, event, data)?;
    if let Some(f) = prepared(app, &db, caller, thing, event, data) {
        send(app, f);
    }
    Ok(Reply::Empty)
}

/// Would [`fire`] fire this event? Its checks, without firing (a batch checks every event
/// before it fires any).
pub fn check_fire(
    app: &App,
    caller: &Caller,
    thing: &str,
    event: &str,
    data: &Json,
) -> Result<(), ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    checked_firing(db.model(), caller, Kind::Thing, thing, event, data).map(|_| ())
}

/// The checks of a firing by a request: a visible, enabled Thing; not one of the platform's
/// events; `EventInvoke`; an event it has; data of its shape. The data, checked.
fn checked_firing(
    m: &Model,
    caller: &Caller,
    kind: Kind,
    thing: &str,
    event: &str,
    data: &Json,
) -> Result<Json, ApiError> {
    let (e, id) = visible_entity(m, caller, kind, thing)?;
    if kind != Kind::Thing {
        return Err(bad(format!(
            "events are fired by Things; {}/{thing} is a {}: fire it on a Thing of it",
            kind.collection(),
            kind.label()
        )));
    }
    if let Some(refusal) = crate::api::entities::disabled(e) {
        return Err(refusal);
    }
    if thinghost_core::validate::platform_events_of(m, e).contains(&event) {
        return Err(bad(format!(
            "{event} is fired by the platform ({DATA_CHANGE} when a property changes, Timer and ScheduledEvent by timers and schedulers), not by a request"
        )));
    }
    // The right first: without it, which events the Thing has is none of the caller's
    // business.
    require(
        m,
        caller,
        Permission::EventInvoke,
        Target::Entity {
            id,
            resource: m.access().sym(event),
        },
        format!("Things/{thing}/Events/{event}"),
    )?;
    let merged = merged_definitions(m, e)
        .map_err(|e| crate::api::change_error(thinghost_store::ChangeError::Model(e)))?;
    let Some((def, _)) = merged.events.get(event) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Thing {thing} has no event {event:?}"),
        ));
    };
    event_data(m, def.data_shape.as_deref(), data)
}

/// Fires one of the platform's own events of a Thing (`Timer`, `ScheduledEvent`) as `caller`
/// (a timer's or scheduler's `runAsUser`), with `data`. It never waits: the clock of every timer
/// must go on. While the source's shard holds twice its bound, the firing is skipped (`Err`, in
/// words: the caller audits it).
pub fn fire_platform(
    app: &App,
    caller: &Caller,
    thing: &str,
    event: &str,
    data: Json,
) -> Result<(), String> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let Some(f) = prepared(app, &db, caller, thing, event, data) else {
        return Ok(());
    };
    // Room for twice the bound: skipped only when its subscriptions fall far behind.
    if app.events.push(f, 2 * app.events.capacity) {
        Ok(())
    } else {
        app.events.metrics.failed.fetch_add(1, Ordering::Relaxed);
        Err(format!(
            "its event queue is full ({} firings wait): this {event} was skipped; its subscriptions take longer than it fires",
            2 * app.events.capacity
        ))
    }
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
    let planned_at = db.structure_version();
    let planned = planned(app, db, thing, event);
    if planned.is_empty() {
        return None;
    }
    let parent = caller.chain.as_deref();
    let mut chain: Vec<String> = parent.map(|c| c.chain.clone()).unwrap_or_default();
    chain.push(format!("Things/{thing}:{event}"));
    let budget = parent
        .map(|c| c.budget.clone())
        .unwrap_or_else(|| Arc::new(AtomicU64::new(MAX_FIRINGS)));
    let cut_once = parent.map(|c| c.cut.clone()).unwrap_or_default();
    let within_budget = budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok();
    if chain.len() > MAX_CHAIN || !within_budget {
        let why = if chain.len() > MAX_CHAIN {
            format!(
                "a chain of subscriptions that fire each other holds at most {MAX_CHAIN} firings"
            )
        } else {
            format!("one firing causes at most {MAX_FIRINGS} more through its subscriptions")
        };
        app.events.metrics.failed.fetch_add(1, Ordering::Relaxed);
        // A root's cuts are audited once (its tree may be cut at many places).
        if !cut_once.swap(true, Ordering::Relaxed) {
            cut(app, caller, thing, &chain, &why);
        }
        return None;
    }
    Some(Firing {
        source: thing.to_string(),
        event: event.to_string(),
        data,
        caller: Caller {
            depth: 0,
            chain: None,
            in_model_code: false,
            ..caller.clone()
        },
        cause: Arc::new(Cause {
            chain,
            budget,
            cut: cut_once,
        }),
        fired_at: std::time::Instant::now(),
        planned,
        planned_at,
    })
}

/// A firing cut (B8): counted, logged and audited naming its chain (queued: the firer may hold
/// the model's lock).
fn cut(app: &App, caller: &Caller, thing: &str, chain: &[String], why: &str) {
    tracing::warn!(chain = %chain.join(" -> "), reason = why, "a firing was cut");
    app.audit_queued(
        &caller.name,
        crate::state::audit::category::EXTENSIONS,
        "subscriptionChainCut",
        json!({"chain": chain, "reason": why}),
        &format!("Things/{thing}"),
        "Thing",
    );
}

/// Queues a firing now, in the order of the change that fired it: call it while still holding
/// the model's lock that made the change (it never waits: back-pressure is [`room`], before the
/// lock). In a script's copy it waits for the script's changes to land (and goes with them, or
/// not at all).
pub fn send(app: &App, firing: Firing) {
    if let Some(scope) = &app.script {
        scope
            .fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(firing);
        return;
    }
    let (caller, source, chain) = (
        firing.caller.clone(),
        firing.source.clone(),
        firing.cause.chain.clone(),
    );
    if !app.events.push(firing, app.events.hard_limit()) {
        app.events.metrics.failed.fetch_add(1, Ordering::Relaxed);
        cut(
            app,
            &caller,
            &source,
            &chain,
            "its queue holds more firings than it may (subscriptions far slower than their events)",
        );
    }
}

/// Back-pressure (B8), before a firer takes the model's lock: waits while the shard of each
/// source it may fire holds its bound or more. Not for code of a subscription (its worker could
/// wait on itself: its firings go past the bound, within its root's budget) nor in a script's
/// copy (its firings go when it lands, after waiting here).
pub fn room<'s>(app: &App, caller: &Caller, sources: impl IntoIterator<Item = &'s str>) {
    if caller.chain.is_some() || app.script.is_some() {
        return;
    }
    for source in sources {
        app.events.wait_for_room(source);
    }
}

use crate::state::events::BySource;

/// The index of subscriptions by their named source, for the model as it is (`db` is held).
fn by_source(app: &App, db: &thinghost_store::Db) -> Arc<BySource> {
    let mut plans = app.plans.lock().unwrap_or_else(|p| p.into_inner());
    let plans = plans.at(db.structure_version());
    if let Some(index) = &plans.by_source {
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
    plans.by_source = Some(index.clone());
    index
}

/// The Things that have what `holder` (a template or shape) defines: along their chain or
/// their shapes.
pub(crate) fn things_reached<'m>(
    m: &'m Model,
    holder: &'m Entity,
) -> impl Iterator<Item = &'m Entity> + 'm {
    m.entities(Kind::Thing).filter(move |t| {
        let mut has = false;
        each_level(m, t, &mut |level| has |= std::ptr::eq(level, holder));
        has
    })
}

/// Calls `f` once for `e`, its shapes, and each template of its chain with its shapes (a shape
/// implemented at two levels is one level: its subscriptions run once).
pub(crate) fn each_level<'m>(m: &'m Model, e: &'m Entity, f: &mut dyn FnMut(&'m Entity)) {
    let mut seen: Vec<&'m str> = Vec::new();
    let mut shapes = |x: &'m Entity, f: &mut dyn FnMut(&'m Entity)| {
        let names = match &x.body {
            Body::Thing(t) => t.thing_shapes.as_slice(),
            Body::ThingTemplate(t) => t.thing_shapes.as_slice(),
            _ => &[],
        };
        for s in names {
            if seen.contains(&s.as_str()) {
                continue;
            }
            seen.push(s);
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

/// The enabled subscriptions a firing of `event` by `source` reaches (any property: a firing's
/// own is matched at delivery), planned from the model as it is.
fn plan(app: &App, db: &thinghost_store::Db, source: &str, event: &str) -> Vec<Planned> {
    let m = db.model();
    let index = by_source(app, db);
    let mut out = Vec::new();
    let mut add = |holder: &Entity, s: &SubscriptionDef, me: &str| {
        out.push(Planned {
            holder_kind: holder.kind(),
            holder: holder.name.clone(),
            name: s.name.clone(),
            me: me.to_string(),
            code: s.code.clone(),
            property: s.property.clone(),
        })
    };
    let reached =
        |s: &SubscriptionDef, from: &str| s.enabled && s.source == from && s.event == event;
    let Some(thing) = m.get(Kind::Thing, source) else {
        return out;
    };
    // Its own chain's subscriptions to its own events.
    each_level(m, thing, &mut |level| {
        for s in level
            .definitions()
            .map(|d| d.subscriptions.as_slice())
            .unwrap_or(&[])
        {
            if reached(s, "") {
                add(level, s, source);
            }
        }
    });
    // Subscriptions naming it, wherever they are.
    for (kind, name) in index.get(source).map(Vec::as_slice).unwrap_or(&[]) {
        let Some(holder) = m.get(*kind, name) else {
            continue;
        };
        for s in holder
            .definitions()
            .map(|d| d.subscriptions.as_slice())
            .unwrap_or(&[])
        {
            if !reached(s, source) {
                continue;
            }
            if *kind == Kind::Thing {
                add(holder, s, name);
            } else {
                // Once for each Thing that has it.
                for t in things_reached(m, holder) {
                    add(holder, s, &t.name);
                }
            }
        }
    }
    out
}

/// What a firing of `event` by `thing` reaches: planned once per (source, event) and structure
/// version of the model, by the firer under the model's lock it holds, so that no delivery
/// takes the lock (readers would queue behind every property write).
fn planned(app: &App, db: &thinghost_store::Db, thing: &str, event: &str) -> Arc<Vec<Planned>> {
    let key = (thing.to_string(), event.to_string());
    let version = db.structure_version();
    if let Some(p) = app
        .plans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .at(version)
        .runs
        .get(&key)
    {
        return p.clone();
    }
    let p = Arc::new(plan(app, db, thing, event));
    app.plans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .at(version)
        .runs
        .insert(key, p.clone());
    p
}

/// What implements a planned subscription now: its code, compiled (kept compiled), or its
/// extension's handler in the generation of now.
fn implemented(app: &App, p: &Planned) -> Result<Implemented, String> {
    let place = format!(
        "{}/{}/Subscriptions/{}",
        p.holder_kind.collection(),
        p.holder,
        p.name
    );
    match &p.code {
        Some(code) => app
            .code
            .get(code)
            .map(|code| Implemented::Code { code, place })
            .map_err(|e| format!("its code does not compile ({e})")),
        // Declared by an extension: its handler, in the generation of now.
        None => app
            .extensions
            .load()
            .handler(
                p.holder_kind,
                &p.holder,
                thinghost_extensions::manifest::Member::Subscription,
                &p.name,
            )
            .map(|(loaded, handler)| Implemented::Handler { loaded, handler })
            .ok_or_else(|| "it has no code, and no loaded extension implements it".to_string()),
    }
}

/// A subscription that could not run, or failed: counted and logged, and audited (never its
/// firer's error): the first failure, then at most once a minute with the count since.
fn failed(app: &App, caller: &Caller, place: &str, why: &str, chain: &[String]) {
    app.events.metrics.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(subscription = place, error = why, "a subscription failed");
    let since = {
        let mut failures = app
            .events
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let entry = failures.entry(place.to_string()).or_insert((now, 0));
        entry.1 += 1;
        if entry.1 > 1 && now.duration_since(entry.0) < std::time::Duration::from_secs(60) {
            return;
        }
        let count = entry.1;
        *entry = (now, 0);
        count
    };
    app.audit_queued(
        &caller.name,
        crate::state::audit::category::EXTENSIONS,
        "subscriptionFailed",
        json!({"subscription": place, "error": why, "chain": chain, "failures": since}),
        place,
        "Subscription",
    );
}

/// Delivers one firing to every subscription it reaches, one after the other, as the firer.
fn deliver(app: &Arc<App>, f: &Firing) {
    app.events.metrics.note_latency(f.fired_at.elapsed());
    // A change of the structure since the firing (a subscription disabled, deleted, changed):
    // planned again on the model of now.
    let replanned;
    let planned = if app.structure.load(Ordering::Acquire) == f.planned_at {
        &f.planned
    } else {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        replanned = planned(app, &db, &f.source, &f.event);
        &replanned
    };
    let property = f.data.get("property").and_then(Json::as_str);
    let caller = Caller {
        chain: Some(f.cause.clone()),
        ..f.caller.clone()
    };
    let source = json!(f.source);
    let event = json!(f.event);
    let vars: Vec<(&str, &Json)> = vec![
        ("eventName", &event),
        ("source", &source),
        ("eventData", &f.data),
    ];
    for p in planned.iter() {
        if p.property.is_some() && p.property.as_deref() != property {
            continue;
        }
        let place = format!(
            "{}/{}/Subscriptions/{}",
            p.holder_kind.collection(),
            p.holder,
            p.name
        );
        let run = implemented(app, p)
            .and_then(|i| host_calls::run_subscription(app, &caller, i, &p.me, &vars));
        match run {
            Ok(()) => {
                app.events
                    .metrics
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(why) => failed(app, &f.caller, &place, &why, &f.cause.chain),
        }
    }
}

/// Starts the workers that deliver firings: one per shard of the queue, each holding the server
/// weakly (they end with it). A panic in a delivery is caught: audited as a failure, and the
/// worker goes on.
pub fn start(app: &Arc<App>) {
    for (i, shard) in app.events.take_shards().into_iter().enumerate() {
        let server: Weak<App> = Arc::downgrade(app);
        let spawned = std::thread::Builder::new()
            .name(format!("events-{i}"))
            .spawn(move || {
                loop {
                    let Some(firing) = shard.next(std::time::Duration::from_millis(100)) else {
                        if server.strong_count() == 0 {
                            return;
                        }
                        continue;
                    };
                    let Some(app) = server.upgrade() else {
                        return;
                    };
                    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        deliver(&app, &firing)
                    }));
                    if delivered.is_err() {
                        failed(
                            &app,
                            &firing.caller,
                            &format!("Things/{}:{}", firing.source, firing.event),
                            "its delivery panicked (a bug of the server: please report it)",
                            &firing.cause.chain,
                        );
                    }
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
