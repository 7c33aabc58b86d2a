//! A naive reference evaluator, written straight from the rules of DOMAIN.md section 2 with no
//! indexes and no caching. It exists to check [`crate::AccessIndex`] (property-based tests
//! compare the two on thousands of random models) and as the baseline of the benchmarks.
//! Never use it to serve requests: it walks the whole model on every call.

use crate::access::{ExplainedBasis, Explanation, LevelName, Outcome, Policy, Scope};
use crate::entity::*;
use crate::model::View;
use crate::names::{Kind, Permission};
use crate::predefined;
use crate::validate::template_chain;

/// What a reference check is about.
#[derive(Clone, Copy, Debug)]
pub enum RefTarget<'a> {
    Collection(Kind),
    Entity {
        kind: Kind,
        name: &'a str,
        /// A property, service or event name; `None` for the whole entity.
        resource: Option<&'a str>,
    },
}

/// A3: the user, `Users`, and every group that contains one of them, found by searching all
/// groups until nothing changes.
pub fn principals(view: &dyn View, user: &str) -> Vec<PrincipalRef> {
    let mut set = vec![
        PrincipalRef::user(user),
        PrincipalRef::group(predefined::USERS),
    ];
    loop {
        let mut grew = false;
        for g in view.entities(Kind::Group) {
            let Body::Group(body) = &g.body else { continue };
            let me = PrincipalRef::group(&g.name);
            if !set.contains(&me) && body.members.iter().any(|m| set.contains(m)) {
                set.push(me);
                grew = true;
            }
        }
        if !grew {
            return set;
        }
    }
}

/// V2: does one of the principals satisfy this visibility entry?
fn satisfies(view: &dyn View, principals: &[PrincipalRef], v: &VisibilityEntry) -> bool {
    let (org, unit) = v.split();
    let Some(Entity {
        body: Body::Organization(o),
        ..
    }) = view.get(Kind::Organization, org)
    else {
        return false;
    };
    let member = |u: &Unit| u.members.iter().any(|m| principals.contains(m));
    match unit {
        None => o.units.iter().any(member),
        Some(x) => {
            // A member of x, or of an ancestor of x, sees what is visible to x.
            let mut cur = o.unit(x);
            let mut steps = 0;
            while let Some(u) = cur {
                if member(u) {
                    return true;
                }
                steps += 1;
                if steps > o.units.len() {
                    return false;
                }
                cur = u.parent.as_deref().and_then(|p| o.unit(p));
            }
            false
        }
    }
}

fn sees(view: &dyn View, principals: &[PrincipalRef], acl: Option<&Acl>) -> bool {
    acl.is_some_and(|a| a.visibility.iter().any(|v| satisfies(view, principals, v)))
}

/// The shapes a Thing implements: its own, then those of its templates, nearest first.
fn shapes_of<'v>(view: &'v dyn View, thing: &ThingBody) -> Vec<&'v Entity> {
    let mut names: Vec<&str> = thing.thing_shapes.iter().map(String::as_str).collect();
    if let Ok(chain) = template_chain(view, &thing.thing_template) {
        for t in chain {
            if let Body::ThingTemplate(b) = &t.body {
                names.extend(b.thing_shapes.iter().map(String::as_str));
            }
        }
    }
    let mut out: Vec<&Entity> = Vec::new();
    for n in names {
        if let Some(s) = view.get(Kind::ThingShape, n)
            && !out.iter().any(|o| o.name == s.name)
        {
            out.push(s);
        }
    }
    out
}

/// One level: some ACLs (one, or all the shapes'), with the name of where each came from.
struct LevelAcls<'v> {
    level: fn(&str, Kind) -> LevelName,
    acls: Vec<(&'v str, &'v Acl)>,
}

