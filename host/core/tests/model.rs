//! The entity model: every invalid name, duplicate, unknown reference or cycle is a typed error
//! with a clear message, and a refused change changes nothing.

mod common;
use common::*;
use serde_json::json;
use thinghost_core::*;

/// Runs a change that must fail, and proves the model is exactly as before.
fn refused(m: &mut Model, f: impl FnOnce(&mut Tx<'_>) -> Result<(), ModelError>) -> ModelError {
    let before = m.export();
    let err = m.change(f).unwrap_err();
    assert_eq!(m.export(), before, "a refused change must change nothing");
    err
}

#[test]
fn predefined_entities_exist_and_everyone_starts_empty() {
    let m = model();
    for (k, n) in [
        (Kind::User, "Administrator"),
        (Kind::User, "System"),
        (Kind::Group, "Administrators"),
        (Kind::Group, "SecurityAdministrators"),
        (Kind::Group, "Developers"),
        (Kind::Group, "Users"),
        (Kind::Group, "Auditors"),
        (Kind::Organization, "Everyone"),
        (Kind::ThingTemplate, "GenericThing"),
        (Kind::ThingTemplate, "DataTable"),
        (Kind::Subsystem, "AuditSubsystem"),
        (Kind::Subsystem, "PlatformSubsystem"),
        (Kind::Resource, "EntityServices"),
        (Kind::PersistenceProvider, "ThingworxPersistenceProvider"),
    ] {
        assert!(m.get(k, n).is_some(), "{k} {n}");
    }
    assert!(check(&m, "Administrator", Permission::Delete, "Things").allowed());
}

#[test]
fn invalid_names_are_refused() {
    let mut m = model();
    for bad in ["a&b", "a:b", "a/b", "a+b", "", " x"] {
        let err = refused(&mut m, |tx| tx.create(Entity::user(bad)));
        assert!(
            matches!(err, ModelError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("invalid User name"), "{err}");
    }
    let err = refused(&mut m, |tx| {
        let mut t = Entity::thing("T", "GenericThing");
        if let Body::Thing(b) = &mut t.body {
            b.definitions.properties.push(PropertyDef {
                name: "bad-name".into(),
                base_type: BaseType::String,
                description: String::new(),
                default_value: None,
                read_only: false,
                data_shape: None,
                data_change_type: Default::default(),
                logged: false,
            });
        }
        tx.create(t)
    });
    assert!(err.to_string().contains("invalid property name"), "{err}");
}

#[test]
fn duplicates_are_refused() {
    let mut m = model();
    user(&mut m, "bob");
    let err = refused(&mut m, |tx| tx.create(Entity::user("bob")));
    assert_eq!(
        err,
        ModelError::AlreadyExists {
            kind: Kind::User,
            name: "bob".into()
        }
    );
    assert!(err.to_string().contains("already exists"));
    // The same name in another collection is fine.
    m.create(Entity::thing("bob", "GenericThing")).unwrap();
}

#[test]
fn unknown_references_are_refused() {
    let mut m = model();
    let err = refused(&mut m, |tx| tx.create(Entity::thing("T", "NoSuchTemplate")));
    assert!(
        matches!(
            err,
            ModelError::MissingReference {
                kind: Kind::ThingTemplate,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("NoSuchTemplate"), "{err}");
    let err = refused(&mut m, |tx| {
        let mut g = Entity::group("G");
        if let Body::Group(b) = &mut g.body {
            b.members.push(PrincipalRef::user("ghost"));
        }
        tx.create(g)
    });
    assert!(err.to_string().contains("ghost"), "{err}");
    let err = refused(&mut m, |tx| {
        let mut t = Entity::thing("T", "GenericThing");
        t.permissions
            .visibility
            .push(VisibilityEntry::unit("Everyone", "Nope"));
        tx.create(t)
    });
    assert!(err.to_string().contains("Everyone:Nope"), "{err}");
    // A wrong kind is an unknown reference too: a Thing is not a template.
    thing(&mut m, "Pump", "GenericThing");
    let err = refused(&mut m, |tx| tx.create(Entity::thing("T2", "Pump")));
    assert!(err.to_string().contains("ThingTemplate \"Pump\""), "{err}");
}

#[test]
fn template_and_group_cycles_are_refused() {
    let mut m = model();
    template(&mut m, "A", "GenericThing");
    template(&mut m, "B", "A");
    let err = refused(&mut m, |tx| {
        if let Body::ThingTemplate(t) = &mut tx.get_mut(Kind::ThingTemplate, "A")?.body {
            t.base_thing_template = Some("B".into());
        }
        Ok(())
    });
    assert!(
        matches!(
            err,
            ModelError::Cycle {
                kind: Kind::ThingTemplate,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("A -> B -> A") || err.to_string().contains("B -> A -> B"),
        "{err}"
    );

    group(&mut m, "G1", &[]);
    group(&mut m, "G2", &[PrincipalRef::group("G1")]);
    group(&mut m, "G3", &[PrincipalRef::group("G2")]);
    let err = refused(&mut m, |tx| {
        if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "G1")?.body {
            g.members.push(PrincipalRef::group("G3"));
        }
        Ok(())
    });
    assert!(
        matches!(
            err,
            ModelError::Cycle {
                kind: Kind::Group,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("G1 -> G3 -> G2 -> G1"), "{err}");
    // Units too.
    org(&mut m, "O", &[("O", None), ("U1", Some("O"))]);
    let err = refused(&mut m, |tx| {
        if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "O")?.body {
            o.units.push(Unit {
                name: "U2".into(),
                parent: Some("U3".into()),
                members: vec![],
            });
            o.units.push(Unit {
                name: "U3".into(),
                parent: Some("U2".into()),
                members: vec![],
            });
        }
        Ok(())
    });
    assert!(
        matches!(
            err,
            ModelError::Cycle {
                kind: Kind::Organization,
                ..
            }
        ),
        "{err}"
    );
}

fn prop(name: &str, t: BaseType) -> PropertyDef {
    PropertyDef {
        name: name.into(),
        base_type: t,
        description: String::new(),
        default_value: None,
        read_only: false,
        data_shape: None,
        data_change_type: Default::default(),
        logged: false,
    }
}

/// The one-member lookup of a request (`find_property`, `find_service`) finds, for every Thing
/// and template, exactly what merging the whole chain has, from the same source; and nothing
/// for a name nobody defines.
fn finding_agrees_with_merging(m: &Model) {
    for kind in [Kind::Thing, Kind::ThingTemplate] {
        for e in m.entities(kind) {
            let merged = validate::merged_definitions(m, e).unwrap();
            for (name, (def, source)) in &merged.properties {
                let (found, at) = validate::find_property(m, e, name).expect(name);
                assert_eq!(
                    (found, at.key().to_string()),
                    (def, source.clone()),
                    "{}",
                    e.key()
                );
            }
            for (name, (def, source)) in &merged.services {
                let (found, at) = validate::find_service(m, e, name).expect(name);
                assert_eq!(
                    (found, at.key().to_string()),
                    (def, source.clone()),
                    "{}",
                    e.key()
                );
            }
            assert!(validate::find_property(m, e, "nobody-defines-this").is_none());
            assert!(validate::find_service(m, e, "nobody-defines-this").is_none());
        }
    }
}

#[test]
fn definitions_merge_along_the_chain_and_a_duplicate_is_refused() {
    let mut m = model();
    template(&mut m, "Base", "GenericThing");
    template(&mut m, "Pump", "Base");
    m.create(Entity::shape("Rotating")).unwrap();
    m.change(|tx| {
        tx.get_mut(Kind::ThingTemplate, "Base")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(prop("serial", BaseType::String));
        tx.get_mut(Kind::ThingShape, "Rotating")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(prop("rpm", BaseType::Number));
        if let Body::ThingTemplate(t) = &mut tx.get_mut(Kind::ThingTemplate, "Pump")?.body {
            t.thing_shapes.push("Rotating".into());
        }
        Ok(())
    })
    .unwrap();
    thing(&mut m, "P1", "Pump");
    let merged = validate::merged_definitions(&m, m.get(Kind::Thing, "P1").unwrap()).unwrap();
    assert_eq!(merged.properties["serial"].1, "ThingTemplates/Base");
    assert_eq!(merged.properties["rpm"].1, "ThingShapes/Rotating");
    finding_agrees_with_merging(&m);
    // The Thing implementing the shape its template already has is not a duplicate.
    m.change(|tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, "P1")?.body {
            t.thing_shapes.push("Rotating".into());
        }
        Ok(())
    })
    .unwrap();
    finding_agrees_with_merging(&m);
    // A second definition of `serial` in the chain is refused, naming both sources.
    let err = refused(&mut m, |tx| {
        tx.get_mut(Kind::Thing, "P1")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(prop("serial", BaseType::Integer));
        Ok(())
    });
    let text = err.to_string();
    assert!(
        text.contains("serial")
            && text.contains("ThingTemplates/Base")
            && text.contains("Things/P1"),
        "{text}"
    );
    // Also when the duplicate appears higher up, after the Thing exists.
    let err = refused(&mut m, |tx| {
        tx.get_mut(Kind::ThingShape, "Rotating")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(prop("serial", BaseType::String));
        Ok(())
    });
    assert!(
        matches!(err, ModelError::DuplicateDefinition { .. }),
        "{err}"
    );
}

#[test]
fn property_values_follow_their_base_type() {
    let mut m = model();
    template(&mut m, "Pump", "GenericThing");
    m.change(|tx| {
        tx.get_mut(Kind::ThingTemplate, "Pump")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(prop("rpm", BaseType::Integer));
        Ok(())
    })
    .unwrap();
    thing(&mut m, "P1", "Pump");
    let set = |v: serde_json::Value| {
        move |tx: &mut Tx<'_>| {
            if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, "P1")?.body {
                t.values.insert("rpm".into(), v);
            }
            Ok(())
        }
    };
    m.change(set(json!(1200))).unwrap();
    let err = refused(&mut m, set(json!("fast")));
    assert!(
        err.to_string().contains("expected a INTEGER value"),
        "{err}"
    );
    let err = refused(&mut m, |tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, "P1")?.body {
            t.values.insert("nope".into(), json!(1));
        }
        Ok(())
    });
    assert!(
        err.to_string().contains("not one of its properties"),
        "{err}"
    );
    // Changing the type on the template re-checks the Things' stored values.
    let err = refused(&mut m, |tx| {
        let defs = tx
            .get_mut(Kind::ThingTemplate, "Pump")?
            .definitions_mut()
            .unwrap();
        defs.properties[0].base_type = BaseType::Boolean;
        Ok(())
    });
    assert!(err.to_string().contains("Things/P1"), "{err}");
}

