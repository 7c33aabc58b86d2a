//! Permission insight (issue 9): what a user holds and why, and the access impact of a change.

mod common;
use common::*;
use thinghost_core::insight::*;
use thinghost_core::*;

fn rows(h: &[Holding]) -> Vec<(String, String, String, bool)> {
    h.iter()
        .map(|h| {
            (
                h.entity.clone(),
                h.permission.clone(),
                h.resource.clone(),
                h.allowed,
            )
        })
        .collect()
}

fn row(e: &str, p: &str, r: &str, a: bool) -> (String, String, String, bool) {
    (e.into(), p.into(), r.into(), a)
}

/// Adds a run-time entry to the instance permissions of a template or shape.
fn instance_grant(
    tx: &mut Tx,
    kind: Kind,
    name: &str,
    e: PermissionEntry,
) -> Result<(), ModelError> {
    tx.get_mut(kind, name)?
        .instance_permissions_mut()
        .expect("a template or a shape")
        .run_time
        .push(e);
    Ok(())
}

#[test]
fn effective_permissions_list_what_a_user_holds_with_the_deciding_rule() {
    let mut m = basic();
    group(&mut m, "G", &[PrincipalRef::user("u")]);
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.design_time
            .push(dt(PrincipalRef::group("G"), Permission::Read, true));
        a.run_time.push(rt(
            PrincipalRef::group("G"),
            Permission::ServiceInvoke,
            "*",
            true,
        ));
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::ServiceInvoke,
            "Reset",
            false,
        ));
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::PropertyRead,
            "temp",
            true,
        ));
    });
    collection_acl(&mut m, Kind::Thing, |a| {
        a.design_time
            .push(dt(PrincipalRef::user("u"), Permission::Create, true))
    });
    thing(&mut m, "Hidden", "GenericThing");
    let h = effective_permissions(&m, "u", true).unwrap();
    let got = rows(&h);
    for want in [
        row("Things", "Create", "*", true),
        row("Things/T1", "Visible", "*", true),
        row("Things/T1", "Read", "*", true),
        row("Things/T1", "ServiceInvoke", "*", true),
        // The override that takes away what `*` gives is shown, as not held.
        row("Things/T1", "ServiceInvoke", "Reset", false),
        row("Things/T1", "PropertyRead", "temp", true),
    ] {
        assert!(got.contains(&want), "{want:?} in {got:#?}");
    }
    assert!(
        !got.iter().any(|r| r.0 == "Things/Hidden"),
        "invisible: not listed"
    );
    assert!(!got.contains(&row("Things/T1", "Update", "*", true)));
    assert!(!got.contains(&row("Things/T1", "PropertyRead", "*", true)));
    let why = &h.iter().find(|h| h.resource == "Reset").unwrap().why;
    assert!(why.contains("denies ServiceInvoke"), "{why}");
    // An administrator: one row; an unknown user: none.
    let admin = effective_permissions(&m, "Administrator", true).unwrap();
    assert_eq!(rows(&admin), [row("*", "Administrator", "*", true)]);
    assert!(effective_permissions(&m, "nobody", true).is_none());
}

#[test]
fn access_impact_names_every_user_and_permission_a_change_moves() {
    let mut before = basic();
    user(&mut before, "v");
    group(&mut before, "G", &[PrincipalRef::user("u")]);
    let mut after = before.clone();
    // G gets ServiceInvoke on T1 (u gains it); v joins Administrators; u loses visibility of
    // nothing; a new Thing visible to Acme appears.
    acl(&mut after, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::group("G"),
            Permission::ServiceInvoke,
            "*",
            true,
        ));
        a.run_time.push(rt(
            PrincipalRef::group("G"),
            Permission::ServiceInvoke,
            "Reset",
            true,
        ));
    });
    add_member(&mut after, "Administrators", PrincipalRef::user("v"));
    thing(&mut after, "T2", "GenericThing");
    visible_to(&mut after, Kind::Thing, "T2", "Acme");
    let impact = access_impact(&before, &after);
    let got: Vec<(String, String, String, String, &str)> = impact
        .iter()
        .map(|i| {
            (
                i.user.clone(),
                i.entity.clone(),
                i.permission.clone(),
                i.resource.clone(),
                i.change,
            )
        })
        .collect();
    let want = |u: &str, e: &str, p: &str, r: &str, c: &'static str| {
        (
            u.to_string(),
            e.to_string(),
            p.to_string(),
            r.to_string(),
            c,
        )
    };
    assert!(
        got.contains(&want("u", "Things/T1", "ServiceInvoke", "*", "gained")),
        "{got:#?}"
    );
    assert!(
        got.contains(&want("u", "Things/T2", "Visible", "*", "gained")),
        "{got:#?}"
    );
    assert!(
        got.contains(&want("v", "*", "Administrator", "*", "gained")),
        "{got:#?}"
    );
    // The override that moved with `*` is not repeated, and nothing else moved.
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(impact.iter().all(|i| !i.why.is_empty()));
    // And back: the reverse change loses exactly what was gained.
    let back = access_impact(&after, &before);
    assert_eq!(back.len(), 3);
    assert!(back.iter().all(|i| i.change == "lost"));
    assert!(access_impact(&before, &before).is_empty());
}

