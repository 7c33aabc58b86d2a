//! Behaviour written into the model (DOMAIN section 9): service definitions with their Rhai code
//! (B1, B3) and overrides of inherited services (B2). Code is compiled before anything is saved
//! (a syntax error is a 400 with its line and column); the audit records its SHA-256, never its
//! text (the row's `digest` parameter).

use crate::api::{ApiError, Call, Reply, bad};
use serde_json::Value as Json;
use thinghost_core::validate::find_service;
use thinghost_core::{
    BaseType, Kind, ModelError, ParamDef, Permission, ServiceDef, ServiceOverride, SubscriptionDef,
    Target, View,
};

/// Changes what the call's entity holds itself (`e`: the entity; its definitions through
/// [`defs`]), in one change audited `entityUpdated`; `f` says in words what is wrong, and the
/// refusal names the entity.
pub(crate) fn change_own(
    call: &mut Call<'_>,
    f: impl FnOnce(&mut thinghost_core::Entity) -> Result<(), String>,
) -> Result<Reply, ApiError> {
    let (kind, entity) = (call.kind, call.entity.clone());
    call.commit("entityUpdated", (kind, entity.to_string()), move |tx| {
        let e = tx.get_mut(kind, &entity)?;
        let invalid = |message: String| ModelError::Invalid {
            entity: format!("{}/{entity}", kind.collection()),
            message,
        };
        // An extension's entity is defined by its manifest, which every load of the extension
        // applies again: a change made here would be lost without a word at the next reload or
        // start. (Its permissions are kept across loads, and stay changeable.)
        if let Some(extension) = &e.extension {
            return Err(invalid(format!(
                "belongs to extension {extension}, whose manifest defines its properties, services, events and subscriptions; make a template of your own based on it (or a Thing of it) and change that"
            )));
        }
        f(e).map_err(invalid)
    })?;
    Ok(Reply::Empty)
}

/// The definitions of a Thing, template or shape (every kind whose rows reach here has them).
pub(crate) fn defs(e: &mut thinghost_core::Entity) -> &mut thinghost_core::Definitions {
    e.definitions_mut()
        .expect("things, templates and shapes have definitions")
}

/// The position of the item named `name`, or, in words, that the entity has none of its own.
pub(crate) fn own<T>(
    items: &[T],
    name: &str,
    of: impl Fn(&T) -> &str,
    what: &str,
) -> Result<usize, String> {
    items
        .iter()
        .position(|x| of(x) == name)
        .ok_or_else(|| format!("has no {what} {name:?} of its own"))
}

/// What a call does to a service definition.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DefOp {
    Add,
    Update,
    Delete,
}

/// Code on the platform's own entities (`GenericThing`, `Scheduler`, `Timer`, the audit
/// schedulers, ...) is an administrator's to write: it runs for every Thing along them, and as
/// the audit schedulers' `runAsUser` (an administrator) when they fire.
fn platform_code_is_administrators(call: &Call<'_>) -> Result<(), ApiError> {
    if thinghost_core::predefined::is_predefined(call.kind, &call.entity) && !call.is_admin() {
        let mut e = crate::api::forbidden(
            call.caller,
            "write code on the platform's own entities",
            call.path(),
            Permission::Update,
        );
        e.message = format!(
            "{} is the platform's own: only an administrator writes code on it (it runs for every Thing along it, and as administrators); put it on a template of your own",
            call.path()
        );
        return Err(e);
    }
    Ok(())
}

/// Compiles `code` (kept compiled by the server), or says where it is wrong: nothing is saved.
fn compiled(call: &Call<'_>, code: &str) -> Result<(), ApiError> {
    platform_code_is_administrators(call)?;
    call.app.code.get(code).map(|_| ()).map_err(|e| {
        bad(format!(
            "parameter code does not compile: {e}; nothing was saved"
        ))
    })
}

