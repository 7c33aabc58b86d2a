//! `Resources/SecurityServices`: `EffectivePermissions(user)` and `Lint()` (issue 9), beside
//! `ExplainAccess` (in `services.rs`). The answers come from `thinghost_core::insight` and
//! `thinghost_core::lint`, which ask the access engine.

use crate::rest::{ApiError, Reply};
use crate::services::{Call, forbidden};
use serde_json::{Map, Value as Json, json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Kind, Permission, predefined};

/// May the caller look at everyone's permissions and the lint? Administrators and members of
/// SecurityAdministrators may.
pub(crate) fn security_admin(call: &Call<'_>) -> bool {
    if call.is_admin() {
        return true;
    }
    let access = call.model().access();
    let Some(group) = access.id(Kind::Group, predefined::SECURITY_ADMINISTRATORS) else {
        return false;
    };
    access.principals(call.caller.subject).any(|p| p == group)
}

fn table(fields: &[(&str, BaseType)], rows: Vec<Map<String, Json>>) -> Reply {
    Reply::Json(
        InfoTable {
            fields: fields
                .iter()
                .map(|(n, t)| Field {
                    name: (*n).into(),
                    base_type: *t,
                })
                .collect(),
            rows,
        }
        .into_json(),
    )
}

/// `EffectivePermissions(user)`: every entity the user can see, with every permission it holds
/// and why. Administrators and security administrators may ask about anyone; a user about
/// itself.
pub fn effective(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    // A plain STRING: a security administrator asks about users it need not see; anyone else
    // only about itself.
    call.params(&[("user", BaseType::String, true)])?;
    let user = call.str("user");
    if user != call.caller.name && !security_admin(call) {
        return Err(forbidden(
            call.caller,
            "read another user's effective permissions (Administrators and SecurityAdministrators may)",
            "Resources/SecurityServices".into(),
            Permission::ServiceInvoke,
        ));
    }
    let holdings = thinghost_core::insight::effective_permissions(call.model(), &user, true)
        .ok_or_else(|| {
            crate::services::bad(format!("parameter user: there is no User named {user:?}"))
        })?;
    let rows = holdings
        .into_iter()
        .map(|h| {
            let mut r = Map::new();
            r.insert("entity".into(), json!(h.entity));
            r.insert("permission".into(), json!(h.permission));
            r.insert("resource".into(), json!(h.resource));
            r.insert("allowed".into(), json!(h.allowed));
            r.insert("why".into(), json!(h.why));
            r
        })
        .collect();
    Ok(table(
        &[
            ("entity", BaseType::String),
            ("permission", BaseType::String),
            ("resource", BaseType::String),
            ("allowed", BaseType::Boolean),
            ("why", BaseType::String),
        ],
        rows,
    ))
}

/// `Lint()`: the security lint's findings, most severe first.
pub fn lint(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.params(&[])?;
    if !security_admin(call) {
        return Err(forbidden(
            call.caller,
            "run the security lint (Administrators and SecurityAdministrators may)",
            "Resources/SecurityServices".into(),
            Permission::ServiceInvoke,
        ));
    }
    let findings = thinghost_core::lint::lint(call.model(), &call.app.deployment, crate::now_ms());
    let rows = findings
        .into_iter()
        .map(|f| {
            let mut r = Map::new();
            r.insert("rule".into(), json!(f.rule));
            r.insert("severity".into(), json!(f.severity.name()));
            r.insert("title".into(), json!(f.title));
            r.insert("message".into(), json!(f.message));
            r.insert("entities".into(), json!(f.entities));
            r.insert("fix".into(), json!(f.fix));
            r.insert("doc".into(), json!(f.doc));
            r
        })
        .collect();
    Ok(table(
        &[
            ("rule", BaseType::String),
            ("severity", BaseType::String),
            ("title", BaseType::String),
            ("message", BaseType::String),
            ("entities", BaseType::Json),
            ("fix", BaseType::String),
            ("doc", BaseType::String),
        ],
        rows,
    ))
}
