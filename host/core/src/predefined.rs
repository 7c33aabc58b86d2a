//! The entities every thinghost starts with (DOMAIN.md section 1, "Predefined principals").

use crate::entity::*;
use crate::names::Kind;
use crate::types::BaseType;
use serde_json::Value as Json;

pub const ADMINISTRATOR: &str = "Administrator";
pub const SYSTEM: &str = "System";
pub const ADMINISTRATORS: &str = "Administrators";
pub const SECURITY_ADMINISTRATORS: &str = "SecurityAdministrators";
pub const DEVELOPERS: &str = "Developers";
/// Every user is a member of `Users`, implicitly.
pub const USERS: &str = "Users";
pub const AUDITORS: &str = "Auditors";

/// The platform's role rules (P2): `ServiceInvoke` of these services of these platform entities
/// is allowed to the members of a predefined group (Administrators pass too), before visibility
/// and before any entry; anyone else needs an entry naming the service itself (an entry for `*`
/// never grants it): (kind, entity, service, group). The service `*` is every service of the
/// entity (each still granted to others only by an entry naming it).
pub const ROLE_RULES: &[(Kind, &str, &str, &str)] = &[
    (
        Kind::Subsystem,
        "PlatformSubsystem",
        "ReloadExtension",
        ADMINISTRATORS,
    ),
    (Kind::Resource, "CollectionFunctions", "*", ADMINISTRATORS),
    // Who is connected from where is an administrator's to know (DOMAIN section 10).
    (Kind::Subsystem, WS_COMMUNICATIONS, "*", ADMINISTRATORS),
    (
        Kind::Resource,
        "SecurityServices",
        "ExplainAccess",
        SECURITY_ADMINISTRATORS,
    ),
    (
        Kind::Resource,
        "SecurityServices",
        "Lint",
        SECURITY_ADMINISTRATORS,
    ),
    (
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
        AUDITORS,
    ),
];

/// The role rule of `service` of the platform entity `kind`/`name`: its group.
pub fn role_rule(kind: Kind, name: &str, service: &str) -> Option<&'static str> {
    ROLE_RULES
        .iter()
        .find(|(k, n, s, _)| *k == kind && *n == name && (*s == service || *s == "*"))
        .map(|r| r.3)
}
/// The organization `Everyone`. It starts empty: the vendor puts `Users` in it, which makes
/// everything visible to everyone, and itself advises removing it.
pub const EVERYONE: &str = "Everyone";
/// The root of every template chain.
pub const GENERIC_THING: &str = "GenericThing";
pub const DEFAULT_PERSISTENCE_PROVIDER: &str = "ThingworxPersistenceProvider";

/// Templates of the data-storage and scheduling Things (DOMAIN.md section 1).
pub const SYSTEM_TEMPLATES: &[&str] = &[
    "FileRepository",
    SCHEDULER,
    TIMER,
    DATA_TABLE,
    STREAM,
    VALUE_STREAM,
];
/// The data-storage templates (DOMAIN section 11).
pub const DATA_TABLE: &str = "DataTable";
pub const STREAM: &str = "Stream";
pub const VALUE_STREAM: &str = "ValueStream";
/// Things of this template fire [`SCHEDULED_EVENT`] when their `schedule` (cron with seconds)
/// fires, as their `runAsUser`, while `enabled` (B7).
pub const SCHEDULER: &str = "Scheduler";
pub const SCHEDULED_EVENT: &str = "ScheduledEvent";
/// Things of this template fire [`TIMER_EVENT`] every `updateRate` milliseconds, as their
/// `runAsUser`, while `enabled` (B7).
pub const TIMER: &str = "Timer";
pub const TIMER_EVENT: &str = "Timer";

