//! Users, groups and Things are known by their identity, not their name (issue 17): a user
//! deleted and created again under the same name is another security context, whatever held the
//! old one.

mod common;
use common::*;
use thinghost_core::*;

#[test]
fn a3_a_user_created_again_is_another_subject_and_the_old_context_acts_for_nobody() {
    let mut m = basic();
    user(&mut m, "bob");
    add_member(&mut m, "Administrators", PrincipalRef::user("bob"));
    let old = m.subject("bob").unwrap();
    assert!(m.access().is_administrator(old));
    m.delete(Kind::User, "bob").unwrap();
    user(&mut m, "bob");
    let new = m.subject("bob").unwrap();
    assert_ne!(old, new, "a new bob is a new subject");
    // What held the old bob's context (a connection, a session) is nobody now.
    assert!(!m.access().is_administrator(old));
    assert!(
        !m.access().is_administrator(new),
        "nothing of the old bob is inherited"
    );
    let thing = m.access().id(Kind::Thing, "T1").unwrap();
    let d = m.check(
        old,
        Permission::Read,
        Target::Entity {
            id: thing,
            resource: None,
        },
    );
    assert_ne!(d.outcome, Outcome::Allowed);
}

#[test]
fn a3_deleted_and_created_again_in_one_change_is_another_subject_too() {
    let mut m = basic();
    user(&mut m, "bob");
    let old = m.subject("bob").unwrap();
    m.change(|tx| {
        tx.delete(Kind::User, "bob")?;
        tx.create(Entity::new("bob", Body::User(UserBody::default())))
    })
    .unwrap();
    let new = m.subject("bob").unwrap();
    assert_ne!(old, new);
    // A change that only edits the user keeps its identity.
    m.change(|tx| {
        tx.get_mut(Kind::User, "bob")?.description = "edited".into();
        Ok(())
    })
    .unwrap();
    assert_eq!(m.subject("bob"), Some(new));
}

/// `CheckPermissionForGroup`: a group's rights are those of entries naming it or a group that
/// contains it, where it sees the entity (its units), never those of its members.
#[test]
fn a3_a_group_is_checked_as_its_own_principal_and_its_parents() {
    let mut m = basic();
    group(&mut m, "Ops", &[PrincipalRef::user("u")]);
    group(&mut m, "Leads", &[PrincipalRef::group("Ops")]);
    group(&mut m, "Elsewhere", &[]);
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::group("Leads"));
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::group("Leads"),
            Permission::PropertyRead,
            "*",
            true,
        ));
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::PropertyWrite,
            "*",
            true,
        ));
    });
    let id = |k: Kind, n: &str| m.access().id(k, n).unwrap();
    let t1 = Target::Entity {
        id: id(Kind::Thing, "T1"),
        resource: None,
    };
    let g = |name: &str, p: Permission| m.access().check_group(id(Kind::Group, name), p, t1);
    // Ops is inside Leads: it holds Leads' grant, and sees T1 through Leads' unit.
    assert_eq!(g("Ops", Permission::PropertyRead), Outcome::Allowed);
    assert_eq!(g("Leads", Permission::PropertyRead), Outcome::Allowed);
    // A member's own grant is not the group's.
    assert_eq!(g("Ops", Permission::PropertyWrite), Outcome::Denied);
    // A group in no unit sees nothing.
    assert_eq!(
        g("Elsewhere", Permission::PropertyRead),
        Outcome::NotVisible
    );
    // Administrators, and a group inside it, pass.
    add_member(&mut m, "Administrators", PrincipalRef::group("Elsewhere"));
    let g = |name: &str, p: Permission| {
        m.access()
            .check_group(m.access().id(Kind::Group, name).unwrap(), p, t1)
    };
    assert_eq!(g("Elsewhere", Permission::Delete), Outcome::Allowed);
}

/// A re-created user's entries, written in the same change, name the new user (whatever the
/// order the index visits the change in): a deny written with it holds.
#[test]
fn a3_entries_written_with_a_recreated_user_name_the_new_one() {
    let mut m = basic();
    user(&mut m, "bob");
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::user("bob"));
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("bob"),
            Permission::PropertyWrite,
            "*",
            true,
        ))
    });
    m.change(|tx| {
        tx.delete(Kind::User, "bob")?;
        tx.create(Entity::new("bob", Body::User(UserBody::default())))?;
        tx.get_mut(Kind::Thing, "T1")?.permissions.run_time.push(rt(
            PrincipalRef::user("bob"),
            Permission::PropertyWrite,
            "*",
            false,
        ));
        Ok(())
    })
    .unwrap();
    // (The delete took bob's unit membership with it: put it back.)
    unit_member(&mut m, "Acme", "Acme", PrincipalRef::user("bob"));
    assert_eq!(
        check(&m, "bob", Permission::PropertyWrite, "Things/T1").outcome,
        Outcome::Denied,
        "the deny binds the new bob"
    );
}

/// A change undone (its store refused it) gives its entities their ids back: nothing that held
/// them is cut off.
#[test]
fn a3_a_deletion_undone_keeps_the_users_identity() {
    let mut m = basic();
    user(&mut m, "bob");
    let before = m.subject("bob").unwrap();
    let batch = m.delete(Kind::User, "bob").unwrap();
    assert_eq!(m.subject("bob"), None);
    m.revert(batch);
    assert_eq!(m.subject("bob"), Some(before));
}
