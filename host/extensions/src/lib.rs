//! # thinghost-extensions
//!
//! Extension packages: the `plugin.toml` manifest ([`manifest`]), the load order ([`plan`]), and
//! the contribution of an extension's entities to the model ([`contribute`]). The code runtimes
//! (Rhai, WebAssembly components, native libraries) build on this crate.

pub mod code;
pub mod host_api;
pub mod manifest;
pub mod meter;
pub mod native_runtime;
pub mod package;
pub mod plan;
pub mod rhai_runtime;
pub mod wasm_runtime;

pub use manifest::{Manifest, ManifestError, Package};
pub use plan::{Plan, plan};

use thinghost_core::{Batch, Body, Entity, Kind, Model, ModelError, Parked, Tx, View};

/// Brings an extension's entities into the model, all in one transaction: either every entity is
/// valid and becomes visible, or nothing changes (DOMAIN E3). The entities are marked as the
/// extension's. An entity of the same kind and name that belongs to someone else is refused.
pub fn contribute(model: &mut Model, manifest: &Manifest) -> Result<Batch, ModelError> {
    let change = contribution(manifest, None)?;
    model.change(change)
}

/// The change that contributes an extension's entities, for [`Model::change`] or a store's
/// `Db::change` (so that it is persisted in the same transaction). With the extension's loaded
/// `code`, each handler of a service override is checked against the definition it overrides
/// (which is in the model, not in the manifest): it must take that definition's parameters.
pub fn contribution(
    manifest: &Manifest,
    code: Option<&code::Code>,
) -> Result<impl FnOnce(&mut Tx<'_>) -> Result<(), ModelError> + use<>, ModelError> {
    let entities = manifest.entities().map_err(|message| ModelError::Invalid {
        entity: format!("extension {}", manifest.name()),
        message,
    })?;
    let name = manifest.name().to_string();
    let overrides = code
        .map(|code| override_handlers(manifest, code))
        .unwrap_or_default();
    let sourced = sourced_subscriptions(manifest);
    let declared: Vec<(Kind, String)> = entities
        .iter()
        .map(|e| (e.kind(), e.name.clone()))
        .collect();
    Ok(move |tx: &mut Tx<'_>| {
        // What an earlier version contributed and this one no longer declares goes (E5): a
        // template or shape still in use refuses the upgrade, naming its users.
        // A subscription of the manifest to another Thing is checked when it is new (or
        // changed): the source may lose the event later (`validate::check_subscriptions`), and
        // that must not refuse the extension at its next load.
        let sourced: Vec<Sourced> = sourced
            .into_iter()
            .filter(|(kind, holder, name, source, event, property)| {
                !tx.get(*kind, holder)
                    .and_then(|e| e.definitions())
                    .is_some_and(|d| {
                        d.subscriptions.iter().any(|x| {
                            &x.name == name
                                && &x.source == source
                                && &x.event == event
                                && &x.property == property
                        })
                    })
            })
            .collect();
        let mut stale = owned_in(tx, &name);
        stale.retain(|key| !declared.contains(key));
        delete_all(tx, stale)?;
        for mut e in entities {
            match tx.get(e.kind(), &e.name) {
                Some(existing) if existing.extension.as_deref() != Some(name.as_str()) => {
                    return Err(ModelError::Invalid {
                        entity: format!("extension {name}"),
                        message: format!(
                            "{}/{} already exists and is not this extension's ({})",
                            e.kind().collection(),
                            e.name,
                            existing
                                .extension
                                .as_deref()
                                .map(|x| format!("it belongs to extension {x}"))
                                .unwrap_or_else(|| "a user made it".into())
                        ),
                    });
                }
                Some(existing) => {
                    // A new start or version: keep what administrators granted and the values
                    // the Thing holds; the manifest's own entries are added to them.
                    e.permissions = union(&existing.permissions, &e.permissions);
                    if let (Some(old), Some(new)) =
                        (existing.instance_permissions(), e.instance_permissions())
                    {
                        let merged = union(old, new);
                        *e.instance_permissions_mut().expect("same kind") = merged;
                    }
                    if let (thinghost_core::Body::Thing(new), thinghost_core::Body::Thing(old)) =
                        (&mut e.body, &existing.body)
                    {
                        new.values = old.values.clone();
                    }
                    e.owner = existing.owner.clone();
                }
                None => {}
            }
            e.extension = Some(name.clone());
            tx.put(e);
        }
        check_override_handlers(tx, &name, &overrides)?;
        check_sourced_subscriptions(tx, &name, &sourced)?;
        unpark(tx, &name)
    })
}

/// An extension's override of an inherited service: where, which service, its handler, and the
/// parameter counts the extension's code defines that handler with.
#[derive(Clone, Debug)]
pub struct OverrideHandler {
    pub kind: Kind,
    pub entity: String,
    pub service: String,
    pub handler: String,
    pub arities: Vec<usize>,
}

