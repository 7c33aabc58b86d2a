//! Permission insight: what one user holds on every entity it can see (`EffectivePermissions`),
//! and how a change moves those holdings for every user (a script's dry-run *access impact*).
//!
//! Everything here asks [`AccessIndex::check`](crate::access::AccessIndex::check), the one
//! access decision; nothing reinterprets permission entries. The only thing read from the
//! entries is *which resource names* deserve a question of their own: a name that no entry
//! mentions answers like `*` (see [`Target`]), so the `*` row speaks for it.

use crate::access::{Outcome, Target};
use crate::entity::{Acl, Body, Entity};
use crate::model::{Model, View};
use crate::names::{Kind, Permission};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The pseudo-permission of a visibility row.
pub const VISIBLE: &str = "Visible";
/// The pseudo-permission of an administrator's single row.
pub const ADMINISTRATOR: &str = "Administrator";

/// One permission a user holds (or, for an override that takes away what `*` gives, does not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// `Things/Pump1`, or a collection (`Things`) for `Create`, or `*` for an administrator.
    pub entity: String,
    /// `Visible`, a design-time or run-time permission, or `Administrator`.
    pub permission: String,
    /// `*`, or the property, service or event an override names.
    pub resource: String,
    pub allowed: bool,
    /// Why: the rule that decided (empty when not asked for).
    pub why: String,
}

/// One permission a change gives or takes from a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub user: String,
    pub entity: String,
    pub permission: String,
    pub resource: String,
    /// `gained` or `lost`.
    pub change: &'static str,
    /// The rule that decides it after the change.
    pub why: String,
}

type Key = (String, String, String);

/// The override resources that may apply to `e`, per run-time permission: those its own
/// entries, its templates' and shapes' instance entries and its collection's entries name.
fn override_resources(m: &Model, e: &Entity) -> BTreeMap<Permission, BTreeSet<String>> {
    let mut acls: Vec<&Acl> = vec![&e.permissions];
    if let Some(c) = m.collection(e.kind()) {
        acls.push(c);
    }
    let (template, mut shapes): (Option<&str>, Vec<&str>) = match &e.body {
        Body::Thing(t) => (
            Some(t.thing_template.as_str()),
            t.thing_shapes.iter().map(String::as_str).collect(),
        ),
        Body::ThingTemplate(_) => (Some(e.name.as_str()), vec![]),
        _ => (None, vec![]),
    };
    if let Some(t) = template
        && let Ok(chain) = crate::validate::template_chain(m, t)
    {
        for t in chain {
            if let Some(acl) = t.instance_permissions() {
                acls.push(acl);
            }
            if let Body::ThingTemplate(b) = &t.body {
                shapes.extend(b.thing_shapes.iter().map(String::as_str));
            }
        }
    }
    for s in shapes {
        if let Some(acl) = m
            .get(Kind::ThingShape, s)
            .and_then(Entity::instance_permissions)
        {
            acls.push(acl);
        }
    }
    let mut out: BTreeMap<Permission, BTreeSet<String>> = BTreeMap::new();
    for acl in acls {
        for entry in &acl.run_time {
            if entry.resource != crate::entity::ALL_RESOURCES {
                out.entry(entry.permission)
                    .or_default()
                    .insert(entry.resource.clone());
            }
        }
    }
    out
}

fn why(m: &Model, d: &crate::access::Decision) -> String {
    let text = m.explain(d).to_string();
    match text.split_once('\n') {
        Some((_, rule)) => rule.to_string(),
        None => text,
    }
}

/// Everything `user` holds, entity by entity, in a stable order: `Create` on collections, then
/// for every entity it can see a `Visible` row, the design-time permissions it holds, and the
/// run-time ones (`*`, and each override whose answer differs from `*`'s). An administrator
/// holds everything: one `Administrator` row says so. `None` when there is no such user.
/// `with_why` adds the deciding rule to each row (it costs an explanation per row).
pub fn effective_permissions(m: &Model, user: &str, with_why: bool) -> Option<Vec<Holding>> {
    let access = m.access();
    let subject = access.subject(user)?;
    let explain = |d: &crate::access::Decision| if with_why { why(m, d) } else { String::new() };
    if access.is_administrator(subject) {
        return Some(vec![Holding {
            entity: "*".into(),
            permission: ADMINISTRATOR.into(),
            resource: "*".into(),
            allowed: true,
            why: "a member of Administrators passes every check (A2)".into(),
        }]);
    }
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let d = m.check(subject, Permission::Create, Target::Collection(kind));
        if d.outcome == Outcome::Allowed {
            out.push(Holding {
                entity: kind.collection().into(),
                permission: Permission::Create.name().into(),
                resource: "*".into(),
                allowed: true,
                why: explain(&d),
            });
        }
    }
    for kind in Kind::ALL {
        for e in m.entities(kind) {
            let Some(id) = access.id(kind, &e.name) else {
                continue;
            };
            if !access.visible(subject, id) {
                continue;
            }
            let path = format!("{}/{}", kind.collection(), e.name);
            out.push(Holding {
                entity: path.clone(),
                permission: VISIBLE.into(),
                resource: "*".into(),
                allowed: true,
                why: if with_why {
                    "visible to the user: its own, or visible to an organization or unit it belongs to (V2)".into()
                } else {
                    String::new()
                },
            });
            for p in [Permission::Read, Permission::Update, Permission::Delete] {
                let d = m.check(subject, p, Target::Entity { id, resource: None });
                if d.outcome == Outcome::Allowed {
                    out.push(Holding {
                        entity: path.clone(),
                        permission: p.name().into(),
                        resource: "*".into(),
                        allowed: true,
                        why: explain(&d),
                    });
                }
            }
            if !kind.has_run_time_permissions() {
                continue;
            }
            let overrides = override_resources(m, e);
            for p in Permission::ALL.into_iter().filter(|p| p.is_run_time()) {
                let all = m.check(subject, p, Target::Entity { id, resource: None });
                let all_allowed = all.outcome == Outcome::Allowed;
                if all_allowed {
                    out.push(Holding {
                        entity: path.clone(),
                        permission: p.name().into(),
                        resource: "*".into(),
                        allowed: true,
                        why: explain(&all),
                    });
                }
                for r in overrides.get(&p).into_iter().flatten() {
                    let d = m.check(
                        subject,
                        p,
                        Target::Entity {
                            id,
                            resource: access.sym(r),
                        },
                    );
                    let allowed = d.outcome == Outcome::Allowed;
                    if allowed != all_allowed {
                        out.push(Holding {
                            entity: path.clone(),
                            permission: p.name().into(),
                            resource: r.clone(),
                            allowed,
                            why: explain(&d),
                        });
                    }
                }
            }
        }
    }
    Some(out)
}

