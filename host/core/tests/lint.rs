//! The security lint (DOMAIN.md section 8 and U7): each rule with a model that triggers it and
//! one that does not.

mod common;
use common::*;
use thinghost_core::lint::*;
use thinghost_core::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 24 * 3_600_000;

fn key(m: &mut Model, name: &str, user: &str, days: i64) {
    m.create(Entity::new(
        name,
        Body::ApplicationKey(ApplicationKeyBody {
            user: user.into(),
            key_hash: format!("hash-of-{name}"),
            fingerprint: String::new(),
            expiration_date: NOW + days * DAY,
            whitelist: vec![],
            client_name: String::new(),
            created: NOW,
        }),
    ))
    .unwrap();
}

fn rules(m: &Model, d: &Deployment) -> Vec<&'static str> {
    lint(m, d, NOW).into_iter().map(|f| f.rule).collect()
}

/// An allowing run-time entry on a Thing.
fn grant(m: &mut Model, thing: &str, p: PrincipalRef, perm: Permission, resource: &str) {
    acl(m, Kind::Thing, thing, |a| {
        a.run_time.push(rt(p, perm, resource, true))
    });
}

fn fires(m: &Model, id: &str) -> bool {
    rules(m, &Deployment::default()).contains(&id)
}

/// A model in which a device user `dev` (key `dev-key`) may write its own Remote Thing, seen
/// through its organization, and nothing else: clean for every rule but the persistence one.
fn clean() -> Model {
    let mut m = model();
    template(&mut m, "RemoteThing", "GenericThing");
    user(&mut m, "dev");
    key(&mut m, "dev-key", "dev", 30);
    org(&mut m, "Fleet", &[("Fleet", None)]);
    unit_member(&mut m, "Fleet", "Fleet", PrincipalRef::user("dev"));
    thing(&mut m, "Pump1", "RemoteThing");
    visible_to(&mut m, Kind::Thing, "Pump1", "Fleet");
    grant(
        &mut m,
        "Pump1",
        PrincipalRef::user("dev"),
        Permission::PropertyWrite,
        "*",
    );
    m
}

#[test]
fn a_clean_model_has_no_findings_but_the_persistence_provider_one() {
    let m = clean();
    assert_eq!(
        rules(&m, &Deployment::default()),
        ["no-persistence-provider"]
    );
    // Every rule is documented, with its id as the anchor.
    let doc = reference();
    for r in RULES {
        assert!(doc.contains(&format!("## {}\n", r.id)), "{}", r.id);
    }
}

#[test]
fn s8_admin_app_key() {
    let mut m = clean();
    assert!(!fires(&m, "admin-app-key"));
    key(&mut m, "admin-key", "Administrator", 1);
    let f = lint(&m, &Deployment::default(), NOW);
    let hit = f.iter().find(|f| f.rule == "admin-app-key").unwrap();
    assert_eq!(hit.severity, Severity::High);
    assert!(
        hit.entities
            .contains(&"ApplicationKeys/admin-key".to_string())
    );
    assert_eq!(hit.doc, "docs/lint.md#admin-app-key");
}

#[test]
fn s8_shared_device_user_several_keys_or_several_remote_things() {
    let mut m = clean();
    assert!(!fires(&m, "shared-device-user"));
    key(&mut m, "dev-key-2", "dev", 30);
    assert!(fires(&m, "shared-device-user"));
    // One key, but for two Remote Things.
    let mut m = clean();
    thing(&mut m, "Pump2", "RemoteThing");
    visible_to(&mut m, Kind::Thing, "Pump2", "Fleet");
    grant(
        &mut m,
        "Pump2",
        PrincipalRef::user("dev"),
        Permission::PropertyWrite,
        "*",
    );
    let f = lint(&m, &Deployment::default(), NOW);
    let hit = f.iter().find(|f| f.rule == "shared-device-user").unwrap();
    assert!(
        hit.message.contains("2 or more Remote Things"),
        "{}",
        hit.message
    );
}

#[test]
fn s8_device_design_time() {
    let mut m = clean();
    assert!(!fires(&m, "device-design-time"));
    acl(&mut m, Kind::Thing, "Pump1", |a| {
        a.design_time
            .push(dt(PrincipalRef::user("dev"), Permission::Read, true))
    });
    assert!(fires(&m, "device-design-time"));
    // A user without a key is no device.
    let mut m = clean();
    user(&mut m, "human");
    collection_acl(&mut m, Kind::Thing, |a| {
        a.design_time
            .push(dt(PrincipalRef::user("human"), Permission::Create, true))
    });
    assert!(!fires(&m, "device-design-time"));
}

#[test]
fn s8_remote_thing_without_organization() {
    let mut m = clean();
    assert!(!fires(&m, "remote-thing-without-organization"));
    thing(&mut m, "Orphan", "RemoteThing");
    let f = lint(&m, &Deployment::default(), NOW);
    let hit = f
        .iter()
        .find(|f| f.rule == "remote-thing-without-organization")
        .unwrap();
    assert_eq!(hit.entities, ["Things/Orphan"]);
    // Visibility through the template's instance permissions counts.
    instance_acl(&mut m, Kind::ThingTemplate, "RemoteThing", |a| {
        a.visibility.push(VisibilityEntry::organization("Fleet"))
    });
    assert!(!fires(&m, "remote-thing-without-organization"));
}