#[test]
fn in_use_templates_cannot_be_deleted_and_predefined_entities_are_protected() {
    let mut m = model();
    template(&mut m, "Pump", "GenericThing");
    thing(&mut m, "P1", "Pump");
    thing(&mut m, "P2", "Pump");
    let err = refused(&mut m, |tx| tx.delete(Kind::ThingTemplate, "Pump"));
    assert!(matches!(err, ModelError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("Things/P1, Things/P2"), "{err}");
    m.delete(Kind::Thing, "P1").unwrap();
    m.delete(Kind::Thing, "P2").unwrap();
    m.delete(Kind::ThingTemplate, "Pump").unwrap();
    for (k, n) in [
        (Kind::User, "Administrator"),
        (Kind::Group, "Users"),
        (Kind::ThingTemplate, "GenericThing"),
    ] {
        let err = refused(&mut m, |tx| tx.delete(k, n));
        assert!(matches!(err, ModelError::Protected { .. }), "{err}");
    }
    let err = refused(&mut m, |tx| {
        if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "Administrators")?.body {
            g.members.clear();
        }
        Ok(())
    });
    assert!(err.to_string().contains("Administrator must stay"), "{err}");
    let err = refused(&mut m, |tx| tx.delete(Kind::Thing, "Nope"));
    assert_eq!(
        err,
        ModelError::NotFound {
            kind: Kind::Thing,
            name: "Nope".into()
        }
    );
}

