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
