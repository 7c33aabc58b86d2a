//! Validation of entities and changes. Everything here reads a [`View`]; nothing mutates.

use crate::entity::*;
use crate::error::ModelError;
use crate::model::View;
use crate::names::{self, Kind};
use crate::predefined;
use std::collections::{BTreeMap, BTreeSet};

/// Something an entity refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ref {
    /// An entity, and in words where the reference stands.
    Entity(Key, String),
    /// An organizational unit (organization, unit), and where the reference stands.
    Unit(String, String, String),
}

/// What a reference points at, borrowed from the entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefTarget<'a> {
    Entity(Kind, &'a str),
    Unit(&'a str, &'a str),
}

/// Calls `f` for every reference of `e`, with a description of where it stands that is only
/// computed if asked for: scans of the whole model allocate nothing.
pub(crate) fn visit_references(e: &Entity, f: &mut dyn FnMut(RefTarget<'_>, &dyn Fn() -> String)) {
    let place = || e.key().to_string();
    if let Some(o) = &e.owner {
        f(RefTarget::Entity(Kind::User, o), &|| {
            format!("the owner of {}", place())
        });
    }
    visit_acl(&e.permissions, &|| place(), f);
    if let Some(acl) = e.instance_permissions() {
        visit_acl(
            acl,
            &|| format!("the instance permissions of {}", place()),
            f,
        );
    }
    if let Some(defs) = e.definitions() {
        for p in &defs.properties {
            if let Some(n) = &p.data_shape {
                f(RefTarget::Entity(Kind::DataShape, n), &|| {
                    format!("property {} of {}", p.name, place())
                });
            }
        }
        for s in &defs.services {
            if let Some(n) = &s.result_data_shape {
                f(RefTarget::Entity(Kind::DataShape, n), &|| {
                    format!("the result of service {} of {}", s.name, place())
                });
            }
            for p in &s.parameters {
                if let Some(n) = &p.data_shape {
                    f(RefTarget::Entity(Kind::DataShape, n), &|| {
                        format!("parameter {} of service {} of {}", p.name, s.name, place())
                    });
                }
            }
        }
        for ev in &defs.events {
            if let Some(n) = &ev.data_shape {
                f(RefTarget::Entity(Kind::DataShape, n), &|| {
                    format!("event {} of {}", ev.name, place())
                });
            }
        }
        for sub in &defs.subscriptions {
            if !sub.source.is_empty() {
                f(RefTarget::Entity(Kind::Thing, &sub.source), &|| {
                    format!("the source of subscription {} of {}", sub.name, place())
                });
            }
        }
    }
    match &e.body {
        Body::Thing(t) => {
            f(
                RefTarget::Entity(Kind::ThingTemplate, &t.thing_template),
                &|| format!("the template of {}", place()),
            );
            for s in &t.thing_shapes {
                f(RefTarget::Entity(Kind::ThingShape, s), &|| {
                    format!("the shapes of {}", place())
                });
            }
            if let Some(v) = &t.storage.value_stream {
                f(RefTarget::Entity(Kind::Thing, v), &|| {
                    format!("the value stream of {}", place())
                });
            }
            if let Some(d) = &t.storage.data_shape {
                f(RefTarget::Entity(Kind::DataShape, d), &|| {
                    format!("the data shape of {}", place())
                });
            }
        }
        Body::ThingTemplate(t) => {
            if let Some(b) = &t.base_thing_template {
                f(RefTarget::Entity(Kind::ThingTemplate, b), &|| {
                    format!("the base template of {}", place())
                });
            }
            for s in &t.thing_shapes {
                f(RefTarget::Entity(Kind::ThingShape, s), &|| {
                    format!("the shapes of {}", place())
                });
            }
        }
        Body::DataShape(d) => {
            for fd in &d.fields {
                if let Some(n) = &fd.data_shape {
                    f(RefTarget::Entity(Kind::DataShape, n), &|| {
                        format!("field {} of {}", fd.name, place())
                    });
                }
            }
        }
        Body::Group(g) => {
            for m in &g.members {
                f(RefTarget::Entity(m.entity_kind(), &m.principal), &|| {
                    format!("the members of {}", place())
                });
            }
        }
        Body::Organization(o) => {
            for u in &o.units {
                for m in &u.members {
                    f(RefTarget::Entity(m.entity_kind(), &m.principal), &|| {
                        format!("the members of unit {} of {}", u.name, place())
                    });
                }
            }
        }
        Body::ApplicationKey(k) => {
            f(RefTarget::Entity(Kind::User, &k.user), &|| {
                format!("the user of {}", place())
            });
        }
        _ => {}
    }
}

fn visit_acl(
    acl: &Acl,
    place: &dyn Fn() -> String,
    f: &mut dyn FnMut(RefTarget<'_>, &dyn Fn() -> String),
) {
    for v in &acl.visibility {
        let (org, unit) = v.split();
        let what = || format!("a visibility entry of {}", place());
        match unit {
            None => f(RefTarget::Entity(Kind::Organization, org), &what),
            Some(u) => f(RefTarget::Unit(org, u), &what),
        }
    }
    for e in acl.design_time.iter().chain(&acl.run_time) {
        f(
            RefTarget::Entity(e.principal.entity_kind(), &e.principal.principal),
            &|| format!("a permission entry of {}", place()),
        );
    }
}

/// Everything `e` refers to, with descriptions (for validating one entity).
pub(crate) fn references(e: &Entity) -> Vec<Ref> {
    let mut out = Vec::new();
    visit_references(e, &mut |t, what| {
        out.push(match t {
            RefTarget::Entity(k, n) => Ref::Entity(Key::new(k, n), what()),
            RefTarget::Unit(o, u) => Ref::Unit(o.to_string(), u.to_string(), what()),
        })
    });
    out
}

/// Does `e` refer to the entity `kind`/`name`? Allocation-free.
pub(crate) fn mentions(e: &Entity, kind: Kind, name: &str) -> bool {
    let mut found = false;
    visit_references(e, &mut |t, _| {
        if t == RefTarget::Entity(kind, name) {
            found = true;
        }
    });
    found
}

fn acl_refs(acl: &Acl, place: &str, out: &mut Vec<Ref>) {
    visit_acl(acl, &|| place.to_string(), &mut |t, what| {
        out.push(match t {
            RefTarget::Entity(k, n) => Ref::Entity(Key::new(k, n), what()),
            RefTarget::Unit(o, u) => Ref::Unit(o.to_string(), u.to_string(), what()),
        })
    });
}

fn check_ref(view: &dyn View, r: &Ref) -> Result<(), ModelError> {
    match r {
        Ref::Entity(key, what) => {
            if view.contains(key.kind, &key.name) {
                Ok(())
            } else {
                Err(ModelError::MissingReference {
                    kind: key.kind,
                    name: key.name.clone(),
                    what: what.clone(),
                    hint: match key.kind {
                        Kind::ThingTemplate | Kind::ThingShape | Kind::DataShape => {
                            "; create it first (or import it in the same file)"
                        }
                        _ => "",
                    },
                })
            }
        }
        Ref::Unit(org, unit, what) => match view.get(Kind::Organization, org) {
            None => Err(ModelError::MissingReference {
                kind: Kind::Organization,
                name: org.clone(),
                what: what.clone(),
                hint: "",
            }),
            Some(o) => match &o.body {
                Body::Organization(b) if b.unit(unit).is_some() => Ok(()),
                _ => Err(ModelError::invalid(
                    what,
                    format!(
                        "organizational unit {org}:{unit} does not exist; name a unit as Organization:Unit"
                    ),
                )),
            },
        },
    }
}

/// Validates every entity and collection of a complete model.
pub(crate) fn validate_all(view: &dyn View) -> Result<(), ModelError> {
    let mut cache = MergeCache::default();
    for kind in Kind::ALL {
        for e in view.entities(kind) {
            validate_entity(view, e, &mut cache, false)?;
        }
        if let Some(acl) = view.collection(kind) {
            validate_collection(view, kind, acl)?;
        }
    }
    Ok(())
}

/// Validates a transaction's writes against the view they produce.
pub(crate) fn validate_change(
    view: &dyn View,
    base: &dyn View,
    writes: &BTreeMap<Key, Option<Entity>>,
    collections: &BTreeMap<Kind, Acl>,
) -> Result<(), ModelError> {
    let mut cache = MergeCache::default();
    let mut removed: Vec<&Key> = Vec::new();
    let mut removed_units: Vec<(String, String)> = Vec::new();
    let mut structural: BTreeSet<Key> = BTreeSet::new();
    for (key, after) in writes {
        match after {
            Some(e) => {
                if e.name != key.name || e.kind() != key.kind {
                    return Err(ModelError::invalid(
                        key,
                        "an entity cannot be renamed or change kind",
                    ));
                }
                let created = base.get(key.kind, &key.name).is_none();
                validate_entity(view, e, &mut cache, created)?;
                // Templates and shapes carry definitions that Things inherit. (A DataShape can break
                // its users only by disappearing, which `ensure_unreferenced` covers.)
                if matches!(key.kind, Kind::ThingTemplate | Kind::ThingShape) {
                    structural.insert(key.clone());
                }
                if let (
                    Body::Organization(now),
                    Some(Entity {
                        body: Body::Organization(was),
                        ..
                    }),
                ) = (&e.body, base.get(key.kind, &key.name))
                {
                    for u in &was.units {
                        if now.unit(&u.name).is_none() {
                            removed_units.push((key.name.clone(), u.name.clone()));
                        }
                    }
                }
            }
            None => {
                if predefined::is_predefined(key.kind, &key.name) {
                    return Err(ModelError::Protected {
                        kind: key.kind,
                        name: key.name.clone(),
                        reason: "it is predefined and the platform needs it",
                    });
                }
                removed.push(key)
            }
        }
    }
    for (kind, acl) in collections {
        validate_collection(view, *kind, acl)?;
    }
    if !removed.is_empty() || !removed_units.is_empty() {
        ensure_unreferenced(view, &removed, &removed_units)?;
    }
    if !structural.is_empty() {
        validate_dependents(view, &structural, &mut cache)?;
    }
    if writes
        .keys()
        .any(|k| matches!(k.kind, Kind::User | Kind::Group | Kind::ApplicationKey))
        && ensure_an_administrator(view).is_err()
        && ensure_an_administrator(base).is_ok()
    {
        return Err(ModelError::LockOut);
    }
    Ok(())
}

/// Can the user sign in with an application key?
fn has_key(view: &dyn View, user: &str) -> bool {
    view.entities(Kind::ApplicationKey)
        .any(|k| matches!(&k.body, Body::ApplicationKey(b) if b.user == user))
}

/// The lock-out guard: a change must leave at least one enabled, unlocked user (other than
/// `System`, which no one signs in as) who can sign in (a password or a key) in
/// `Administrators`, directly or through nested groups; else no one could administer the
/// platform any more. (A change is refused when it takes the last such user away; a model that
/// never had one, such as a new one before its first key, is not.)
fn ensure_an_administrator(view: &dyn View) -> Result<(), ModelError> {
    for g in administrator_groups(view) {
        let Some(Entity {
            body: Body::Group(b),
            ..
        }) = view.get(Kind::Group, &g)
        else {
            continue;
        };
        for m in &b.members {
            if m.kind == PrincipalType::User
                && m.principal != predefined::SYSTEM
                && let Some(Entity {
                    body: Body::User(u),
                    ..
                }) = view.get(Kind::User, &m.principal)
                && u.enabled
                && !u.locked
                && (u.password_hash.is_some() || has_key(view, &m.principal))
            {
                return Ok(());
            }
        }
    }
    Err(ModelError::LockOut)
}

/// `Administrators` and every group inside it, however deep: their members are administrators.
pub(crate) fn administrator_groups(view: &dyn View) -> BTreeSet<String> {
    let mut groups = vec![predefined::ADMINISTRATORS.to_string()];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(g) = groups.pop() {
        if !seen.insert(g.clone()) {
            continue;
        }
        if let Some(Entity {
            body: Body::Group(b),
            ..
        }) = view.get(Kind::Group, &g)
        {
            groups.extend(
                b.members
                    .iter()
                    .filter(|m| m.kind == PrincipalType::Group)
                    .map(|m| m.principal.clone()),
            );
        }
    }
    seen
}

/// Refuses the removal of anything still referenced, naming up to five of its users.
fn ensure_unreferenced(
    view: &dyn View,
    removed: &[&Key],
    units: &[(String, String)],
) -> Result<(), ModelError> {
    let mut users: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let mut unit_users: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut visit = |owner: String, refs: Vec<Ref>| {
        for r in refs {
            match r {
                Ref::Entity(k, _) => {
                    if removed.contains(&&k) {
                        users.entry(k).or_default().push(owner.clone());
                    }
                }
                Ref::Unit(o, u, _) => {
                    let pair = (o, u);
                    if units.contains(&pair) {
                        unit_users.entry(pair).or_default().push(owner.clone());
                    }
                }
            }
        }
    };
    let hit = |t: RefTarget<'_>| match t {
        RefTarget::Entity(k, n) => removed.iter().any(|r| r.kind == k && r.name == n),
        RefTarget::Unit(o, u) => units.iter().any(|(ro, ru)| ro == o && ru == u),
    };
    for kind in Kind::ALL {
        for e in view.entities(kind) {
            let mut refers = false;
            visit_references(e, &mut |t, _| refers |= hit(t));
            if refers {
                visit(e.key().to_string(), references(e));
            }
        }
        if let Some(acl) = view.collection(kind) {
            let mut refs = Vec::new();
            acl_refs(acl, kind.collection(), &mut refs);
            visit(format!("the {} collection", kind.collection()), refs);
        }
    }
    if let Some((k, mut who)) = users.into_iter().next() {
        who.dedup();
        return Err(ModelError::InUse {
            kind: k.kind,
            name: k.name,
            users: who,
            hidden: 0,
        });
    }
    if let Some(((org, unit), mut who)) = unit_users.into_iter().next() {
        who.dedup();
        return Err(ModelError::UnitInUse {
            org,
            unit,
            users: who,
            hidden: 0,
        });
    }
    Ok(())
}

/// Re-checks every template and Thing that inherits from a changed template or shape.
fn validate_dependents(
    view: &dyn View,
    changed: &BTreeSet<Key>,
    cache: &mut MergeCache,
) -> Result<(), ModelError> {
    let mut affected: BTreeSet<String> = BTreeSet::new();
    for t in view.entities(Kind::ThingTemplate) {
        let chain = template_chain(view, &t.name)?;
        let hit = chain.iter().any(|tpl| {
            changed.contains(&Key::new(Kind::ThingTemplate, &tpl.name))
                || template_shapes(tpl)
                    .iter()
                    .any(|s| changed.contains(&Key::new(Kind::ThingShape, s)))
        });
        if hit {
            affected.insert(t.name.clone());
        }
    }
    for name in &affected {
        let t = view.get(Kind::ThingTemplate, name).expect("listed");
        validate_entity(view, t, cache, false)?;
    }
    for thing in view.entities(Kind::Thing) {
        let Body::Thing(b) = &thing.body else {
            continue;
        };
        let own_shape_changed = b
            .thing_shapes
            .iter()
            .any(|s| changed.contains(&Key::new(Kind::ThingShape, s)));
        if affected.contains(&b.thing_template) || own_shape_changed {
            validate_entity(view, thing, cache, false)?;
        }
    }
    Ok(())
}

fn validate_collection(view: &dyn View, kind: Kind, acl: &Acl) -> Result<(), ModelError> {
    let place = format!("the {} collection", kind.collection());
    check_acl(acl, &place, AclPlace::Collection(kind))?;
    let mut refs = Vec::new();
    acl_refs(acl, &place, &mut refs);
    refs.iter().try_for_each(|r| check_ref(view, r))
}

#[derive(Clone, Copy)]
enum AclPlace {
    Entity(Kind),
    TemplateInstance,
    ShapeInstance,
    Collection(Kind),
}

fn check_acl(acl: &Acl, place: &str, at: AclPlace) -> Result<(), ModelError> {
    let kind_runtime = match at {
        AclPlace::Entity(k) | AclPlace::Collection(k) => k.has_run_time_permissions(),
        AclPlace::TemplateInstance | AclPlace::ShapeInstance => true,
    };
    if matches!(at, AclPlace::ShapeInstance)
        && (!acl.visibility.is_empty() || !acl.design_time.is_empty())
    {
        return Err(ModelError::invalid(
            place,
            "a ThingShape's instance permissions hold run-time entries only",
        ));
    }
    for v in &acl.visibility {
        let (org, unit) = v.split();
        names::check_stored_entity_name(org).map_err(|r| {
            ModelError::invalid(
                place,
                format!("visibility principal {:?}: {r}", v.principal),
            )
        })?;
        if let Some(u) = unit {
            names::check_stored_entity_name(u).map_err(|r| {
                ModelError::invalid(
                    place,
                    format!(
                        "visibility principal {:?}: {r} (name a unit as Organization:Unit)",
                        v.principal
                    ),
                )
            })?;
        }
    }
    for e in &acl.design_time {
        if !e.permission.is_design_time() {
            return Err(ModelError::invalid(
                place,
                format!(
                    "{} is a run-time permission, not a design-time one",
                    e.permission
                ),
            ));
        }
        if e.permission == crate::Permission::Create && !matches!(at, AclPlace::Collection(_)) {
            return Err(ModelError::invalid(
                place,
                "Create is granted on a collection only (Resources/CollectionFunctions)",
            ));
        }
        if e.resource != ALL_RESOURCES {
            return Err(ModelError::invalid(
                place,
                "a design-time entry applies to the whole entity: its resource is *",
            ));
        }
    }
    for e in &acl.run_time {
        if !kind_runtime {
            return Err(ModelError::invalid(
                place,
                "ThingShapes, DataShapes and Groups carry no run-time permissions of their own (R5)",
            ));
        }
        if !e.permission.is_run_time() {
            return Err(ModelError::invalid(
                place,
                format!(
                    "{} is a design-time permission, not a run-time one",
                    e.permission
                ),
            ));
        }
        if e.resource != ALL_RESOURCES {
            names::check_member_name(&e.resource).map_err(|r| {
                ModelError::invalid(
                    place,
                    format!("resource {:?}: {r}; use * for all", e.resource),
                )
            })?;
        }
    }
    Ok(())
}

fn check_definitions(defs: &Definitions, place: &str) -> Result<(), ModelError> {
    if let Some(p) = defs
        .properties
        .iter()
        .find(|p| p.logged && p.base_type == crate::BaseType::Password)
    {
        return Err(ModelError::invalid(
            place,
            format!(
                "property {} is a PASSWORD: its values are never logged (a value stream keeps what it records)",
                p.name
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let member = |n: &str, what: &'static str| {
        names::check_member_name(n).map_err(|reason| ModelError::InvalidName {
            what,
            name: n.to_string(),
            reason,
        })
    };
    for p in &defs.properties {
        member(&p.name, "property")?;
        if !seen.insert(("property", p.name.as_str())) {
            return Err(dup(place, "property", &p.name, place, place));
        }
        if p.base_type == crate::BaseType::Nothing {
            return Err(ModelError::invalid(
                place,
                format!("property {} cannot be of type NOTHING", p.name),
            ));
        }
        if let Some(d) = &p.default_value {
            p.base_type.normalize(d).map_err(|e| {
                ModelError::invalid(
                    place,
                    format!("the default value of property {}: {e}", p.name),
                )
            })?;
        }
    }
    for s in &defs.services {
        member(&s.name, "service")?;
        if !seen.insert(("service", s.name.as_str())) {
            return Err(dup(place, "service", &s.name, place, place));
        }
        let mut params = BTreeSet::new();
        for p in &s.parameters {
            member(&p.name, "parameter")?;
            if !params.insert(p.name.as_str()) {
                return Err(ModelError::invalid(
                    place,
                    format!("service {} has two parameters named {}", s.name, p.name),
                ));
            }
            if p.base_type == crate::BaseType::Nothing {
                return Err(ModelError::invalid(
                    place,
                    format!(
                        "parameter {} of service {} cannot be of type NOTHING",
                        p.name, s.name
                    ),
                ));
            }
        }
    }
    for e in &defs.events {
        member(&e.name, "event")?;
        if !seen.insert(("event", e.name.as_str())) {
            return Err(dup(place, "event", &e.name, place, place));
        }
    }
    for sub in &defs.subscriptions {
        member(&sub.name, "subscription")?;
        if !seen.insert(("subscription", sub.name.as_str())) {
            return Err(dup(place, "subscription", &sub.name, place, place));
        }
        if sub.property.is_some() && sub.event != DATA_CHANGE {
            return Err(ModelError::invalid(
                place,
                format!(
                    "subscription {} names a property: only a {DATA_CHANGE} subscription may",
                    sub.name
                ),
            ));
        }
    }
    for o in &defs.overrides {
        member(&o.name, "service")?;
        if defs.services.iter().any(|s| s.name == o.name) {
            return Err(ModelError::invalid(
                place,
                format!(
                    "defines service {} itself: change its code (UpdateServiceDefinition) instead of overriding it",
                    o.name
                ),
            ));
        }
        if !seen.insert(("override", o.name.as_str())) {
            return Err(dup(place, "service override", &o.name, place, place));
        }
    }
    Ok(())
}

/// B6: each subscription of `e` names an event its source has (and, for `DataChange` of one
/// property, a property it has). `own`: the holder's events and properties (merged along its
/// chain; a shape's own).
fn check_subscriptions(
    view: &dyn View,
    e: &Entity,
    own: (BTreeSet<&str>, BTreeSet<&str>),
    place: &str,
) -> Result<(), ModelError> {
    let Some(defs) = e.definitions() else {
        return Ok(());
    };
    for sub in &defs.subscriptions {
        // A subscription to another Thing's events is checked against that Thing when it is
        // added (`AddSubscription`): a later change of the source (an event or property
        // removed) leaves it waiting for events that no longer come, and is no reason to refuse
        // that change, nor the model at its next start. The source must exist (a reference).
        if !sub.source.is_empty() {
            continue;
        }
        let (events, properties, of) = (own.0.clone(), own.1.clone(), "it".to_string());
        // The platform's own events of the holder (DataChange; Timer, ScheduledEvent).
        let platform = platform_events_of(view, e);
        if !platform.contains(&sub.event.as_str()) && !events.contains(sub.event.as_str()) {
            return Err(ModelError::invalid(
                place,
                format!(
                    "subscription {} is to event {}, which {of} does not have (its events: {})",
                    sub.name,
                    sub.event,
                    platform
                        .iter()
                        .copied()
                        .chain(events.iter().copied())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(p) = &sub.property
            && !properties.contains(p.as_str())
        {
            return Err(ModelError::invalid(
                place,
                format!(
                    "subscription {} is to changes of property {p}, which {of} does not have",
                    sub.name
                ),
            ));
        }
    }
    Ok(())
}

/// The events the platform fires for `e` (a Thing, template or shape): `DataChange`, and
/// `Timer` / `ScheduledEvent` along a timer's or scheduler's template chain.
pub fn platform_events_of(view: &dyn View, e: &Entity) -> Vec<&'static str> {
    let template = match &e.body {
        Body::Thing(t) => Some(t.thing_template.as_str()),
        Body::ThingTemplate(_) => Some(e.name.as_str()),
        _ => None,
    };
    let chain = template
        .and_then(|t| template_chain(view, t).ok())
        .unwrap_or_default();
    predefined::platform_events(chain.iter().map(|t| t.name.as_str()))
}

/// B2: each override of `e` names an inherited service whose definition allows overrides.
fn check_overrides(e: &Entity, merged: &Merged, place: &str) -> Result<(), ModelError> {
    let Some(defs) = e.definitions() else {
        return Ok(());
    };
    for o in &defs.overrides {
        let Some((def, source)) = merged.services.get(&o.name) else {
            return Err(ModelError::invalid(
                place,
                format!(
                    "overrides service {}, which it does not inherit (an override gives an inherited service another implementation)",
                    o.name
                ),
            ));
        };
        if !def.allow_override {
            return Err(ModelError::invalid(
                place,
                format!(
                    "cannot override service {} of {source}: its definition does not allow overrides (allowOverride is false)",
                    o.name
                ),
            ));
        }
    }
    Ok(())
}

fn dup(entity: &str, category: &'static str, name: &str, first: &str, second: &str) -> ModelError {
    ModelError::DuplicateDefinition {
        entity: entity.to_string(),
        category,
        name: name.to_string(),
        first: first.to_string(),
        second: second.to_string(),
    }
}

/// Validates one entity in the context of `view`; `created`: it is new (its name is held to
/// today's rules; an entity already stored keeps the name it has, see
/// [`names::check_stored_entity_name`]).
fn validate_entity(
    view: &dyn View,
    e: &Entity,
    cache: &mut MergeCache,
    created: bool,
) -> Result<(), ModelError> {
    let kind = e.kind();
    let place = e.key().to_string();
    let check = if created {
        names::check_entity_name
    } else {
        names::check_stored_entity_name
    };
    check(&e.name).map_err(|reason| ModelError::InvalidName {
        what: kind.label(),
        name: e.name.clone(),
        reason,
    })?;
    for t in &e.tags {
        names::check_tag(t).map_err(|r| ModelError::invalid(&place, format!("tag {t:?}: {r}")))?;
    }
    for r in references(e) {
        check_ref(view, &r)?;
    }
    check_acl(&e.permissions, &place, AclPlace::Entity(kind))?;
    if let Some(defs) = e.definitions() {
        check_definitions(defs, &place)?;
    }
    match &e.body {
        Body::Thing(t) => {
            let merged = merged_definitions_cached(view, e, cache)?;
            check_overrides(e, &merged, &place)?;
            check_subscriptions(view, e, merged.names(), &place)?;
            for s in &t.thing_shapes {
                if t.thing_shapes.iter().filter(|x| *x == s).count() > 1 {
                    return Err(ModelError::invalid(
                        &place,
                        format!("implements ThingShape {s} twice"),
                    ));
                }
            }
            check_storage(view, t, &place)?;
            for (name, value) in &t.values {
                let Some((def, _)) = merged.properties.get(name) else {
                    return Err(ModelError::invalid(
                        &place,
                        format!("has a value for {name}, which is not one of its properties"),
                    ));
                };
                def.base_type.normalize(value).map_err(|err| {
                    ModelError::invalid(&place, format!("property {name}: {err}"))
                })?;
            }
        }
        Body::ThingTemplate(t) => {
            match (&t.base_thing_template, e.name == predefined::GENERIC_THING) {
                (None, false) => {
                    return Err(ModelError::invalid(
                        &place,
                        "a template needs a base template (GenericThing at the root)",
                    ));
                }
                (Some(_), true) => {
                    return Err(ModelError::Protected {
                        kind,
                        name: e.name.clone(),
                        reason: "GenericThing is the root of every template chain",
                    });
                }
                _ => {}
            }
            template_chain(view, &e.name)?;
            check_acl(
                &t.instance_permissions,
                &format!("the instance permissions of {place}"),
                AclPlace::TemplateInstance,
            )?;
            let merged = merged_definitions_cached(view, e, cache)?;
            check_overrides(e, &merged, &place)?;
            check_subscriptions(view, e, merged.names(), &place)?;
        }
        Body::ThingShape(s) => {
            let events: BTreeSet<&str> = s
                .definitions
                .events
                .iter()
                .map(|v| v.name.as_str())
                .collect();
            let properties: BTreeSet<&str> = s
                .definitions
                .properties
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            check_subscriptions(view, e, (events, properties), &place)?;
            if !s.definitions.overrides.is_empty() {
                return Err(ModelError::invalid(
                    &place,
                    "a ThingShape cannot override a service: templates and Things override what they inherit",
                ));
            }
            check_acl(
                &s.instance_permissions,
                &format!("the instance permissions of {place}"),
                AclPlace::ShapeInstance,
            )?;
        }
        Body::DataShape(d) => {
            let mut seen = BTreeSet::new();
            for f in &d.fields {
                names::check_member_name(&f.name).map_err(|reason| ModelError::InvalidName {
                    what: "field",
                    name: f.name.clone(),
                    reason,
                })?;
                if !seen.insert(f.name.as_str()) {
                    return Err(dup(&place, "field", &f.name, &place, &place));
                }
            }
        }
        Body::Group(g) => {
            if e.name == predefined::ADMINISTRATORS
                && !g
                    .members
                    .contains(&PrincipalRef::user(predefined::ADMINISTRATOR))
            {
                return Err(ModelError::Protected {
                    kind,
                    name: e.name.clone(),
                    reason: "Administrator must stay a member, or nobody could administer the platform",
                });
            }
            if g.members.contains(&PrincipalRef::user(predefined::SYSTEM)) {
                return Err(ModelError::invalid(
                    &place,
                    "System is the host's own context and joins no group",
                ));
            }
            group_cycle(view, &e.name)?;
        }
        Body::Organization(o) => validate_units(&place, o)?,
        Body::ApplicationKey(k) => {
            if k.user == predefined::SYSTEM {
                return Err(ModelError::invalid(
                    &place,
                    "no key can carry the System context; give the key a user of its own",
                ));
            }
            if k.key_hash.is_empty() {
                return Err(ModelError::invalid(&place, "a key needs its hash"));
            }
            for w in &k.whitelist {
                check_address_range(w).map_err(|m| ModelError::invalid(&place, m))?;
            }
        }
        Body::User(_) | Body::Subsystem(_) | Body::Resource(_) | Body::PersistenceProvider(_) => {}
    }
    Ok(())
}

/// Is the template `template`, or one it is based on, `base`?
pub fn based_on(view: &dyn View, template: &str, base: &str) -> bool {
    template_chain(view, template).is_ok_and(|chain| chain.iter().any(|t| t.name == base))
}

/// The data-storage template (`Stream`, `DataTable`, `ValueStream`) a Thing of `template` is
/// based on, if any.
pub fn storage_kind(view: &dyn View, template: &str) -> Option<&'static str> {
    predefined::DATA_STORAGE_TEMPLATES
        .iter()
        .copied()
        .find(|base| based_on(view, template, base))
}

/// A Thing's data-storage settings (H1-H5): its value stream is a ValueStream Thing; a data
/// shape only on a Stream or a DataTable, retention only on a Stream or a ValueStream.
fn check_storage(view: &dyn View, t: &ThingBody, place: &str) -> Result<(), ModelError> {
    let s = &t.storage;
    if let Some(v) = &s.value_stream {
        let is_stream = match view.get(Kind::Thing, v).map(|e| &e.body) {
            Some(Body::Thing(vs)) => based_on(view, &vs.thing_template, predefined::VALUE_STREAM),
            _ => false,
        };
        if !is_stream {
            return Err(ModelError::invalid(
                place,
                format!("its value stream {v} is not a ValueStream Thing"),
            ));
        }
    }
    let kind = storage_kind(view, &t.thing_template);
    if s.data_shape.is_some() && !matches!(kind, Some(predefined::STREAM | predefined::DATA_TABLE))
    {
        return Err(ModelError::invalid(
            place,
            "only a Stream or a DataTable Thing has a data shape",
        ));
    }
    if !s.indexes.is_empty() && kind != Some(predefined::DATA_TABLE) {
        return Err(ModelError::invalid(
            place,
            "only a DataTable Thing has indexes",
        ));
    }
    for f in &s.indexes {
        names::check_member_name(f)
            .map_err(|r| ModelError::invalid(place, format!("index {f:?}: {r}")))?;
    }
    if (s.retention_days != 0 || s.max_entries != 0)
        && !matches!(kind, Some(predefined::STREAM | predefined::VALUE_STREAM))
    {
        return Err(ModelError::invalid(
            place,
            "only a Stream or a ValueStream Thing has a retention or a maximum entry count",
        ));
    }
    Ok(())
}

/// Checks an IP address or CIDR range (`10.0.0.0/8`, `::1`).
pub fn check_address_range(s: &str) -> Result<(), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
        }
    }
    Ok(())
}

fn validate_units(place: &str, o: &OrganizationBody) -> Result<(), ModelError> {
    let mut names_seen = BTreeSet::new();
    let mut tops = 0;
    for u in &o.units {
        names::check_stored_entity_name(&u.name).map_err(|reason| ModelError::InvalidName {
            what: "organizational unit",
            name: u.name.clone(),
            reason,
        })?;
        if !names_seen.insert(u.name.as_str()) {
            return Err(ModelError::invalid(
                place,
                format!("has two units named {}", u.name),
            ));
        }
        match &u.parent {
            None => tops += 1,
            Some(p) if o.unit(p).is_none() => {
                return Err(ModelError::invalid(
                    place,
                    format!(
                        "unit {} has parent {p}, which is not a unit of this organization",
                        u.name
                    ),
                ));
            }
            _ => {}
        }
    }
    if tops != 1 {
        return Err(ModelError::invalid(
            place,
            "an organization has exactly one top unit (the one without a parent)",
        ));
    }
    for u in &o.units {
        let mut path = vec![u.name.clone()];
        let mut cur = u.parent.as_deref();
        while let Some(p) = cur {
            if path.iter().any(|x| x == p) {
                path.push(p.to_string());
                return Err(ModelError::Cycle {
                    kind: Kind::Organization,
                    path,
                });
            }
            path.push(p.to_string());
            cur = o.unit(p).and_then(|x| x.parent.as_deref());
        }
    }
    Ok(())
}

fn group_cycle(view: &dyn View, start: &str) -> Result<(), ModelError> {
    // Depth-first search from `start` through group members; reaching `start` again is a cycle.
    fn visit(
        view: &dyn View,
        name: &str,
        start: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), ModelError> {
        let Some(Entity {
            body: Body::Group(g),
            ..
        }) = view.get(Kind::Group, name)
        else {
            return Ok(());
        };
        for m in g.members.iter().filter(|m| m.kind == PrincipalType::Group) {
            path.push(m.principal.clone());
            if m.principal == start {
                return Err(ModelError::Cycle {
                    kind: Kind::Group,
                    path: path.clone(),
                });
            }
            if done.insert(m.principal.clone()) {
                visit(view, &m.principal, start, path, done)?;
            }
            path.pop();
        }
        Ok(())
    }
    visit(
        view,
        start,
        start,
        &mut vec![start.to_string()],
        &mut BTreeSet::new(),
    )
}

fn template_shapes(e: &Entity) -> &[String] {
    match &e.body {
        Body::ThingTemplate(t) => &t.thing_shapes,
        Body::Thing(t) => &t.thing_shapes,
        _ => &[],
    }
}

/// The template chain from `name` up to the root, nearest first; a cycle is an error.
pub fn template_chain<'v>(view: &'v dyn View, name: &str) -> Result<Vec<&'v Entity>, ModelError> {
    let mut chain: Vec<&Entity> = Vec::new();
    let mut cur = Some(name.to_string());
    while let Some(n) = cur {
        if chain.iter().any(|t| t.name == n) {
            let mut path: Vec<String> = chain.iter().map(|t| t.name.clone()).collect();
            path.push(n);
            return Err(ModelError::Cycle {
                kind: Kind::ThingTemplate,
                path,
            });
        }
        let Some(t) = view.get(Kind::ThingTemplate, &n) else {
            return Err(ModelError::MissingReference {
                kind: Kind::ThingTemplate,
                name: n,
                what: format!("the template chain of {name}"),
                hint: "",
            });
        };
        chain.push(t);
        cur = match &t.body {
            Body::ThingTemplate(b) => b.base_thing_template.clone(),
            _ => None,
        };
    }
    Ok(chain)
}

/// Where one member of a Thing or template is defined, and its definition: found along the
/// entity, its shapes, and its template chain with their shapes, without merging the rest (what
/// one request needs: the service it calls, the property it reads). Validation keeps each name
/// defined by one source per chain, so the first found is the one [`merged_definitions`] has.
pub fn find_member<'v, T>(
    view: &'v dyn View,
    e: &'v Entity,
    pick: impl Fn(&'v Definitions) -> Option<&'v T>,
) -> Option<(&'v T, &'v Entity)> {
    let in_one = |x: &'v Entity| -> Option<(&'v T, &'v Entity)> {
        if let Some(d) = x.definitions().and_then(&pick) {
            return Some((d, x));
        }
        template_shapes(x).iter().find_map(|s| {
            let shape = view.get(Kind::ThingShape, s)?;
            Some((shape.definitions().and_then(&pick)?, shape))
        })
    };
    let mut cur = Some(e);
    // Validation refuses cycles; should one be there anyway, the walk stops where it repeats.
    let mut seen: Vec<&str> = Vec::new();
    while let Some(x) = cur {
        if seen.contains(&x.name.as_str()) && x.kind() == Kind::ThingTemplate {
            return None;
        }
        if x.kind() == Kind::ThingTemplate {
            seen.push(&x.name);
        }
        if let Some(found) = in_one(x) {
            return Some(found);
        }
        cur = next_up(view, x);
    }
    None
}