#[test]
fn deleting_a_principal_removes_it_everywhere_so_a_namesake_inherits_nothing() {
    let mut m = basic();
    group(&mut m, "Crew", &[PrincipalRef::user("u")]);
    acl(&mut m, Kind::Thing, "T1", |a| {
        a.run_time.push(rt(
            PrincipalRef::user("u"),
            Permission::PropertyRead,
            "*",
            true,
        ));
        a.run_time.push(rt(
            PrincipalRef::group("Crew"),
            Permission::PropertyWrite,
            "*",
            true,
        ));
    });
    collection_acl(&mut m, Kind::Thing, |a| {
        a.design_time
            .push(dt(PrincipalRef::user("u"), Permission::Create, true))
    });
    m.create(Entity::new(
        "u-key",
        Body::ApplicationKey(ApplicationKeyBody {
            user: "u".into(),
            key_hash: "abc".into(),
            fingerprint: String::new(),
            expiration_date: 1,
            whitelist: vec!["10.0.0.0/8".into()],
            client_name: String::new(),
            created: 0,
        }),
    ))
    .unwrap();
    m.delete(Kind::User, "u").unwrap();
    assert!(m.get(Kind::ApplicationKey, "u-key").is_none());
    let Body::Group(g) = &m.get(Kind::Group, "Crew").unwrap().body else {
        panic!()
    };
    assert!(g.members.is_empty());
    assert!(
        m.get(Kind::Thing, "T1")
            .unwrap()
            .permissions
            .run_time
            .iter()
            .all(|e| e.principal.principal != "u")
    );
    assert!(m.collection(Kind::Thing).is_none());
    // A new user of the same name starts with nothing.
    user(&mut m, "u");
    assert_eq!(
        outcome(&m, "u", Permission::PropertyRead, "Things/T1"),
        Outcome::NotVisible
    );
    // Deleting an organization drops the visibility entries naming it.
    m.delete(Kind::Organization, "Acme").unwrap();
    assert!(
        m.get(Kind::Thing, "T1")
            .unwrap()
            .permissions
            .visibility
            .is_empty()
    );
    // Deleting a group drops its entries.
    m.delete(Kind::Group, "Crew").unwrap();
    assert!(
        m.get(Kind::Thing, "T1")
            .unwrap()
            .permissions
            .run_time
            .is_empty()
    );
}