/// A user's holdings as answers: (entity, permission, resource) -> allowed.
fn answers(m: &Model, user: &str) -> BTreeMap<Key, bool> {
    effective_permissions(m, user, false)
        .unwrap_or_default()
        .into_iter()
        .map(|h| ((h.entity, h.permission, h.resource), h.allowed))
        .collect()
}

/// What a holding map answers for a key: its own row, else its `*` row, else nothing held.
fn holds(map: &BTreeMap<Key, bool>, k: &Key) -> bool {
    match map.get(k) {
        Some(a) => *a,
        None => map
            .get(&(k.0.clone(), k.1.clone(), "*".to_string()))
            .copied()
            .unwrap_or(false),
    }
}

/// For every user of either model (`System` aside), the permissions the change from `before`
/// to `after` gives (`gained`) or takes (`lost`), with the rule that decides each afterwards.
/// An override that moves with its `*` row is not repeated; an administrator's change is one
/// `Administrator` row.
pub fn access_impact(before: &Model, after: &Model) -> Vec<Impact> {
    let mut users: BTreeSet<String> = BTreeSet::new();
    for m in [before, after] {
        users.extend(
            m.entities(Kind::User)
                .map(|u| u.name.clone())
                .filter(|n| n != crate::predefined::SYSTEM),
        );
    }
    let mut out = Vec::new();
    let is_admin = |m: &Model, user: &str| {
        m.access()
            .subject(user)
            .is_some_and(|s| m.access().is_administrator(s))
    };
    for user in users {
        // An administrator holds everything: becoming or ceasing to be one is the one change
        // worth saying (the rest follows from it).
        let (admin_before, admin_after) = (is_admin(before, &user), is_admin(after, &user));
        if admin_before || admin_after {
            if admin_before != admin_after {
                let k = ("*".to_string(), ADMINISTRATOR.to_string(), "*".to_string());
                out.push(Impact {
                    user: user.clone(),
                    why: why_now(after, &user, &k),
                    entity: k.0,
                    permission: k.1,
                    resource: k.2,
                    change: if admin_after { "gained" } else { "lost" },
                });
            }
            continue;
        }
        let (was, now) = (answers(before, &user), answers(after, &user));
        if was == now {
            continue;
        }
        let keys: BTreeSet<&Key> = was.keys().chain(now.keys()).collect();
        let mut changed: Vec<(Key, bool)> = Vec::new();
        for k in keys {
            let (a, b) = (holds(&was, k), holds(&now, k));
            if a != b {
                changed.push((k.clone(), b));
            }
        }
        // An override that changed the way its `*` row did says nothing more.
        let blanket: BTreeSet<(String, String, bool)> = changed
            .iter()
            .filter(|(k, _)| k.2 == "*")
            .map(|(k, g)| (k.0.clone(), k.1.clone(), *g))
            .collect();
        for (k, gained) in changed {
            if k.2 != "*" && blanket.contains(&(k.0.clone(), k.1.clone(), gained)) {
                continue;
            }
            let why = why_now(after, &user, &k);
            out.push(Impact {
                user: user.clone(),
                entity: k.0,
                permission: k.1,
                resource: k.2,
                change: if gained { "gained" } else { "lost" },
                why,
            });
        }
    }
    out
}

/// The rule that decides a key for a user in `m`, in words.
fn why_now(m: &Model, user: &str, k: &Key) -> String {
    let access = m.access();
    let Some(subject) = access.subject(user) else {
        return "the user does not exist".into();
    };
    if k.1 == ADMINISTRATOR {
        return if access.is_administrator(subject) {
            "a member of Administrators passes every check (A2)".into()
        } else {
            "no longer a member of Administrators".into()
        };
    }
    let Some(permission) = Permission::parse(&k.1) else {
        // Visibility.
        let (collection, name) = k.0.split_once('/').unwrap_or((&k.0, ""));
        let visible = Kind::from_collection(collection)
            .and_then(|kind| access.id(kind, name))
            .is_some_and(|id| access.visible(subject, id));
        return if visible {
            "visible to an organization or unit the user belongs to, or its own (V2)".into()
        } else {
            "not visible to the user, or gone (V1)".into()
        };
    };
    let target = match k.0.split_once('/') {
        None => match Kind::from_collection(&k.0) {
            Some(kind) => Target::Collection(kind),
            None => return String::new(),
        },
        Some((collection, name)) => {
            let Some(id) = Kind::from_collection(collection).and_then(|kind| access.id(kind, name))
            else {
                return "the entity is gone".into();
            };
            let resource = if k.2 == "*" { None } else { access.sym(&k.2) };
            Target::Entity { id, resource }
        }
    };
    why(m, &m.check(subject, permission, target))
}
