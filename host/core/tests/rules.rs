//! One test per rule of DOMAIN.md section 2, named after the rule's id.

mod common;
use common::*;
use thinghost_core::*;

use Permission::*;

#[test]
fn a1_default_deny_without_a_grant() {
    let m = basic();
    for p in Permission::ALL {
        let d = check(&m, "u", p, "Things/T1");
        assert_eq!(d.outcome, Outcome::Denied, "{p}");
        assert_eq!(d.basis, Basis::NoEntry, "{p}");
    }
    assert_eq!(outcome(&m, "u", Create, "Things"), Outcome::Denied);
}

#[test]
fn a2_administrators_pass_every_check_directly_or_nested() {
    let mut m = basic();
    user(&mut m, "boss");
    group(&mut m, "Ops", &[PrincipalRef::user("boss")]);
    group(&mut m, "Leads", &[PrincipalRef::group("Ops")]);
    add_member(&mut m, "Administrators", PrincipalRef::group("Leads"));
    // An explicit deny, and an entity nobody made visible: administrators pass anyway.
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::user("boss"), ServiceInvoke, "*", false))
    });
    thing(&mut m, "Hidden", "GenericThing");
    for who in ["Administrator", "boss"] {
        for p in Permission::ALL {
            let d = check(&m, who, p, "Things/Hidden");
            assert_eq!(
                (d.outcome, d.basis),
                (Outcome::Allowed, Basis::Administrator),
                "{who} {p}"
            );
        }
        assert!(check(&m, who, ServiceInvoke, "Things/T1").allowed());
        assert!(check(&m, who, Create, "Users").allowed());
    }
    assert!(!check(&m, "u", Read, "Things/Hidden").allowed());
}

#[test]
fn a2_system_context_passes_and_is_never_a_principal_of_keys_or_groups() {
    let mut m = basic();
    let t = m.target("Things/T1").unwrap();
    assert_eq!(m.check(Subject::System, Delete, t).basis, Basis::System);
    let mut key = Entity::new(
        "sys-key",
        Body::ApplicationKey(ApplicationKeyBody {
            user: "System".into(),
            key_hash: "h".into(),
            fingerprint: String::new(),
            expiration_date: 0,
            whitelist: vec![],
            client_name: String::new(),
            created: 0,
        }),
    );
    let err = m.create(key.clone()).unwrap_err();
    assert!(err.to_string().contains("System"), "{err}");
    if let Body::ApplicationKey(k) = &mut key.body {
        k.user = "u".into();
    }
    m.create(key).unwrap();
    let err = m
        .change(|tx| {
            if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "Developers")?.body {
                g.members.push(PrincipalRef::user("System"));
            }
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("System"), "{err}");
}

