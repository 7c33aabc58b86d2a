//! The platform's own rules (issue 17), decided and explained by the engine, and given the same
//! answer by the reference evaluator: P1, platform Resources are every signed-in user's; P2, the
//! role rules of the platform's services (SecurityAdministrators, Auditors).

mod common;
use common::*;
use thinghost_core::access::ExplainedBasis;
use thinghost_core::reference::{self, RefTarget};
use thinghost_core::*;

/// The engine's explanation of `user` invoking `service` of `kind`/`name`, checked against the
/// reference evaluator's.
fn invoke(
    m: &Model,
    user: &str,
    kind: Kind,
    name: &str,
    service: &str,
) -> (Outcome, ExplainedBasis) {
    let s = m.subject(user).unwrap();
    let id = m.access().id(kind, name).unwrap();
    let d = m.check(
        s,
        Permission::ServiceInvoke,
        Target::Entity {
            id,
            resource: m.access().sym(service),
        },
    );
    let e = m.explain(&d);
    let want = reference::check(
        m,
        m.policy(),
        Some(user),
        Permission::ServiceInvoke,
        RefTarget::Entity {
            kind,
            name,
            resource: Some(service),
        },
    );
    assert_eq!((e.outcome, &e.basis), (want.outcome, &want.basis), "{e}");
    (e.outcome, e.basis)
}

/// The basic model, with `CreateThing` named somewhere (the role rules' services always have
/// symbols; other services get one when something names them).
fn platform() -> Model {
    let mut m = basic();
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("Administrator"),
            Permission::ServiceInvoke,
            "CreateThing",
            true,
        ));
    });
    m
}

#[test]
fn p1_a_platform_resource_is_every_signed_in_users() {
    let m = platform();
    let (outcome, basis) = invoke(&m, "u", Kind::Resource, "EntityServices", "CreateThing");
    assert_eq!(outcome, Outcome::Allowed);
    assert_eq!(basis, ExplainedBasis::PlatformResource);
    let id = m.access().id(Kind::Resource, "EntityServices").unwrap();
    assert!(m.access().visible(m.subject("u").unwrap(), id));
}

#[test]
fn p2_security_services_are_for_security_administrators() {
    let mut m = platform();
    let (outcome, basis) = invoke(&m, "u", Kind::Resource, "SecurityServices", "Lint");
    assert_eq!(outcome, Outcome::Denied);
    assert_eq!(
        basis,
        ExplainedBasis::Role {
            group: "SecurityAdministrators".into(),
            member: false
        }
    );
    add_member(&mut m, "SecurityAdministrators", PrincipalRef::user("u"));
    for service in ["Lint", "ExplainAccess"] {
        let (outcome, basis) = invoke(&m, "u", Kind::Resource, "SecurityServices", service);
        assert_eq!(outcome, Outcome::Allowed, "{service}");
        assert!(
            matches!(basis, ExplainedBasis::Role { member: true, .. }),
            "{basis:?}"
        );
    }
    // An explanation says which rule.
    let s = m.subject("u").unwrap();
    let d = m.check(
        s,
        Permission::ServiceInvoke,
        Target::Entity {
            id: m.access().id(Kind::Resource, "SecurityServices").unwrap(),
            resource: m.access().sym("Lint"),
        },
    );
    assert!(
        m.explain(&d)
            .to_string()
            .contains("members of SecurityAdministrators"),
        "{}",
        m.explain(&d)
    );
}

#[test]
fn p2_auditors_may_query_the_audit_history_and_entries_still_grant_others() {
    let mut m = platform();
    let (outcome, _) = invoke(
        &m,
        "u",
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
    );
    assert_ne!(outcome, Outcome::Allowed);
    add_member(&mut m, "Auditors", PrincipalRef::user("u"));
    let (outcome, basis) = invoke(
        &m,
        "u",
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
    );
    assert_eq!(outcome, Outcome::Allowed);
    assert_eq!(
        basis,
        ExplainedBasis::Role {
            group: "Auditors".into(),
            member: true
        }
    );
    // Someone else with the grants of the seed's table (visibility and the entry) may too.
    user(&mut m, "v");
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::user("v"));
    visible_to(&mut m, Kind::Subsystem, "AuditSubsystem", "Acme");
    acl(&mut m, Kind::Subsystem, "AuditSubsystem", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("v"),
            Permission::ServiceInvoke,
            "QueryAuditHistory",
            true,
        ))
    });
    let (outcome, basis) = invoke(
        &m,
        "v",
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
    );
    assert_eq!(outcome, Outcome::Allowed);
    assert!(matches!(basis, ExplainedBasis::Entry { .. }), "{basis:?}");
}

#[test]
fn p2_an_entry_for_every_service_never_grants_a_role_service() {
    let mut m = platform();
    // A user who sees the subsystem and may invoke every one of its services...
    visible_to(&mut m, Kind::Subsystem, "AuditSubsystem", "Acme");
    collection_acl(&mut m, Kind::Subsystem, |a| {
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::ServiceInvoke,
            "*",
            true,
        ))
    });
    // ... is not an auditor, nor a security administrator.
    let (outcome, basis) = invoke(
        &m,
        "u",
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(
        matches!(basis, ExplainedBasis::Role { member: false, .. }),
        "{basis:?}"
    );
    // Other services of the subsystem: the entry grants them.
    let (outcome, _) = invoke(&m, "u", Kind::Subsystem, "AuditSubsystem", "CreateThing");
    assert_eq!(outcome, Outcome::Allowed);
}

#[test]
fn p2_collection_functions_and_reloads_are_the_administrators_even_for_a_service_never_named() {
    let mut m = platform();
    // (A subsystem is visible through organizations like any entity; Resources to everyone.)
    visible_to(&mut m, Kind::Subsystem, "PlatformSubsystem", "Acme");
    // No entry names these services: the engine has no symbol for the first; the role of
    // every service of CollectionFunctions (`*`) still decides, as the reference does by name.
    for (kind, name, service) in [
        (
            Kind::Resource,
            "CollectionFunctions",
            "GetCollectionRunTimePermissions",
        ),
        (Kind::Subsystem, "PlatformSubsystem", "ReloadExtension"),
    ] {
        let (outcome, basis) = invoke(&m, "u", kind, name, service);
        assert_eq!(outcome, Outcome::Denied, "{service}");
        assert_eq!(
            basis,
            ExplainedBasis::Role {
                group: "Administrators".into(),
                member: false
            },
            "{service}"
        );
        let (outcome, _) = invoke(&m, "Administrator", kind, name, service);
        assert_eq!(outcome, Outcome::Allowed, "{service}");
    }
    // An entry for `*` on the Resource grants none of them; one naming the service does.
    acl(&mut m, Kind::Resource, "CollectionFunctions", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::ServiceInvoke,
            "*",
            true,
        ))
    });
    let (outcome, _) = invoke(
        &m,
        "u",
        Kind::Resource,
        "CollectionFunctions",
        "AddCollectionRunTimePermission",
    );
    assert_eq!(outcome, Outcome::Denied);
    acl(&mut m, Kind::Resource, "CollectionFunctions", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::ServiceInvoke,
            "GetCollectionRunTimePermissions",
            true,
        ))
    });
    let (outcome, basis) = invoke(
        &m,
        "u",
        Kind::Resource,
        "CollectionFunctions",
        "GetCollectionRunTimePermissions",
    );
    assert_eq!(outcome, Outcome::Allowed);
    assert!(matches!(basis, ExplainedBasis::Entry { .. }), "{basis:?}");
}