/// `access_impact_of` (what a dry run uses: only what a change touched) gives exactly
/// `access_impact` (every user on every entity), for changes of every sort.
#[test]
fn the_narrow_impact_equals_the_full_one() {
    let mut base = basic();
    user(&mut base, "v");
    user(&mut base, "w");
    group(&mut base, "G", &[PrincipalRef::user("u")]);
    group(&mut base, "H", &[PrincipalRef::user("v")]);
    org(
        &mut base,
        "Corp",
        &[("Corp", None), ("Plant", Some("Corp"))],
    );
    unit_member(&mut base, "Corp", "Plant", PrincipalRef::group("H"));
    template(&mut base, "Pump", "GenericThing");
    template(&mut base, "BigPump", "Pump");
    base.create(Entity::shape("Resettable")).unwrap();
    thing(&mut base, "P1", "BigPump");
    thing(&mut base, "P2", "Pump");
    visible_to(&mut base, Kind::Thing, "P1", "Corp");
    visible_to(&mut base, Kind::Thing, "P2", "Acme");
    base.change(|tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, "P2")?.body {
            t.thing_shapes.push("Resettable".into());
        }
        Ok(())
    })
    .unwrap();
    type Change = Box<dyn Fn(&mut Tx<'_>) -> Result<(), ModelError>>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "a grant on a Thing",
            Box::new(|tx| {
                tx.get_mut(Kind::Thing, "T1")?.permissions.run_time.push(rt(
                    PrincipalRef::group("G"),
                    Permission::ServiceInvoke,
                    "Reset",
                    true,
                ));
                Ok(())
            }),
        ),
        (
            "an instance grant on a base template",
            Box::new(|tx| {
                instance_grant(
                    tx,
                    Kind::ThingTemplate,
                    "Pump",
                    rt(PrincipalRef::user("v"), Permission::PropertyRead, "*", true),
                )
            }),
        ),
        (
            "an instance grant on a shape",
            Box::new(|tx| {
                instance_grant(
                    tx,
                    Kind::ThingShape,
                    "Resettable",
                    rt(
                        PrincipalRef::user("u"),
                        Permission::ServiceInvoke,
                        "Reset",
                        true,
                    ),
                )
            }),
        ),
        (
            "a nested membership",
            Box::new(|tx| {
                if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "H")?.body {
                    g.members.push(PrincipalRef::group("G"));
                }
                Ok(())
            }),
        ),
        (
            "a unit membership",
            Box::new(|tx| {
                if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "Corp")?.body {
                    o.units[0].members.push(PrincipalRef::user("w"));
                }
                Ok(())
            }),
        ),
        (
            "a collection grant",
            Box::new(|tx| {
                tx.collection_mut(Kind::Thing)
                    .visibility
                    .push(VisibilityEntry::organization("Acme"));
                tx.collection_mut(Kind::Thing).design_time.push(dt(
                    PrincipalRef::user("w"),
                    Permission::Create,
                    true,
                ));
                Ok(())
            }),
        ),
        (
            "a new user in a group",
            Box::new(|tx| {
                tx.create(Entity::user("x"))?;
                if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "G")?.body {
                    g.members.push(PrincipalRef::user("x"));
                }
                Ok(())
            }),
        ),
        (
            "a new administrator",
            Box::new(|tx| {
                if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "Administrators")?.body {
                    g.members.push(PrincipalRef::group("H"));
                }
                Ok(())
            }),
        ),
        (
            "a deleted Thing",
            Box::new(|tx| tx.delete(Kind::Thing, "P1")),
        ),
        (
            "a group leaves a unit",
            Box::new(|tx| {
                if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "Corp")?.body {
                    o.units[1].members.clear();
                }
                Ok(())
            }),
        ),
        (
            "a unit moves under another",
            Box::new(|tx| {
                if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "Corp")?.body {
                    o.units.push(Unit {
                        name: "Site".into(),
                        parent: Some("Corp".into()),
                        members: vec![PrincipalRef::user("u")],
                    });
                    o.units[1].parent = Some("Site".into());
                }
                Ok(())
            }),
        ),
    ];
    for (what, change) in changes {
        let mut after = base.clone();
        let batch = after.change(|tx| change(tx)).unwrap();
        let touched = Touched::from_writes(&batch.writes);
        let full = access_impact(&base, &after);
        assert!(!full.is_empty(), "{what}: the change should move something");
        assert_eq!(access_impact_of(&base, &after, &touched), full, "{what}");
    }
}