#[test]
fn a3_principals_are_the_user_and_all_groups_containing_it_transitively() {
    let mut m = basic();
    group(&mut m, "G1", &[PrincipalRef::user("u")]);
    group(&mut m, "G2", &[PrincipalRef::group("G1")]);
    group(&mut m, "G3", &[PrincipalRef::group("G2")]);
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::group("G3"), PropertyRead, "*", true))
    });
    let d = check(&m, "u", PropertyRead, "Things/T1");
    assert!(d.allowed());
    let Basis::Entry { principal, .. } = d.basis else {
        panic!("{:?}", d.basis)
    };
    assert_eq!(m.access().name_of(principal), (Kind::Group, "G3"));
    // Every user is a member of Users.
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::group("Users"), EventSubscribe, "*", true))
    });
    assert!(check(&m, "u", EventSubscribe, "Things/T1").allowed());
    // Breaking the chain in the middle removes the grant at once.
    m.change(|tx| {
        if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "G2")?.body {
            g.members.clear();
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(outcome(&m, "u", PropertyRead, "Things/T1"), Outcome::Denied);
}

#[test]
fn v1_an_invisible_entity_answers_exactly_like_an_absent_one() {
    let mut m = basic();
    thing(&mut m, "Secret", "GenericThing");
    // Even a grant does not reveal it: visibility comes first.
    acl(&mut m, Kind::Thing, "Secret", |a| {
        a.run_time
            .push(rt(PrincipalRef::user("u"), PropertyRead, "*", true))
    });
    let d = check(&m, "u", PropertyRead, "Things/Secret");
    assert_eq!(
        (d.outcome, d.basis),
        (Outcome::NotVisible, Basis::NotVisible)
    );
    // An id that no longer names a live entity gives the very same answer.
    m.delete(Kind::Thing, "Secret").unwrap();
    let stale = Target::Entity {
        id: match d.target {
            Target::Entity { id, .. } => id,
            _ => unreachable!(),
        },
        resource: None,
    };
    let d2 = m.check(m.subject("u").unwrap(), PropertyRead, stale);
    assert_eq!((d2.outcome, d2.basis), (d.outcome, d.basis));
    assert!(!m.access().visible(
        m.subject("u").unwrap(),
        match stale {
            Target::Entity { id, .. } => id,
            _ => unreachable!(),
        }
    ));
}

#[test]
fn v2_visibility_through_organizations_units_owners_templates_and_collections() {
    let mut m = model();
    for u in [
        "top", "plant", "line", "sibling", "viagroup", "owner", "outsider",
    ] {
        user(&mut m, u);
    }
    org(
        &mut m,
        "Acme",
        &[
            ("Acme", None),
            ("Plant1", Some("Acme")),
            ("Line1", Some("Plant1")),
            ("Plant2", Some("Acme")),
        ],
    );
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::user("top"));
    unit_member(&mut m, "Acme", "Plant1", PrincipalRef::user("plant"));
    unit_member(&mut m, "Acme", "Line1", PrincipalRef::user("line"));
    unit_member(&mut m, "Acme", "Plant2", PrincipalRef::user("sibling"));
    group(&mut m, "LineCrew", &[PrincipalRef::user("viagroup")]);
    unit_member(&mut m, "Acme", "Line1", PrincipalRef::group("LineCrew"));

    // Visible to unit Line1: its members, and the members of the units above it.
    thing(&mut m, "L", "GenericThing");
    acl(&mut m, Kind::Thing, "L", |a| {
        a.visibility.push(VisibilityEntry::unit("Acme", "Line1"))
    });
    let sees = |m: &Model, u: &str, path: &str| {
        let id = match m.target(path).unwrap() {
            Target::Entity { id, .. } => id,
            _ => unreachable!(),
        };
        m.access().visible(m.subject(u).unwrap(), id)
    };
    for u in ["line", "plant", "top", "viagroup"] {
        assert!(sees(&m, u, "Things/L"), "{u}");
    }
    for u in ["sibling", "outsider"] {
        assert!(!sees(&m, u, "Things/L"), "{u}");
    }
    // Visible to Plant1: does not flow down to Line1.
    thing(&mut m, "P", "GenericThing");
    acl(&mut m, Kind::Thing, "P", |a| {
        a.visibility.push(VisibilityEntry::unit("Acme", "Plant1"))
    });
    assert!(sees(&m, "plant", "Things/P") && sees(&m, "top", "Things/P"));
    assert!(!sees(&m, "line", "Things/P"));
    // Visible to the organization: any member of any unit.
    thing(&mut m, "O", "GenericThing");
    visible_to(&mut m, Kind::Thing, "O", "Acme");
    for u in ["top", "plant", "line", "sibling", "viagroup"] {
        assert!(sees(&m, u, "Things/O"), "{u}");
    }
    assert!(!sees(&m, "outsider", "Things/O"));
    // The owner sees what it created.
    let mut owned = Entity::thing("Mine", "GenericThing");
    owned.owner = Some("owner".into());
    m.create(owned).unwrap();
    assert!(sees(&m, "owner", "Things/Mine") && !sees(&m, "outsider", "Things/Mine"));
    // Through the template chain's instance visibility (a base template counts too).
    template(&mut m, "Base", "GenericThing");
    template(&mut m, "Derived", "Base");
    instance_acl(&mut m, Kind::ThingTemplate, "Base", |a| {
        a.visibility.push(VisibilityEntry::unit("Acme", "Plant2"))
    });
    thing(&mut m, "D", "Derived");
    assert!(sees(&m, "sibling", "Things/D") && !sees(&m, "line", "Things/D"));
    // Through the collection.
    thing(&mut m, "C", "GenericThing");
    assert!(!sees(&m, "outsider", "Things/C"));
    org(&mut m, "Guests", &[("Guests", None)]);
    unit_member(&mut m, "Guests", "Guests", PrincipalRef::user("outsider"));
    collection_acl(&mut m, Kind::Thing, |a| {
        a.visibility.push(VisibilityEntry::organization("Guests"))
    });
    assert!(sees(&m, "outsider", "Things/C"));
    // Everyone starts empty: nothing is visible to everyone by default.
    let everyone = m.get(Kind::Organization, "Everyone").unwrap();
    let Body::Organization(o) = &everyone.body else {
        unreachable!()
    };
    assert!(o.units.iter().all(|u| u.members.is_empty()));
}