#[test]
fn a_unit_still_named_by_visibility_cannot_be_removed() {
    let mut m = model();
    org(&mut m, "Acme", &[("Acme", None), ("Plant", Some("Acme"))]);
    thing(&mut m, "T", "GenericThing");
    acl(&mut m, Kind::Thing, "T", |a| {
        a.visibility.push(VisibilityEntry::unit("Acme", "Plant"))
    });
    let err = refused(&mut m, |tx| {
        if let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "Acme")?.body {
            o.units.retain(|u| u.name != "Plant");
        }
        Ok(())
    });
    assert!(
        err.to_string()
            .contains("unit Plant is still named by Things/T"),
        "{err}"
    );
}

#[test]
fn app_key_whitelists_are_checked() {
    let mut m = basic();
    let key = |w: &str| {
        Entity::new(
            "k",
            Body::ApplicationKey(ApplicationKeyBody {
                user: "u".into(),
                key_hash: "h".into(),
                fingerprint: String::new(),
                expiration_date: 0,
                whitelist: vec![w.into()],
                client_name: String::new(),
                created: 0,
            }),
        )
    };
    let err = refused(&mut m, |tx| tx.create(key("10.0.0.0/33")));
    assert!(err.to_string().contains("prefix"), "{err}");
    let err = refused(&mut m, |tx| tx.create(key("example.com")));
    assert!(err.to_string().contains("not an IP address"), "{err}");
    m.create(key("::1")).unwrap();
}

