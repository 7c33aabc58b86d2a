//! The seeds' own cases: the secure device model of seed 000, and the audit permission table of
//! seed 003 (as data: tests/data/audit-service-permissions.json, copied from shared/data).

mod common;
use common::*;
use serde_json::Value as Json;
use thinghost_core::*;

use Permission::*;

/// Seed 000: one user per device, in the right organization, one key each; a Remote Thing per
/// device with visibility for the organization's unit and run-time permissions for that user only.
#[test]
fn seed000_a_device_user_reaches_its_own_remote_thing_only() {
    let mut m = model();
    org(
        &mut m,
        "Plant",
        &[
            ("Plant", None),
            ("Line1", Some("Plant")),
            ("Line2", Some("Plant")),
        ],
    );
    group(&mut m, "Devices", &[]);
    template(&mut m, "RemoteThing", "GenericThing");
    user(&mut m, "supervisor");
    unit_member(&mut m, "Plant", "Plant", PrincipalRef::user("supervisor"));
    for (dev, thing_name, unit) in [("dev1", "Pump1", "Line1"), ("dev2", "Pump2", "Line2")] {
        user(&mut m, dev);
        add_member(&mut m, "Devices", PrincipalRef::user(dev));
        unit_member(&mut m, "Plant", unit, PrincipalRef::user(dev));
        thing(&mut m, thing_name, "RemoteThing");
        acl(&mut m, Kind::Thing, thing_name, |a| {
            a.visibility.push(VisibilityEntry::unit("Plant", unit));
            for p in [PropertyRead, PropertyWrite, ServiceInvoke, EventInvoke] {
                a.run_time.push(rt(PrincipalRef::user(dev), p, "*", true));
            }
        });
    }
    // The device works with its own Thing.
    for p in [PropertyRead, PropertyWrite, ServiceInvoke, EventInvoke] {
        assert!(check(&m, "dev1", p, "Things/Pump1").allowed(), "{p}");
    }
    assert!(
        check(
            &m,
            "dev1",
            PropertyWrite,
            "Things/Pump1/Properties/pressure"
        )
        .allowed()
    );
    // Another device's Thing is invisible, exactly like a Thing that does not exist.
    for p in Permission::ALL {
        assert_eq!(
            outcome(&m, "dev1", p, "Things/Pump2"),
            Outcome::NotVisible,
            "{p}"
        );
    }
    // No design time: it cannot change its Thing, grant itself anything (D1: Update), or create.
    for p in [Read, Update, Delete] {
        assert_eq!(
            outcome(&m, "dev1", p, "Things/Pump1"),
            Outcome::Denied,
            "{p}"
        );
    }
    for k in Kind::ALL {
        assert_eq!(
            m.check(m.subject("dev1").unwrap(), Create, Target::Collection(k))
                .outcome,
            Outcome::Denied
        );
    }
    // The supervisor's unit sees both Things (visibility flows up), but was granted nothing.
    for t in ["Things/Pump1", "Things/Pump2"] {
        assert_eq!(
            outcome(&m, "supervisor", PropertyRead, t),
            Outcome::Denied,
            "{t}"
        );
    }
}

fn audit_table() -> Json {
    let text = include_str!("data/audit-service-permissions.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn seed003_the_vendored_table_matches_shared_data() {
    // The shared folder: THINGHOST_SHARED, or `shared` beside the workspace; missing, the test
    // fails (THINGHOST_NO_SHARED=1 skips it knowingly).
    if std::env::var_os("THINGHOST_NO_SHARED").is_some_and(|v| v == "1") {
        eprintln!("THINGHOST_NO_SHARED=1: the check against the shared folder is skipped");
        return;
    }
    let dir = std::env::var_os("THINGHOST_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
        });
    let text = std::fs::read_to_string(dir.join("data/audit-service-permissions.json"))
        .unwrap_or_else(|e| {
            panic!(
                "{}/data/audit-service-permissions.json: {e}; set THINGHOST_SHARED to the shared folder, or THINGHOST_NO_SHARED=1 to skip this check knowingly",
                dir.display()
            )
        });
    let shared: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(
        shared,
        audit_table(),
        "refresh host/core/tests/data from shared/data"
    );
}

/// One grant of the table: (entity path, what it grants).
#[derive(Clone, Debug, PartialEq)]
enum Grant {
    Visibility,
    Design(Permission),
    Run(Permission, String),
}

const REPO: &str = "AuditExports";

fn entity_of(path: &str) -> (Kind, String) {
    let path = path.replace("<user-created FileRepository>", REPO);
    let (c, n) = path.split_once('/').unwrap();
    (Kind::from_collection(c).unwrap(), n.to_string())
}

fn grants(service: &Json) -> Vec<((Kind, String), Grant)> {
    let mut out = Vec::new();
    for item in service.as_array().unwrap() {
        let e = entity_of(item["entity"].as_str().unwrap());
        if item["visibility"].as_bool().unwrap() {
            out.push((e.clone(), Grant::Visibility));
        }
        for d in item["designTime"].as_array().unwrap() {
            out.push((
                e.clone(),
                Grant::Design(Permission::parse(d.as_str().unwrap()).unwrap()),
            ));
        }
        for r in item["runTime"].as_array().unwrap() {
            let p = Permission::parse(r["type"].as_str().unwrap()).unwrap();
            out.push((
                e.clone(),
                Grant::Run(p, r["resource"].as_str().unwrap().to_string()),
            ));
        }
    }
    out
}

