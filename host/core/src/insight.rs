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

/// The rule that decided a check, in words (its explanation without the verdict line).
pub fn rule_of(m: &Model, d: &crate::access::Decision) -> String {
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
    holdings(m, user, with_why, None)
}

/// The entities and collections a change touched: what `access_impact_of` looks at for users
/// whose principals did not change.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub entities: BTreeSet<(Kind, String)>,
    pub collections: BTreeSet<Kind>,
}

impl Touched {
    /// What a list of writes touched.
    pub fn from_writes<'w>(writes: impl IntoIterator<Item = &'w crate::model::Write>) -> Touched {
        let mut t = Touched::default();
        for w in writes {
            match w {
                crate::model::Write::Put(e) => {
                    t.entities.insert((e.kind(), e.name.clone()));
                }
                crate::model::Write::Remove(k) => {
                    t.entities.insert((k.kind, k.name.clone()));
                }
                crate::model::Write::Collection(k, _) => {
                    t.collections.insert(*k);
                }
            }
        }
        t
    }
}

/// `effective_permissions`, limited to `scope` when given: only its entities, and `Create` only
/// on its collections.
fn holdings(
    m: &Model,
    user: &str,
    with_why: bool,
    scope: Option<&Touched>,
) -> Option<Vec<Holding>> {
    let access = m.access();
    let subject = access.subject(user)?;
    let explain = |d: &crate::access::Decision| {
        if with_why {
            rule_of(m, d)
        } else {
            String::new()
        }
    };
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
        if scope.is_some_and(|s| !s.collections.contains(&kind)) {
            continue;
        }
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
        let whole_kind = scope.is_none_or(|s| s.collections.contains(&kind));
        let named: Vec<&Entity> = if whole_kind {
            m.entities(kind).collect()
        } else {
            scope
                .into_iter()
                .flat_map(|s| s.entities.range((kind, String::new())..))
                .take_while(|(k, _)| *k == kind)
                .filter_map(|(k, n)| m.get(*k, n))
                .collect()
        };
        for e in named {
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
fn answers(m: &Model, user: &str, scope: Option<&Touched>) -> BTreeMap<Key, bool> {
    holdings(m, user, false, scope)
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
    impact(before, after, None)
}

/// [`access_impact`] for a change that touched only `touched` (its writes): the same answer,
/// without looking at every entity for every user. A user whose principals or organizations the
/// change may have moved (it touched the user, one of its groups, or an organization it is in,
/// before or after) is compared on everything; any other user only on the touched entities, the
/// Things and templates built on touched templates or shapes, and the touched collections.
pub fn access_impact_of(before: &Model, after: &Model, touched: &Touched) -> Vec<Impact> {
    impact(before, after, Some(touched))
}

/// The principals of a user in a model, as (kind, name), and the organizations they are members
/// of.
pub(crate) fn principals_of(m: &Model, user: &str) -> BTreeSet<(Kind, String)> {
    let access = m.access();
    let Some(s) = access.subject(user) else {
        return BTreeSet::new();
    };
    access
        .principals(s)
        .map(|id| {
            let (k, n) = access.name_of(id);
            (k, n.to_string())
        })
        .collect()
}

/// The units a user's principals are members of, and the unit tree (name, parent).
type OrgPlace = (Vec<String>, Vec<(String, Option<String>)>);

/// Where a user's principals stand in an organization: the units they are members of, and the
/// whole unit tree (name, parent) when they are in any (visibility flows up the tree, so a
/// moved unit moves what its members see). Equal before and after: the organization's change
/// did not move the user.
fn org_place(m: &Model, org: &str, principals: &BTreeSet<(Kind, String)>) -> Option<OrgPlace> {
    let Some(Body::Organization(o)) = m.get(Kind::Organization, org).map(|e| &e.body) else {
        return None;
    };
    let units: Vec<String> = o
        .units
        .iter()
        .filter(|u| {
            u.members
                .iter()
                .any(|p| principals.contains(&(p.entity_kind(), p.principal.clone())))
        })
        .map(|u| u.name.clone())
        .collect();
    if units.is_empty() {
        return None;
    }
    let tree = o
        .units
        .iter()
        .map(|u| (u.name.clone(), u.parent.clone()))
        .collect();
    Some((units, tree))
}

/// The scope for users whose principals did not move: the touched entities, and what inherits
/// from touched templates and shapes.
fn widen(m: &Model, touched: &Touched, scope: &mut Touched) {
    let templates: BTreeSet<&str> = touched
        .entities
        .iter()
        .filter(|(k, _)| *k == Kind::ThingTemplate)
        .map(|(_, n)| n.as_str())
        .collect();
    let shapes: BTreeSet<&str> = touched
        .entities
        .iter()
        .filter(|(k, _)| *k == Kind::ThingShape)
        .map(|(_, n)| n.as_str())
        .collect();
    if templates.is_empty() && shapes.is_empty() {
        return;
    }
    for kind in [Kind::Thing, Kind::ThingTemplate] {
        for e in m.entities(kind) {
            let (template, own_shapes): (&str, &[String]) = match &e.body {
                Body::Thing(t) => (&t.thing_template, &t.thing_shapes),
                Body::ThingTemplate(_) => (&e.name, &[]),
                _ => continue,
            };
            let mut hit = own_shapes.iter().any(|s| shapes.contains(s.as_str()));
            if !hit && let Ok(chain) = crate::validate::template_chain(m, template) {
                hit = chain.iter().any(|t| {
                    templates.contains(t.name.as_str())
                        || matches!(&t.body, Body::ThingTemplate(b) if b.thing_shapes.iter().any(|s| shapes.contains(s.as_str())))
                });
            }
            if hit {
                scope.entities.insert((kind, e.name.clone()));
            }
        }
    }
}

fn impact(before: &Model, after: &Model, touched: Option<&Touched>) -> Vec<Impact> {
    let mut users: BTreeSet<String> = BTreeSet::new();
    for m in [before, after] {
        users.extend(
            m.entities(Kind::User)
                .map(|u| u.name.clone())
                .filter(|n| n != crate::predefined::SYSTEM),
        );
    }
    // With a touched set: the touched users and organizations, and the scope for the users whose
    // principals and organization memberships did not move.
    let narrow: Option<(BTreeSet<String>, Vec<String>, Touched)> = touched.map(|t| {
        let users = t
            .entities
            .iter()
            .filter(|(k, _)| *k == Kind::User)
            .map(|(_, n)| n.clone())
            .collect();
        let orgs = t
            .entities
            .iter()
            .filter(|(k, _)| *k == Kind::Organization)
            .map(|(_, n)| n.clone())
            .collect();
        let mut scope = t.clone();
        widen(before, t, &mut scope);
        widen(after, t, &mut scope);
        (users, orgs, scope)
    });
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
        let scope = match &narrow {
            Some((users, orgs, scope)) => {
                let (was, now) = (principals_of(before, &user), principals_of(after, &user));
                let moved = users.contains(&user)
                    || was != now
                    || orgs
                        .iter()
                        .any(|o| org_place(before, o, &was) != org_place(after, o, &now));
                if moved {
                    None
                } else if scope.entities.is_empty() && scope.collections.is_empty() {
                    continue;
                } else {
                    Some(scope)
                }
            }
            None => None,
        };
        let (was, now) = (answers(before, &user, scope), answers(after, &user, scope));
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
    rule_of(m, &m.check(subject, permission, target))
}