/// The events the platform fires for a Thing or template whose chain is `templates` (names,
/// nearest first): `DataChange` for every one, `Timer` and `ScheduledEvent` for timers and
/// schedulers. They need no definition; requests cannot fire them.
pub fn platform_events<'a>(templates: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    let mut out = vec![crate::entity::DATA_CHANGE];
    for t in templates {
        if t == TIMER {
            out.push(TIMER_EVENT);
        }
        if t == SCHEDULER {
            out.push(SCHEDULED_EVENT);
        }
    }
    out
}
/// Templates whose Things keep data in a persistence provider (DOMAIN P1).
pub const DATA_STORAGE_TEMPLATES: &[&str] = &[DATA_TABLE, STREAM, VALUE_STREAM];
pub const SUBSYSTEMS: &[&str] = &[
    "AuditSubsystem",
    "EventProcessingSubsystem",
    "PlatformSubsystem",
    WS_COMMUNICATIONS,
];
/// The subsystem of the AlwaysOn connections (the vendor's name).
pub const WS_COMMUNICATIONS: &str = "WSCommunicationsSubsystem";
/// The audit subsystem's Things (U6): (name, template, own properties as (name, type, default)).
/// Every scheduler has `schedule` (cron, with seconds), `runAsUser` and `enabled`.
pub const AUDIT_ARCHIVE_REPOSITORY: &str = "AuditArchiveFileRepository";
pub const AUDIT_ARCHIVE_SCHEDULER: &str = "AuditArchiveScheduler";
pub const AUDIT_PURGE_SCHEDULER: &str = "AuditPurgeScheduler";
pub const AUDIT_CLEANUP_SCHEDULER: &str = "AuditArchiveCleanupScheduler";
pub const AUDIT_CLEANUP_NOTIFICATION_SCHEDULER: &str = "AuditArchiveCleanupNotificationScheduler";
pub const AUDIT_ARCHIVE_SCHEDULER_DP: &str = "AuditArchiveSchedulerDirectPersistence";

type PropSpec = (&'static str, BaseType, Option<&'static str>);

/// The audit Things and their own properties (`default` as JSON text).
pub fn audit_things() -> Vec<(&'static str, &'static str, Vec<PropSpec>)> {
    let scheduler = |schedule: &'static str, enabled: &'static str, more: &[PropSpec]| {
        let mut p: Vec<PropSpec> = vec![
            ("schedule", BaseType::String, Some(schedule)),
            ("runAsUser", BaseType::String, Some("\"Administrator\"")),
            ("enabled", BaseType::Boolean, Some(enabled)),
        ];
        p.extend_from_slice(more);
        p
    };
    vec![
        (AUDIT_ARCHIVE_REPOSITORY, "FileRepository", vec![]),
        (
            AUDIT_ARCHIVE_SCHEDULER,
            "Scheduler",
            scheduler(
                "\"0 0 0 * * *\"",
                "true",
                &[("lastArchivedTime", BaseType::Datetime, None)],
            ),
        ),
        (
            AUDIT_ARCHIVE_SCHEDULER_DP,
            "Scheduler",
            scheduler(
                "\"0 0 0 * * *\"",
                "false",
                &[(
                    "lastArchivedTimeDirectPersistence",
                    BaseType::Datetime,
                    None,
                )],
            ),
        ),
        (
            AUDIT_PURGE_SCHEDULER,
            "Scheduler",
            scheduler("\"0 0 1 * * *\"", "true", &[]),
        ),
        (
            AUDIT_CLEANUP_SCHEDULER,
            "Scheduler",
            scheduler(
                "\"0 0 2 * * *\"",
                "true",
                &[("DaysToArchive", BaseType::Number, Some("30"))],
            ),
        ),
        (
            AUDIT_CLEANUP_NOTIFICATION_SCHEDULER,
            "Scheduler",
            scheduler("\"0 0 3 * * MON\"", "true", &[]),
        ),
    ]
}

/// The DataShape of audit query results (the vendor's fields, then ours).
pub const AUDIT_HISTORY: &str = "AuditHistory";
/// Its fields, in order: (name, base type).
pub const AUDIT_HISTORY_FIELDS: &[(&str, BaseType)] = &[
    ("timestamp", BaseType::Datetime),
    ("user", BaseType::String),
    ("auditCategory", BaseType::String),
    ("sourceType", BaseType::String),
    ("source", BaseType::String),
    ("message", BaseType::String),
    ("id", BaseType::Long),
    ("messageKey", BaseType::String),
    ("args", BaseType::Json),
];
pub const RESOURCES: &[&str] = &[
    "EntityServices",
    "CurrentSessionInfo",
    "CollectionFunctions",
    "SecurityServices",
    "ScriptServices",
];