#[test]
fn export_then_import_restores_the_model_and_import_is_all_or_nothing() {
    let mut m = basic();
    template(&mut m, "Pump", "GenericThing");
    thing(&mut m, "P1", "Pump");
    let file = m.export();
    let text = serde_json::to_string_pretty(&file).unwrap();
    let back: ModelFile = serde_json::from_str(&text).unwrap();
    let restored = Model::from_parts(back.entities, back.collections, Policy::default()).unwrap();
    assert_eq!(restored.export(), file);

    // Import into a fresh model: all of it lands.
    let mut fresh = model();
    fresh.import(file.clone()).unwrap();
    assert_eq!(fresh.export(), file);

    // One bad entity refuses the whole file.
    let mut bad = file.clone();
    bad.entities.push(Entity::thing("Broken", "NoSuchTemplate"));
    bad.entities.push(Entity::user("fine"));
    let mut target = model();
    let before = target.export();
    let err = target.import(bad).unwrap_err();
    assert!(err.to_string().contains("NoSuchTemplate"), "{err}");
    assert_eq!(target.export(), before);
    // Twice the same entity, a wrong format or version: refused.
    let mut twice = file.clone();
    twice.entities.push(Entity::user("u"));
    assert!(
        target
            .import(twice)
            .unwrap_err()
            .to_string()
            .contains("appears twice")
    );
    let mut wrong = file;
    wrong.version = 99;
    assert!(
        target
            .import(wrong)
            .unwrap_err()
            .to_string()
            .contains("version 99")
    );
}

#[test]
fn a_reverted_batch_restores_model_and_index() {
    let mut m = basic();
    let before = m.export();
    let batch = m
        .change(|tx| {
            tx.get_mut(Kind::Thing, "T1")?.permissions.run_time.push(rt(
                PrincipalRef::user("u"),
                Permission::PropertyRead,
                "*",
                true,
            ));
            tx.create(Entity::user("v"))
        })
        .unwrap();
    assert!(check(&m, "u", Permission::PropertyRead, "Things/T1").allowed());
    m.revert(batch);
    assert_eq!(m.export(), before);
    assert!(!check(&m, "u", Permission::PropertyRead, "Things/T1").allowed());
    assert!(m.subject("v").is_none());
}

#[test]
fn application_keys_are_found_by_hash_and_forgotten_with_their_user() {
    let mut m = basic();
    let key = |name: &str, hash: &str| {
        Entity::new(
            name,
            Body::ApplicationKey(ApplicationKeyBody {
                user: "u".into(),
                key_hash: hash.into(),
                fingerprint: String::new(),
                expiration_date: 0,
                whitelist: vec![],
                client_name: String::new(),
                created: 0,
            }),
        )
    };
    m.create(key("k1", "sha256:aa")).unwrap();
    m.create(key("k2", "sha256:bb")).unwrap();
    assert_eq!(m.application_key("sha256:aa").unwrap().name, "k1");
    assert!(m.application_key("sha256:cc").is_none());
    m.delete(Kind::ApplicationKey, "k1").unwrap();
    assert!(m.application_key("sha256:aa").is_none());
    m.delete(Kind::User, "u").unwrap();
    assert!(m.application_key("sha256:bb").is_none());
}

