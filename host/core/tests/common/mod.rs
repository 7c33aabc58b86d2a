//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use thinghost_core::*;

pub fn model() -> Model {
    Model::with_predefined()
}

pub fn user(m: &mut Model, name: &str) {
    m.create(Entity::user(name)).unwrap();
}

pub fn group(m: &mut Model, name: &str, members: &[PrincipalRef]) {
    let mut g = Entity::group(name);
    if let Body::Group(b) = &mut g.body {
        b.members = members.to_vec();
    }
    m.create(g).unwrap();
}

pub fn add_member(m: &mut Model, group: &str, member: PrincipalRef) {
    m.change(|tx| {
        if let Body::Group(g) = &mut tx.get_mut(Kind::Group, group)?.body {
            g.members.push(member);
        }
        Ok(())
    })
    .unwrap();
}

/// An organization with units given as (name, parent) pairs; the first has no parent.
pub fn org(m: &mut Model, name: &str, units: &[(&str, Option<&str>)]) {
    let body = OrganizationBody {
        units: units
            .iter()
            .map(|(n, p)| Unit {
                name: n.to_string(),
                parent: p.map(str::to_string),
                members: vec![],
            })
            .collect(),
    };
    m.create(Entity::new(name, Body::Organization(body)))
        .unwrap();
}

pub fn unit_member(m: &mut Model, org: &str, unit: &str, member: PrincipalRef) {
    m.change(|tx| {
        if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, org)?.body {
            o.units
                .iter_mut()
                .find(|u| u.name == unit)
                .unwrap()
                .members
                .push(member);
        }
        Ok(())
    })
    .unwrap();
}

pub fn thing(m: &mut Model, name: &str, template: &str) {
    m.create(Entity::thing(name, template)).unwrap();
}

pub fn template(m: &mut Model, name: &str, base: &str) {
    m.create(Entity::template(name, base)).unwrap();
}

/// Changes the entity's own permissions.
pub fn acl(m: &mut Model, kind: Kind, name: &str, f: impl FnOnce(&mut Acl)) {
    m.change(|tx| {
        f(&mut tx.get_mut(kind, name)?.permissions);
        Ok(())
    })
    .unwrap();
}

/// Changes a template's or shape's instance permissions.
pub fn instance_acl(m: &mut Model, kind: Kind, name: &str, f: impl FnOnce(&mut Acl)) {
    m.change(|tx| {
        f(tx.get_mut(kind, name)?.instance_permissions_mut().unwrap());
        Ok(())
    })
    .unwrap();
}

pub fn collection_acl(m: &mut Model, kind: Kind, f: impl FnOnce(&mut Acl)) {
    m.change(|tx| {
        f(tx.collection_mut(kind));
        Ok(())
    })
    .unwrap();
}

pub fn rt(p: PrincipalRef, perm: Permission, resource: &str, allow: bool) -> PermissionEntry {
    PermissionEntry::new(p, perm, resource, allow)
}

pub fn dt(p: PrincipalRef, perm: Permission, allow: bool) -> PermissionEntry {
    PermissionEntry::new(p, perm, "*", allow)
}

/// Makes an entity visible to an organization.
pub fn visible_to(m: &mut Model, kind: Kind, name: &str, org: &str) {
    acl(m, kind, name, |a| {
        a.visibility.push(VisibilityEntry::organization(org))
    });
}

/// The decision for `user` doing `perm` on the path.
pub fn check(m: &Model, user: &str, perm: Permission, path: &str) -> Decision {
    let s = m.subject(user).expect("user exists");
    let t = m.target(path).expect("target exists");
    m.check(s, perm, t)
}

pub fn outcome(m: &Model, user: &str, perm: Permission, path: &str) -> Outcome {
    check(m, user, perm, path).outcome
}

/// A model with org `Acme` (one unit), user `u` in it, and Thing `T1` visible to Acme.
pub fn basic() -> Model {
    let mut m = model();
    user(&mut m, "u");
    org(&mut m, "Acme", &[("Acme", None)]);
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::user("u"));
    thing(&mut m, "T1", "GenericThing");
    visible_to(&mut m, Kind::Thing, "T1", "Acme");
    m
}