/// The next entity up a chain: a Thing's template, a template's base template.
fn next_up<'v>(view: &'v dyn View, x: &Entity) -> Option<&'v Entity> {
    match &x.body {
        Body::Thing(t) => view.get(Kind::ThingTemplate, &t.thing_template),
        Body::ThingTemplate(t) => t
            .base_thing_template
            .as_deref()
            .and_then(|b| view.get(Kind::ThingTemplate, b)),
        _ => None,
    }
}

/// A service of a Thing or template along its chain: [`find_member`] for services.
pub fn find_service<'v>(
    view: &'v dyn View,
    e: &'v Entity,
    name: &str,
) -> Option<(&'v ServiceDef, &'v Entity)> {
    find_member(view, e, |d| d.services.iter().find(|s| s.name == name))
}

/// The implementation of a service of a Thing or template that runs (B2): where the definition
/// is, where the implementation is (the nearest override along the entity and its template
/// chain, else the definition's source), and its Rhai code, if it is code (none: the handler of
/// the extension that contributed `implementer`, or nothing, B1).
#[derive(Clone, Copy, Debug)]
pub struct Implementation<'v> {
    pub def: &'v ServiceDef,
    pub source: &'v Entity,
    pub implementer: &'v Entity,
    pub code: Option<&'v str>,
}

