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