/// The lock-out guard (issue 9): no change may leave Administrators without an enabled user who
/// can sign in; one that keeps another administrator (direct or nested) passes.
#[test]
fn lock_out_guard_keeps_an_enabled_administrator() {
    let set_user = |m: &mut Model, name: &str, enabled: bool, locked: bool| {
        let name = name.to_string();
        m.change(move |tx| {
            if let Body::User(u) = &mut tx.get_mut(Kind::User, &name)?.body {
                u.enabled = enabled;
                u.locked = locked;
            }
            Ok(())
        })
    };
    let mut m = model();
    // Administrator can sign in (a password); the other users below get keys or passwords as
    // the test needs them.
    m.change(|tx| {
        if let Body::User(u) = &mut tx.get_mut(Kind::User, "Administrator")?.body {
            u.password_hash = Some("$argon2id$stand-in".into());
        }
        Ok(())
    })
    .unwrap();
    // The only administrator: disabling, locking or removing it from the group is refused.
    let before = m.export();
    assert!(matches!(
        set_user(&mut m, "Administrator", false, false),
        Err(ModelError::LockOut)
    ));
    assert!(matches!(
        set_user(&mut m, "Administrator", true, true),
        Err(ModelError::LockOut)
    ));
    let err = m
        .change(|tx| {
            if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "Administrators")?.body {
                g.members.clear();
            }
            Ok(())
        })
        .unwrap_err();
    // (Administrator itself may never leave the group: an older, stricter rule.)
    assert!(
        matches!(err, ModelError::LockOut | ModelError::Protected { .. }),
        "{err}"
    );
    assert_eq!(m.export(), before);
    // Another administrator through a nested group, who cannot sign in (no password, no key):
    // the first still may not be disabled.
    user(&mut m, "ops");
    group(&mut m, "Ops", &[PrincipalRef::user("ops")]);
    add_member(&mut m, "Administrators", PrincipalRef::group("Ops"));
    assert!(matches!(
        set_user(&mut m, "Administrator", false, false),
        Err(ModelError::LockOut)
    ));
    // With a key it can sign in: now the first may be disabled.
    m.create(Entity::new(
        "ops-key",
        Body::ApplicationKey(ApplicationKeyBody {
            user: "ops".into(),
            key_hash: "hash-of-ops-key".into(),
            fingerprint: String::new(),
            expiration_date: i64::MAX,
            whitelist: vec![],
            client_name: String::new(),
            created: 0,
        }),
    ))
    .unwrap();
    set_user(&mut m, "Administrator", false, false).unwrap();
    // ...and deleting the key of the last one who can sign in is refused too.
    assert!(matches!(
        m.delete(Kind::ApplicationKey, "ops-key"),
        Err(ModelError::LockOut)
    ));
    // ...but not the last one left.
    assert!(matches!(
        set_user(&mut m, "ops", false, false),
        Err(ModelError::LockOut)
    ));
    assert!(matches!(
        m.delete(Kind::User, "ops"),
        Err(ModelError::LockOut) | Err(ModelError::InUse { .. })
    ));
}

/// Names that are folders (`.`, `..`) or over 200 characters are refused for a new entity of
/// any kind; an entity stored under such a name by an older version still loads and can still
/// be changed (its data directory starts), and can be deleted.
#[test]
fn u6_folder_names_are_refused_when_created_and_tolerated_when_stored() {
    let mut m = model();
    for name in [".", "..", " ", &"x".repeat(201)] {
        for e in [
            Entity::thing(name, "GenericThing"),
            Entity::template(name, "GenericThing"),
        ] {
            let err = refused(&mut m, |tx| tx.create(e));
            assert!(
                matches!(err, ModelError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
    }
    let mut file = m.export();
    file.entities.push(Entity::thing("..", "GenericThing"));
    let mut loaded = Model::from_parts(
        file.entities,
        file.collections,
        thinghost_core::Policy::default(),
    )
    .expect("a stored name of an older version loads");
    loaded
        .change(|tx| {
            tx.get_mut(Kind::Thing, "..")?.description = "still usable".into();
            Ok(())
        })
        .unwrap();
    loaded.change(|tx| tx.delete(Kind::Thing, "..")).unwrap();
}