impl Implementation<'_> {
    /// Is it an override (implemented elsewhere than its definition)?
    pub fn overridden(&self) -> bool {
        !std::ptr::eq(self.source, self.implementer)
    }
}

/// The implementation of service `name` of `e` that runs (B2): the entity's own override, then
/// its template chain's nearest first; else the definition's own (code or handler).
pub fn find_implementation<'v>(
    view: &'v dyn View,
    e: &'v Entity,
    name: &str,
) -> Option<Implementation<'v>> {
    let (def, source) = find_service(view, e, name)?;
    let mut cur = Some(e);
    let mut seen: Vec<&str> = Vec::new();
    while let Some(x) = cur {
        if std::ptr::eq(x, source) || seen.contains(&x.name.as_str()) {
            break;
        }
        seen.push(&x.name);
        if let Some(o) = x
            .definitions()
            .and_then(|d| d.overrides.iter().find(|o| o.name == name))
        {
            return Some(Implementation {
                def,
                source,
                implementer: x,
                code: o.code.as_deref(),
            });
        }
        cur = next_up(view, x);
    }
    Some(Implementation {
        def,
        source,
        implementer: source,
        code: def.code.as_deref(),
    })
}

/// A property of a Thing or template along its chain: [`find_member`] for properties.
pub fn find_property<'v>(
    view: &'v dyn View,
    e: &'v Entity,
    name: &str,
) -> Option<(&'v PropertyDef, &'v Entity)> {
    find_member(view, e, |d| d.properties.iter().find(|p| p.name == name))
}