/// The overrides `manifest` declares, with what its loaded `code` defines.
pub fn override_handlers(manifest: &Manifest, code: &code::Code) -> Vec<OverrideHandler> {
    manifest
        .handlers()
        .into_iter()
        .filter(|h| h.implements == manifest::Implements::Override)
        .map(|h| OverrideHandler {
            kind: h.kind,
            entity: h.entity.to_string(),
            service: h.name.to_string(),
            handler: h.handler.to_string(),
            arities: code.arities(h.handler),
        })
        .collect()
}

/// B2: each override handler of `extension` takes the parameters of the definition it
/// overrides, as the model (`view`) has it now: when the overriding extension loads, and when an
/// extension it overrides changes. An override of nothing inherited, or of a definition that
/// does not allow it, is the model's to refuse (`validate`), with its reason.
pub fn check_override_handlers(
    view: &dyn View,
    extension: &str,
    overrides: &[OverrideHandler],
) -> Result<(), ModelError> {
    for o in overrides {
        let Some(e) = view.get(o.kind, &o.entity) else {
            continue;
        };
        let Some((def, source)) = thinghost_core::validate::find_service(view, e, &o.service)
        else {
            continue;
        };
        if !o.arities.contains(&def.parameters.len()) {
            return Err(ModelError::Invalid {
                entity: format!("extension {extension}"),
                message: format!(
                    "{}/{} overrides service {}({}) of {} with the handler {}, which takes {} parameters; it must take the definition's {}",
                    o.kind.collection(),
                    o.entity,
                    o.service,
                    def.parameters
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    source.key(),
                    o.handler,
                    o.arities
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    def.parameters.len()
                ),
            });
        }
    }
    Ok(())
}

/// (holder kind, holder, subscription, source, event, property) of each subscription of the
/// manifest that names another Thing as its source.
type Sourced = (Kind, String, String, String, String, Option<String>);

fn sourced_subscriptions(manifest: &Manifest) -> Vec<Sourced> {
    let mut out = Vec::new();
    let mut add = |kind: Kind, holder: &str, m: &manifest::Members| {
        for s in &m.subscriptions {
            if !(s.source.is_empty() || kind == Kind::Thing && s.source == holder) {
                out.push((
                    kind,
                    holder.to_string(),
                    s.name.clone(),
                    s.source.clone(),
                    s.event.clone(),
                    s.property.clone(),
                ));
            }
        }
    };
    for t in &manifest.things {
        add(Kind::Thing, &t.name, &t.members);
    }
    for t in &manifest.thing_templates {
        add(Kind::ThingTemplate, &t.name, &t.members);
    }
    for t in &manifest.thing_shapes {
        add(Kind::ThingShape, &t.name, &t.members);
    }
    out
}

