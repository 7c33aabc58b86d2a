//! The one authorization module of the server. Every decision a request needs is asked of the
//! access engine here (`AccessIndex::check`, `check_group`), the roles included: the platform's
//! own rules are rules of the engine (P1: platform Resources are every signed-in user's; P2:
//! the role rules of the platform's services, `predefined::ROLE_RULES`), so `ExplainAccess`
//! explains them like any other decision. The engine's helpers that answer without a decision
//! (`visible`, `is_administrator`, `principals`) are called from this module only: the server's
//! `clippy.toml` disallows them elsewhere.
#![allow(clippy::disallowed_methods)]

use super::table::Rule;
use super::{ApiError, Call};
use crate::state::auth::Caller;
use axum::http::StatusCode;
use thinghost_core::{
    Decision, Entity, EntityId, Kind, Model, Outcome, Permission, PrincipalRef, Subject, Target,
    View,
};

/// Can `subject` see the entity `id` (V1, V2)?
pub(crate) fn sees_id(m: &Model, subject: Subject, id: EntityId) -> bool {
    m.access().visible(subject, id)
}

/// Can `subject` see `kind`/`name` (one that does not exist: no)?
pub(crate) fn sees(m: &Model, subject: Subject, kind: Kind, name: &str) -> bool {
    m.access()
        .id(kind, name)
        .is_some_and(|id| sees_id(m, subject, id))
}

/// Is `subject` a member of Administrators (A2)?
pub(crate) fn is_admin(m: &Model, subject: Subject) -> bool {
    m.access().is_administrator(subject)
}

/// `subject`'s groups (A3), by name.
pub(crate) fn groups_of(m: &Model, subject: Subject) -> Vec<PrincipalRef> {
    let access = m.access();
    access
        .principals(subject)
        .map(|id| match access.name_of(id) {
            (Kind::Group, n) => PrincipalRef::group(n),
            (_, n) => PrincipalRef::user(n),
        })
        .collect()
}

/// Does the engine allow `caller` to invoke `service` of the platform entity `kind`/`name`?
fn invokes(m: &Model, caller: &Caller, kind: Kind, name: &str, service: &str) -> bool {
    let Some(id) = m.access().id(kind, name) else {
        return false;
    };
    m.check(
        caller.subject,
        Permission::ServiceInvoke,
        Target::Entity {
            id,
            resource: m.access().sym(service),
        },
    )
    .allowed()
}

/// May the caller look at everyone's permissions (`EffectivePermissions` about anyone, a dry
/// run's whole plan and impact)? Whoever may run the security lint: the role rule of
/// `SecurityServices/Lint` (P2: SecurityAdministrators, Administrators, or an entry naming it).
pub(crate) fn may_inspect(m: &Model, caller: &Caller) -> bool {
    invokes(m, caller, Kind::Resource, "SecurityServices", "Lint")
}

/// May the caller read every audit entry (a Thing's `QueryAuditHistory` gives it all of the
/// Thing's, not only its own)? Whoever may query the whole log: the role rule of
/// `AuditSubsystem/QueryAuditHistory` (P2: Auditors, and Administrators), or its entries.
pub(crate) fn reads_all_audit(m: &Model, caller: &Caller) -> bool {
    invokes(
        m,
        caller,
        Kind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
    )
}

/// The one answer for an entity that does not exist or is not visible.
pub(crate) fn not_found(kind: Kind, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{} {name:?} was not found", kind.label()),
    )
}

/// A 403 by a service's own rule (audited as a denial).
pub(crate) fn forbidden(
    caller: &Caller,
    what: &str,
    path: String,
    permission: Permission,
) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: format!("{} may not {what}", caller.name),
        denied: Some((
            permission,
            path,
            format!("the service's own rule: {} may not {what}", caller.name),
        )),
    }
}

/// Resolves an entity the caller can see; anything else is the same 404.
pub(crate) fn visible_entity<'m>(
    m: &'m Model,
    caller: &Caller,
    kind: Kind,
    name: &str,
) -> Result<(&'m Entity, EntityId), ApiError> {
    let id = m
        .access()
        .id(kind, name)
        .ok_or_else(|| not_found(kind, name))?;
    if !sees_id(m, caller.subject, id) {
        return Err(not_found(kind, name));
    }
    Ok((m.get(kind, name).expect("indexed"), id))
}

/// Checks a permission; a denial is a 403 (the entity is visible by now) and is audited.
pub(crate) fn require(
    m: &Model,
    caller: &Caller,
    permission: Permission,
    target: Target,
    path: impl std::fmt::Display,
) -> Result<Decision, ApiError> {
    let d = m.check(caller.subject, permission, target);
    match d.outcome {
        Outcome::Allowed => Ok(d),
        Outcome::NotVisible => {
            let (kind, name) = match target {
                Target::Entity { id, .. } => {
                    let (k, n) = m.access().name_of(id);
                    (k, n.to_string())
                }
                Target::Collection(k) => (k, String::new()),
            };
            Err(not_found(kind, &name))
        }
        Outcome::Denied => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("{} may not {} on {path}", caller.name, permission),
            denied: Some((
                permission,
                path.to_string(),
                thinghost_core::insight::rule_of(m, &d),
            )),
        }),
    }
}

/// Enforces the row's rule (all but [`Rule::Own`], which the service checks itself).
pub(crate) fn enforce(call: &Call<'_>) -> Result<(), ApiError> {
    let row = call.row;
    match row.rule {
        Rule::Anyone | Rule::Own(_) => Ok(()),
        Rule::On(permission, what) => call.require_on_entity(permission, what),
        Rule::Invoke => {
            let m = call.model();
            let id = m
                .access()
                .id(call.kind, &call.entity)
                .expect("resolved before the call");
            call.require(
                Permission::ServiceInvoke,
                Target::Entity {
                    id,
                    resource: m.access().sym(row.name),
                },
                &format!("call {}", row.name),
            )
        }
        Rule::Create(kind) => call.require(
            Permission::Create,
            Target::Collection(kind),
            &format!("create {}", kind.collection()),
        ),
        Rule::Named(permission, kind) => {
            let name = call.str("name");
            let id = call
                .model()
                .access()
                .id(kind, &name)
                .expect("the parameter names a visible entity");
            call.require(
                permission,
                Target::Entity { id, resource: None },
                &format!(
                    "{} {}/{name}",
                    permission.name().to_lowercase(),
                    kind.collection()
                ),
            )
        }
    }
}

/// `Collection/name` of an entity, as `caller` may be told it: the words "an entity you cannot
/// see" for one it cannot (V1), in messages that name where something is defined.
pub(crate) fn named(m: &Model, caller: &Caller, kind: Kind, name: &str) -> String {
    if sees(m, caller.subject, kind, name) {
        format!("{}/{name}", kind.collection())
    } else {
        "an entity you cannot see".to_string()
    }
}