/// Definitions merged along the template chain and the implemented shapes, each with its source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    pub properties: BTreeMap<String, (PropertyDef, String)>,
    pub services: BTreeMap<String, (ServiceDef, String)>,
    pub events: BTreeMap<String, (EventDef, String)>,
}

impl Merged {
    /// The names of its events and properties.
    fn names(&self) -> (BTreeSet<&str>, BTreeSet<&str>) {
        (
            self.events.keys().map(String::as_str).collect(),
            self.properties.keys().map(String::as_str).collect(),
        )
    }
}

#[derive(Default)]
struct MergeCache {
    templates: BTreeMap<String, Merged>,
}

/// The definitions of a Thing or template merged along its chain and shapes. A name defined
/// twice in one chain (by two sources) is an error naming both.
pub fn merged_definitions(view: &dyn View, e: &Entity) -> Result<Merged, ModelError> {
    merged_definitions_cached(view, e, &mut MergeCache::default())
}

fn merged_definitions_cached(
    view: &dyn View,
    e: &Entity,
    cache: &mut MergeCache,
) -> Result<Merged, ModelError> {
    let place = e.key().to_string();
    let mut merged = match &e.body {
        Body::Thing(t) => {
            let tpl = view
                .get(Kind::ThingTemplate, &t.thing_template)
                .ok_or_else(|| ModelError::MissingReference {
                    kind: Kind::ThingTemplate,
                    name: t.thing_template.clone(),
                    what: format!("the template of {place}"),
                    hint: "",
                })?;
            if !cache.templates.contains_key(&tpl.name) {
                let m = merged_definitions_cached(view, tpl, cache)?;
                cache.templates.insert(tpl.name.clone(), m);
            }
            cache.templates[&tpl.name].clone()
        }
        Body::ThingTemplate(t) => match &t.base_thing_template {
            Some(base) => {
                template_chain(view, &e.name)?;
                let b = view.get(Kind::ThingTemplate, base).expect("chain checked");
                if !cache.templates.contains_key(base) {
                    let m = merged_definitions_cached(view, b, cache)?;
                    cache.templates.insert(base.clone(), m);
                }
                cache.templates[base].clone()
            }
            None => Merged::default(),
        },
        _ => Merged::default(),
    };
    let mut sources: Vec<(String, &Definitions)> = Vec::new();
    if let Some(defs) = e.definitions() {
        sources.push((place.clone(), defs));
    }
    for s in template_shapes(e) {
        // A shape the chain already brings in is the same source, not a duplicate.
        let label = format!("ThingShapes/{s}");
        let already = merged.properties.values().any(|(_, src)| *src == label)
            || merged.services.values().any(|(_, src)| *src == label)
            || merged.events.values().any(|(_, src)| *src == label);
        if already {
            continue;
        }
        if let Some(shape) = view.get(Kind::ThingShape, s)
            && let Some(defs) = shape.definitions()
        {
            sources.push((label, defs));
        }
    }
    for (src, defs) in sources {
        add_defs(
            &mut merged.properties,
            &defs.properties,
            |p| &p.name,
            &src,
            &place,
            "property",
        )?;
        add_defs(
            &mut merged.services,
            &defs.services,
            |s| &s.name,
            &src,
            &place,
            "service",
        )?;
        add_defs(
            &mut merged.events,
            &defs.events,
            |v| &v.name,
            &src,
            &place,
            "event",
        )?;
    }
    Ok(merged)
}

fn add_defs<T: Clone>(
    into: &mut BTreeMap<String, (T, String)>,
    defs: &[T],
    name: impl Fn(&T) -> &String,
    src: &str,
    place: &str,
    category: &'static str,
) -> Result<(), ModelError> {
    for d in defs {
        let n = name(d);
        if let Some((_, first)) = into.get(n) {
            return Err(dup(place, category, n, first, src));
        }
        into.insert(n.clone(), (d.clone(), src.to_string()));
    }
    Ok(())
}
