//! The security lint: the secure-modelling advice of the seeds (DOMAIN.md section 8, and U7) as
//! rules over a model. Pure: the facts the model cannot know (how the server is deployed, the
//! time) come in as arguments.
//!
//! Each rule has an id (its anchor in `docs/lint.md`), a severity, and a fix. Questions of
//! access go to [`AccessIndex::check`](crate::access::AccessIndex::check); questions of *who was
//! granted what* read the permission entries.

use crate::access::{Outcome, Target};
use crate::entity::{Acl, Body, Entity, PermissionEntry, PrincipalRef, PrincipalType};
use crate::model::{Model, View};
use crate::names::{Kind, Permission};
use crate::predefined;
use serde::Serialize;

/// How bad a finding is. `thinghost lint` exits 1 when one is `High` or above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// How the server runs: what the lint cannot read from the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deployment {
    /// `serve --production`.
    pub production: bool,
    pub transport: Transport,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// TLS with a certificate the operator provided.
    #[default]
    Tls,
    /// TLS with the generated self-signed development certificate (`--dev`).
    SelfSigned,
    /// Plain HTTP (`--insecure-http`).
    PlainHttp,
}

/// One rule: its id, severity, what it checks and the fix.
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub why: &'static str,
    pub fix: &'static str,
}

/// Every rule, in the order of DOMAIN.md section 8, then U7.
pub const RULES: &[Rule] = &[
    Rule {
        id: "admin-app-key",
        severity: Severity::High,
        title: "An application key whose user is in Administrators",
        why: "A key is a password that is sent with every request and stored on devices and in scripts; one that carries administrator rights gives everything to whoever reads it (seed 000: never give an app key administrator rights).",
        fix: "Create a user with only the permissions the key's client needs, give it the key, and delete this key.",
    },
    Rule {
        id: "shared-device-user",
        severity: Severity::Medium,
        title: "One user behind several keys, or one key for several Remote Things",
        why: "When devices share a user (or a key), a key stolen from one speaks for all of them, and the audit log cannot tell them apart.",
        fix: "Give each device its own user and its own key, with run-time permissions on its own Thing only.",
    },
    Rule {
        id: "device-design-time",
        severity: Severity::High,
        title: "A device user with design-time permissions",
        why: "A device only reads and writes its Thing's properties and runs its services; a design-time permission lets a stolen device key change or delete the model.",
        fix: "Remove the design-time entries that name the user or its groups (or take the user out of those groups).",
    },
    Rule {
        id: "remote-thing-without-organization",
        severity: Severity::Medium,
        title: "A Remote Thing that no organization can see",
        why: "Visibility through organizations is what keeps one customer's devices out of another's sight; a Remote Thing without it is reachable only by its owner and administrators, or depends on ad-hoc grants.",
        fix: "Add a visibility permission for the organization (or unit) that operates the Thing, on the Thing or on its template's instance permissions.",
    },
    Rule {
        id: "design-time-in-production",
        severity: Severity::Medium,
        title: "Design-time permissions in a production deployment",
        why: "Modelling belongs in development; in production, design-time rights for anyone but administrators let the model drift from what was tested (seed 000).",
        fix: "Remove the design-time entries for non-administrators, or make the changes in development and import the model.",
    },
    Rule {
        id: "key-lifetime",
        severity: Severity::Medium,
        title: "An application key that never expires, or lives longer than a year",
        why: "A key that outlives its purpose stays a way in; expiry bounds the damage of a key that leaked unnoticed.",
        fix: "Give keys an expiration date within a year (CreateApplicationKey expirationDate) and rotate them.",
    },
    Rule {
        id: "insecure-transport",
        severity: Severity::Medium,
        title: "Plain HTTP or a self-signed certificate",
        why: "Keys and passwords travel with every request: plain HTTP shows them to the network, and a self-signed certificate teaches clients to trust any certificate.",
        fix: "Serve TLS with a certificate from a trusted authority (--tls-cert, --tls-key) and run with --production, which refuses the others.",
    },
    Rule {
        id: "users-in-everyone",
        severity: Severity::High,
        title: "The Users group is a member of the Everyone organization",
        why: "Every user is in Users, so everything visible to Everyone is visible to every user: organizations no longer separate anything (the vendor's default; it advises removing it).",
        fix: "Remove Users from Everyone (Organizations/Everyone/Services/DeleteMember) and give visibility through organizations that match who should see what.",
    },
    Rule {
        id: "blanket-service-invoke",
        severity: Severity::Medium,
        title: "ServiceInvoke on every service (`*`) granted to a group",
        why: "A blanket grant includes services added later, and services nobody meant to expose; least privilege names each service.",
        fix: "Replace the `*` entry with one override per service the group needs.",
    },
    Rule {
        id: "audit-entities",
        severity: Severity::High,
        title: "Non-administrator access to the audit archive, its schedulers, or a writable lastArchivedTime",
        why: "Seed 003: permissions on AuditArchiveFileRepository should never be granted to non-administrators; the purge and cleanup schedulers are for administrators only; lastArchivedTime should never be updated by anyone, or archived entries are skipped or archived twice (U7).",
        fix: "Remove the entries the finding names.",
    },
    Rule {
        id: "no-persistence-provider",
        severity: Severity::Low,
        title: "No user but administrators can see a persistence provider",
        why: "Creating a DataTable, Stream or ValueStream needs visibility of a persistence provider (P1): without it, only administrators can create data-storage Things.",
        fix: "Add a visibility permission on ThingworxPersistenceProvider for the organization whose developers create data-storage Things (if any should).",
    },
];

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    /// What was found, in words.
    pub message: String,
    /// The entities at fault (paths).
    pub entities: Vec<String>,
    pub fix: &'static str,
    /// The rule's documentation (`docs/lint.md#id`).
    pub doc: String,
}