#[test]
fn r1_levels_entity_then_templates_nearest_first_then_shapes_then_collection() {
    let mut m = basic();
    let u = || PrincipalRef::user("u");
    template(&mut m, "Base", "GenericThing");
    template(&mut m, "Mid", "Base");
    m.create(Entity::shape("Sh")).unwrap();
    m.change(|tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, "T1")?.body {
            t.thing_template = "Mid".into();
            t.thing_shapes.push("Sh".into());
        }
        Ok(())
    })
    .unwrap();
    let level = |m: &Model| match check(m, "u", ServiceInvoke, "Things/T1").basis {
        Basis::Entry { level, .. } => m
            .explain(&check(m, "u", ServiceInvoke, "Things/T1"))
            .basis
            .clone()
            .pipe(|b| (level, b)),
        other => panic!("{other:?}"),
    };
    collection_acl(&mut m, Kind::Thing, |a| {
        a.run_time.push(rt(u(), ServiceInvoke, "*", true))
    });
    assert!(matches!(level(&m).0, Level::Collection));
    instance_acl(&mut m, Kind::ThingShape, "Sh", |a| {
        a.run_time.push(rt(u(), ServiceInvoke, "*", false))
    });
    assert!(matches!(level(&m).0, Level::Shapes { .. }));
    assert_eq!(
        outcome(&m, "u", ServiceInvoke, "Things/T1"),
        Outcome::Denied
    );
    instance_acl(&mut m, Kind::ThingTemplate, "Base", |a| {
        a.run_time.push(rt(u(), ServiceInvoke, "*", true))
    });
    assert!(matches!(level(&m).0, Level::Template { depth: 1, .. }));
    assert!(check(&m, "u", ServiceInvoke, "Things/T1").allowed());
    instance_acl(&mut m, Kind::ThingTemplate, "Mid", |a| {
        a.run_time.push(rt(u(), ServiceInvoke, "*", false))
    });
    assert!(matches!(level(&m).0, Level::Template { depth: 0, .. }));
    assert_eq!(
        outcome(&m, "u", ServiceInvoke, "Things/T1"),
        Outcome::Denied
    );
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(u(), ServiceInvoke, "*", true))
    });
    assert!(matches!(level(&m).0, Level::Entity));
    assert!(check(&m, "u", ServiceInvoke, "Things/T1").allowed());
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn r2_an_override_beats_the_blanket_entry_within_a_level() {
    let mut m = basic();
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::group("Users"), ServiceInvoke, "*", false));
        a.run_time
            .push(rt(PrincipalRef::user("u"), ServiceInvoke, "Reset", true));
    });
    let d = check(&m, "u", ServiceInvoke, "Things/T1/Services/Reset");
    assert!(d.allowed());
    assert!(matches!(
        d.basis,
        Basis::Entry {
            scope: Scope::Resource,
            ..
        }
    ));
    let d = check(&m, "u", ServiceInvoke, "Things/T1/Services/Shutdown");
    assert_eq!(d.outcome, Outcome::Denied);
    assert!(matches!(
        d.basis,
        Basis::Entry {
            scope: Scope::All,
            ..
        }
    ));
    // And the reverse: a denied override inside an allowed blanket.
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.clear();
        a.run_time
            .push(rt(PrincipalRef::user("u"), PropertyWrite, "*", true));
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            PropertyWrite,
            "lastArchivedTime",
            false,
        ));
    });
    assert!(
        !check(
            &m,
            "u",
            PropertyWrite,
            "Things/T1/Properties/lastArchivedTime"
        )
        .allowed()
    );
    assert!(check(&m, "u", PropertyWrite, "Things/T1/Properties/other").allowed());
}