/// True for the entities that exist from the first start and cannot be deleted.
pub fn is_predefined(kind: Kind, name: &str) -> bool {
    match kind {
        Kind::User => name == ADMINISTRATOR || name == SYSTEM,
        Kind::Group => [
            ADMINISTRATORS,
            SECURITY_ADMINISTRATORS,
            DEVELOPERS,
            USERS,
            AUDITORS,
        ]
        .contains(&name),
        Kind::Organization => name == EVERYONE,
        Kind::ThingTemplate => name == GENERIC_THING || SYSTEM_TEMPLATES.contains(&name),
        Kind::Subsystem => SUBSYSTEMS.contains(&name),
        Kind::Resource => RESOURCES.contains(&name),
        Kind::PersistenceProvider => name == DEFAULT_PERSISTENCE_PROVIDER,
        Kind::DataShape => name == AUDIT_HISTORY,
        Kind::Thing => audit_things().iter().any(|(n, _, _)| *n == name),
        _ => false,
    }
}

/// The predefined entities a model lacks (one made by an older thinghost), in order.
pub fn missing(view: &dyn crate::View) -> Vec<Entity> {
    entities()
        .into_iter()
        .filter(|e| view.get(e.kind(), &e.name).is_none())
        .collect()
}

/// The predefined entities, in an order in which each one's references already exist.
pub fn entities() -> Vec<Entity> {
    let mut out = vec![Entity::user(ADMINISTRATOR), Entity::user(SYSTEM)];
    for g in [
        ADMINISTRATORS,
        SECURITY_ADMINISTRATORS,
        DEVELOPERS,
        USERS,
        AUDITORS,
    ] {
        let mut e = Entity::group(g);
        if g == ADMINISTRATORS
            && let Body::Group(b) = &mut e.body
        {
            b.members.push(PrincipalRef::user(ADMINISTRATOR));
        }
        out.push(e);
    }
    out.push(Entity::organization(EVERYONE));
    out.push(Entity::new(
        GENERIC_THING,
        Body::ThingTemplate(TemplateBody {
            base_thing_template: None,
            thing_shapes: vec![],
            definitions: Definitions::default(),
            instance_permissions: Acl::default(),
        }),
    ));
    for t in SYSTEM_TEMPLATES {
        let mut e = Entity::template(t, GENERIC_THING);
        if *t == TIMER
            && let Body::ThingTemplate(b) = &mut e.body
        {
            let prop = |name: &str, base_type, default: Json| PropertyDef {
                name: name.to_string(),
                base_type,
                description: String::new(),
                default_value: Some(default),
                read_only: false,
                data_shape: None,
                data_change_type: Default::default(),
                logged: false,
            };
            b.definitions.properties = vec![
                prop("updateRate", BaseType::Number, Json::from(60_000)),
                prop("enabled", BaseType::Boolean, Json::Bool(false)),
                prop("runAsUser", BaseType::String, Json::String(String::new())),
            ];
        }
        out.push(e);
    }
    for s in SUBSYSTEMS {
        out.push(Entity::new(*s, Body::Subsystem(ServiceHostBody::default())));
    }
    for r in RESOURCES {
        out.push(Entity::new(*r, Body::Resource(ServiceHostBody::default())));
    }
    out.push(Entity::new(
        DEFAULT_PERSISTENCE_PROVIDER,
        Body::PersistenceProvider(ProviderBody::default()),
    ));
    out.push(Entity::new(
        AUDIT_HISTORY,
        Body::DataShape(DataShapeBody {
            fields: AUDIT_HISTORY_FIELDS
                .iter()
                .map(|(name, base_type)| FieldDef {
                    name: name.to_string(),
                    base_type: *base_type,
                    description: String::new(),
                    is_primary_key: *name == "id",
                    data_shape: None,
                })
                .collect(),
        }),
    ));
    for (name, template, props) in audit_things() {
        let mut t = Entity::thing(name, template);
        if let Body::Thing(b) = &mut t.body {
            b.definitions.properties = props
                .iter()
                .map(|(n, bt, default)| PropertyDef {
                    name: n.to_string(),
                    base_type: *bt,
                    description: String::new(),
                    default_value: default
                        .map(|d| serde_json::from_str(d).expect("a JSON default")),
                    read_only: false,
                    data_shape: None,
                    data_change_type: Default::default(),
                    logged: false,
                })
                .collect();
        }
        out.push(t);
    }
    for e in &mut out {
        e.description = "predefined".to_string();
    }
    out
}