/// The code parameter: none when absent or blank.
fn code_of(call: &Call<'_>) -> Option<String> {
    call.params
        .get("code")
        .and_then(Json::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
}

/// `parameters`: a JSON array of `{name, baseType, required, description, dataShape}`, or an
/// InfoTable whose rows are those (the vendor's FieldDefinitions).
pub fn parse_parameters(value: Option<&Json>) -> Result<Vec<ParamDef>, ApiError> {
    let items = match value {
        None | Some(Json::Null) => return Ok(vec![]),
        Some(Json::Array(a)) => a.clone(),
        Some(Json::Object(o)) if o.get("rows").is_some_and(Json::is_array) => {
            o["rows"].as_array().cloned().unwrap_or_default()
        }
        Some(other) => {
            return Err(bad(format!(
                "parameter parameters: a JSON array of {{name, baseType, required, description}}, not {other}"
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |m: String| bad(format!("parameter parameters, item {}: {m}", i + 1));
            let Json::Object(o) = item else {
                return Err(at(format!("an object, not {item}")));
            };
            for k in o.keys() {
                if !["name", "baseType", "required", "description", "dataShape"]
                    .contains(&k.as_str())
                {
                    return Err(at(format!(
                        "unknown key {k:?} (name, baseType, required, description, dataShape)"
                    )));
                }
            }
            let name = o
                .get("name")
                .and_then(Json::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| at("needs a name".into()))?;
            // The variables code sees besides its parameters.
            if let Some(why) = match name {
                "me" => Some("the name of the Thing the code runs on"),
                "result" => Some("the code's result"),
                _ => None,
            } {
                return Err(at(format!(
                    "{name} is a variable of every service's code ({why}); name the parameter otherwise"
                )));
            }
            if items[..i]
                .iter()
                .any(|x| x.get("name").and_then(Json::as_str) == Some(name))
            {
                return Err(at(format!("{name} is named twice")));
            }
            let t = o
                .get("baseType")
                .and_then(Json::as_str)
                .ok_or_else(|| at(format!("{name} needs a baseType")))?;
            let base_type = BaseType::parse(t)
                .ok_or_else(|| at(format!("{name}: {t:?} is not a base type")))?;
            let text = |k: &str| -> Result<String, ApiError> {
                match o.get(k) {
                    None | Some(Json::Null) => Ok(String::new()),
                    Some(Json::String(s)) => Ok(s.clone()),
                    Some(v) => Err(at(format!("{name}: {k} is a string, not {v}"))),
                }
            };
            let required = match o.get("required") {
                None | Some(Json::Null) => false,
                Some(Json::Bool(b)) => *b,
                Some(v) => return Err(at(format!("{name}: required is true or false, not {v}"))),
            };
            Ok(ParamDef {
                name: name.to_string(),
                base_type,
                description: text("description")?,
                required,
                data_shape: Some(text("dataShape")?).filter(|s| !s.is_empty()),
            })
        })
        .collect()
}

/// `resultType`: a base type, NOTHING when absent.
fn result_type(call: &Call<'_>) -> Result<BaseType, ApiError> {
    match call.opt_str("resultType") {
        None => Ok(BaseType::Nothing),
        Some(t) => BaseType::parse(&t)
            .ok_or_else(|| bad(format!("parameter resultType: {t:?} is not a base type"))),
    }
}

/// `AddServiceDefinition`, `UpdateServiceDefinition`, `DeleteServiceDefinition` (B1, B3).
pub fn service_definition(call: &mut Call<'_>, op: DefOp) -> Result<Reply, ApiError> {
    let name = call.str("name");
    let def = if op == DefOp::Delete {
        None
    } else {
        let code = code_of(call);
        if let Some(code) = &code {
            compiled(call, code)?;
        }
        Some(ServiceDef {
            name: name.clone(),
            description: call.str("description"),
            parameters: parse_parameters(call.params.get("parameters"))?,
            result: result_type(call)?,
            result_data_shape: call.opt_str("resultDataShape"),
            audit: Default::default(),
            code,
            allow_override: call.bool_or("allowOverride", false),
        })
    };
    change_own(call, move |e| {
        let services = &mut defs(e).services;
        match (op, def) {
            (DefOp::Add, Some(d)) => services.push(d),
            (DefOp::Update, Some(mut d)) => {
                let i =
                    own(services, &name, |s| &s.name, "service definition").map_err(inherited)?;
                // The audit of its calls is not a parameter of the vendor's service: kept.
                d.audit = services[i].audit;
                services[i] = d;
            }
            _ => {
                let i =
                    own(services, &name, |s| &s.name, "service definition").map_err(inherited)?;
                services.remove(i);
            }
        }
        Ok(())
    })
}

/// What to do about an inherited service instead of changing it here.
fn inherited(e: String) -> String {
    format!(
        "{e} (an inherited one is changed where it is defined, or overridden with OverrideService)"
    )
}

/// `OverrideService(name, code)` and `RemoveServiceOverride(name)` on a template or Thing (B2).
/// An override may restate the signature (`parameters`, `resultType`); if it does, it must be
/// the definition's.
pub fn override_service(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    let name = call.str("name");
    let code = if add {
        let code = code_of(call)
            .ok_or_else(|| bad("parameter code: an override is code (Rhai); it is empty"))?;
        compiled(call, &code)?;
        let m = call.model();
        let e = m
            .get(call.kind, &call.entity)
            .expect("resolved before the call");
        // The definition it overrides, as the caller names it: a signature restated must be
        // the same (the definition stays its source's).
        if let Some((def, source)) = find_service(m, e, &name)
            && !std::ptr::eq(source, e)
        {
            let restated = call.params.get("parameters").filter(|v| !v.is_null());
            let params_differ = match restated {
                Some(v) => !same_parameters(&parse_parameters(Some(v))?, &def.parameters),
                None => false,
            };
            let result_differs =
                call.opt_str("resultType").is_some() && result_type(call)? != def.result;
            if params_differ || result_differs {
                return Err(bad(format!(
                    "OverrideService: {name} of {} takes ({}) and returns {}; an override keeps its definition's parameters and result",
                    source.key(),
                    def.parameters
                        .iter()
                        .map(|p| format!("{}: {}", p.name, p.base_type.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    def.result.name()
                )));
            }
        }
        Some(code)
    } else {
        None
    };
    change_own(call, move |e| {
        let overrides = &mut defs(e).overrides;
        let at = overrides.iter().position(|o| o.name == name);
        match (code, at) {
            (Some(code), Some(i)) => overrides[i].code = Some(code),
            (Some(code), None) => overrides.push(ServiceOverride {
                name,
                code: Some(code),
            }),
            (None, Some(i)) => {
                overrides.remove(i);
            }
            (None, None) => return Err(format!("does not override service {name:?}")),
        }
        Ok(())
    })
}

/// The same signature: names, types and whether required, in order (descriptions may differ).
fn same_parameters(a: &[ParamDef], b: &[ParamDef]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name && x.base_type == y.base_type && x.required == y.required
        })
}

/// `AddEventDefinition(name, dataShape, description)` and `DeleteEventDefinition(name)` (B5).
pub fn event_definition(call: &mut Call<'_>, add: bool) -> Result<Reply, ApiError> {
    let name = call.str("name");
    if add && name == thinghost_core::DATA_CHANGE {
        return Err(bad(format!(
            "{name} is every Thing's own event (a property write fires it); pick another name"
        )));
    }
    let def = add.then(|| thinghost_core::EventDef {
        name: name.clone(),
        description: call.str("description"),
        data_shape: call.opt_str("dataShape"),
    });
    change_own(call, move |e| {
        let events = &mut defs(e).events;
        match def {
            Some(d) => events.push(d),
            None => {
                let i = own(events, &name, |v| &v.name, "event definition")?;
                events.remove(i);
            }
        }
        Ok(())
    })
}

/// `AddSubscription(name, source, event, property, code, enabled)` (B6): code run for each
/// firing of `event` by `source` (empty: `me`). Subscribing to another Thing's events needs
/// `EventSubscribe` on it for that event; one the caller cannot see answers as a missing one.
pub fn add_subscription(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let name = call.str("name");
    let event = call.str("event");
    let source = call.opt_str("source").unwrap_or_default();
    let code = code_of(call)
        .ok_or_else(|| bad("parameter code: a subscription is code (Rhai); it is empty"))?;
    compiled(call, &code)?;
    // Its own events: no source (a Thing naming itself is the same).
    let own = source.is_empty() || (call.kind == Kind::Thing && source == call.entity);
    if !own {
        let m = call.model();
        let (src, id) = crate::api::visible_entity(m, call.caller, Kind::Thing, &source)?;
        // The right first: without it, the source's events and properties are none of the
        // caller's business.
        call.require(
            Permission::EventSubscribe,
            Target::Entity {
                id,
                resource: m.access().sym(&event),
            },
            &format!("subscribe to event {event} of Things/{source}"),
        )?;
        let platform = thinghost_core::validate::platform_events_of(m, src);
        // Its event (and property) exists on the source now (the model does not hold it to that
        // later: see `validate::check_subscriptions`).
        let merged = thinghost_core::validate::merged_definitions(m, src)
            .map_err(|e| crate::api::change_error(thinghost_store::ChangeError::Model(e)))?;
        if !platform.contains(&event.as_str()) && !merged.events.contains_key(&event) {
            return Err(bad(format!(
                "event {event}: Things/{source} has no such event (its events: {})",
                platform
                    .iter()
                    .map(|e| e.to_string())
                    .chain(merged.events.keys().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(p) = call.opt_str("property")
            && !merged.properties.contains_key(&p)
        {
            return Err(bad(format!(
                "property {p}: Things/{source} has no such property"
            )));
        }
    }
    runs_as_run_as_user(call, (!own).then_some(source.as_str()), &event)?;
    let sub = SubscriptionDef {
        name,
        source: if own { String::new() } else { source },
        event,
        property: call.opt_str("property"),
        code: Some(code),
        enabled: call.bool_or("enabled", true),
        description: call.str("description"),
    };
    change_own(call, move |e| {
        defs(e).subscriptions.push(sub);
        Ok(())
    })
}

/// B7: a timer's or scheduler's events fire as its `runAsUser`, and so runs the code subscribed
/// to them: adding such code is for that user or an administrator (as only they may name that
/// user as `runAsUser`), on every Thing it would run for: `source`; else the call's Thing; else
/// every Thing of the call's template or shape.
fn runs_as_run_as_user(call: &Call<'_>, source: Option<&str>, event: &str) -> Result<(), ApiError> {
    use thinghost_core::predefined::{SCHEDULED_EVENT, TIMER_EVENT};
    if event != TIMER_EVENT && event != SCHEDULED_EVENT {
        return Ok(());
    }
    let m = call.model();
    let reached: Vec<&str> = match (source, call.kind) {
        (Some(s), _) => vec![s],
        (None, Kind::Thing) => vec![call.entity.as_ref()],
        (None, _) => {
            let Some(holder) = m.get(call.kind, &call.entity) else {
                return Ok(());
            };
            crate::api::events::things_reached(m, holder)
                .map(|t| t.name.as_str())
                .collect()
        }
    };
    for thing in reached {
        let run_as = crate::state::audit::value_of(m, thing, "runAsUser").unwrap_or_default();
        crate::api::entities::may_name_run_as(m, call.caller, &run_as).map_err(|mut e| {
            e.message = match source {
                Some(s) => format!(
                    "{event} of Things/{s} fires as its runAsUser ({}), and code subscribed to it runs as that user: only that user or an administrator may subscribe to it",
                    run_as.as_str().unwrap_or_default()
                ),
                None => format!(
                    "a Thing this subscription reaches fires {event} as another user (its runAsUser), and code subscribed to it runs as that user: only that user or an administrator may add it"
                ),
            };
            e
        })?;
    }
    Ok(())
}

/// What a call does to a subscription the entity defines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SubOp {
    Delete,
    Enable,
    Disable,
}

/// `DeleteSubscription(name)`, `EnableSubscription(subscriptionName)`,
/// `DisableSubscription(subscriptionName)`: at the level that defines it (B6).
pub fn subscription(call: &mut Call<'_>, op: SubOp) -> Result<Reply, ApiError> {
    let name = match op {
        SubOp::Delete => call.str("name"),
        _ => call.str("subscriptionName"),
    };
    change_own(call, move |e| {
        let subs = &mut defs(e).subscriptions;
        let i = own(subs, &name, |s| &s.name, "subscription")
            .map_err(|e| format!("{e} (enable, disable or delete it where it is defined)"))?;
        match op {
            SubOp::Delete => {
                subs.remove(i);
            }
            SubOp::Enable => subs[i].enabled = true,
            SubOp::Disable => subs[i].enabled = false,
        }
        Ok(())
    })
}