#[test]
fn r3_deny_beats_allow_within_one_level_and_scope() {
    let mut m = basic();
    group(&mut m, "Crew", &[PrincipalRef::user("u")]);
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::user("u"), PropertyRead, "*", true));
        a.run_time
            .push(rt(PrincipalRef::group("Crew"), PropertyRead, "*", false));
    });
    let d = check(&m, "u", PropertyRead, "Things/T1");
    assert_eq!(d.outcome, Outcome::Denied);
    let Basis::Entry { principal, .. } = d.basis else {
        panic!()
    };
    assert_eq!(m.access().name_of(principal), (Kind::Group, "Crew"));
    // Order of entries does not matter.
    acl(&mut m, Kind::Thing, "T1", |a| a.run_time.reverse());
    assert_eq!(outcome(&m, "u", PropertyRead, "Things/T1"), Outcome::Denied);
}

#[test]
fn r4_the_first_level_with_a_matching_entry_decides_unless_strict() {
    let mut m = basic();
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time
            .push(rt(PrincipalRef::user("u"), ServiceInvoke, "*", true))
    });
    collection_acl(&mut m, Kind::Thing, |a| {
        a.run_time
            .push(rt(PrincipalRef::group("Users"), ServiceInvoke, "*", false))
    });
    // The vendor's behaviour: the entity's allow decides; the collection's deny is not consulted.
    assert!(check(&m, "u", ServiceInvoke, "Things/T1").allowed());
    // Strict policy: any deny on any level wins.
    m.set_policy(Policy {
        strict: true,
        ..Policy::default()
    });
    let d = check(&m, "u", ServiceInvoke, "Things/T1");
    assert_eq!(d.outcome, Outcome::Denied);
    assert!(matches!(
        d.basis,
        Basis::Entry {
            level: Level::Collection,
            ..
        }
    ));
    // Strict with allows only: the first allow is reported.
    collection_acl(&mut m, Kind::Thing, |a| a.run_time.clear());
    let d = check(&m, "u", ServiceInvoke, "Things/T1");
    assert!(
        d.allowed()
            && matches!(
                d.basis,
                Basis::Entry {
                    level: Level::Entity,
                    ..
                }
            )
    );
}