fn rule(id: &str) -> &'static Rule {
    RULES.iter().find(|r| r.id == id).expect("a known rule")
}

fn finding(id: &str, message: String, entities: Vec<String>) -> Finding {
    finding_as(id, rule(id).severity, message, entities)
}

fn finding_as(id: &str, severity: Severity, message: String, entities: Vec<String>) -> Finding {
    let r = rule(id);
    Finding {
        rule: r.id,
        severity,
        title: r.title,
        message,
        entities,
        fix: r.fix,
        doc: format!("docs/lint.md#{}", r.id),
    }
}

const YEAR_MS: i64 = 366 * 24 * 3_600_000;

/// Is the principal an administrator (a user in Administrators, or Administrators itself or a
/// group inside it: `admin_groups`, from `validate::administrator_groups`)?
fn is_admin_principal(
    m: &Model,
    admin_groups: &std::collections::BTreeSet<String>,
    p: &PrincipalRef,
) -> bool {
    let access = m.access();
    match p.kind {
        PrincipalType::User => access
            .subject(&p.principal)
            .is_some_and(|s| access.is_administrator(s)),
        PrincipalType::Group => admin_groups.contains(&p.principal),
    }
}

/// A principal as (kind, name).
fn principal_key(p: &PrincipalRef) -> (Kind, String) {
    (p.entity_kind(), p.principal.clone())
}

fn kind_name(k: PrincipalType) -> &'static str {
    match k {
        PrincipalType::User => "user",
        PrincipalType::Group => "group",
    }
}

fn path(e: &Entity) -> String {
    format!("{}/{}", e.kind().collection(), e.name)
}

/// Every ACL of the model: (where, the ACL).
fn acls(m: &Model) -> Vec<(String, &Acl)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        if let Some(acl) = m.collection(kind) {
            out.push((kind.collection().to_string(), acl));
        }
        for e in m.entities(kind) {
            out.push((path(e), &e.permissions));
            if let Some(acl) = e.instance_permissions() {
                out.push((format!("{} (instance permissions)", path(e)), acl));
            }
        }
    }
    out
}

/// Is the Thing a Remote Thing (made from `RemoteThing` or a template based on it)?
fn is_remote_thing(m: &Model, e: &Entity) -> bool {
    let Body::Thing(t) = &e.body else {
        return false;
    };
    crate::validate::template_chain(m, &t.thing_template)
        .is_ok_and(|chain| chain.iter().any(|t| t.name == "RemoteThing"))
}