/// B6: a subscription of the manifest to another Thing's events names an event (and property)
/// that Thing has when the extension loads, as `AddSubscription` checks it for a request.
fn check_sourced_subscriptions(
    view: &dyn View,
    extension: &str,
    sourced: &[Sourced],
) -> Result<(), ModelError> {
    for (kind, holder, name, source, event, property) in sourced {
        let invalid = |message: String| ModelError::Invalid {
            entity: format!("extension {extension}"),
            message: format!(
                "{}/{holder}: subscription {name} to {event} of Things/{source}: {message}",
                kind.collection()
            ),
        };
        let Some(src) = view.get(Kind::Thing, source) else {
            return Err(invalid("there is no such Thing".into()));
        };
        let merged = thinghost_core::validate::merged_definitions(view, src)?;
        let platform = thinghost_core::validate::platform_events_of(view, src);
        if !platform.contains(&event.as_str()) && !merged.events.contains_key(event) {
            return Err(invalid(format!(
                "it has no such event (its events: {})",
                platform
                    .iter()
                    .map(|e| e.to_string())
                    .chain(merged.events.keys().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(p) = property
            && !merged.properties.contains_key(p)
        {
            return Err(invalid(format!("it has no property {p}")));
        }
    }
    Ok(())
}

/// The Things parked when `extension` was removed get back what they had from it, if the
/// returning version still has their template and shapes (else they stay parked). A value of a
/// property the returning version no longer defines is dropped.
fn unpark(tx: &mut Tx<'_>, extension: &str) -> Result<(), ModelError> {
    let parked: Vec<Entity> = tx
        .entities(Kind::Thing)
        .filter(|e| {
            matches!(&e.body, Body::Thing(t)
                if t.parked.as_ref().is_some_and(|p| p.extension == extension))
        })
        .cloned()
        .collect();
    for mut e in parked {
        let Body::Thing(t) = &mut e.body else {
            continue;
        };
        let p = t.parked.take().expect("filtered on it");
        if !tx.contains(Kind::ThingTemplate, &p.thing_template)
            || p.thing_shapes
                .iter()
                .any(|s| !tx.contains(Kind::ThingShape, s))
        {
            continue;
        }
        t.thing_template = p.thing_template;
        t.thing_shapes.extend(p.thing_shapes);
        t.values.extend(p.values);
        let defined = thinghost_core::validate::merged_definitions(tx, &e)?;
        if let Body::Thing(t) = &mut e.body {
            t.values.retain(|k, _| defined.properties.contains_key(k));
        }
        tx.put(e);
    }
    Ok(())
}

/// The change that takes an extension's contributions out of the model (its folder left the
/// plugin directory), in one transaction. A Thing a user made from one of its templates, or that
/// implements one of its shapes, stays: parked ([`Parked`]), based on `GenericThing`, with its
/// own values and permissions, until the extension comes back ([`contribution`] restores it).
/// Anything else of the model that still uses the extension's entities (a user's template based
/// on one of its templates, a data shape in use) refuses the removal, naming its users.
pub fn removal(extension: &str) -> impl FnOnce(&mut Tx<'_>) -> Result<(), ModelError> + use<> {
    let name = extension.to_string();
    move |tx: &mut Tx<'_>| {
        let owned = owned_in(tx, &name);
        let owns = |k: Kind, n: &str| owned.iter().any(|(ok, on)| *ok == k && on == n);
        let users: Vec<Entity> = tx
            .entities(Kind::Thing)
            .filter(|e| e.extension.as_deref() != Some(name.as_str()))
            .filter(|e| match &e.body {
                Body::Thing(t) => {
                    owns(Kind::ThingTemplate, &t.thing_template)
                        || t.thing_shapes.iter().any(|s| owns(Kind::ThingShape, s))
                }
                _ => false,
            })
            .cloned()
            .collect();
        for mut e in users {
            let Body::Thing(t) = &mut e.body else {
                continue;
            };
            if let Some(p) = &t.parked {
                return Err(ModelError::Invalid {
                    entity: format!("extension {name}"),
                    message: format!(
                        "Thing {} is already disabled until extension {} comes back; install {} again or delete the Thing first",
                        e.name, p.extension, p.extension
                    ),
                });
            }
            let (gone, kept): (Vec<String>, Vec<String>) = t
                .thing_shapes
                .iter()
                .cloned()
                .partition(|s| owns(Kind::ThingShape, s));
            let template = if owns(Kind::ThingTemplate, &t.thing_template) {
                std::mem::replace(
                    &mut t.thing_template,
                    thinghost_core::predefined::GENERIC_THING.to_string(),
                )
            } else {
                t.thing_template.clone()
            };
            t.thing_shapes = kept;
            let all_values = std::mem::take(&mut t.values);
            let left = thinghost_core::validate::merged_definitions(tx, &e)?;
            let (stay, go): (std::collections::BTreeMap<_, _>, _) = all_values
                .into_iter()
                .partition(|(k, _)| left.properties.contains_key(k));
            if let Body::Thing(t) = &mut e.body {
                t.values = stay;
                t.parked = Some(Parked {
                    extension: name.clone(),
                    thing_template: template,
                    thing_shapes: gone,
                    values: go,
                });
            }
            tx.put(e);
        }
        delete_all(tx, owned)?;
        Ok(())
    }
}

fn union(a: &thinghost_core::Acl, b: &thinghost_core::Acl) -> thinghost_core::Acl {
    let mut out = a.clone();
    for v in &b.visibility {
        if !out.visibility.contains(v) {
            out.visibility.push(v.clone());
        }
    }
    for e in &b.run_time {
        if !out.run_time.contains(e) {
            out.run_time.push(e.clone());
        }
    }
    for e in &b.design_time {
        if !out.design_time.contains(e) {
            out.design_time.push(e.clone());
        }
    }
    out
}

/// The entities an extension owns in the model.
pub fn owned(model: &Model, extension: &str) -> Vec<(Kind, String)> {
    owned_in(model, extension)
}

fn owned_in(view: &dyn View, extension: &str) -> Vec<(Kind, String)> {
    Kind::ALL
        .iter()
        .flat_map(|k| {
            view.entities(*k)
                .filter(|e| e.extension.as_deref() == Some(extension))
                .map(|e| (*k, e.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Deletes `keys`: Things first, then templates, then shapes and data shapes.
fn delete_all(tx: &mut Tx<'_>, mut keys: Vec<(Kind, String)>) -> Result<(), ModelError> {
    keys.sort_by_key(|(k, _)| match k {
        Kind::Thing => 0,
        Kind::ThingTemplate => 1,
        _ => 2,
    });
    for (k, n) in keys {
        tx.delete(k, &n)?;
    }
    Ok(())
}