#[test]
fn r5_shapes_datashapes_and_groups_carry_no_run_time_permissions() {
    let mut m = basic();
    m.create(Entity::shape("Sh")).unwrap();
    group(&mut m, "G", &[]);
    for (kind, name) in [(Kind::ThingShape, "Sh"), (Kind::Group, "G")] {
        let err = m
            .change(|tx| {
                tx.get_mut(kind, name)?.permissions.run_time.push(rt(
                    PrincipalRef::user("u"),
                    ServiceInvoke,
                    "*",
                    true,
                ));
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("R5"), "{err}");
    }
    let err = m
        .change(|tx| {
            tx.collection_mut(Kind::DataShape).run_time.push(rt(
                PrincipalRef::user("u"),
                ServiceInvoke,
                "*",
                true,
            ));
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("R5"), "{err}");
    // A shape's instance permissions are run-time only: they apply to the Things implementing it.
    let err = m
        .change(|tx| {
            tx.get_mut(Kind::ThingShape, "Sh")?
                .instance_permissions_mut()
                .unwrap()
                .design_time
                .push(dt(PrincipalRef::user("u"), Read, true));
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("run-time entries only"), "{err}");
    // Checking a run-time permission on such an entity is denied for that reason.
    visible_to(&mut m, Kind::Group, "G", "Acme");
    let d = check(&m, "u", ServiceInvoke, "Groups/G");
    assert_eq!(
        (d.outcome, d.basis),
        (Outcome::Denied, Basis::NoRunTimePermissions)
    );
}

#[test]
fn d1_design_time_uses_the_same_rules_and_create_needs_the_collection() {
    let mut m = basic();
    group(&mut m, "Devs", &[PrincipalRef::user("u")]);
    assert_eq!(outcome(&m, "u", Create, "Things"), Outcome::Denied);
    collection_acl(&mut m, Kind::Thing, |a| {
        a.design_time
            .push(dt(PrincipalRef::group("Devs"), Create, true))
    });
    assert!(check(&m, "u", Create, "Things").allowed());
    assert_eq!(outcome(&m, "u", Create, "ThingTemplates"), Outcome::Denied);
    // Create is refused anywhere but on a collection.
    let err = m
        .change(|tx| {
            tx.get_mut(Kind::Thing, "T1")?
                .permissions
                .design_time
                .push(dt(PrincipalRef::user("u"), Create, true));
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("collection"), "{err}");
    // Update through the template's instance permissions, and deny over allow in a level.
    instance_acl(&mut m, Kind::ThingTemplate, "GenericThing", |a| {
        a.design_time
            .push(dt(PrincipalRef::group("Devs"), Update, true));
    });
    assert!(check(&m, "u", Update, "Things/T1").allowed());
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.design_time.push(dt(PrincipalRef::user("u"), Read, true));
        a.design_time
            .push(dt(PrincipalRef::group("Devs"), Read, false));
    });
    assert_eq!(outcome(&m, "u", Read, "Things/T1"), Outcome::Denied);
    // A design-time entry cannot name a resource, nor hold a run-time permission.
    let err = m
        .change(|tx| {
            tx.get_mut(Kind::Thing, "T1")?
                .permissions
                .design_time
                .push(rt(PrincipalRef::user("u"), Read, "x", true));
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("resource is *"), "{err}");
}

#[test]
fn d2_a_user_may_call_the_services_of_its_own_user_entity() {
    let mut m = basic();
    let d = check(&m, "u", ServiceInvoke, "Users/u");
    assert_eq!((d.outcome, d.basis), (Outcome::Allowed, Basis::OwnUser));
    // Only services; and only its own.
    assert_eq!(outcome(&m, "u", PropertyWrite, "Users/u"), Outcome::Denied);
    user(&mut m, "other");
    assert_eq!(
        outcome(&m, "u", ServiceInvoke, "Users/other"),
        Outcome::NotVisible
    );
    // Configurable: off, the user's own entity follows the ordinary rules.
    m.set_policy(Policy {
        own_user_services: false,
        ..Policy::default()
    });
    assert_eq!(
        outcome(&m, "u", ServiceInvoke, "Users/u"),
        Outcome::NotVisible
    );
}

#[test]
fn x1_every_decision_is_explained_with_level_entry_and_principal() {
    let mut m = basic();
    group(&mut m, "Operators", &[PrincipalRef::user("u")]);
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::group("Operators"),
            ServiceInvoke,
            "Reset",
            true,
        ))
    });
    let d = check(&m, "u", ServiceInvoke, "Things/T1/Services/Reset");
    let e = m.explain(&d);
    let text = e.to_string();
    assert!(
        text.starts_with("ALLOWED: ServiceInvoke on Things/T1/Services/Reset"),
        "{text}"
    );
    assert!(
        text.contains("the entity's own permissions")
            && text.contains("group Operators")
            && text.contains("override for Reset"),
        "{text}"
    );
    // Nothing matched.
    let text = m
        .explain(&check(&m, "u", PropertyRead, "Things/T1"))
        .to_string();
    assert!(
        text.starts_with("DENIED") && text.contains("no permission entry"),
        "{text}"
    );
    // Not visible, administrator, own user, no run-time permissions: each says why.
    thing(&mut m, "Hidden", "GenericThing");
    let text = m
        .explain(&check(&m, "u", PropertyRead, "Things/Hidden"))
        .to_string();
    assert!(
        text.starts_with("NOT VISIBLE") && text.contains("V1"),
        "{text}"
    );
    let text = m
        .explain(&check(&m, "Administrator", PropertyRead, "Things/Hidden"))
        .to_string();
    assert!(text.contains("Administrators"), "{text}");
    let text = m
        .explain(&check(&m, "u", ServiceInvoke, "Users/u"))
        .to_string();
    assert!(text.contains("D2"), "{text}");
    // Explanations serialize for the API.
    let json = serde_json::to_value(m.explain(&d)).unwrap();
    assert_eq!(json["outcome"], "Allowed");
}