#[test]
fn s8_design_time_in_production() {
    let mut m = clean();
    user(&mut m, "modeller");
    collection_acl(&mut m, Kind::Thing, |a| {
        a.design_time
            .push(dt(PrincipalRef::user("modeller"), Permission::Create, true))
    });
    let production = Deployment {
        production: true,
        transport: Transport::Tls,
    };
    assert!(rules(&m, &production).contains(&"design-time-in-production"));
    assert!(
        !fires(&m, "design-time-in-production"),
        "only in production"
    );
    assert!(!rules(&clean(), &production).contains(&"design-time-in-production"));
}

#[test]
fn s8_key_lifetime() {
    let mut m = clean();
    key(&mut m, "year-key", "dev", 365);
    assert!(!fires(&m, "key-lifetime"));
    key(&mut m, "forever-key", "dev", 100 * 365);
    let f = lint(&m, &Deployment::default(), NOW);
    let hits: Vec<_> = f.iter().filter(|f| f.rule == "key-lifetime").collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].entities, ["ApplicationKeys/forever-key"]);
}

#[test]
fn s8_insecure_transport() {
    let m = clean();
    assert!(!rules(&m, &Deployment::default()).contains(&"insecure-transport"));
    for (t, sev) in [
        (Transport::PlainHttp, Severity::High),
        (Transport::SelfSigned, Severity::Medium),
    ] {
        let f = lint(
            &m,
            &Deployment {
                production: false,
                transport: t,
            },
            NOW,
        );
        let hit = f.iter().find(|f| f.rule == "insecure-transport").unwrap();
        assert_eq!(hit.severity, sev);
    }
}

#[test]
fn s8_users_in_everyone() {
    let mut m = clean();
    assert!(!fires(&m, "users-in-everyone"));
    unit_member(&mut m, "Everyone", "Everyone", PrincipalRef::group("Users"));
    assert!(fires(&m, "users-in-everyone"));
}

#[test]
fn s8_blanket_service_invoke() {
    let mut m = clean();
    group(&mut m, "Ops", &[]);
    grant(
        &mut m,
        "Pump1",
        PrincipalRef::group("Ops"),
        Permission::ServiceInvoke,
        "Reset",
    );
    assert!(!fires(&m, "blanket-service-invoke"), "an override is fine");
    // Administrators may have it.
    grant(
        &mut m,
        "Pump1",
        PrincipalRef::group("Administrators"),
        Permission::ServiceInvoke,
        "*",
    );
    assert!(!fires(&m, "blanket-service-invoke"));
    instance_acl(&mut m, Kind::ThingTemplate, "RemoteThing", |a| {
        a.run_time.push(rt(
            PrincipalRef::group("Ops"),
            Permission::ServiceInvoke,
            "*",
            true,
        ))
    });
    let f = lint(&m, &Deployment::default(), NOW);
    let hit = f
        .iter()
        .find(|f| f.rule == "blanket-service-invoke")
        .unwrap();
    assert!(
        hit.entities[0].contains("ThingTemplates/RemoteThing"),
        "{hit:?}"
    );
}

#[test]
fn u7_audit_entities() {
    let mut m = clean();
    assert!(!fires(&m, "audit-entities"));
    group(&mut m, "AuditOps", &[]);
    grant(
        &mut m,
        "AuditArchiveFileRepository",
        PrincipalRef::group("AuditOps"),
        Permission::ServiceInvoke,
        "*",
    );
    let f = lint(&m, &Deployment::default(), NOW);
    let hit = f.iter().find(|f| f.rule == "audit-entities").unwrap();
    assert_eq!(hit.severity, Severity::High);
    // Anyone, even an administrator, writing lastArchivedTime.
    let mut m = clean();
    grant(
        &mut m,
        "AuditArchiveScheduler",
        PrincipalRef::user("Administrator"),
        Permission::PropertyWrite,
        "lastArchivedTime",
    );
    assert!(fires(&m, "audit-entities"));
    // A grant through the Things collection reaches lastArchivedTime too.
    let mut m = clean();
    collection_acl(&mut m, Kind::Thing, |a| {
        a.visibility.push(VisibilityEntry::organization("Fleet"));
        a.run_time.push(rt(
            PrincipalRef::user("dev"),
            Permission::PropertyWrite,
            "*",
            true,
        ))
    });
    let f = lint(&m, &Deployment::default(), NOW);
    assert!(
        f.iter()
            .any(|f| f.rule == "audit-entities" && f.message.contains("AuditArchiveScheduler")),
        "{f:#?}"
    );
    // Non-admin access to the purge scheduler.
    let mut m = clean();
    grant(
        &mut m,
        "AuditPurgeScheduler",
        PrincipalRef::user("dev"),
        Permission::PropertyRead,
        "*",
    );
    assert!(fires(&m, "audit-entities"));
}

#[test]
fn s8_no_persistence_provider() {
    let mut m = clean();
    assert!(fires(&m, "no-persistence-provider"));
    visible_to(
        &mut m,
        Kind::PersistenceProvider,
        "ThingworxPersistenceProvider",
        "Fleet",
    );
    assert!(!fires(&m, "no-persistence-provider"));
}

#[test]
fn the_rules_page_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/lint.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == reference(),
        "docs/lint.md is out of date: regenerate it with `cargo run -p thinghost -- lint --rules > docs/lint.md`"
    );
}