fn users_with_keys(m: &Model) -> std::collections::BTreeMap<String, Vec<&Entity>> {
    let mut out: std::collections::BTreeMap<String, Vec<&Entity>> = Default::default();
    for k in m.entities(Kind::ApplicationKey) {
        if let Body::ApplicationKey(b) = &k.body {
            out.entry(b.user.clone()).or_default().push(k);
        }
    }
    out
}

/// Runs every rule. `now_ms` is the current time (for key lifetimes).
pub fn lint(m: &Model, deployment: &Deployment, now_ms: i64) -> Vec<Finding> {
    let access = m.access();
    let mut out = Vec::new();
    let keys = users_with_keys(m);
    let all_acls = acls(m);
    let admin_groups = crate::validate::administrator_groups(m);
    let is_admin_user = |u: &str| {
        access
            .subject(u)
            .is_some_and(|s| access.is_administrator(s))
    };
    // admin-app-key
    for (user, ks) in &keys {
        if is_admin_user(user) {
            for k in ks {
                out.push(finding(
                    "admin-app-key",
                    format!("application key {} carries the rights of {user}, a member of Administrators", k.name),
                    vec![path(k), format!("Users/{user}")],
                ));
            }
        }
    }
    // shared-device-user
    let remote_things: Vec<&Entity> = m
        .entities(Kind::Thing)
        .filter(|e| is_remote_thing(m, e))
        .collect();
    // Who was granted PropertyWrite on which Remote Thing (its own entries, its templates' and
    // shapes' instance entries, the Things collection's).
    let mut write_grants: std::collections::BTreeMap<(Kind, String), Vec<&str>> =
        Default::default();
    for t in &remote_things {
        let Body::Thing(b) = &t.body else { continue };
        let mut places: Vec<&Acl> = vec![&t.permissions];
        if let Some(c) = m.collection(Kind::Thing) {
            places.push(c);
        }
        let mut shapes: Vec<&str> = b.thing_shapes.iter().map(String::as_str).collect();
        if let Ok(chain) = crate::validate::template_chain(m, &b.thing_template) {
            for tpl in chain {
                places.extend(tpl.instance_permissions());
                if let Body::ThingTemplate(tb) = &tpl.body {
                    shapes.extend(tb.thing_shapes.iter().map(String::as_str));
                }
            }
        }
        for sh in shapes {
            places.extend(
                m.get(Kind::ThingShape, sh)
                    .and_then(Entity::instance_permissions),
            );
        }
        let mut named: std::collections::BTreeSet<(Kind, String)> = Default::default();
        for acl in places {
            for e in &acl.run_time {
                if e.allow && e.permission == Permission::PropertyWrite {
                    named.insert(principal_key(&e.principal));
                }
            }
        }
        for p in named {
            write_grants.entry(p).or_default().push(&t.name);
        }
    }
    for (user, ks) in &keys {
        if is_admin_user(user) {
            continue;
        }
        if ks.len() > 1 {
            let mut entities: Vec<String> = ks.iter().map(|k| path(k)).collect();
            entities.push(format!("Users/{user}"));
            out.push(finding(
                "shared-device-user",
                format!("user {user} is behind {} application keys", ks.len()),
                entities,
            ));
        }
        let Some(subject) = access.subject(user) else {
            continue;
        };
        // Candidates from the entries (a grant that names one of the user's principals), each
        // confirmed by the access engine; two are enough.
        let mut seen: std::collections::BTreeSet<&str> = Default::default();
        let mut writable: Vec<String> = Vec::new();
        'principals: for p in crate::insight::principals_of(m, user) {
            for thing in write_grants.get(&p).into_iter().flatten() {
                if writable.len() >= 2 {
                    break 'principals;
                }
                if !seen.insert(thing) {
                    continue;
                }
                let allowed = access.id(Kind::Thing, thing).is_some_and(|id| {
                    m.check(
                        subject,
                        Permission::PropertyWrite,
                        Target::Entity { id, resource: None },
                    )
                    .outcome
                        == Outcome::Allowed
                });
                if allowed {
                    writable.push(format!("Things/{thing}"));
                }
            }
        }
        if writable.len() > 1 {
            for k in ks {
                let mut entities = vec![path(k)];
                entities.extend(writable.iter().cloned());
                out.push(finding(
                    "shared-device-user",
                    format!(
                        "application key {} (user {user}) may write the properties of 2 or more Remote Things ({})",
                        k.name,
                        writable.join(", ")
                    ),
                    entities,
                ));
            }
        }
    }
    // device-design-time: a device user is a non-administrator with an application key; a
    // finding is a design-time allow entry that names one of its principals (the grant, even
    // where a deny elsewhere masks it today).
    let mut design_grants: std::collections::BTreeMap<(Kind, String), Vec<String>> =
        Default::default();
    for (place, acl) in &all_acls {
        for e in acl.design_time.iter().filter(|e| e.allow) {
            design_grants
                .entry(principal_key(&e.principal))
                .or_default()
                .push(format!("{} on {place}", e.permission.name()));
        }
    }
    for user in keys.keys().filter(|u| !is_admin_user(u)) {
        let held: Vec<String> = crate::insight::principals_of(m, user)
            .into_iter()
            .flat_map(|p| {
                let via = if p == (Kind::User, user.clone()) {
                    String::new()
                } else {
                    format!(" (through group {})", p.1)
                };
                design_grants
                    .get(&p)
                    .into_iter()
                    .flatten()
                    .map(move |g| format!("{g}{via}"))
            })
            .collect();
        if !held.is_empty() {
            out.push(finding(
                "device-design-time",
                format!(
                    "user {user} has an application key and design-time permissions: {}",
                    held.join(", ")
                ),
                vec![format!("Users/{user}")],
            ));
        }
    }
    // remote-thing-without-organization
    for t in &remote_things {
        let Body::Thing(b) = &t.body else { continue };
        let mut has = !t.permissions.visibility.is_empty()
            || m.collection(Kind::Thing)
                .is_some_and(|c| !c.visibility.is_empty());
        if let Ok(chain) = crate::validate::template_chain(m, &b.thing_template) {
            has |= chain.iter().any(|tpl| {
                tpl.instance_permissions()
                    .is_some_and(|a| !a.visibility.is_empty())
            });
        }
        if !has {
            out.push(finding(
                "remote-thing-without-organization",
                format!("Remote Thing {} is visible to no organization", t.name),
                vec![path(t)],
            ));
        }
    }
    // design-time-in-production
    if deployment.production {
        let places: Vec<String> = all_acls
            .iter()
            .filter(|(_, acl)| {
                acl.design_time
                    .iter()
                    .any(|e| e.allow && !is_admin_principal(m, &admin_groups, &e.principal))
            })
            .map(|(p, _)| p.clone())
            .collect();
        if !places.is_empty() {
            out.push(finding(
                "design-time-in-production",
                format!(
                    "{} place(s) grant design-time permissions to non-administrators in production",
                    places.len()
                ),
                places,
            ));
        }
    }
    // key-lifetime
    for k in m.entities(Kind::ApplicationKey) {
        let Body::ApplicationKey(b) = &k.body else {
            continue;
        };
        let from = if b.created > 0 { b.created } else { now_ms };
        let lifetime = b.expiration_date.saturating_sub(from);
        if lifetime > YEAR_MS {
            out.push(finding(
                "key-lifetime",
                format!(
                    "application key {} lives {} days",
                    k.name,
                    lifetime / (24 * 3_600_000)
                ),
                vec![path(k)],
            ));
        }
    }
    // insecure-transport
    match deployment.transport {
        Transport::PlainHttp => out.push(finding_as(
            "insecure-transport",
            Severity::High,
            "the server serves plain HTTP (--insecure-http): keys and passwords cross the network in clear".into(),
            vec![],
        )),
        Transport::SelfSigned => out.push(finding(
            "insecure-transport",
            "the server serves TLS with a self-signed development certificate (--dev)".into(),
            vec![],
        )),
        Transport::Tls => {}
    }
    // users-in-everyone
    if let Some(Entity {
        body: Body::Organization(o),
        ..
    }) = m.get(Kind::Organization, predefined::EVERYONE)
        && o.units.iter().any(|u| {
            u.members
                .iter()
                .any(|p| p.kind == PrincipalType::Group && p.principal == predefined::USERS)
        })
    {
        out.push(finding(
            "users-in-everyone",
            "the Users group is a member of Everyone: what Everyone sees, every user sees".into(),
            vec![
                format!("Organizations/{}", predefined::EVERYONE),
                format!("Groups/{}", predefined::USERS),
            ],
        ));
    }
    // blanket-service-invoke
    for (place, acl) in &all_acls {
        for e in &acl.run_time {
            if e.allow
                && e.permission == Permission::ServiceInvoke
                && e.resource == crate::entity::ALL_RESOURCES
                && e.principal.kind == PrincipalType::Group
                && !is_admin_principal(m, &admin_groups, &e.principal)
            {
                out.push(finding(
                    "blanket-service-invoke",
                    format!(
                        "group {} may invoke every service of {place}",
                        e.principal.principal
                    ),
                    vec![place.clone(), format!("Groups/{}", e.principal.principal)],
                ));
            }
        }
    }
    // audit-entities (U7)
    let non_admin =
        |e: &PermissionEntry| e.allow && !is_admin_principal(m, &admin_groups, &e.principal);
    for (thing, what) in [
        (
            predefined::AUDIT_ARCHIVE_REPOSITORY,
            "the audit archive repository",
        ),
        (
            predefined::AUDIT_PURGE_SCHEDULER,
            "the audit purge scheduler",
        ),
        (
            predefined::AUDIT_CLEANUP_SCHEDULER,
            "the audit archive cleanup scheduler",
        ),
    ] {
        let Some(e) = m.get(Kind::Thing, thing) else {
            continue;
        };
        let mut who: Vec<String> = e
            .permissions
            .design_time
            .iter()
            .chain(&e.permissions.run_time)
            .filter(|x| non_admin(x))
            .map(|x| {
                format!(
                    "{} {} {}",
                    kind_name(x.principal.kind),
                    x.principal.principal,
                    x.permission.name()
                )
            })
            .collect();
        who.extend(
            e.permissions
                .visibility
                .iter()
                .map(|v| format!("visibility for {}", v.principal)),
        );
        if !who.is_empty() {
            // The seed's own table asks for grants on the schedulers for some services; the
            // archive repository never.
            let severity = if thing == predefined::AUDIT_ARCHIVE_REPOSITORY {
                Severity::High
            } else {
                Severity::Medium
            };
            out.push(finding_as(
                "audit-entities",
                severity,
                format!(
                    "{what} ({thing}) has grants for non-administrators: {}",
                    who.join(", ")
                ),
                vec![format!("Things/{thing}")],
            ));
        }
    }
    for (thing, property) in [
        (predefined::AUDIT_ARCHIVE_SCHEDULER, "lastArchivedTime"),
        (
            predefined::AUDIT_ARCHIVE_SCHEDULER_DP,
            "lastArchivedTimeDirectPersistence",
        ),
    ] {
        let Some(e) = m.get(Kind::Thing, thing) else {
            continue;
        };
        let writers: Vec<String> = e
            .permissions
            .run_time
            .iter()
            .filter(|x| {
                x.allow
                    && x.permission == Permission::PropertyWrite
                    && (x.resource == property || x.resource == crate::entity::ALL_RESOURCES)
            })
            .map(|x| format!("{} {}", kind_name(x.principal.kind), x.principal.principal))
            .collect();
        if !writers.is_empty() {
            out.push(finding(
                "audit-entities",
                format!(
                    "{} may write {thing}.{property}, which only the archive should ever update",
                    writers.join(", ")
                ),
                vec![format!("Things/{thing}")],
            ));
        }
    }
    // ...and what non-administrators actually hold on them, whichever level grants it (the
    // Things collection, the FileRepository or Scheduler template's instance permissions).
    // Every permission an entity can grant (Create is the collections').
    let perms: Vec<Permission> = Permission::ALL
        .into_iter()
        .filter(|p| *p != Permission::Create)
        .collect();
    for thing in [
        predefined::AUDIT_ARCHIVE_REPOSITORY,
        predefined::AUDIT_PURGE_SCHEDULER,
        predefined::AUDIT_CLEANUP_SCHEDULER,
        predefined::AUDIT_ARCHIVE_SCHEDULER,
        predefined::AUDIT_ARCHIVE_SCHEDULER_DP,
    ] {
        let Some(id) = access.id(Kind::Thing, thing) else {
            continue;
        };
        let archive_property = match thing {
            predefined::AUDIT_ARCHIVE_SCHEDULER => Some("lastArchivedTime"),
            predefined::AUDIT_ARCHIVE_SCHEDULER_DP => Some("lastArchivedTimeDirectPersistence"),
            _ => None,
        };
        let last = archive_property.and_then(|p| access.sym(p));
        let mut holders: Vec<String> = Vec::new();
        for u in m.entities(Kind::User) {
            let Some(s) = access.subject(&u.name) else {
                continue;
            };
            if u.name == predefined::SYSTEM || access.is_administrator(s) {
                continue;
            }
            let allowed = |p: Permission, resource| {
                m.check(s, p, Target::Entity { id, resource }).outcome == Outcome::Allowed
            };
            let held: Vec<String> = if let Some(property) = archive_property {
                // The archive schedulers: only writing their last archived time is a finding
                // (the seed's table grants reading it for ArchiveAuditHistory).
                let writes = allowed(Permission::PropertyWrite, None)
                    || last.is_some_and(|r| allowed(Permission::PropertyWrite, Some(r)));
                if writes {
                    vec![format!("PropertyWrite {property}")]
                } else {
                    vec![]
                }
            } else {
                perms
                    .iter()
                    .filter(|p| allowed(**p, None))
                    .map(|p| p.name().to_string())
                    .collect()
            };
            if !held.is_empty() {
                holders.push(format!("{} ({})", u.name, held.join(", ")));
            }
        }
        if !holders.is_empty() {
            let severity = if thing == predefined::AUDIT_PURGE_SCHEDULER
                || thing == predefined::AUDIT_CLEANUP_SCHEDULER
            {
                Severity::Medium
            } else {
                Severity::High
            };
            out.push(finding_as(
                "audit-entities",
                severity,
                format!(
                    "non-administrators hold permissions on {thing}: {}",
                    holders.join(", ")
                ),
                vec![format!("Things/{thing}")],
            ));
        }
    }
    // no-persistence-provider
    let someone_sees = m.entities(Kind::User).any(|u| {
        let Some(s) = access.subject(&u.name) else {
            return false;
        };
        u.name != predefined::SYSTEM
            && !access.is_administrator(s)
            && m.entities(Kind::PersistenceProvider).any(|p| {
                access
                    .id(Kind::PersistenceProvider, &p.name)
                    .is_some_and(|id| access.visible(s, id))
            })
    });
    if !someone_sees {
        out.push(finding(
            "no-persistence-provider",
            "no user but administrators can see a persistence provider, so only administrators can create DataTables, Streams and ValueStreams (P1)".into(),
            m.entities(Kind::PersistenceProvider).map(path).collect(),
        ));
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    out
}

/// The rules' documentation page, `docs/lint.md`.
pub fn reference() -> String {
    let mut out = String::from(
        "# Security lint rules\n\n\
         <!-- Generated from host/core/src/lint.rs by `thinghost lint --rules`; a test keeps it current. -->\n\n\
         `thinghost lint` (and `Resources/SecurityServices/Services/Lint`) checks the model and the running server against the\n\
         secure-modelling advice of the vendor's help pages (DOMAIN.md section 8, and U7). It exits with status 1 when a\n\
         finding of severity high or above exists.\n\n",
    );
    for r in RULES {
        out.push_str(&format!(
            "## {}\n\n**{}** (severity: {})\n\n{}\n\n**Fix:** {}\n\n",
            r.id,
            r.title,
            r.severity.name(),
            r.why,
            r.fix
        ));
    }
    out
}