/// R2, R3 within one level: the resource's entries first, then `*`; a deny beats an allow.
fn eval(
    level: &LevelAcls<'_>,
    kind: Kind,
    principals: &[PrincipalRef],
    perm: Permission,
    resource: Option<&str>,
) -> Option<ExplainedBasis> {
    let mut scopes = Vec::new();
    if let Some(r) = resource.filter(|r| *r != ALL_RESOURCES) {
        scopes.push((r, Scope::Resource));
    }
    scopes.push((ALL_RESOURCES, Scope::All));
    for (res, scope) in scopes {
        let mut allow = None;
        for (src, acl) in &level.acls {
            let list = if perm.is_design_time() {
                &acl.design_time
            } else {
                &acl.run_time
            };
            for e in list {
                if e.permission == perm && e.resource == res && principals.contains(&e.principal) {
                    let basis = ExplainedBasis::Entry {
                        level: (level.level)(src, kind),
                        scope,
                        principal: e.principal.clone(),
                        resource: res.to_string(),
                        allow: e.allow,
                    };
                    if !e.allow {
                        return Some(basis);
                    }
                    allow.get_or_insert(basis);
                }
            }
        }
        if allow.is_some() {
            return allow;
        }
    }
    None
}

/// Decides from the rules alone. `user` None is the System context.
pub fn check(
    view: &dyn View,
    policy: Policy,
    user: Option<&str>,
    perm: Permission,
    target: RefTarget<'_>,
) -> Explanation {
    let target_name = match target {
        RefTarget::Collection(k) => k.collection().to_string(),
        RefTarget::Entity {
            kind,
            name,
            resource,
        } => match (resource, perm.category()) {
            (Some(r), Some(c)) => format!("{}/{name}/{}/{r}", kind.collection(), c.name()),
            _ => format!("{}/{name}", kind.collection()),
        },
    };
    let done = |outcome, basis| Explanation {
        outcome,
        permission: perm,
        target: target_name.clone(),
        basis,
    };
    let Some(user) = user else {
        return done(Outcome::Allowed, ExplainedBasis::System);
    };
    if !view.contains(Kind::User, user) {
        return done(Outcome::Denied, ExplainedBasis::UnknownUser);
    }
    let ps = principals(view, user);
    if ps.contains(&PrincipalRef::group(predefined::ADMINISTRATORS)) {
        return done(Outcome::Allowed, ExplainedBasis::Administrator);
    }
    let from_basis = |b: ExplainedBasis| {
        let allow = matches!(b, ExplainedBasis::Entry { allow: true, .. });
        done(
            if allow {
                Outcome::Allowed
            } else {
                Outcome::Denied
            },
            b,
        )
    };
    let collection_level = |kind: Kind| LevelAcls {
        level: |_, k| LevelName::Collection(k),
        acls: view
            .collection(kind)
            .map(|a| vec![(kind.collection(), a)])
            .unwrap_or_default(),
    };
    let (kind, name, resource) = match target {
        RefTarget::Collection(kind) => {
            if perm.is_run_time() && !kind.has_run_time_permissions() {
                return done(
                    Outcome::Denied,
                    ExplainedBasis::NoRunTimePermissions { kind },
                );
            }
            return match eval(&collection_level(kind), kind, &ps, perm, None) {
                Some(b) => from_basis(b),
                None => done(Outcome::Denied, ExplainedBasis::NoEntry),
            };
        }
        RefTarget::Entity {
            kind,
            name,
            resource,
        } => (kind, name, resource),
    };
    let Some(e) = view.get(kind, name) else {
        return done(Outcome::NotVisible, ExplainedBasis::NotVisible);
    };
    // P2: the role rules of the platform's services: the group's members may; anyone else
    // needs an entry.
    // A request that names no service meets only a rule for every service (`*`).
    let role = match resource {
        _ if perm != Permission::ServiceInvoke => None,
        Some(service) => predefined::role_rule(kind, name, service),
        None => predefined::role_rule(kind, name, "*"),
    };
    // A role whose group is gone has no members: it fails closed.
    if role.is_some_and(|g| !view.contains(Kind::Group, g)) {
        return done(Outcome::Denied, ExplainedBasis::NoEntry);
    }
    if let Some(group) = role
        && ps.contains(&PrincipalRef::group(group))
    {
        return done(
            Outcome::Allowed,
            ExplainedBasis::Role {
                group: group.to_string(),
                member: true,
            },
        );
    }
    let own_user = policy.own_user_services && kind == Kind::User && name == user;
    if own_user && perm == Permission::ServiceInvoke {
        return done(Outcome::Allowed, ExplainedBasis::OwnUser);
    }
    // V1, V2: visibility first.
    let chain: Vec<&Entity> = match &e.body {
        Body::Thing(t) => template_chain(view, &t.thing_template).unwrap_or_default(),
        _ => vec![],
    };
    let visible = kind == Kind::Resource
        || e.owner.as_deref() == Some(user)
        || own_user
        || sees(view, &ps, Some(&e.permissions))
        || chain
            .iter()
            .any(|t| sees(view, &ps, t.instance_permissions()))
        || sees(view, &ps, view.collection(kind));
    if !visible {
        return done(Outcome::NotVisible, ExplainedBasis::NotVisible);
    }
    // P1: platform Resources' services are every signed-in user's.
    // P2 for anyone else: an entry naming the service itself, on the entity or its collection.
    if let Some(group) = role {
        if let Some(service) = resource {
            for (acl, level) in [
                (Some(&e.permissions), LevelName::Entity),
                (view.collection(kind), LevelName::Collection(kind)),
            ] {
                let matching: Vec<&PermissionEntry> = acl
                    .map(|a| {
                        a.run_time
                            .iter()
                            .filter(|x| {
                                x.permission == perm
                                    && x.resource == service
                                    && ps.contains(&x.principal)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let decided = matching
                    .iter()
                    .find(|x| !x.allow)
                    .or_else(|| matching.first());
                if let Some(x) = decided {
                    return from_basis(ExplainedBasis::Entry {
                        level,
                        scope: crate::access::Scope::Resource,
                        principal: x.principal.clone(),
                        resource: service.to_string(),
                        allow: x.allow,
                    });
                }
            }
        }
        return done(
            Outcome::Denied,
            ExplainedBasis::Role {
                group: group.to_string(),
                member: false,
            },
        );
    }
    if kind == Kind::Resource && perm == Permission::ServiceInvoke {
        return done(Outcome::Allowed, ExplainedBasis::PlatformResource);
    }
    if perm.is_run_time() && !kind.has_run_time_permissions() {
        return done(
            Outcome::Denied,
            ExplainedBasis::NoRunTimePermissions { kind },
        );
    }
    // R1: the levels, most specific first.
    let mut levels = vec![LevelAcls {
        level: |_, _| LevelName::Entity,
        acls: vec![(name, &e.permissions)],
    }];
    if let Body::Thing(t) = &e.body {
        for tpl in &chain {
            levels.push(LevelAcls {
                level: |src, _| LevelName::Template(src.to_string()),
                acls: tpl
                    .instance_permissions()
                    .map(|a| vec![(tpl.name.as_str(), a)])
                    .unwrap_or_default(),
            });
        }
        levels.push(LevelAcls {
            level: |src, _| LevelName::Shapes(src.to_string()),
            acls: shapes_of(view, t)
                .into_iter()
                .filter_map(|s| s.instance_permissions().map(|a| (s.name.as_str(), a)))
                .collect(),
        });
    }
    levels.push(collection_level(kind));
    // R4: the first level with a matching entry decides (strict: any deny wins).
    let mut first_allow = None;
    for level in &levels {
        if let Some(b) = eval(level, kind, &ps, perm, resource) {
            let allow = matches!(b, ExplainedBasis::Entry { allow: true, .. });
            if !allow || !policy.strict {
                return from_basis(b);
            }
            first_allow.get_or_insert(b);
        }
    }
    match first_allow {
        Some(b) => from_basis(b),
        None => done(Outcome::Denied, ExplainedBasis::NoEntry),
    }
}