/// The audit entities, an organization with the group `AuditOps` in it, and user `auditor1`.
fn audit_model(given: &[((Kind, String), Grant)]) -> Model {
    let mut m = model();
    // AuditHistory is predefined (the audit services answer in it).
    assert!(m.get(Kind::DataShape, "AuditHistory").is_some());
    // So are the audit subsystem's schedulers and its archive repository (U6).
    for t in [
        "AuditArchiveScheduler",
        "AuditArchiveSchedulerDirectPersistence",
        "AuditPurgeScheduler",
        "AuditArchiveCleanupScheduler",
        "AuditArchiveCleanupNotificationScheduler",
        "AuditArchiveFileRepository",
    ] {
        assert!(m.get(Kind::Thing, t).is_some(), "{t} is predefined");
    }
    thing(&mut m, REPO, "FileRepository");
    org(&mut m, "AuditOrg", &[("AuditOrg", None)]);
    user(&mut m, "auditor1");
    group(&mut m, "AuditOps", &[PrincipalRef::user("auditor1")]);
    unit_member(
        &mut m,
        "AuditOrg",
        "AuditOrg",
        PrincipalRef::group("AuditOps"),
    );
    for ((kind, name), g) in given {
        acl(&mut m, *kind, name, |a| match g {
            Grant::Visibility => a.visibility.push(VisibilityEntry::organization("AuditOrg")),
            Grant::Design(p) => a
                .design_time
                .push(dt(PrincipalRef::group("AuditOps"), *p, true)),
            Grant::Run(p, r) => a
                .run_time
                .push(rt(PrincipalRef::group("AuditOps"), *p, r, true)),
        });
    }
    m
}

/// Does `user` hold every grant the service needs? (`*` needs every resource: checked with `*`
/// and with an arbitrary name.)
fn may_run(m: &Model, user: &str, needed: &[((Kind, String), Grant)]) -> bool {
    let s = m.subject(user).unwrap();
    needed.iter().all(|((kind, name), g)| {
        let id = m.access().id(*kind, name).unwrap();
        match g {
            Grant::Visibility => m.access().visible(s, id),
            Grant::Design(p) => m
                .check(s, *p, Target::Entity { id, resource: None })
                .allowed(),
            Grant::Run(p, r) => {
                let names: Vec<&str> = if r == "*" {
                    vec!["*", "SomeService"]
                } else {
                    vec![r.as_str()]
                };
                names.iter().all(|n| {
                    let resource = m.access().sym(n);
                    m.check(s, *p, Target::Entity { id, resource }).allowed()
                })
            }
        }
    })
}

#[test]
fn seed003_each_audit_service_needs_every_grant_of_its_row() {
    let table = audit_table();
    let services = table["services"].as_object().unwrap();
    assert_eq!(services.len(), 9);
    for (service, rows) in services {
        let needed = grants(rows);
        // With all grants, the group may run it.
        let m = audit_model(&needed);
        assert!(
            may_run(&m, "auditor1", &needed),
            "{service} with every grant"
        );
        // Administrators need none of them.
        assert!(
            may_run(&audit_model(&[]), "Administrator", &needed),
            "{service} for Administrator"
        );
        // Without any one grant, it fails.
        for (i, missing) in needed.iter().enumerate() {
            let mut fewer = needed.clone();
            fewer.remove(i);
            let m = audit_model(&fewer);
            assert!(
                !may_run(&m, "auditor1", &needed),
                "{service} without {missing:?}"
            );
        }
        // The overrides of every other service do not let it run.
        let others: Vec<_> = services
            .iter()
            .filter(|(s, _)| *s != service)
            .flat_map(|(_, r)| grants(r))
            .filter(|g| !needed.contains(g))
            .chain(
                needed
                    .iter()
                    .filter(|(_, g)| !matches!(g, Grant::Run(..)))
                    .cloned(),
            )
            .collect();
        let m = audit_model(&others);
        if needed
            .iter()
            .any(|(_, g)| matches!(g, Grant::Run(ServiceInvoke, r) if r == service))
        {
            assert!(
                !may_run(&m, "auditor1", &needed),
                "{service} with only the other services' overrides"
            );
        }
    }
}

#[test]
fn seed003_the_archive_repository_is_never_granted_to_non_admins() {
    let table = audit_table();
    let every: Vec<_> = table["services"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(grants)
        .collect();
    let m = audit_model(&every);
    let s = m.subject("auditor1").unwrap();
    for path in table["neverForNonAdmins"].as_array().unwrap() {
        let (kind, name) = entity_of(path.as_str().unwrap());
        let id = m.access().id(kind, &name).unwrap();
        assert!(!m.access().visible(s, id), "{name}");
        for p in Permission::ALL {
            assert_ne!(
                m.check(s, p, Target::Entity { id, resource: None }).outcome,
                Outcome::Allowed,
                "{name} {p}"
            );
        }
    }
}
